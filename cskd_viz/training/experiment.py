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
from cskd_viz.training.checkpoints import load_checkpoint
from cskd_viz.training.config import RunConfig
from cskd_viz.training.faults import add_note
from cskd_viz.training.loop import distill, train_teacher

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
    # device and global_batch do not change what a CE teacher run learns (runs older than the
    # global_batch field lack it).
    if any(log.config.get(k) != v for k, v in wanted.items() if k not in ("device", "global_batch")):
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
    session = _Session(config, runs_dir, callbacks, stop_event, progress, raise_on_interrupt)
    with distributed_session(config.device):
        return session.run(overwrite)


@dataclasses.dataclass
class _Session:
    """:func:`run_experiment` once its arguments are checked."""

    config: RunConfig
    runs_dir: Path
    callbacks: Sequence[Any]
    stop_event: threading.Event | None
    progress: bool | None
    raise_on_interrupt: bool

    def run(self, overwrite: bool) -> RunLog:
        from cskd_viz.data import make_loaders
        from cskd_viz.models import get_model

        config = self.config
        device = process_device(resolve_device(config.device))
        main = get_rank() == 0
        train_loader, test_loader, info = make_loaders(config.dataset, batch_size=config.batch_size, seed=config.seed)
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
        claims: list[RunClaim] = []  # rank 0's lock on the run directory, taken over by its RunLog
        path = on_main(lambda: _unique_dir(self.runs_dir, config.run_name, overwrite, claims))
        extra = {"name": path.name, "teacher_source": teacher_source, "info": dataclasses.asdict(info)}
        run_log = RunLog({**config.to_dict(), **extra}, path=path if main else None, claim=claims[0] if main else None)
        settings = config.train_settings(
            device=device, progress=self.progress, raise_on_interrupt=self.raise_on_interrupt, name=path.name
        )
        common = {"callbacks": self.callbacks, "stop_event": self.stop_event, "run_log": run_log}
        common["model_path"] = path / "model.pt" if main else None  # saved while the run directory is still held
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
            teacher_log = run_experiment(
                teacher_run,
                self.runs_dir,
                self.callbacks,
                self.stop_event,
                progress=self.progress,
                overwrite=True,
                raise_on_interrupt=self.raise_on_interrupt,
            )
            if teacher_log.status != "finished":
                return teacher_log

        def load() -> None:  # under DDP: read on rank 0, weights broadcast to the others by the caller
            load_checkpoint(teacher, source, map_location="cpu")

        on_main(load)
        return source
