"""Trainer: determinism, teacher-logit cache, interruption, budgets, callbacks, RunConfig, run_experiment."""

from __future__ import annotations

import math
import threading

import pandas as pd
import pytest
import torch
from torch import nn

from cskd_viz.data import DatasetInfo, make_loaders
from cskd_viz.models import get_model
from cskd_viz.runs import FRAMES, load_run
from cskd_viz.train import (
    Callback,
    LambdaCallback,
    RunConfig,
    TeacherLogitCache,
    distill,
    load_checkpoint,
    resolve_device,
    run_experiment,
    save_checkpoint,
    train_teacher,
    with_indices,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train fastest on one thread (and a shared CPU is not oversubscribed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = dict(student="mlp_small", teacher="mlp_large", teacher_epochs=1, epochs=None, max_steps=12, log_every=4)


@pytest.fixture(scope="module")
def digits():
    return make_loaders("digits", batch_size=64, seed=0)


@pytest.fixture(scope="module")
def teacher(digits):
    train, _, info = digits
    torch.manual_seed(0)
    net = get_model("mlp_large", info.num_classes, info.input_shape)
    train_teacher(net, train, max_steps=15, progress=False, seed=0)
    return net.eval()


def _student(info, seed=1):
    torch.manual_seed(seed)
    return get_model("mlp_small", info.num_classes, info.input_shape)


def _without_time(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["elapsed_s"], errors="ignore")


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_diagnostics(tmp_path):
    config = RunConfig(method="cskd_cswt", **TINY)
    first = run_experiment(config, tmp_path / "a", progress=False)
    second = run_experiment(config, tmp_path / "b", progress=False)
    for name in FRAMES:
        pd.testing.assert_frame_equal(_without_time(getattr(first, name)), _without_time(getattr(second, name)))
    loaded = load_run(first.path)
    for name in FRAMES:
        pd.testing.assert_frame_equal(
            _without_time(getattr(loaded, name)), _without_time(getattr(first, name)), check_dtype=False
        )
    assert first.config["teacher_source"] != second.config["teacher_source"]  # the teacher was trained twice


def test_other_seed_other_diagnostics():
    losses = []
    for seed in (0, 1):
        train, _, info = make_loaders("digits", batch_size=64, seed=seed)
        losses.append(train_teacher(_student(info, seed), train, max_steps=3, seed=seed, progress=False).steps["loss"])
    assert not losses[0].equals(losses[1])


# ----------------------------------------------------------------------------- teacher cache


def test_indexed_loader_yields_the_original_batches():
    original, _, _ = make_loaders("digits", batch_size=50, seed=3)
    twin, _, _ = make_loaders("digits", batch_size=50, seed=3)
    indexed = with_indices(twin)
    for _ in range(2):  # two epochs: the shared generator keeps both in step
        for (x, y), (xi, yi, idx) in zip(original, indexed, strict=True):
            assert torch.equal(x, xi) and torch.equal(y, yi)
            assert torch.equal(twin.dataset[idx][0], x)


def test_cache_equals_recomputed_logits(digits, teacher):
    train, _, _ = digits
    cache = TeacherLogitCache.build(teacher, train.dataset, batch_size=100)
    assert len(cache) == len(train.dataset)
    with torch.no_grad():
        for x, _, idx in with_indices(train):
            torch.testing.assert_close(cache[idx], teacher(x), rtol=1e-5, atol=1e-6)


class _CountCalls:
    def __init__(self, module: nn.Module) -> None:
        self.batches = 0
        module.register_forward_hook(self)

    def __call__(self, module, inputs, output) -> None:
        self.batches += 1


def test_cached_run_matches_uncached_and_skips_teacher(digits):
    _, _, info = digits
    torch.manual_seed(0)
    teacher = get_model("mlp_large", info.num_classes, info.input_shape).eval()
    counter = _CountCalls(teacher)
    logs = {}
    calls = {}
    for cache in (True, False):
        before = counter.batches
        train, _, _ = make_loaders("digits", batch_size=64, seed=0)  # same batches in the same order
        logs[cache] = distill(
            _student(info), teacher, train, method="kd", epochs=2, cache_teacher=cache, progress=False, log_every=5
        )
        calls[cache] = counter.batches - before
    assert logs[True].config["teacher_cache"] and not logs[False].config["teacher_cache"]
    steps = 2 * len(train)
    assert calls[False] == steps
    assert calls[True] == math.ceil(len(train.dataset) / 512)  # only the cache build
    pd.testing.assert_frame_equal(
        _without_time(logs[True].steps), _without_time(logs[False].steps), rtol=1e-4, atol=1e-5
    )


def test_cache_default_and_augmented_data(digits, teacher):
    train, _, info = digits
    log = distill(_student(info), teacher, train, method="cskd", max_steps=2, info=info, progress=False)
    assert log.config["teacher_cache"] is True
    augmented = DatasetInfo("digits", 10, (1, 8, 8), tuple("0123456789"), augmented=True)
    log = distill(_student(info), teacher, train, method="cskd", max_steps=2, info=augmented, progress=False)
    assert log.config["teacher_cache"] is False
    with pytest.raises(ValueError, match="training data is augmented"):
        distill(_student(info), teacher, train, method="kd", max_steps=2, info=augmented, cache_teacher=True)
    log = distill(_student(info), teacher, train, method="ce", max_steps=2, info=info, progress=False)
    assert log.config["teacher_cache"] is False  # CE uses the teacher only for diagnostics


# ----------------------------------------------------------------------------- frames and budget


def test_frames_of_a_cswt_run(digits, teacher):
    train, test, info = digits
    log = distill(_student(info), teacher, train, test, method="cskd_cswt", max_steps=25, log_every=10, progress=False)
    steps = log.steps
    assert steps["step"].tolist() == [1, 10, 20, 25]  # the first, every 10th and the last step
    assert set(steps.columns) >= {"loss_ce", "loss_cskd", "mean_temperature", "cosine_distance", "agreement"}
    assert (steps["loss"] - steps["loss_ce"] - steps["loss_cskd"]).abs().max() < 1e-5
    assert steps["lr"].is_monotonic_decreasing
    assert len(log.class_cosine) == 4 * info.num_classes
    assert log.class_cosine["cosine"].between(0, 1).all()
    d = 1 - log.class_cosine.groupby("step")["cosine"].mean()
    assert (d.to_numpy() - steps["cosine_distance"].to_numpy()).__abs__().max() < 1e-6
    temps = log.temperatures
    assert temps[["q05", "q25", "q50", "q75", "q95"]].diff(axis=1).iloc[:, 1:].ge(-1e-6).all().all()
    assert temps["min"].ge(2.0 - 1e-6).all() and temps["max"].le(6.0 + 1e-6).all()
    counts = log.temperature_hist.groupby("step")["count"].sum()
    assert (counts == 64).all()
    assert log.evals["epoch"].tolist() == [0, 1] and log.evals["step"].tolist() == [21, 25]
    assert log.evals["teacher_accuracy"].nunique() == 1
    assert log.status == "finished" and log.progress["step"] == 25


def test_teacher_run_has_nan_teacher_columns(digits):
    train, test, info = digits
    log = train_teacher(_student(info), train, test, max_steps=3, log_every=2, progress=False)
    assert log.steps["agreement"].isna().all() and log.steps["cosine_distance"].isna().all()
    assert log.steps["mean_temperature"].isna().all() and len(log.class_cosine) == 0
    assert len(log.temperatures) == 0
    assert log.evals["agreement"].isna().all() and log.evals["accuracy"].notna().all()


def test_budget_rules(digits, teacher):
    train, _, info = digits
    log = train_teacher(_student(info), train, epochs=2, max_steps=30, progress=False)
    assert log.progress["step"] == 30
    log = train_teacher(_student(info), train, epochs=1, progress=False)
    assert log.progress["step"] == len(train)
    with pytest.raises(ValueError, match="give epochs or max_steps"):
        train_teacher(_student(info), train)
    with pytest.raises(ValueError, match="max_steps must be a positive int"):
        train_teacher(_student(info), train, max_steps=0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        train_teacher(_student(info), train, max_steps=1, schedule="linear")
    with pytest.raises(ValueError, match="lr must be > 0"):
        train_teacher(_student(info), train, max_steps=1, lr=0.0)
    with pytest.raises(ValueError, match="teacher must be an nn.Module"):
        distill(_student(info), None, train, max_steps=1)
    with pytest.raises(TypeError, match="train_loader must be a torch DataLoader"):
        train_teacher(_student(info), [1, 2], max_steps=1)


def test_step_schedule(digits):
    train, _, info = digits
    log = train_teacher(_student(info), train, max_steps=16, log_every=1, schedule="step", lr=0.1, progress=False)
    lrs = log.steps["lr"].round(8).tolist()
    assert lrs[:10] == [0.1] * 10 and lrs[10:12] == [0.01] * 2 and lrs[-2:] == [0.0001] * 2


# ----------------------------------------------------------------------------- callbacks and stopping


def test_callback_hooks_in_order(digits, teacher):
    train, test, info = digits
    events = []

    class Recorder(Callback):
        def on_train_begin(self, run_log):
            events.append(("begin", run_log.status))

        def on_step(self, record):
            events.append(("step", record.step))

        def on_epoch_end(self, epoch, record):
            events.append(("epoch", epoch, record.metrics["accuracy"] > 0))

        def on_train_end(self, run_log):
            events.append(("end", run_log.status))

    class OnlySteps:  # any object with a subset of the hooks works
        def on_step(self, record):
            events.append(("only", record.step))

    callbacks = [Recorder(), OnlySteps()]
    distill(
        _student(info), teacher, train, test, method="kd", max_steps=5, log_every=2, callbacks=callbacks, progress=False
    )
    assert events == [
        ("begin", "running"),
        ("step", 1), ("only", 1), ("step", 2), ("only", 2), ("step", 4), ("only", 4), ("step", 5), ("only", 5),
        ("epoch", 0, True),
        ("end", "finished"),
    ]  # fmt: skip


def test_stop_event_from_callback(tmp_path):
    stop = threading.Event()
    seen = []

    def on_step(record):
        seen.append(record.step)
        if record.step >= 8:
            stop.set()

    log = run_experiment(
        RunConfig(method="cskd_cswt", **{**TINY, "max_steps": 50}),
        tmp_path,
        callbacks=[LambdaCallback(on_step=on_step)],
        stop_event=stop,
        progress=False,
    )
    assert log.status == "interrupted" and log.progress["step"] == 8
    loaded = load_run(log.path)
    assert loaded.status == "interrupted" and loaded.steps["step"].max() == 8
    assert (log.path / "model.pt").is_file()


def test_keyboard_interrupt_from_callback_is_reraised_and_log_loads(tmp_path):
    current = {}

    def on_step(record):  # callbacks also see the auto-teacher's run: interrupt the student's
        if current["log"].config["method"] == "kd" and record.step >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(
            RunConfig(method="kd", name="ctrl-c", **TINY),
            tmp_path,
            callbacks=[LambdaCallback(on_train_begin=lambda log: current.update(log=log), on_step=on_step)],
            progress=False,
        )
    loaded = load_run(tmp_path / "ctrl-c")
    assert loaded.status == "interrupted" and loaded.steps["step"].max() == 4
    assert not list((tmp_path / "ctrl-c").glob(".*tmp"))


def test_keyboard_interrupt_swallowed_on_request(digits, teacher, capsys):
    train, _, info = digits

    def on_step(record):
        raise KeyboardInterrupt

    log = distill(
        _student(info), teacher, train, method="kd", max_steps=5, progress=False,
        callbacks=[LambdaCallback(on_step=on_step)], raise_on_interrupt=False,
    )  # fmt: skip
    assert log.status == "interrupted" and log.progress["step"] == 1
    assert "interrupted at step 1" in capsys.readouterr().err


def test_error_in_callback_marks_run_failed(tmp_path, digits):
    train, _, info = digits
    from cskd_viz.runs import RunLog

    run_log = RunLog({"name": "boom", "method": "ce"}, path=tmp_path / "boom")

    def on_step(record):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train_teacher(_student(info), train, max_steps=3, run_log=run_log, callbacks=[LambdaCallback(on_step=on_step)])
    assert load_run(tmp_path / "boom").status == "failed"


def test_lambda_callback_rejects_non_callables():
    with pytest.raises(TypeError, match="on_step must be callable"):
        LambdaCallback(on_step=3)


def test_progress_bar_runs(digits, capsys):
    train, _, info = digits
    train_teacher(_student(info), train, max_steps=3, log_every=1, progress=True, name="bar")
    assert "bar" in capsys.readouterr().err


# ----------------------------------------------------------------------------- RunConfig and run_experiment


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"dataset": "mnist"}, ValueError, "dataset must be one of"),
        ({"student": "resnet1000"}, ValueError, "student must be one of"),
        ({"method": "fitnet"}, ValueError, "method must be one of"),
        ({"teacher": None}, ValueError, "needs a teacher"),
        ({"temperature": 0}, ValueError, "temperature must be > 0"),
        ({"t_low": 7.0}, ValueError, "t_low must be <= t_high"),
        ({"epochs": 0}, ValueError, "epochs must be a positive int"),
        ({"epochs": None}, ValueError, "give epochs or max_steps"),
        ({"batch_size": 2.5}, ValueError, "batch_size must be a positive int"),
        ({"lr": -0.1}, ValueError, "lr must be > 0"),
        ({"momentum": 1.0}, ValueError, "momentum must be in"),
        ({"w_kd": -1.0}, ValueError, "w_kd must be >= 0"),
        ({"seed": -1}, ValueError, "seed must be a non-negative int"),
        ({"schedule": "linear"}, ValueError, "schedule must be one of"),
        ({"device": "tpu"}, ValueError, "device must be"),
        ({"name": "../escape"}, ValueError, "name must start with"),
        ({"teacher_checkpoint": "no/such/file.pt"}, ValueError, "is not a file"),
        ({"cache_teacher": "yes"}, TypeError, "cache_teacher must be"),
    ],
)
def test_run_config_validation(changes, error, match):
    with pytest.raises(error, match=match):
        RunConfig(**changes)


