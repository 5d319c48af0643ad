"""Sweeps whose runs are 2-process data-parallel launches (``nproc_per_run=2``): local against global batch.

One small sweep (``global_batch`` in {False, True}, 1 seed, a few steps, 2 gloo processes per run) is
shared by the tests; a launch that fails is a ``FAIL`` trial with the end of its output stored.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from cskd_viz.experiments import sweep
from cskd_viz.experiments._study import Plan
from cskd_viz.runs import load_run
from cskd_viz.training import RunConfig, run_experiment

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(300)]

STEPS = 3


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    runs = tmp_path_factory.mktemp("teacher")
    config = RunConfig(student="mlp_small", teacher=None, method="ce", max_steps=20, epochs=None, name="t")
    return str(run_experiment(config, runs, progress=False).path / "model.pt")


@pytest.fixture(scope="module")
def local_and_global(tmp_path_factory, teacher):
    runs = tmp_path_factory.mktemp("ddp-sweep")
    base = RunConfig(
        student="mlp_small", teacher="mlp_small", teacher_checkpoint=teacher, method="cskd_cswt",
        batch_size=16, epochs=None, max_steps=STEPS, log_every=1,
    )  # fmt: skip
    result = sweep(base, {"global_batch": [False, True]}, seeds=1, study_name="ddp", runs_dir=runs, nproc_per_run=2)
    return base, runs, result


def test_each_trial_is_one_two_process_run(local_and_global):
    _, runs, result = local_and_global
    frame = result.frame()
    assert sorted(frame["state"]) == ["COMPLETE", "COMPLETE"], frame.get("error")
    assert sorted(frame["global_batch"]) == [False, True]
    for row in frame.itertuples():
        log = load_run(row.run_dir)  # rank 0 wrote it, once: no "-2" directory next to it
        assert log.status == "finished" and log.progress["step"] == STEPS
        assert log.config["world_size"] == 2 and log.config["global_batch"] is bool(row.global_batch)
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ["ddp-0000", "ddp-0001"]


def test_local_and_global_batch_train_different_students(local_and_global):
    """Same data, same start: only the scope of the CSKD loss differs, so the first losses differ."""
    _, _, result = local_and_global
    frame = result.frame().sort_values("global_batch")
    first = [float(load_run(d).steps["loss"].iloc[0]) for d in frame["run_dir"]]
    assert first[0] != pytest.approx(first[1], rel=1e-6, abs=0)


def test_the_study_remembers_the_process_count(local_and_global):
    base, runs, _ = local_and_global
    with pytest.raises(ValueError, match=r"different nproc.*new study_name"):
        sweep(base, {"global_batch": [False, True]}, seeds=1, study_name="ddp", runs_dir=runs)
    again = sweep(base, {"global_batch": [False, True]}, seeds=1, study_name="ddp", runs_dir=runs, nproc_per_run=2)
    assert len(again.frame()) == 2  # resumed: nothing ran twice


def test_a_failed_launch_is_a_failed_trial_with_its_output(tmp_path, teacher):
    base = RunConfig(
        student="mlp_small", teacher="mlp_large", teacher_checkpoint=teacher, method="cskd",  # does not fit
        batch_size=16, epochs=None, max_steps=STEPS,
    )  # fmt: skip
    result = sweep(base, {"method": ["cskd"]}, seeds=1, study_name="bad", runs_dir=tmp_path, nproc_per_run=2)
    failures = result.failures()
    assert len(failures) == 1
    error = failures["error"].iloc[0]
    assert "2-process launch exited with status" in error and "teacher" in error


def test_nproc_per_run_is_checked_and_only_fingerprinted_above_one():
    base = RunConfig()
    with pytest.raises(ValueError, match="nproc_per_run must be an int >= 1, got 0"):
        sweep(base, {"method": ["kd"]}, study_name="x", nproc_per_run=0)
    one = Plan("sweep", "x", "sqlite://", base, {"seed": [0]}, 1, "best_accuracy", "maximize", "runs")
    two = Plan("sweep", "x", "sqlite://", base, {"seed": [0]}, 1, "best_accuracy", "maximize", "runs", nproc=2)
    assert "nproc" not in one.fingerprint() and two.fingerprint()["nproc"] == 2


def test_ctrl_c_reaches_every_rank_and_the_run_log_is_kept(tmp_path, teacher):
    """Ctrl-C while a launch trains: both ranks stop, rank 0's run log is saved as interrupted and loads."""
    from cskd_viz.experiments._launch import run_distributed

    config = RunConfig(
        student="mlp_small", teacher="mlp_small", teacher_checkpoint=teacher, method="cskd", batch_size=16,
        epochs=500, name="long",
    )  # fmt: skip
    steps = tmp_path / "long" / "steps"

    def interrupt_once_training() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (steps.is_dir() and any(steps.iterdir())):
            time.sleep(0.2)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=interrupt_once_training, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_distributed(config, tmp_path, 2)
    log = load_run(tmp_path / "long")
    assert log.status == "interrupted" and 0 < log.progress["step"] < 500 * 57
