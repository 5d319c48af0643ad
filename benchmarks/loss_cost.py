"""Loss cost: forward + backward of CSKD (CSWT on/off) and DIST, each relative to KD on the same logits.

Per shape ``(B, C)`` the four losses run round-robin in one process: every round times each of
``kd_loss``, ``cskd_loss`` (CSWT on), ``cskd_loss`` (CSWT off) and ``dist_loss`` over ``inner``
back-to-back steps (a step: forward, ``backward()``, gradient reset; student logits require grad,
teacher logits do not; ``inner`` makes a timed block >= 20 ms), the order rotating from round to
round, after two warm-up rounds; at least ``repeats`` rounds, more (up to 4x) while a shape has
run for less than 2 s. Each round gives one ratio ``loss / kd_loss`` per candidate (paired:
machine load hits both sides of a ratio alike); the table shows the median ratio and its min-max
over rounds. Python's garbage collector is paused while timing.

Threads: the measurement runs with ``torch.set_num_threads(n)`` for each ``n`` in ``threads``
(default: 1, the setting of the CLI demo and of the widgets, and stable on shared machines) and
restores the previous setting; the thread count is part of every row's name.

Run: ``python -m benchmarks.loss_cost [--repeats 15] [--threads 1 2] [--shapes 64x100 1024x1000]``.
"""

from __future__ import annotations

import argparse
import gc
import math
import time
from collections.abc import Callable, Sequence

import torch

from benchmarks._harness import Comparison, machine_line
from cskd_viz import losses

SHAPES = ((64, 100), (256, 100), (256, 1000), (1024, 1000))
BASELINE = "kd_loss"
CANDIDATES: dict[str, tuple[Callable, str]] = {  # label: (loss on (student, teacher), target)
    "cskd_loss (CSWT on)": (lambda s, t: losses.cskd_loss(s, t, cswt=True), "<= 2.5x"),
    "cskd_loss (CSWT off)": (lambda s, t: losses.cskd_loss(s, t, cswt=False), "-"),
    "dist_loss": (lambda s, t: losses.dist_loss(s, t), "-"),
}
BLOCK_SECONDS = 0.02  # each timed block runs at least this long (timer resolution, scheduler noise)
MIN_SECONDS = 2.0  # per shape: more rounds than ``repeats`` (up to 4x) when rounds are short


def _step(loss_fn: Callable, student: torch.Tensor, teacher: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        student.grad = None
        loss_fn(student, teacher).backward()

    return step


def _round_robin(steps: dict[str, Callable[[], None]], repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per step of every function over >= ``repeats`` rounds, the order rotating each round."""
    start = time.perf_counter()
    steps[BASELINE]()
    inner = max(1, round(BLOCK_SECONDS / max(time.perf_counter() - start, 1e-6)))
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    rounds, round_index, started = warmup + repeats, 0, None
    while round_index < rounds:
        if round_index == warmup + 1:  # one timed round done: extend short runs up to MIN_SECONDS
            elapsed = time.perf_counter() - started
            rounds = warmup + max(repeats, min(4 * repeats, math.ceil(MIN_SECONDS / max(elapsed, 1e-6))))
        if round_index == warmup:
            started = time.perf_counter()
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            step = steps[name]
            start = time.perf_counter()
            for _ in range(inner):
                step()
            if round_index >= warmup:
                times[name].append((time.perf_counter() - start) / inner)
        round_index += 1
    return times


def run(
    shapes: Sequence[tuple[int, int]] = SHAPES, repeats: int = 9, threads: Sequence[int] = (1,)
) -> list[Comparison]:
    """One :class:`Comparison` per (thread count, shape, candidate loss), each against ``kd_loss``."""
    results = []
    previous_threads = torch.get_num_threads()
    gc_was_enabled = gc.isenabled()
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for batch, classes in shapes:
                gen = torch.Generator().manual_seed(0)
                student = torch.randn(batch, classes, generator=gen).requires_grad_()
                teacher = torch.randn(batch, classes, generator=gen) * 2
                steps = {BASELINE: _step(losses.kd_loss, student, teacher)}
                steps.update({label: _step(fn, student, teacher) for label, (fn, _) in CANDIDATES.items()})
                gc.collect()
                gc.disable()
                try:
                    times = _round_robin(steps, repeats)
                finally:
                    if gc_was_enabled:
                        gc.enable()
                suffix = f"fwd+bwd, B={batch} C={classes}, {n_threads} thread{'s' if n_threads > 1 else ''}"
                for label, (_, target) in CANDIDATES.items():
                    name = f"{label} vs {BASELINE}, {suffix}"
                    results.append(Comparison(name, label, BASELINE, times[label], times[BASELINE], target))
    finally:
        torch.set_num_threads(previous_threads)
    return results


def _shape(text: str) -> tuple[int, int]:
    batch, classes = text.lower().split("x")
    return int(batch), int(classes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loss_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per shape (default 15)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch intra-op thread counts (default 1)")
    parser.add_argument("--shapes", type=_shape, nargs="+", default=list(SHAPES), help="BxC, e.g. 64x100 1024x1000")
    args = parser.parse_args(argv)
    print(machine_line(), "(threads at start; each row names the count it ran with)")
    for result in run(shapes=args.shapes, repeats=args.repeats, threads=args.threads):
        row = result.row()
        print(
            f"{row['benchmark']:<78} ratio {row['ratio (median)']} ({row['ratio min-max']})  "
            f"{row['ours']} | {row['baseline']}  target {row['target']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
