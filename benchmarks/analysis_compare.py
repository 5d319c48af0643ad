"""``cskd_viz.analysis``: ``compare`` time and memory at dataset sizes, ``predict_logits`` with its cache.

- ``compare`` on CIFAR-100-test-sized logits (N=10,000, C=100) and 3 students: seconds per call,
  with torch's default threads and with one thread (on a shared 2-core machine a busy second core
  makes two-thread kernels wait; the single-thread number shows the work itself). Target <= 2 s.
- ``compare`` on ImageNet-val-sized logits (N=50,000, C=1,000), 3 students, in a child process:
  seconds and the peak-RSS growth during the call (``ru_maxrss`` after the call minus the resident
  set before it, the logits already allocated; Linux ``/proc``). Target <= 4096 MB.
- ``predict_logits`` of a small CNN over N CIFAR-shaped samples: the second call with a warm cache
  against a call without cache, alternating. Target <= 0.05x.

Run: ``python -m benchmarks.analysis_compare [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch
from torch.utils.data import TensorDataset

from benchmarks._harness import Comparison, Measurement, alternate, machine_line, one_torch_thread

_LARGE_PROBE = r"""
import json, resource, sys, time, torch
from cskd_viz.analysis import compare
n, c = int(sys.argv[1]), int(sys.argv[2])
g = torch.Generator().manual_seed(0)
teacher = 3 * torch.randn(n, c, generator=g)
targets = torch.randint(0, c, (n,), generator=g)
students = {f"s{i}": teacher + (i + 1) * torch.randn(n, c, generator=g) for i in range(3)}
def rss_kb():  # resident now; the peak before may sit above it (temporaries of the setup)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024
before = rss_kb()
start = time.perf_counter()
compare(teacher, students, targets)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "rss_growth_mb": (after - before) / 1024}))
"""


def _logits(n: int, classes: int, students: int = 3):
    g = torch.Generator().manual_seed(0)
    teacher = 3 * torch.randn(n, classes, generator=g)
    targets = torch.randint(0, classes, (n,), generator=g)
    noisy = {f"s{i}": teacher + (i + 1) * torch.randn(n, classes, generator=g) for i in range(students)}
    return teacher, noisy, targets


def compare_time(repeats: int) -> list[Measurement]:
    """Seconds per ``compare`` call at CIFAR-100-test size, default threads and one thread."""
    from cskd_viz.analysis import compare

    teacher, students, targets = _logits(10_000, 100)
    compare(teacher, students, targets)  # warm-up

    def timed() -> list[float]:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            compare(teacher, students, targets)
            times.append(time.perf_counter() - start)
        return times

    threads = torch.get_num_threads()
    default = timed()
    with one_torch_thread():
        single = timed()
    name = "compare: N=10,000, C=100, 3 students (CIFAR-100 test)"
    return [
        Measurement(f"{name}, {threads} torch threads", default, "s", "<= 2 s"),
        Measurement(f"{name}, 1 torch thread", single, "s", "<= 2 s"),
    ]


def compare_large(n: int = 50_000, classes: int = 1_000) -> list[Measurement]:
    """Time and peak-RSS growth of one ``compare`` call on ``(n, classes)`` logits, in a child process."""
    out = subprocess.run(
        [sys.executable, "-c", _LARGE_PROBE, str(n), str(classes)], check=True, capture_output=True, text=True
    )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    name = f"compare: N={n:,}, C={classes:,}, 3 students{' (ImageNet val)' if n == 50_000 else ''}"
    return [
        Measurement(f"{name}: time", [probe["seconds"]], "s", "report"),
        Measurement(f"{name}: peak RSS growth", [probe["rss_growth_mb"]], "MB", "<= 4096 MB"),
    ]


def predict_cache(n: int, repeats: int) -> Comparison:
    """``predict_logits`` with a warm cache against no cache (a small CNN, CIFAR-shaped inputs)."""
    from cskd_viz.analysis import predict_logits
    from cskd_viz.models import get_model

    torch.manual_seed(0)
    model = get_model("cnn_large", 100, (3, 32, 32))
    data = TensorDataset(torch.randn(n, 3, 32, 32), torch.randint(0, 100, (n,)))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        predict_logits(model, data, device="cpu", cache=tmp, progress=False)  # builds the cache
        first = time.perf_counter() - start
        cached, bare = alternate(
            lambda: predict_logits(model, data, device="cpu", cache=tmp, progress=False),
            lambda: predict_logits(model, data, device="cpu", progress=False),
            repeats=repeats,
            warmup=0,
        )  # fmt: skip
    return Comparison(
        f"predict_logits: cnn_large over N={n:,} CIFAR-shaped samples, second call (first with cache: {first:.2f} s)",
        "warm cache",
        "no cache",
        cached,
        bare,
        "<= 0.05x",
    )


def run(quick: bool = False) -> list:
    """Every row of the section (``quick``: fewer repeats, and the large case at N=10,000, C=1,000)."""
    rows: list = compare_time(repeats=2 if quick else 5)
    rows += compare_large(10_000, 1_000) if quick else compare_large()
    rows.append(predict_cache(n=1_000 if quick else 2_000, repeats=1 if quick else 3))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a smaller large case")
    args = parser.parse_args(argv)
    print(machine_line())
    for result in run(args.quick):
        row = result.row()
        print(f"{row['benchmark']}: {row['ours']} | {row['baseline']} | ratio {row['ratio (median)']} "
              f"({row['ratio min-max']}) | target {row['target']}")  # fmt: skip


if __name__ == "__main__":
    main()
