"""``run_experiment``: one configured run end to end (data, teacher, run directory, training, ``model.pt``).

Under ``torchrun`` every process calls it with the same config: rank 0 decides whether a teacher
run can be reused and which run directory to use, writes files, and broadcasts the teacher's
weights, so exactly one run log (and one ``model.pt``) is written per run and the file system need
not be shared between nodes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cskd_viz.distributed import (
    broadcast_module,
    distributed_session,
    get_rank,
    get_world_size,
    on_main,
    process_device,
    resolve_device,
)
from cskd_viz.models.checkpoints import CheckpointError, check_state_dict, extract_state_dict, read_checkpoint
from cskd_viz.runs import RunLog, is_run_dir, load_run
from cskd_viz.runs.ownership import RunClaim, claim_new_dir
from cskd_viz.runs.records import reason_of
from cskd_viz.training.checkpointing import Checkpointing
from cskd_viz.training.checkpoints import load_checkpoint
from cskd_viz.training.config import RunConfig
from cskd_viz.training.faults import add_note
from cskd_viz.training.loop import distill, train_teacher
from cskd_viz.training.resume import CHECKPOINT_DIR, RESUME_IGNORED, ResumeError, check_fingerprint
from cskd_viz.training.resume import read_checkpoint as read_training_checkpoint
from cskd_viz.training.resume_log import reopen_run_log

__all__ = ["run_experiment"]


def _unique_dir(root: Path, name: str, overwrite: bool, claims: list[RunClaim]) -> Path:
    """Create and lock a new run directory (:func:`~cskd_viz.runs.ownership.claim_new_dir`): ``root/name``
    or, taken, ``name-2``, ``name-3``, ...; with ``overwrite`` ``root/name`` cleared, refused while
    another process writes it. The lock is appended to ``claims``, for the run's ``RunLog``."""
    claim = claim_new_dir(root, name, overwrite=overwrite)
    claims.append(claim)
    return claim.path


def _reuse_teacher(path: Path, config: RunConfig, teacher: nn.Module) -> str | None:
    """Load the finished auto-teacher run at ``path`` into ``teacher`` and return ``None``; if it cannot be
    reused, leave ``teacher`` as it is and say why (``""``: there is no run)."""
    if not path.exists() or not is_run_dir(path):
        return ""
    try:
        log = load_run(path)
    except ValueError as err:
        return f"its run log cannot be read ({err})"
    if log.status != "finished":
        reason = getattr(log, "reason", None)
        return f"it ended {log.status!r}" + (f" ({reason})" if reason else "")
    wanted = config.to_dict()
    defaults = RunConfig().to_dict()  # what a field an older run lacks meant
    # device, global_batch, num_workers and checkpoint_every do not change what a CE teacher run learns.
    ignored = ("device", "global_batch", "num_workers", "checkpoint_every")
    if any(log.config.get(k, defaults.get(k)) != v for k, v in wanted.items() if k not in ignored):
        return "its settings differ"
    checkpoint = path / "model.pt"
    if not checkpoint.is_file():
        return "it has no model.pt"
    # The checks of every checkpoint load (keys, shapes, dtype kinds, finite values), worded for this case.
    label = "its model.pt"
    try:
        state = extract_state_dict(read_checkpoint(checkpoint, label=label), source=label)
        check_state_dict(teacher, state, label, "does not fit the teacher's architecture")
    except CheckpointError as err:
        return str(err)
    teacher.load_state_dict(state, strict=True)
    return None


def _close_quietly(run_log: RunLog, err: BaseException) -> None:
    """End ``run_log`` as ``interrupted`` (Ctrl-C, a signal) or ``failed``; a failure to write is only said."""
    status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
    try:
        run_log.finish(status, reason=reason_of(err))
    except Exception as write_error:  # noqa: BLE001 - never mask the exception that ended the run
        add_note(err, f"the run log {run_log.path} could not be closed: {write_error}")


