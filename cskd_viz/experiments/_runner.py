"""Running a plan: the objective (one trial = one or more ordinary runs), workers, parallel processes.

``n_jobs`` workers each call ``study.optimize`` on the shared storage, which is Optuna's own way of
running trials in parallel (in processes here, one torch thread each; on many machines alike).
"""

from __future__ import annotations

import datetime as dt
import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cskd_viz.experiments._study import (
    Plan,
    earlier_trial_of_point,
    fail_dead_trials,
    n_points,
    queue_retries,
    replace_config,
    work_left,
    worker_label,
)

__all__ = ["METRICS", "OBJECTIVES", "run_plan", "work", "worker_context"]

# What a trial records of each run (from ``RunLog.summary()``, plus the mean CSWT temperature).
METRICS = (
    "final_accuracy",
    "best_accuracy",
    "final_agreement",
    "final_cosine_distance",
    "teacher_accuracy",
    "mean_temperature",
    "steps",
)
OBJECTIVES = {  # objective -> direction
    "best_accuracy": "maximize",
    "final_accuracy": "maximize",
    "final_agreement": "maximize",
    "final_cosine_distance": "minimize",
}


def _number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _one_run(config: Any, runs_dir: str, nproc: int = 1) -> dict[str, Any]:
    """Run ``config`` (an ordinary run directory under ``runs_dir``; on ``nproc`` data-parallel processes
    when ``nproc > 1``) and return its metrics and path."""
    if nproc > 1:
        from cskd_viz.experiments._launch import run_distributed

        log = run_distributed(config, runs_dir, nproc)
    else:
        from cskd_viz.training.experiment import run_experiment

        log = run_experiment(config, runs_dir, progress=False)
    if log.status != "finished":
        raise RuntimeError(f"the run {log.path} ended {log.status!r}" + (f": {log.reason}" if log.reason else ""))
    summary = log.summary()
    steps = log.steps
    if "mean_temperature" in steps and steps["mean_temperature"].notna().any():
        summary["mean_temperature"] = float(steps["mean_temperature"].mean())
    return {"path": str(log.path), "seed": config.seed, **{k: _number(summary.get(k)) for k in METRICS}}


def _suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    params = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            params[name] = trial.suggest_categorical(name, spec)
        elif isinstance(spec[0], int) and isinstance(spec[1], int):
            params[name] = trial.suggest_int(name, spec[0], spec[1], log=len(spec) == 3)
        else:
            params[name] = trial.suggest_float(name, spec[0], spec[1], log=len(spec) == 3)
    return params


def _configs(trial: Any, plan: Plan, params: dict[str, Any]) -> list[Any]:
    prefix = f"{plan.study_name}-{trial.number:04d}"
    if plan.kind == "sweep":  # the seed is a grid axis: one run per trial
        return [replace_config(plan.base, {**params, "name": prefix})]
    seeds = range(plan.base.seed, plan.base.seed + plan.seeds)
    return [replace_config(plan.base, {**params, "seed": s, "name": f"{prefix}-s{s}"}) for s in seeds]


def objective(trial: Any, plan: Plan) -> float:
    """One trial: its runs, one per seed; returns the mean of ``plan.objective`` over them.

    User attributes: ``worker`` (``host:pid``), ``runs`` (per run: ``path``, ``seed`` and the
    :data:`METRICS`), ``run_dir`` (the first run's directory), when it raises ``error``, and when it was
    not run because another worker had started its grid point, ``duplicate_of``.
    """
    trial.set_user_attr("worker", worker_label())
    runs: list[dict[str, Any]] = []
    try:
        params = _suggest(trial, plan.space)
        if plan.kind == "sweep" and trial.number >= n_points(plan):
            _skip_if_taken(trial)
        for config in _configs(trial, plan, params):
            runs.append(_one_run(config, plan.runs_dir, plan.nproc))
            trial.set_user_attr("runs", runs)  # after each run: an interrupted trial still links its finished runs
            if len(runs) == 1:  # each attribute is one storage transaction: write the first run's path once
                trial.set_user_attr("run_dir", runs[0]["path"])
        values = [run[plan.objective] for run in runs]
        if any(v is None for v in values):
            raise RuntimeError(f"a run has no {plan.objective} (no evaluation?)")
    except BaseException as err:  # the trial fails (Optuna's FAIL state) with the reason stored
        from optuna import TrialPruned

        if not isinstance(err, TrialPruned):
            text = " ".join(str(err).split()) or "interrupted"
            trial.set_user_attr("error", f"{type(err).__name__}: {text}"[:2000])
        raise
    return sum(values) / len(values)


def _skip_if_taken(trial: Any) -> None:
    """Past the first pass over the grid (``GridSampler`` gives trial ``k < n_points`` point ``k``), two
    parallel workers can start the same last point: the later trial is then not run (Optuna's ``PRUNED``,
    ``duplicate_of`` in its user attributes)."""
    earlier = earlier_trial_of_point(trial.study, trial)
    if earlier is not None:
        from optuna import TrialPruned

        trial.set_user_attr("duplicate_of", earlier)
        raise TrialPruned(f"grid point already taken by trial {earlier}")


