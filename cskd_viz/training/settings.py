"""``TrainSettings``: how one training run is driven (budget, optimiser, schedule, logging), validated once."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cskd_viz._validation import MIN_CSKD_BATCH, check_positive_int, check_temperature_value

__all__ = [
    "TrainSettings",
    "SCHEDULES",
    "lr_factor",
    "check_milestones",
    "check_batch_size",
    "check_train_loader",
    "check_trainer_inputs",
]

SCHEDULES = ("cosine", "step", "constant")
CSKD_METHODS = ("cskd", "cskd_cswt", "cskd_published")


def _is_cskd(method: Any) -> bool:
    """Whether ``method`` (a registry name or a :class:`~cskd_viz.methods.Method`) computes the CSKD loss."""
    if isinstance(method, str):
        return method in CSKD_METHODS
    return getattr(type(method), "term", None) == "loss_cskd" or getattr(method, "name", None) in CSKD_METHODS


def check_batch_size(method: Any, batch_size: int, *, global_batch: bool = False, world_size: int = 1) -> None:
    """Refuse ``batch_size < 2`` for the CSKD methods, before a run starts.

    CSKD's cosine of batch predictions compares each class's column across the batch; with one
    sample every column is a single positive number and every cosine is 1 whatever the logits, so
    the loss is 0 with no gradient (the losses refuse such a batch). With ``global_batch`` the loss
    sees the ``world_size * batch_size`` samples of all processes, and that global batch counts.

    Example:
        >>> check_batch_size("cskd_cswt", 1)
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be >= 2 for method 'cskd_cswt', got 1: CSKD compares each class's column ...
    """
    if not _is_cskd(method):
        return
    seen = batch_size * world_size if global_batch else batch_size
    if seen < MIN_CSKD_BATCH:
        name = method if isinstance(method, str) else method.name
        scope = f" (global batch of {world_size} process(es): {seen})" if global_batch else ""
        raise ValueError(
            f"batch_size must be >= {MIN_CSKD_BATCH} for method {name!r}, got {batch_size}{scope}: CSKD compares each "
            "class's column of batch predictions across the batch, and with one sample every cosine is 1 "
            "whatever the logits (loss 0, no gradient)"
        )


def check_train_loader(method: Any, loader: Any, *, global_batch: bool = False, world_size: int = 1) -> None:
    """:func:`check_batch_size` for a training ``DataLoader``, plus its last batch of an epoch.

    A loader without ``drop_last`` whose dataset leaves one sample over (``len % batch_size == 1``)
    ends every epoch with a batch of one, which the CSKD losses refuse: refused here, before the run,
    with the way out (``drop_last=True``). Loaders with a custom ``batch_sampler`` (no
    ``batch_size``) are not checked.
    """
    batch_size = getattr(loader, "batch_size", None)
    if batch_size is None or not _is_cskd(method):
        return
    check_batch_size(method, batch_size, global_batch=global_batch, world_size=world_size)
    if getattr(loader, "drop_last", False) or world_size > 1:  # sharded loaders: every rank needs full batches anyway
        return
    try:
        size = len(loader.dataset)
    except TypeError:  # an iterable dataset: its length is unknown
        return
    if size % batch_size == 1 and size > 1:
        raise ValueError(
            f"train_loader ends every epoch with a batch of one sample ({size} samples, batch_size={batch_size}), "
            "which CSKD cannot use (every per-class cosine of one sample is 1): pass drop_last=True to the DataLoader"
        )


def check_trainer_inputs(
    model: Any, teacher: Any, method: Any, train_loader: Any, test_loader: Any, stop_event: Any
) -> None:
    """The types ``train_teacher`` / ``distill`` take (``TypeError``), and a teacher for a method that needs one."""
    from torch import nn
    from torch.utils.data import DataLoader

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module or None, got {type(teacher).__name__}")
    if not isinstance(train_loader, DataLoader):
        raise TypeError(f"train_loader must be a torch DataLoader, got {type(train_loader).__name__}")
    if test_loader is not None and not isinstance(test_loader, DataLoader):
        raise TypeError(f"test_loader must be a torch DataLoader or None, got {type(test_loader).__name__}")
    if method.needs_teacher and teacher is None:
        raise ValueError(f"method {method.name!r} needs a teacher, got teacher=None")
    if stop_event is not None and not hasattr(stop_event, "is_set"):
        raise TypeError("stop_event must be a threading.Event (or have is_set())")


def lr_factor(schedule: str, total_steps: int, milestones: Sequence[int] | None = None) -> Callable[[int], float]:
    """The learning-rate multiplier at 0-based step ``k`` of ``total_steps``.

    ``"cosine"``: ``(1 + cos(pi k / K)) / 2``; ``"step"``: ``x0.1`` at each of ``milestones`` (0-based
    step indices; the trainer passes ``epoch * steps_per_epoch`` of ``lr_milestones``), by default at
    62.5%, 75% and 87.5% of the steps (mdistiller's 150/180/210 of 240 epochs); ``"constant"``: 1.

    Example:
        >>> [round(lr_factor("cosine", 4)(k), 3) for k in range(5)]
        [1.0, 0.854, 0.5, 0.146, 0.0]
        >>> [lr_factor("step", 6, milestones=(2, 4))(k) for k in range(6)]
        [1.0, 1.0, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002]
    """
    if milestones is not None and schedule != "step":
        raise ValueError(f"milestones need schedule 'step', got schedule {schedule!r}")
    if schedule == "cosine":
        return lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, total_steps) / total_steps))
    if schedule == "step":
        steps = [int(total_steps * f) for f in (0.625, 0.75, 0.875)] if milestones is None else list(milestones)
        return lambda k: 0.1 ** sum(k >= m for m in steps)
    if schedule == "constant":
        return lambda k: 1.0
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def check_milestones(value: Any, schedule: str, name: str = "lr_milestones") -> tuple[int, ...] | None:
    """``value`` as a tuple of strictly increasing positive epochs (``None`` stays ``None``); only with
    ``schedule="step"`` (the LR is multiplied by 0.1 at the start of each of these 0-based epochs).

    Example:
        >>> check_milestones([150, 180, 210], "step")
        (150, 180, 210)
        >>> check_milestones((5,), "cosine")
        Traceback (most recent call last):
        ...
        ValueError: lr_milestones need schedule='step' (got schedule='cosine'): drop them or set schedule='step'
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of epochs (ints), got {type(value).__name__}")
    epochs = tuple(value)
    if not epochs or any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in epochs):
        raise ValueError(f"{name} must be a non-empty sequence of positive epochs (ints), got {value!r}")
    if any(b <= a for a, b in zip(epochs, epochs[1:], strict=False)):
        raise ValueError(f"{name} must be strictly increasing, got {value!r}")
    if schedule != "step":
        raise ValueError(f"{name} need schedule='step' (got schedule={schedule!r}): drop them or set schedule='step'")
    return epochs


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


