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

**Data parallelism** (``torchrun --nproc_per_node=N``, see ``docs/distributed.md``).
:func:`run_experiment` initialises ``torch.distributed`` from torchrun's environment
(:func:`distributed_session`: ``gloo`` on CPU, ``nccl`` on CUDA with ``cuda:LOCAL_RANK``) and
destroys the process group at the end if it created it. Whenever a process group with ``N > 1``
ranks is initialised, :func:`train_teacher` and :func:`distill`:

- shard the training loader with a ``DistributedSampler`` (:func:`shard_loader`; ``set_epoch``
  every epoch; ``drop_last=True`` so every rank has the same number of samples, hence the same
  batch sizes, which the global-batch loss needs); ``batch_size`` is the *local* batch size;
- wrap the trained model in ``DistributedDataParallel`` (the frozen teacher is not wrapped);
- with ``global_batch=True`` pass the default group to the method, so CSKD is computed on the
  global batch (:mod:`cskd_viz.distributed`); without torch.distributed the flag only warns;
- build the teacher-logit cache for the *whole* training set on every rank (a rank's samples
  change every epoch, so a per-rank cache would miss), from the same teacher weights;
- log on rank 0 only: one progress bar, step records whose ``loss``, ``loss_*``,
  ``train_accuracy`` and ``agreement`` are averaged over all ranks' batches (one small
  all-reduce per logged step), while ``class_cosine``, ``cosine_distance`` and the CSWT
  temperatures describe rank 0's local batch; evaluation on the full test set, callbacks and
  run-log writes happen on rank 0 only (other ranks return an in-memory log with the final status);
- check ``stop_event`` at logged steps and epoch ends, agreed over all ranks (any rank's stop
  stops all), so every rank leaves the loop at the same step.

:func:`run_experiment` trains an auto-teacher the same way (sharded, DDP), decides on rank 0
whether a teacher run can be reused and which run directory to use, writes files on rank 0 only
and broadcasts the teacher's weights from rank 0, so exactly one run log (and one ``model.pt``)
is written per run, and the file system need not be shared between nodes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler, TensorDataset

from cskd_viz.diagnostics import per_class_cosine
from cskd_viz.distributed import default_group, get_rank, get_world_size
from cskd_viz.methods import Method, get_method, method_names, method_parameters, total_loss
from cskd_viz.runs import EvalRecord, RunLog, StepRecord, is_run_dir, load_run

