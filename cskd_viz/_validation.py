"""Input checks shared by losses and diagnostics: clear errors instead of NaNs that travel on.

The bounds live here, once (documented for users in :mod:`cskd_viz.losses`):

- :data:`TEMPERATURE_RANGE` ``= (1e-3, 1e3)``: every temperature (``T``, ``t_low``, ``t_high``,
  per-sample ``T_i``) lies in it. The papers use 1 to 8; at ``T = 1e-3`` float32 softmax is one-hot
  for any logits that differ by more than ~0.1, at ``T = 1e3`` ordinary logits (~10) move it only
  ~1% away from uniform, and with logits bounded by :data:`MAX_ABS_LOGIT` every ``z / T`` stays
  finite in float32 (``1e30 / 1e-3 = 1e33 < 3.4e38``). Outside it the losses returned NaN
  (``T = 1e-40``) or raised ``OverflowError``/``RuntimeError`` (``T = 1e300``).
- :data:`MAX_ABS_LOGIT` ``= 1e30``: finite logits of larger magnitude are refused. Near float32's
  limit (``3.4e38``) ``z - max(z)`` and ``z / T`` overflow to ``inf`` and the losses turned into NaN.
- :data:`MIN_CSKD_BATCH` ``= 2``: the cosine of batch predictions compares each class's column
  across the batch; with one sample every column is a single positive number and every cosine is 1
  whatever the logits (``d = 0``, no gradient).

Temperatures are numbers: Python and NumPy reals and 0-d tensors; ``bool`` (``True``, ``np.True_``,
``torch.tensor(True)``) is refused. The losses refuse temperature tensors with ``requires_grad``:
CSWT temperatures are stop-gradients, so a gradient would silently not reach them (pass
``T.detach()``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import Tensor

Temperature = float | Tensor

TEMPERATURE_RANGE = (1e-3, 1e3)
MAX_ABS_LOGIT = 1e30
_LOGIT_LIMIT = MAX_ABS_LOGIT * 1.01  # 1e30 rounded to bf16/fp16/fp32 (up to 0.4% above) still counts as 1e30
MIN_CSKD_BATCH = 2
_TARGET_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_RANGE_TEXT = f"[{TEMPERATURE_RANGE[0]:g}, {TEMPERATURE_RANGE[1]:g}] (cskd_viz.losses.TEMPERATURE_RANGE)"


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


def _check_logit_values(name: str, low: float, high: float) -> None:
    """Raise unless the extremes ``low``/``high`` of a logit tensor are finite and within :data:`MAX_ABS_LOGIT`.

    A NaN propagates into the extremes and an infinity is one of them, so checking the two extremes
    is enough (``torch.isfinite(x).all()`` reads ``x`` and writes a full-size mask).
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains NaN or infinite values")
    magnitude = max(-low, high)
    if magnitude > _LOGIT_LIMIT:
        raise ValueError(
            f"{name} has entries of magnitude up to {magnitude:.3g}; logits must satisfy |z| <= {MAX_ABS_LOGIT:g} "
            "(cskd_viz.losses.MAX_ABS_LOGIT) so that z / T stays finite in float32 for every temperature "
            f"in {_RANGE_TEXT}"
        )


def check_logits(logits: Tensor, name: str) -> None:
    """Raise unless ``logits`` is a finite, floating ``(B, C)`` tensor, ``B, C >= 1``, ``|z| <= MAX_ABS_LOGIT``."""
    _check_structure(logits, name)
    _check_logit_values(name, *torch.stack(torch.aminmax(logits.detach())).tolist())


