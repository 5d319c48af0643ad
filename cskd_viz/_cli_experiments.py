"""``cskd-viz sweep`` and ``cskd-viz search``: many runs as one Optuna study (:mod:`cskd_viz.experiments`).

Both take every ``cskd-viz train`` flag for the base config, plus ``--grid FIELD=V1,V2,...`` (sweep) or
``--space FIELD=LOW:HIGH`` (search; ``LOW:HIGH:log``, or choices ``A,B``), ``--seeds``, ``--trials``
(search), ``--study-name``, ``--storage``, ``--n-jobs`` and ``--nproc-per-run``. They print a progress bar
over the trials and the summary table. Re-running the same command resumes the study. Light on purpose:
argparse only at import.
"""

from __future__ import annotations

import argparse
import sys

from cskd_viz._cli_checks import dir_problem, fail
from cskd_viz._cli_run_flags import add_run_flags, run_config_from_args

__all__ = ["register"]

_OBJECTIVES = ("best_accuracy", "final_accuracy", "final_agreement", "final_cosine_distance")


def _common_flags(parser: argparse.ArgumentParser, seeds: int) -> None:
    parser.add_argument("--seeds", type=int, default=seeds, help=f"seeds per point / per trial (default: {seeds})")
    parser.add_argument("--study-name", required=True, help="the Optuna study; re-use it to resume")
    parser.add_argument(
        "--storage", default=None, help="SQLAlchemy URL of the study (default: sqlite:///<runs-dir>/sweeps.db)"
    )
    parser.add_argument("--n-jobs", type=int, default=1, help="parallel worker processes (default: 1)")
    parser.add_argument(
        "--nproc-per-run", type=int, default=1, metavar="N",
        help="data-parallel processes per run: each run is a torchrun --standalone launch (default: 1)",
    )  # fmt: skip
    parser.add_argument("--objective", default="best_accuracy", choices=_OBJECTIVES, help="a trial's value")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def register(sub) -> None:
    """Add the ``sweep`` and ``search`` sub-parsers to ``sub`` (``argparse`` sub-parsers action)."""
    sweep = sub.add_parser("sweep", help="a grid of runs x seeds as an Optuna study (resumable)")
    add_run_flags(sweep)
    sweep.add_argument(
        "--grid", action="append", required=True, metavar="FIELD=V1,V2,...", help="a RunConfig field and its values"
    )
    _common_flags(sweep, seeds=3)
    sweep.set_defaults(run=_run_sweep)

    search = sub.add_parser("search", help="a TPE search over RunConfig fields as an Optuna study (resumable)")
    add_run_flags(search)
    search.add_argument(
        "--space", action="append", required=True, metavar="FIELD=LOW:HIGH", help="a range (or A,B choices)"
    )
    search.add_argument("--trials", type=int, required=True, help="complete trials to reach")
    _common_flags(search, seeds=1)
    search.set_defaults(run=_run_search)


def _items(values: list[str], parse, flag: str) -> dict:
    out: dict = {}
    for item in values:
        try:
            name, spec = parse(item)
        except (ValueError, TypeError) as err:
            fail(err)
        if name in out:
            fail(f"{flag} names {name} twice: give all its values in one {flag} {name}=...")
        out[name] = spec
    return out


def _prepare(args, parser):
    if args.name is not None:
        fail("--name is set per trial by the study (<study-name>-<trial>): leave it out")
    problem = dir_problem(args.runs_dir, "--runs-dir")
    if problem:
        fail(problem)
    return run_config_from_args(args, parser)


def _report(result, args) -> int:
    from cskd_viz.experiments import format_summary

    frame = result.frame()
    counts = frame["state"].value_counts().to_dict()
    print(f"\nstudy {result.plan.study_name!r} in {result.plan.storage}: " + ", ".join(
        f"{n} {state.lower()}" for state, n in sorted(counts.items())))  # fmt: skip
    if (frame["state"] == "COMPLETE").any():
        by = None if result.kind == "sweep" else []
        print(format_summary(result.summary(by=by)))
    if result.kind == "search" and (frame["state"] == "COMPLETE").any():
        best = result.best
        print(f"best trial {best['trial']}: {args.objective} {best['value']:.4f} with {best['params']}")
        importances = result.importances()
        if len(importances):
            print("importances: " + ", ".join(f"{k} {v:.3f}" for k, v in importances.items()))
    failed = result.failures()
    if len(failed):
        print(f"{len(failed)} trial(s) failed (first: trial {failed.iloc[0]['trial']}: {failed.iloc[0]['error']}); "
              "run the same command again to retry them", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _start_workers_early(args) -> None:
    """With ``--n-jobs > 1``, start the workers' server now: its imports (torch, ...) run beside this process's."""
    if isinstance(args.n_jobs, int) and args.n_jobs > 1:
        from cskd_viz.experiments._runner import worker_context

        worker_context()


def _run_sweep(args, parser) -> int:
    from cskd_viz.experiments import parse_grid_item, sweep

    grid = _items(args.grid, parse_grid_item, "--grid")
    _start_workers_early(args)
    base = _prepare(args, parser)
    try:
        result = sweep(
            base, grid, seeds=args.seeds, study_name=args.study_name, storage=args.storage, n_jobs=args.n_jobs,
            runs_dir=args.runs_dir, objective=args.objective, progress=not args.no_progress,
            nproc_per_run=args.nproc_per_run,
        )  # fmt: skip
    except (ValueError, TypeError) as err:
        fail(err)
    return _report(result, args)


def _run_search(args, parser) -> int:
    from cskd_viz.experiments import parse_space_item, search

    space = _items(args.space, parse_space_item, "--space")
    _start_workers_early(args)
    base = _prepare(args, parser)
    try:
        result = search(
            base, space, n_trials=args.trials, objective=args.objective, seeds=args.seeds,
            study_name=args.study_name, storage=args.storage, n_jobs=args.n_jobs, runs_dir=args.runs_dir,
            progress=not args.no_progress, nproc_per_run=args.nproc_per_run,
        )  # fmt: skip
    except (ValueError, TypeError) as err:
        fail(err)
    return _report(result, args)
