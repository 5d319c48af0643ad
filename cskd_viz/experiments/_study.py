"""The Optuna side of a sweep: storage, the study and its fingerprint, stale trials, retries.

Everything here is Optuna's own machinery (``RDBStorage`` with heartbeats, ``GridSampler``,
``TPESampler``, ``create_trial``), configured for :mod:`cskd_viz.experiments`; optuna is imported
on first use.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["STORAGE_FILE", "Plan", "default_storage", "open_storage", "check_study_name", "n_points"]

STORAGE_FILE = "sweeps.db"  # the default SQLite file under runs_dir, one for every study
HEARTBEAT_S = 30  # a trial's process writes a heartbeat this often ...
GRACE_S = 120  # ... and a RUNNING trial without one for this long is failed (and retried) by Optuna
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,99}")
FINGERPRINT_ATTR = "cskd_viz"


def check_study_name(name: Any) -> str:
    """``name`` if it can prefix run directory names (letters, digits, ``. _ + = -``, at most 100)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            "study_name must start with a letter or digit and use only letters, digits and . _ + = - "
            f"(at most 100 characters; it prefixes the run directories), got {name!r}"
        )
    return name


def default_storage(runs_dir: str | os.PathLike) -> str:
    """``sqlite:///<runs_dir>/sweeps.db``."""
    return f"sqlite:///{Path(runs_dir) / STORAGE_FILE}"


def _quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _write_ahead_log(path: str) -> None:
    """Put the SQLite file at ``path`` in write-ahead-log mode (once; the mode stays with the file).

    A trial writes about ten small transactions (its creation, grid id, parameters, user attributes, heartbeat,
    state). In SQLite's default rollback-journal mode each commit creates, syncs and deletes a journal file
    (1.5-7 ms each on a shared disk: up to 0.1 s per trial); in WAL mode a commit appends to one file (under
    0.5 ms), still synced (durable), and readers and the writer of parallel workers no longer block each other. Best
    effort: where the mode cannot be set (a file system without shared memory, a read-only file), SQLite keeps
    its journal and everything works as before.
    """
    import sqlite3

    try:
        connection = sqlite3.connect(path, timeout=60)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
    except sqlite3.Error:
        pass  # RDBStorage reports a file that cannot be opened


def open_storage(url: Any, checked: bool = False):
    """An ``optuna.storages.RDBStorage`` for the SQLAlchemy ``url``, with heartbeats (a trial whose process
    died is failed after ``GRACE_S`` s and queued again), or a ``ValueError`` saying why it cannot be opened.

    ``checked``: the storage was opened (tables created, schema version checked) by the process that started
    this one: skip both (Optuna's alembic check costs 0.1-0.3 s per open)."""
    optuna = _quiet_optuna()
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"storage must be a SQLAlchemy URL such as 'sqlite:///runs/sweeps.db', got {url!r}")
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        engine_kwargs["connect_args"] = {"timeout": 60}  # parallel trials write the same file
        path = url.removeprefix("sqlite:///").partition("?")[0]
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ValueError(f"storage {url!r} cannot be opened: {err}") from None
            _write_ahead_log(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
                skip_compatibility_check=checked,
                skip_table_creation=checked,
            )
        except Exception as err:  # noqa: BLE001 - SQLAlchemy, driver and OS errors all mean "cannot open"
            raise ValueError(f"storage {url!r} cannot be opened: {type(err).__name__}: {err}") from None


@dataclass(frozen=True)
class Plan:
    """What every worker of one sweep or search needs (picklable: it goes to worker processes).

    Attributes:
        kind: ``"sweep"`` (a grid, ``space`` includes ``seed``) or ``"search"`` (TPE over ``space``).
        study_name, storage: the Optuna study and its SQLAlchemy URL.
        base: the :class:`~cskd_viz.training.RunConfig` every trial changes.
        space: the checked grid (``{field: [values]}``) or space (``{field: (low, high) | [choices]}``).
        seeds: runs per trial (search) or seeds per grid point (sweep).
        objective: the run-summary metric a trial returns (mean over its runs).
        direction: ``"maximize"`` or ``"minimize"``.
        runs_dir: where the trials' run directories go.
        n_trials: a search's number of complete trials to reach (``None`` for a sweep).
        nproc: data-parallel processes per run (``> 1``: each run is a ``torchrun`` launch).
    """

    kind: str
    study_name: str
    storage: str
    base: Any
    space: dict
    seeds: int
    objective: str
    direction: str
    runs_dir: str
    n_trials: int | None = None
    nproc: int = 1

    def sampler(self, worker: int = 0):
        """A fresh ``GridSampler`` (sweep) or ``TPESampler`` (search; seeded per worker, constant liar)."""
        optuna = _quiet_optuna()
        if self.kind == "sweep":
            return optuna.samplers.GridSampler(self.space)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=self.base.seed + worker, constant_liar=True)

    def fingerprint(self) -> dict[str, Any]:
        """What a study's trials depend on: reusing a study name needs the same fingerprint."""
        base = {k: v for k, v in self.base.to_dict().items() if k not in ("name", "cswt")}
        value = {"kind": self.kind, "base": base, "space": self.space, "seeds": self.seeds, "objective": self.objective}
        if self.nproc > 1:  # absent for one process: studies made before the field still match
            value["nproc"] = self.nproc
        return json.loads(json.dumps(value))  # as stored (tuples become lists)

    def open(self, worker: int = 0, create: bool = False, checked: bool = False):
        """The study (created with ``create``); a study made with another fingerprint is refused. ``checked``:
        the storage and study were opened and checked by the process that started this worker."""
        optuna = _quiet_optuna()
        storage = open_storage(self.storage, checked=checked and not create)
        if create:
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                sampler=self.sampler(worker),
                direction=self.direction,
                load_if_exists=True,
            )
            self._check_fingerprint(study)
            return study
        return optuna.load_study(study_name=self.study_name, storage=storage, sampler=self.sampler(worker))

    def _check_fingerprint(self, study) -> None:
        mine, theirs = self.fingerprint(), study.user_attrs.get(FINGERPRINT_ATTR)
        if theirs is None and not study.trials:
            study.set_user_attr(FINGERPRINT_ATTR, mine)
            return
        if theirs == mine:
            return
        if theirs is None:
            what = "was not made by cskd_viz"
        else:
            changed = [k for k in {**theirs, **mine} if mine.get(k) != theirs.get(k)]
            detail = {k: theirs.get(k) for k in changed if k != "base"}
            if "base" in changed:
                detail["base"] = {k: v for k, v in theirs["base"].items() if mine["base"].get(k) != v}
            what = f"was made with a different {' and '.join(changed)} ({json.dumps(detail)})"
        raise ValueError(
            f"study {self.study_name!r} in {self.storage} {what}: to start a new study, give a new study_name "
            f"(--study-name); to replace it, delete it first (optuna delete-study --study-name {self.study_name} "
            f"--storage {self.storage})"
        )


