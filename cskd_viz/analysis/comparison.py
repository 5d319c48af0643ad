"""``compare``: every student against the teacher, from logits alone, as tidy frames.

Two readings of CSKD's per-class cosine ``c_j(T) = cos(P_s[:, j], P_t[:, j])`` are reported side by
side: ``cosine_epoch``, over the whole set's columns at once (the value of
:func:`cskd_viz.metrics.class_cosine`, streamed through :class:`~cskd_viz.metrics.PerClassCosine` in row
chunks), and ``cosine_batch_mean``, the mean over random batches of ``batch_size`` samples of each batch's
``c_j`` (what the loss sees in training). The batches come from one seeded permutation shared by
every student (``torch.randperm`` with ``torch.Generator().manual_seed(seed)``), the last partial
batch dropped; the per-sample CSWT temperatures are taken within the same batches.

KL convention: ``mean_kl = mean_i KL(P_t[i] || P_s[i])`` at ``T = temperature``, *without* the
``T^2`` factor of :func:`cskd_viz.losses.kd_loss` (``kd_loss = T^2 * mean_kl``). Per-sample cosines
``s_i`` and calibration use ``T = 1`` (the CSWT convention and the model's own probabilities).
ECE: 15 equal-width confidence bins ``(k/15, (k+1)/15]``, ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``
with confidence the top-1 softmax probability.

Everything is computed on the CPU, in float64, in row chunks of about 2M entries, so memory stays
a few times one ``(N, C)`` float64 array whatever the number of students.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from cskd_viz import diagnostics, losses
from cskd_viz._validation import (
    check_cskd_batch,
    check_logits,
    check_positive_int,
    check_targets,
    check_temperature_range,
    check_temperature_value,
)
from cskd_viz.analysis.report import DistillationReport
from cskd_viz.metrics import PerClassCosine, _host_class_cosine, agreement, host_array

__all__ = ["compare", "calibration_frame", "ECE_BINS", "TEACHER"]

ECE_BINS = 15
TEACHER = "teacher"  # the teacher's name in the calibration frame (refused as a student name)
_CHUNK_ENTRIES = 1 << 21


# ----------------------------------------------------------------------------- validation


def _check_students(students: Any, teacher: Tensor) -> dict[str, Tensor]:
    if not isinstance(students, Mapping):
        raise TypeError(f"students must be a mapping {{name: (N, C) logits}}, got {type(students).__name__}")
    if not students:
        raise ValueError("students is empty: pass at least one {name: (N, C) logits}")
    checked = {}
    for name, logits in students.items():
        if not isinstance(name, str) or not name or name == TEACHER:
            raise ValueError(f"students keys must be non-empty strings other than {TEACHER!r}, got {name!r}")
        label = f"students[{name!r}]"
        if not isinstance(logits, Tensor):
            raise TypeError(f"{label} must be a torch.Tensor (N, C), got {type(logits).__name__}")
        if logits.shape != teacher.shape:
            raise ValueError(
                f"{label} has shape {tuple(logits.shape)} but teacher_logits has {tuple(teacher.shape)}: "
                "every student needs logits for the teacher's N samples and C classes"
            )
        check_logits(logits, label)
        checked[name] = logits.detach().cpu()
    return checked


def _check_class_names(class_names: Any, classes: int) -> list[str] | None:
    if class_names is None:
        return None
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
        kind = type(class_names).__name__
        raise TypeError(f"class_names must be a sequence of {classes} strings or None, got {kind}")
    if len(class_names) != classes:
        raise ValueError(f"class_names has {len(class_names)} names but the logits have C={classes} classes")
    if not all(isinstance(name, str) for name in class_names):
        raise TypeError("class_names must hold strings only")
    return list(class_names)


def _check_settings(temperature, t_low, t_high, batch_size, seed, n: int) -> dict[str, Any]:
    temperature = check_temperature_value(temperature, "temperature")
    t_low, t_high = check_temperature_range(t_low, t_high)
    batch_size = check_positive_int(batch_size, "batch_size")
    check_cskd_batch(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size must be <= N={n} (the number of samples), got {batch_size}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return {"temperature": temperature, "t_low": t_low, "t_high": t_high, "batch_size": batch_size, "seed": int(seed)}


# ----------------------------------------------------------------------------- measures


def _row_chunks(n: int, classes: int):
    step = max(1, _CHUNK_ENTRIES // classes)
    return (slice(start, min(start + step, n)) for start in range(0, n, step))


def _predictions(logits: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` top-1 classes and ``(N,)`` float64 top-1 softmax probabilities at ``T = 1``."""
    pred = np.empty(logits.shape[0], dtype=np.int64)
    confidence = np.empty(logits.shape[0])
    for rows in _row_chunks(*logits.shape):
        top, index = torch.softmax(logits[rows].double(), dim=1).max(1)
        pred[rows], confidence[rows] = index.numpy(), top.numpy()
    return pred, confidence


