"""Diagnostics of how a student tracks its teacher: per-batch measures and epoch accumulators.

Per-batch functions take ``(B, C)`` logits and return tensors. Accumulators follow the
``update / compute / reset`` contract (torchmetrics style) and keep fixed-size sums, so an
epoch's statistics use memory independent of the number of steps; ``merge`` combines two
accumulators (e.g. from two workers) exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from cskd_viz import losses
from cskd_viz._validation import (
    Temperature,
    check_logits,
    check_pair,
    check_scalar,
    check_temperature,
    check_temperature_range,
    compute_dtype,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "per_class_cosine",
    "per_sample_cosine",
    "per_sample_kl",
    "top1_agreement",
    "prediction_entropy",
    "KLvsCosine",
    "PerClassCosineAccumulator",
    "TemperatureStatsAccumulator",
    "AgreementAccumulator",
]


def _prepared(student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature):
    check_pair(student_logits, teacher_logits)
    temperature = check_temperature(temperature, student_logits.shape[0])
    dtype = compute_dtype(student_logits, teacher_logits)
    return student_logits.detach().to(dtype), teacher_logits.detach().to(dtype), temperature


@torch.no_grad()
def per_class_cosine(student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature = 4.0) -> Tensor:
    """Per-class cosine of batch predictions ``c_j = cos(P_s[:, j], P_t[:, j])``.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``.
        temperature: float or ``(B,)``.

    Returns:
        ``(C,)`` cosines in ``[0, 1]`` (no gradient). ``1 - mean`` is CSKD's ``d(T)``.

    Example:
        >>> z = torch.randn(4, 3)
        >>> per_class_cosine(z, z).shape
        torch.Size([3])
    """
    s, t, temperature = _prepared(student_logits, teacher_logits, temperature)
    return losses._per_class_cosine(s, t, temperature)


@torch.no_grad()
def per_sample_cosine(student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature = 1.0) -> Tensor:
    """Per-sample cosine of class predictions ``s_i = cos(P_s[i, :], P_t[i, :])``.

    At the default ``T = 1`` these are the similarities CSWT maps to temperatures.

    Returns:
        ``(B,)`` cosines in ``[0, 1]`` (no gradient).

    Example:
        >>> z = torch.randn(4, 3)
        >>> per_sample_cosine(z, z).shape
        torch.Size([4])
    """
    s, t, temperature = _prepared(student_logits, teacher_logits, temperature)
    return losses._per_sample_cosine(s, t, temperature)


@torch.no_grad()
def per_sample_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature = 1.0) -> Tensor:
    """Per-sample ``KL(P_t[i] || P_s[i])`` at temperature ``T`` (no ``T^2`` factor).

    Returns:
        ``(B,)`` non-negative divergences (no gradient).

    Example:
        >>> z = torch.randn(4, 3)
        >>> per_sample_kl(z, z).abs().max().item() < 1e-6
        True
    """
    s, t, temperature = _prepared(student_logits, teacher_logits, temperature)
    log_s = F.log_softmax(losses._scaled_logits(s, temperature), dim=1)
    log_t = F.log_softmax(losses._scaled_logits(t, temperature), dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(1).clamp_min(0.0)


@torch.no_grad()
def top1_agreement(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Fraction of samples where student and teacher predict the same class (scalar in ``[0, 1]``).

    Example:
        >>> float(top1_agreement(torch.eye(3), torch.eye(3)))
        1.0
    """
    check_pair(student_logits, teacher_logits)
    return (student_logits.argmax(1) == teacher_logits.argmax(1)).to(torch.float32).mean()


@torch.no_grad()
def prediction_entropy(logits: Tensor, temperature: Temperature = 1.0) -> Tensor:
    """Entropy ``-sum_j P[i, j] log P[i, j]`` of each row of ``softmax(logits / T)``, in nats.

    Args:
        logits: ``(B, C)``.
        temperature: float or ``(B,)``.

    Returns:
        ``(B,)`` entropies in ``[0, log C]``.

    Example:
        >>> round(float(prediction_entropy(torch.zeros(1, 4))[0]), 4)
        1.3863
    """
    check_logits(logits, "logits")
    temperature = check_temperature(temperature, logits.shape[0])
    logits = logits.detach().to(compute_dtype(logits))
    log_p = F.log_softmax(losses._scaled_logits(logits, temperature), dim=1)
    return (-(log_p.exp() * log_p).sum(1)).clamp_min(0.0)