MAX_SEED = 2**63 - 2  # seeds go to torch.manual_seed (< 2**64), plus small offsets (the test split uses seed + 1)


def check_seed(value: Any, name: str = "seed", *, allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an int in ``[0, MAX_SEED]`` (or ``None`` when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be a non-negative int of at most 2**63 - 2, got {value!r}")


@dataclass(frozen=True)
class TrainSettings:
    """The settings of one run of :func:`~cskd_viz.training.train_teacher` or :func:`~cskd_viz.training.distill`.

    Their keyword arguments are these fields.

    Attributes:
        epochs, max_steps: the budget (at least one; the first one reached ends training).
        lr, momentum, weight_decay: SGD; ``schedule``: ``"cosine"``, ``"step"`` or ``"constant"``,
            per step (see :func:`lr_factor`).
        lr_milestones: with ``schedule="step"``, the 0-based epochs at whose start the learning rate
            is multiplied by 0.1 (mdistiller's ``(150, 180, 210)``); ``None``: 62.5/75/87.5% of the steps.
        amp: mixed precision (:mod:`~cskd_viz.training.precision`: bf16 autocast on CPU and on CUDA
            with bf16, fp16 with a gradient scaler on other CUDA devices).
        checkpoint_every: with a ``checkpoint_dir``, a training checkpoint every this many epochs
            (and at the end; :mod:`~cskd_viz.training.resume`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a ``torch.device``.
        seed: ``torch.manual_seed`` at the start (the loader keeps its own seeded generator).
        log_every: diagnostics every this many steps (and on the first and last step).
        cache_teacher: compute the teacher's training-set logits once (``None``: when the data is
            known to be unaugmented and the method uses the teacher every step).
        temperature: ``T`` of the diagnostics; the method's own by default.
        progress: a ``tqdm.auto`` bar (``None``: only on a terminal or in a notebook).
        flush_interval_s: write the run log at most this often while training (0: at every record).
        raise_on_interrupt: re-raise ``KeyboardInterrupt`` after saving the log, or return the log.
        global_batch: under torch.distributed, CSKD on the global batch of all ranks.
        name: label of the progress bar and of an in-memory run log.

    Example:
        >>> TrainSettings(max_steps=5).total_steps(steps_per_epoch=3)
        (2, 5)
        >>> TrainSettings(epochs=1, lr=0)
        Traceback (most recent call last):
        ...
        ValueError: lr must be > 0, got 0.0
    """

    epochs: int | None = None
    max_steps: int | None = None
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    device: str | torch.device = "cpu"
    seed: int | None = None
    log_every: int = 10
    cache_teacher: bool | None = None
    temperature: float | None = None
    progress: bool | None = None
    flush_interval_s: float = 1.0
    raise_on_interrupt: bool = True
    global_batch: bool = False
    name: str | None = None
    lr_milestones: tuple[int, ...] | None = None
    amp: bool = False
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        check_positive_int(self.epochs, "epochs", allow_none=True)
        check_positive_int(self.max_steps, "max_steps", allow_none=True)
        if self.epochs is None and self.max_steps is None:
            raise ValueError("give epochs or max_steps (or both: training stops at whichever comes first)")
        for name in ("lr", "momentum", "weight_decay"):
            object.__setattr__(self, name, _finite(getattr(self, name), name))
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        lr_factor(self.schedule, 1)  # validates the name
        object.__setattr__(self, "lr_milestones", check_milestones(self.lr_milestones, self.schedule))
        check_positive_int(self.checkpoint_every, "checkpoint_every")
        check_positive_int(self.log_every, "log_every")
        check_seed(self.seed, allow_none=True)
        flush = self.flush_interval_s
        if isinstance(flush, bool) or not isinstance(flush, (int, float)) or not flush >= 0:
            raise ValueError(f"flush_interval_s must be a number >= 0, got {flush!r}")
        if self.temperature is not None:
            object.__setattr__(self, "temperature", check_temperature_value(self.temperature, "temperature"))
        for name in ("global_batch", "raise_on_interrupt", "amp"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if self.cache_teacher is not None and not isinstance(self.cache_teacher, bool):
            raise TypeError(f"cache_teacher must be True, False or None, got {self.cache_teacher!r}")

    def total_steps(self, steps_per_epoch: int) -> tuple[int, int]:
        """``(number of epochs to iterate, total optimiser steps)`` for a loader of this many batches."""
        if steps_per_epoch < 1:
            raise ValueError("train_loader yields no batches")
        total = self.epochs * steps_per_epoch if self.epochs is not None else self.max_steps
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        return math.ceil(total / steps_per_epoch), total

    def replace(self, **changes: Any) -> TrainSettings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
