"""The base of the training methods: :class:`Method` (the shared cross-entropy term, input checks, the
call protocol), ``_Distiller`` (a teacher term's weight and temperature) and their small helpers.

:mod:`cskd_viz.methods` (the registry and the paper's methods) and :mod:`cskd_viz.published` build on it.
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
    check_pair,
    check_scalar,
    check_targets,
    check_temperature_value,
)

DEFAULT_TEMPERATURE = 4.0  # the same default as the losses' functions and modules

__all__ = ["DEFAULT_TEMPERATURE", "Method", "total_loss"]


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
