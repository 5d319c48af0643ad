"""The distillation losses as pure functions on logits.

Shapes: logits are ``(B, C)`` (batch, classes). ``P = softmax(z / T)`` row-wise, where ``T`` is a
float or a ``(B,)`` tensor of per-sample temperatures (row ``i`` of both student and teacher uses
``T[i]``).

CSKD (Ham et al., "Cosine Similarity Knowledge Distillation for Individual Class Information
Transfer", arXiv:2311.14307) compares *batch predictions*, the columns ``P[:, j]``, by cosine
similarity, and re-weights the temperature per sample by the student-teacher similarity (CSWT).

Numerics: cosine is scale invariant, so a column whose probabilities are all tiny is rescaled so
its largest entry is 1, in log space (``exp(log P - max log P)``): a column whose probabilities are
all ~1e-30 keeps its direction instead of underflowing to zero. (The fused CSKD kernel in
:mod:`cskd_viz._fused` does this for exactly the columns whose squares would come near the
underflow range and uses the probabilities as they are for the others, which is equally exact.)
No ``eps`` is added to norms. float64 inputs are computed in float64; fp16/bf16/fp32 in float32.

Each loss also comes as an ``nn.Module`` (:class:`KDLoss`, :class:`CSKDLoss`, :class:`DISTLoss`) whose
``forward(student_logits, teacher_logits)`` returns its function twin's value, with the same defaults,
for training loops that hold their criteria as modules.

Every function validates its input and raises ``ValueError``/``TypeError`` naming the argument.
With ``group`` (a ``torch.distributed`` process group) the batch-level quantities are computed on
the *global* batch of all ranks; see :mod:`cskd_viz.distributed`.

Input bounds (one set of constants, in :mod:`cskd_viz._validation`, re-exported here):

- :data:`TEMPERATURE_RANGE` ``= (1e-3, 1e3)``: every temperature (``temperature``, ``t_low``,
  ``t_high``, per-sample ``(B,)`` temperatures) must lie in it; the papers use 1 to 8. Within it, and
  with logits bounded as below, float32 softmax stays finite and meaningful. Temperatures are numbers
  (Python or NumPy reals, 0-d tensors) or, where documented, ``(B,)`` floating tensors; ``bool``
  values (``True``, ``np.True_``, ``torch.tensor(True)``) are refused.
- Temperature tensors with ``requires_grad=True`` are refused: CSWT temperatures are stop-gradients
  (so no gradient would reach them; pass ``T.detach()``).
- :data:`MAX_ABS_LOGIT` ``= 1e30``: finite logits of larger magnitude are refused (near float32's
  limit ``z - max(z)`` and ``z / T`` overflow and the losses would return NaN). NaN and infinite
  logits are refused too.
- :data:`MIN_CSKD_BATCH` ``= 2``: :func:`cskd_loss`, :func:`batch_cosine_distance` and
  :class:`CSKDLoss` refuse a batch of one sample (under ``group``: a *global* batch of one). The
  cosine of batch predictions compares each class's column across the batch; with one sample every
  column is a single positive number and every cosine is 1 whatever the logits (``d = 0``, no gradient).
- ``cswt`` is a ``bool`` (``numpy.bool_`` is accepted; ints and tensors are not).
"""

from __future__ import annotations

import struct
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cskd_viz._fused import ShiftedLogits, weighted_batch_cosine_distance
from cskd_viz._validation import (
    MAX_ABS_LOGIT,
    MIN_CSKD_BATCH,
    TEMPERATURE_RANGE,
    Temperature,
    check_bool,
    check_cskd_batch,
    check_pair,
    check_scalar,
    check_temperature,
    check_temperature_range,
    check_temperature_value,
    compute_dtype,
)

__all__ = [
    "kd_loss",
    "batch_cosine_distance",
    "cswt_temperatures",
    "cskd_loss",
    "dist_loss",
    "exact_cosine",
    "KDLoss",
    "CSKDLoss",
    "DISTLoss",
    "TEMPERATURE_RANGE",
    "MAX_ABS_LOGIT",
    "MIN_CSKD_BATCH",
]


# ----------------------------------------------------------------------------- helpers