def check_target_structure(targets: Tensor, batch_size: int, logits_shape: tuple[int, ...] | None = None) -> None:
    """Type, dtype and shape checks of ``(B,)`` integer class indices (no pass over the values)."""
    if not isinstance(targets, Tensor):
        raise TypeError(
            f"targets must be a torch.Tensor of class indices ({batch_size},), got {type(targets).__name__}"
        )
    if targets.dtype not in _TARGET_DTYPES:  # torch's losses and aminmax support no others (uint16, uint32, ...)
        raise TypeError(
            f"targets must have an integer dtype (integer class indices: int64, int32, int16, int8 or uint8), "
            f"got {targets.dtype}"
        )
    if targets.shape != (batch_size,):
        match = f" to match student_logits {tuple(logits_shape)}" if logits_shape is not None else ""
        raise ValueError(f"targets must have shape ({batch_size},){match}, got {tuple(targets.shape)}")


def _check_target_values(low: float, high: float, num_classes: int) -> None:
    if not (low >= 0 and high < num_classes):
        raise ValueError(
            f"targets must be class indices in [0, {num_classes}) (the {num_classes} classes of student_logits), "
            f"got values from {int(low)} to {int(high)}"
        )


def check_targets(
    targets: Tensor, batch_size: int, num_classes: int, logits_shape: tuple[int, ...] | None = None
) -> None:
    """Validate ``(B,)`` integer class indices in ``[0, num_classes)`` (one read-back of their extremes)."""
    check_target_structure(targets, batch_size, logits_shape)
    _check_target_values(*torch.stack(torch.aminmax(targets.detach())).tolist(), num_classes)


def check_pair(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None = None) -> None:
    """Validate both logit tensors, that their shapes agree and, if given, the ``(B,)`` targets.

    Same checks as :func:`check_logits` on each (and :func:`check_targets`), with one read-back for all.
    """
    _check_structure(student_logits, "student_logits")
    _check_structure(teacher_logits, "teacher_logits")
    if teacher_logits.device != student_logits.device:
        raise ValueError(
            f"teacher_logits are on {teacher_logits.device} but student_logits on {student_logits.device}: "
            "move both to one device"
        )
    extremes = torch.stack([value for x in (student_logits, teacher_logits) for value in torch.aminmax(x.detach())])
    if targets is not None:
        check_target_structure(targets, student_logits.shape[0], tuple(student_logits.shape))
        # not fp16/bf16: those could round an out-of-range class index to a valid one
        dtype = torch.float64 if extremes.dtype == torch.float64 else torch.float32
        target_extremes = torch.stack(torch.aminmax(targets.detach())).to(extremes.device, dtype)
        extremes = torch.cat([extremes.to(dtype), target_extremes])
    values = extremes.tolist()
    _check_logit_values("student_logits", values[0], values[1])
    _check_logit_values("teacher_logits", values[2], values[3])
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if targets is not None:
        _check_target_values(values[4], values[5], student_logits.shape[1])


