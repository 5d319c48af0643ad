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