__all__ = [
    "Callback",
    "LambdaCallback",
    "IndexedDataset",
    "TeacherLogitCache",
    "RunConfig",
    "with_indices",
    "shard_loader",
    "distributed_session",
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
    common = _loader_options(loader)
    dataset = IndexedDataset(loader.dataset)
    if loader.batch_size is None:  # a custom batch_sampler
        return DataLoader(dataset, batch_sampler=loader.batch_sampler, **common)
    return DataLoader(
        dataset, batch_size=loader.batch_size, sampler=loader.sampler, drop_last=loader.drop_last, **common
    )


def _loader_options(loader: DataLoader) -> dict[str, Any]:
    """The DataLoader arguments a rebuilt loader keeps (workers, collate, generator, ...)."""
    options = dict(
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        persistent_workers=loader.persistent_workers,
    )
    if loader.num_workers > 0:
        options["prefetch_factor"] = loader.prefetch_factor
    return options


def shard_loader(
    loader: DataLoader, *, num_replicas: int | None = None, rank: int | None = None, seed: int = 0
) -> DataLoader:
    """This rank's share of a training loader: the same loader over a ``DistributedSampler``.

    Rank ``r`` of ``N`` gets the samples ``perm[r::N]`` of a seeded permutation ``perm`` of the
    dataset (``seed + epoch``: call ``loader.sampler.set_epoch(epoch)`` every epoch, as the trainer
    does), after dropping its last ``len(dataset) % N`` entries, so every rank has the same number
    of samples and therefore the same sequence of batch sizes (global-batch CSKD needs equal local
    batch sizes). The order is shuffled when ``loader`` shuffles (a ``RandomSampler``) and kept
    when it does not (a ``SequentialSampler``); batch size, ``drop_last`` (unless the shard is
    smaller than one batch), workers, collate function and generator are kept.

    Args:
        loader: a DataLoader with a ``RandomSampler``/``SequentialSampler`` (one already built on a
            ``DistributedSampler`` is returned unchanged).
        num_replicas: ``N``; the process group's size by default (1 outside torch.distributed).
        rank: ``r``; this process's rank by default.
        seed: seed of the permutation (the same on every rank).

    Returns:
        A DataLoader yielding ``ceil(floor(len(dataset) / N) / batch_size)`` batches per epoch
        (or ``floor`` with ``drop_last``).

    Raises:
        ValueError: a custom ``batch_sampler`` or another sampler type (build that loader with a
            ``DistributedSampler`` yourself), or a bad ``num_replicas``/``rank``.

    Example:
        >>> data = TensorDataset(torch.arange(10.0), torch.zeros(10, dtype=torch.long))
        >>> loader = DataLoader(data, batch_size=2, shuffle=True)
        >>> shards = [shard_loader(loader, num_replicas=3, rank=r) for r in range(3)]
        >>> [len(s.sampler) for s in shards], [len(s) for s in shards]
        ([3, 3, 3], [2, 2, 2])
        >>> seen = [int(v) for s in shards for x, _ in s for v in x]
        >>> len(seen), len(set(seen))  # disjoint shards; one sample dropped this epoch
        (9, 9)
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(f"loader must be a torch DataLoader, got {type(loader).__name__}")
    if isinstance(loader.sampler, DistributedSampler):
        return loader
    num_replicas = get_world_size() if num_replicas is None else num_replicas
    rank = get_rank() if rank is None else rank
    _positive_int(num_replicas, "num_replicas")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be an int in [0, {num_replicas}), got {rank!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if loader.batch_size is None:
        raise ValueError(
            "loader uses a custom batch_sampler: shard it yourself (e.g. a DistributedSampler inside the batch sampler)"
        )
    if not isinstance(loader.sampler, (RandomSampler, SequentialSampler)):
        raise ValueError(
            f"cannot shard a loader whose sampler is a {type(loader.sampler).__name__}: "
            "build it with a torch.utils.data.DistributedSampler yourself"
        )
    sampler = DistributedSampler(
        loader.dataset,
        num_replicas=num_replicas,
        rank=rank,
        shuffle=isinstance(loader.sampler, RandomSampler),
        seed=seed,
        drop_last=True,
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        # A shard smaller than one batch keeps its only, partial batch (as make_loaders does).
        drop_last=loader.drop_last and len(sampler) >= loader.batch_size,
        **_loader_options(loader),
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


def _world() -> int:
    """The number of data-parallel ranks (1 outside torch.distributed)."""
    return get_world_size()


@contextlib.contextmanager
def distributed_session(device: str | torch.device = "cpu") -> Iterator[int]:
    """Initialise ``torch.distributed`` from torchrun's environment for the duration of a block.

    Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE > 1`` in the environment) and when no
    process group exists yet, this calls ``init_process_group`` (``env://``: ``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) with ``nccl`` when ``device`` is CUDA (after
    ``torch.cuda.set_device(LOCAL_RANK)``, or the index of ``"cuda:N"``) and ``gloo`` otherwise,
    and destroys the group when the block ends. Otherwise (one process, or a group the caller
    created) it does nothing. Nested sessions are no-ops.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``: picks the backend.

    Yields:
        The world size (1 without torch.distributed).

    Example:
        >>> with distributed_session("cpu") as world:  # a plain process: nothing to do
        ...     world
        1
    """
    import torch.distributed as dist

    device = resolve_device(device)
    raw = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    try:
        wanted = int(raw)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE must be an integer, got {raw!r}") from None
    if wanted <= 1 or not dist.is_available() or dist.is_initialized():
        yield _world()
        return
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={wanted} but {', '.join(missing)} is not set: launch with torchrun "
            "(e.g. torchrun --standalone --nproc_per_node=2 ...), which sets them"
        )
    if device.type == "cuda":
        torch.cuda.set_device(device.index if device.index is not None else int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield _world()
    finally:
        dist.destroy_process_group()


def _process_device(device: torch.device) -> torch.device:
    """``cuda`` without an index means this process's current device (``cuda:LOCAL_RANK`` under torchrun)."""
    if device.type == "cuda" and device.index is None and _world() > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _on_main(fn):
    """Run ``fn()`` on rank 0 only and give its (picklable) result to every rank.

    An exception on rank 0 is raised on every rank: a ``ValueError`` with the same message (so the
    CLI reports it everywhere), anything else as a ``RuntimeError`` on the other ranks.
    """
    if _world() == 1:
        return fn()
    import torch.distributed as dist

    payload: list[Any] = [None]
    error = None
    if get_rank() == 0:
        try:
            payload = [("ok", fn())]
        except Exception as err:  # noqa: BLE001 - re-raised below, after the other ranks learn of it
            error = err
            payload = [("error", type(err).__name__, str(err))]
    dist.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    if payload[0][0] == "error":
        _, kind, message = payload[0]
        if kind == "ValueError":
            raise ValueError(message)
        raise RuntimeError(f"rank 0 failed: {kind}: {message}")
    return payload[0][1]


