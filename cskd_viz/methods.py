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

import torch  # noqa: F401 - the docstring examples use it
from torch import Tensor

from cskd_viz import losses
from cskd_viz._method_base import (
    Method,
    _check_weight,
    _Distiller,
    _weighted,
    total_loss,
)
from cskd_viz._validation import (
    check_bool,
    check_temperature_range,
)
from cskd_viz.published import CSKDPublished

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
    "cskd_published": (CSKDPublished, {}),
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
