"""Short training runs: teachers, distilled students, a teacher-logit cache, progress bars, callbacks.

Three entry points:

- :func:`train_teacher` trains a model with cross-entropy;
- :func:`distill` trains a student against a frozen teacher with a method of :mod:`cskd_viz.methods`;
- :func:`run_experiment` does everything from a :class:`RunConfig` (data, models, teacher, run
  directory, checkpoint) and is what the CLI and the widgets' ``RunLauncher`` call.

Optimiser: SGD with momentum and weight decay; the learning rate follows a per-step ``"cosine"``
schedule (``lr * (1 + cos(pi * k / K)) / 2`` at step ``k`` of ``K``), a ``"step"`` schedule
(``x0.1`` at 62.5%, 75% and 87.5% of the steps, mdistiller's 150/180/210 of 240 epochs) or
``"constant"``.

Diagnostics are computed only every ``log_every`` steps (and on the first and last steps): on other steps the loop
does forward, loss, backward and the optimiser step, with no host-device synchronisation. A
logged step becomes a :class:`~cskd_viz.runs.StepRecord` handed to the run log and the callbacks.
While training, the run log is written at logged steps and epoch ends, at most once per
``flush_interval_s`` seconds, from a background thread (the loop never waits for the disk); at
the end (finished, interrupted or failed) it is written synchronously.

**Teacher-logit cache.** When the training data has no random augmentation, the teacher's
logits for a sample never change, so they are computed once for the whole training set (teacher
in ``eval()`` mode, ``no_grad``) and looked up by sample index afterwards; later epochs never run
the teacher. The training loader is rebuilt around an :class:`IndexedDataset` with the *same*
sampler and generator, so the batches and their order are exactly those of the original loader.
The teacher's test-set logits are computed once per run and reused at every evaluation.

**Callbacks** are any objects with some of these methods (missing ones are skipped):
``on_train_begin(run_log)``, ``on_step(record: StepRecord)``,
``on_epoch_end(epoch: int, record: EvalRecord | None)`` and ``on_train_end(run_log)``.

**Stopping.** A ``stop_event`` (``threading.Event``) set by another thread or by a callback ends
the run after the current step with status ``"interrupted"``. A ``KeyboardInterrupt`` (Ctrl-C, or
*Interrupt kernel* in Jupyter) also flushes the run log with status ``"interrupted"`` (it loads
like any other run); it is then *re-raised* by default, so scripts and notebook cells stop as
Python users expect. Pass ``raise_on_interrupt=False`` to print a message and return the
interrupted :class:`~cskd_viz.runs.RunLog` instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler, TensorDataset

from cskd_viz.diagnostics import per_class_cosine
from cskd_viz.methods import Method, get_method, method_names, method_parameters, total_loss
from cskd_viz.runs import EvalRecord, RunLog, StepRecord, is_run_dir, load_run

__all__ = [
    "Callback",
    "LambdaCallback",
    "IndexedDataset",
    "TeacherLogitCache",
    "RunConfig",
    "with_indices",
    "resolve_device",
    "train_teacher",
    "distill",
    "run_experiment",
    "load_checkpoint",
    "save_checkpoint",
    "SCHEDULES",
]

SCHEDULES = ("cosine", "step", "constant")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
HIST_BINS = 12
DEFAULT_TEMPERATURE = 4.0


# ----------------------------------------------------------------------------- callbacks


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


class _Hooks:
    """The callbacks' hooks, resolved once (objects may implement any subset)."""

    def __init__(self, callbacks: Iterable[Any]) -> None:
        callbacks = list(callbacks or ())
        self.train_begin = [cb.on_train_begin for cb in callbacks if hasattr(cb, "on_train_begin")]
        self.step = [cb.on_step for cb in callbacks if hasattr(cb, "on_step")]
        self.epoch_end = [cb.on_epoch_end for cb in callbacks if hasattr(cb, "on_epoch_end")]
        self.train_end = [cb.on_train_end for cb in callbacks if hasattr(cb, "on_train_end")]


# ----------------------------------------------------------------------------- teacher cache


class IndexedDataset(Dataset):
    """Wrap a dataset so items become ``(x, y, index)``: the key of the teacher-logit cache.

    Example:
        >>> ds = IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 0])))
        >>> ds[2][2], len(ds)
        (2, 3)
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index][:2]
        return x, y, index


def with_indices(loader: DataLoader) -> DataLoader:
    """The same loader (same sampler, generator, batch size, collate) over an :class:`IndexedDataset`.

    Iterating it yields ``(x, y, idx)`` batches with exactly the samples, in exactly the order,
    that iterating ``loader`` would have produced (they share the sampler and its generator).

    Example:
        >>> from cskd_viz.data import make_loaders
        >>> train, _, _ = make_loaders("synthetic", batch_size=8, seed=0)
        >>> x, y, idx = next(iter(with_indices(train)))
        >>> idx.shape
        torch.Size([8])
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(f"loader must be a torch DataLoader, got {type(loader).__name__}")
    common = dict(
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        persistent_workers=loader.persistent_workers,
    )
    if loader.num_workers > 0:
        common["prefetch_factor"] = loader.prefetch_factor
    dataset = IndexedDataset(loader.dataset)
    if loader.batch_size is None:  # a custom batch_sampler
        return DataLoader(dataset, batch_sampler=loader.batch_sampler, **common)
    return DataLoader(
        dataset, batch_size=loader.batch_size, sampler=loader.sampler, drop_last=loader.drop_last, **common
    )


