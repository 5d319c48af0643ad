"""Distillation methods as small objects: ``(student_logits, teacher_logits, targets) -> dict of losses``.

Each method is a frozen dataclass (validated in ``__post_init__``) wrapping the pure losses of
:mod:`cskd_viz.losses`, in the style of mdistiller: every loss term comes back *weighted* and
*by name* so each one can be logged and plotted, and the training objective is their sum,
``L = w_ce * CE(z_s, y) + w_kd * L_method`` (see :func:`total_loss`).

Returned keys:

- ``"loss_ce"``: ``w_ce * CE(z_s, y)`` (every method);
- the method term, ``w_kd`` times :func:`~cskd_viz.losses.kd_loss` (``"loss_kd"``),
  :func:`~cskd_viz.losses.cskd_loss` (``"loss_cskd"``) or :func:`~cskd_viz.losses.dist_loss`
  (``"loss_dist"``);
- ``"temperatures"`` (CSKD with CSWT only): the ``(B,)`` CSWT temperatures ``T_i`` the loss used,
  detached, so a trainer can log them without recomputing. Only keys starting with ``loss_``
  are loss terms. ``method(..., extras=False)`` leaves such entries out (cheaper steps when
  nothing is logged).

``method(..., group=...)`` (a ``torch.distributed`` process group, see :mod:`cskd_viz.distributed`)
computes the CSKD term on the *global* batch of all ranks (``supports_group`` is ``True`` for
CSKD only). CE and KD are means of per-sample terms, so under DDP their gradient average already
equals the global-batch gradient; they ignore ``group``, as does DIST (its intra-class term stays
local to each rank's batch).

Registry names (:func:`get_method`): ``"ce"``, ``"kd"``, ``"cskd"`` (CSWT off), ``"cskd_cswt"``
(CSWT on), ``"dist"``, and ``"cskd_published"`` (:class:`cskd_viz.published.CSKDPublished`: the public
CSKD code's two-view objective; ``two_views`` is ``True`` for it only). Defaults are those of the
loss functions and modules (``T = 4``, ``t_low = 2``, ``t_high = 6``, CSWT on for a plain ``CSKD()``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from cskd_viz import losses
from cskd_viz._validation import (
    _check_structure,
    check_bool,
    check_pair,
    check_scalar,
    check_targets,
    check_temperature_range,
    check_temperature_value,
)

DEFAULT_TEMPERATURE = 4.0  # the same default as the losses' functions and modules

__all__ = [
    "Method",
    "CE",
    "KD",
    "CSKD",
    "DIST",
    "METHODS",
    "get_method",
    "method_names",
    "method_parameters",
    "total_loss",
]


def _check_weight(value: Any, name: str) -> float:
    value = check_scalar(value, name, positive=False)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _weighted(weight: float, loss: Tensor) -> Tensor:
    """``weight * loss``, without an extra autograd node for the common weight 1."""
    return loss if weight == 1.0 else weight * loss


def _check_teacher(method: Method, teacher_logits: Tensor | None) -> Tensor:
    if teacher_logits is None:
        raise ValueError(f"method {method.name!r} needs teacher_logits, got None")
    return teacher_logits


def _cross_entropy(student_logits: Tensor, targets: Tensor) -> Tensor:
    """``F.cross_entropy`` in float32 for fp16/bf16 logits, as under autocast (in float16 a valid logit of
    ~6e4 made the CE term infinite), with any validated integer targets (torch takes int64 and uint8 only)."""
    if student_logits.dtype in (torch.float16, torch.bfloat16):
        student_logits = student_logits.float()
    return F.cross_entropy(student_logits, targets.long())


def total_loss(terms: dict[str, Tensor]) -> Tensor:
    """Sum of the ``loss_*`` terms of a method's output (the training objective).

    Example:
        >>> terms = {"loss_ce": torch.tensor(1.0), "loss_kd": torch.tensor(0.5), "temperatures": torch.ones(3)}
        >>> float(total_loss(terms))
        1.5
    """
    if not isinstance(terms, dict):
        raise TypeError(f"terms must be a dict of a method's terms, got {type(terms).__name__}")
    loss_terms = [value for key, value in terms.items() if key.startswith("loss_")]
    if not loss_terms:
        raise ValueError(f"terms has no 'loss_*' entry, got keys {sorted(terms)}")
    total = loss_terms[0]
    for value in loss_terms[1:]:
        total = total + value
    return total


@dataclass(frozen=True)
class Method:
    """Base class: holds ``w_ce`` and the cross-entropy term every method shares.

    Subclasses set the class attributes ``needs_teacher`` (whether ``teacher_logits`` are used
    by the loss), ``term`` (the name of the method's loss term) and ``supports_group`` (whether
    ``_method_terms`` takes a ``group=`` keyword for a global-batch loss), and implement
    ``_method_terms``.
    """

    w_ce: float = 1.0

    needs_teacher: ClassVar[bool] = True
    term: ClassVar[str | None] = None
    supports_group: ClassVar[bool] = False
    two_views: ClassVar[bool] = False  # True: called with strong=(student, teacher) logits of a second view

    def __post_init__(self) -> None:
        object.__setattr__(self, "w_ce", _check_weight(self.w_ce, "w_ce"))

    @property
    def name(self) -> str:
        """The registry name of this configuration (``get_method(m.name, **params)`` rebuilds it)."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The dataclass fields as a dict."""
        return dataclasses.asdict(self)

    @property
    def diagnostic_temperature(self) -> float:
        """``T`` of the diagnostics (per-class cosine, ``d(T)``): the method's own, else 4."""
        return DEFAULT_TEMPERATURE

    @property
    def temperature_range(self) -> tuple[float, float] | None:
        """``(t_low, t_high)`` of the CSWT temperatures this method produces, or ``None``."""
        return None

    def _method_terms(self, student_logits: Tensor, teacher_logits: Tensor, extras: bool) -> dict[str, Tensor]:
        return {}

    def __call__(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | None,
        targets: Tensor,
        *,
        extras: bool = True,
        group: Any = None,
    ) -> dict[str, Tensor]:
        """Named, weighted loss terms (plus ``"temperatures"`` for CSWT).

        Args:
            student_logits: ``(B, C)`` student logits (with gradient).
            teacher_logits: ``(B, C)`` teacher logits (no gradient needed), or ``None`` for CE.
            targets: ``(B,)`` integer class labels.
            extras: also return the non-loss entries (``"temperatures"``). A trainer passes
                ``False`` on steps it does not log, to skip their cost; loss values are the same.
            group: a ``torch.distributed`` process group: the CSKD term (and its ``"temperatures"``)
                on the global batch of all ranks, a collective every rank must call. Ignored by
                methods whose ``supports_group`` is ``False``. ``None`` (default): local batch.

        Raises:
            ValueError: ``targets`` outside ``[0, C)``, non-finite or too large logits (see
                :mod:`cskd_viz.losses`), and for CSKD a batch of one sample (a global one under ``group``).
                Logits and targets are validated with one read-back per call.
        """
        if not isinstance(student_logits, Tensor) or student_logits.dim() != 2:
            raise ValueError("student_logits must be a (B, C) tensor")
        if isinstance(targets, Tensor) and targets.device != student_logits.device:  # CE would fail (or copy)
            raise ValueError(f"targets are on {targets.device} but student_logits on {student_logits.device}")
        if self.needs_teacher:  # logits, shapes and target range: one read-back for all
            check_pair(student_logits, _check_teacher(self, teacher_logits), targets)
            teacher_logits = teacher_logits.detach()
        else:  # CE alone: the logits' dtype and shape (torch's CE takes any values), the targets' range
            _check_structure(student_logits, "student_logits")
            check_targets(targets, student_logits.shape[0], student_logits.shape[1], tuple(student_logits.shape))
        terms = {"loss_ce": _weighted(self.w_ce, _cross_entropy(student_logits, targets))}
        if self.needs_teacher:  # the losses' unchecked cores: everything was validated above or in __post_init__
            student, teacher = losses._as_compute(student_logits, teacher_logits)
            if group is not None and self.supports_group:
                terms.update(self._method_terms(student, teacher, extras, group=group))
            else:
                terms.update(self._method_terms(student, teacher, extras))
        return terms


