"""Side-by-side timing: alternate the two sides in one process, report median ratios with min-max."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass
class Comparison:
    """One benchmark line: ``ratio = ours / baseline`` of the measured quantity (seconds unless ``unit`` says)."""

    name: str
    ours_label: str
    baseline_label: str
    ours: list[float]
    baseline: list[float]
    target: str
    higher_is_better: bool = False
    unit: str = "s"

    @property
    def ratios(self) -> list[float]:
        return [o / b for o, b in zip(self.ours, self.baseline, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    def row(self) -> dict:
        ratios = self.ratios
        return {
            "benchmark": self.name,
            "ours": f"{self.ours_label}: {statistics.median(self.ours):.4g} {self.unit}",
            "baseline": f"{self.baseline_label}: {statistics.median(self.baseline):.4g} {self.unit}",
            "ratio (median)": f"{self.ratio:.3f}",
            "ratio min-max": f"{min(ratios):.3f}-{max(ratios):.3f}",
            "target": self.target,
        }


@dataclass
class Measurement:
    """A single-sided number (e.g. a redraw time or peak memory) with its target."""

    name: str
    values: list[float]
    unit: str
    target: str

    def row(self) -> dict:
        return {
            "benchmark": self.name,
            "ours": f"{statistics.median(self.values):.4g} {self.unit}",
            "baseline": "-",
            "ratio (median)": "-",
            "ratio min-max": f"{min(self.values):.4g}-{max(self.values):.4g} {self.unit}",
            "target": self.target,
        }


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for the block: tiny models train fastest so, and the second core
    stays free for the run log's (and an asynchronous Monitor's) background thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def time_call(fn: Callable[[], object], inner: int = 1) -> float:
    """Seconds per call of ``fn``, averaged over ``inner`` back-to-back calls (after a garbage
    collection, so neither side pays for the other's garbage)."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def alternate(
    ours: Callable[[], object], baseline: Callable[[], object], repeats: int = 7, inner: int = 1, warmup: int = 1
) -> tuple[list[float], list[float]]:
    """Time both sides ``repeats`` times, alternating which goes first, after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        ours()
        baseline()
    ours_times, baseline_times = [], []
    for i in range(repeats):
        if i % 2 == 0:
            ours_times.append(time_call(ours, inner))
            baseline_times.append(time_call(baseline, inner))
        else:
            baseline_times.append(time_call(baseline, inner))
            ours_times.append(time_call(ours, inner))
    return ours_times, baseline_times


def machine_line() -> str:
    import torch

    return (
        f"{platform.machine()} | {os.cpu_count()} CPUs | Python {platform.python_version()} | "
        f"torch {torch.__version__} | torch threads {torch.get_num_threads()}"
    )
