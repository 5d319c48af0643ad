"""Training checkpoints and resume: exact continuation, the errors, ``--resume``, ``--amp``, LR milestones.

The trainer trains float32 models (the loaders yield float32), so exactness is checked in float32 with
``torch.use_deterministic_algorithms(True)``; a float64 model is refused under ``amp`` (tested below).
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading

import pandas as pd
import pytest
import torch

from cskd_viz.cli import main
from cskd_viz.data import make_loaders
from cskd_viz.models import get_model
from cskd_viz.runs import FRAMES, load_run
from cskd_viz.train import LambdaCallback, RunConfig, run_experiment, train_teacher
from cskd_viz.training.experiment import _reuse_teacher
from cskd_viz.training.precision import Precision
from cskd_viz.training.resume import ResumeError, checkpoint_files, read_checkpoint

# digits: 1347 training images, 21 batches of 64 per epoch (drop_last) -> 84 steps in 4 epochs
BASE = RunConfig(student="mlp_small", teacher="mlp_large", teacher_epochs=1, epochs=4, log_every=3, checkpoint_every=1)
STEPS_PER_EPOCH = 21


@pytest.fixture(autouse=True, scope="module")
def deterministic():
    threads, mode = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(mode)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs root whose auto-teacher is trained once, and the uninterrupted reference run."""
    root = tmp_path_factory.mktemp("runs")
    full = run_experiment(dataclasses.replace(BASE, name="full"), root, progress=False)
    assert full.status == "finished"
    return root, load_run(full.path)


def _stopped(root, name, *, at_step=None, at_epoch=None, fail=False, **changes):
    """A run of BASE stopped after step ``at_step`` (mid-epoch) or at the end of epoch ``at_epoch``."""
    stop = threading.Event()

    def on_step(record):
        if at_step is not None and record.step >= at_step:
            if fail:
                raise RuntimeError("simulated crash")
            stop.set()

    def on_epoch_end(epoch, record):
        if at_epoch is not None and epoch == at_epoch:
            stop.set()

    config = dataclasses.replace(BASE, name=name, **changes)
    callback = LambdaCallback(on_step=on_step, on_epoch_end=on_epoch_end)
    try:
        log = run_experiment(config, root, callbacks=[callback], stop_event=stop, progress=False)
    except RuntimeError:
        log = load_run(root / name)
    return config, log


def _frames(log):
    return {name: log.frame(name).drop(columns=["elapsed_s"], errors="ignore") for name in FRAMES}


