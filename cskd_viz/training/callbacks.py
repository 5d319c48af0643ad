"""Training callbacks: objects with any of ``on_train_begin``, ``on_step``, ``on_epoch_end``, ``on_train_end``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cskd_viz.runs import EvalRecord, RunLog, StepRecord

__all__ = ["Callback", "LambdaCallback"]


class Callback:
    """Base class with no-op hooks; subclass and override the ones you need.

    Example:
        >>> class PrintLoss(Callback):
        ...     def on_step(self, record):
        ...         print(record.step, round(record.metrics["loss"], 2))
    """

    def on_train_begin(self, run_log: RunLog) -> None:
        """Called once before the first step (the run log is empty, status ``"running"``)."""

    def on_step(self, record: StepRecord) -> None:
        """Called on every logged step (every ``log_every`` steps, the first and the last step)."""

    def on_epoch_end(self, epoch: int, record: EvalRecord | None) -> None:
        """Called at the end of each epoch with its evaluation (``None`` without a test loader)."""

    def on_train_end(self, run_log: RunLog) -> None:
        """Called once at the end, whatever the status (finished, interrupted, failed)."""


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. ``LambdaCallback(on_step=lambda r: print(r.step))``."""

    def __init__(self, on_train_begin=None, on_step=None, on_epoch_end=None, on_train_end=None) -> None:
        for hook, fn in (
            ("on_train_begin", on_train_begin),
            ("on_step", on_step),
            ("on_epoch_end", on_epoch_end),
            ("on_train_end", on_train_end),
        ):
            if fn is not None:
                if not callable(fn):
                    raise TypeError(f"{hook} must be callable, got {type(fn).__name__}")
                setattr(self, hook, fn)


class Hooks:
    """The callbacks' hooks, resolved once (objects may implement any subset)."""

    def __init__(self, callbacks: Iterable[Any]) -> None:
        callbacks = list(callbacks or ())
        self.train_begin = [cb.on_train_begin for cb in callbacks if hasattr(cb, "on_train_begin")]
        self.step = [cb.on_step for cb in callbacks if hasattr(cb, "on_step")]
        self.epoch_end = [cb.on_epoch_end for cb in callbacks if hasattr(cb, "on_epoch_end")]
        self.train_end = [cb.on_train_end for cb in callbacks if hasattr(cb, "on_train_end")]