class TeacherLogitCache:
    """Teacher logits for every training sample, computed once, looked up by sample index.

    Args:
        logits: ``(N, C)`` logits, row ``i`` for dataset item ``i``.

    Example:
        >>> data = TensorDataset(torch.randn(10, 4), torch.zeros(10, dtype=torch.long))
        >>> teacher = nn.Linear(4, 3)
        >>> cache = TeacherLogitCache.build(teacher, data, batch_size=4)
        >>> torch.allclose(cache[torch.tensor([7, 2])], teacher(data.tensors[0][[7, 2]]), atol=1e-6)
        True
    """

    def __init__(self, logits: Tensor) -> None:
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise ValueError("logits must be a (N, C) tensor")
        self.logits = logits

    @classmethod
    @torch.no_grad()
    def build(
        cls, teacher: nn.Module, dataset: Dataset, device: str | torch.device = "cpu", batch_size: int = 512
    ) -> TeacherLogitCache:
        """Run ``teacher`` (in ``eval()`` mode, ``no_grad``) over ``dataset`` in index order."""
        was_training = teacher.training
        teacher.eval()
        device = torch.device(device)
        chunks = []
        try:
            for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                chunks.append(teacher(batch[0].to(device, non_blocking=True)).detach())
        finally:
            teacher.train(was_training)
        if not chunks:
            raise ValueError("dataset is empty: nothing to cache")
        return cls(torch.cat(chunks))

    def __len__(self) -> int:
        return self.logits.shape[0]

    def __getitem__(self, index: Tensor) -> Tensor:
        return self.logits[index.to(self.logits.device, non_blocking=True)]


def _data_augmented(train_loader: DataLoader, info: Any) -> bool | None:
    """True/False when known (``info.augmented``, a dataset's ``augmented`` flag, a TensorDataset)."""
    if info is not None and getattr(info, "augmented", None) is not None:
        return bool(info.augmented)
    dataset = getattr(train_loader, "dataset", None)
    if getattr(dataset, "augmented", None) is not None:
        return bool(dataset.augmented)
    if isinstance(dataset, TensorDataset):
        return False
    return None


# ----------------------------------------------------------------------------- helpers


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available) as a ``torch.device``.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu', 'cuda' or 'auto', got {type(device).__name__}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", device):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available (use 'cpu' or 'auto')")
        return torch.device(device)
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")


