"""``Sweep``: a study's trials as tidy frames, per-point summaries with t-based confidence intervals."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cskd_viz.experiments._runner import METRICS
from cskd_viz.experiments._study import Plan

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Sweep", "mean_ci", "SUMMARY_METRICS"]

SUMMARY_METRICS = ("final_accuracy", "best_accuracy", "final_agreement")
_STATS = ("n", "mean", "std", "sem", "ci_low", "ci_high")


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """``n``, ``mean``, ``std`` (``ddof=1``), ``sem`` and the t-based ``confidence`` interval of the mean.

    ``ci = mean ± t_{(1+confidence)/2, n-1} * std / sqrt(n)``; ``std``, ``sem`` and the interval are
    NaN for fewer than 2 values (no spread to estimate).

    Example:
        >>> {k: round(v, 4) for k, v in mean_ci([0.9, 0.92, 0.94]).items()}
        {'n': 3, 'mean': 0.92, 'std': 0.02, 'sem': 0.0115, 'ci_low': 0.8703, 'ci_high': 0.9697}
    """
    from scipy.special import stdtrit

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = [float(v) for v in values]
    n = len(x)
    mean = sum(x) / n if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "sem": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    std = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    sem = std / math.sqrt(n)
    half = float(stdtrit(n - 1, (1 + confidence) / 2)) * sem
    return {"n": n, "mean": mean, "std": std, "sem": sem, "ci_low": mean - half, "ci_high": mean + half}


class Sweep:
    """The result of :func:`~cskd_viz.experiments.sweep` or :func:`~cskd_viz.experiments.search`.

    Attributes:
        study: the ``optuna.Study`` (every trial, its state, params and user attributes).
        plan: what was run (``kind``, ``space``/grid, ``base``, ``seeds``, ``runs_dir``, ...).
    """

    def __init__(self, study: Any, plan: Plan) -> None:
        self.study, self.plan = study, plan

    @property
    def kind(self) -> str:
        return self.plan.kind

    @property
    def keys(self) -> list[str]:
        """The varied fields: the grid's (without ``seed``) or the space's."""
        return [k for k in self.plan.space if k != "seed"]

    def __repr__(self) -> str:
        counts = self.frame()["state"].value_counts().to_dict() if self.study.trials else {}
        return f"Sweep({self.kind}, study={self.plan.study_name!r}, trials={counts})"

    def frame(self) -> pd.DataFrame:
        """One row per trial: ``trial, state, <fields>, seed, value, <METRICS>, n_runs, run_dir, duration_s,
        error, retry_of, worker``. A search trial with several seeds shows the mean of its runs' metrics
        (``seed`` is then the first)."""
        import pandas as pd

        rows = [self._row(t) for t in self.study.get_trials(deepcopy=False)]
        columns = ["trial", "state", *self.keys, "seed", "value", *METRICS]
        columns += ["n_runs", "run_dir", "duration_s", "error", "retry_of", "worker"]
        return pd.DataFrame(rows, columns=columns)

    def _row(self, trial: Any) -> dict[str, Any]:
        runs = trial.user_attrs.get("runs", [])
        row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name}
        row.update({k: trial.params.get(k) for k in self.keys})
        row["seed"] = trial.params.get("seed", runs[0]["seed"] if runs else None)
        row["value"] = trial.value if trial.state.name == "COMPLETE" else None
        for metric in METRICS:
            values = [r[metric] for r in runs if r.get(metric) is not None]
            row[metric] = sum(values) / len(values) if values else None
        row["n_runs"] = len(runs)
        row["run_dir"] = trial.user_attrs.get("run_dir")
        duration = trial.duration
        row["duration_s"] = duration.total_seconds() if duration is not None else None
        row["error"] = trial.user_attrs.get("error") if trial.state.name == "FAIL" else None
        row["retry_of"] = trial.user_attrs.get("retry_of")
        row["worker"] = trial.user_attrs.get("worker")
        return row

    def summary(self, by: Sequence[str] | None = None, metrics: Sequence[str] = SUMMARY_METRICS,
                confidence: float = 0.95) -> pd.DataFrame:  # fmt: skip
        """Per group (``by``; default: every varied field) and metric: ``n, mean, std, sem, ci_low, ci_high``
        (t-based, :func:`mean_ci`) over the complete trials, and ``n_failed``, the points (grid point and
        seed) whose trials all failed. One row per (group, metric): ``<by>..., metric, n, ..., n_failed``.

        A point tried twice (a retry that raced with another worker) counts once: its latest complete trial.
        """
        import pandas as pd

        by = list(self.keys if by is None else by)
        frame = self.frame()
        for name in [*by, *metrics]:
            if name not in frame.columns:
                raise ValueError(f"{name!r} is not a column of the sweep's frame; columns: {list(frame.columns)}")
        point = [*self.keys, "seed"] if self.kind == "sweep" else ["trial"]
        frame = frame.assign(_point=frame[point].apply(lambda r: json.dumps(list(r), default=str), axis=1))
        done = frame[frame["state"] == "COMPLETE"].drop_duplicates("_point", keep="last")
        failed = frame[(frame["state"] == "FAIL") & ~frame["_point"].isin(done["_point"])]
        if self.kind == "search":  # a failed trial whose retry completed is not a failure
            retried = set(frame.loc[frame["state"] == "COMPLETE", "retry_of"].dropna().astype(int))
            failed = failed[~failed["trial"].isin(retried)]
        failed = failed.drop_duplicates("_point")
        both = pd.concat([done.assign(_ok=True), failed.assign(_ok=False)], ignore_index=True)
        rows = []
        for key, part in both.groupby(by, dropna=False, sort=True) if by else [((), both)]:
            key = key if isinstance(key, tuple) else (key,)
            ok = part[part["_ok"]]
            for metric in metrics:
                values = ok[metric].dropna()
                stats = mean_ci(values.tolist(), confidence) if len(values) else dict.fromkeys(_STATS, math.nan)
                stats["n"] = len(values)
                row = {
                    **dict(zip(by, key, strict=True)),
                    "metric": metric,
                    **stats,
                    "n_failed": int((~part["_ok"]).sum()),
                }
                rows.append(row)
        out = pd.DataFrame(rows, columns=[*by, "metric", *_STATS, "n_failed"])
        return out.astype({"n": "Int64", "n_failed": "Int64"})

    def failures(self) -> pd.DataFrame:
        """The FAIL trials: ``trial``, the varied fields, ``seed`` and ``error``."""
        frame = self.frame()
        return frame.loc[frame["state"] == "FAIL", ["trial", *self.keys, "seed", "error"]].reset_index(drop=True)

    def runs(self) -> list[Any]:
        """The :class:`~cskd_viz.runs.RunLog` of every run of the complete trials (for plots, ``RunBrowser``)."""
        from cskd_viz.runs import load_run

        done = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        return [load_run(run["path"]) for t in done for run in t.user_attrs.get("runs", [])]

    def best_so_far(self) -> pd.DataFrame:
        """Complete trials in order: ``trial, value, best`` (the best objective value up to each)."""
        import pandas as pd

        frame = self.frame()
        frame = frame.loc[frame["state"] == "COMPLETE", ["trial", "value"]].sort_values("trial")
        values = frame["value"].astype(float)
        best = values.cummax() if self.plan.direction == "maximize" else values.cummin()
        return pd.DataFrame({"trial": frame["trial"].to_numpy(), "value": values.to_numpy(), "best": best.to_numpy()})

    def importances(self) -> pd.Series:
        """Optuna's parameter importances (its default evaluator) of the complete trials, largest first; empty
        when they cannot be estimated (fewer than 2 complete trials, or no parameter varies)."""
        import warnings

        import optuna
        import pandas as pd

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = optuna.importance.get_param_importances(self.study, params=self.keys)
        except (ValueError, RuntimeError, ZeroDivisionError):
            values = {}
        return pd.Series(values, name="importance", dtype=float).rename_axis("field")

    @property
    def best(self) -> dict[str, Any]:
        """The best complete trial: ``trial``, ``value`` and its ``params`` (a ``ValueError`` if none completed)."""
        try:
            trial = self.study.best_trial
        except ValueError:
            raise ValueError(f"study {self.plan.study_name!r} has no complete trial yet") from None
        return {"trial": trial.number, "value": trial.value, "params": dict(trial.params)}