def _as_compute(student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
    if student_logits.dtype == teacher_logits.dtype and student_logits.dtype in (torch.float32, torch.float64):
        return student_logits, teacher_logits  # the common case, without two no-op dispatches
    dtype = compute_dtype(student_logits, teacher_logits)
    return student_logits.to(dtype), teacher_logits.to(dtype)


def _scaled_logits(logits: Tensor, temperature: Temperature) -> Tensor:
    if isinstance(temperature, Tensor):
        return logits / temperature.to(logits.dtype).unsqueeze(1)
    return logits / temperature


def _directions(log_probs: Tensor, dim: int) -> Tensor:
    """``exp(log_probs - max)`` along ``dim``: each vector rescaled so its largest entry is 1.

    The maximum is detached: cosine is invariant to a positive scale, so the gradient through
    it is exactly zero and skipping it is both exact and cheaper.
    """
    peak = log_probs.detach().amax(dim=dim, keepdim=True)
    return torch.exp(log_probs - peak)


def _cosine_of_directions(a: Tensor, b: Tensor, dim: int) -> Tensor:
    """Cosine of vectors whose largest entry is 1 (so norms are >= 1: no zero division)."""
    return (a * b).sum(dim) / (torch.linalg.vector_norm(a, dim=dim) * torch.linalg.vector_norm(b, dim=dim))


def exact_cosine(a: Tensor, b: Tensor, dim: int = 0) -> Tensor:
    """Cosine similarity along ``dim`` that stays exact for vectors of tiny norm.

    Each vector is divided by its largest absolute entry before normalising (no ``eps``), so a
    vector of norm 1e-20 keeps its direction. Two all-zero vectors have cosine 1 (they agree);
    an all-zero vector against a non-zero one has cosine 0.

    Args:
        a, b: tensors of the same shape, e.g. probability matrices ``(B, C)``.
        dim: the dimension holding the vector entries (0: columns, 1: rows).

    Returns:
        The cosines, with ``dim`` removed (``(C,)`` for ``(B, C)`` inputs and ``dim=0``).

    Example:
        >>> p = torch.tensor([[1e-30, 0.5], [3e-30, 0.5]])
        >>> q = torch.tensor([[2e-30, 0.1], [6e-30, 0.9]])
        >>> round(exact_cosine(p, q).tolist()[0], 6)
        1.0
    """
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
        if x.dim() == 0:
            raise ValueError(f"{name} must have at least one dimension, got a 0-d tensor")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if not -a.dim() <= dim < a.dim():
        raise ValueError(f"dim must be in [{-a.dim()}, {a.dim() - 1}] for {a.dim()}-D inputs, got {dim}")
    if a.shape[dim] == 0:
        raise ValueError(f"a has no entries along dim {dim}: shape {tuple(a.shape)}")
    for name, x in (("a", a), ("b", b)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
    return _exact_cosine(a, b, dim)


def _exact_cosine(a: Tensor, b: Tensor, dim: int) -> Tensor:
    """:func:`exact_cosine` without the input checks (for validated tensors)."""
    scale_a = a.detach().abs().amax(dim=dim, keepdim=True)
    scale_b = b.detach().abs().amax(dim=dim, keepdim=True)
    zero_a, zero_b = scale_a == 0, scale_b == 0
    a = a / torch.where(zero_a, torch.ones_like(scale_a), scale_a)
    b = b / torch.where(zero_b, torch.ones_like(scale_b), scale_b)
    norms = torch.linalg.vector_norm(a, dim=dim) * torch.linalg.vector_norm(b, dim=dim)
    either_zero = (zero_a | zero_b).squeeze(dim)
    cosine = (a * b).sum(dim) / torch.where(either_zero, torch.ones_like(norms), norms)
    both_zero = (zero_a & zero_b).squeeze(dim)
    return torch.where(both_zero, torch.ones_like(cosine), torch.where(either_zero, torch.zeros_like(cosine), cosine))


def _per_class_cosine(student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature) -> Tensor:
    """``c_j = cos(P_s[:, j], P_t[:, j])``, ``(C,)``, on validated compute-dtype logits."""
    log_s = F.log_softmax(_scaled_logits(student_logits, temperature), dim=1)
    log_t = F.log_softmax(_scaled_logits(teacher_logits, temperature), dim=1)
    return _cosine_of_directions(_directions(log_s, 0), _directions(log_t, 0), 0)


def _per_sample_cosine(student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature = 1.0) -> Tensor:
    """``s_i = cos(P_s[i], P_t[i])``, ``(B,)``, on validated compute-dtype logits (no gradient).

    Cosine is scale invariant, so the softmax normalisation is skipped: the rows compared are
    ``exp((z_i - max_j z_ij) / T)``, whose largest entry is 1 (norm ``>= 1``: no underflow, no zero
    division); see :meth:`cskd_viz._fused.ShiftedLogits.row_cosines`.
    """
    if isinstance(temperature, Tensor):
        temperature = temperature.detach().to(student_logits.dtype)
    return ShiftedLogits(student_logits, teacher_logits).row_cosines(temperature)


def _cswt_from_cosines(cosines: Tensor, t_low: float, t_high: float, out: Tensor | None = None) -> Tensor:
    """Map per-sample cosines ``(B,)`` to temperatures in ``[t_low, t_high]`` (midpoint if no spread).

    ``T_i = t_low + (t_high - t_low) * (max(s) - s_i) / (max(s) - min(s))``. A spread within
    rounding noise (``64 eps`` of the dtype, e.g. identical student and teacher rows whose cosines
    differ only in the last bits) counts as no spread: otherwise the noise alone would send samples
    to ``t_low``/``t_high`` and depend on the summation order. Reads the two extremes back to the
    host (the losses' input validation synchronises anyway): a handful of ops, for small batches.
    ``out``: optional ``(B,)`` tensor to write the temperatures into.
    """
    s_min, s_max = torch.stack(torch.aminmax(cosines)).tolist()
    spread = s_max - s_min  # exact for float64; rounded like the dtype's own subtraction for float32:
    if cosines.dtype != torch.float64:
        spread = struct.unpack("f", struct.pack("f", spread))[0]
    if not spread > 64 * torch.finfo(cosines.dtype).eps:
        return torch.full_like(cosines, (t_low + t_high) / 2) if out is None else out.fill_((t_low + t_high) / 2)
    # (s_i - max) * -(range / spread) + t_low: exactly t_low for the most similar sample
    temperatures = torch.sub(cosines, s_max, out=out).mul_(-(t_high - t_low) / spread).add_(t_low)
    return temperatures.clamp_(t_low, t_high)  # rounding can overshoot t_high by an ulp


def _stack_temperatures(temperature: Temperature, like: Tensor) -> Tensor:
    """A float or a ``(B,)`` tensor -> ``(1, 1, 1)`` or ``(1, B, 1)`` for the fused kernel (no gradient)."""
    if isinstance(temperature, Tensor):
        return temperature.detach().to(like.dtype).view(1, -1, 1)
    return like.new_full((1, 1, 1), temperature)


# ----------------------------------------------------------------------------- public losses


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature = 4.0) -> Tensor:
    """Hinton's KD loss, equal to mdistiller's ``kd_loss``.

    ``L_kd = T^2 * mean_i KL(P_t[i] || P_s[i])`` with ``P = softmax(z / T)``. Hinton, Vinyals,
    Dean, "Distilling the Knowledge in a Neural Network", arXiv:1503.02531. With a ``(B,)``
    temperature, each sample uses its own ``T_i`` and the factor is ``mean_i T_i^2 KL_i``.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits.
        temperature: a number in :data:`TEMPERATURE_RANGE` or a ``(B,)`` tensor of per-sample
            temperatures (no ``requires_grad``).

    Returns:
        A scalar tensor (float32, or float64 for float64 inputs).

    Example:
        >>> z = torch.tensor([[2.0, 0.0, -1.0]])
        >>> float(kd_loss(z, z))
        0.0
    """
    check_pair(student_logits, teacher_logits)
    temperature = check_temperature(temperature, student_logits.shape[0])
    return _kd_loss(*_as_compute(student_logits, teacher_logits), temperature)


def _kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature) -> Tensor:
    """:func:`kd_loss` on validated compute-dtype logits and a validated temperature."""
    log_s = F.log_softmax(_scaled_logits(student_logits, temperature), dim=1)
    log_t = F.log_softmax(_scaled_logits(teacher_logits, temperature), dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1)
    if isinstance(temperature, Tensor):
        return (temperature.to(kl.dtype) ** 2 * kl).mean()
    return temperature**2 * kl.mean()


