"""Sweep overhead: ``experiments.sweep`` (Optuna study in SQLite, GridSampler, trial bookkeeping) against the
same runs called in a plain ``run_experiment`` loop; and the speed-up of ``n_jobs=2`` worker processes.

Every side runs the same 8 configs (CE / KD / CSKD / CSKD+CSWT x 2 seeds, ``mlp_small`` students of one
pre-trained ``mlp_large`` teacher on digits, 20 epochs by default: notebook 08's full-mode length) into fresh
directories, with one torch thread per run: the plain loop and the ``n_jobs=1`` sweep in this process (the
sweep sets one thread itself, the loop under ``one_torch_thread``), ``n_jobs=2`` in two worker processes.

Rows (ratios are medians over alternating repeats, after one untimed round of each side):

- overhead, wall time: sweep / plain loop (target of issue 12: <= 1.05x); the same in CPU time of this process
  (all its threads), which a machine shared with other jobs disturbs less; and the fixed cost per trial in ms
  (both sides with runs of one step: what the ratio adds per run, whatever the run's length);
- parallel speed-up: ``time(n_jobs=1) / time(n_jobs=2)`` in one process (the workers' server has imported
  torch once, as in a notebook's later sweeps; at most 2 on 2 cores, less on a shared machine);
- the same speed-up with each sweep in a fresh ``cskd-viz sweep`` process, imports included (the CLI).

Run: ``python -m benchmarks.sweep_overhead`` (``--quick``: 1-epoch runs, one repeat, no fresh processes).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks._harness import Comparison, Measurement, machine_line, one_torch_thread

METHODS = ("ce", "kd", "cskd", "cskd_cswt")
SEEDS = 2
EPOCHS = 20  # notebook 08, full mode


def _base(tmp: Path, epochs: int):
    from cskd_viz.training import RunConfig, run_experiment

    teacher = RunConfig(student="mlp_large", teacher=None, method="ce", epochs=10, name="bench-teacher")
    log = run_experiment(teacher, tmp, progress=False, overwrite=True)
    return RunConfig(student="mlp_small", teacher="mlp_large", teacher_checkpoint=str(log.path / "model.pt"),
                     epochs=epochs)  # fmt: skip


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds (this process, every thread) of one call, after a garbage collection."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _alternate(ours: Callable[[], object], baseline: Callable[[], object], repeats: int, warmup: int = 1):
    """``{"ours": [(wall, cpu), ...], "baseline": [...]}``: both sides ``repeats`` times, alternating which
    goes first, after ``warmup`` untimed rounds (like ``_harness.alternate``, with CPU time as well)."""
    for _ in range(warmup):
        ours()
        baseline()
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "baseline": []}
    for i in range(repeats):
        order = (("ours", ours), ("baseline", baseline)) if i % 2 == 0 else (("baseline", baseline), ("ours", ours))
        for side, fn in order:
            times[side].append(_timed(fn))
    return times


def _cli(tmp: Path, base, epochs: int, n_jobs: int, where: Path) -> float:
    """Seconds of one ``cskd-viz sweep`` process: its imports, the study and the 8 runs."""
    command = [sys.executable, "-m", "cskd_viz.cli", "sweep", "--student", "mlp_small", "--teacher", "mlp_large",
               "--teacher-checkpoint", base.teacher_checkpoint, "--epochs", str(epochs), "--grid",
               f"method={','.join(METHODS)}", "--seeds", str(SEEDS), "--study-name", "bench", "--runs-dir",
               str(where), "--n-jobs", str(n_jobs), "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
    return time.perf_counter() - start


def run(epochs: int = EPOCHS, repeats: int = 5, fresh_repeats: int = 0) -> list[Comparison | Measurement]:
    """The overhead rows (sweep vs plain loop: wall and CPU time, and the fixed cost per trial) and the parallel
    rows (n_jobs=1 vs 2: in one process, and, with ``fresh_repeats`` pairs, in fresh processes)."""
    from cskd_viz.experiments import sweep
    from cskd_viz.training import run_experiment

    counter = itertools.count()
    n_runs = len(METHODS) * SEEDS
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = _base(tmp, epochs)
        tiny = dataclasses.replace(base, epochs=None, max_steps=1)  # a run of one step: the fixed costs

        def plain(config) -> Callable[[], None]:
            configs = [dataclasses.replace(config, method=m, seed=s, name=f"loop-{m}-{s}") for m in METHODS
                       for s in range(SEEDS)]  # fmt: skip

            def call() -> None:
                with one_torch_thread():
                    where = tmp / f"plain{next(counter)}"
                    for one in configs:
                        run_experiment(one, where, progress=False)

            return call

        def studied(config, n_jobs: int = 1) -> Callable[[], None]:
            def call() -> None:  # the sweep sets one torch thread itself (in its workers for n_jobs > 1)
                where = tmp / f"sweep{next(counter)}"
                sweep(config, {"method": list(METHODS)}, seeds=SEEDS, study_name="bench", runs_dir=where,
                      n_jobs=n_jobs)  # fmt: skip

            return call

        fixed = _alternate(studied(tiny), plain(tiny), repeats=max(1, repeats - 1))
        overhead = _alternate(studied(base), plain(base), repeats=repeats)
        parallel = _alternate(studied(base, 2), studied(base), repeats=max(1, repeats - 1))
        fresh: dict[str, list[float]] = {"ours": [], "baseline": []}
        for i in range(fresh_repeats):
            for side, n_jobs in (("ours", 2), ("baseline", 1)) if i % 2 == 0 else (("baseline", 1), ("ours", 2)):
                fresh[side].append(_cli(tmp, base, epochs, n_jobs, tmp / f"cli{next(counter)}"))
    what = f"{n_runs} runs of {epochs} epochs (mlp_small <- mlp_large, digits, 1 torch thread per run)"
    per_trial = [1000 * (o - b) / n_runs for (o, _), (b, _) in zip(fixed["ours"], fixed["baseline"], strict=True)]
    rows: list[Comparison | Measurement] = [
        Comparison(
            f"sweep overhead (wall time): experiments.sweep vs plain run_experiment loop, {what}",
            "sweep (Optuna, SQLite)",
            "plain loop",
            [w for w, _ in overhead["ours"]],
            [w for w, _ in overhead["baseline"]],
            "<= 1.05x",
        ),
        Comparison(
            f"sweep overhead (CPU time of the process): experiments.sweep vs plain loop, {what}",
            "sweep (Optuna, SQLite)",
            "plain loop",
            [c for _, c in overhead["ours"]],
            [c for _, c in overhead["baseline"]],
            "-",
        ),
        Measurement(
            f"sweep fixed cost per trial: (sweep - plain loop) / {n_runs}, runs of 1 step (study creation included)",
            per_trial,
            "ms",
            "report",
        ),
        Comparison(
            f"sweep parallel speed-up: n_jobs=1 time / n_jobs=2 time, one process, {what}",
            "n_jobs=1",
            "n_jobs=2",
            [w for w, _ in parallel["baseline"]],
            [w for w, _ in parallel["ours"]],
            ">= 1.3x on 2 free cores",
            higher_is_better=True,
        ),
    ]
    if fresh_repeats:
        rows.append(
            Comparison(
                f"sweep parallel speed-up, a fresh `cskd-viz sweep` process each (imports included), {what}",
                "--n-jobs 1",
                "--n-jobs 2",
                fresh["baseline"],
                fresh["ours"],
                "-",
                higher_is_better=True,
            )
        )
    return rows


def section(quick: bool) -> list[Comparison | Measurement]:
    """What ``python -m benchmarks`` runs: realistic runs, or (``quick``) a smoke run of 1-epoch runs."""
    return run(epochs=1, repeats=1) if quick else run(EPOCHS, repeats=5, fresh_repeats=2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs per run (default {EPOCHS})")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fresh-repeats", type=int, default=2, help="fresh-process pairs (0: skip that row)")
    parser.add_argument("--quick", action="store_true", help="1-epoch runs, one repeat, no fresh processes")
    args = parser.parse_args(argv)
    print(machine_line(), flush=True)
    rows = section(True) if args.quick else run(args.epochs, args.repeats, args.fresh_repeats)
    for row in rows:
        print(row.row(), flush=True)


if __name__ == "__main__":
    main()