@dataclass(frozen=True)
class CE(Method):
    """Plain cross-entropy training (the baseline student, and how teachers are trained).

    ``L = w_ce * CE(z_s, y)``; ``teacher_logits`` are ignored (may be ``None``).

    Example:
        >>> z, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
        >>> sorted(CE()(z, None, y))
        ['loss_ce']
    """

    needs_teacher: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return "ce"


@dataclass(frozen=True)
class _Distiller(Method):
    """A method with a teacher term: its weight ``w_kd`` and temperature ``T`` (validated here once)."""

    w_kd: float = 1.0
    temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "w_kd", _check_weight(self.w_kd, "w_kd"))
        object.__setattr__(self, "temperature", check_temperature_value(self.temperature, "temperature"))

    @property
    def diagnostic_temperature(self) -> float:
        return self.temperature


@dataclass(frozen=True)
class KD(_Distiller):
    """Hinton KD: ``L = w_ce * CE(z_s, y) + w_kd * T^2 * mean_i KL(P_t[i] || P_s[i])``.

    Hinton, Vinyals, Dean, arXiv:1503.02531; the loss term is :func:`cskd_viz.losses.kd_loss`.

    Example:
        >>> z, y = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> out = KD(temperature=4.0)(z, z, y)
        >>> sorted(out), float(out["loss_kd"])
        (['loss_ce', 'loss_kd'], 0.0)
    """

    term: ClassVar[str] = "loss_kd"

    @property
    def name(self) -> str:
        return "kd"

    def _method_terms(self, student_logits: Tensor, teacher_logits: Tensor, extras: bool) -> dict[str, Tensor]:
        return {"loss_kd": _weighted(self.w_kd, losses._kd_loss(student_logits, teacher_logits, self.temperature))}


