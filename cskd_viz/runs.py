"""Run logs: tidy pandas frames of a training run, written atomically to ``runs/<name>/``.

A :class:`RunLog` holds a run's config, its status and five tidy frames (one row per logged step,
per (logged step, class), per evaluation, ...), following the RunLog schema shared with
:mod:`cskd_viz.plots` and :mod:`cskd_viz.widgets`:

=====================  ============================================================================
frame                  columns
=====================  ============================================================================
``steps``              ``step, epoch, loss, loss_<term>..., train_accuracy, agreement,
                       mean_temperature, cosine_distance, lr, elapsed_s``
``class_cosine``       ``step, class, cosine``
``temperatures``       ``step, q05, q25, q50, q75, q95, mean, min, max`` (CSWT runs; else empty)
``temperature_hist``   ``step, bin_left, bin_right, count``
``evals``              ``epoch, step, split, accuracy, agreement, loss, cosine_distance,
                       teacher_accuracy``
=====================  ============================================================================

On disk: ``config.json`` (format marker, schema version, status, progress, config) and one CSV
per frame. Every file is written to a temporary file in the same directory and moved into place
with ``os.replace``, so a run interrupted at any moment (Ctrl-C, a killed kernel) leaves files
that each load: a reader sees either the previous or the new version, never half a file.
Rows are formatted to CSV once, when first flushed, so a flush costs little more than the file
writes. ``status`` is ``"running"``, ``"finished"``, ``"interrupted"`` or ``"failed"`` (an
exception other than an interrupt ended the run).

pandas is imported lazily (on first frame access), so importing this module stays light.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SCHEMA_VERSION",
    "FRAMES",
    "STATUSES",
    "RunLog",
    "RunLogError",
    "StepRecord",
    "EvalRecord",
    "load_run",
    "list_runs",
    "compare_runs",
    "stack_runs",
    "is_run_dir",
]

SCHEMA_VERSION = 1
FORMAT = "cskd_viz.run"
STATUSES = ("running", "finished", "interrupted", "failed")
CONFIG_FILE = "config.json"

# Column order of each frame. For ``steps`` the method's ``loss_*`` terms go right after ``loss``.
STEP_COLUMNS = (
    "step",
    "epoch",
    "loss",
    "train_accuracy",
    "agreement",
    "mean_temperature",
    "cosine_distance",
    "lr",
    "elapsed_s",
)
FRAMES: dict[str, tuple[str, ...]] = {
    "steps": STEP_COLUMNS,
    "class_cosine": ("step", "class", "cosine"),
    "temperatures": ("step", "q05", "q25", "q50", "q75", "q95", "mean", "min", "max"),
    "temperature_hist": ("step", "bin_left", "bin_right", "count"),
    "evals": ("epoch", "step", "split", "accuracy", "agreement", "loss", "cosine_distance", "teacher_accuracy"),
}
_INT_COLUMNS = {"step", "epoch", "class", "count"}
_STR_COLUMNS = {"split"}
SUMMARY_COLUMNS = (
    "name",
    "method",
    "final_accuracy",
    "final_agreement",
    "best_accuracy",
    "final_cosine_distance",
    "steps",
    "status",
    "dataset",
    "student",
    "teacher",
    "teacher_accuracy",
    "path",
)


class RunLogError(ValueError):
    """A run directory that cannot be read: missing or corrupt files, a foreign directory."""


@dataclass
class StepRecord:
    """Diagnostics of one logged training step (what the trainer hands to callbacks).

    Attributes:
        step: global optimiser step, 1-based.
        epoch: 0-based epoch.
        metrics: ``loss``, every ``loss_*`` term, ``train_accuracy``, ``agreement``,
            ``mean_temperature``, ``cosine_distance``, ``lr``, ``elapsed_s`` (floats; NaN where
            not defined, e.g. agreement of a run without teacher).
        class_cosine: ``(C,)`` per-class cosine of batch predictions at the run's ``T``, or ``None``.
        temperature_stats: ``q05, q25, q50, q75, q95, mean, min, max`` of the CSWT ``T_i``, or ``None``.
        temperature_hist: ``(bin_left, bin_right, count)`` triples, or ``None``.
    """

    step: int
    epoch: int
    metrics: dict[str, float]
    class_cosine: list[float] | None = None
    temperature_stats: dict[str, float] | None = None
    temperature_hist: list[tuple[float, float, int]] | None = None


@dataclass
class EvalRecord:
    """One evaluation (end of an epoch): ``accuracy``, ``agreement``, ``loss`` (CE),
    ``cosine_distance`` (epoch-level ``d(T)``), ``teacher_accuracy`` in ``metrics``."""

    epoch: int
    step: int
    metrics: dict[str, float]
    split: str = "test"
    class_cosine: list[float] | None = field(default=None, repr=False)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy / torch scalars, first:
        return _format(value.item())  # np.float64 is a float whose repr is "np.float64(0.05)" in numpy 2
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    text = str(value)
    if any(ch in text for ch in ',"\n\r'):
        text = '"' + text.replace('"', '""') + '"'
    return text


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


class _BackgroundWriter:
    """A daemon thread writing ``[(path, text), ...]`` batches atomically, in submission order."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="cskd_viz-runlog-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                if self.error is None:
                    for path, text in batch:
                        _atomic_write_text(path, text)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                self.error = err
            finally:
                self._queue.task_done()

    def submit(self, batch: list[tuple[Path, str]]) -> None:
        self._queue.put(batch)

    def wait(self) -> None:
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Frame:
    """Rows of one frame, with their CSV lines formatted once and a cached DataFrame."""

    def __init__(self, name: str, columns: Sequence[str]) -> None:
        self.name = name
        self.columns = list(columns)
        self.rows: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.cached: pd.DataFrame | None = None
        self.dirty = True

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.cached = None
        self.dirty = True

    def set_columns(self, columns: Sequence[str]) -> None:
        if list(columns) != self.columns:
            self.columns = list(columns)
            self.lines = []  # re-format everything with the new columns
            self.cached = None
            self.dirty = True

    def csv_text(self) -> str:
        for row in self.rows[len(self.lines) :]:
            self.lines.append(",".join(_format(row.get(column)) for column in self.columns))
        return "\n".join([",".join(self.columns), *self.lines]) + "\n"

    def frame(self) -> pd.DataFrame:
        if self.cached is None:
            import pandas as pd

            df = pd.DataFrame.from_records(self.rows, columns=self.columns) if self.rows else None
            if df is None:
                df = pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in self.columns})
            self.cached = _coerce(df)
        return self.cached


