"""Reading runs: ``load_run`` (lazy), ``list_runs``, ``compare_runs``, ``stack_runs``, ``is_run_dir``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from cskd_viz.runs import ownership, store
from cskd_viz.runs.log import RunLog
from cskd_viz.runs.meta import apply_meta, read_meta
from cskd_viz.runs.records import (  # noqa: F401 - the doctests use them
    CONFIG_FILE,
    DEAD,
    FORMAT,
    FRAMES,
    READABLE_SCHEMAS,
    STATUSES,
    SUMMARY_COLUMNS,
    EvalRecord,
    RunLogError,
    StepRecord,
    _summary,
)

if TYPE_CHECKING:
    import pandas as pd


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a run directory (has a ``config.json`` with the format marker)."""
    try:
        read_meta(Path(path))
    except RunLogError:
        return False
    return True


def load_run(path: str | os.PathLike, *, steps: slice | None = None, every: int | None = None) -> RunLog:
    """Load a run directory written by :class:`RunLog` (or a :class:`~cskd_viz.Monitor`).

    Only ``config.json`` is read at once; each frame is read on its first access (and, for a run
    that is still being written, only its new parts on later accesses). A finished run whose parts
    were never compacted is compacted now, when the directory is writable and no writer holds it.
    The loaded log is read-only; its ``status`` is ``"dead"`` when ``config.json`` says
    ``running`` but the writer is gone (its lock is free and its heartbeat stale,
    :mod:`cskd_viz.runs.ownership`; telling so changes no file), and ``reason`` says why it ended.

    Args:
        path: the run directory.
        steps: keep only logged steps in ``[start, stop)`` in the step-indexed frames (``steps``,
            ``class_cosine``, ``temperatures``, ``temperature_hist``), e.g. ``slice(1000, None)``.
        every: keep every ``every``-th logged step of those frames (downsampling a long run for a plot).

    Raises:
        RunLogError: (a ``ValueError``) for a missing, corrupt or foreign directory, naming the
            file at fault and the field: no ``config.json``, invalid JSON, wrong format or schema
            version, a malformed field (``progress.step``, ``status``, ``flushed``, ...), a
            missing or unparseable CSV; a corrupt or malformed Parquet file when a frame is read.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     log = RunLog({"name": "r", "method": "ce"}, path=f"{tmp}/r")
        ...     log.finish()
        ...     load_run(f"{tmp}/r").status
        'finished'
    """
    path = Path(path)
    if not isinstance(steps, (slice, type(None))):
        raise TypeError(f"steps must be a slice of step numbers or None, got {type(steps).__name__}")
    if steps is not None:
        bounds = (steps.start, steps.stop)
        bounds_ok = all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in bounds)
        if steps.step is not None or not bounds_ok:
            raise ValueError(f"steps must be slice(start, stop) of step numbers (ints or None), got {steps!r}")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ValueError(f"every must be a positive int or None, got {every!r}")
    meta = read_meta(path)
    log = RunLog(meta["config"], path=None, status=meta["status"])
    log.path = path
    log.schema_version = meta["schema_version"]
    log._selection = (steps, every)
    log._own = False
    apply_meta(log, meta)
    if log.schema_version == 1:  # the CSV layout: read-only, read now (small runs)
        for name in FRAMES:
            log._cache[name] = (log._select_frame(name, store.read_csv_frame(path, name)), 10**18)
    elif log.status == "finished" and any(store.part_files(path, name) for name in FRAMES) and os.access(path, os.W_OK):
        _compact_left_over(path, meta)
    return log


def _compact_left_over(path: Path, meta: dict) -> None:
    """Compact a finished run killed before it deleted its parts, unless a writer holds it (an overwrite)."""
    try:
        claim = ownership.acquire(path, retry_s=0.0)
    except (RunLogError, OSError):
        return
    try:
        if read_meta(path).get("run_id") == meta.get("run_id"):
            store.remove(store.compact(path, upto=meta.get("flushed")))
    except (RunLogError, OSError):  # a full or read-only disk: the parts read the same
        pass
    finally:
        claim.release(remove=True)  # a finished run directory holds no lock file


def _as_log(run: RunLog | str | os.PathLike) -> RunLog:
    if isinstance(run, RunLog):
        return run
    if isinstance(run, (str, os.PathLike)):
        return load_run(run)
    raise TypeError(f"expected a RunLog or a run directory path, got {type(run).__name__}")


