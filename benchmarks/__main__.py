"""``python -m benchmarks``: every speed comparison, side by side in one process, into docs/performance.md.

Each comparison alternates its two sides and repeats; the table shows median ratios with their min-max.
``--quick`` runs each with minimal repeats (a smoke run, numbers not meant for reporting).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import torch

from benchmarks._harness import machine_line

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("benchmark", "ours", "baseline", "ratio (median)", "ratio min-max", "target")


def _dict_row(name: str, ratio: float, low: float, high: float, ours: str, baseline: str, target: str) -> dict:
    return {
        "benchmark": name,
        "ours": ours,
        "baseline": baseline,
        "ratio (median)": f"{ratio:.3f}",
        "ratio min-max": f"{low:.3f}-{high:.3f}",
        "target": target,
    }


def _loss_cost(quick: bool) -> list[dict]:
    from benchmarks import loss_cost

    shapes = ((64, 100), (256, 1000)) if quick else loss_cost.SHAPES
    return [r.row() for r in loss_cost.run(shapes=shapes, repeats=3 if quick else 9)]


def _trainer_overhead(quick: bool) -> list[dict]:
    from benchmarks import trainer_overhead

    rows = []
    for student, teacher in trainer_overhead.PAIRS:
        r = trainer_overhead.measure(student, teacher, epochs=1 if quick else 30, repeats=2 if quick else 7)
        rows.append(
            _dict_row(
                f"trainer overhead: distill (diagnostics every 10 steps) vs bare loop, {r['pair']}, steps/s",
                r["ratio"],
                r["min"],
                r["max"],
                f"distill: {r['distill_steps_per_s']:.1f} steps/s",
                f"bare loop: {r['bare_steps_per_s']:.1f} steps/s",
                ">= 0.97x",
            )  # fmt: skip
        )
    return rows


def _diagnostics_overhead(quick: bool) -> list[dict]:
    from benchmarks import diagnostics_overhead

    return [r.row() for r in diagnostics_overhead.run(epochs=1 if quick else 15, repeats=2 if quick else 7)]


def _monitor_overhead(quick: bool) -> list[dict]:
    from benchmarks import monitor_overhead

    return [r.row() for r in monitor_overhead.run(epochs=1 if quick else 30, repeats=2 if quick else 7)]


def _runlog_scale(quick: bool) -> list[dict]:
    from benchmarks import runlog_scale

    return [r.row() for r in runlog_scale.run(("W1",) if quick else tuple(runlog_scale.WORKLOADS))]


def _teacher_cache(quick: bool) -> list[dict]:
    from benchmarks import teacher_cache

    rows = []
    for student, teacher in teacher_cache.PAIRS:
        r = teacher_cache.measure(student, teacher, epochs=2 if quick else 4, repeats=1 if quick else 5)
        label = f"teacher cache: epoch time cached vs recomputed, {r['pair']} (teacher {r['flops_ratio']:.0f}x FLOPs)"
        rows.append(
            _dict_row(
                f"{label}, steady epochs",
                r["steady"],
                *r["steady_range"],
                "cached",
                "recomputed",
                "<= 0.5x" if r["flops_ratio"] >= 4 else "-",
            )  # fmt: skip
        )
        rows.append(
            _dict_row(
                f"{label}, whole run incl. cache build", r["whole"], *r["whole_range"], "cached", "recomputed", "-"
            )
        )
    return rows


def _widget_redraw(quick: bool) -> list[dict]:
    from benchmarks import widget_redraw

    return [r.row() for r in widget_redraw.run(changes=5 if quick else 21)]


def _memory(quick: bool) -> list[dict]:
    from benchmarks import memory

    return [r.row() for r in memory.run()]


def _distributed(quick: bool) -> list[dict]:
    from benchmarks import distributed_overhead

    return [r.row() for r in distributed_overhead.run(["--steps", "10", "--repeats", "1"] if quick else [])]


def _published_step(quick: bool) -> list[dict]:
    from benchmarks import published_step

    return [r.row() for r in published_step.run(repeats=1 if quick else 7)]


def _analysis(quick: bool) -> list[dict]:
    from benchmarks import analysis_compare

    return [r.row() for r in analysis_compare.run(quick)]


def _sweep_overhead(quick: bool) -> list[dict]:
    from benchmarks import sweep_overhead

    return [r.row() for r in sweep_overhead.section(quick)]


SECTIONS = {
    "loss cost (forward + backward) vs kd_loss": _loss_cost,
    "trainer overhead": _trainer_overhead,
    "diagnostics overhead": _diagnostics_overhead,
    "Monitor overhead": _monitor_overhead,
    "run logs at scale (W1 digits, W2 CIFAR-100 240 epochs, W3 ImageNet-sized)": _runlog_scale,
    "teacher-logit cache": _teacher_cache,
    "widget redraw": _widget_redraw,
    "memory": _memory,
    "global-batch CSKD (2 processes, gloo)": _distributed,
    "analysis: compare and predict_logits": _analysis,
    "sweeps on Optuna: overhead and n_jobs=2 speed-up": _sweep_overhead,
    "published CSKD step (two views) vs cskd_cswt step": _published_step,
}


def _table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]).replace("|", "/") for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="minimal repeats: a smoke run, not for reporting")
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), help="run only these sections")
    parser.add_argument(
        "--output", default=str(ROOT / "docs" / "performance.md"), help="markdown file to write ('-': none)"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    header = f"{dt.date.today().isoformat()} | {machine_line()}"
    print(header, flush=True)
    sections = []
    for title, fn in SECTIONS.items():
        if args.only and title not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            rows = fn(args.quick)
        except Exception as error:  # noqa: BLE001 - one broken benchmark must not hide the others
            rows = [{c: "" for c in COLUMNS} | {"benchmark": f"{title}: FAILED ({type(error).__name__}: {error})"}]
        print(f"\n## {title}  ({time.perf_counter() - t0:.0f} s)\n{_table(rows)}", flush=True)
        sections.append((title, rows))
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s")
    if args.output != "-":
        body = [
            "# Performance",
            "",
            "Generated by `python -m benchmarks` (from the repository root, in the project venv). Every ratio is",
            "`ours / baseline` of the measured quantity (time, unless the row says steps/s), both sides run in one",
            "process, alternating, several repeats: median and min-max over repeats. Shared 2-core machines are noisy;",
            "compare ratios, not absolute times.",
            "",
            f"- date and machine: {header}",
            f"- mode: {'quick (smoke run)' if args.quick else 'full'}; total time {total:.0f} s",
            f"- torch intra-op threads at start: {torch.get_num_threads()}",
            "",
        ]
        for title, rows in sections:
            body += [f"## {title}", "", _table(rows), ""]
        body += [
            "## Reading the table",
            "",
            "- Loss rows: CSKD with CSWT needs the softmaxes at three temperatures (1, T and the per-sample T_i);",
            "  the fused kernel (`cskd_viz/_fused.py`) stacks T and T_i in one pass with a closed-form backward.",
            "- Trainer, diagnostics and Monitor overhead are measured on tiny digits models (steps of 1-4 ms), the",
            "  worst case for per-step Python work, with one torch thread. A logged step is checked and copied to",
            "  the host at once; its record (per-class cosine, accuracy, agreement, CSWT quantiles and histogram) is",
            "  computed with the other pending steps in a few NumPy operations at the next write. Whole runs are",
            "  timed, so each run's fixed costs (run directory, final compaction) count; on this shared machine",
            "  the same comparison moves by several percent between runs.",
            "- Run logs at scale: synthetic trainer-shaped records at W1/W2/W3 sizes, flushed every 50 records",
            "  with 20 ms of 'training' between flushes; bytes written include every part, compaction and",
            "  config.json write (see docs/run_format.md).",
            "- The teacher cache saves the teacher's forward pass only: with an MLP teacher on 8x8 digits the",
            "  step is dominated by data loading and the student, so the ratio stays near 0.9 although the",
            "  teacher has many times the student's FLOPs; with a CNN teacher it is well under 0.5.",
            "",
        ]
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text("\n".join(body))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