@dataclass(frozen=True)
class CSKD(_Distiller):
    """CSKD: ``L = w_ce * CE(z_s, y) + w_kd * (T^2 d(T) + mean(T_i)^2 d(T_i))``.

    ``d`` is the batch cosine distance of batch predictions and ``T_i`` the CSWT temperatures
    (the second term only with ``cswt=True``). Ham et al., "Cosine Similarity Knowledge
    Distillation for Individual Class Information Transfer", arXiv:2311.14307. The value equals
    :func:`cskd_viz.losses.cskd_loss`; with CSWT the ``(B,)`` temperatures used come back under
    ``"temperatures"`` (detached). A batch of one sample (under ``group``: a global batch of one) is
    a ``ValueError``: with one sample every column cosine is 1 trivially. ``cswt`` is a ``bool``
    (``numpy.bool_`` is accepted and stored as ``bool``).

    Example:
        >>> z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> out = CSKD(cswt=True)(z, z, y)
        >>> sorted(out), float(out["loss_cskd"]), out["temperatures"].shape
        (['loss_ce', 'loss_cskd', 'temperatures'], 0.0, torch.Size([4]))
    """

    t_low: float = 2.0
    t_high: float = 6.0
    cswt: bool = True

    term: ClassVar[str] = "loss_cskd"
    supports_group: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        t_low, t_high = check_temperature_range(self.t_low, self.t_high)
        object.__setattr__(self, "t_low", t_low)
        object.__setattr__(self, "t_high", t_high)
        object.__setattr__(self, "cswt", check_bool(self.cswt, "cswt"))

    @property
    def name(self) -> str:
        return "cskd_cswt" if self.cswt else "cskd"

    @property
    def temperature_range(self) -> tuple[float, float] | None:
        return (self.t_low, self.t_high) if self.cswt else None

    def _method_terms(
        self, student_logits: Tensor, teacher_logits: Tensor, extras: bool, group: Any = None
    ) -> dict[str, Tensor]:
        args = (student_logits, teacher_logits, (self.temperature, self.t_low, self.t_high), self.cswt, group)
        if not extras:  # an unlogged step: the loss alone
            return {"loss_cskd": _weighted(self.w_kd, losses._cskd_loss(*args))}
        loss, temperatures = losses._cskd_loss(*args, return_temperatures=True)
        terms = {"loss_cskd": _weighted(self.w_kd, loss)}
        if temperatures is not None:
            terms["temperatures"] = temperatures  # the ones the loss used (this rank's rows under a group)
        return terms


