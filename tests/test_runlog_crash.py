"""Run logs under SIGKILL and concurrent readers: real processes, real files.

A writer process (this file run as a script) logs steps 1, 2, ... with a background flush after
each few steps, then finishes (flush, compaction, final status). The tests kill it at random
moments, including while it compacts, and read the run while it writes. After every kill the run
loads, its steps are exactly 1..k for some k (nothing lost in the middle, nothing twice), and it
says ``running`` unless every step is in place and it says ``finished``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = 400
FLUSH_EVERY = 2


def _writer(path: str, steps: int, pause_s: float) -> None:
    from cskd_viz.runs import EvalRecord, RunLog, StepRecord

    log = RunLog({"name": "crash", "method": "cskd_cswt"}, path=path)
    print("ready", flush=True)
    for step in range(1, steps + 1):
        metrics = {"loss": 1.0 / step, "loss_ce": 0.5 / step, "agreement": 0.5, "lr": 0.1}
        stats = dict(q05=2.1, q25=3.0, q50=4.0, q75=5.0, q95=5.9, mean=4.0, min=2.0, max=6.0)
        hist = [(2.0, 4.0, 3), (4.0, 6.0, 5)]
        log.log_step(StepRecord(step, step // 50, metrics, [0.5 + step / 1000] * 10, stats, hist))
        if step % 50 == 0:
            log.log_eval(EvalRecord(step // 50, step, {"accuracy": 0.5, "agreement": 0.5, "loss": 1.0}))
        if step % FLUSH_EVERY == 0:
            log.flush(background=True)
        if pause_s:
            time.sleep(pause_s)
    print("compacting", flush=True)
    log.finish()
    print("done", flush=True)


def _start(path: Path, pause_s: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, str(path), str(STEPS), str(pause_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )


def _check(path: Path) -> int:
    """Load the run and check what it shows; the number of steps it holds."""
    from cskd_viz.runs import load_run

    log = load_run(path)
    steps = log.steps["step"].tolist()
    assert steps == list(range(1, len(steps) + 1)), f"steps are not 1..k: {steps[:5]}...{steps[-5:]}"
    cosine = log.class_cosine
    assert cosine["step"].unique().tolist() == steps and len(cosine) == 10 * len(steps)
    assert log.temperatures["step"].tolist() == steps
    assert log.temperature_hist["step"].tolist() == [s for s in steps for _ in range(2)]
    assert log.evals["step"].tolist() == [s for s in steps if s % 50 == 0]
    assert (log.status == "finished") == (len(steps) == STEPS) or log.status == "running"
    assert log.status in ("running", "finished")
    assert not (log.status == "finished" and len(steps) != STEPS)
    return len(steps)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_at_random_moments_leaves_a_run_that_loads(tmp_path):
    rng = random.Random(20261201)
    seen = {"during writing": 0, "while compacting": 0}
    for k in range(24):
        path = tmp_path / f"run{k}"
        proc = _start(path)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        if k % 3 == 2:  # a third of the kills aim at the compaction
            assert proc.stdout.readline().strip() == "compacting", proc.stderr.read()
            time.sleep(rng.uniform(0.0, 0.15))
            kind = "while compacting"
        else:
            time.sleep(rng.uniform(0.0, 1.2))
            kind = "during writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.returncode == -signal.SIGKILL:
            seen[kind] += 1
        _check(path)
        proc.stdout.close()
        proc.stderr.close()
    assert seen["during writing"] >= 10 and seen["while compacting"] >= 4, seen


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_run_reads_consistently_while_it_is_written(tmp_path):
    from cskd_viz.runs import load_run

    path = tmp_path / "live"
    proc = _start(path, pause_s=0.002)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    counts, reader = [], None
    while proc.poll() is None:
        counts.append(_check(path))  # a fresh reader each time
        if reader is None:
            reader = load_run(path)
        steps = reader.refresh().steps["step"].tolist()  # one reader, reading only new parts each time
        assert steps == list(range(1, len(steps) + 1))
    assert proc.returncode == 0, proc.stderr.read()
    assert counts == sorted(counts) and len(counts) >= 3
    assert _check(path) == STEPS and load_run(path).status == "finished"
    assert reader.refresh().status == "finished"
    assert reader.steps["step"].tolist() == list(range(1, STEPS + 1))


if __name__ == "__main__":
    _writer(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