def _dtype(column: str) -> str:
    if column in _INT_COLUMNS:
        return "int64"
    if column in _STR_COLUMNS:
        return "object"
    return "float64"


def _coerce(df: pd.DataFrame) -> pd.DataFrame:
    for column in df.columns:
        dtype = _dtype(column)
        if dtype == "object":
            df[column] = df[column].astype(object)
        elif str(df[column].dtype) != dtype:
            df[column] = df[column].astype(dtype)
    return df


class RunLog:
    """The record of one training run: config, status and tidy frames (see the module doc).

    Args:
        config: the run's configuration (a ``RunConfig.to_dict()`` or any JSON-able mapping);
            should hold ``name`` and ``method``.
        path: the run directory; ``None`` keeps the log in memory only (``flush`` is a no-op).
            The directory is created and a loadable, empty log is written at once.
        status: initial status.

    Frames are DataFrame attributes: ``steps``, ``class_cosine``, ``temperatures``,
    ``temperature_hist``, ``evals``.

    Example:
        >>> log = RunLog({"name": "demo", "method": "ce"})
        >>> log.log_step(StepRecord(step=1, epoch=0, metrics={"loss": 2.3, "loss_ce": 2.3}))
        >>> list(log.steps.columns[:4]), log.status
        (['step', 'epoch', 'loss', 'loss_ce'], 'running')
    """

    def __init__(self, config: Mapping[str, Any], path: str | os.PathLike | None = None, status: str = "running"):
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping, got {type(config).__name__}")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.config: dict[str, Any] = dict(config)
        self.status = status
        self.path: Path | None = Path(path) if path is not None else None
        self.progress: dict[str, int] = {"step": 0, "epoch": 0}
        self.created = _now()
        self.updated = self.created
        self._frames = {name: _Frame(name, columns) for name, columns in FRAMES.items()}
        self._writer: _BackgroundWriter | None = None
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            self.flush()

    # ------------------------------------------------------------------ frames
    @property
    def name(self) -> str:
        """The run's name (``config["name"]``, else the directory name)."""
        name = self.config.get("name")
        if name:
            return str(name)
        return self.path.name if self.path is not None else "run"

    @property
    def steps(self) -> pd.DataFrame:
        return self._frames["steps"].frame()

    @property
    def class_cosine(self) -> pd.DataFrame:
        return self._frames["class_cosine"].frame()

    @property
    def temperatures(self) -> pd.DataFrame:
        return self._frames["temperatures"].frame()

    @property
    def temperature_hist(self) -> pd.DataFrame:
        return self._frames["temperature_hist"].frame()

    @property
    def evals(self) -> pd.DataFrame:
        return self._frames["evals"].frame()

    def frames(self) -> dict[str, pd.DataFrame]:
        """All frames by name."""
        return {name: frame.frame() for name, frame in self._frames.items()}

    # ------------------------------------------------------------------ recording
    def log_step(self, record: StepRecord) -> None:
        """Append one logged step to ``steps``, ``class_cosine``, ``temperatures``, ``temperature_hist``."""
        steps = self._frames["steps"]
        terms = [k for k in record.metrics if k.startswith("loss_")]
        known = [c for c in steps.columns if c.startswith("loss_")]
        if any(t not in known for t in terms):
            extra = known + [t for t in terms if t not in known]
            steps.set_columns(["step", "epoch", "loss", *extra, *STEP_COLUMNS[3:]])
        steps.append({"step": int(record.step), "epoch": int(record.epoch), **record.metrics})
        if record.class_cosine is not None:
            frame = self._frames["class_cosine"]
            for j, cosine in enumerate(record.class_cosine):
                frame.append({"step": int(record.step), "class": j, "cosine": float(cosine)})
        if record.temperature_stats is not None:
            self._frames["temperatures"].append({"step": int(record.step), **record.temperature_stats})
        if record.temperature_hist is not None:
            frame = self._frames["temperature_hist"]
            for left, right, count in record.temperature_hist:
                frame.append({"step": int(record.step), "bin_left": left, "bin_right": right, "count": int(count)})
        if int(record.step) >= self.progress["step"]:  # a record computed late never moves progress back
            self.progress = {"step": int(record.step), "epoch": int(record.epoch)}

    def log_eval(self, record: EvalRecord) -> None:
        """Append one evaluation to ``evals``."""
        row = {"epoch": int(record.epoch), "step": int(record.step), "split": record.split, **record.metrics}
        self._frames["evals"].append(row)
        self.set_progress(record.step, record.epoch)

    def set_progress(self, step: int, epoch: int) -> None:
        """Record how far training got (written to ``config.json`` on the next flush)."""
        self.progress = {"step": int(step), "epoch": int(epoch)}

    # ------------------------------------------------------------------ disk
    def flush(self, background: bool = False) -> None:
        """Write changed frames and ``config.json`` atomically (no-op for an in-memory log).

        Args:
            background: format the files now but write them from a background thread, so a
                training loop does not wait for the disk. Writes keep their order; a later
                synchronous ``flush()`` or ``finish()`` first waits for them, and re-raises an
                error a background write met.
        """
        if self.path is None:
            return
        self._check_writer()
        self.updated = _now()
        meta = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "status": self.status,
            "progress": dict(self.progress),
            "created": self.created,
            "updated": self.updated,
            "columns": {name: list(frame.columns) for name, frame in self._frames.items()},
            "config": _json_safe(self.config),
        }
        files = [
            (frame, self.path / f"{name}.csv", frame.csv_text()) for name, frame in self._frames.items() if frame.dirty
        ]
        files.append((None, self.path / CONFIG_FILE, json.dumps(meta, indent=2) + "\n"))
        if background:
            if self._writer is None:
                self._writer = _BackgroundWriter()
            for frame, _, _ in files:
                if frame is not None:
                    frame.dirty = False
            self._writer.submit([(path, text) for _, path, text in files])
            return
        self.wait()
        for frame, path, text in files:  # data first, config.json (status) last
            _atomic_write_text(path, text)
            if frame is not None:
                frame.dirty = False

    def wait(self) -> None:
        """Wait until background writes are on disk; re-raise an error one of them met."""
        if self._writer is not None:
            self._writer.wait()
        self._check_writer()

    def _check_writer(self) -> None:
        if self._writer is not None and self._writer.error is not None:
            error, self._writer.error = self._writer.error, None
            for frame in self._frames.values():  # rewrite everything on the next flush
                frame.dirty = True
            raise error

    def finish(self, status: str = "finished") -> None:
        """Set the final status and flush (synchronously, after any background writes)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.status = status
        try:
            self.flush()
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        """One row of :func:`compare_runs`: final/best test accuracy, agreement, ``d(T)``, steps, status."""
        return _summary(self.config, self.status, self.progress, self.evals, self.path)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"RunLog(name={self.name!r}, status={self.status!r}, steps={self.progress['step']}{where})"


def _summary(config: Mapping, status: str, progress: Mapping, evals: pd.DataFrame, path: Path | None) -> dict:
    nan = float("nan")
    test = evals[evals["split"] == "test"] if len(evals) else evals

    def last(column: str) -> float:
        values = test[column].dropna() if len(test) else []
        return float(values.iloc[-1]) if len(values) else nan

    best = test["accuracy"].dropna() if len(test) else []
    return {
        "name": config.get("name"),
        "method": config.get("method"),
        "final_accuracy": last("accuracy"),
        "final_agreement": last("agreement"),
        "best_accuracy": float(best.max()) if len(best) else nan,
        "final_cosine_distance": last("cosine_distance"),
        "steps": int(progress.get("step", 0)),
        "status": status,
        "dataset": config.get("dataset"),
        "student": config.get("student"),
        "teacher": config.get("teacher"),
        "teacher_accuracy": last("teacher_accuracy"),
        "path": str(path) if path is not None else None,
    }


# ----------------------------------------------------------------------------- loading


def _read_meta(path: Path) -> dict:
    if not path.exists():
        raise RunLogError(f"no run directory at {path}")
    if not path.is_dir():
        raise RunLogError(f"{path} is not a directory (a run is a directory holding {CONFIG_FILE} and CSV files)")
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise RunLogError(f"{path} is not a cskd_viz run directory: {config_file} is missing")
    try:
        meta = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunLogError(f"{config_file} is corrupt: cannot parse JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RunLogError(f'{config_file} is not a cskd_viz run config (expected "format": "{FORMAT}")')
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RunLogError(
            f"{config_file} has schema_version {version!r}; this cskd_viz reads schema_version {SCHEMA_VERSION}"
        )
    if meta.get("status") not in STATUSES:
        raise RunLogError(f"{config_file} has an unknown status {meta.get('status')!r}; expected one of {STATUSES}")
    if not isinstance(meta.get("config"), dict):
        raise RunLogError(f'{config_file} has no "config" object')
    return meta


def _read_frame(path: Path, name: str) -> pd.DataFrame:
    import pandas as pd

    file = path / f"{name}.csv"
    if not file.is_file():
        raise RunLogError(f"{file} is missing (the run directory {path} is incomplete)")
    try:
        df = pd.read_csv(file, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise RunLogError(f"{file} is corrupt: cannot parse CSV ({str(err).strip()})") from None
    missing = [c for c in FRAMES[name] if c not in df.columns]
    if missing:
        raise RunLogError(f"{file} is corrupt: missing column(s) {missing}")
    try:
        return _coerce(df)
    except (ValueError, TypeError) as err:
        raise RunLogError(f"{file} is corrupt: a column has values of the wrong type ({err})") from None


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a run directory (has a ``config.json`` with the format marker)."""
    try:
        _read_meta(Path(path))
    except RunLogError:
        return False
    return True


