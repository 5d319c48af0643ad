"""The trainer's side of training checkpoints: what goes in, when, and how a run continues from one.

The file format and the safe reading are :mod:`cskd_viz.training.resume`; this module takes the
state out of a running :class:`~cskd_viz.training.loop._Trainer` and puts it back.

**Consistency with the run log.** Before a checkpoint is written, the monitor's pending steps are
summarised and the run log is flushed synchronously, so every step up to the checkpoint's is on
disk before the checkpoint exists. A resumed run drops the logged rows after the checkpoint's step
(:meth:`cskd_viz.runs.RunLog.reopen`, via :func:`~cskd_viz.training.resume_log.reopen_run_log`) and
continues with the next step: no step is missing or logged twice. The checkpoint also holds the
monitor's ``elapsed_s``, from which the resumed run's ``elapsed_s`` goes on (the total training time).

**Under DDP** every rank takes part (its RNG states are gathered, one set per rank); rank 0 writes
the file. On resuming, rank 0 reads it and broadcasts it; each rank restores its own RNG states.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cskd_viz.training.resume import (
    ResumeError,
    check_fingerprint,
    data_generators,
    read_checkpoint,
    rng_state,
    set_rng_state,
    write_checkpoint,
)

__all__ = ["Checkpointing", "as_checkpointing"]


@dataclasses.dataclass
class Checkpointing:
    """Where a trainer writes its checkpoints, and whether it continues from the newest one.

    Attributes:
        directory: the checkpoint directory (``<run>/checkpoints`` under :func:`run_experiment`).
        resume: continue from the newest readable checkpoint there (a ``ResumeError`` if none).
        config: the run's settings beside the trainer's (a ``RunConfig``'s fields), stored in every
            checkpoint and compared on resuming.
        loaded: a checkpoint already read (``(state, path)``), e.g. by ``run_experiment``'s check.
    """

    directory: Path
    resume: bool = False
    config: Mapping[str, Any] | None = None
    loaded: tuple[dict[str, Any], Path] | None = None


def as_checkpointing(checkpoint_dir: Any, resume: bool) -> Checkpointing | None:
    """The :class:`Checkpointing` of ``distill``/``train_teacher``'s ``checkpoint_dir`` and ``resume``."""
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be True or False, got {resume!r}")
    if checkpoint_dir is None:
        if resume:
            raise ValueError("resume=True needs checkpoint_dir: the directory of the run's checkpoints")
        return None
    if isinstance(checkpoint_dir, Checkpointing):
        return dataclasses.replace(checkpoint_dir, resume=checkpoint_dir.resume or resume)
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir must be a path or None, got {type(checkpoint_dir).__name__}")
    return Checkpointing(Path(checkpoint_dir), resume=resume)


def fingerprint(trainer: Any) -> dict[str, Any]:
    """The settings that decide what ``trainer`` computes (compared on resuming)."""
    s, method = trainer.settings, trainer.method
    fields = ("epochs", "max_steps", "lr", "momentum", "weight_decay", "schedule", "seed", "log_every", "amp")
    values: dict[str, Any] = {name: getattr(s, name) for name in fields}
    values.update(
        lr_milestones=list(s.lr_milestones) if s.lr_milestones is not None else None,
        global_batch=trainer.group is not None,
        diagnostic_temperature=trainer.temperature,
        method=method.name,
        method_params=dict(method.params()),
        model=type(trainer.model).__name__,
        steps_per_epoch=len(trainer.train_loader),
        world_size=trainer.world,
        teacher_cache=trainer.use_cache,
    )
    return values


def _gather(value: Any, world: int) -> list[Any]:
    if world == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, value)
    return out


def save(trainer: Any, optimizer: torch.optim.Optimizer, loader: Any) -> Path | None:
    """Write a checkpoint at the end of ``trainer.epoch`` (every rank calls this; rank 0 writes)."""
    rng = _gather(rng_state(data_generators(loader)), trainer.world)
    if not trainer.main:
        return None
    if trainer.monitor is not None:
        trainer.monitor.latest_record()  # the pending steps' records reach the run log ...
    trainer.run_log.flush()  # ... and the disk, before the checkpoint says they exist
    state = {
        "epoch": trainer.epoch,
        "step": trainer.step,
        "num_classes": trainer.monitor.num_classes,
        "elapsed_s": trainer.monitor.elapsed_s,  # training time so far: a resumed run's elapsed_s goes on from it
        "model": trainer.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": trainer.precision.state_dict(),
        "rng": rng,
        "fingerprint": fingerprint(trainer),
        "config": dict(trainer.checkpointing.config or {}),
    }
    return write_checkpoint(trainer.checkpointing.directory, state)


def load(trainer: Any) -> tuple[dict[str, Any], Path] | None:
    """The checkpoint ``trainer`` resumes from (read on rank 0, broadcast), checked against its settings."""
    plan = trainer.checkpointing
    if plan is None or not plan.resume:
        return None
    loaded = plan.loaded
    if trainer.main and loaded is None:
        loaded = read_checkpoint(plan.directory)
    if trainer.world > 1:
        import torch.distributed as dist

        box = [loaded]
        dist.broadcast_object_list(box, src=0)
        loaded = box[0]
    state, path = loaded
    check_fingerprint(state["fingerprint"], fingerprint(trainer), f"checkpoint {path}")
    return state, path


def restore(
    trainer: Any, state: Mapping[str, Any], optimizer: torch.optim.Optimizer, loader: Any, source: str = "checkpoint"
) -> int:
    """Put ``state`` back into ``trainer`` (model, optimiser, scaler, step, RNG states); the epoch to start at.

    Weights or optimiser state that do not fit (another model under the same class name) are a
    :class:`ResumeError` naming ``source``.
    """
    try:
        trainer.model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ResumeError(f"{source} does not fit this run's model or optimiser ({first})") from None
    trainer.precision.load_state_dict(state["scaler"])
    trainer.step, trainer.epoch = int(state["step"]), int(state["epoch"])
    rng = state["rng"]
    set_rng_state(rng[trainer.rank] if len(rng) > 1 else rng[0], data_generators(loader))
    return trainer.epoch + 1
