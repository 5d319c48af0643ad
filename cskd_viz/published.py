"""The CSKD objective of the public CSKD code (an mdistiller/MLKD-style distiller), term by term.

Our ``cskd`` / ``cskd_cswt`` methods are the paper's idea computed exactly. The code that circulates
with the paper trains something larger; this module reproduces its *behaviour* (our own code) so a
run can match the published recipe, and every extra part can be switched off to see what it earns.

Shapes: logits are ``(B, C)``; ``P = softmax(z / T)`` row-wise, ``T`` a float or a ``(B,)`` tensor of
per-sample temperatures (row ``i`` uses ``T[i]``).

- **Cosine** (``abs_eps_cosine=True``, as published): ``cos(a, b) = |a.b| / (|a| |b| + 1e-8)`` along the
  vectors compared. With ``abs_eps_cosine=False`` the exact cosine of :mod:`cskd_viz.losses` (no
  ``eps``, exact for rarely predicted classes).
- :func:`cs_loss`: ``alpha T^2 (1 - mean_j cos(P_s[:, j], P_t[:, j]))`` (batch predictions; ``alpha = 2``
  published). :func:`cs_mat_loss`: the same at per-sample ``T_i`` with the factor ``alpha mean(T_i)^2``.
- :func:`cswt_temperatures`: ``s_i = cos(softmax(z_s[i]), softmax(z_t[i]))`` at ``T = 1`` (detached),
  ``T_i = t_low + (t_high - t_low) (max s - s_i) / (max s - min s)``. The published code divides by
  ``max s - min s`` unguarded; here a spread within rounding noise gives every ``T_i`` the midpoint
  ``(t_low + t_high) / 2``, as :func:`cskd_viz.losses.cswt_temperatures` does.
- :func:`cc_loss`: ``1 - mean_rows cos(P_t^T P_t, P_s^T P_s)`` on the ``(C, C)`` class-correlation
  matrices; :func:`bc_loss`: ``1 - mean_rows cos(P_t P_t^T, P_s P_s^T)`` on the ``(B, B)``
  batch-correlation matrices. No ``T^2``, no ``alpha``. The method computes each at a fixed
  ``T = 4`` (``corr_temperature``; the published code fixes it, whatever the KD temperature) and at ``T_i``.
- :func:`confidence_masks`: ``sample_mask = max_j P_t[i, j] <= median_i`` (``(B,)``) and
  ``class_mask = sum_i P_t[i, j] <= median_j`` (``(C,)``), teacher softmax at ``T = 1``; the median is
  ``numpy.percentile(x, 50)`` (linear interpolation between the two middle values), as published.

:class:`CSKDPublished` (registry name ``"cskd_published"``) combines them over a weak and a strong view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from cskd_viz import losses
from cskd_viz._method_base import _check_weight, _cross_entropy, _Distiller, _weighted
from cskd_viz._validation import (
    Temperature,
    check_bool,
    check_cskd_batch,
    check_pair,
    check_temperature,
    check_temperature_range,
    check_temperature_value,
    compute_dtype,
)

__all__ = [
    "COSINE_EPS",
    "MASK_MODES",
    "CSKDPublished",
    "published_cosine",
    "cs_loss",
    "cs_mat_loss",
    "cswt_temperatures",
    "cc_loss",
    "bc_loss",
    "confidence_masks",
]

COSINE_EPS = 1e-8  # added to the product of norms by the published cosine
MASK_MODES = ("as_published", "per_sample", "none")


# ----------------------------------------------------------------------------- cores (validated inputs)


def _probs(logits: Tensor, temperature: Temperature) -> Tensor:
    return F.softmax(losses._scaled_logits(logits, temperature), dim=1)


def _cosine(a: Tensor, b: Tensor, dim: int, abs_eps: bool) -> Tensor:
    """The published ``|a.b| / (|a| |b| + 1e-8)`` or the exact cosine, along ``dim``."""
    if not abs_eps:
        return losses._exact_cosine(a, b, dim)
    norms = torch.linalg.vector_norm(a, dim=dim) * torch.linalg.vector_norm(b, dim=dim)
    return (a * b).sum(dim).abs() / (norms + COSINE_EPS)


def _factor(temperature: Temperature) -> Tensor | float:
    """``T^2`` for a float, ``mean(T_i)^2`` for a ``(B,)`` tensor."""
    if isinstance(temperature, Tensor):
        return temperature.mean().square()
    return temperature**2


def _cs(student: Tensor, teacher: Tensor, temperature: Temperature, alpha: float, abs_eps: bool) -> Tensor:
    """``alpha * factor(T) * (1 - mean_j cos(P_s[:, j], P_t[:, j]))``."""
    if abs_eps:
        cosines = _cosine(_probs(student, temperature), _probs(teacher, temperature), 0, True)
    else:  # the columns rescaled in log space: exact for rarely predicted classes
        cosines = losses._per_class_cosine(student, teacher, temperature)
    return alpha * _factor(temperature) * (1.0 - cosines.mean())


def _cc(
    student: Tensor, teacher: Tensor, temperature: Temperature, abs_eps: bool, classes: Tensor | None = None
) -> Tensor:
    """``1 - mean_rows cos(P_t^T P_t, P_s^T P_s)``; ``classes``: a ``(C,)`` bool mask of the rows averaged."""
    p_s, p_t = _probs(student, temperature), _probs(teacher, temperature)
    cosines = _cosine(p_t.T @ p_t, p_s.T @ p_s, 1, abs_eps)
    return 1.0 - (cosines if classes is None else cosines[classes]).mean()


def _bc(student: Tensor, teacher: Tensor, temperature: Temperature, abs_eps: bool) -> Tensor:
    """``1 - mean_rows cos(P_t P_t^T, P_s P_s^T)``."""
    p_s, p_t = _probs(student, temperature), _probs(teacher, temperature)
    return 1.0 - _cosine(p_t @ p_t.T, p_s @ p_s.T, 1, abs_eps).mean()


def _cswt(student: Tensor, teacher: Tensor, t_low: float, t_high: float, abs_eps: bool) -> Tensor:
    """``(B,)`` CSWT temperatures from the per-sample cosines at ``T = 1`` (no gradient)."""
    with torch.no_grad():
        if abs_eps:
            cosines = _cosine(F.softmax(student, 1), F.softmax(teacher, 1), 1, True)
        else:
            cosines = losses._per_sample_cosine(student, teacher)
        return losses._cswt_from_cosines(cosines, t_low, t_high)


def _median_mask(values: Tensor) -> Tensor:
    """``values <= numpy.percentile(values, 50)`` (linear interpolation, as ``torch.quantile``)."""
    return values <= torch.quantile(values, 0.5)


def _masks(teacher: Tensor) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        probs = F.softmax(teacher, dim=1)
        return _median_mask(probs.amax(1)), _median_mask(probs.sum(0))


# ----------------------------------------------------------------------------- public term functions


def _check_flag_and_pair(student_logits: Tensor, teacher_logits: Tensor, abs_eps_cosine: Any) -> tuple:
    check_pair(student_logits, teacher_logits)
    abs_eps_cosine = check_bool(abs_eps_cosine, "abs_eps_cosine")
    dtype = compute_dtype(student_logits, teacher_logits)
    return student_logits.to(dtype), teacher_logits.to(dtype), abs_eps_cosine


def published_cosine(a: Tensor, b: Tensor, dim: int = 0) -> Tensor:
    """The published cosine ``|a.b| / (|a| |b| + 1e-8)`` along ``dim``.

    Args:
        a, b: tensors of one shape, e.g. ``(B, C)`` probabilities (``dim=0``: columns, ``1``: rows).

    Returns:
        The cosines with ``dim`` removed (``(C,)`` for ``(B, C)`` and ``dim=0``).

    Example:
        >>> p = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
        >>> [round(v, 6) for v in published_cosine(p, p).tolist()]
        [1.0, 1.0]
    """
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or a.shape != b.shape or a.dim() == 0:
        raise ValueError("a and b must be tensors of the same shape, with at least one dimension")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise TypeError(f"a and b must have a floating dtype, got {a.dtype} and {b.dtype}")
    return _cosine(a, b, dim, True)


def cs_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    *,
    alpha: float = 2.0,
    abs_eps_cosine: bool = True,
) -> Tensor:
    """``cs = alpha T^2 (1 - mean_j cos(P_s[:, j], P_t[:, j]))`` on ``(B, C)`` logits, ``B >= 2``.

    Example:
        >>> z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> abs(float(cs_loss(z, z))) < 1e-6
        True
    """
    student, teacher, abs_eps = _check_flag_and_pair(student_logits, teacher_logits, abs_eps_cosine)
    check_cskd_batch(student.shape[0], "cs_loss")
    temperature = check_temperature(temperature, student.shape[0])
    if isinstance(temperature, Tensor):
        raise TypeError("cs_loss takes one temperature (a number); per-sample temperatures go to cs_mat_loss")
    return _cs(student, teacher, temperature, _check_weight(alpha, "alpha"), abs_eps)


def cs_mat_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperatures: Tensor,
    *,
    alpha: float = 2.0,
    abs_eps_cosine: bool = True,
) -> Tensor:
    """``cs_mat = alpha mean(T_i)^2 (1 - mean_j cos(P_s[:, j], P_t[:, j]))``, row ``i`` at ``T_i``.

    Args:
        temperatures: ``(B,)`` per-sample temperatures (no ``requires_grad``), e.g. :func:`cswt_temperatures`.

    Example:
        >>> z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> abs(float(cs_mat_loss(z, z, torch.tensor([2.0, 6.0])))) < 1e-6
        True
    """
    student, teacher, abs_eps = _check_flag_and_pair(student_logits, teacher_logits, abs_eps_cosine)
    check_cskd_batch(student.shape[0], "cs_mat_loss")
    if not isinstance(temperatures, Tensor) or temperatures.dim() != 1:
        raise ValueError(f"temperatures must be a ({student.shape[0]},) tensor, one per sample")
    temperatures = check_temperature(temperatures, student.shape[0], "temperatures").to(student.dtype)
    return _cs(student, teacher, temperatures, _check_weight(alpha, "alpha"), abs_eps)


def cswt_temperatures(
    student_logits: Tensor,
    teacher_logits: Tensor,
    t_low: float = 2.0,
    t_high: float = 6.0,
    *,
    abs_eps_cosine: bool = True,
) -> Tensor:
    """``(B,)`` CSWT temperatures from ``s_i = cos(softmax(z_s[i]), softmax(z_t[i]))`` (detached).

    ``T_i = t_low + (t_high - t_low) (max s - s_i) / (max s - min s)``; the midpoint when the spread of
    ``s`` is within rounding noise (the published code has no guard and would divide by zero).

    Example:
        >>> s = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
        >>> t = torch.tensor([[3.0, 0.0], [3.0, 0.0]])
        >>> cswt_temperatures(s, t).tolist()
        [2.0, 6.0]
    """
    student, teacher, abs_eps = _check_flag_and_pair(student_logits, teacher_logits, abs_eps_cosine)
    t_low, t_high = check_temperature_range(t_low, t_high)
    return _cswt(student, teacher, t_low, t_high, abs_eps)


def cc_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature = 4.0, *, abs_eps_cosine: bool = True
) -> Tensor:
    """``cc = 1 - mean_rows cos(P_t^T P_t, P_s^T P_s)``, the ``(C, C)`` class correlations.

    Args:
        temperature: a number or a ``(B,)`` tensor (row ``i`` of ``P`` at ``T_i``).

    Example:
        >>> z = torch.randn(4, 3)
        >>> abs(float(cc_loss(z, z))) < 1e-6
        True
    """
    student, teacher, abs_eps = _check_flag_and_pair(student_logits, teacher_logits, abs_eps_cosine)
    temperature = check_temperature(temperature, student.shape[0])
    return _cc(student, teacher, temperature, abs_eps)


def bc_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature = 4.0, *, abs_eps_cosine: bool = True
) -> Tensor:
    """``bc = 1 - mean_rows cos(P_t P_t^T, P_s P_s^T)``, the ``(B, B)`` batch correlations.

    Example:
        >>> z = torch.randn(4, 3)
        >>> abs(float(bc_loss(z, z))) < 1e-6
        True
    """
    student, teacher, abs_eps = _check_flag_and_pair(student_logits, teacher_logits, abs_eps_cosine)
    temperature = check_temperature(temperature, student.shape[0])
    return _bc(student, teacher, temperature, abs_eps)


def confidence_masks(teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(sample_mask (B,), class_mask (C,))``, bool: the teacher's less confident half of samples and classes.

    ``sample_mask[i] = max_j P_t[i, j] <= median``, ``class_mask[j] = sum_i P_t[i, j] <= median`` (the
    teacher's softmax at ``T = 1``; median as ``numpy.percentile(x, 50)``). At least one entry of each is True.

    Example:
        >>> sample, cls = confidence_masks(torch.tensor([[4.0, 0.0], [1.0, 0.0], [0.0, 2.0]]))
        >>> sample.tolist(), cls.tolist()
        ([False, True, True], [False, True])
    """
    check_pair(teacher_logits, teacher_logits)
    return _masks(teacher_logits.to(compute_dtype(teacher_logits)))