def _assert_same_run(resumed, reference):
    assert resumed.status == "finished"
    assert resumed.progress == reference.progress
    ours, theirs = _frames(load_run(resumed.path)), _frames(reference)
    for name in FRAMES:
        pd.testing.assert_frame_equal(ours[name], theirs[name], check_exact=True, obj=name)
    steps = ours["steps"]["step"].tolist()
    expected = [1, *range(3, 4 * STEPS_PER_EPOCH + 1, 3)]
    assert steps == expected  # none twice, none missing
    a = torch.load(resumed.path / "model.pt", weights_only=True)["model"]
    b = torch.load(reference.path / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_run(resumed.path).summary()["best_accuracy"] == reference.summary()["best_accuracy"]
    # elapsed_s is the total training time: it goes on from the checkpoint's across the resume
    assert load_run(resumed.path).steps["elapsed_s"].is_monotonic_increasing


def test_resume_at_an_epoch_end_is_exact(runs):
    root, full = runs
    config, cut = _stopped(root, "edge", at_epoch=1)
    assert cut.status == "interrupted" and cut.progress["step"] == 2 * STEPS_PER_EPOCH
    assert [p.name for p in checkpoint_files(cut.path / "checkpoints")] == ["epoch-0002.pt", "epoch-0001.pt"]
    _assert_same_run(run_experiment(config, root, progress=False, resume=True), full)


def test_resume_after_a_crash_mid_epoch_drops_the_steps_after_the_checkpoint(runs):
    root, full = runs
    config, cut = _stopped(root, "crash", at_step=2 * STEPS_PER_EPOCH + 5, fail=True)
    assert cut.status == "failed" and cut.steps["step"].max() > 2 * STEPS_PER_EPOCH  # logged past the checkpoint
    state, _ = read_checkpoint(cut.path / "checkpoints")
    before = cut.steps.set_index("step")["elapsed_s"]
    assert state["step"] == 2 * STEPS_PER_EPOCH and state["elapsed_s"] >= before[state["step"]] > 0
    # a worker process now: num_workers may differ on resume, and the batches stay the same
    resumed = run_experiment(dataclasses.replace(config, num_workers=1), root, progress=False, resume=True)
    _assert_same_run(resumed, full)
    assert [p.name for p in checkpoint_files(resumed.path / "checkpoints")] == ["epoch-0004.pt", "epoch-0003.pt"]
    after = load_run(resumed.path).steps.set_index("step")["elapsed_s"]
    assert after[state["step"]] == before[state["step"]]  # the kept rows are the crashed run's own
    assert after[state["step"] + 3] >= state["elapsed_s"]  # the first step logged after resuming


def test_a_corrupt_newest_checkpoint_falls_back_to_the_older_one(runs):
    root, full = runs
    config, cut = _stopped(root, "corrupt", at_epoch=2)
    newest, older = checkpoint_files(cut.path / "checkpoints")
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    with pytest.warns(UserWarning, match=rf"{newest.name}.*cannot be read.*resuming from the older {older.name}"):
        state, path = read_checkpoint(cut.path / "checkpoints")
    corrupt = newest.with_name(newest.name + ".corrupt")
    assert path == older and state["epoch"] == 1 and corrupt.is_file() and not newest.exists()  # set aside, kept
    assert checkpoint_files(cut.path / "checkpoints") == [older]  # pruning no longer counts it
    newest.write_bytes(b"corrupt again")
    with pytest.warns(UserWarning, match=rf"{newest.name}.*resuming from the older {older.name}"):
        resumed = run_experiment(config, root, progress=False, resume=True)
    _assert_same_run(resumed, full)
    assert corrupt.is_file()  # the resumed run wrote and pruned checkpoints: the set-aside file stays
    newest, older = checkpoint_files(cut.path / "checkpoints")  # epoch-0004.pt, epoch-0003.pt now
    older.write_bytes(b"not a checkpoint")
    newest.write_bytes(b"")
    with pytest.raises(ResumeError, match=r"no usable checkpoint: .*epoch-0004.pt cannot be read.*epoch-0003.pt"):
        read_checkpoint(cut.path / "checkpoints")


def test_resume_errors(runs):
    root, full = runs
    with pytest.raises(ResumeError, match=r"no run 'nowhere'"):
        run_experiment(dataclasses.replace(BASE, name="nowhere"), root, progress=False, resume=True)
    with pytest.raises(ResumeError, match="already finished"):
        run_experiment(dataclasses.replace(BASE, name="full"), root, progress=False, resume=True)
    config, early = _stopped(root, "early", at_step=4, checkpoint_every=3)
    assert early.status == "interrupted"
    with pytest.raises(ResumeError, match=r"no checkpoint in .*early.*checkpoints"):
        run_experiment(config, root, progress=False, resume=True)
    config, cut = _stopped(root, "other", at_epoch=0)
    other = dataclasses.replace(config, lr=0.1, w_kd=2.0, device="cpu", checkpoint_every=5)
    with pytest.raises(ResumeError, match=r"lr: 0.05 in the checkpoint, 0.1 now, w_kd: 1.0 in the checkpoint, 2.0"):
        run_experiment(other, root, progress=False, resume=True)
    with pytest.raises(ValueError, match="pass one of them"):
        run_experiment(config, root, progress=False, resume=True, overwrite=True)
    assert load_run(cut.path).status == "interrupted"  # a refused resume changes nothing
    from cskd_viz.runs import RunBusyError, RunLog

    holder = RunLog.reopen(cut.path, load_run(cut.path).config, step=cut.progress["step"], epoch=0)  # a live writer
    with pytest.raises(RunBusyError, match=r"other is being written by another"):
        run_experiment(config, root, progress=False, resume=True)
    holder.finish("interrupted")


def test_cli_resume(runs, capsys):
    root, full = runs
    flags = ["train", "--student", "mlp_small", "--teacher", "mlp_large", "--teacher-epochs", "1", "--epochs", "4"]
    flags += ["--log-every", "3", "--checkpoint-every", "1", "--runs-dir", str(root), "--no-progress"]
    _stopped(root, "cli", at_epoch=2)
    with pytest.raises(SystemExit, match="2"):
        main([*flags, "--name", "cli", "--resume", "--lr", "0.2"])
    assert "lr: 0.05 in the checkpoint, 0.2 now" in capsys.readouterr().err
    assert main([*flags, "--name", "cli", "--resume", "--num-workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "best accuracy" in printed and "status: finished" in printed and "training time:" in printed
    _assert_same_run(load_run(root / "cli"), full)
    with pytest.raises(SystemExit, match="2"):
        main([*flags, "--name", "none-such", "--resume"])
    assert "no run 'none-such'" in capsys.readouterr().err


def test_run_log_reopen_keeps_the_steps_up_to_the_checkpoint(tmp_path):
    from cskd_viz.runs import RunBusyError, RunLog, RunLogError, StepRecord

    log = RunLog({"name": "r", "method": "ce"}, path=tmp_path / "r")
    for step in range(1, 6):
        log.log_step(StepRecord(step, 0, {"loss": float(step)}))
        log.flush()
    log.finish("failed", reason="simulated crash")
    old_id = load_run(tmp_path / "r").run_id
    again = RunLog.reopen(tmp_path / "r", {"name": "r", "method": "ce", "more": 1}, step=3, epoch=0)
    loaded = load_run(tmp_path / "r")
    assert loaded.status == "running" and loaded.progress == {"step": 3, "epoch": 0} and loaded.run_id != old_id
    assert loaded.steps["step"].tolist() == [1, 2, 3] and loaded.config["more"] == 1
    with pytest.raises(RunBusyError, match="is being written by another"):
        RunLog.reopen(tmp_path / "r", {"name": "r"}, step=3, epoch=0)
    again.log_step(StepRecord(4, 0, {"loss": 40.0}))
    again.finish()
    loaded = load_run(tmp_path / "r")
    assert loaded.status == "finished" and loaded.steps["loss"].tolist() == [1.0, 2.0, 3.0, 40.0]
    assert len(list((tmp_path / "r" / "steps").iterdir())) == 1  # finished: one file per frame
    with pytest.raises(RunLogError, match="no run at"):
        RunLog.reopen(tmp_path / "nothing", {"name": "x"}, step=0, epoch=0)
    with pytest.raises(ValueError, match="step"):
        RunLog.reopen(tmp_path / "r", {"name": "r"}, step=-1, epoch=0)


def test_monitor_elapsed_offset():
    from cskd_viz import Monitor

    monitor = Monitor(None, num_classes=3, log_every=1, elapsed_offset_s=100.0)
    monitor.log_step(1, torch.zeros(2, 3), losses=0.5)
    monitor.close()
    assert monitor.run_log.steps["elapsed_s"].iloc[0] >= 100.0 and monitor.elapsed_s >= 100.0
    with pytest.raises(ValueError, match="elapsed_offset_s must be >= 0"):
        Monitor(None, num_classes=3, elapsed_offset_s=-1.0)
    with pytest.raises(TypeError, match="elapsed_offset_s must be a real number"):
        Monitor(None, num_classes=3, elapsed_offset_s="1")


def test_amp_on_cpu_runs_finite_and_logs_its_losses(tmp_path):
    config = dataclasses.replace(BASE, name="amp", amp=True, epochs=None, max_steps=12)
    log = run_experiment(config, tmp_path, progress=False)
    assert log.status == "finished" and log.config["amp"] is True
    steps = load_run(log.path).steps
    assert len(steps) >= 3 and steps[["loss", "loss_ce", "loss_cskd"]].map(math.isfinite).all().all()
    with pytest.raises(ValueError, match=r"amp=True needs a float32 model.*float64"):
        Precision(torch.device("cpu"), True, get_model("mlp_small", 10, (64,)).double())
    with pytest.raises(ValueError, match="not on 'meta'"):
        Precision(torch.device("meta"), True)


def test_lr_milestones_are_epochs():
    train, _, info = make_loaders("digits", batch_size=64, seed=0)
    torch.manual_seed(0)
    net = get_model("mlp_small", info.num_classes, info.input_shape)
    log = train_teacher(
        net, train, epochs=3, schedule="step", lr_milestones=(1, 2), lr=0.1, log_every=1, progress=False
    )
    lr = log.steps.groupby("epoch")["lr"].agg(["min", "max"])
    assert lr.to_numpy().ravel().tolist() == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    with pytest.raises(ValueError, match="lr_milestones need schedule='step'"):
        RunConfig(lr_milestones=(150,))


def test_new_config_fields_serialise_and_old_runs_still_match(runs):
    root, _ = runs
    config = RunConfig(method="dist", schedule="step", lr_milestones=[150, 180, 210], method_options={"beta": 2.0})
    values = json.loads(json.dumps(config.to_dict()))
    assert values["lr_milestones"] == [150, 180, 210] and values["method_options"] == {"beta": 2.0}
    assert config.make_method().beta == 2.0 and config.lr_milestones == (150, 180, 210)
    with pytest.raises(TypeError, match=r"method_options of method 'kd'.*unknown parameter\(s\) \['beta'\]"):
        RunConfig(method="kd", method_options={"beta": 2.0})
    with pytest.raises(ValueError, match=r"method_options \['w_kd'\] are RunConfig fields"):
        RunConfig(method_options={"w_kd": 2.0})
    # an auto-teacher run written before these fields existed is still reused
    teacher_run = BASE.teacher_config()
    meta_file = root / teacher_run.run_name / "config.json"
    meta = json.loads(meta_file.read_text())
    for key in ("lr_milestones", "num_workers", "amp", "checkpoint_every", "method_options"):
        del meta["config"][key]
    meta_file.write_text(json.dumps(meta))
    teacher = get_model("mlp_large", 10, (64,))
    assert _reuse_teacher(root / teacher_run.run_name, teacher_run, teacher) is None


# ----------------------------------------------------------------------------- two-view methods


@pytest.fixture(scope="module")
def two_view_data(tmp_path_factory):
    from standin_data import write_cifar
    from torch.utils.data import DataLoader

    from cskd_viz.data import cifar10

    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, "cifar10", n_train=32, n_test=8)
    train, test, info = cifar10(seed=0, root=root, verify=False)

    def loaders():
        shuffled = DataLoader(train, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
        return shuffled, DataLoader(test, batch_size=8)

    torch.manual_seed(0)
    teacher = get_model("mlp_large", info.num_classes, info.input_shape).eval()
    return loaders, teacher, info


def _two_view_run(two_view_data, tmp_path=None, **settings):
    from cskd_viz.train import distill

    loaders, teacher, info = two_view_data
    torch.manual_seed(1)
    student = get_model("mlp_small", info.num_classes, info.input_shape)
    train, test = loaders()
    log = distill(student, teacher, train, test, method="cskd_published", info=info, progress=False, **settings)
    return log, student


def test_a_two_view_method_trains_with_both_views_and_resumes_exactly(two_view_data, tmp_path):
    log, student = _two_view_run(two_view_data, epochs=2, log_every=1, checkpoint_dir=tmp_path / "a")
    assert log.status == "finished" and log.config["teacher_cache"] is False
    steps = log.steps
    assert len(steps) == 8 and {"loss_ce", "loss_kd", "loss_cc", "loss_bc"} <= set(steps.columns)
    assert steps[["loss", "loss_cc", "loss_bc", "agreement"]].map(math.isfinite).all().all()
    # stopped after epoch 0, resumed: the strong view's generator is in the checkpoint
    stop = threading.Event()
    callback = LambdaCallback(on_epoch_end=lambda epoch, record: stop.set())
    cut, _ = _two_view_run(
        two_view_data, epochs=2, checkpoint_dir=tmp_path / "b", callbacks=[callback], stop_event=stop
    )
    assert cut.status == "interrupted"
    resumed, again = _two_view_run(two_view_data, epochs=2, checkpoint_dir=tmp_path / "b", resume=True)
    assert resumed.status == "finished"
    assert all(
        torch.equal(a, b) for a, b in zip(student.state_dict().values(), again.state_dict().values(), strict=True)
    )
    with pytest.raises(ValueError, match="cache_teacher=True cannot be used with the two-view method.*afresh"):
        _two_view_run(two_view_data, max_steps=1, cache_teacher=True)


def test_a_checkpoint_of_another_model_of_the_same_class_is_a_resume_error(two_view_data, tmp_path):
    from cskd_viz.train import distill

    _two_view_run(two_view_data, max_steps=2, checkpoint_dir=tmp_path)
    loaders, teacher, info = two_view_data
    wider = get_model("mlp_large", info.num_classes, info.input_shape)  # the same class as mlp_small
    train, test = loaders()
    with pytest.raises(ResumeError, match=r"checkpoint .*epoch-0001\.pt does not fit this run's model or optimiser"):
        distill(wider, teacher, train, test, method="cskd_published", info=info, progress=False, max_steps=2,
                checkpoint_dir=tmp_path, resume=True)  # fmt: skip