class KLvsCosine:
    """Compare KL (what KD minimises) with batch cosine distance (what CSKD minimises).

    Both measures are evaluated on the same logits while the *student* logits are transformed:
    ``scale`` multiplies them by ``a`` (changes the softmax: KL moves, and so does the cosine, but
    differently), ``shift`` adds ``b`` to every logit (softmax unchanged: both stay put).

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``.
        temperature: the temperature both measures use.

    Example:
        >>> z = torch.randn(8, 5)
        >>> frame = KLvsCosine(z, z).frame(scales=[1.0, 2.0], shifts=[0.0])
        >>> sorted(frame.columns)[:3]
        ['amount', 'cosine_distance', 'cskd_loss']
    """

    def __init__(self, student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> None:
        check_pair(student_logits, teacher_logits)
        self.temperature = check_scalar(temperature, "temperature")
        self.student_logits = student_logits.detach()
        self.teacher_logits = teacher_logits.detach()

    def _row(self, transform: str, amount: float, student: Tensor) -> dict:
        t = self.temperature
        return {
            "transform": transform,
            "amount": float(amount),
            "kd_loss": float(losses.kd_loss(student, self.teacher_logits, t)),
            "mean_kl": float(per_sample_kl(student, self.teacher_logits, t).mean()),
            "cosine_distance": float(losses.batch_cosine_distance(student, self.teacher_logits, t)),
            "cskd_loss": float(losses.cskd_loss(student, self.teacher_logits, t, cswt=False)),
            "mean_sample_cosine_distance": float(1 - per_sample_cosine(student, self.teacher_logits, t).mean()),
        }

    def frame(
        self,
        scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
        shifts: Sequence[float] = (-5.0, 0.0, 5.0),
    ) -> pd.DataFrame:
        """Tidy frame: one row per (transform, amount) with ``kd_loss``, ``cosine_distance`` etc."""
        import pandas as pd

        rows = []
        for a in scales:
            a = check_scalar(a, "scales")
            rows.append(self._row("scale", a, self.student_logits * a))
        for b in shifts:
            b = check_scalar(b, "shifts", positive=False)
            rows.append(self._row("shift", b, self.student_logits + b))
        return pd.DataFrame(rows)

    def per_sample(self) -> pd.DataFrame:
        """One row per sample: ``kl`` and ``cosine_distance`` (``1 - s_i``) at the temperature,
        plus whether student and teacher agree on the top-1 class."""
        import pandas as pd

        s, t = self.student_logits, self.teacher_logits
        return pd.DataFrame(
            {
                "sample": range(s.shape[0]),
                "kl": per_sample_kl(s, t, self.temperature).cpu().numpy(),
                "cosine_distance": (1 - per_sample_cosine(s, t, self.temperature)).cpu().numpy(),
                "top1_agree": (s.argmax(1) == t.argmax(1)).cpu().numpy(),
            }
        )


# ----------------------------------------------------------------------------- accumulators


class PerClassCosineAccumulator:
    """Epoch-level per-class cosine of batch predictions, built batch by batch.

    Keeps three float64 sums per class, ``sum P_s*P_t``, ``sum P_s^2``, ``sum P_t^2`` over every
    sample seen, each column rescaled by its running maximum (kept in log space, ``log_scale_s``,
    ``log_scale_t``) so that a rarely predicted class (probabilities ~1e-200, whose squares
    underflow float64) keeps its exact direction. ``compute()`` is the cosine between the *whole
    epoch's* probability columns:
    exactly ``per_class_cosine`` on all the logits at once (up to float64 rounding). That is not
    the mean of per-batch cosines, which ``compute_batch_mean()`` returns instead. Memory is
    ``O(C)``, independent of the number of steps.

    Args:
        num_classes: ``C``.
        temperature: the softmax temperature.

    Example:
        >>> acc = PerClassCosineAccumulator(3)
        >>> z = torch.randn(5, 3)
        >>> acc.update(z, z); acc.compute().tolist()
        [1.0, 1.0, 1.0]
    """

    def __init__(self, num_classes: int, temperature: float = 4.0) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise TypeError(f"num_classes must be a positive int, got {type(num_classes).__name__}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.temperature = check_scalar(temperature, "temperature")
        self.reset()

    def reset(self) -> None:
        self.dot = torch.zeros(self.num_classes, dtype=torch.float64)
        self.student_sq = torch.zeros(self.num_classes, dtype=torch.float64)
        self.teacher_sq = torch.zeros(self.num_classes, dtype=torch.float64)
        self.log_scale_s = torch.full((self.num_classes,), -torch.inf, dtype=torch.float64)
        self.log_scale_t = torch.full((self.num_classes,), -torch.inf, dtype=torch.float64)
        self.batch_cosine_sum = torch.zeros(self.num_classes, dtype=torch.float64)
        self.batches = 0
        self.samples = 0

    @torch.no_grad()
    def update(self, student_logits: Tensor, teacher_logits: Tensor) -> None:
        """Add a batch of ``(B, C)`` logits."""
        check_pair(student_logits, teacher_logits)
        if student_logits.shape[1] != self.num_classes:
            raise ValueError(
                f"student_logits has {student_logits.shape[1]} classes, accumulator expects {self.num_classes}"
            )
        s = student_logits.detach().to("cpu", torch.float64)
        t = teacher_logits.detach().to("cpu", torch.float64)
        log_s = F.log_softmax(s / self.temperature, dim=1)
        log_t = F.log_softmax(t / self.temperature, dim=1)
        scale_s = torch.maximum(self.log_scale_s, log_s.amax(0))
        scale_t = torch.maximum(self.log_scale_t, log_t.amax(0))
        self._rescale(scale_s, scale_t)
        u, v = torch.exp(log_s - scale_s), torch.exp(log_t - scale_t)
        self.dot += (u * v).sum(0)
        self.student_sq += (u * u).sum(0)
        self.teacher_sq += (v * v).sum(0)
        self.batch_cosine_sum += losses._per_class_cosine(s, t, self.temperature)
        self.batches += 1
        self.samples += s.shape[0]

    def _rescale(self, scale_s: Tensor, scale_t: Tensor) -> None:
        """Express the sums relative to new (larger or equal) column scales."""
        if self.samples:  # before the first update the scales are -inf and the sums 0
            factor_s, factor_t = torch.exp(self.log_scale_s - scale_s), torch.exp(self.log_scale_t - scale_t)
            self.dot *= factor_s * factor_t
            self.student_sq *= factor_s * factor_s
            self.teacher_sq *= factor_t * factor_t
        self.log_scale_s, self.log_scale_t = scale_s, scale_t

    def merge(self, other: PerClassCosineAccumulator) -> None:
        """Add another accumulator's sums (same ``num_classes`` and ``temperature``)."""
        if not isinstance(other, PerClassCosineAccumulator):
            raise TypeError(f"other must be a PerClassCosineAccumulator, got {type(other).__name__}")
        if (other.num_classes, other.temperature) != (self.num_classes, self.temperature):
            raise ValueError("can only merge accumulators with the same num_classes and temperature")
        if other.samples:
            scale_s = torch.maximum(self.log_scale_s, other.log_scale_s)
            scale_t = torch.maximum(self.log_scale_t, other.log_scale_t)
            self._rescale(scale_s, scale_t)
            factor_s, factor_t = torch.exp(other.log_scale_s - scale_s), torch.exp(other.log_scale_t - scale_t)
            self.dot += other.dot * factor_s * factor_t
            self.student_sq += other.student_sq * factor_s * factor_s
            self.teacher_sq += other.teacher_sq * factor_t * factor_t
        self.batch_cosine_sum += other.batch_cosine_sum
        self.batches += other.batches
        self.samples += other.samples

    def compute(self) -> Tensor:
        """``(C,)`` epoch-level cosines (float64). Two all-zero columns count as 1, one as 0."""
        if self.samples == 0:
            raise RuntimeError("PerClassCosineAccumulator.compute() called before any update()")
        norms = (self.student_sq * self.teacher_sq).sqrt()
        both_zero = (self.student_sq == 0) & (self.teacher_sq == 0)
        cosine = torch.where(norms > 0, self.dot / torch.where(norms > 0, norms, 1.0), 0.0)
        return torch.where(both_zero, 1.0, cosine).clamp(0.0, 1.0)

    def compute_batch_mean(self) -> Tensor:
        """``(C,)`` mean over updates of the per-batch cosines (what the CSKD loss saw)."""
        if self.batches == 0:
            raise RuntimeError("compute_batch_mean() called before any update()")
        return self.batch_cosine_sum / self.batches


class TemperatureStatsAccumulator:
    """Running statistics of CSWT temperatures: count, mean, std, min, max and a histogram.

    The histogram has ``bins`` equal bins over ``[t_low, t_high]``; all sums are fixed size, so
    memory does not grow with the number of steps.

    Example:
        >>> acc = TemperatureStatsAccumulator(2.0, 6.0, bins=4)
        >>> acc.update(torch.tensor([2.0, 6.0, 4.0]))
        >>> stats = acc.compute(); stats["mean"], stats["histogram"].tolist()
        (4.0, [1, 0, 1, 1])
    """

    def __init__(self, t_low: float = 2.0, t_high: float = 6.0, bins: int = 20) -> None:
        self.t_low, self.t_high = check_temperature_range(t_low, t_high)
        if isinstance(bins, bool) or not isinstance(bins, int):
            raise TypeError(f"bins must be a positive int, got {type(bins).__name__}")
        if bins < 1:
            raise ValueError(f"bins must be a positive int, got {bins!r}")
        self.bins = bins
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.minimum = float("inf")
        self.maximum = float("-inf")
        self.histogram = torch.zeros(self.bins, dtype=torch.int64)

    @property
    def bin_edges(self) -> Tensor:
        return torch.linspace(self.t_low, self.t_high, self.bins + 1, dtype=torch.float64)

    @torch.no_grad()
    def update(self, temperatures: Tensor) -> None:
        """Add a ``(B,)`` tensor of temperatures."""
        if not isinstance(temperatures, Tensor):
            raise TypeError(f"temperatures must be a torch.Tensor (B,), got {type(temperatures).__name__}")
        if temperatures.dim() != 1:
            raise ValueError(f"temperatures must be 1-D (B,), got shape {tuple(temperatures.shape)}")
        if temperatures.numel() == 0:
            return
        check_temperature(temperatures, temperatures.shape[0], "temperatures")
        t = temperatures.detach().to("cpu", torch.float64)
        self.count += t.numel()
        self.total += float(t.sum())
        self.total_sq += float((t * t).sum())
        self.minimum = min(self.minimum, float(t.min()))
        self.maximum = max(self.maximum, float(t.max()))
        width = self.t_high - self.t_low
        if width > 0:
            index = ((t - self.t_low) / width * self.bins).floor().long().clamp(0, self.bins - 1)
        else:
            index = torch.zeros_like(t, dtype=torch.long)
        self.histogram += torch.bincount(index, minlength=self.bins)

    def merge(self, other: TemperatureStatsAccumulator) -> None:
        if not isinstance(other, TemperatureStatsAccumulator):
            raise TypeError(f"other must be a TemperatureStatsAccumulator, got {type(other).__name__}")
        if (other.t_low, other.t_high, other.bins) != (self.t_low, self.t_high, self.bins):
            raise ValueError("can only merge accumulators with the same t_low, t_high and bins")
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        self.histogram += other.histogram

    def compute(self) -> dict:
        """``{"count", "mean", "std", "min", "max", "histogram", "bin_edges"}``."""
        if self.count == 0:
            raise RuntimeError("TemperatureStatsAccumulator.compute() called before any update()")
        mean = self.total / self.count
        var = max(self.total_sq / self.count - mean * mean, 0.0)
        return {
            "count": self.count,
            "mean": mean,
            "std": var**0.5,
            "min": self.minimum,
            "max": self.maximum,
            "histogram": self.histogram.clone(),
            "bin_edges": self.bin_edges,
        }


class AgreementAccumulator:
    """Top-1 agreement of student and teacher (and student accuracy when targets are given).

    Example:
        >>> acc = AgreementAccumulator()
        >>> acc.update(torch.eye(3), torch.eye(3), torch.tensor([0, 1, 0]))
        >>> acc.compute()
        {'agreement': 1.0, 'student_accuracy': 0.6666666666666666, 'teacher_accuracy': 0.6666666666666666}
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.samples = 0
        self.agree = 0
        self.labelled = 0
        self.student_correct = 0
        self.teacher_correct = 0

    @torch.no_grad()
    def update(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None = None) -> None:
        check_pair(student_logits, teacher_logits)
        pred_s, pred_t = student_logits.argmax(1), teacher_logits.argmax(1)
        self.samples += pred_s.numel()
        self.agree += int((pred_s == pred_t).sum())
        if targets is not None:
            if not isinstance(targets, Tensor):
                raise TypeError(f"targets must be a torch.Tensor of class indices, got {type(targets).__name__}")
            if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
                raise TypeError(f"targets must have an integer dtype (class indices), got {targets.dtype}")
            if targets.shape != pred_s.shape:
                raise ValueError(f"targets must have shape {tuple(pred_s.shape)}, got {tuple(targets.shape)}")
            targets = targets.to(pred_s.device)
            self.labelled += targets.numel()
            self.student_correct += int((pred_s == targets).sum())
            self.teacher_correct += int((pred_t == targets).sum())

    def merge(self, other: AgreementAccumulator) -> None:
        if not isinstance(other, AgreementAccumulator):
            raise TypeError(f"other must be an AgreementAccumulator, got {type(other).__name__}")
        for name in ("samples", "agree", "labelled", "student_correct", "teacher_correct"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def compute(self) -> dict:
        if self.samples == 0:
            raise RuntimeError("AgreementAccumulator.compute() called before any update()")
        result = {"agreement": self.agree / self.samples}
        if self.labelled:
            result["student_accuracy"] = self.student_correct / self.labelled
            result["teacher_accuracy"] = self.teacher_correct / self.labelled
        return result