@dataclass(frozen=True)
class DIST(_Distiller):
    """DIST: ``L = w_ce * CE(z_s, y) + w_kd * T^2 (beta (1 - rho_inter) + gamma (1 - rho_intra))``.

    Huang et al., "Knowledge Distillation from A Stronger Teacher", arXiv:2205.10536; the loss
    term is :func:`cskd_viz.losses.dist_loss` (Pearson correlations of rows and columns).

    Example:
        >>> z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> sorted(DIST()(z, z, y))
        ['loss_ce', 'loss_dist']
    """

    beta: float = 1.0
    gamma: float = 1.0

    term: ClassVar[str] = "loss_dist"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "beta", _check_weight(self.beta, "beta"))
        object.__setattr__(self, "gamma", _check_weight(self.gamma, "gamma"))

    @property
    def name(self) -> str:
        return "dist"

    def _method_terms(self, student_logits: Tensor, teacher_logits: Tensor, extras: bool) -> dict[str, Tensor]:
        loss = losses._dist_loss(student_logits, teacher_logits, self.temperature, self.beta, self.gamma)
        return {"loss_dist": _weighted(self.w_kd, loss)}


# name -> (class, fixed parameters)
METHODS: dict[str, tuple[type[Method], dict[str, Any]]] = {
    "ce": (CE, {}),
    "kd": (KD, {}),
    "cskd": (CSKD, {"cswt": False}),
    "cskd_cswt": (CSKD, {"cswt": True}),
    "dist": (DIST, {}),
}


def method_names() -> list[str]:
    """The registered method names.

    Example:
        >>> method_names()
        ['ce', 'cskd', 'cskd_cswt', 'cskd_published', 'dist', 'kd']
    """
    return sorted(METHODS)


def method_parameters(name: str) -> list[str]:
    """The parameters ``get_method(name, ...)`` accepts.

    Example:
        >>> method_parameters("kd")
        ['temperature', 'w_ce', 'w_kd']
    """
    cls, fixed = _lookup(name)
    return sorted(f.name for f in dataclasses.fields(cls) if f.name not in fixed)


def _lookup(name: str) -> tuple[type[Method], dict[str, Any]]:
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"method must be one of {method_names()}, got {name!r}")
    return METHODS[name]


def get_method(name: str, **params: Any) -> Method:
    """Build a registered method with its parameters (weights, temperatures).

    Args:
        name: one of ``"ce"``, ``"kd"``, ``"cskd"`` (CSWT off), ``"cskd_cswt"``, ``"dist"``.
        **params: dataclass fields of that method (``w_ce``, ``w_kd``, ``temperature``,
            ``t_low``, ``t_high``, ``beta``, ``gamma``); an unknown one is a ``TypeError``.

    Example:
        >>> get_method("cskd_cswt", temperature=3.0)
        CSKD(w_ce=1.0, w_kd=1.0, temperature=3.0, t_low=2.0, t_high=6.0, cswt=True)
    """
    cls, fixed = _lookup(name)
    allowed = set(method_parameters(name))
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise TypeError(f"method {name!r} got unknown parameter(s) {unknown}; it accepts {sorted(allowed)}")
    return cls(**fixed, **params)


import cskd_viz.published  # noqa: E402, F401  (registers "cskd_published"; it builds on the classes above)