def list_runs(root: str | os.PathLike = "runs") -> pd.DataFrame:
    """One summary row per run directory under ``root`` (see :func:`compare_runs` for columns).

    Sub-directories without a ``config.json`` are skipped. A run whose ``config.json`` or ``evals``
    cannot be read (the files the summary needs) appears with status ``"unreadable"`` and the
    reason in an ``error`` column, and gives one warning naming the run and the reason; the other
    runs are listed all the same. (Its other frames are read, and checked, when they are used.)
    ``status`` is ``"dead"`` for a run that says ``running`` but whose writer is gone
    (:mod:`cskd_viz.runs.ownership`). Extra columns: ``created``, ``error``. A missing ``root``
    gives an empty frame.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     RunLog({"name": "a", "method": "kd"}, path=f"{tmp}/a").finish()
        ...     list_runs(tmp)[["name", "method", "status"]].values.tolist()
        [['a', 'kd', 'finished']]
    """
    import pandas as pd

    root = Path(root)
    rows = []
    if root.is_dir():
        for child in sorted(p for p in root.iterdir() if p.is_dir()):
            if not (child / CONFIG_FILE).is_file():
                continue
            try:
                log = load_run(child)
                row = {**log.summary(), "path": str(child), "created": log.created, "error": None}
            except RunLogError as err:
                warnings.warn(f"skipped the run {child}: {store.one_line(err, 400)}", stacklevel=2)
                row = dict.fromkeys(SUMMARY_COLUMNS)
                row.update(name=child.name, status="unreadable", path=str(child), created=None, error=str(err))
            rows.append(row)
    return pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, "created", "error"])


def compare_runs(runs: Iterable[RunLog | str | os.PathLike]) -> pd.DataFrame:
    """Summary table, one row per run.

    Columns: ``name, method, final_accuracy, final_agreement, best_accuracy,
    final_cosine_distance, steps, status, dataset, student, teacher, teacher_accuracy, path``
    (accuracies and agreement on the test split; ``final_cosine_distance`` is the epoch-level
    ``d(T)`` of the last evaluation).

    Args:
        runs: :class:`RunLog` objects or run directory paths (a single path or log is accepted too).

    Example:
        >>> log = RunLog({"name": "a", "method": "cskd"})
        >>> log.log_eval(EvalRecord(0, 10, {"accuracy": 0.9, "agreement": 0.95, "loss": 0.3,
        ...     "cosine_distance": 0.1, "teacher_accuracy": 0.97}))
        >>> compare_runs([log])[["name", "final_accuracy", "steps"]].values.tolist()
        [['a', 0.9, 10]]
    """
    import pandas as pd

    if isinstance(runs, (RunLog, str, os.PathLike)):
        runs = [runs]
    rows = [_as_log(run).summary() for run in runs]
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def stack_runs(logs: Iterable[RunLog | str | os.PathLike], frame: str = "evals") -> pd.DataFrame:
    """Long-form frame of several runs: ``frame`` of each run with ``run`` and ``method`` columns added.

    Duplicate run names get a ``#2``, ``#3`` suffix so each run stays its own group.

    Example:
        >>> a, b = RunLog({"name": "a", "method": "ce"}), RunLog({"name": "b", "method": "kd"})
        >>> for log in (a, b):
        ...     log.log_step(StepRecord(1, 0, {"loss": 1.0, "loss_ce": 1.0}))
        >>> stack_runs([a, b], "steps")[["run", "method", "step"]].values.tolist()
        [['a', 'ce', 1], ['b', 'kd', 1]]
    """
    import pandas as pd

    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {sorted(FRAMES)}, got {frame!r}")
    if isinstance(logs, (RunLog, str, os.PathLike)):
        logs = [logs]
    parts, seen = [], {}
    for run in logs:
        log = _as_log(run)
        name = log.name
        seen[name] = seen.get(name, 0) + 1
        label = name if seen[name] == 1 else f"{name}#{seen[name]}"
        df = getattr(log, frame).copy()
        df.insert(0, "method", log.config.get("method"))
        df.insert(0, "run", label)
        parts.append(df)
    if not parts:
        return pd.DataFrame(columns=["run", "method", *FRAMES[frame]])
    return pd.concat(parts, ignore_index=True)