def batch_cosine_distance(
    student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature, *, group: Any = None
) -> Tensor:
    """CSKD's batch cosine distance ``d(T) = 1 - mean_j cos(P_s[:, j], P_t[:, j])``.

    The cosine is taken over *batch predictions*: column ``j`` holds class ``j``'s probability
    for every sample of the batch (arXiv:2311.14307, Eq. for ``L_cs``). ``0 <= d <= 1`` (up to
    rounding) because probabilities are non-negative.

    Args:
        student_logits: ``(B, C)`` student logits, ``B >= 2`` (:data:`MIN_CSKD_BATCH`; under ``group``
            the global batch must have ``B >= 2``, a rank's local batch may have one sample).
        teacher_logits: ``(B, C)`` teacher logits.
        temperature: a number in :data:`TEMPERATURE_RANGE` or a ``(B,)`` tensor (row ``i`` uses
            ``T[i]``; no ``requires_grad``: no gradient reaches the temperatures).
        group: optional ``torch.distributed`` process group: compute ``d`` on the global batch.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: for a batch of one sample (every column cosine would be 1 trivially).

    Example:
        >>> z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> float(batch_cosine_distance(z, z, 4.0))
        0.0
    """
    check_pair(student_logits, teacher_logits)
    temperature = check_temperature(temperature, student_logits.shape[0])
    student_logits, teacher_logits = _as_compute(student_logits, teacher_logits)
    if group is not None:  # one all-gather, then the single-process computation on the global batch
        from cskd_viz.distributed import gather_batch

        student_logits, teacher_logits, temperature = gather_batch(
            student_logits, teacher_logits, temperature, group=group
        )
    check_cskd_batch(student_logits.shape[0], "batch_cosine_distance", global_batch=group is not None)
    stacked = _stack_temperatures(temperature, student_logits)
    return weighted_batch_cosine_distance(student_logits, teacher_logits, stacked, stacked.new_ones(1))


