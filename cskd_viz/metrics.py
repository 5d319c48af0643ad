"""Epoch-level diagnostics as ``torchmetrics`` metrics, each with a functional twin.

=======================  ===========================  ==============================================
metric                   functional twin              value
=======================  ===========================  ==============================================
:class:`PerClassCosine`  :func:`class_cosine`         ``(C,)`` cosine of the *whole epoch's* batch
                                                      predictions ``cos(P_s[:, j], P_t[:, j])``
:class:`TemperatureStats` :func:`temperature_stats`   count, mean, std, min, max, quantiles and a
                                                      histogram of CSWT temperatures
:class:`Agreement`       :func:`agreement`            top-1 agreement, student and teacher accuracy
=======================  ===========================  ==============================================

Every metric keeps fixed-size float64/int64 states registered with ``add_state``, so it moves
with ``.to(device)``, resets with ``reset()`` and is synchronised under DDP by torchmetrics (one
gather per state at ``compute()``). Counts and sums reduce with ``"sum"``; the per-class sums of
:class:`PerClassCosine` are stored relative to a running per-class scale (kept in log space so a
rarely predicted class, whose squared probabilities underflow float64, keeps its exact direction)
and reduce with :func:`merge_scaled_sums`, the exact sum of such sums, instead. A metric fed
batch by batch equals its functional twin on the concatenated data (up to float64 rounding).

Temperature quantiles: :func:`temperature_stats` has every value and gives exact quantiles
(``torch.quantile``'s linear rule); :class:`TemperatureStats` streams and keeps a fixed histogram of
``bins * 100`` fine bins over ``[t_low, t_high]``, so its quantiles are exact to within one fine bin,
``(t_high - t_low) / (100 bins)`` (clamped to the exact ``[min, max]``). Everything else agrees
exactly. Values outside ``[t_low, t_high]`` count in the end bins of the histograms.

Bad input: every ``update`` validates its whole input before it changes any state, so a refused
update (a ``ValueError``/``TypeError``) leaves every state, and the update count, exactly as it was
(``metric(...)``, torchmetrics' ``forward``, too). Temperatures must lie in ``[1e-3, 1e3]`` and logits
within ``|z| <= 1e30`` (the bounds of :mod:`cskd_viz.losses`); targets must be class indices in
``[0, C)``.

Batches of one sample: the cosine of batch predictions of a single sample is 1 in every column
whatever the logits, so it is undefined rather than perfect agreement. :func:`class_cosine` and
:meth:`PerClassCosine.compute` return NaN for fewer than two samples in all, and
:meth:`PerClassCosine.compute_batch_mean` averages only the updates of at least two samples.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from cskd_viz._validation import (
    MIN_CSKD_BATCH,
    check_pair,
    check_positive_int,
    check_temperature,
    check_temperature_range,
    check_temperature_value,
)

__all__ = [
    "QUANTILES",
    "PerClassCosine",
    "TemperatureStats",
    "Agreement",
    "class_cosine",
    "temperature_stats",
    "agreement",
    "merge_scaled_sums",
    "PerClassCosineAccumulator",
    "TemperatureStatsAccumulator",
    "AgreementAccumulator",
]

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_QUANTILE_NAMES = [f"q{round(q * 100):02d}" for q in QUANTILES]
_FINE_PER_BIN = 100  # fine histogram bins per display bin, for the quantiles


class _Guarded(Metric):
    """A refused ``update`` or ``forward`` leaves no trace (the subclasses validate before they mutate).

    torchmetrics counts an update (``_update_count``) before running it, and ``forward`` resets the
    states before its batch update: both are put back when the call raises.
    """

    def _wrap_update(self, update):
        wrapped = super()._wrap_update(update)

        @functools.wraps(update)
        def guarded(*args: Any, **kwargs: Any) -> None:
            count = self._update_count
            try:
                wrapped(*args, **kwargs)
            except BaseException:
                self._update_count = count
                raise

        return guarded

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        states = {name: getattr(self, name) for name in self._defaults}  # forward's reset replaces, never mutates them
        flags = ("_update_count", "_computed", "_to_sync", "_should_unsync", "compute_on_cpu", "_enable_grad")
        saved = {name: getattr(self, name) for name in flags}
        try:
            return super().forward(*args, **kwargs)
        except BaseException:
            for name, value in {**states, **saved}.items():
                setattr(self, name, value)
            raise


# ----------------------------------------------------------------------------- per-class cosine
# Packed state, (5, C) float64: rows dot, student_sq, teacher_sq (relative to the scales), log_scale_s, log_scale_t.


def _empty_scaled_sums(num_classes: int, device: Any = None) -> Tensor:
    sums = torch.zeros(5, num_classes, dtype=torch.float64, device=device)
    sums[3:] = -torch.inf
    return sums


def _scaled_sums(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``(5, C)`` float64 sums of one batch, each column relative to its own largest probability."""
    z = torch.stack([student_logits.detach(), teacher_logits.detach()]).double().div_(temperature)  # (2, B, C)
    z = torch.log_softmax(z, dim=2)
    scales = z.amax(1)  # (2, C)
    directions = z.sub_(scales.unsqueeze(1)).exp_()
    dot = (directions[0] * directions[1]).sum(0)
    return torch.cat([dot.unsqueeze(0), directions.square_().sum(1), scales])


