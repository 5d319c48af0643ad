"""Experiments over many runs, on Optuna: grid sweeps and TPE searches, with seeds and confidence intervals.

- :func:`sweep`: every point of a grid over :class:`~cskd_viz.training.RunConfig` fields, once per
  seed (Optuna's ``GridSampler``; the seed is one more grid axis).
- :func:`search`: a TPE search (``TPESampler``) over ranges or choices of fields.

Both keep their study in an Optuna storage: a SQLite file ``<runs_dir>/sweeps.db`` by default, or any
SQLAlchemy URL (``postgresql://...``), which is how several machines share one study: each runs the
same command. Re-running a command resumes its study: finished trials are kept, failed or
interrupted ones run again (the failures stay in the study, with their errors). Every trial's run is
an ordinary run directory under ``runs_dir`` (``<study>-<trial>``), named in the trial's user
attributes (``run_dir``, ``runs``). ``n_jobs > 1`` runs trials in that many processes (forked from a
forkserver on Linux, else spawned: in a script, keep the call under ``if __name__ == "__main__":``), one
torch thread each; ``nproc_per_run > 1`` makes each run a ``torchrun`` launch of that many processes.

The result is a :class:`Sweep`: ``frame()`` (one row per trial), ``summary(by=[...])`` (mean, std,
n and a t-based 95% confidence interval per grid point), ``best_so_far()``, ``importances()``; and
:func:`cskd_viz.plots.plot_sweep` draws it. This module imports neither matplotlib nor (until used)
optuna.

Example:
    >>> import tempfile
    >>> from cskd_viz.training import RunConfig
    >>> base = RunConfig(student="mlp_small", teacher="mlp_large", teacher_epochs=1, epochs=None, max_steps=3)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     result = sweep(base, {"method": ["kd", "cskd"]}, seeds=2, study_name="doc", runs_dir=tmp)
    ...     summary = result.summary(metrics=["final_accuracy"])
    >>> list(summary["method"]), summary["n"].tolist()
    (['cskd', 'kd'], [2, 2])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from cskd_viz.experiments._results import SUMMARY_METRICS, Sweep, mean_ci
from cskd_viz.experiments._runner import METRICS, OBJECTIVES
from cskd_viz.experiments._space import (
    check_grid,
    check_seeds,
    check_space,
    parse_grid_item,
    parse_space_item,
    sweepable_fields,
)
from cskd_viz.experiments._study import STORAGE_FILE, Plan, check_study_name, default_storage

__all__ = [
    "sweep",
    "search",
    "load_sweep",
    "Sweep",
    "mean_ci",
    "format_summary",
    "sweepable_fields",
    "parse_grid_item",
    "parse_space_item",
    "METRICS",
    "OBJECTIVES",
    "SUMMARY_METRICS",
    "STORAGE_FILE",
]


def _check_common(study_name: Any, n_jobs: Any, runs_dir: Any, storage: Any, nproc_per_run: Any = 1) -> tuple[str, str]:
    check_study_name(study_name)
    for name, value in (("n_jobs", n_jobs), ("nproc_per_run", nproc_per_run)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not isinstance(runs_dir, (str, os.PathLike)) or not os.fspath(runs_dir).strip():
        raise ValueError(f"runs_dir must be a directory path, got {runs_dir!r}")
    if storage is not None and (not isinstance(storage, str) or not storage.strip()):
        raise ValueError(f"storage must be None or a SQLAlchemy URL string, got {storage!r}")
    return os.fspath(runs_dir), storage or default_storage(runs_dir)


def _check_objective(objective: Any) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {objective!r}")
    return objective


def sweep(
    base: Any,
    grid: Mapping[str, Sequence],
    *,
    seeds: int = 3,
    study_name: str,
    storage: str | None = None,
    n_jobs: int = 1,
    runs_dir: str | os.PathLike = "runs",
    objective: str = "best_accuracy",
    progress: bool = False,
    nproc_per_run: int = 1,
) -> Sweep:
    """Run every point of ``grid`` once per seed (``base.seed`` .. ``base.seed + seeds - 1``); resumable.

    Args:
        base: the :class:`~cskd_viz.training.RunConfig` each point changes (its ``name`` must be ``None``).
        grid: ``{field: values}`` over RunConfig fields (not ``seed``, not ``name``), e.g.
            ``{"batch_size": [16, 64], "method": ["kd", "cskd"]}``. Every point is validated first.
        seeds: seeds per point, ``>= 1``.
        study_name: the Optuna study (it also prefixes the run directories). Reusing it with another
            grid, base config, seeds or objective is refused.
        storage: a SQLAlchemy URL (``None``: ``sqlite:///<runs_dir>/sweeps.db``).
        n_jobs: parallel worker processes (one torch thread each).
        runs_dir: where the run directories go.
        objective: the trial's value (a metric of :data:`OBJECTIVES`).
        progress: a progress bar over the trials.
        nproc_per_run: data-parallel processes per run (``> 1``: each run is a ``torchrun --standalone``
            launch on this machine, as ``cskd-viz train`` under ``torchrun``; grid over ``global_batch`` to
            compare CSKD on each process's batch with CSKD on the global batch). ``n_jobs * nproc_per_run``
            processes run at once.

    Returns:
        The :class:`Sweep`. A trial that raised is ``FAIL`` with its error (``Sweep.failures()``); the
        sweep goes on and ``summary`` counts it. Ctrl-C stops the sweep (the interrupted trial is
        ``FAIL``, the study and every finished run stay); the same call later resumes it.
    """
    runs_dir, storage = _check_common(study_name, n_jobs, runs_dir, storage, nproc_per_run)
    grid = check_grid(base, grid, seeds)
    space = {**grid, "seed": list(range(base.seed, base.seed + seeds))}
    objective = _check_objective(objective)
    plan = Plan("sweep", study_name, storage, base, space, seeds, objective, OBJECTIVES[objective], runs_dir,
                nproc=nproc_per_run)  # fmt: skip
    from cskd_viz.experiments._runner import run_plan

    return Sweep(run_plan(plan, n_jobs, progress), plan)


def search(
    base: Any,
    space: Mapping[str, Any],
    *,
    n_trials: int,
    objective: str = "best_accuracy",
    seeds: int = 1,
    study_name: str,
    storage: str | None = None,
    n_jobs: int = 1,
    runs_dir: str | os.PathLike = "runs",
    progress: bool = False,
    nproc_per_run: int = 1,
) -> Sweep:
    """A TPE search over ``space`` until the study has ``n_trials`` complete trials; resumable.

    Args:
        base: the :class:`~cskd_viz.training.RunConfig` each trial changes.
        space: ``{field: (low, high) | (low, high, "log") | [choices]}``, e.g.
            ``{"temperature": (1, 8), "t_low": (1, 4), "t_high": (4, 10)}``. Integer fields sample
            integers. Constraints are expressed through the space: one whose corners break a
            RunConfig rule (``t_low <= t_high``) is refused, never clipped.
        n_trials: complete trials to reach (a re-run with more continues the search).
        objective: what a trial maximises (accuracy, agreement) or minimises (``final_cosine_distance``):
            the mean over its ``seeds`` runs.
        seeds, study_name, storage, n_jobs, runs_dir, progress, nproc_per_run: as in :func:`sweep`.
    """
    runs_dir, storage = _check_common(study_name, n_jobs, runs_dir, storage, nproc_per_run)
    check_seeds(seeds)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be an int >= 1, got {n_trials!r}")
    space = check_space(base, space)
    objective = _check_objective(objective)
    plan = Plan("search", study_name, storage, base, space, seeds, objective, OBJECTIVES[objective], runs_dir,
                n_trials, nproc=nproc_per_run)  # fmt: skip
    from cskd_viz.experiments._runner import run_plan

    return Sweep(run_plan(plan, n_jobs, progress), plan)


def load_sweep(study_name: str, storage: str | None = None, runs_dir: str | os.PathLike = "runs") -> Sweep:
    """The :class:`Sweep` of an existing study (nothing runs)."""
    import optuna

    from cskd_viz.experiments._study import FINGERPRINT_ATTR, open_storage
    from cskd_viz.training.config import RunConfig

    runs_dir, storage = _check_common(study_name, 1, runs_dir, storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        raise ValueError(f"no study {study_name!r} in {storage}") from None
    info = study.user_attrs.get(FINGERPRINT_ATTR)
    if info is None:
        raise ValueError(f"study {study_name!r} in {storage} was not made by cskd_viz")
    space = {k: tuple(v) if info["kind"] == "search" and isinstance(v, list) and _is_range(v) else v
             for k, v in info["space"].items()}  # fmt: skip
    base = RunConfig(**info["base"])
    objective = info["objective"]
    plan = Plan(info["kind"], study_name, storage, base, space, info["seeds"], objective, OBJECTIVES[objective],
                runs_dir, nproc=info.get("nproc", 1))  # fmt: skip
    return Sweep(study, plan)


def _is_range(values: list) -> bool:
    return (
        len(values) in (2, 3)
        and all(isinstance(v, (int, float)) for v in values[:2])
        and (len(values) == 2 or values[2] == "log")
    )


def format_summary(summary: Any, digits: int = 4) -> str:
    """``summary`` (of :meth:`Sweep.summary`) as a text table: one row per group, per metric
    ``mean [ci_low, ci_high]``, plus ``n`` and ``failed``."""
    import pandas as pd

    keys = list(summary.columns[: list(summary.columns).index("metric")])
    rows = []
    for key, part in summary.groupby(keys, dropna=False, sort=False) if keys else [((), summary)]:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key, strict=True))
        row["n"] = int(part["n"].max()) if part["n"].notna().any() else 0
        row["failed"] = int(part["n_failed"].max())
        for _, line in part.iterrows():
            mean, low, high = line["mean"], line["ci_low"], line["ci_high"]
            text = "-" if pd.isna(mean) else f"{mean:.{digits}f}"
            if not pd.isna(low):
                text += f" [{low:.{digits}f}, {high:.{digits}f}]"
            row[line["metric"]] = text
        rows.append(row)
    return pd.DataFrame(rows).to_string(index=False)
