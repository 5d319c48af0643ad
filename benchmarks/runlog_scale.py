"""Run logs at real scale: bytes written, memory while logging, flush time, load and compare times.

Workloads of trainer-shaped records (issue 10): **W1** digits-sized (C = 10, 1k logged steps),
**W2** the paper's CIFAR-100 recipe with ``log_every=10`` (C = 100, 18.7k logged steps), **W3**
ImageNet-sized (C = 1000, 10k logged steps), and W2 with ``log_every=1`` (187k logged steps).
The log is flushed in the background every 50 records, as the
Monitor does at about once a second, with 20 ms of "training" (a sleep) between flushes where a real
loop has about a second, and finished (compacted) at the end.
Run: ``python -m benchmarks.runlog_scale [--workloads W1 W2 W3]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._harness import Measurement, machine_line
from cskd_viz.runs import EvalRecord, RunLog, StepRecord, compare_runs, load_run

METRICS = ("loss", "loss_ce", "loss_cskd", "train_accuracy", "agreement", "mean_temperature", "cosine_distance")
METRICS = (*METRICS, "lr", "elapsed_s")
STATS = ("q05", "q25", "q50", "q75", "q95", "mean", "min", "max")
WORKLOADS = {"W1": (10, 1_000), "W2": (100, 18_700), "W3": (1000, 10_000), "W2-every-step": (100, 187_000)}
FLUSH_EVERY_OF = {"W2-every-step": 500}  # log_every=1: ~10x the records per second, so per flush
FLUSH_EVERY = 50
TRAINING_S = 0.02  # training between two flushes (a real loop spends ~1 s; the writer needs the slack)
TARGETS = {
    "bytes": "<= 2x",
    "rss": {"W1": "-", "W2": "<= 64 MB", "W3": "<= 128 MB", "W2-every-step": "<= 256 MB"},
    "flush": "<= 2 ms",
    "load_steps": {"W2": "<= 0.3 s"},
    "load_cosine": {"W2": "<= 1 s", "W3": "<= 3 s", "W2-every-step": "<= 5 s"},
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _records(classes: int, steps: int):
    rng = np.random.default_rng(0)
    edges = np.linspace(2.0, 6.0, 13).tolist()
    for step in range(1, steps + 1):
        metrics = dict(zip(METRICS, rng.random(len(METRICS)).tolist(), strict=True))
        cosine = rng.random(classes).tolist()
        stats = dict(zip(STATS, sorted((rng.random(len(STATS)) * 4 + 2).tolist()), strict=True))
        hist = [(edges[b], edges[b + 1], int(c)) for b, c in enumerate(rng.integers(0, 20, 12))]
        yield StepRecord(step, step // 780, metrics, cosine, stats, hist)


def write(path: Path, classes: int, steps: int, flush_every: int = FLUSH_EVERY) -> dict:
    """Log one workload to ``path``; what it cost."""
    base = _rss_mb()
    peak, flushes = base, []
    log = RunLog({"name": path.name, "method": "cskd_cswt"}, path=path)
    for record in _records(classes, steps):
        log.log_step(record)
        if record.step % 780 == 0:
            log.log_eval(EvalRecord(record.epoch, record.step, {"accuracy": 0.5, "agreement": 0.5, "loss": 1.0}))
        if record.step % flush_every == 0:
            start = time.perf_counter()
            log.flush(background=True)
            flushes.append(time.perf_counter() - start)
            peak = max(peak, _rss_mb())
            time.sleep(TRAINING_S)
    log.finish()
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return {"bytes_ratio": log.bytes_written / size, "size_mb": size / 2**20, "rss_mb": peak - base, "flushes": flushes}


def _timed(fn, repeats: int = 3) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _rows(name: str, label: str, cost: dict, path: Path) -> list[Measurement]:
    flush_ms = [1000 * s for s in cost["flushes"]]
    size = f"final size {cost['size_mb']:.1f} MB"
    flush = f"max {max(flush_ms):.2f} ms"
    return [
        Measurement(f"{label}: bytes written over the run / final size ({size})", [cost["bytes_ratio"]], "x",
                    TARGETS["bytes"]),
        Measurement(f"{label}: RSS growth while logging", [cost["rss_mb"]], "MB", TARGETS["rss"].get(name, "-")),
        Measurement(f"{label}: training-thread time per background flush (median; {flush})",
                    [statistics.median(flush_ms)], "ms", TARGETS["flush"]),
        Measurement(f"{label}: load_run + steps and evals frames",
                    _timed(lambda: (load_run(path).steps, load_run(path).evals)), "s",
                    TARGETS["load_steps"].get(name, "-")),
        Measurement(f"{label}: load_run + the full class_cosine frame", _timed(lambda: load_run(path).class_cosine),
                    "s", TARGETS["load_cosine"].get(name, "-")),
    ]  # fmt: skip


def label_of(name: str) -> str:
    classes, steps = WORKLOADS[name]
    return f"{name} (C={classes}, {steps} logged steps)"


def _heatmap(frame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cskd_viz import plots

    fig = plots.plot_class_cosine_heatmap(frame)
    fig.canvas.draw()
    plt.close(fig)


def _browser_rows(root: Path) -> list[Measurement]:
    try:
        from cskd_viz.widgets import RunBrowser
    except ImportError:  # ipywidgets is a dependency; this only guards a trimmed environment
        return []
    built, browser = [], None
    for _ in range(3):
        start = time.perf_counter()
        browser = RunBrowser(root)
        built.append(time.perf_counter() - start)
    refreshed = _timed(browser.refresh)
    return [
        Measurement("10 x W2: RunBrowser construction", built, "s", "<= 3 s"),
        Measurement("10 x W2: RunBrowser refresh", refreshed, "s", "<= 0.5 s"),
    ]


def run(workloads=("W1", "W2", "W3", "W2-every-step")) -> list[Measurement]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / "warm-up", 10, 100)  # imports and first-use costs out of the measurements
        for name in workloads:
            classes, steps = WORKLOADS[name]
            path = Path(tmp) / name
            cost = write(path, classes, steps, FLUSH_EVERY_OF.get(name, FLUSH_EVERY))
            rows += _rows(name, f"{name} (C={classes}, {steps} logged steps)", cost, path)
            rows.append(Measurement(f"{label_of(name)}: class-cosine heatmap (plot + draw)",
                                    _timed(lambda p=path: _heatmap(load_run(p).class_cosine)), "s",
                                    {"W2": "<= 0.5 s", "W3": "<= 2 s"}.get(name, "-")))  # fmt: skip
            if name == "W2":
                root = Path(tmp) / "ten"
                copies = [shutil.copytree(path, root / f"W2-{k}") for k in range(10)]
                compare_s = _timed(lambda c=copies: compare_runs(c))
                rows.append(Measurement("10 x W2: compare_runs", compare_s, "s", "<= 1 s"))
                rows += _browser_rows(root)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    args = parser.parse_args(argv)
    print(machine_line())
    for row in run(args.workloads):
        r = row.row()
        print(f"{r['benchmark']}: {r['ours']} (range {r['ratio min-max']}), target {r['target']}")


if __name__ == "__main__":
    main()