def _broadcast_module(module: nn.Module) -> None:
    """Overwrite every rank's parameters and buffers with rank 0's (in place; no-op in one process)."""
    if _world() == 1:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def _all_reduce_sum(values: Tensor) -> Tensor:
    import torch.distributed as dist

    values = values.contiguous()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


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
    """Load a checkpoint into ``model`` strictly, in any format :func:`cskd_viz.models.load_teacher` reads
    (``{"model": state_dict}``, ``{"state_dict": ...}`` or a bare state dict; ``module.`` prefixes stripped).

    Raises:
        ValueError: missing file, unreadable file, or keys/shapes that do not match ``model``
            (the message names them).
    """
    from cskd_viz.models.checkpoints import extract_state_dict, state_dict_mismatches

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"checkpoint {path} cannot be read: {err}") from None
    state = extract_state_dict(checkpoint, source=f"checkpoint {path}")
    problems = state_dict_mismatches(model, state)
    if problems:
        raise ValueError(f"checkpoint {path} does not match {type(model).__name__}: {problems}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # anything the checks above did not foresee
        raise ValueError(f"checkpoint {path} does not match {type(model).__name__}: {err}") from err
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
        global_batch: bool = False,
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
        if not isinstance(global_batch, bool):
            raise TypeError(f"global_batch must be a bool, got {type(global_batch).__name__}")
        self.device = _process_device(resolve_device(device))
        self.world = _world()
        self.main = get_rank() == 0 if self.world > 1 else True
        self.group = None
        if global_batch:
            if self.world == 1:
                warnings.warn(
                    "global_batch=True has no effect in a single process: launch with torchrun "
                    "(--nproc_per_node=N) for global-batch CSKD over N processes",
                    UserWarning,
                    stacklevel=3,
                )
            elif not method.supports_group:
                warnings.warn(
                    f"global_batch=True changes only the CSKD methods; {method.name!r} is computed on each "
                    "rank's local batch (for CE and KD, means of per-sample terms, that is the same thing)",
                    UserWarning,
                    stacklevel=3,
                )
            else:
                self.group = default_group()
        if self.world > 1:
            train_loader = shard_loader(train_loader, seed=seed if seed is not None else 0)
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
        self.hooks = _Hooks(callbacks if self.main else ())  # callbacks, bars and files: rank 0 only
        self.stop_event = stop_event
        self.raise_on_interrupt = raise_on_interrupt
        self.progress = progress if self.main else False

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
            "world_size": self.world,
            "global_batch": global_batch,
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
            run_log.config["world_size"] = self.world
        self.run_log = run_log
        self.name = name or run_log.name
        self._test_teacher_logits: list[Tensor] | None = None

    # -------------------------------------------------------------- diagnostics
    @torch.no_grad()
    def _step_record(
        self, step, epoch, student_logits, teacher_logits, targets, terms, loss, lr, elapsed, reduced=None
    ):
        """Diagnostics of one logged step. Everything is moved to the CPU first (one transfer;
        a no-op for CPU runs), then computed with few, small operations. ``reduced`` (from
        :meth:`_reduce_step`) replace the local loss, accuracy and agreement values."""
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
        if reduced is not None:
            metrics.update(reduced)
        metrics["lr"] = lr
        metrics["elapsed_s"] = elapsed
        return StepRecord(step, epoch, metrics, class_cosine, stats, hist)

    @torch.no_grad()
    def _reduce_step(self, student_logits, teacher_logits, targets, terms, loss, stop: bool):
        """One all-reduce at a logged step (every rank calls it): the loss terms, accuracy and
        agreement over all ranks' batches, and whether any rank wants to stop."""
        keys = [k for k in terms if k.startswith("loss_")]
        n = targets.shape[0]
        pred = student_logits.detach().argmax(1)
        parts = [loss.detach(), *(terms[k].detach() for k in keys)]
        counts = [(pred == targets).sum()]
        counts.append((pred == teacher_logits.argmax(1)).sum() if teacher_logits is not None else pred.new_zeros(()))
        values = torch.stack([p.double() * n for p in parts] + [c.double() for c in counts])
        values = torch.cat([values, values.new_tensor([float(n), float(stop)])])
        out = _all_reduce_sum(values).tolist()
        total = out[-2]
        scalars = {"loss": out[0] / total, **{k: out[1 + i] / total for i, k in enumerate(keys)}}
        scalars["train_accuracy"] = out[len(parts)] / total
        if teacher_logits is not None:
            scalars["agreement"] = out[len(parts) + 1] / total
        return scalars, out[-1] > 0

    def _any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (a collective; just ``flag`` in one process)."""
        if self.world == 1:
            return flag
        return bool(_all_reduce_sum(torch.tensor([float(flag)], device=self.device)).item() > 0)

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
            if self.main:
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
        if not self.main:  # other ranks write nothing: only the status is kept, in memory
            self.run_log.status = status
            return
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
        run_log, hooks, main, process_group = self.run_log, self.hooks, self.main, self.group
        distributed = self.world > 1
        train_model = model
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            train_model = DistributedDataParallel(model)  # the frozen teacher needs no wrapper
        optimizer = torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        lr_factor = _lr_lambda(self.schedule, self.total_steps)
        groups = optimizer.param_groups
        cache = None
        if self.use_cache:
            # The whole training set on every rank: a rank's shard changes every epoch.
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
        stop_all = False
        sampler = getattr(loader, "sampler", None)
        for epoch in range(self.n_epochs):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)  # a new shuffle per epoch for DistributedSampler
            model.train()
            for batch in loader:
                x = batch[0].to(device, non_blocking=True)
                y = batch[1].to(device, non_blocking=True)
                log_now = step == 0 or (step + 1) % log_every == 0 or step + 1 == total_steps
                student_logits = train_model(x)
                teacher_logits = None
                if teacher is not None and (needs_teacher or log_now):
                    if cache is not None:
                        teacher_logits = cache[batch[2]]
                    else:
                        with torch.no_grad():
                            teacher_logits = teacher(x)
                terms = method(student_logits, teacher_logits, y, extras=log_now, group=process_group)
                loss = total_loss(terms)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                lr = self.lr * lr_factor(step)  # per-step schedule, set by hand: cheaper than an LRScheduler
                for group in groups:
                    group["lr"] = lr
                optimizer.step()
                step += 1
                if log_now and distributed:
                    wants_stop = stop_event is not None and stop_event.is_set()
                    scalars, stop_all = self._reduce_step(student_logits, teacher_logits, y, terms, loss, wants_stop)
                if log_now and main:
                    record = self._step_record(
                        step,
                        epoch,
                        student_logits,
                        teacher_logits,
                        y,
                        terms,
                        loss,
                        lr,
                        time.perf_counter() - start,
                        scalars if distributed else None,
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
                # Under DDP the ranks agree on stopping at logged steps only (no collective on others).
                stop = (log_now and stop_all) if distributed else stop_event is not None and stop_event.is_set()
                if stop:
                    run_log.set_progress(step, epoch)
                    bar.update(step - bar.n)
                    return "interrupted"
                if step >= total_steps:
                    break
            bar.update(step - bar.n)
            record = self._evaluate(epoch, step) if self.test_loader is not None and main else None
            if record is not None:
                run_log.log_eval(record)
                if not bar.disable and last_record is not None:
                    bar.set_postfix({**_postfix(last_record.metrics), "test": f"{record.metrics['accuracy']:.3f}"})
            run_log.set_progress(step, epoch)
            if main and time.perf_counter() - last_flush >= flush_interval_s:
                run_log.flush(background=True)
                last_flush = time.perf_counter()
            for hook in hooks.epoch_end:
                hook(epoch, record)
            if self._any_rank(stop_event is not None and stop_event.is_set()):
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
    global_batch: bool = False,
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
        global_batch: under torch.distributed (``N > 1`` ranks), compute the CSKD loss on the
            global batch of all ranks (``group=`` of :func:`cskd_viz.losses.cskd_loss`) instead of
            each rank's local batch. In one process it changes nothing (a warning says so); for
            methods other than CSKD it changes nothing either (a warning says so).
        Other arguments: as in :func:`train_teacher` (see the module docstring for what changes
        under torch.distributed).

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
        global_batch=global_batch,
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
        global_batch: under ``torchrun`` with ``N > 1`` processes, CSKD on the global batch of all
            processes (``batch_size`` is always the per-process batch); no effect in one process.

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
    global_batch: bool = False

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
        if not isinstance(self.global_batch, bool):
            raise TypeError(f"global_batch must be True or False, got {self.global_batch!r}")

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
            global_batch=False,
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
    # device and global_batch do not change what a CE teacher run learns (runs older than the
    # global_batch field lack it).
    return log.status == "finished" and all(
        log.config.get(k) == v for k, v in wanted.items() if k not in ("device", "global_batch")
    )


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

    Under ``torchrun`` (``WORLD_SIZE > 1``) every process calls this with the same config: it
    initialises the process group (:func:`distributed_session`) unless one exists, trains with
    DDP on sharded data, and only rank 0 writes the run directory and ``model.pt`` (see the
    module docstring). Every rank returns a :class:`RunLog` with the same status; rank 0's holds
    the records and its ``path``, the others' are in memory.

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
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ValueError(f"runs_dir {runs_dir} exists and is not a directory")
    resolve_device(config.device)
    with distributed_session(config.device):
        return _run_experiment(
            config,
            runs_dir,
            callbacks,
            stop_event,
            progress=progress,
            overwrite=overwrite,
            raise_on_interrupt=raise_on_interrupt,
        )


def _run_experiment(
    config: RunConfig,
    runs_dir: Path,
    callbacks: Sequence[Any],
    stop_event: threading.Event | None,
    *,
    progress: bool | None,
    overwrite: bool,
    raise_on_interrupt: bool,
) -> RunLog:
    """:func:`run_experiment` once the process group (if any) exists."""
    from cskd_viz.data import make_loaders
    from cskd_viz.models import get_model

    device = _process_device(resolve_device(config.device))
    distributed = _world() > 1
    main = get_rank() == 0 if distributed else True
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
            # Decided on rank 0 (the one that writes runs) so that every rank takes the same branch.
            if not _on_main(lambda: _reusable_teacher(teacher_dir, teacher_run)):
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

        def load_teacher() -> None:
            load_checkpoint(teacher, teacher_source, map_location="cpu")

        _on_main(load_teacher)  # under DDP: read on rank 0, weights broadcast to the others
        if distributed:
            _broadcast_module(teacher.to(device))

    torch.manual_seed(config.seed)
    student = get_model(config.student, info.num_classes, info.input_shape)
    path = _on_main(lambda: _unique_dir(runs_dir, config.run_name, overwrite))
    run_log = RunLog(
        {**config.to_dict(), "name": path.name, "teacher_source": teacher_source, "info": dataclasses.asdict(info)},
        path=path if main else None,
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
                global_batch=config.global_batch,
                **common,
            )
    finally:
        if main and run_log.status in ("finished", "interrupted"):
            save_checkpoint(student, path / "model.pt")
    return run_log
