"""Sweep overhead: ``experiments.sweep`` (Optuna study in SQLite, GridSampler, trial bookkeeping) against the
same runs called in a plain ``run_experiment`` loop; and the speed-up of ``n_jobs=2`` worker processes.

Both sides run the same 8 configs (KD / CSKD / CSKD+CSWT / CE x 2 seeds, ``mlp_small`` students of one
pre-trained ``mlp_large`` teacher on digits), one torch thread, into fresh directories. Target (issue 12):
sweep time <= 1.05x the plain loop. The parallel row is ``time(n_jobs=1) / time(n_jobs=2)`` (a speed-up:
higher is better; at most 2 on 2 cores, less on a shared machine; it includes spawning two Python
processes that import torch). Run: ``python -m benchmarks.sweep_overhead``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import tempfile
from pathlib import Path

from benchmarks._harness import Comparison, alternate, machine_line, one_torch_thread

METHODS = ("ce", "kd", "cskd", "cskd_cswt")
SEEDS = 2


def _base(tmp: Path, epochs: int):
    from cskd_viz.training import RunConfig, run_experiment

    teacher = RunConfig(student="mlp_large", teacher=None, method="ce", epochs=10, name="bench-teacher")
    log = run_experiment(teacher, tmp, progress=False, overwrite=True)
    return RunConfig(student="mlp_small", teacher="mlp_large", teacher_checkpoint=str(log.path / "model.pt"),
                     epochs=epochs)  # fmt: skip


def run(epochs: int = 5, repeats: int = 5) -> list[Comparison]:
    """The overhead row (sweep vs plain loop) and the parallel row (n_jobs=1 vs 2)."""
    from cskd_viz.experiments import sweep
    from cskd_viz.training import run_experiment

    counter = itertools.count()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = _base(tmp, epochs)
        grid = {"method": list(METHODS)}
        configs = [dataclasses.replace(base, method=m, seed=s, name=f"loop-{m}-{s}") for m in METHODS for s in
                   range(SEEDS)]  # fmt: skip

        def plain() -> None:
            where = tmp / f"plain{next(counter)}"
            for config in configs:
                run_experiment(config, where, progress=False)

        def studied(n_jobs: int = 1):
            def call() -> None:
                where = tmp / f"sweep{next(counter)}"
                sweep(base, grid, seeds=SEEDS, study_name="bench", runs_dir=where, n_jobs=n_jobs)

            return call

        with one_torch_thread():
            ours, baseline = alternate(studied(1), plain, repeats=repeats, warmup=1)
            parallel, serial = alternate(studied(2), studied(1), repeats=max(2, repeats // 2), warmup=0)
    n_runs = len(METHODS) * SEEDS
    overhead = Comparison(
        f"sweep overhead: experiments.sweep vs plain run_experiment loop, {n_runs} runs of {epochs} epochs",
        "sweep (Optuna, SQLite)", "plain loop", ours, baseline, "<= 1.05x",
    )  # fmt: skip
    speedup = Comparison(
        f"sweep parallel speed-up: n_jobs=1 time / n_jobs=2 time, {n_runs} runs (higher is better)",
        "n_jobs=1", "n_jobs=2", serial, parallel, ">= 1.3x on 2 free cores", higher_is_better=True,
    )  # fmt: skip
    return [overhead, speedup]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(machine_line())
    for row in run(args.epochs, args.repeats):
        print(row.row())


if __name__ == "__main__":
    main()