def merge_scaled_sums(stacked: Tensor) -> Tensor:
    """Exact sum of ``(N, 5, C)`` scaled sums (``dist_reduce_fx`` of :class:`PerClassCosine`).

    Each part is re-expressed relative to the largest scale per class, then summed; a part that
    saw no data (scales ``-inf``) contributes nothing.
    """
    scales = stacked[:, 3:].amax(0)  # (2, C)
    seen = torch.isfinite(scales)
    factors = torch.where(seen, torch.exp(stacked[:, 3:] - torch.where(seen, scales, 0.0)), 0.0)  # (N, 2, C)
    dot = (stacked[:, 0] * factors[:, 0] * factors[:, 1]).sum(0)
    squares = (stacked[:, 1:3] * factors.square()).sum(0)
    return torch.cat([dot.unsqueeze(0), squares, scales])


def host_array(x: Tensor, dtype: Any = np.float64) -> np.ndarray:
    """A detached tensor as a NumPy array of ``dtype`` on the host: always a copy (a loop may reuse its buffers)."""
    x = x.detach().cpu()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return np.array(x.numpy(), dtype=dtype)


def _cosine_from_sums(sums: Tensor) -> Tensor:
    """``(C,)`` cosines from ``(5, C)`` scaled sums of at least one sample.

    Every batch's columns are scaled so their largest entry is 1, so both squared norms are >= 1
    once any sample was seen: no zero division, no ``eps``.
    """
    return (sums[0] / (sums[1] * sums[2]).sqrt()).clamp_(0.0, 1.0)


def _checked_pair(student_logits: Tensor, teacher_logits: Tensor, num_classes: int | None = None) -> None:
    check_pair(student_logits, teacher_logits)
    if num_classes is not None and student_logits.shape[1] != num_classes:
        raise ValueError(f"student_logits has {student_logits.shape[1]} classes, the metric expects {num_classes}")