def run_experiment(
    config: RunConfig,
    runs_dir: str | os.PathLike = "runs",
    callbacks: Sequence[Any] = (),
    stop_event: threading.Event | None = None,
    *,
    progress: bool | None = None,
    overwrite: bool = False,
    raise_on_interrupt: bool = True,
    resume: bool = False,
) -> RunLog:
    """Run one configured experiment end to end and return its :class:`RunLog`.

    Steps: seed; build the loaders (``make_loaders(dataset, batch_size, seed)``); get the teacher
    (load ``teacher_checkpoint``, reuse a finished auto-teacher run under ``runs_dir`` with the
    same settings, or train one now with CE and save it); build the student; train it
    (:func:`~cskd_viz.training.distill`, or :func:`~cskd_viz.training.train_teacher` when
    ``teacher`` is ``None``), logging to ``runs_dir/<name>/``; save the trained weights as
    ``model.pt`` (``{"model": state_dict}``).

    Under ``torchrun`` (``WORLD_SIZE > 1``) every process calls this with the same config: it
    initialises the process group (:func:`~cskd_viz.distributed.distributed_session`) unless one
    exists, trains with DDP on sharded data, and only rank 0 writes the run directory and
    ``model.pt``. Every rank returns a :class:`RunLog` with the same status; rank 0's holds the
    records and its ``path``, the others' are in memory.

    Args:
        config: the :class:`RunConfig`.
        runs_dir: parent directory of run directories.
        callbacks: training callbacks (also see the auto-teacher's training, if any).
        stop_event: ends the run after the current step (status ``"interrupted"``). If it is set
            while an auto-teacher trains, the teacher's interrupted run log is returned.
        progress: progress bars (``None``: automatic).
        overwrite: replace an existing run directory of the same name (only if it is a run);
            otherwise a ``-2``, ``-3``, ... suffix keeps both.
        raise_on_interrupt: re-raise ``KeyboardInterrupt`` after saving the log (default).
        resume: continue the run ``runs_dir/<config.run_name>`` from its newest readable checkpoint
            (``<run>/checkpoints/``), in the same directory: its log keeps the steps up to the
            checkpoint and goes on from there, its status back to ``running``. Refused with a
            ``ResumeError`` (a ``ValueError``) when there is no such run, it already finished, it has
            no usable checkpoint, or ``config`` differs from the run's in a field other than
            :data:`~cskd_viz.training.resume.RESUME_IGNORED` (each differing field is named, with both
            values); a ``RunBusyError`` while its process still lives.

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
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be True or False, got {resume!r}")
    if resume and overwrite:
        raise ValueError("resume=True continues a run, overwrite=True replaces it: pass one of them")
    session = _Session(config, runs_dir, callbacks, stop_event, progress, raise_on_interrupt, resume)
    with distributed_session(config.device):
        return session.run(overwrite)


def _resumable_fields(config: RunConfig) -> dict:
    """The config fields a resumed run must share with the run it continues."""
    return {k: v for k, v in config.to_dict().items() if k not in (*RESUME_IGNORED, "name")}


def _check_resumable(path: Path, config: RunConfig) -> tuple[dict, Path]:
    """The checkpoint ``path``'s run continues from, after the checks of :func:`run_experiment`'s ``resume``."""
    if not is_run_dir(path):
        raise ResumeError(f"no run {path.name!r} under {path.parent} to resume (no run directory {path})")
    log = load_run(path)
    if log.status == "finished":
        raise ResumeError(f"the run {path} already finished: there is nothing to resume")
    state, source = read_training_checkpoint(path / CHECKPOINT_DIR)
    if state["config"]:  # written by run_experiment (the trainer checks its own settings in any case)
        check_fingerprint(state["config"], _resumable_fields(config), f"checkpoint {source}")
    return state, source


@dataclasses.dataclass
class _Session:
    """:func:`run_experiment` once its arguments are checked."""

    config: RunConfig
    runs_dir: Path
    callbacks: Sequence[Any]
    stop_event: threading.Event | None
    progress: bool | None
    raise_on_interrupt: bool
    resume: bool = False
    checkpoints: bool = True

    def run(self, overwrite: bool) -> RunLog:
        from cskd_viz.data import make_loaders
        from cskd_viz.models import get_model

        config = self.config
        device = process_device(resolve_device(config.device))
        main = get_rank() == 0
        loaded: list = []  # rank 0's checkpoint to resume from
        if self.resume:
            on_main(lambda: loaded.append(_check_resumable(self.runs_dir / config.run_name, config)))
        train_loader, test_loader, info = make_loaders(
            config.dataset, batch_size=config.batch_size, seed=config.seed, num_workers=config.num_workers
        )
        teacher, teacher_source = None, None
        if config.teacher is not None:
            teacher = get_model(config.teacher, info.num_classes, info.input_shape)
            teacher_source = self._teacher_source(teacher)
            if isinstance(teacher_source, RunLog):  # the auto-teacher's run was interrupted
                return teacher_source
            if get_world_size() > 1:
                broadcast_module(teacher.to(device))
        torch.manual_seed(config.seed)
        student = get_model(config.student, info.num_classes, info.input_shape)
        run_log = self._run_log(teacher_source, info, overwrite, loaded)
        path = Path(on_main(lambda: str(run_log.path)))
        settings = config.train_settings(
            device=device, progress=self.progress, raise_on_interrupt=self.raise_on_interrupt, name=path.name
        )
        common = {"callbacks": self.callbacks, "stop_event": self.stop_event, "run_log": run_log}
        common["model_path"] = path / "model.pt" if main else None  # saved while the run directory is still held
        if self.checkpoints:
            plan = Checkpointing(path / CHECKPOINT_DIR, resume=self.resume, config=_resumable_fields(config))
            plan.loaded = loaded[0] if loaded else None
            common["checkpoint_dir"] = plan
        fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
        try:
            if teacher is None:
                train_teacher(student, train_loader, test_loader, **common, **fields)
            else:
                method = config.make_method()
                distill(student, teacher, train_loader, test_loader, method=method, info=info, **common, **fields)
        except BaseException as err:
            if main and run_log.status == "running":  # it ended before the trainer took charge of the log
                _close_quietly(run_log, err)
            raise
        return run_log

    def _run_log(self, teacher_source: str | None, info: Any, overwrite: bool, loaded: list) -> RunLog:
        """The run's log: a new directory (rank 0; in memory on the others), or the resumed run's, re-opened."""
        config, main = self.config, get_rank() == 0
        extra = {"teacher_source": teacher_source, "info": dataclasses.asdict(info)}
        if not main:
            return RunLog({**config.to_dict(), **extra, "name": config.run_name})
        if self.resume:
            state, _ = loaded[0]
            path = self.runs_dir / config.run_name
            values = {**config.to_dict(), **extra, "name": path.name}
            return reopen_run_log(path, values, step=int(state["step"]), epoch=int(state["epoch"]))
        claims: list[RunClaim] = []  # rank 0's lock on the run directory, taken over by its RunLog
        path = _unique_dir(self.runs_dir, config.run_name, overwrite, claims)
        return RunLog({**config.to_dict(), **extra, "name": path.name}, path=path, claim=claims[0])

    def _teacher_source(self, teacher: nn.Module) -> str | RunLog:
        """Load the teacher's weights (on rank 0) and say where from; an interrupted teacher run's log instead."""
        config = self.config
        source = config.teacher_checkpoint
        if source is None:
            teacher_run = config.teacher_config()
            teacher_dir = self.runs_dir / teacher_run.run_name
            # Decided on rank 0 (the one that writes runs) so that every rank takes the same branch.
            why = on_main(lambda: _reuse_teacher(teacher_dir, teacher_run, teacher))
            source = str(teacher_dir / "model.pt")
            if why is None:  # loaded (on rank 0)
                return source
            if why and get_rank() == 0:
                print(f"cskd_viz: training the teacher {teacher_run.run_name!r} again: {why}", file=sys.stderr)
            # An auto-teacher run writes no training checkpoints: one that did not finish is trained again.
            session = _Session(
                teacher_run, self.runs_dir, self.callbacks, self.stop_event, self.progress, self.raise_on_interrupt
            )
            session.checkpoints = False
            teacher_log = session.run(overwrite=True)
            if teacher_log.status != "finished":
                return teacher_log

        def load() -> None:  # under DDP: read on rank 0, weights broadcast to the others by the caller
            load_checkpoint(teacher, source, map_location="cpu")

        on_main(load)
        return source
