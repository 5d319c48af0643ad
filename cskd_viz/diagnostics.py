"""Diagnostics of how a student tracks its teacher: per-batch measures and epoch accumulators.

Per-batch functions take ``(B, C)`` logits and return tensors. The epoch accumulators
(``PerClassCosineAccumulator``, ``TemperatureStatsAccumulator``, ``AgreementAccumulator``) are the
``torchmetrics`` metrics of :mod:`cskd_viz.metrics` under their first names: fixed-size sums, so an
epoch's statistics use memory independent of the number of steps; ``merge`` combines two exactly.

Input bounds are the losses' (see :mod:`cskd_viz.losses`): temperatures in ``[1e-3, 1e3]``, finite
logits of magnitude ``<= 1e30``. These functions return no gradient, so a temperature tensor that
requires grad is accepted here (and detached). :func:`per_class_cosine` and :class:`KLvsCosine`
need at least two samples: with one, every column cosine is 1 trivially.
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
    check_cskd_batch,
    check_logits,
    check_pair,
    check_scalar,
    check_temperature,
    check_temperature_value,
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
    "PerClassCosineAccumulator",  # noqa: F822 - imported on first use, see __getattr__
    "TemperatureStatsAccumulator",  # noqa: F822 - imported on first use, see __getattr__
    "AgreementAccumulator",  # noqa: F822 - imported on first use, see __getattr__
]


def _prepared(student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature):
    check_pair(student_logits, teacher_logits)
    temperature = check_temperature(temperature, student_logits.shape[0], stop_gradient=False)
    dtype = compute_dtype(student_logits, teacher_logits)
    return student_logits.detach().to(dtype), teacher_logits.detach().to(dtype), temperature


@torch.no_grad()
def per_class_cosine(student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature = 4.0) -> Tensor:
    """Per-class cosine of batch predictions ``c_j = cos(P_s[:, j], P_t[:, j])``.

    Args:
        student_logits: ``(B, C)``, ``B >= 2``.
        teacher_logits: ``(B, C)``.
        temperature: float or ``(B,)``.

    Returns:
        ``(C,)`` cosines in ``[0, 1]`` (no gradient; clamped, so rounding never leaves the interval).
        ``1 - mean`` is CSKD's ``d(T)``.

    Raises:
        ValueError: for a batch of one sample, whose column cosines are all 1 whatever the logits.

    Example:
        >>> z = torch.randn(4, 3)
        >>> per_class_cosine(z, z).shape
        torch.Size([3])
    """
    s, t, temperature = _prepared(student_logits, teacher_logits, temperature)
    check_cskd_batch(s.shape[0], "per_class_cosine")
    return losses._per_class_cosine(s, t, temperature).clamp_(0.0, 1.0)


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
    temperature = check_temperature(temperature, logits.shape[0], stop_gradient=False)
    logits = logits.detach().to(compute_dtype(logits))
    log_p = F.log_softmax(losses._scaled_logits(logits, temperature), dim=1)
    return (-(log_p.exp() * log_p).sum(1)).clamp_min(0.0)


class KLvsCosine:
    """Compare KL (what KD minimises) with batch cosine distance (what CSKD minimises).

    Both measures are evaluated on the same logits while the *student* logits are transformed:
    ``scale`` multiplies them by ``a`` (changes the softmax: KL moves, and so does the cosine, but
    differently), ``shift`` adds ``b`` to every logit (softmax unchanged: both stay put).

    Args:
        student_logits: ``(B, C)``, ``B >= 2`` (the batch cosine distance needs two samples).
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
        check_cskd_batch(student_logits.shape[0], "KLvsCosine")
        self.temperature = check_temperature_value(temperature, "temperature")
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
# The epoch accumulators are the torchmetrics metrics of :mod:`cskd_viz.metrics`, under their first
# names; imported on first use so that this module does not load torchmetrics.
_ACCUMULATORS = ("PerClassCosineAccumulator", "TemperatureStatsAccumulator", "AgreementAccumulator")


def __getattr__(name: str):
    if name in _ACCUMULATORS:
        from cskd_viz import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