def cswt_temperatures(
    student_logits: Tensor,
    teacher_logits: Tensor,
    t_low: float = 2.0,
    t_high: float = 6.0,
    *,
    group: Any = None,
) -> Tensor:
    """Cosine-similarity-weighted temperatures (CSWT), one per sample, without gradient.

    ``s_i = cos(softmax(z_s[i]), softmax(z_t[i]))`` at ``T = 1``, then
    ``T_i = t_low + (t_high - t_low) * (max(s) - s_i) / (max(s) - min(s))``: the sample on which
    student and teacher agree most gets ``t_low``, the least similar ``t_high``. When all
    ``s_i`` are equal (or ``B = 1``) every ``T_i = (t_low + t_high) / 2``.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits.
        t_low: lowest temperature, ``0 < t_low <= t_high``.
        t_high: highest temperature.
        group: optional process group: ``max(s)``/``min(s)`` over the global batch.

    Returns:
        ``(B,)`` tensor of temperatures (a stop-gradient).

    Example:
        >>> s = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
        >>> t = torch.tensor([[3.0, 0.0], [3.0, 0.0]])
        >>> cswt_temperatures(s, t).tolist()
        [2.0, 6.0]
    """
    check_pair(student_logits, teacher_logits)
    t_low, t_high = check_temperature_range(t_low, t_high)
    student_logits, teacher_logits = _as_compute(student_logits, teacher_logits)
    with torch.no_grad():
        cosines = _per_sample_cosine(student_logits, teacher_logits)
        if group is None:
            return _cswt_from_cosines(cosines, t_low, t_high)
        from cskd_viz.distributed import gather_batch, local_rows

        (all_cosines,) = gather_batch(cosines, group=group)
        return local_rows(_cswt_from_cosines(all_cosines, t_low, t_high), group)


def cskd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    t_low: float = 2.0,
    t_high: float = 6.0,
    cswt: bool = True,
    *,
    group: Any = None,
    return_temperatures: bool = False,
) -> Tensor | tuple[Tensor, Tensor | None]:
    """The CSKD loss ``T^2 d(T) + mean(T_i)^2 d(T_i)`` (second term only with ``cswt=True``).

    ``d`` is :func:`batch_cosine_distance` and ``T_i`` are :func:`cswt_temperatures`, a
    stop-gradient. Ham et al., arXiv:2311.14307.

    Args:
        student_logits: ``(B, C)`` student logits, ``B >= 2`` (:data:`MIN_CSKD_BATCH`; under ``group``
            the global batch).
        teacher_logits: ``(B, C)`` teacher logits.
        temperature: the fixed temperature ``T`` of the first term, a number in :data:`TEMPERATURE_RANGE`.
        t_low: lowest CSWT temperature.
        t_high: highest CSWT temperature.
        cswt: add the cosine-similarity-weighted-temperature term (a ``bool``; ``numpy.bool_`` is accepted).
        group: optional process group: compute the loss on the global batch (the DDP-averaged
            gradient then equals the single-process gradient on the concatenated batch).
        return_temperatures: also return the ``(B,)`` CSWT temperatures the loss used (detached;
            this rank's rows under ``group``; ``None`` with ``cswt=False``), so a trainer can log
            them without computing them twice.

    Returns:
        A scalar tensor, or ``(loss, temperatures)`` with ``return_temperatures=True``.

    Raises:
        ValueError: for a batch of one sample (every column cosine would be 1 trivially).

    Example:
        >>> z = torch.randn(8, 5)
        >>> abs(float(cskd_loss(z, z))) < 1e-5
        True
    """
    check_pair(student_logits, teacher_logits)
    temperature = check_temperature_value(temperature, "temperature")
    t_low, t_high = check_temperature_range(t_low, t_high)
    cswt = check_bool(cswt, "cswt")
    student_logits, teacher_logits = _as_compute(student_logits, teacher_logits)
    return _cskd_loss(student_logits, teacher_logits, (temperature, t_low, t_high), cswt, group, return_temperatures)


