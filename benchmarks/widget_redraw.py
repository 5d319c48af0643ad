"""Widget redraw: TemperatureTuner's in-place update after a slider move vs re-creating the figure.

Ours: set a slider's value (exactly what a browser slider drag does through the widget comm): the
tuner recomputes the losses, moves its artists, blits them on the cached background and encodes
the PNG. Baseline: the naive approach, building a new figure with the same three panels on every
change, drawing it in full and encoding it (``TemperatureTuner.render_fresh``). Both sides
alternate in one process. Target: median <= 150 ms at B = 1024, C = 100.

Run: ``python -m benchmarks.widget_redraw [--batch 1024 --classes 100 --changes 21]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from benchmarks._harness import Comparison, Measurement, alternate, machine_line, time_call  # noqa: E402

TARGET_MS = 150.0


def _logits(batch: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A trained-looking pair: the student is a noisy copy of a confident teacher."""
    gen = torch.Generator().manual_seed(seed)
    teacher = 3.0 * torch.randn(batch, classes, generator=gen)
    return teacher + 1.5 * torch.randn(batch, classes, generator=gen), teacher


def _slider_moves(tuner, slider, values):
    cycle = itertools.cycle(values)

    def move() -> None:
        slider.value = next(cycle)

    return move


def run(batch: int = 1024, classes: int = 100, changes: int = 21) -> list[Comparison | Measurement]:
    from cskd_viz.widgets import TemperatureTuner

    student, teacher = _logits(batch, classes)
    tuner = TemperatureTuner(student, teacher)
    # T_high swept up and down in slider steps: what a user dragging the slider produces.
    t_high_values = [round(6.0 + 0.1 * k, 1) for k in range(1, 21)] + [round(8.0 - 0.1 * k, 1) for k in range(1, 21)]
    ours_ms, base_ms = alternate(
        _slider_moves(tuner, tuner.t_high_slider, t_high_values), tuner.render_fresh, repeats=changes, warmup=2
    )
    ours_ms = [1e3 * t for t in ours_ms]
    base_ms = [1e3 * t for t in base_ms]
    shape = f"B={batch} C={classes}"
    results: list[Comparison | Measurement] = [
        Measurement(
            f"TemperatureTuner T_high slider move, redraw ({shape})", ours_ms, "ms", f"<= {TARGET_MS:g} ms median"
        ),
        Comparison(
            f"TemperatureTuner redraw vs re-creating the figure ({shape})",
            "in-place update",
            "new figure each change",
            ours_ms,
            base_ms,
            "< 1 (faster)",
            unit="ms",
        ),
    ]
    # Every control, in turn (T and batch-size moves may shift axis limits: some full redraws).
    moves = [
        _slider_moves(tuner, tuner.t_slider, [3.0, 3.5, 4.0, 4.5, 5.0, 4.5, 4.0, 3.5]),
        _slider_moves(tuner, tuner.t_low_slider, [1.5, 2.0, 2.5, 2.0]),
        _slider_moves(tuner, tuner.t_high_slider, [6.5, 7.0, 6.5, 6.0]),
        _slider_moves(tuner, tuner.batch_slider, [batch // 2, batch // 4, batch // 2, batch]),
        _slider_moves(tuner, tuner.cswt_toggle, [False, True]),
    ]
    full_before, redraws_before = tuner.full_redraws, tuner.redraws
    mixed_ms = [1e3 * time_call(moves[k % len(moves)]) for k in range(changes)]
    full = tuner.full_redraws - full_before
    results.append(
        Measurement(
            f"TemperatureTuner any control move ({shape}; {full} of {tuner.redraws - redraws_before} full redraws)",
            mixed_ms,
            "ms",
            f"<= {TARGET_MS:g} ms median",
        )
    )
    # CPU time of the same moves (this thread): close to the wall time of an idle core, and much
    # less sensitive than wall time to other processes sharing a busy machine.
    cpu_ms = []
    move = _slider_moves(tuner, tuner.t_high_slider, t_high_values)
    for _ in range(changes):
        start = time.thread_time()
        move()
        cpu_ms.append(1e3 * (time.thread_time() - start))
    results.append(Measurement(f"TemperatureTuner T_high slider move, CPU time ({shape})", cpu_ms, "ms", "-"))
    # Worst case: a move that shifts an axis range redraws the static parts (ticks, labels) too.
    full_ms = [1e3 * time_call(lambda: tuner.update(full=True)) for _ in range(changes)]
    results.append(
        Measurement(f"TemperatureTuner full redraw, axis ranges moved ({shape})", full_ms, "ms", "(worst case)")
    )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--changes", type=int, default=21, help="slider changes per side")
    args = parser.parse_args(argv)
    print(machine_line())
    for result in run(args.batch, args.classes, args.changes):
        row = result.row()
        if isinstance(result, Comparison):
            ours, base = statistics.median(result.ours), statistics.median(result.baseline)
            print(
                f"{row['benchmark']:<72} {ours:7.1f} ms vs {base:7.1f} ms: ratio {row['ratio (median)']} "
                f"(min-max {row['ratio min-max']}), {1 / result.ratio:.1f}x faster"
            )
        else:
            print(
                f"{row['benchmark']:<72} median {row['ours']} (min-max {row['ratio min-max']})  target {row['target']}"
            )


if __name__ == "__main__":
    main()