def load_run(path: str | os.PathLike) -> RunLog:
    """Load a run directory written by :class:`RunLog`.

    Raises:
        RunLogError: (a ``ValueError``) for a missing, corrupt or foreign directory, naming the
            file at fault: no ``config.json``, invalid JSON, wrong format or schema version, a
            missing or unparseable CSV.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     log = RunLog({"name": "r", "method": "ce"}, path=f"{tmp}/r")
        ...     log.finish()
        ...     load_run(f"{tmp}/r").status
        'finished'
    """
    path = Path(path)
    meta = _read_meta(path)
    log = RunLog(meta["config"], path=None, status=meta["status"])
    log.path = path
    log.created = meta.get("created", log.created)
    log.updated = meta.get("updated", log.updated)
    progress = meta.get("progress") or {}
    log.progress = {"step": int(progress.get("step", 0)), "epoch": int(progress.get("epoch", 0))}
    for name in FRAMES:
        df = _read_frame(path, name)
        frame = log._frames[name]
        frame.set_columns(list(df.columns))
        frame.rows = df.to_dict("records")
        frame.cached = df
        frame.dirty = False
    return log


def _as_log(run: RunLog | str | os.PathLike) -> RunLog:
    if isinstance(run, RunLog):
        return run
    if isinstance(run, (str, os.PathLike)):
        return load_run(run)
    raise TypeError(f"expected a RunLog or a run directory path, got {type(run).__name__}")


def list_runs(root: str | os.PathLike = "runs") -> pd.DataFrame:
    """One summary row per run directory under ``root`` (see :func:`compare_runs` for columns).

    Sub-directories that are not runs are skipped; runs that fail to load appear with status
    ``"unreadable"`` and the reason in an ``error`` column. A missing ``root`` gives an empty frame.

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
                meta = _read_meta(child)
                evals = _read_frame(child, "evals")
                row = _summary(meta["config"], meta["status"], meta.get("progress") or {}, evals, child)
                row["created"] = meta.get("created")
                row["error"] = None
            except RunLogError as err:
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