def _sample_measures(student: Tensor, teacher: Tensor, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` ``KL(P_t[i] || P_s[i])`` at ``temperature`` and ``(N,)`` ``s_i`` at ``T = 1``, float64."""
    kl, cosine = np.empty(student.shape[0]), np.empty(student.shape[0])
    for rows in _row_chunks(*student.shape):
        s, t = student[rows].double(), teacher[rows].double()
        kl[rows] = diagnostics.per_sample_kl(s, t, temperature).numpy()
        cosine[rows] = diagnostics.per_sample_cosine(s, t, 1.0).numpy()
    return kl, cosine


def _epoch_cosine(student: Tensor, teacher: Tensor, temperature: float) -> np.ndarray:
    """``(C,)`` per-class cosine over all ``N`` rows at once: :func:`cskd_viz.metrics.class_cosine`'s value,
    streamed through :class:`~cskd_viz.metrics.PerClassCosine` in row chunks (bounded memory, and about
    5x faster than one pass over an ImageNet-sized array; equal up to float64 rounding)."""
    metric = PerClassCosine(student.shape[1], temperature, sync_on_compute=False)
    for rows in _row_chunks(*student.shape):
        metric.update(student[rows], teacher[rows])
    return metric.compute().numpy()


def _batch_mean_cosine(student: Tensor, teacher: Tensor, batches: Tensor, temperature: float) -> np.ndarray:
    """``(C,)`` mean over the ``(n_batches, B)`` index batches of each batch's per-class cosine."""
    n_batches, batch_size = batches.shape
    classes = student.shape[1]
    total = np.zeros(classes)
    step = max(1, _CHUNK_ENTRIES // (batch_size * classes))
    for start in range(0, n_batches, step):
        index = batches[start : start + step].reshape(-1)
        shape = (-1, batch_size, classes)
        s, t = host_array(student[index]).reshape(shape), host_array(teacher[index]).reshape(shape)
        total += _host_class_cosine(s, t, temperature).sum(0)
    return total / n_batches


def _cswt_in_batches(cosines: np.ndarray, batches: Tensor, t_low: float, t_high: float) -> np.ndarray:
    """``(N,)`` CSWT temperature of every sample within its batch (NaN for the dropped partial batch)."""
    grouped = torch.from_numpy(cosines)[batches]  # (n_batches, B)
    temperatures = torch.empty_like(grouped)
    for row, out in zip(grouped, temperatures, strict=True):  # the losses' own mapping, no-spread rule included
        losses._cswt_from_cosines(row, t_low, t_high, out=out)
    result = np.full(cosines.shape[0], np.nan)
    result[batches.reshape(-1).numpy()] = temperatures.reshape(-1).numpy()
    return result


def calibration_frame(model: str, confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Reliability bins of one model: ``bins`` equal-width confidence bins ``(lower, upper]``.

    Columns ``model, bin, lower, upper, count, accuracy, confidence, gap`` (accuracy minus mean
    confidence; NaN in empty bins). ECE is ``sum(count * |gap|) / N``.

    Example:
        >>> frame = calibration_frame("m", np.array([0.95, 0.95, 0.45]), np.array([True, False, True]), bins=2)
        >>> frame[["count", "accuracy"]].values.tolist()
        [[1.0, 1.0], [2.0, 0.5]]
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct.astype(float), minlength=bins) / count
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / count
    return pd.DataFrame(
        {
            "model": model,
            "bin": np.arange(bins),
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": count,
            "accuracy": accuracy,
            "confidence": mean_confidence,
            "gap": accuracy - mean_confidence,
        }
    )


def _ece(frame: pd.DataFrame) -> float:
    filled = frame[frame["count"] > 0]
    return float((filled["count"] * filled["gap"].abs()).sum() / filled["count"].sum())


def _confusion_frame(name: str, pred_s: np.ndarray, pred_t: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """Counts of (teacher top-1, student top-1) pairs that differ, most frequent first."""
    classes = len(labels)
    differ = pred_s != pred_t
    codes, counts = np.unique(pred_t[differ] * classes + pred_s[differ], return_counts=True)
    order = np.lexsort((codes, -counts))  # by count, descending; ties by (teacher, student) class
    codes, counts = codes[order], counts[order]
    teacher_class, student_class = codes // classes, codes % classes
    names = np.asarray(labels, dtype=object)
    return pd.DataFrame(
        {
            "student": name,
            "rank": np.arange(1, len(codes) + 1),
            "teacher_class": teacher_class,
            "student_class": student_class,
            "teacher_class_name": names[teacher_class].astype(str),
            "student_class_name": names[student_class].astype(str),
            "count": counts.astype(np.int64),
            "fraction": counts / pred_s.shape[0],
        }
    )


# ----------------------------------------------------------------------------- frames


def _per_class_accuracy(pred: np.ndarray, targets: np.ndarray, support: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(targets, weights=(pred == targets).astype(float), minlength=support.size) / support


def _student_frames(name, student, teacher, shared, settings) -> dict[str, pd.DataFrame]:
    """The rows of every frame for one student (``shared``: the teacher's and the batches' arrays)."""
    temperature, targets, labels = settings["temperature"], shared["targets"], shared["labels"]
    pred_s, confidence = _predictions(student)
    kl, cosine = _sample_measures(student, teacher, temperature)
    cswt = _cswt_in_batches(cosine, shared["batches"], settings["t_low"], settings["t_high"])
    epoch = _epoch_cosine(student, teacher, temperature)
    batch_mean = _batch_mean_cosine(student, teacher, shared["batches"], temperature)
    accuracy = _per_class_accuracy(pred_s, targets, shared["support"])
    per_class = pd.DataFrame(
        {
            "student": name,
            "class": np.arange(len(labels)),
            "class_name": labels,
            "support": shared["support"].astype(np.int64),
            "cosine_epoch": epoch,
            "cosine_batch_mean": batch_mean,
            "student_accuracy": accuracy,
            "teacher_accuracy": shared["teacher_class_accuracy"],
            "accuracy_gap": accuracy - shared["teacher_class_accuracy"],
        }
    )
    per_class["rank"] = per_class["cosine_epoch"].rank(method="first").astype(np.int64)
    correct = pred_s == targets
    per_sample = pd.DataFrame(
        {
            "student": name,
            "sample": np.arange(targets.size),
            "target": targets,
            "teacher_pred": shared["teacher_pred"],
            "student_pred": pred_s,
            "agree": pred_s == shared["teacher_pred"],
            "correct": correct,
            "confidence": confidence,
            "kl": kl,
            "cosine_distance": 1.0 - cosine,
            "cswt_temperature": cswt,
            "batch": shared["batch_of"],
        }
    )
    calibration = calibration_frame(name, confidence, correct)
    return {
        "per_class": per_class,
        "per_sample": per_sample,
        "confusion": _confusion_frame(name, pred_s, shared["teacher_pred"], labels),
        "calibration": calibration,
        "summary": _summary_frame(name, student, teacher, per_class, per_sample, calibration, shared),
    }


def _summary_frame(name, student, teacher, per_class, per_sample, calibration, shared) -> pd.DataFrame:
    counts = agreement(student, teacher, shared["target_tensor"])
    gap = per_class["accuracy_gap"]
    row = {
        "student": name,
        "accuracy": counts["student_accuracy"],
        "teacher_accuracy": counts["teacher_accuracy"],
        "agreement": counts["agreement"],
        "cosine_distance": 1.0 - float(per_class["cosine_epoch"].mean()),
        "cosine_distance_batch_mean": 1.0 - float(per_class["cosine_batch_mean"].mean()),
        "mean_kl": float(per_sample["kl"].mean()),
        "mean_cswt_temperature": float(per_sample["cswt_temperature"].mean()),
        "ece": _ece(calibration),
        "teacher_ece": shared["teacher_ece"],
        "classes_better": int((gap > 0).sum()),
        "classes_worse": int((gap < 0).sum()),
    }
    return pd.DataFrame([row])


def _shared(teacher: Tensor, targets: Tensor, labels: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    """What every student is compared with: the teacher's predictions, the targets and the batches."""
    n = teacher.shape[0]
    batch_size = settings["batch_size"]
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(settings["seed"]))
    batches = permutation[: (n // batch_size) * batch_size].view(-1, batch_size)
    batch_of = np.full(n, -1, dtype=np.int64)
    batch_of[batches.reshape(-1).numpy()] = np.repeat(np.arange(batches.shape[0]), batch_size)
    target_array = targets.numpy()
    teacher_pred, teacher_confidence = _predictions(teacher)
    support = np.bincount(target_array, minlength=len(labels)).astype(float)
    calibration = calibration_frame(TEACHER, teacher_confidence, teacher_pred == target_array)
    return {
        "targets": target_array,
        "target_tensor": targets,
        "labels": labels,
        "batches": batches,
        "batch_of": batch_of,
        "teacher_pred": teacher_pred,
        "support": support,
        "teacher_class_accuracy": _per_class_accuracy(teacher_pred, target_array, support),
        "teacher_calibration": calibration,
        "teacher_ece": _ece(calibration),
    }


def compare(
    teacher_logits: Tensor,
    students: Mapping[str, Tensor],
    targets: Tensor,
    *,
    class_names: Sequence[str] | None = None,
    temperature: float = 4.0,
    t_low: float = 2.0,
    t_high: float = 6.0,
    batch_size: int = 64,
    seed: int = 0,
) -> DistillationReport:
    """Compare every student with the teacher, from logits alone (see the module docstring).

    Args:
        teacher_logits: ``(N, C)`` teacher logits.
        students: ``{name: (N, C) logits}``, in the order the report lists them.
        targets: ``(N,)`` integer labels in ``[0, C)``.
        class_names: ``C`` names for the frames and figures (default ``"0"``, ``"1"``, ...).
        temperature: ``T`` of the per-class cosines and of the KL.
        t_low, t_high: the CSWT temperature range.
        batch_size: ``B >= 2`` samples per random batch (``B <= N``).
        seed: seed of the batches' permutation.

    Returns:
        A :class:`DistillationReport` with frames ``summary`` (one row per student),
        ``per_class`` (student x class), ``per_sample`` (student x sample), ``confusion``
        (differing top-1 pairs) and ``calibration`` (15 bins per model, teacher included).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> t = torch.randn(40, 3, generator=g)
        >>> report = compare(t, {"copy": t.clone()}, torch.randint(0, 3, (40,), generator=g), batch_size=8)
        >>> report.summary.loc[0, ["agreement", "cosine_distance", "mean_kl"]].tolist()
        [1.0, 0.0, 0.0]
    """
    check_logits(teacher_logits, "teacher_logits")
    teacher = teacher_logits.detach().cpu()
    n, classes = teacher.shape
    checked = _check_students(students, teacher)
    check_targets(targets, n, classes, tuple(teacher.shape))
    targets = targets.detach().cpu().long()
    names = _check_class_names(class_names, classes)
    settings = _check_settings(temperature, t_low, t_high, batch_size, seed, n)
    labels = names if names is not None else [str(j) for j in range(classes)]
    shared = _shared(teacher, targets, labels, settings)
    parts: dict[str, list[pd.DataFrame]] = {k: [] for k in DistillationReport.FRAMES}
    parts["calibration"].append(shared["teacher_calibration"])
    for name, student in checked.items():
        for key, frame in _student_frames(name, student, teacher, shared, settings).items():
            parts[key].append(frame)
    settings.update(
        n_samples=n,
        n_classes=classes,
        n_batches=int(shared["batches"].shape[0]),
        ece_bins=ECE_BINS,
        students=list(checked),
        class_names=names,
        kl_convention="mean_kl = mean_i KL(P_t[i] || P_s[i]) at T, without the T^2 of kd_loss",
    )
    frames = {key: pd.concat(values, ignore_index=True) for key, values in parts.items()}
    return DistillationReport(**frames, settings=settings)
