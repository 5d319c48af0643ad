"""Run-log vocabulary shared by writers and readers: frames and their columns, statuses, records, errors."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)  # 1: the CSV layout of the first release, read-only
FORMAT = "cskd_viz.run"
STATUSES = ("running", "finished", "interrupted", "failed")  # what config.json may say
# What a reader reports for a run whose config.json says "running" but whose writer is gone: its
# lock is free and its heartbeat is stale (cskd_viz.runs.ownership). Never written to disk.
DEAD = "dead"
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
    "reason",
)


class RunLogError(ValueError):
    """A run directory that cannot be read or used: missing or corrupt files (the message names the
    file and the field), a foreign directory, a run another process is writing."""


class RunLogWriteError(OSError):
    """Writing a run log failed (a full disk, a read-only or vanished directory): a one-line message
    ``could not write the run log <dir>: <why>``, the ``errno`` of the ``OSError`` that caused it
    (chained as ``__cause__``). What was written before stays, and the run loads."""

    def __str__(self) -> str:
        return str(self.strerror)


def write_error(path: Path | None, err: OSError) -> RunLogWriteError:
    """``err`` as a :class:`RunLogWriteError` naming the run directory ``path`` (raise it ``from err``)."""
    if isinstance(err, RunLogWriteError):
        return err
    why = err.strerror or str(err) or type(err).__name__
    if err.filename and err.strerror:
        why = f"{why} ({err.filename})"
    return RunLogWriteError(err.errno, f"could not write the run log {path}: {' '.join(str(why).split())}")


def reason_of(err: BaseException, limit: int | None = None) -> str:
    """The ``reason`` a run records for the exception that ended it: the first line of ``Type: message``,
    cut to ``limit`` characters if given."""
    text = f"{type(err).__name__}: {err}".strip().splitlines()[0]
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


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


_MAX_INDEX = 2**63 - 1  # steps and epochs are stored as int64


def _index(value: Any, name: str) -> int:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INDEX:
        raise ValueError(f"record.{name} must be a non-negative int (below 2**63), got {value!r}")
    return value


def _values(mapping: Any, name: str) -> dict[str, float | None]:
    """A record's named numbers, checked; ``step`` and ``epoch`` are the record's own fields."""
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{name} must be a dict of numbers, got {type(mapping).__name__}")
    out = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or key in ("step", "epoch", "split", "class"):
            raise ValueError(f"{name} has the key {key!r}: keys are names of values, not step/epoch/split/class")
        out[key] = _number(value, f"{name}[{key!r}]")
    return out


def _histogram(step: int, bins: Any) -> tuple[int, list, list, list]:
    try:
        triples = [(float(left), float(right), int(count)) for left, right, count in bins]
    except (TypeError, ValueError, OverflowError):
        raise ValueError("record.temperature_hist must be a list of (bin_left, bin_right, count) triples") from None
    if not triples:
        raise ValueError("record.temperature_hist is empty: give its bins, or None")
    if any(not 0 <= count <= _MAX_INDEX for _, _, count in triples):
        raise ValueError("record.temperature_hist counts must be non-negative ints below 2**63")
    lefts, rights, counts = (list(column) for column in zip(*triples, strict=True))
    return step, lefts, rights, counts


def _number(value: Any, name: str) -> float | None:
    """A record value as a plain float (numpy and torch scalars too); ``None`` stays missing."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large for a float64: {str(value)[:20]}...") from None


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


def _now(timespec: str = "seconds") -> str:
    return datetime.now(timezone.utc).isoformat(timespec=timespec)


def _summary(
    config: Mapping, status: str, progress: Mapping, evals: pd.DataFrame, path: Path | None, reason: str | None = None
) -> dict:
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
        "reason": reason,
    }
