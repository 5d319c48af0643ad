"""Divergence: a training loss that stops being finite ends the run ``failed``, with the step that did it.

:class:`FiniteWatch` keeps the step losses since its last check as device tensors (no host
synchronisation per step) and checks them in one read at logged steps and epoch ends, so a run
stops at most ``log_every`` steps after its loss became NaN or infinite, with
:class:`TrainingDiverged` naming the first such step. (Termination signals: :mod:`cskd_viz._termination`.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["TrainingDiverged", "FiniteWatch", "nonfinite_parameters", "add_note"]


class TrainingDiverged(RuntimeError):
    """The training loss stopped being finite; the run ends ``failed`` with this message as its reason."""

    def __init__(self, step: int, kind: str, lr: float | None, what: str = "loss") -> None:
        self.step, self.kind, self.lr = step, kind, lr
        self.run: str | None = None  # the run's name or directory, set by the trainer
        at_lr = f" (lr {lr:g})" if lr is not None else ""
        super().__init__(f"{what} became {kind} at step {step}{at_lr}: lower the learning rate (--lr)")


class FiniteWatch:
    """The step losses since the last check, as device scalars, and the learning rate each ran at."""

    def __init__(self) -> None:
        self._losses: list[Tensor] = []
        self._steps: list[tuple[int, float]] = []

    def add(self, step: int, loss: Tensor, lr: float) -> None:
        """Remember step ``step``'s scalar loss (a reference: no copy, no synchronisation)."""
        self._losses.append(loss.detach().reshape(()))
        self._steps.append((step, lr))

    def first_bad(self) -> TrainingDiverged | None:
        """The first remembered step whose loss is NaN or infinite (one host read), then forget them."""
        losses, steps = self._losses, self._steps
        self._losses, self._steps = [], []
        if not losses:
            return None
        values = torch.stack(losses).float()
        bad = ~torch.isfinite(values)
        if not bool(bad.any()):
            return None
        index = int(bad.nonzero()[0, 0])
        value = float(values[index])
        step, lr = steps[index]
        return TrainingDiverged(step, "NaN" if math.isnan(value) else "infinite", lr)


def nonfinite_parameters(module: torch.nn.Module) -> list[str]:
    """Names of ``module``'s floating-point parameters and buffers holding NaN or infinite values."""
    return [
        name
        for name, tensor in module.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def add_note(err: BaseException, note: str) -> None:
    """Attach ``note`` to ``err`` (shown under its traceback; Python 3.10 has no notes: then it is dropped)."""
    if hasattr(err, "add_note"):
        err.add_note(note)