def _cskd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    params: tuple[float, float, float],
    cswt: bool,
    group: Any = None,
    return_temperatures: bool = False,
) -> Tensor | tuple[Tensor, Tensor | None]:
    """:func:`cskd_loss` on validated compute-dtype logits; ``params = (T, t_low, t_high)``, validated."""
    temperature, t_low, t_high = params
    if group is not None:  # one all-gather, then the single-process computation on the global batch
        from cskd_viz.distributed import gather_batch

        student_logits, teacher_logits = gather_batch(student_logits, teacher_logits, group=group)
    check_cskd_batch(student_logits.shape[0], "cskd_loss", global_batch=group is not None)
    if not cswt:
        stacked = _stack_temperatures(temperature, student_logits)
        loss = weighted_batch_cosine_distance(
            student_logits, teacher_logits, stacked, stacked.new_full((1,), temperature**2)
        )
        return (loss, None) if return_temperatures else loss
    with torch.no_grad():
        shifted = ShiftedLogits(student_logits, teacher_logits)  # shared by both passes
        temperatures = student_logits.new_empty((2, student_logits.shape[0], 1))  # [T, T_i], (2, B, 1)
        fixed, per_sample = temperatures.unbind(0)
        fixed.fill_(temperature)
        _cswt_from_cosines(shifted.row_cosines(), t_low, t_high, out=per_sample.squeeze(1))  # s_i at T = 1
        weights = temperatures.mean((1, 2)).square_()  # [T^2, mean(T_i)^2]
    loss = weighted_batch_cosine_distance(student_logits, teacher_logits, temperatures, weights, shifted)
    if not return_temperatures:
        return loss
    used = temperatures[1, :, 0]
    if group is not None:
        from cskd_viz.distributed import local_rows

        used = local_rows(used, group)
    return loss, used.clone()


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    beta: float = 1.0,
    gamma: float = 1.0,
) -> Tensor:
    """DIST: inter-class plus intra-class Pearson-correlation relation.

    Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022
    (arXiv:2205.10536). With ``P = softmax(z / T)`` and ``rho`` the Pearson correlation:
    ``L = T^2 (beta * (1 - mean_i rho(P_s[i], P_t[i])) + gamma * (1 - mean_j rho(P_s[:, j], P_t[:, j])))``.
    The intra-class term is the *centred* cousin of CSKD's batch cosine distance. Correlations use
    :func:`exact_cosine` of the centred vectors (no ``eps``), so a constant vector against a
    constant vector counts as perfectly correlated.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits.
        temperature: ``T``, a number in :data:`TEMPERATURE_RANGE`.
        beta: weight of the inter-class (row) term, ``>= 0``.
        gamma: weight of the intra-class (column) term, ``>= 0``.

    Returns:
        A scalar tensor.

    Example:
        >>> z = torch.randn(6, 4)
        >>> abs(float(dist_loss(z, z))) < 1e-5
        True
    """
    check_pair(student_logits, teacher_logits)
    temperature = check_temperature_value(temperature, "temperature")
    beta, gamma = _check_dist_weights(beta, gamma)
    return _dist_loss(*_as_compute(student_logits, teacher_logits), temperature, beta, gamma)


def _check_dist_weights(beta: float, gamma: float) -> tuple[float, float]:
    beta = check_scalar(beta, "beta", positive=False)
    gamma = check_scalar(gamma, "gamma", positive=False)
    if beta < 0 or gamma < 0:
        raise ValueError(f"beta and gamma must be >= 0, got beta={beta} and gamma={gamma}")
    return beta, gamma