def test_run_config_helpers():
    config = RunConfig(method="cskd_cswt", temperature=3.0, w_kd=2.0, epochs=3)
    assert config.cswt and config.run_name == "cskd_cswt-cnn_small-digits-s0"
    method = config.make_method()
    assert (method.name, method.temperature, method.w_kd) == ("cskd_cswt", 3.0, 2.0)
    assert RunConfig(method="ce").make_method().name == "ce"
    teacher = config.teacher_config()
    assert (teacher.student, teacher.teacher, teacher.method) == ("cnn_large", None, "ce")
    assert teacher.run_name.startswith("teacher-cnn_large-digits-s0-")
    assert config.to_dict()["cswt"] is True
    with pytest.raises(ValueError, match="no teacher"):
        RunConfig(teacher=None, method="ce").teacher_config()


def test_auto_teacher_is_trained_once_and_reused(tmp_path):
    first = run_experiment(RunConfig(method="kd", **TINY), tmp_path, progress=False)
    teacher_dir = tmp_path / RunConfig(method="kd", **TINY).teacher_config().run_name
    stamp = (teacher_dir / "model.pt").stat().st_mtime_ns
    second = run_experiment(RunConfig(method="cskd", **TINY), tmp_path, progress=False)
    assert (teacher_dir / "model.pt").stat().st_mtime_ns == stamp
    assert first.config["teacher_source"] == second.config["teacher_source"] == str(teacher_dir / "model.pt")
    assert load_run(teacher_dir).status == "finished"