def class_cosine(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Per-class cosine of batch predictions over all rows at once, in float64.

    Args:
        student_logits: ``(N, C)``.
        teacher_logits: ``(N, C)``.
        temperature: ``T`` in ``[1e-3, 1e3]``.

    Returns:
        ``(C,)`` float64 CPU cosines in ``[0, 1]``; what :class:`PerClassCosine` computes from batches.
        NaN for ``N = 1``: one sample's column cosines are 1 whatever the logits (undefined for ``N < 2``).

    Example:
        >>> z = torch.randn(6, 3)
        >>> class_cosine(z, z).tolist()
        [1.0, 1.0, 1.0]
    """
    _checked_pair(student_logits, teacher_logits)
    temperature = check_temperature_value(temperature, "temperature")
    cosine = _host_class_cosine(host_array(student_logits), host_array(teacher_logits), temperature)
    return torch.from_numpy(cosine)


class PerClassCosine(_Guarded):
    """Epoch-level per-class cosine of batch predictions, from fixed-size sums.

    ``compute()`` is the cosine between the whole epoch's probability columns, equal to
    :func:`class_cosine` on all the logits at once (NaN while fewer than two samples were seen).
    ``compute_batch_mean()`` is the other reading of CSKD's cosine: the mean over updates of the
    per-batch cosines (what the loss saw); an update of one sample adds to ``compute()`` but not to
    this mean (its cosines are 1 trivially), and the state ``batches`` counts only the updates of at
    least two samples. Memory is ``O(C)`` whatever the number of updates.

    Args:
        num_classes: ``C``.
        temperature: the softmax temperature ``T``, in ``[1e-3, 1e3]``.
        **kwargs: ``torchmetrics.Metric`` options (``sync_on_compute``, ``process_group``, ...).

    Example:
        >>> metric = PerClassCosine(3)
        >>> z = torch.randn(5, 3)
        >>> metric.update(z, z); metric.compute().tolist()
        [1.0, 1.0, 1.0]
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, temperature: float = 4.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = check_positive_int(num_classes, "num_classes", type_error=True)
        self.temperature = check_temperature_value(temperature, "temperature")
        self.add_state("sums", default=_empty_scaled_sums(num_classes), dist_reduce_fx=merge_scaled_sums)
        zeros = torch.zeros(num_classes, dtype=torch.float64)
        self.add_state("batch_cosine_sum", default=zeros, dist_reduce_fx="sum")
        self.add_state("batches", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("samples", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, student_logits: Tensor, teacher_logits: Tensor) -> None:
        """Add a batch of ``(B, C)`` logits (validated before any state changes)."""
        _checked_pair(student_logits, teacher_logits, self.num_classes)
        batch = _scaled_sums(student_logits, teacher_logits, self.temperature).to(self.sums.device)
        self.sums = merge_scaled_sums(torch.stack([self.sums, batch]))
        if student_logits.shape[0] >= MIN_CSKD_BATCH:
            self.batch_cosine_sum += _cosine_from_sums(batch)
            self.batches += 1
        self.samples += student_logits.shape[0]

    def compute(self) -> Tensor:
        """``(C,)`` float64 epoch-level cosines (NaN after a single sample: undefined for fewer than two)."""
        samples = int(self.samples)
        if samples == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update()")
        if samples < MIN_CSKD_BATCH:
            return torch.full((self.num_classes,), math.nan, dtype=torch.float64, device=self.sums.device)
        return _cosine_from_sums(self.sums)

    def compute_batch_mean(self) -> Tensor:
        """``(C,)`` mean over the updates of at least two samples of their per-batch cosines (local to
        this process); NaN when every update had a single sample."""
        if int(self.batches) == 0:
            if int(self.samples) == 0:
                raise RuntimeError("compute_batch_mean() called before any update()")
            return torch.full((self.num_classes,), math.nan, dtype=torch.float64, device=self.sums.device)
        return self.batch_cosine_sum / self.batches


# ----------------------------------------------------------------------------- temperatures


def _checked_temperatures(temperatures: Tensor) -> Tensor:
    if not isinstance(temperatures, Tensor):
        raise TypeError(f"temperatures must be a torch.Tensor (B,), got {type(temperatures).__name__}")
    if temperatures.dim() != 1:
        raise ValueError(f"temperatures must be 1-D (B,), got shape {tuple(temperatures.shape)}")
    if temperatures.numel():  # detached: statistics of recorded temperatures need no gradient
        check_temperature(temperatures, temperatures.shape[0], "temperatures", stop_gradient=False)
    return temperatures.detach().double()


def _temperature_sums(values: Tensor, t_low: float, t_high: float, fine_bins: int) -> tuple[Tensor, Tensor]:
    """``([count, sum, sum of squares, min, max], fine histogram)`` of float64 ``values``."""
    if values.numel() == 0:
        moments = values.new_tensor([0.0, 0.0, 0.0, math.inf, -math.inf])
        return moments, torch.zeros(fine_bins, dtype=torch.int64, device=values.device)
    low, high = torch.aminmax(values)
    moments = torch.stack([values.new_tensor(float(values.numel())), values.sum(), values.square().sum(), low, high])
    index = _fine_index(values, t_low, t_high, fine_bins // _FINE_PER_BIN)
    return moments, torch.bincount(index, minlength=fine_bins)


def _stats_from_sums(moments: Tensor, fine: Tensor, t_low: float, t_high: float, bins: int) -> dict[str, Any]:
    count = int(moments[0])
    if count == 0:
        raise RuntimeError("no temperatures: compute() called before any update() with values")
    mean = float(moments[1]) / count
    var = max(float(moments[2]) / count - mean * mean, 0.0)
    low, high = float(moments[3]), float(moments[4])
    stats: dict[str, Any] = {"count": count, "mean": mean, "std": var**0.5, "min": low, "max": high}
    stats.update(_quantiles_from_histogram(fine, t_low, t_high, low, high))
    stats["histogram"] = fine.view(bins, -1).sum(1)
    stats["bin_edges"] = torch.linspace(t_low, t_high, bins + 1, dtype=torch.float64)
    return stats


def _quantiles_from_histogram(fine: Tensor, t_low: float, t_high: float, low: float, high: float) -> dict[str, float]:
    """Linear-interpolation quantiles (``torch.quantile``'s rule) of values known by fine bin only:
    the ``k``-th value of a bin holding ``c`` is placed at ``left + width * (k + 0.5) / c``."""
    fine = fine.cpu()
    count = int(fine.sum())
    width = (t_high - t_low) / fine.numel()
    cumulative = fine.cumsum(0)
    ranks = torch.tensor([q * (count - 1) for q in QUANTILES], dtype=torch.float64)
    order = torch.cat([ranks.floor(), ranks.ceil()]).long()
    bin_of = torch.searchsorted(cumulative, order, right=True).clamp_(max=fine.numel() - 1)
    within = order - (cumulative[bin_of] - fine[bin_of])
    values = t_low + width * (bin_of + (within + 0.5) / fine[bin_of].clamp(min=1))
    below, above = values.double().view(2, -1)
    quantiles = (below + (above - below) * (ranks - ranks.floor())).clamp(low, high).tolist()
    return {f"q{round(q * 100):02d}": value for q, value in zip(QUANTILES, quantiles, strict=True)}


def temperature_stats(temperatures: Tensor, t_low: float = 2.0, t_high: float = 6.0, bins: int = 12) -> dict[str, Any]:
    """Statistics of CSWT temperatures: what :class:`TemperatureStats` computes, with exact quantiles.

    Args:
        temperatures: ``(B,)`` positive temperatures (at least one).
        t_low, t_high: the histogram range (the CSWT range).
        bins: display bins of the histogram.

    Returns:
        ``{"count", "mean", "std", "min", "max", "q05", "q25", "q50", "q75", "q95",
        "histogram" (bins,), "bin_edges" (bins + 1,)}``.

    Example:
        >>> stats = temperature_stats(torch.tensor([2.0, 4.0, 6.0]), bins=4)
        >>> stats["mean"], stats["min"], stats["max"], stats["histogram"].tolist()
        (4.0, 2.0, 6.0, [1, 0, 1, 1])
    """
    t_low, t_high = check_temperature_range(t_low, t_high)
    bins = check_positive_int(bins, "bins", type_error=True)
    values = _checked_temperatures(temperatures)
    if values.numel() == 0:
        raise ValueError("temperatures is empty: need at least one value")
    ordered = np.sort(values.cpu().numpy())
    host = _host_temperature_stats(ordered, t_low, t_high, bins)
    stats = {"count": ordered.size, **{k: float(v) for k, v in host.items() if k != "histogram"}}
    stats["std"] = float(ordered.std())
    stats["histogram"] = torch.from_numpy(host["histogram"].astype(np.int64))
    stats["bin_edges"] = torch.linspace(t_low, t_high, bins + 1, dtype=torch.float64)
    return stats


def _host_class_cosine(student: np.ndarray, teacher: np.ndarray, temperature: float) -> np.ndarray:
    """``(..., C)`` per-class cosine of batch predictions from float64 logits ``(..., B, C)``.

    Leading axes are independent batches (the Monitor summarises many recorded steps at once).
    Log-softmax rows at ``T``, each column rescaled so its largest entry is 1 (no underflow for rare
    classes, norms >= 1, no ``eps``), and ``sqrt(a * a) == a`` makes identical columns exactly 1.
    Host-side NumPy on purpose: for small batches a dozen array operations cost less there than as
    tensor operations. Fewer than two rows: NaN (a single row's column cosines are 1 trivially).
    """
    if student.shape[-2] < MIN_CSKD_BATCH:
        return np.full(student.shape[:-2] + student.shape[-1:], np.nan)
    directions = []
    for z in (student / temperature, teacher / temperature):
        z -= z.max(-1, keepdims=True)
        z -= np.log(np.exp(z).sum(-1, keepdims=True))
        z -= z.max(-2, keepdims=True)
        directions.append(np.exp(z, out=z))
    u, v = directions
    return np.clip((u * v).sum(-2) / np.sqrt((u * u).sum(-2) * (v * v).sum(-2)), 0.0, 1.0)


def _host_temperature_stats(ordered: np.ndarray, t_low: float, t_high: float, bins: int) -> dict[str, np.ndarray]:
    """Statistics of sorted float64 temperatures ``(..., B)``, one set per leading index.

    Quantiles follow ``torch.quantile``'s linear rule; ``"histogram"`` ``(..., bins)`` uses the bins
    of :func:`_fine_index`, in the same float64 arithmetic. Every value has the leading shape.
    """
    n = ordered.shape[-1]
    ranks = np.asarray(QUANTILES) * (n - 1)
    below = np.floor(ranks).astype(np.intp)
    above = np.minimum(below + 1, n - 1)
    low, high = ordered[..., below], ordered[..., above]
    quantiles = low + (high - low) * (ranks - below)
    stats = {name: quantiles[..., i] for i, name in enumerate(_QUANTILE_NAMES)}
    stats.update(mean=ordered.mean(-1), min=ordered[..., 0], max=ordered[..., -1])
    fine_bins, width = bins * _FINE_PER_BIN, t_high - t_low
    flat = ordered.reshape(-1, n)
    if width > 0:
        fine = np.clip(np.floor((flat - t_low) * (fine_bins / width)).astype(np.intp), 0, fine_bins - 1)
        index = fine // _FINE_PER_BIN + bins * np.arange(flat.shape[0])[:, None]
        counts = np.bincount(index.ravel(), minlength=bins * flat.shape[0]).reshape(flat.shape[0], bins)
    else:
        counts = np.zeros((flat.shape[0], bins), dtype=np.intp)
        counts[:, 0] = n
    stats["histogram"] = counts.reshape(*ordered.shape[:-1], bins)
    return stats


def _fine_index(values: Tensor, t_low: float, t_high: float, bins: int) -> Tensor:
    """The fine-histogram bin (``bins * 100`` bins over ``[t_low, t_high]``, ends included) of each value."""
    fine_bins = bins * _FINE_PER_BIN
    width = t_high - t_low
    if width <= 0:
        return torch.zeros_like(values, dtype=torch.long)
    return ((values - t_low) * (fine_bins / width)).floor_().long().clamp_(0, fine_bins - 1)


class TemperatureStats(_Guarded):
    """Running statistics of CSWT temperatures: mean, std, min, max, quantiles and a histogram.

    Args:
        t_low, t_high: the histogram range; ``bins``: display bins (each split into 100 for the
            quantiles, see the module docstring).
        **kwargs: ``torchmetrics.Metric`` options.

    Example:
        >>> metric = TemperatureStats(2.0, 6.0, bins=4)
        >>> metric.update(torch.tensor([2.0, 6.0])); metric.update(torch.tensor([4.0]))
        >>> metric.compute()["histogram"].tolist()
        [1, 0, 1, 1]
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, t_low: float = 2.0, t_high: float = 6.0, bins: int = 12, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.t_low, self.t_high = check_temperature_range(t_low, t_high)
        self.bins = check_positive_int(bins, "bins", type_error=True)
        self.add_state("moments", default=torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("minimum", default=torch.tensor(math.inf, dtype=torch.float64), dist_reduce_fx="min")
        self.add_state("maximum", default=torch.tensor(-math.inf, dtype=torch.float64), dist_reduce_fx="max")
        fine = torch.zeros(self.bins * _FINE_PER_BIN, dtype=torch.int64)
        self.add_state("fine_histogram", default=fine, dist_reduce_fx="sum")

    def update(self, temperatures: Tensor) -> None:
        """Add a ``(B,)`` tensor of temperatures (an empty one changes nothing)."""
        values = _checked_temperatures(temperatures).to(self.moments.device)
        if values.numel() == 0:
            return
        moments, fine = _temperature_sums(values, self.t_low, self.t_high, self.fine_histogram.numel())
        self.moments += moments[:3]
        self.minimum = torch.minimum(self.minimum, moments[3])
        self.maximum = torch.maximum(self.maximum, moments[4])
        self.fine_histogram += fine

    @property
    def bin_edges(self) -> Tensor:
        """``(bins + 1,)`` edges of the display histogram."""
        return torch.linspace(self.t_low, self.t_high, self.bins + 1, dtype=torch.float64)

    def compute(self) -> dict[str, Any]:
        """The dict of :func:`temperature_stats`."""
        if float(self.moments[0]) == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update()")
        moments = torch.cat([self.moments, self.minimum.view(1), self.maximum.view(1)])
        return _stats_from_sums(moments, self.fine_histogram, self.t_low, self.t_high, self.bins)


# ----------------------------------------------------------------------------- agreement


def _agreement_counts(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None) -> Tensor:
    """``[samples, agree, labelled, student_correct, teacher_correct]`` (int64), validated first
    (logits, and targets as class indices in ``[0, C)``: one read-back for all)."""
    check_pair(student_logits, teacher_logits, targets)
    pred_s, pred_t = student_logits.argmax(1), teacher_logits.argmax(1)
    n = pred_s.numel()
    agree = (pred_s == pred_t).sum()
    if targets is None:
        zero = agree.new_zeros(())
        return torch.stack([agree.new_tensor(n), agree, zero, zero, zero])
    targets = targets.to(pred_s.device)
    labelled = agree.new_tensor(n)
    return torch.stack([labelled, agree, labelled, (pred_s == targets).sum(), (pred_t == targets).sum()])


def _agreement_from_counts(counts: Tensor) -> dict[str, float]:
    samples, agree, labelled, student_correct, teacher_correct = counts.tolist()
    if samples == 0:
        raise RuntimeError("Agreement.compute() called before any update()")
    result = {"agreement": agree / samples}
    if labelled:
        result["student_accuracy"] = student_correct / labelled
        result["teacher_accuracy"] = teacher_correct / labelled
    return result


def agreement(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None = None) -> dict[str, float]:
    """Top-1 agreement of student and teacher, plus both accuracies when ``targets`` are given.

    Args:
        student_logits, teacher_logits: ``(B, C)``.
        targets: ``(B,)`` integer labels in ``[0, C)``, or ``None``.

    Example:
        >>> agreement(torch.eye(3), torch.eye(3), torch.tensor([0, 1, 0]))["student_accuracy"]
        0.6666666666666666
    """
    return _agreement_from_counts(_agreement_counts(student_logits, teacher_logits, targets))


class Agreement(_Guarded):
    """Top-1 agreement and accuracies over many batches (the dict of :func:`agreement`).

    Example:
        >>> metric = Agreement()
        >>> metric.update(torch.eye(3), torch.eye(3), torch.tensor([0, 1, 0]))
        >>> metric.compute()["agreement"]
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("counts", default=torch.zeros(5, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None = None) -> None:
        """Add a batch: ``(B, C)`` logits and optional ``(B,)`` targets (validated before any state changes)."""
        self.counts += _agreement_counts(student_logits, teacher_logits, targets).to(self.counts.device)

    def compute(self) -> dict[str, float]:
        return _agreement_from_counts(self.counts)


class _Totals(_Guarded):
    """Sums of a fixed-size float64 vector and a count over batches (the Monitor's CE and accuracy sums)."""

    full_state_update = False

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sums", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, values: Tensor, count: int) -> None:
        if not isinstance(values, Tensor) or values.shape != self.sums.shape:
            shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise ValueError(f"values must be a {tuple(self.sums.shape)} tensor, got {shape}")
        check_positive_int(count, "count")
        self.sums += values.detach().to(self.sums.device, torch.float64)
        self.count += count

    def compute(self) -> tuple[list[float], int]:
        return self.sums.tolist(), int(self.count)


# ----------------------------------------------------------------------------- the older names
# ``cskd_viz.diagnostics`` re-exports these: the metrics above with a type-checked ``merge(other)``
# and the attribute names of the first release. They never synchronise (``sync_on_compute=False``).


class _Mergeable:
    _same: tuple[str, ...] = ()

    def merge(self, other: Metric) -> None:
        """Add another accumulator's state (same type and parameters)."""
        name = type(self).__name__
        if not isinstance(other, type(self)):
            article = "an" if name[0] in "AEIOU" else "a"
            raise TypeError(f"other must be {article} {name}, got {type(other).__name__}")
        if any(getattr(other, field) != getattr(self, field) for field in self._same):
            fields = ", ".join(self._same[:-1]) + f" and {self._same[-1]}" if len(self._same) > 1 else self._same[0]
            raise ValueError(f"can only merge accumulators with the same {fields}")
        self.merge_state(other)


class PerClassCosineAccumulator(_Mergeable, PerClassCosine):
    """:class:`PerClassCosine` under its first name, with ``merge`` and ``dot``/``student_sq``/``teacher_sq``.

    Example:
        >>> acc = PerClassCosineAccumulator(3)
        >>> z = torch.randn(5, 3)
        >>> acc.update(z, z); acc.compute().tolist()
        [1.0, 1.0, 1.0]
    """

    _same = ("num_classes", "temperature")

    def __init__(self, num_classes: int, temperature: float = 4.0) -> None:
        super().__init__(num_classes, temperature, sync_on_compute=False)

    dot = property(lambda self: self.sums[0], doc="``(C,)`` sum of ``P_s P_t`` relative to the column scales.")
    student_sq = property(lambda self: self.sums[1], doc="``(C,)`` sum of ``P_s^2`` relative to the scales.")
    teacher_sq = property(lambda self: self.sums[2], doc="``(C,)`` sum of ``P_t^2`` relative to the scales.")


class TemperatureStatsAccumulator(_Mergeable, TemperatureStats):
    """:class:`TemperatureStats` under its first name (20 bins by default), with ``merge`` and ``histogram``.

    Example:
        >>> acc = TemperatureStatsAccumulator(2.0, 6.0, bins=4)
        >>> acc.update(torch.tensor([2.0, 6.0, 4.0]))
        >>> stats = acc.compute(); stats["mean"], stats["histogram"].tolist()
        (4.0, [1, 0, 1, 1])
    """

    _same = ("t_low", "t_high", "bins")

    def __init__(self, t_low: float = 2.0, t_high: float = 6.0, bins: int = 20) -> None:
        super().__init__(t_low, t_high, bins, sync_on_compute=False)

    @property
    def histogram(self) -> Tensor:
        """``(bins,)`` counts of the display histogram."""
        return self.fine_histogram.view(self.bins, -1).sum(1)


class AgreementAccumulator(_Mergeable, Agreement):
    """:class:`Agreement` under its first name, with ``merge``.

    Example:
        >>> acc = AgreementAccumulator()
        >>> acc.update(torch.eye(3), torch.eye(3), torch.tensor([0, 1, 0]))
        >>> acc.compute()
        {'agreement': 1.0, 'student_accuracy': 0.6666666666666666, 'teacher_accuracy': 0.6666666666666666}
    """

    def __init__(self) -> None:
        super().__init__(sync_on_compute=False)

    @property
    def samples(self) -> int:
        """Samples seen so far."""
        return int(self.counts[0])