def _trial_id(study, trial) -> int:
    storage = study._storage  # the study's own storage object (Optuna wraps it in a cache)
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)


def worker_label() -> str:
    """``host:pid`` of this process: which worker runs a trial (stored in its user attributes)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def fail_dead_trials(study) -> int:
    """Fail the RUNNING trials of a worker on this host whose process is gone (killed, crashed): a re-run
    retries them at once. Other hosts' dead trials are failed by Optuna's heartbeat after ``GRACE_S`` s.
    Returns the number failed."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if worker_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        trial_id = _trial_id(study, trial)
        try:
            study._storage.set_trial_user_attr(trial_id, "error", f"its worker process (pid {pid}) died")
            if study._storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed += 1
        except UpdateFinishedTrialError:  # another process got there first
            continue
    return failed


def _point(trial) -> str:
    return json.dumps(trial.params, sort_keys=True)


def earlier_trial_of_point(study, trial) -> int | None:
    """The number of a lower-numbered COMPLETE, RUNNING or WAITING trial of the same grid point (``grid_id``)
    as the running sweep ``trial``, or ``None``.

    Parallel workers can both see one grid point left and start a trial each; ``GridSampler`` then gives
    the later one a point that is already running. Such a trial yields to the earlier one.
    """
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    trials = study.get_trials(deepcopy=False, states=states)
    mine = next((t.system_attrs.get("grid_id") for t in trials if t.number == trial.number), None)
    for other in trials:
        if mine is not None and other.number < trial.number and other.system_attrs.get("grid_id") == mine:
            return other.number
    return None


def queue_retries(study) -> int:
    """Queue one new WAITING trial (same params, same grid id) for every point whose trials all failed.

    A point is a trial's parameter set. Points with a COMPLETE, RUNNING or WAITING trial are left
    alone. The failed trials stay in the study with their errors. Returns the number queued.
    """
    import optuna
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    settled = {_point(t) for t in trials if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)}
    last_failure: dict[str, Any] = {}
    for trial in trials:
        if trial.state == TrialState.FAIL and _point(trial) not in settled and trial.params:
            last_failure[_point(trial)] = trial
    for trial in last_failure.values():
        keep = {k: trial.system_attrs[k] for k in ("grid_id", "search_space") if k in trial.system_attrs}
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={"retry_of": trial.number},
                system_attrs=keep,
            )
        )
    return len(last_failure)


def n_points(plan: Plan) -> int:
    """The number of grid points of a sweep (seeds included)."""
    n = 1
    for values in plan.space.values():
        n *= len(values)
    return n


def work_left(study, plan: Plan) -> int:
    """Trials this worker may still start: WAITING ones, plus (sweep) grid points no trial has taken, or
    (search) complete trials still missing to reach ``plan.n_trials``.

    A sweep's trial that another worker has just created but whose grid point ``GridSampler`` has not yet
    stored counts as taken, too: trial ``k < n_points`` takes point ``k``, a later one some free point.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    if plan.kind == "sweep":
        total = n_points(plan)
        taken = {t.system_attrs["grid_id"] for t in trials if "grid_id" in t.system_attrs}
        starting = [t.number for t in trials if t.state == TrialState.RUNNING and "grid_id" not in t.system_attrs]
        taken.update(k for k in starting if k < total)
        return waiting + total - len(taken) - sum(k >= total for k in starting)
    busy = sum(t.state in (TrialState.COMPLETE, TrialState.RUNNING) for t in trials)
    return max(waiting, plan.n_trials - busy)


def replace_config(base: Any, changes: dict[str, Any]) -> Any:
    """``dataclasses.replace(base, **changes)``."""
    return dataclasses.replace(base, **changes)