def _lr_lambda(schedule: str, total_steps: int):
    if schedule == "cosine":
        return lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, total_steps) / total_steps))
    if schedule == "step":
        milestones = [int(total_steps * f) for f in (0.625, 0.75, 0.875)]
        return lambda k: 0.1 ** sum(k >= m for m in milestones)
    if schedule == "constant":
        return lambda k: 1.0
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def _positive_int(value: Any, name: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")
    return value


def _budget(steps_per_epoch: int, epochs: int | None, max_steps: int | None) -> tuple[int, int]:
    """``(number of epochs to iterate, total optimiser steps)``."""
    _positive_int(epochs, "epochs", allow_none=True)
    _positive_int(max_steps, "max_steps", allow_none=True)
    if epochs is None and max_steps is None:
        raise ValueError("give epochs or max_steps (or both: training stops at whichever comes first)")
    if steps_per_epoch < 1:
        raise ValueError("train_loader yields no batches")
    total = epochs * steps_per_epoch if epochs is not None else max_steps
    if max_steps is not None:
        total = min(total, max_steps)
    return math.ceil(total / steps_per_epoch), total


def save_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Save ``{"model": state_dict}`` (mdistiller's format) atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"model": model.state_dict()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(model: nn.Module, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a checkpoint (``{"model": state_dict}`` or a bare state dict, ``module.`` prefixes stripped) strictly.

    Raises:
        ValueError: missing file, unreadable file, or keys/shapes that do not match ``model``
            (the message names them).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"checkpoint {path} cannot be read: {err}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds no state dict")
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise ValueError(
            f"checkpoint {path} does not match {type(model).__name__}: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}, shape mismatches {wrong[:5]}"
        )
    model.load_state_dict(state, strict=True)
    return model


# ----------------------------------------------------------------------------- the loop


class _Run:
    """One training run (teacher or student). Internal: use train_teacher / distill."""

    def __init__(
        self,
        model: nn.Module,
        train_loader: DataLoader,
        test_loader: DataLoader | None,
        *,
        teacher: nn.Module | None,
        method: Method,
        epochs: int | None,
        max_steps: int | None,
        lr: float,
        momentum: float,
        weight_decay: float,
        schedule: str,
        device: str | torch.device,
        seed: int | None,
        log_every: int,
        callbacks: Iterable[Any],
        stop_event: threading.Event | None,
        cache_teacher: bool | None,
        info: Any,
        run_log: RunLog | None,
        progress: bool | None,
        temperature: float | None,
        flush_interval_s: float,
        raise_on_interrupt: bool,
        name: str | None,
    ) -> None:
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
        for value, label in ((lr, "lr"), (momentum, "momentum"), (weight_decay, "weight_decay")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{label} must be a finite number, got {value!r}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.log_every = _positive_int(log_every, "log_every")
        if isinstance(flush_interval_s, bool) or not isinstance(flush_interval_s, (int, float)) or flush_interval_s < 0:
            raise ValueError(f"flush_interval_s must be a number >= 0, got {flush_interval_s!r}")
        self.flush_interval_s = float(flush_interval_s)
        self.device = resolve_device(device)
        self.n_epochs, self.total_steps = _budget(len(train_loader), epochs, max_steps)
        self.steps_per_epoch = len(train_loader)
        _lr_lambda(schedule, self.total_steps)  # validates the name

        self.model = model.to(self.device)
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        self.method = method
        self.temperature = float(
            temperature if temperature is not None else getattr(method, "temperature", DEFAULT_TEMPERATURE)
        )
        self.t_low = getattr(method, "t_low", None)
        self.t_high = getattr(method, "t_high", None)
        self.train_loader, self.test_loader = train_loader, test_loader
        self.lr, self.momentum, self.weight_decay, self.schedule = float(lr), momentum, weight_decay, schedule
        self.seed = seed
        self.hooks = _Hooks(callbacks)
        self.stop_event = stop_event
        self.raise_on_interrupt = raise_on_interrupt
        self.progress = progress

        augmented = _data_augmented(train_loader, info)
        if teacher is None:
            use_cache = False
        elif cache_teacher is None:
            use_cache = augmented is False and method.needs_teacher
        elif cache_teacher:
            if augmented:
                raise ValueError(
                    "cache_teacher=True but the training data is augmented: teacher logits change per epoch"
                )
            use_cache = True
        else:
            use_cache = False
        self.use_cache = use_cache

        details = {
            "method": method.name,
            **method.params(),
            "cswt": bool(getattr(method, "cswt", False)),
            "diagnostic_temperature": self.temperature,
            "epochs": epochs,
            "max_steps": max_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "batch_size": train_loader.batch_size,
            "lr": self.lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "schedule": schedule,
            "seed": seed,
            "log_every": log_every,
            "device": str(self.device),
            "teacher_cache": use_cache,
        }
        if run_log is None:
            run_log = RunLog({"name": name or method.name, **details})
        else:
            for key, value in details.items():
                run_log.config.setdefault(key, value)
            run_log.config["teacher_cache"] = use_cache
            run_log.config["total_steps"] = self.total_steps
            run_log.config["steps_per_epoch"] = self.steps_per_epoch
            run_log.config["device"] = str(self.device)
        self.run_log = run_log
        self.name = name or run_log.name
        self._test_teacher_logits: list[Tensor] | None = None

    # -------------------------------------------------------------- diagnostics
    @torch.no_grad()
    def _step_record(self, step, epoch, student_logits, teacher_logits, targets, terms, loss, lr, elapsed):
        """Diagnostics of one logged step. Everything is moved to the CPU first (one transfer;
        a no-op for CPU runs), then computed with few, small operations."""
        term_keys = [k for k in terms if k.startswith("loss_")]
        scalars = torch.stack([loss.detach().float(), *(terms[k].detach().float() for k in term_keys)])
        temps = terms.get("temperatures")
        cpu = torch.device("cpu")
        s = student_logits.detach().to(cpu)
        scalars = scalars.to(cpu).tolist()
        pred_s = s.argmax(1)
        n = pred_s.shape[0]
        metrics = {"loss": scalars[0]}
        metrics.update(zip(term_keys, scalars[1:], strict=True))
        metrics["train_accuracy"] = int((pred_s == targets.to(cpu)).sum()) / n
        nan = float("nan")
        class_cosine = None
        if teacher_logits is not None:
            t = teacher_logits.detach().to(cpu)
            metrics["agreement"] = int((pred_s == t.argmax(1)).sum()) / n
            class_cosine = per_class_cosine(s, t, self.temperature).tolist()
            metrics["cosine_distance"] = 1.0 - sum(class_cosine) / len(class_cosine)
        else:
            metrics["agreement"] = metrics["cosine_distance"] = nan
        stats = hist = None
        if temps is not None:
            values = sorted(temps.detach().to(cpu).tolist())
            stats = {f"q{round(q * 100):02d}": _quantile(values, q) for q in QUANTILES}
            stats.update(mean=sum(values) / len(values), min=values[0], max=values[-1])
            hist = _histogram(values, self.t_low, self.t_high, HIST_BINS)
            metrics["mean_temperature"] = stats["mean"]
        else:
            metrics["mean_temperature"] = nan
        metrics["lr"] = lr
        metrics["elapsed_s"] = elapsed
        return StepRecord(step, epoch, metrics, class_cosine, stats, hist)

    @torch.no_grad()
    def _evaluate(self, epoch: int, step: int) -> EvalRecord:
        from cskd_viz.diagnostics import AgreementAccumulator, PerClassCosineAccumulator

        model, teacher = self.model, self.teacher
        was_training = model.training
        model.eval()
        # The teacher's test logits are computed once and reused, when the test order is fixed.
        reuse = isinstance(self.test_loader.sampler, SequentialSampler)
        first_pass = teacher is not None and (self._test_teacher_logits is None or not reuse)
        if first_pass:
            self._test_teacher_logits = []
        n, correct, ce_sum = 0, 0, 0.0
        agreement = cosines = None
        try:
            for i, batch in enumerate(self.test_loader):
                x = batch[0].to(self.device, non_blocking=True)
                y = batch[1].to(self.device, non_blocking=True)
                s = model(x)
                ce_sum += float(F.cross_entropy(s, y, reduction="sum"))
                correct += int((s.argmax(1) == y).sum())
                n += y.shape[0]
                if teacher is not None:
                    if first_pass:
                        self._test_teacher_logits.append(teacher(x).detach())
                    t = self._test_teacher_logits[i]
                    if agreement is None:
                        agreement = AgreementAccumulator()
                        cosines = PerClassCosineAccumulator(s.shape[1], self.temperature)
                    agreement.update(s, t, y)
                    cosines.update(s, t)
        finally:
            model.train(was_training)
        if n == 0:
            raise ValueError("test_loader yields no samples")
        nan = float("nan")
        metrics = {"accuracy": correct / n, "agreement": nan, "loss": ce_sum / n, "cosine_distance": nan}
        metrics["teacher_accuracy"] = nan
        class_cosine = None
        if agreement is not None:
            result = agreement.compute()
            per_class = cosines.compute()
            class_cosine = per_class.tolist()
            metrics.update(
                agreement=result["agreement"],
                cosine_distance=float(1.0 - per_class.mean()),
                teacher_accuracy=result["teacher_accuracy"],
            )
        return EvalRecord(epoch, step, metrics, "test", class_cosine)

    # -------------------------------------------------------------- loop
    def run(self) -> RunLog:
        from tqdm.auto import tqdm

        if self.seed is not None:
            torch.manual_seed(self.seed)
        run_log, hooks = self.run_log, self.hooks
        bar = tqdm(
            total=self.total_steps,
            desc=self.name,
            unit="step",
            disable=None if self.progress is None else not self.progress,
            dynamic_ncols=True,
            leave=True,
        )
        status = "running"
        try:
            for hook in hooks.train_begin:
                hook(run_log)
            status = self._loop(bar)
        except KeyboardInterrupt:
            self._end(bar, "interrupted")
            if self.raise_on_interrupt:
                raise
            print(
                f"cskd_viz: run {self.name!r} interrupted at step {run_log.progress['step']}; "
                f"the run log is saved with status 'interrupted'",
                file=sys.stderr,
            )
            return run_log
        except BaseException:
            self._end(bar, "failed", quiet=True)
            raise
        self._end(bar, status)
        return run_log

    def _end(self, bar, status: str, quiet: bool = False) -> None:
        bar.close()
        self.run_log.finish(status)
        for hook in self.hooks.train_end:
            if quiet:
                try:
                    hook(self.run_log)
                except Exception:  # noqa: BLE001 - never mask the exception that ended the run
                    pass
            else:
                hook(self.run_log)

    def _loop(self, bar) -> str:
        model, teacher, method, device = self.model, self.teacher, self.method, self.device
        run_log, hooks = self.run_log, self.hooks
        optimizer = torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        lr_factor = _lr_lambda(self.schedule, self.total_steps)
        groups = optimizer.param_groups
        cache = None
        if self.use_cache:
            cache = TeacherLogitCache.build(teacher, self.train_loader.dataset, device)
            loader = with_indices(self.train_loader)
        else:
            loader = self.train_loader
        log_every, total_steps, stop_event = self.log_every, self.total_steps, self.stop_event
        needs_teacher = method.needs_teacher and teacher is not None
        start = last_flush = time.perf_counter()
        flush_interval_s = self.flush_interval_s
        step = 0
        last_record = None
        for epoch in range(self.n_epochs):
            model.train()
            for batch in loader:
                x = batch[0].to(device, non_blocking=True)
                y = batch[1].to(device, non_blocking=True)
                log_now = step == 0 or (step + 1) % log_every == 0 or step + 1 == total_steps
                student_logits = model(x)
                teacher_logits = None
                if teacher is not None and (needs_teacher or log_now):
                    if cache is not None:
                        teacher_logits = cache[batch[2]]
                    else:
                        with torch.no_grad():
                            teacher_logits = teacher(x)
                terms = method(student_logits, teacher_logits, y, extras=log_now)
                loss = total_loss(terms)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                lr = self.lr * lr_factor(step)  # per-step schedule, set by hand: cheaper than an LRScheduler
                for group in groups:
                    group["lr"] = lr
                optimizer.step()
                step += 1
                if log_now:
                    record = self._step_record(
                        step, epoch, student_logits, teacher_logits, y, terms, loss, lr, time.perf_counter() - start
                    )
                    run_log.log_step(record)
                    last_record = record
                    bar.update(step - bar.n)
                    if not bar.disable:
                        bar.set_postfix(_postfix(record.metrics), refresh=False)
                    for hook in hooks.step:
                        hook(record)
                    if time.perf_counter() - last_flush >= flush_interval_s:
                        run_log.flush(background=True)
                        last_flush = time.perf_counter()
                if stop_event is not None and stop_event.is_set():
                    run_log.set_progress(step, epoch)
                    bar.update(step - bar.n)
                    return "interrupted"
                if step >= total_steps:
                    break
            bar.update(step - bar.n)
            record = self._evaluate(epoch, step) if self.test_loader is not None else None
            if record is not None:
                run_log.log_eval(record)
                if not bar.disable and last_record is not None:
                    bar.set_postfix({**_postfix(last_record.metrics), "test": f"{record.metrics['accuracy']:.3f}"})
            run_log.set_progress(step, epoch)
            if time.perf_counter() - last_flush >= flush_interval_s:
                run_log.flush(background=True)
                last_flush = time.perf_counter()
            for hook in hooks.epoch_end:
                hook(epoch, record)
            if stop_event is not None and stop_event.is_set():
                return "interrupted"
            if step >= total_steps:
                break
        return "finished"


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (``torch.quantile``'s default) of a sorted list."""
    pos = q * (len(sorted_values) - 1)
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def _histogram(values: list[float], low: float, high: float, bins: int) -> list[tuple[float, float, int]]:
    """``(bin_left, bin_right, count)`` of ``bins`` equal bins over ``[low, high]`` (ends included)."""
    width = high - low
    counts = [0] * bins
    for v in values:
        counts[min(max(int((v - low) / width * bins), 0), bins - 1) if width > 0 else 0] += 1
    edges = [low + width * i / bins for i in range(bins)] + [high]
    return [(edges[i], edges[i + 1], counts[i]) for i in range(bins)]


def _postfix(metrics: dict) -> dict:
    out = {"loss": f"{metrics['loss']:.3f}", "acc": f"{metrics['train_accuracy']:.2f}"}
    if not math.isnan(metrics.get("agreement", float("nan"))):
        out["agree"] = f"{metrics['agreement']:.2f}"
    if not math.isnan(metrics.get("mean_temperature", float("nan"))):
        out["T"] = f"{metrics['mean_temperature']:.2f}"
    return out


# ----------------------------------------------------------------------------- public trainers


def train_teacher(
    model: nn.Module,
    train_loader: DataLoader,
    test_loader: DataLoader | None = None,
    *,
    epochs: int | None = None,
    max_steps: int | None = None,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    device: str | torch.device = "cpu",
    seed: int | None = None,
    log_every: int = 10,
    callbacks: Sequence[Any] = (),
    stop_event: threading.Event | None = None,
    run_log: RunLog | None = None,
    progress: bool | None = None,
    flush_interval_s: float = 1.0,
    raise_on_interrupt: bool = True,
    name: str | None = None,
) -> RunLog:
    """Train ``model`` with cross-entropy for ``epochs`` epochs or ``max_steps`` steps.

    ``L = CE(z, y)``; SGD with momentum, weight decay and a per-step learning-rate schedule.
    Columns that need a teacher (``agreement``, ``cosine_distance``) are NaN.

    Args:
        model: the network, ``(B, ...) -> (B, C)``; trained in place.
        train_loader: yields ``(x, y)`` batches.
        test_loader: evaluated at the end of each epoch (``evals`` frame), or ``None``.
        epochs: epoch budget; ``max_steps``: step budget (the first one reached ends training).
        lr, momentum, weight_decay: SGD settings; ``schedule``: ``"cosine"``, ``"step"`` or ``"constant"``.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        seed: ``torch.manual_seed`` at the start (the loader keeps its own seeded generator).
        log_every: diagnostics every this many steps (and on step 1).
        callbacks: objects with ``on_train_begin/on_step/on_epoch_end/on_train_end`` (any subset).
        stop_event: a ``threading.Event``; once set, the run ends after the current step.
        run_log: where to record (e.g. a :class:`RunLog` with a directory); an in-memory one by default.
        progress: show a ``tqdm.auto`` bar (``None``: only on a terminal or in a notebook).
        flush_interval_s: while training, write the run log at logged steps and epoch ends, at most
            once per this many seconds (0: every time); it is always written at the end.
        raise_on_interrupt: re-raise ``KeyboardInterrupt`` after saving the log (default) or return it.
        name: label of the progress bar and of an in-memory run log.

    Returns:
        The :class:`RunLog` (status ``"finished"`` or ``"interrupted"``).

    Example:
        >>> from cskd_viz.data import make_loaders
        >>> from cskd_viz.models import get_model
        >>> train, test, info = make_loaders("synthetic", batch_size=32, seed=0)
        >>> net = get_model("mlp_small", info.num_classes, info.input_shape)
        >>> log = train_teacher(net, train, test, max_steps=5, progress=False)
        >>> log.status, int(log.steps.step.iloc[-1]), len(log.evals)
        ('finished', 5, 1)
    """
    return _Run(
        model,
        train_loader,
        test_loader,
        teacher=None,
        method=get_method("ce"),
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule=schedule,
        device=device,
        seed=seed,
        log_every=log_every,
        callbacks=callbacks,
        stop_event=stop_event,
        cache_teacher=False,
        info=None,
        run_log=run_log,
        progress=progress,
        temperature=None,
        flush_interval_s=flush_interval_s,
        raise_on_interrupt=raise_on_interrupt,
        name=name or "teacher",
    ).run()


def distill(
    student: nn.Module,
    teacher: nn.Module,
    train_loader: DataLoader,
    test_loader: DataLoader | None = None,
    *,
    method: str | Method = "cskd_cswt",
    epochs: int | None = None,
    max_steps: int | None = None,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    device: str | torch.device = "cpu",
    seed: int | None = None,
    log_every: int = 10,
    callbacks: Sequence[Any] = (),
    stop_event: threading.Event | None = None,
    cache_teacher: bool | None = None,
    info: Any = None,
    temperature: float | None = None,
    run_log: RunLog | None = None,
    progress: bool | None = None,
    flush_interval_s: float = 1.0,
    raise_on_interrupt: bool = True,
    name: str | None = None,
) -> RunLog:
    """Train ``student`` against a frozen ``teacher`` (``eval()``, ``no_grad``) with a distillation method.

    ``L = w_ce * CE(z_s, y) + w_kd * L_method(z_s, z_t)`` (see :mod:`cskd_viz.methods`). The
    teacher is also used for diagnostics (agreement, per-class cosine, ``d(T)``), so a ``"ce"``
    student with a teacher is the honest baseline of a comparison.

    Args:
        student: trained in place. ``teacher``: never updated.
        train_loader, test_loader: as in :func:`train_teacher`.
        method: a :class:`~cskd_viz.methods.Method` or a registry name (default parameters).
        cache_teacher: compute the teacher's training-set logits once and reuse them. ``None``
            (default): on when the data is known to be unaugmented (``info.augmented`` is False,
            or the dataset is a ``TensorDataset``) and the method uses the teacher every step.
            ``True`` with augmented data is a ``ValueError``.
        info: the :class:`~cskd_viz.data.DatasetInfo` from ``make_loaders`` (for ``augmented``).
        temperature: ``T`` of the diagnostics (per-class cosine, ``d(T)``); the method's by default.
        Other arguments: as in :func:`train_teacher`.

    Returns:
        The :class:`RunLog`.

    Example:
        >>> from cskd_viz.data import make_loaders
        >>> from cskd_viz.models import get_model
        >>> train, test, info = make_loaders("synthetic", batch_size=32, seed=0)
        >>> teacher = get_model("mlp_large", info.num_classes, info.input_shape)
        >>> student = get_model("mlp_small", info.num_classes, info.input_shape)
        >>> log = distill(student, teacher, train, test, method="cskd_cswt", max_steps=5, info=info, progress=False)
        >>> log.config["teacher_cache"], sorted(c for c in log.steps.columns if c.startswith("loss_"))
        (True, ['loss_ce', 'loss_cskd'])
    """
    if isinstance(method, str):
        method = get_method(method)
    if not isinstance(method, Method):
        raise TypeError(f"method must be a Method or one of {method_names()}, got {type(method).__name__}")
    if teacher is None:
        raise ValueError("teacher must be an nn.Module (use train_teacher to train without one)")
    return _Run(
        student,
        train_loader,
        test_loader,
        teacher=teacher,
        method=method,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule=schedule,
        device=device,
        seed=seed,
        log_every=log_every,
        callbacks=callbacks,
        stop_event=stop_event,
        cache_teacher=cache_teacher,
        info=info,
        run_log=run_log,
        progress=progress,
        temperature=temperature,
        flush_interval_s=flush_interval_s,
        raise_on_interrupt=raise_on_interrupt,
        name=name,
    ).run()


# ----------------------------------------------------------------------------- one-call experiments

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, validated on construction (clear ``ValueError``/``TypeError``).

    Attributes:
        dataset: a :mod:`cskd_viz.data` name (``"digits"``, ...).
        student: a :mod:`cskd_viz.models` name: the model this run trains.
        teacher: a model name, or ``None`` to train ``student`` alone with CE (a teacher run).
        teacher_checkpoint: a ``{"model": state_dict}`` file for ``teacher``. ``None``: the teacher
            is trained first for ``teacher_epochs`` (run ``teacher-<arch>-<dataset>-...`` under
            ``runs_dir``) and reused by later runs with the same teacher settings.
        method: ``"ce"``, ``"kd"``, ``"cskd"``, ``"cskd_cswt"`` or ``"dist"``.
        temperature, t_low, t_high: ``T`` and the CSWT range (defaults 4, 2, 6).
        w_ce, w_kd: weights of the CE and method terms.
        epochs, max_steps: budget (at least one; the first reached ends the run).
        teacher_epochs, teacher_lr: budget and learning rate (``None``: ``lr``) of an auto-trained teacher.
        batch_size, lr, momentum, weight_decay, schedule: optimisation.
        seed: seeds the data split, the loader order and the model initialisation.
        log_every: diagnostics every this many steps.
        name: run directory name (``None``: ``<method>-<student>-<dataset>-s<seed>``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        cache_teacher: see :func:`distill` (``None``: automatic).

    Example:
        >>> RunConfig(method="kd", epochs=2).run_name
        'kd-cnn_small-digits-s0'
        >>> RunConfig(temperature=-1)
        Traceback (most recent call last):
        ...
        ValueError: temperature must be > 0, got -1.0
    """

    dataset: str = "digits"
    student: str = "cnn_small"
    teacher: str | None = "cnn_large"
    teacher_checkpoint: str | None = None
    method: str = "cskd_cswt"
    temperature: float = 4.0
    t_low: float = 2.0
    t_high: float = 6.0
    w_ce: float = 1.0
    w_kd: float = 1.0
    epochs: int | None = 10
    max_steps: int | None = None
    teacher_epochs: int = 20
    teacher_lr: float | None = None
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0
    log_every: int = 10
    name: str | None = None
    device: str = "cpu"
    cache_teacher: bool | None = None

    def __post_init__(self) -> None:
        from cskd_viz._validation import check_scalar, check_temperature_range
        from cskd_viz.data import DATASETS
        from cskd_viz.models import MODELS

        def choice(value, options, label):
            if value not in options:
                raise ValueError(f"{label} must be one of {sorted(options)}, got {value!r}")

        choice(self.dataset, DATASETS, "dataset")
        choice(self.student, MODELS, "student")
        if self.teacher is not None:
            choice(self.teacher, MODELS, "teacher")
        choice(self.method, method_names(), "method")
        if self.teacher is None:
            if self.method != "ce":
                raise ValueError(f"method {self.method!r} needs a teacher: set teacher (e.g. 'cnn_large')")
            if self.teacher_checkpoint is not None:
                raise ValueError("teacher_checkpoint is given but teacher is None: name the teacher architecture")
        if self.teacher_checkpoint is not None:
            if not isinstance(self.teacher_checkpoint, (str, os.PathLike)):
                raise TypeError(f"teacher_checkpoint must be a path, got {type(self.teacher_checkpoint).__name__}")
            if not Path(self.teacher_checkpoint).is_file():
                raise ValueError(f"teacher_checkpoint {os.fspath(self.teacher_checkpoint)!r} is not a file")
            object.__setattr__(self, "teacher_checkpoint", os.fspath(self.teacher_checkpoint))
        for label in ("temperature", "lr", "w_ce", "w_kd", "momentum", "weight_decay"):
            positive = label in ("temperature", "lr")
            object.__setattr__(self, label, check_scalar(getattr(self, label), label, positive=positive))
        for label in ("w_ce", "w_kd", "weight_decay"):
            if getattr(self, label) < 0:
                raise ValueError(f"{label} must be >= 0, got {getattr(self, label)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.teacher_lr is not None:
            object.__setattr__(self, "teacher_lr", check_scalar(self.teacher_lr, "teacher_lr"))
        t_low, t_high = check_temperature_range(self.t_low, self.t_high)
        object.__setattr__(self, "t_low", t_low)
        object.__setattr__(self, "t_high", t_high)
        _positive_int(self.epochs, "epochs", allow_none=True)
        _positive_int(self.max_steps, "max_steps", allow_none=True)
        if self.epochs is None and self.max_steps is None:
            raise ValueError("give epochs or max_steps (or both)")
        for label in ("teacher_epochs", "batch_size", "log_every"):
            _positive_int(getattr(self, label), label)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        choice(self.schedule, SCHEDULES, "schedule")
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {self.device!r}")
        if self.name is not None and (not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name)):
            raise ValueError(
                f"name must start with a letter or digit and use only letters, digits and . _ + = -, got {self.name!r}"
            )
        if self.cache_teacher is not None and not isinstance(self.cache_teacher, bool):
            raise TypeError(f"cache_teacher must be True, False or None, got {self.cache_teacher!r}")

    @property
    def cswt(self) -> bool:
        """Whether the method uses cosine-similarity-weighted temperatures."""
        return self.method == "cskd_cswt"

    @property
    def run_name(self) -> str:
        """``name``, or ``<method>-<student>-<dataset>-s<seed>``."""
        return self.name or f"{self.method}-{self.student}-{self.dataset}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``cswt`` (what goes into the run's ``config.json``)."""
        return {**dataclasses.asdict(self), "name": self.run_name, "cswt": self.cswt}

    def make_method(self) -> Method:
        """The configured method object."""
        candidates = {
            "temperature": self.temperature,
            "t_low": self.t_low,
            "t_high": self.t_high,
            "w_ce": self.w_ce,
            "w_kd": self.w_kd,
        }
        allowed = method_parameters(self.method)
        return get_method(self.method, **{k: v for k, v in candidates.items() if k in allowed})

    def teacher_config(self) -> RunConfig:
        """The config of the CE run that trains this config's teacher (when no checkpoint is given)."""
        if self.teacher is None:
            raise ValueError("this config has no teacher")
        key = {
            k: getattr(self, k)
            for k in ("dataset", "teacher", "teacher_epochs", "batch_size", "momentum", "weight_decay", "schedule")
        }
        key.update(lr=self.teacher_lr or self.lr, seed=self.seed)
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
        return dataclasses.replace(
            self,
            student=self.teacher,
            teacher=None,
            teacher_checkpoint=None,
            method="ce",
            w_ce=1.0,
            epochs=self.teacher_epochs,
            max_steps=None,
            lr=self.teacher_lr or self.lr,
            name=f"teacher-{self.teacher}-{self.dataset}-s{self.seed}-{digest}",
            cache_teacher=None,
        )


def _unique_dir(root: Path, name: str, overwrite: bool) -> Path:
    path = root / name
    if not path.exists():
        return path
    if overwrite:
        if not is_run_dir(path):
            raise ValueError(f"{path} exists and is not a cskd_viz run directory: refusing to overwrite it")
        import shutil

        shutil.rmtree(path)
        return path
    k = 2
    while (root / f"{name}-{k}").exists():
        k += 1
    return root / f"{name}-{k}"


def _reusable_teacher(path: Path, config: RunConfig) -> bool:
    if not (path / "model.pt").is_file() or not is_run_dir(path):
        return False
    try:
        log = load_run(path)
    except ValueError:
        return False
    wanted = config.to_dict()
    return log.status == "finished" and all(log.config.get(k) == v for k, v in wanted.items() if k != "device")


def run_experiment(
    config: RunConfig,
    runs_dir: str | os.PathLike = "runs",
    callbacks: Sequence[Any] = (),
    stop_event: threading.Event | None = None,
    *,
    progress: bool | None = None,
    overwrite: bool = False,
    raise_on_interrupt: bool = True,
) -> RunLog:
    """Run one configured experiment end to end and return its :class:`RunLog`.

    Steps: seed; build the loaders (``make_loaders(dataset, batch_size, seed)``); get the teacher
    (load ``teacher_checkpoint``, reuse a finished auto-teacher run under ``runs_dir`` with the
    same settings, or train one now with CE and save it); build the student; train it
    (:func:`distill`, or :func:`train_teacher` when ``teacher`` is ``None``), logging to
    ``runs_dir/<name>/``; save the trained weights as ``model.pt`` (``{"model": state_dict}``).

    Args:
        config: the :class:`RunConfig`.
        runs_dir: parent directory of run directories.
        callbacks: training callbacks (also see the auto-teacher's training, if any).
        stop_event: ends the run after the current step (status ``"interrupted"``). If it is set
            while an auto-teacher trains, the teacher's interrupted run log is returned.
        progress: progress bars (``None``: automatic).
        overwrite: replace an existing run directory of the same name (only if it is a run);
            otherwise a ``-2``, ``-3``, ... suffix keeps both.
        raise_on_interrupt: see :func:`distill`.

    Example:
        >>> import tempfile
        >>> config = RunConfig(student="mlp_small", teacher="mlp_large", method="kd", max_steps=3,
        ...                    teacher_epochs=1, epochs=None)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     log = run_experiment(config, runs_dir=tmp, progress=False)
        ...     log.status, log.config["method"], (log.path / "model.pt").is_file()
        ('finished', 'kd', True)
    """
    from cskd_viz.data import make_loaders
    from cskd_viz.models import get_model

    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ValueError(f"runs_dir {runs_dir} exists and is not a directory")
    device = resolve_device(config.device)
    train_loader, test_loader, info = make_loaders(config.dataset, batch_size=config.batch_size, seed=config.seed)

    teacher = None
    teacher_source = None
    if config.teacher is not None:
        teacher = get_model(config.teacher, info.num_classes, info.input_shape)
        if config.teacher_checkpoint is not None:
            teacher_source = config.teacher_checkpoint
        else:
            teacher_run = config.teacher_config()
            teacher_dir = runs_dir / teacher_run.run_name
            if not _reusable_teacher(teacher_dir, teacher_run):
                teacher_log = run_experiment(
                    teacher_run,
                    runs_dir,
                    callbacks,
                    stop_event,
                    progress=progress,
                    overwrite=True,
                    raise_on_interrupt=raise_on_interrupt,
                )
                if teacher_log.status != "finished":
                    return teacher_log
            teacher_source = str(teacher_dir / "model.pt")
        load_checkpoint(teacher, teacher_source, map_location="cpu")

    torch.manual_seed(config.seed)
    student = get_model(config.student, info.num_classes, info.input_shape)
    path = _unique_dir(runs_dir, config.run_name, overwrite)
    run_log = RunLog(
        {**config.to_dict(), "name": path.name, "teacher_source": teacher_source, "info": dataclasses.asdict(info)},
        path=path,
    )
    common = dict(
        epochs=config.epochs,
        max_steps=config.max_steps,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        schedule=config.schedule,
        device=device,
        seed=config.seed,
        log_every=config.log_every,
        callbacks=callbacks,
        stop_event=stop_event,
        run_log=run_log,
        progress=progress,
        raise_on_interrupt=raise_on_interrupt,
        name=path.name,
    )
    try:
        if teacher is None:
            train_teacher(student, train_loader, test_loader, **common)
        else:
            distill(
                student,
                teacher,
                train_loader,
                test_loader,
                method=config.make_method(),
                cache_teacher=config.cache_teacher,
                info=info,
                temperature=config.temperature,
                **common,
            )
    finally:
        if run_log.status in ("finished", "interrupted"):
            save_checkpoint(student, path / "model.pt")
    return run_log