def test_run_names_collisions_and_overwrite(tmp_path):
    config = RunConfig(method="ce", name="same", **{**TINY, "teacher": None, "max_steps": 2})
    assert run_experiment(config, tmp_path, progress=False).path.name == "same"
    assert run_experiment(config, tmp_path, progress=False).path.name == "same-2"
    assert run_experiment(config, tmp_path, progress=False, overwrite=True).path.name == "same"
    (tmp_path / "foreign").mkdir()
    foreign = RunConfig(method="ce", name="foreign", **{**TINY, "teacher": None, "max_steps": 2})
    with pytest.raises(ValueError, match="not a cskd_viz run directory"):
        run_experiment(foreign, tmp_path, progress=False, overwrite=True)


def test_teacher_checkpoint_roundtrip(tmp_path, digits, teacher):
    _, _, info = digits
    path = tmp_path / "teacher.pt"
    save_checkpoint(teacher, path)
    config = RunConfig(method="kd", teacher_checkpoint=str(path), **TINY)
    log = run_experiment(config, tmp_path / "runs", progress=False)
    assert log.config["teacher_source"] == str(path)
    assert not any(p.name.startswith("teacher-") for p in (tmp_path / "runs").iterdir())
    # mdistiller's DataParallel prefix is stripped; a wrong architecture names the keys.
    prefixed = {"model": {f"module.{k}": v for k, v in teacher.state_dict().items()}}
    torch.save(prefixed, tmp_path / "dp.pt")
    fresh = get_model("mlp_large", info.num_classes, info.input_shape)
    load_checkpoint(fresh, tmp_path / "dp.pt")
    torch.testing.assert_close(fresh.state_dict(), teacher.state_dict())
    with pytest.raises(ValueError, match="does not match MLP: missing keys"):
        load_checkpoint(get_model("mlp_small", info.num_classes, info.input_shape), path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        load_checkpoint(fresh, tmp_path / "junk.pt")


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_smoke(tmp_path):
    log = run_experiment(RunConfig(method="cskd_cswt", device="cuda", **TINY), tmp_path, progress=False)
    assert log.status == "finished" and log.config["device"].startswith("cuda")
    assert log.config["teacher_cache"] is True
    assert log.steps["loss"].notna().all() and len(log.temperatures) > 0
    assert load_run(log.path).status == "finished"