# ----------------------------------------------------------------------------- the method


@dataclass(frozen=True)
class CSKDPublished(_Distiller):
    """The published CSKD objective over a weak and a strong view (registry name ``"cskd_published"``).

    With ``cs``, ``cs_mat``, ``cc``, ``bc`` and the masks of the module docstring, ``T_i`` the CSWT
    temperatures of the *weak* view (used for the strong view too), ``m``/``m_c`` the sample/class masks:

    - ``loss_ce = w_ce (CE(z_s_weak, y) + CE(z_s_strong, y))``;
    - ``loss_kd = w_kd [mask(cs(T) + cs_mat(T_i))_weak + (cs(T) + cs_mat(T_i))_strong]``;
    - ``loss_cc = w_kd mask_c(cc(T_c) + cc(T_i))_weak``; ``loss_bc = w_kd mask(bc(T_c) + bc(T_i))_weak``,
      ``T_c = corr_temperature`` (4: the published code computes these two terms at ``T = 4`` whatever
      the method's ``temperature``, which only ``cs`` uses).

    ``masks`` decides what ``mask(.)`` does to a weak-view term:

    - ``"as_published"`` (default): the published code multiplies the *scalar* term by the bool mask and
      takes ``.mean()``, so the term is scaled by the fraction of True entries (about 0.5;
      ``loss_cc`` by the class mask's fraction) and still computed on the whole batch;
    - ``"per_sample"``: what the masks appear to intend: ``cs``, ``cs_mat`` and ``bc`` on the masked
      samples only (their rows and their ``T_i``; a single masked sample gives 0), ``cc`` averaged
      over the masked classes' rows only;
    - ``"none"``: no masking.

    Switches: ``strong_view`` (the strong-view CE and KD terms), ``cc``, ``bc`` (their terms),
    ``corr_temperature`` (the fixed temperature of ``cc``/``bc``, in ``[1e-3, 1e3]``; 4 published),
    ``alpha`` (the factor of ``cs``/``cs_mat``, 2 published), ``abs_eps_cosine`` (the published cosine;
    ``False``: the exact one). A disabled term's key is *omitted* from the result. With
    ``strong_view=False, cc=False, bc=False, masks="none", alpha=1, abs_eps_cosine=False``,
    ``loss_ce + loss_kd`` is our ``cskd_cswt`` objective.

    Call: ``method(student_weak, teacher_weak, targets, strong=(student_strong, teacher_strong))``, all
    logits ``(B, C)``, ``B >= 2``; ``strong`` is required with ``strong_view=True`` and ignored
    otherwise. ``group`` (a global batch under DDP) is refused: the terms are computed on each
    process's local batch (plain DDP, ``group=None``, works as is). ``two_views`` tells the trainer to
    feed ``(x_weak, x_strong, y)`` batches (see :func:`cskd_viz.views.two_view_dataset`).

    Example:
        >>> z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> out = CSKDPublished()(z, z, y, strong=(z, z))
        >>> sorted(out)
        ['loss_bc', 'loss_cc', 'loss_ce', 'loss_kd', 'temperatures']
    """

    t_low: float = 2.0
    t_high: float = 6.0
    strong_view: bool = True
    cc: bool = True
    bc: bool = True
    masks: str = "as_published"
    alpha: float = 2.0
    abs_eps_cosine: bool = True
    corr_temperature: float = 4.0

    term: ClassVar[str] = "loss_kd"
    two_views: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        t_low, t_high = check_temperature_range(self.t_low, self.t_high)
        object.__setattr__(self, "t_low", t_low)
        object.__setattr__(self, "t_high", t_high)
        for flag in ("strong_view", "cc", "bc", "abs_eps_cosine"):
            object.__setattr__(self, flag, check_bool(getattr(self, flag), flag))
        if not isinstance(self.masks, str) or self.masks not in MASK_MODES:
            raise ValueError(f"masks must be one of {list(MASK_MODES)}, got {self.masks!r}")
        object.__setattr__(self, "alpha", _check_weight(self.alpha, "alpha"))
        object.__setattr__(self, "corr_temperature", check_temperature_value(self.corr_temperature, "corr_temperature"))

    @property
    def name(self) -> str:
        return "cskd_published"

    @property
    def temperature_range(self) -> tuple[float, float] | None:
        return (self.t_low, self.t_high)

    def _check_inputs(self, student: Tensor, teacher: Tensor | None, targets: Tensor, strong: Any) -> tuple:
        """Validate both views; return ``(student_w, teacher_w, student_s, teacher_s)`` in the compute dtype."""
        if teacher is None:
            raise ValueError("method 'cskd_published' needs teacher_logits, got None")
        if isinstance(targets, Tensor) and isinstance(student, Tensor) and targets.device != student.device:
            raise ValueError(f"targets are on {targets.device} but student_logits on {student.device}")
        check_pair(student, teacher, targets)
        views = [student, teacher.detach()]
        if self.strong_view:
            if strong is None:
                raise ValueError(
                    "strong=(student_strong_logits, teacher_strong_logits) is required when strong_view=True "
                    "(pass the strong view's logits, or build the method with strong_view=False)"
                )
            if not isinstance(strong, (tuple, list)) or len(strong) != 2:
                raise TypeError("strong must be a pair (student_strong_logits, teacher_strong_logits)")
            check_pair(strong[0], strong[1])  # the targets were checked against the weak view
            if strong[0].shape != student.shape or strong[0].device != student.device:
                raise ValueError(
                    f"strong-view logits must match the weak view's shape {tuple(student.shape)} and device "
                    f"{student.device}, got {tuple(strong[0].shape)} on {strong[0].device}"
                )
            views += [strong[0], strong[1].detach()]
        check_cskd_batch(student.shape[0], "cskd_published")
        dtype = compute_dtype(*views)
        views = [v.to(dtype) for v in views]
        return (*views, None, None) if len(views) == 2 else tuple(views)

    def _pair_kd(self, student: Tensor, teacher: Tensor, temperatures: Tensor) -> Tensor:
        """``cs(T) + cs_mat(T_i)`` on one view."""
        args = (self.alpha, self.abs_eps_cosine)
        return _cs(student, teacher, self.temperature, *args) + _cs(student, teacher, temperatures, *args)

    def _weak_terms(self, student: Tensor, teacher: Tensor, temperatures: Tensor) -> dict[str, Tensor]:
        """The weak view's KD, cc and bc terms under the mask mode (unweighted)."""
        eps, mode = self.abs_eps_cosine, self.masks
        both = (self.corr_temperature, temperatures)  # cc and bc: at the fixed T (4) and at T_i
        sample_mask, class_mask = _masks(teacher) if mode != "none" else (None, None)
        rows = sample_mask if mode == "per_sample" else slice(None)
        terms = {"loss_kd": self._pair_kd(student[rows], teacher[rows], temperatures[rows])}
        if self.cc:
            classes = class_mask if mode == "per_sample" else None
            terms["loss_cc"] = sum(_cc(student, teacher, t, eps, classes) for t in both)
        if self.bc:
            terms["loss_bc"] = sum(_bc(student[rows], teacher[rows], t, eps) for t in (both[0], temperatures[rows]))
        if mode == "as_published":  # the scalar term times the bool mask, then .mean(): the True fraction
            fraction, class_fraction = sample_mask.to(student.dtype).mean(), class_mask.to(student.dtype).mean()
            terms = {k: v * (class_fraction if k == "loss_cc" else fraction) for k, v in terms.items()}
        return terms

    def __call__(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | None,
        targets: Tensor,
        *,
        strong: tuple[Tensor, Tensor] | None = None,
        extras: bool = True,
        group: Any = None,
    ) -> dict[str, Tensor]:
        """Named, weighted terms ``loss_ce``, ``loss_kd`` (and ``loss_cc``, ``loss_bc`` when on), plus ``temperatures``.

        Args:
            student_logits, teacher_logits: ``(B, C)`` logits of the weak view, ``B >= 2``.
            targets: ``(B,)`` integer class labels (the same images in both views).
            strong: ``(student_strong_logits, teacher_strong_logits)``, each ``(B, C)``.
            extras: also return ``"temperatures"``, the weak view's detached ``(B,)`` CSWT ``T_i``.
            group: must be ``None``: the global-batch form is not supported (see the class docstring).

        Raises:
            ValueError: bad logits or targets (as the other methods), a missing ``strong`` with
                ``strong_view=True``, a batch of one sample, a ``group``.
        """
        if group is not None:
            raise ValueError(
                "method 'cskd_published' computes its terms on each process's local batch and does not support "
                "group= (global-batch CSKD): pass group=None (plain DDP works as is)"
            )
        s_weak, t_weak, s_strong, t_strong = self._check_inputs(student_logits, teacher_logits, targets, strong)
        ce = _cross_entropy(student_logits, targets)
        if self.strong_view:
            ce = ce + _cross_entropy(strong[0], targets)
        # Under the trainer's --amp, autocast would run the cc/bc matrix products in bf16/fp16, which rounds
        # their cosines to 1 (the terms to 0): every term below stays in the compute dtype (float32 or more).
        with torch.autocast(s_weak.device.type, enabled=False):
            temperatures = _cswt(s_weak, t_weak, self.t_low, self.t_high, self.abs_eps_cosine)
            weak = self._weak_terms(s_weak, t_weak, temperatures)
            kd = weak.pop("loss_kd")
            if self.strong_view:
                kd = kd + self._pair_kd(s_strong, t_strong, temperatures)
        terms = {"loss_ce": _weighted(self.w_ce, ce), "loss_kd": _weighted(self.w_kd, kd)}
        terms.update({key: _weighted(self.w_kd, value) for key, value in weak.items()})
        if extras:
            terms["temperatures"] = temperatures
        return terms