def check_cskd_batch(batch_size: int, what: str, *, global_batch: bool = False) -> None:
    """Raise unless a CSKD batch has at least :data:`MIN_CSKD_BATCH` samples (``global_batch``: under ``group=``)."""
    if batch_size < MIN_CSKD_BATCH:
        scope = "global batch (all ranks together)" if global_batch else "batch"
        raise ValueError(
            f"{what} needs at least {MIN_CSKD_BATCH} samples per {scope}, got B={batch_size}: the cosine of batch "
            "predictions compares each class's column across the batch, and with one sample every column is a "
            "single positive number whose cosine is 1 whatever the logits (d = 0, no gradient)"
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


def _check_temperature_tensor(temperature: Tensor, name: str, stop_gradient: bool) -> None:
    """The checks every temperature tensor gets: no bool dtype, no ``requires_grad`` (when asked)."""
    if temperature.dtype == torch.bool:
        raise TypeError(f"{name} must be a number or a floating tensor, got a bool tensor")
    if stop_gradient and temperature.requires_grad:
        raise ValueError(
            f"{name} requires grad, but temperatures are stop-gradients here (CSWT temperatures are computed "
            f"without gradient, and no gradient would reach {name}): pass {name}.detach()"
        )


def _check_in_range(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    low, high = TEMPERATURE_RANGE
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {_RANGE_TEXT}, got {value!r}")
    return value


def check_temperature_value(value, name: str = "temperature", *, stop_gradient: bool = True) -> float:
    """Return a scalar temperature as a float in :data:`TEMPERATURE_RANGE`.

    Accepts Python and NumPy reals and 0-d tensors; refuses bools (``True``, ``np.True_``,
    ``torch.tensor(True)``), tensors with more than one entry and (with ``stop_gradient``) tensors
    that require grad.
    """
    if isinstance(value, Tensor):
        _check_temperature_tensor(value, name, stop_gradient)
        if value.dim() != 0:
            raise TypeError(
                f"{name} must be a real number (a float, an int or a 0-d tensor), got a {tuple(value.shape)} tensor"
            )
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return _check_in_range(float(value), name)


def check_temperature(
    temperature: Temperature, batch_size: int, name: str = "temperature", *, stop_gradient: bool = True
) -> Temperature:
    """Validate a scalar temperature (see :func:`check_temperature_value`) or a ``(B,)`` floating tensor.

    Every value must lie in :data:`TEMPERATURE_RANGE`; a ``(B,)`` tensor is read back once (its two
    extremes). ``stop_gradient``: refuse tensors that require grad (the losses); the diagnostics and
    metrics, which return no gradient, pass ``False`` and get the tensor detached.
    """
    if not isinstance(temperature, Tensor) or temperature.dim() == 0:
        return check_temperature_value(temperature, name, stop_gradient=stop_gradient)
    _check_temperature_tensor(temperature, name, stop_gradient)
    if temperature.dim() != 1 or temperature.shape[0] != batch_size:
        raise ValueError(
            f"{name} must be a float or a ({batch_size},) tensor (one per sample), got shape {tuple(temperature.shape)}"
        )
    if not temperature.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {temperature.dtype}")
    temperature = temperature.detach()
    low, high = torch.stack(torch.aminmax(temperature)).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if low <= 0:
        raise ValueError(f"{name} must be > 0 everywhere, got min {low}")
    if not (TEMPERATURE_RANGE[0] <= low and high <= TEMPERATURE_RANGE[1]):
        raise ValueError(f"{name} must lie in {_RANGE_TEXT} everywhere, got values from {low:g} to {high:g}")
    return temperature


def check_temperature_range(t_low: float, t_high: float) -> tuple[float, float]:
    """Validate the CSWT range ``t_low <= t_high``, both in :data:`TEMPERATURE_RANGE`."""
    t_low = check_temperature_value(t_low, "t_low")
    t_high = check_temperature_value(t_high, "t_high")
    if t_low > t_high:
        raise ValueError(f"t_low must be <= t_high, got t_low={t_low} and t_high={t_high}")
    return t_low, t_high


def check_bool(value, name: str) -> bool:
    """Return ``value`` as a bool: ``True``/``False`` or ``numpy.bool_`` only (no ints, no tensors)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False; numpy.bool_ is accepted), got {type(value).__name__}")
    return bool(value)


def check_figure_size(figsize, dpi=None) -> None:
    """Raise unless ``figsize`` is a pair of positive finite numbers (inches) and ``dpi`` (if given) one."""
    size = figsize
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise ValueError(f"figsize must be a pair (width, height) of positive numbers in inches, got {figsize!r}")
    for value in size:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
            raise ValueError(f"figsize must be a pair (width, height) of positive finite numbers, got {figsize!r}")
    if dpi is not None and (
        isinstance(dpi, (bool, np.bool_)) or not isinstance(dpi, numbers.Real) or not 0 < dpi < math.inf
    ):
        raise ValueError(f"dpi must be a positive finite number (dots per inch), got {dpi!r}")


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 stays float64; everything else (fp16, bf16, fp32) is computed in float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
