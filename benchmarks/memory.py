"""Memory: peak RSS of a digits demo run, and accumulator state that stays flat in the number of steps.

The accumulator side is compared with the naive alternative it replaces (keeping every batch's logits to
compute the epoch cosine at the end): the state of ``PerClassCosineAccumulator`` does not grow with the
number of updates, the list of logits grows linearly.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile

from benchmarks._harness import Measurement

_ACCUMULATOR_PROBE = r"""
import json, os, sys, torch
from cskd_viz.diagnostics import PerClassCosineAccumulator, TemperatureStatsAccumulator
def rss_kb():  # resident set size now (peak RSS would be dominated by torch's import)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
steps, keep = int(sys.argv[1]), sys.argv[2] == "keep"
torch.manual_seed(0)
acc, temps, kept = PerClassCosineAccumulator(100), TemperatureStatsAccumulator(), []
s, t = torch.randn(256, 100), torch.randn(256, 100)
acc.update(s, t); temps.update(torch.rand(256) * 4 + 2); acc.reset(); temps.reset()  # warm up allocations
before = rss_kb()
for _ in range(steps):
    s.add_(0.01)
    if keep:
        kept.append((s.clone(), t.clone()))
    else:
        acc.update(s, t)
        temps.update(torch.rand(256) * 4 + 2)
state = sum(x.numel() * x.element_size() for x in (acc.dot, acc.student_sq, acc.teacher_sq, acc.batch_cosine_sum))
state += sum(a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in kept)
print(json.dumps({"state_bytes": state, "rss_growth_kb": rss_kb() - before}))
"""


def _probe(steps: int, keep: bool) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _ACCUMULATOR_PROBE, str(steps), "keep" if keep else "acc"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def demo_peak_rss_mb() -> float:
    """Peak RSS (MB) of ``cskd-viz demo`` in fast mode, run as a child process in a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, CSKD_VIZ_FAST="1", MPLBACKEND="Agg")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        command = [sys.executable, "-m", "cskd_viz.cli", "demo", "--runs-dir", "runs", "--out", "out"]
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=tmp)
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024


def run() -> list[Measurement]:
    results = [Measurement("peak RSS of `cskd-viz demo` (CSKD_VIZ_FAST=1)", [demo_peak_rss_mb()], "MB", "report")]
    for label, keep in (("PerClassCosineAccumulator", False), ("baseline: keep every logit", True)):
        target = "flat in steps" if not keep else "grows (baseline)"
        for steps in (100, 2000):
            probe = _probe(steps, keep)
            results.append(
                Measurement(
                    f"{label}: state after {steps} updates of (256, 100)", [probe["state_bytes"] / 1024], "KiB", target
                )
            )
            results.append(
                Measurement(f"{label}: RSS growth over {steps} updates", [probe["rss_growth_kb"] / 1024], "MB", target)
            )
    return results


def main() -> None:
    for result in run():
        row = result.row()
        print(f"{row['benchmark']:<70} {row['ours']:>14}  (values {row['ratio min-max']})  target {row['target']}")


if __name__ == "__main__":
    main()
