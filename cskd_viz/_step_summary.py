"""The Monitor's step records: capture a recorded step cheaply, summarise many steps at once.

A training loop pays for a record on its own thread, so capturing is a handful of copies: the
loss values as floats and the batch's logits, targets and temperatures as host arrays (float32
logits: a quarter of the memory of float64, and exact inputs for the float64 summary). The
summary (per-class cosine, accuracy, agreement, temperature quantiles and histogram) is computed
later for all captured steps together, as a few NumPy operations over a ``(steps, B, C)`` stack:
the per-operation cost, which dominates for small batches, is paid once per summary instead of
once per step.

A recorded step of a single sample (e.g. the last, partial batch of an epoch in a user's own loop)
is recorded with ``cosine_distance`` NaN and no ``class_cosine``: the cosine of batch predictions
is undefined for fewer than two samples (every column cosine of one sample is 1 whatever the
logits, which would read as perfect agreement). Its losses, accuracy and agreement are recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cskd_viz._validation import MIN_CSKD_BATCH, TEMPERATURE_RANGE, check_pair
from cskd_viz.metrics import _host_class_cosine, _host_temperature_stats, host_array
from cskd_viz.runs import StepRecord

_NAN = float("nan")
_STAT_NAMES = ("q05", "q25", "q50", "q75", "q95", "mean", "min", "max")


@dataclass
class RawStep:
    """One recorded step as captured: host arrays and plain numbers, no tensors."""

    step: int
    epoch: int
    names: list[str]
    losses: list[float]
    student: np.ndarray
    teacher: np.ndarray | None
    targets: np.ndarray | None
    temperatures: np.ndarray | None
    lr: float
    elapsed_s: float
    counts: list[float] | None = None  # [samples, correct, agree] already reduced over ranks

    @property
    def nbytes(self) -> int:
        arrays = (self.student, self.teacher, self.targets, self.temperatures)
        return sum(a.nbytes for a in arrays if a is not None)


def host_logits(student_logits: Tensor, teacher_logits: Tensor | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Both logit tensors as float32 host arrays (one copy from an accelerator when they can travel
    together), after checking them for NaN and infinities (the error names the culprit)."""
    s, t = student_logits.detach(), teacher_logits.detach() if teacher_logits is not None else None
    if t is not None and s.device.type != "cpu" and t.dtype == s.dtype and t.device == s.device:
        both = torch.cat([s, t]).cpu()
        s, t = both[: s.shape[0]], both[s.shape[0] :]
    student = host_array(s, np.float32)
    teacher = host_array(t, np.float32) if t is not None else None
    finite = math.isfinite(float(student.sum(dtype=np.float64)))
    if not finite or (teacher is not None and not math.isfinite(float(teacher.sum(dtype=np.float64)))):
        if teacher_logits is None:
            raise ValueError("student_logits contains NaN or infinite values")
        check_pair(student_logits, teacher_logits)  # names which one
        raise ValueError("student_logits or teacher_logits are too large: their sum overflows")
    return student, teacher


def host_temperatures(temperatures: Any, batch_size: int) -> np.ndarray:
    """The ``(B,)`` temperatures as a float64 host array, checked: finite and in ``TEMPERATURE_RANGE``."""
    if not isinstance(temperatures, Tensor) or temperatures.shape != (batch_size,):
        shape = tuple(temperatures.shape) if isinstance(temperatures, Tensor) else type(temperatures).__name__
        raise ValueError(f"temperatures must be a ({batch_size},) tensor, got {shape}")
    if not temperatures.is_floating_point():
        raise TypeError(f"temperatures must have a floating dtype, got {temperatures.dtype}")
    values = host_array(temperatures, np.float64)
    low, high = values.min(), values.max()
    if not (low > 0 and high < math.inf):  # NaN fails both
        raise ValueError("temperatures must be finite and > 0")
    if not (TEMPERATURE_RANGE[0] <= low and high <= TEMPERATURE_RANGE[1]):
        raise ValueError(
            f"temperatures must lie in [{TEMPERATURE_RANGE[0]:g}, {TEMPERATURE_RANGE[1]:g}] "
            f"(cskd_viz.losses.TEMPERATURE_RANGE), got values from {low:g} to {high:g}"
        )
    return values


