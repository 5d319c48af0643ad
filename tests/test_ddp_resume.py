"""Resuming under ``torchrun``: 2 gloo processes train ``cskd_published`` on stand-in CIFAR-10, exactly resumed.

Two launches of this file (its ``__main__`` part runs ``cskd_viz.cli.main`` in each process, after
patching torchvision's md5 sums for the stand-in files; nothing else differs from ``cskd-viz train``):

1. ``full``: 2 epochs; then ``cut``: the same flags, stopped at the end of epoch 0 (rank 0's callback
   sets the stop event, the ranks agree at the epoch end), which leaves its checkpoint ``epoch-0001.pt``;
2. ``cut --resume`` in fresh processes.

The resumed run must equal the uninterrupted one: the same weights bit for bit (gloo sums the two
ranks' gradients as ``a + b`` on both, so the all-reduce is deterministic here), the same run log
rows (every step once, none missing; ``elapsed_s`` aside, which only grows), and the two-view
method's terms all logged. Bounded in time like ``tests/test_ddp_train.py``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchrun_launch import torchrun

WORLD = 2
STEPS_PER_EPOCH = 4  # 32 training images, 16 per rank, batches of 4
_DEADLINE_S = 150

FLAGS = [
    "train", "--dataset", "cifar10", "--student", "mlp_small", "--teacher", "mlp_large", "--method", "cskd_published",
    "--epochs", "2", "--batch-size", "4", "--log-every", "1", "--checkpoint-every", "1", "--seed", "0",
    "--no-progress", "--runs-dir", "runs",
]  # fmt: skip


def _launch(tmp: Path, mode: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2`` of this file in ``mode``; killed after ``_DEADLINE_S``."""
    target = [__file__, mode, *FLAGS, "--teacher-checkpoint", str(tmp / "teacher.pt")]
    return torchrun(target, cwd=tmp, nproc=WORLD, deadline_s=_DEADLINE_S, env={"CSKD_DATA": str(tmp / "data")})


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The runs root after both launches, and the first launch's run of ``cut`` as it was before resuming."""
    from standin_data import write_cifar

    from cskd_viz.models import get_model
    from cskd_viz.runs import load_run
    from cskd_viz.train import save_checkpoint

    tmp = tmp_path_factory.mktemp("ddp_resume")
    write_cifar(tmp / "data", "cifar10", n_train=8 * STEPS_PER_EPOCH, n_test=8)
    torch.manual_seed(0)
    save_checkpoint(get_model("mlp_large", 10, (3, 32, 32)), tmp / "teacher.pt")
    first = _launch(tmp, "full-and-cut")
    assert first.returncode == 0, first.stdout[-4000:]
    cut = load_run(tmp / "runs" / "cut")
    before = {"status": cut.status, "progress": cut.progress, "steps": cut.steps["step"].tolist()}
    before["checkpoints"] = sorted(p.name for p in (tmp / "runs" / "cut" / "checkpoints").iterdir())
    second = _launch(tmp, "resume")
    assert second.returncode == 0, second.stdout[-4000:]
    assert second.stdout.count("run log:") == 1 and "status: finished" in second.stdout  # rank 0 prints
    return tmp / "runs", before


def _frames(path: Path) -> dict[str, pd.DataFrame]:
    from cskd_viz.runs import FRAMES, load_run

    log = load_run(path)
    return {name: log.frame(name).drop(columns=["elapsed_s"], errors="ignore") for name in FRAMES}


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.timeout(360)
def test_a_two_process_run_resumed_equals_the_uninterrupted_one(launched):
    from cskd_viz.runs import load_run

    runs, before = launched
    assert sorted(p.name for p in runs.iterdir()) == ["cut", "full"]  # one writer: no "-2" directories
    assert before["status"] == "interrupted" and before["progress"]["step"] == STEPS_PER_EPOCH
    assert before["steps"] == list(range(1, STEPS_PER_EPOCH + 1)) and before["checkpoints"] == ["epoch-0001.pt"]
    full, resumed = load_run(runs / "full"), load_run(runs / "cut")
    assert full.status == resumed.status == "finished" and resumed.progress == full.progress
    assert resumed.config["world_size"] == WORLD and resumed.config["method"] == "cskd_published"
    ours, theirs = _frames(runs / "cut"), _frames(runs / "full")
    for name in ours:
        pd.testing.assert_frame_equal(ours[name], theirs[name], check_exact=True, obj=name)
    assert ours["steps"]["step"].tolist() == list(range(1, 2 * STEPS_PER_EPOCH + 1))  # none twice, none missing
    assert resumed.steps["elapsed_s"].is_monotonic_increasing  # the training time goes on across the resume
    a = torch.load(runs / "cut" / "model.pt", weights_only=True)["model"]
    b = torch.load(runs / "full" / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the published objective under DDP: every term logged, finite; its temperatures and the weak view's diagnostics
    terms = ["loss", "loss_ce", "loss_kd", "loss_cc", "loss_bc", "agreement", "mean_temperature"]
    assert np.isfinite(resumed.steps[terms].to_numpy()).all() and len(resumed.evals) == 2
    assert resumed.config["teacher_cache"] is False and len(resumed.temperatures) == 2 * STEPS_PER_EPOCH


# ----------------------------------------------------------------------------- the processes


def _worker(mode: str, argv: list[str]) -> int:
    """One process of a launch: ``cskd-viz train`` (``cskd_viz.cli.main``) on the stand-in files."""
    from standin_data import patch_torchvision_md5

    from cskd_viz import cli, train
    from cskd_viz.train import LambdaCallback, distributed_session

    folder = Path(os.environ["CSKD_DATA"]) / "cifar-10-batches-py"
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}
    patch_torchvision_md5(pytest.MonkeyPatch(), "cifar10", md5)  # the process ends: never undone
    if mode == "resume":
        return cli.main([*argv, "--name", "cut", "--resume"])
    with distributed_session("cpu"):  # one process group for both runs (cli.main's own session is then a no-op)
        if cli.main([*argv, "--name", "full"]) != 0:
            return 1
        stop = threading.Event()
        callback = LambdaCallback(on_epoch_end=lambda epoch, record: stop.set())  # on rank 0: callbacks run there
        run_experiment = train.run_experiment
        train.run_experiment = lambda *a, **k: run_experiment(*a, callbacks=[callback], stop_event=stop, **k)
        return 0 if cli.main([*argv, "--name", "cut"]) == 1 else 1  # 1: the run ended interrupted, as it should


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], sys.argv[2:]))