def _dist_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float, beta: float, gamma: float) -> Tensor:
    """:func:`dist_loss` on validated compute-dtype logits and validated parameters."""
    log_s = F.log_softmax(student_logits / temperature, dim=1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=1)
    p_s, p_t = log_s.exp(), log_t.exp()
    inter = 1.0 - _exact_cosine(p_s - p_s.mean(1, keepdim=True), p_t - p_t.mean(1, keepdim=True), dim=1).mean()
    # Columns as directions (rescaled to max 1 in log space; Pearson is scale invariant): a rarely
    # predicted class keeps its correlation, and the backward never forms 1/|column| (which
    # overflows float32 for columns of norm ~1e-40 and turned the gradient into NaN).
    u_s, u_t = _directions(log_s, 0), _directions(log_t, 0)
    intra = 1.0 - _exact_cosine(u_s - u_s.mean(0, keepdim=True), u_t - u_t.mean(0, keepdim=True), dim=0).mean()
    return temperature**2 * (beta * inter + gamma * intra)


# ----------------------------------------------------------------------------- modules


class KDLoss(nn.Module):
    """:func:`kd_loss` as a module: ``T^2 mean_i KL(P_t[i] || P_s[i])``.

    Args:
        temperature: ``T > 0``.

    Example:
        >>> z = torch.randn(4, 3)
        >>> float(KDLoss(temperature=2.0)(z, z))
        0.0
    """

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        self.temperature = check_temperature_value(temperature, "temperature")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """``(B, C)``, ``(B, C)`` -> scalar."""
        return kd_loss(student_logits, teacher_logits, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class CSKDLoss(nn.Module):
    """:func:`cskd_loss` as a module: ``T^2 d(T) + mean(T_i)^2 d(T_i)`` (second term with ``cswt=True``).

    A batch of one sample (a global batch of one under ``group``) is refused, as by :func:`cskd_loss`.

    Args:
        temperature, t_low, t_high, cswt: as in :func:`cskd_loss` (same defaults).
        group: optional ``torch.distributed`` process group: the loss on the global batch.

    Attributes:
        last_temperatures: the detached ``(B,)`` CSWT temperatures of the last call (this rank's
            rows under ``group``), or ``None`` with ``cswt=False`` or before the first call; what a
            loop hands to :meth:`cskd_viz.Monitor.log_step` as ``temperatures``.

    Example:
        >>> criterion = CSKDLoss()
        >>> z = torch.randn(8, 5)
        >>> abs(float(criterion(z, z))) < 1e-5, criterion.last_temperatures.shape
        (True, torch.Size([8]))
    """

    def __init__(
        self, temperature: float = 4.0, t_low: float = 2.0, t_high: float = 6.0, cswt: bool = True, *, group: Any = None
    ) -> None:
        super().__init__()
        self.temperature = check_temperature_value(temperature, "temperature")
        self.t_low, self.t_high = check_temperature_range(t_low, t_high)
        self.cswt = check_bool(cswt, "cswt")
        self.group = group
        self.last_temperatures: Tensor | None = None

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """``(B, C)``, ``(B, C)`` -> scalar; sets :attr:`last_temperatures`."""
        loss, self.last_temperatures = cskd_loss(
            student_logits,
            teacher_logits,
            self.temperature,
            self.t_low,
            self.t_high,
            self.cswt,
            group=self.group,
            return_temperatures=True,
        )
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, t_low={self.t_low}, t_high={self.t_high}, cswt={self.cswt}"


class DISTLoss(nn.Module):
    """:func:`dist_loss` as a module: DIST's inter- plus intra-class Pearson relation.

    Args:
        temperature, beta, gamma: as in :func:`dist_loss` (same defaults).

    Example:
        >>> z = torch.randn(6, 4)
        >>> abs(float(DISTLoss()(z, z))) < 1e-5
        True
    """

    def __init__(self, temperature: float = 4.0, beta: float = 1.0, gamma: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_temperature_value(temperature, "temperature")
        self.beta, self.gamma = _check_dist_weights(beta, gamma)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """``(B, C)``, ``(B, C)`` -> scalar."""
        return dist_loss(student_logits, teacher_logits, self.temperature, self.beta, self.gamma)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, beta={self.beta}, gamma={self.gamma}"