def counts_of(raw: RawStep) -> list[float]:
    """``[samples, correct, agree]`` of one step (NaN where targets or teacher are missing)."""
    pred = raw.student.argmax(1)
    correct = float((pred == raw.targets).sum()) if raw.targets is not None else _NAN
    agree = float((pred == raw.teacher.argmax(1)).sum()) if raw.teacher is not None else _NAN
    return [float(pred.shape[0]), correct, agree]


def summarise(raws: list[RawStep], temperature: float, t_low: float, t_high: float, bins: int) -> list[StepRecord]:
    """The records of captured steps, in their order; steps of the same shape are computed together."""
    groups: dict[tuple, list[int]] = {}
    for i, raw in enumerate(raws):
        key = (raw.student.shape, raw.teacher is not None, raw.targets is not None, raw.temperatures is not None)
        groups.setdefault(key, []).append(i)
    records: list[StepRecord | None] = [None] * len(raws)
    width = t_high - t_low
    edges = [t_low + width * i / bins for i in range(bins)] + [t_high]
    for (_, has_teacher, has_targets, has_temperatures), members in groups.items():
        part = [raws[i] for i in members]
        student = np.stack([r.student for r in part]).astype(np.float64)  # (k, B, C)
        pred = student.argmax(2)
        cosines = correct = agree = None
        if has_teacher:
            teacher = np.stack([r.teacher for r in part]).astype(np.float64)
            if student.shape[1] >= MIN_CSKD_BATCH:  # one sample: undefined (see the module docstring)
                cosines = _host_class_cosine(student, teacher, temperature)  # (k, C)
            agree = (pred == teacher.argmax(2)).sum(1)
        if has_targets:
            correct = (pred == np.stack([r.targets for r in part])).sum(1)
        stats = None
        if has_temperatures:
            ordered = np.sort(np.stack([r.temperatures for r in part]), axis=1)
            stats = _host_temperature_stats(ordered, t_low, t_high, bins)
        for j, (i, raw) in enumerate(zip(members, part, strict=True)):
            counts = raw.counts or [float(pred.shape[1]), _pick(correct, j), _pick(agree, j)]
            records[i] = _record(raw, counts, cosines[j] if cosines is not None else None, stats, j, edges)
    return records  # type: ignore[return-value]


def _pick(values: np.ndarray | None, j: int) -> float:
    return _NAN if values is None else float(values[j])


def _record(raw: RawStep, counts, cosine, stats, j: int, edges: list[float]) -> StepRecord:
    metrics = dict(zip(raw.names, raw.losses, strict=True))
    samples, correct, agree = counts
    metrics["train_accuracy"] = correct / samples
    metrics["agreement"] = agree / samples
    class_cosine = cosine.tolist() if cosine is not None else None
    metrics["cosine_distance"] = 1.0 - sum(class_cosine) / len(class_cosine) if class_cosine else _NAN
    temperature_stats = hist = None
    metrics["mean_temperature"] = _NAN
    if stats is not None:
        temperature_stats = {name: float(stats[name][j]) for name in _STAT_NAMES}
        metrics["mean_temperature"] = temperature_stats["mean"]
        counts_row = stats["histogram"][j].tolist()
        hist = [(edges[b], edges[b + 1], counts_row[b]) for b in range(len(counts_row))]
    metrics["lr"] = raw.lr
    metrics["elapsed_s"] = raw.elapsed_s
    return StepRecord(raw.step, raw.epoch, metrics, class_cosine, temperature_stats, hist)
