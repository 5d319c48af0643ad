"""Input checks shared by losses and diagnostics: clear errors instead of NaNs that travel on."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

Temperature = float | Tensor


def _check_structure(logits: Tensor, name: str) -> None:
    """Type, dtype and shape checks of :func:`check_logits` (no pass over the values)."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C), got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {logits.dtype}")
    if logits.dim() != 2:
        raise ValueError(f"{name} must be 2-D (B, C), got shape {tuple(logits.shape)}")
    if logits.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch: shape {tuple(logits.shape)}, need B >= 1")
    if logits.shape[1] == 0:
        raise ValueError(f"{name} has no classes: shape {tuple(logits.shape)}, need C >= 1")


def _all_finite(*tensors: Tensor) -> list[bool]:
    """Per tensor, whether every entry is finite: one ``aminmax`` pass each, one read-back for all.

    A NaN propagates into the extremes and an infinity is one of them, so checking the two extremes
    is enough (``torch.isfinite(x).all()`` reads ``x`` and writes a full-size mask).
    """
    extremes = torch.stack([value for x in tensors for value in torch.aminmax(x.detach())]).tolist()
    return [math.isfinite(extremes[2 * i]) and math.isfinite(extremes[2 * i + 1]) for i in range(len(tensors))]


def check_logits(logits: Tensor, name: str) -> None:
    """Raise if ``logits`` is not a finite, floating ``(B, C)`` tensor with ``B, C >= 1``."""
    _check_structure(logits, name)
    if not _all_finite(logits)[0]:
        raise ValueError(f"{name} contains NaN or infinite values")


def check_pair(student_logits: Tensor, teacher_logits: Tensor) -> None:
    """Validate both logit tensors and that their shapes agree.

    Same checks as :func:`check_logits` on each, with one read-back for both tensors.
    """
    _check_structure(student_logits, "student_logits")
    _check_structure(teacher_logits, "teacher_logits")
    finite = _all_finite(student_logits, teacher_logits)
    for name, ok in zip(("student_logits", "teacher_logits"), finite, strict=True):
        if not ok:
            raise ValueError(f"{name} contains NaN or infinite values")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )


def check_scalar(value: float, name: str, *, positive: bool = True) -> float:
    """Return ``value`` as a float after checking it is a finite real (and ``> 0`` if asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_positive_int(value, name: str, *, allow_none: bool = False, type_error: bool = False) -> int | None:
    """Return ``value`` after checking it is an int ``>= 1`` (or ``None`` when allowed).

    A value of the wrong type raises ``TypeError`` with ``type_error=True`` (the metrics' contract),
    ``ValueError`` otherwise (the trainer's and the monitor's).
    """
    if value is None and allow_none:
        return None
    wrong_type = isinstance(value, bool) or not isinstance(value, int)
    if wrong_type or value < 1:
        message = f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}"
        raise (TypeError if wrong_type and type_error else ValueError)(message)
    return value


def check_temperature(temperature: Temperature, batch_size: int, name: str = "temperature") -> Temperature:
    """Validate a float temperature or a ``(B,)`` tensor of per-sample temperatures."""
    if isinstance(temperature, Tensor):
        if temperature.dim() == 0:
            return check_scalar(float(temperature), name)
        if temperature.dim() != 1 or temperature.shape[0] != batch_size:
            raise ValueError(
                f"{name} must be a float or a ({batch_size},) tensor (one per sample), "
                f"got shape {tuple(temperature.shape)}"
            )
        if not temperature.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {temperature.dtype}")
        if not bool(torch.isfinite(temperature).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        if not bool((temperature > 0).all()):
            raise ValueError(f"{name} must be > 0 everywhere, got min {float(temperature.min())}")
        return temperature
    return check_scalar(temperature, name)


def check_temperature_range(t_low: float, t_high: float) -> tuple[float, float]:
    """Validate the CSWT range ``0 < t_low <= t_high``."""
    t_low = check_scalar(t_low, "t_low")
    t_high = check_scalar(t_high, "t_high")
    if t_low > t_high:
        raise ValueError(f"t_low must be <= t_high, got t_low={t_low} and t_high={t_high}")
    return t_low, t_high


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 stays float64; everything else (fp16, bf16, fp32) is computed in float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