def work(plan: Plan, worker: int = 0, callback: Callable[..., None] | None = None, study: Any = None) -> None:
    """A worker: run trials of ``plan`` until none is left (one torch thread while it runs); ``study``: the
    already opened study to use (default: open it)."""
    import functools

    import torch
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and parallel workers do not contend
    study = plan.open(worker) if study is None else study
    run = functools.partial(objective, plan=plan)
    callbacks = [callback] if callback is not None else []
    try:
        if plan.kind == "search":
            stop = MaxTrialsCallback(plan.n_trials, states=(TrialState.COMPLETE,))
            todo = work_left(study, plan)
            if todo > 0:
                study.optimize(run, n_trials=todo, catch=(Exception,), callbacks=[stop, *callbacks])
            return
        # One trial per round, the work left read again before each: parallel workers then rarely start
        # the same last grid point twice, and GridSampler stopping the study (once every point has been
        # tried, also while retries wait) ends only a round.
        while work_left(study, plan) > 0:
            study.optimize(run, n_trials=1, catch=(Exception,), callbacks=callbacks)
    finally:
        torch.set_num_threads(threads)


def _worker_main(plan: Plan, worker: int, environ: dict[str, str] | None = None) -> None:  # pragma: no cover
    """A worker process; ``environ``: the starting process's environment now (a forkserver's children would
    otherwise keep the server's, from its start: ``CSKD_DATA`` set in a notebook afterwards, say)."""
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    try:
        work(plan, worker, study=plan.open(worker, checked=True))  # run_plan has created and checked it
    except KeyboardInterrupt:
        sys.exit(130)


def _prepare_teachers(plan: Plan) -> None:
    """Train (or keep) the auto-teachers of the grid's configs one at a time, before parallel workers start:
    two workers training the same teacher would collide on its run directory."""
    import itertools

    from cskd_viz.runs import is_run_dir, load_run
    from cskd_viz.training.experiment import run_experiment

    points = [dict(zip(plan.space, p, strict=True)) for p in itertools.product(*plan.space.values())]
    if plan.kind == "search":  # a search's teachers depend on samples: only the base's is known
        points = [{}]
    teachers = {}
    for point in points:
        config = replace_config(plan.base, {k: v for k, v in point.items() if not isinstance(v, tuple)})
        if config.teacher is not None and config.teacher_checkpoint is None:
            teachers[config.teacher_config().run_name] = config.teacher_config()
    for name, teacher in teachers.items():
        path = Path(plan.runs_dir) / name
        if is_run_dir(path) and (path / "model.pt").is_file() and load_run(path).status == "finished":
            continue
        run_experiment(teacher, plan.runs_dir, progress=False, overwrite=True)


def _finished_since(study: Any, since: dt.datetime) -> int:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
    return sum(t.datetime_complete is not None and t.datetime_complete >= since for t in done)


# What a worker imports (torch, torchmetrics, optuna, the data and run-log code): several seconds of CPU.
_PRELOAD = (
    "__main__",  # multiprocessing's own default
    "cskd_viz.training.experiment",
    "cskd_viz.data",
    "cskd_viz.runs",
    "cskd_viz.experiments._runner",
    "optuna",
    "sklearn.datasets",  # the digits loader
    "alembic.command",  # Optuna's RDBStorage checks the schema version with it
    "optuna.storages._rdb.models",
    "sqlalchemy.dialects.sqlite",
)


def worker_context() -> Any:
    """The multiprocessing context for worker processes, its server started (call it early).

    On Linux: ``forkserver``, preloading :data:`_PRELOAD`. The server is a fresh process (no fork of this
    one, which may hold torch threads and DB connections); it imports the modules once, in the background
    while this process prepares the study and its teachers, and forks each worker from that state: workers
    start in milliseconds instead of each importing torch (and, in a notebook, later sweeps reuse the server).
    Its children end with ``os._exit`` (no interpreter teardown). Elsewhere: ``spawn``. Called again, it
    returns the running server's context; a command line that calls it before it imports torch itself has
    both imports run side by side.
    """
    if sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods():
        from multiprocessing import forkserver

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(_PRELOAD))  # no effect once a server runs (it keeps its modules)
        forkserver.ensure_running()
        return context
    return multiprocessing.get_context("spawn")


def _run_processes(plan: Plan, n_jobs: int, tick: Callable[[], None], context: Any = None) -> None:
    context = worker_context() if context is None else context
    environ = dict(os.environ)
    workers = [context.Process(target=_worker_main, args=(plan, i, environ), daemon=False) for i in range(n_jobs)]
    for process in workers:
        process.start()
    try:
        while any(p.is_alive() for p in workers):
            for process in workers:
                process.join(timeout=0.5 / n_jobs)
            tick()
    except BaseException:  # Ctrl-C or a signal: the workers end their trials as interrupted, too
        for process in workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT)
        for process in workers:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
        raise
    tick()
    bad = [p.exitcode for p in workers if p.exitcode not in (0, None)]
    if 130 in bad:
        raise KeyboardInterrupt("a worker was interrupted")
    if bad:
        raise RuntimeError(f"{len(bad)} worker process(es) exited with status {bad}; their trials are FAIL")


def run_plan(plan: Plan, n_jobs: int = 1, progress: bool = False) -> Any:
    """Open (or create) the study, fail dead trials, queue retries, run what is left; return the study."""
    study = plan.open(create=True)
    fail_dead_trials(study)
    queue_retries(study)
    total = work_left(study, plan)
    since = dt.datetime.now() - dt.timedelta(seconds=1)
    bar = None
    if progress and total > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"{plan.kind} {plan.study_name}", unit="trial")

    def tick(*_: Any) -> None:
        if bar is not None:
            bar.n = min(_finished_since(study, since), total)
            bar.refresh()

    try:
        if total <= 0:
            return study
        if n_jobs == 1:
            work(plan, 0, callback=tick, study=study)
        else:
            context = worker_context()  # the workers' imports overlap the teachers' training
            _prepare_teachers(plan)
            _run_processes(plan, n_jobs, tick, context)
    finally:
        if bar is not None:
            bar.close()
    return study
