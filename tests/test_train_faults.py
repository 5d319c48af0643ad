"""Runs that end badly end *clearly*: divergence, termination signals and a full disk (issue 14, findings 2 and 3).

Each case is hit the way a user hits it: the ``cskd-viz`` command in a child process, real
signals, a real (loop-mounted or tmpfs) full file system where root allows one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cskd_viz.data import make_loaders
from cskd_viz.models import get_model
from cskd_viz.runs import RunLog, load_run
from cskd_viz.train import RunConfig, run_experiment, train_teacher
from cskd_viz.training.faults import FiniteWatch, TrainingDiverged

DIVERGED = re.compile(
    r"became (NaN|infinite|non-finite|larger than 1e\+30 in magnitude) at step \d+ \(lr [0-9.e+]+\): "
    r"lower the learning rate \(--lr\)"
)
CLI = [sys.executable, "-m", "cskd_viz.cli"]


def _cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _teacher_config(**overrides) -> RunConfig:
    fields = dict(
        dataset="digits",
        student="mlp_small",
        teacher="mlp_small",
        method="kd",
        teacher_epochs=1,
        epochs=None,
        max_steps=3,
        batch_size=64,
        log_every=5,
    )
    return RunConfig(**{**fields, **overrides})


# ----------------------------------------------------------------------------- divergence


def test_finite_watch_names_the_first_bad_step_and_forgets_after_a_check():
    watch = FiniteWatch()
    for step, value in enumerate([1.0, 2.0, float("inf"), float("nan")], start=1):
        watch.add(step, torch.tensor(value), lr=0.5)
    diverged = watch.first_bad()
    assert (diverged.step, diverged.kind, diverged.lr) == (3, "infinite", 0.5)
    assert watch.first_bad() is None  # checked losses are forgotten


def test_a_diverging_ce_run_fails_within_log_every_steps_with_the_reason_in_config_json(tmp_path):
    train, test, _ = make_loaders("digits", batch_size=64, seed=0)
    net = get_model("mlp_small", 10, (1, 8, 8))
    log = RunLog({"name": "ce-lr1000", "method": "ce"}, path=tmp_path / "ce-lr1000")
    with pytest.raises(TrainingDiverged, match=DIVERGED) as caught:
        train_teacher(net, train, test, run_log=log, lr=1e3, epochs=20, log_every=4, progress=False)
    loaded = load_run(tmp_path / "ce-lr1000")
    assert loaded.status == "failed"
    assert DIVERGED.search(loaded.reason), loaded.reason
    assert loaded.progress["step"] <= caught.value.step + 4  # stopped at the next check, not at the end
    assert caught.value.step < 20 * 23


def test_a_diverging_auto_teacher_is_failed_saves_no_model_and_is_trained_again(tmp_path, capsys):
    config = _teacher_config(lr=1e3, teacher_epochs=4)
    teacher_dir = tmp_path / config.teacher_config().run_name
    with pytest.raises(TrainingDiverged, match=DIVERGED):
        run_experiment(config, runs_dir=tmp_path, progress=False)
    assert load_run(teacher_dir).status == "failed"
    assert not (teacher_dir / "model.pt").exists()
    assert not (tmp_path / config.run_name).exists()  # no student run was started on a broken teacher
    with pytest.raises(TrainingDiverged):  # the same settings: trained again (and diverging again), never reused
        run_experiment(config, runs_dir=tmp_path, progress=False)
    assert "training the teacher" in capsys.readouterr().err


def test_a_finished_teacher_with_nan_weights_is_never_reused(tmp_path, capsys):
    config = _teacher_config()
    log = run_experiment(config, runs_dir=tmp_path, progress=False)
    assert log.status == "finished"
    model_pt = tmp_path / config.teacher_config().run_name / "model.pt"
    state = torch.load(model_pt, weights_only=True)
    first = next(iter(state["model"]))
    state["model"][first].fill_(float("nan"))  # what the old trainer saved after a divergence
    torch.save(state, model_pt)
    capsys.readouterr()
    log = run_experiment(config, runs_dir=tmp_path, progress=False, overwrite=True)
    assert log.status == "finished"
    err = capsys.readouterr().err
    assert "training the teacher" in err and "non-finite weights" in err and first in err
    assert all(t.isfinite().all() for t in torch.load(model_pt, weights_only=True)["model"].values())


def test_an_interrupted_teacher_is_trained_again_and_the_reason_is_said(tmp_path, capsys):
    config = _teacher_config()
    run_experiment(config, runs_dir=tmp_path, progress=False)
    teacher_config_json = tmp_path / config.teacher_config().run_name / "config.json"
    meta = json.loads(teacher_config_json.read_text())
    meta["status"] = "interrupted"
    teacher_config_json.write_text(json.dumps(meta))
    capsys.readouterr()
    run_experiment(config, runs_dir=tmp_path, progress=False, overwrite=True)
    assert "it ended 'interrupted'" in capsys.readouterr().err
    assert load_run(teacher_config_json.parent).status == "finished"


def test_cli_divergence_is_one_line_without_usage_text(tmp_path):
    args = ["train", "--dataset", "digits", "--teacher", "none", "--method", "ce", "--student", "mlp_small"]
    args += ["--lr", "1000", "--epochs", "3", "--runs-dir", str(tmp_path), "--name", "boom", "--no-progress"]
    done = subprocess.run(CLI + args, capture_output=True, text=True, env=_cli_env(), timeout=120)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("cskd-viz:")]
    assert len(lines) == 1 and DIVERGED.search(lines[0]), done.stderr
    assert "usage:" not in done.stderr and "Traceback" not in done.stderr
    assert load_run(tmp_path / "boom").status == "failed"


# ----------------------------------------------------------------------------- signals


def _long_run_args(runs_dir: Path, name: str) -> list[str]:
    args = ["train", "--dataset", "digits", "--teacher", "none", "--method", "ce", "--student", "mlp_small"]
    return args + ["--epochs", "2000", "--log-every", "1", "--runs-dir", str(runs_dir), "--name", name, "--no-progress"]


def _start_long_run(runs_dir: Path, name: str) -> subprocess.Popen:
    """``cskd-viz train`` in a fresh interpreter (the full path a shell takes)."""
    args = _long_run_args(runs_dir, name)
    return subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_cli_env())


def _cli_child(argv: list[str]) -> None:
    torch.set_num_threads(1)
    from cskd_viz.cli import main

    sys.exit(main(argv))


_FORKSERVER: list = []


def _forked_long_run(runs_dir: Path, name: str):
    """``cskd-viz train`` (``cli.main``) in a process forked from a server that imported torch once:
    a real process and real signals, without paying an interpreter start per run."""
    import multiprocessing

    if not _FORKSERVER:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "cskd_viz.cli", "cskd_viz.training", "cskd_viz.data"])
        _FORKSERVER.append(context)
    process = _FORKSERVER[0].Process(target=_cli_child, args=(_long_run_args(runs_dir, name),))
    process.start()
    return process


def _wait_for_steps(config_json: Path, alive, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert alive(), "the run ended before it was signalled"
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(config_json.read_text())["progress"]["step"] > 0:
                return
        time.sleep(0.02)
    raise AssertionError("the run never recorded a step")


def test_sigterm_to_the_cskd_viz_command_ends_the_run_like_ctrl_c(tmp_path):
    process = _start_long_run(tmp_path, "signalled")
    try:
        _wait_for_steps(tmp_path / "signalled" / "config.json", lambda: process.poll() is None)
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, err
    assert "Traceback" not in err
    log = load_run(tmp_path / "signalled")
    assert log.status == "interrupted" and "SIGTERM" in log.reason
    assert (tmp_path / "signalled" / "model.pt").is_file()
    assert int(log.steps.step.iloc[-1]) == log.progress["step"]  # the last finished step is in the log


def _signal_forked_runs(runs_dir: Path, names: list[str], signum: int, delays: list[float]) -> list[int]:
    processes = [_forked_long_run(runs_dir, name) for name in names]
    try:
        for name, process, delay in zip(names, processes, delays, strict=True):
            _wait_for_steps(runs_dir / name / "config.json", process.is_alive)
            time.sleep(delay)
            os.kill(process.pid, signum)
        for process in processes:
            process.join(60)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    return [process.exitcode for process in processes]


def test_sighup_ends_the_run_like_ctrl_c_with_exit_129(tmp_path):
    assert _signal_forked_runs(tmp_path, ["hup"], signal.SIGHUP, [0.2]) == [129]
    log = load_run(tmp_path / "hup")
    assert log.status == "interrupted" and "SIGHUP" in log.reason
    assert (tmp_path / "hup" / "model.pt").is_file()


def test_sigterm_at_ten_random_steps_always_leaves_an_interrupted_run_that_loads(tmp_path):
    rng = random.Random(14)
    stopped_at = set()
    for i in range(0, 10, 2):  # two runs at a time: the machine has 2 cores
        names = [f"run{i}", f"run{i + 1}"]
        codes = _signal_forked_runs(tmp_path, names, signal.SIGTERM, [rng.uniform(0.0, 0.8) for _ in names])
        assert codes == [143, 143]
        for name in names:
            log = load_run(tmp_path / name)
            assert log.status == "interrupted", (name, log.reason)
            assert len(log.steps) == log.progress["step"]  # every finished step is there (log_every 1)
            assert (tmp_path / name / "model.pt").is_file()
            stopped_at.add(log.progress["step"])
    assert len(stopped_at) > 1  # the signals did land at different steps


def _digits_run(tmp_path: Path, name: str, **settings):
    """A short CE run on digits into ``tmp_path/name`` (its ``model.pt`` there); the exit code of a signal."""
    from cskd_viz._termination import Terminated, termination_as_interrupt

    train, test, _ = make_loaders("digits", batch_size=64, seed=0)
    log = RunLog({"name": name, "method": "ce"}, path=tmp_path / name)
    options = {"epochs": 2, "log_every": 1, "flush_interval_s": 1000, "progress": False, **settings}
    try:
        with termination_as_interrupt():
            train_teacher(get_model("mlp_small", 10, (1, 8, 8)), train, test, run_log=log,
                          model_path=tmp_path / name / "model.pt", **options)  # fmt: skip
    except Terminated as err:
        return err.exit_code
    return 0


@pytest.mark.parametrize("where", ["the model is saved", "the log is compacted"])
def test_sigterm_while_the_run_is_closed_keeps_every_row_and_still_exits_143(tmp_path, monkeypatch, where):
    import cskd_viz.training.loop as loop
    from cskd_viz.runs import store

    module, attribute = (loop, "save_checkpoint") if where == "the model is saved" else (store, "compact")
    real = getattr(module, attribute)

    def signalled(*args, **kwargs):
        monkeypatch.setattr(module, attribute, real)
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. `timeout` firing just as training ends
        return real(*args, **kwargs)

    monkeypatch.setattr(module, attribute, signalled)
    assert _digits_run(tmp_path, "r") == 143
    log = load_run(tmp_path / "r")
    assert log.status == "finished" and log.progress["step"] > 0  # every step was trained: it is complete
    assert len(log.steps) == log.progress["step"] and len(log.evals) == 2  # no row of the last flush is lost
    assert (tmp_path / "r" / "model.pt").is_file()


def test_a_signal_that_an_import_turns_into_another_error_still_exits_with_its_code(monkeypatch, capsys):
    from cskd_viz import cli

    def importing(args, parser):  # a SIGTERM inside an import can come out as an ImportError
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            raise ImportError("cannot import name 'x' from partially initialized module 'numpy'") from None
        return 0

    monkeypatch.setattr(cli, "_run_report", importing)
    assert cli.main(["report", "runs"]) == 143
    err = capsys.readouterr().err
    assert "terminated by SIGTERM" in err and "ImportError" not in err


def test_a_signal_an_import_swallowed_still_stops_the_run_at_its_first_step(tmp_path):
    from cskd_viz._termination import Terminated, termination_as_interrupt

    train, _, _ = make_loaders("digits", batch_size=64, seed=0)
    log = RunLog({"name": "r", "method": "ce"}, path=tmp_path / "r")
    with pytest.raises(Terminated), termination_as_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            pass  # a library's `try: import x / except ImportError` can eat it
        train_teacher(get_model("mlp_small", 10, (1, 8, 8)), train, run_log=log, epochs=5, progress=False)
    loaded = load_run(tmp_path / "r")
    assert loaded.status == "interrupted" and loaded.progress["step"] == 1


def test_ctrl_c_with_non_finite_weights_says_failed_on_stderr(tmp_path, capsys):
    train, _, _ = make_loaders("digits", batch_size=64, seed=0)
    model = get_model("mlp_small", 10, (1, 8, 8))

    class Breaks:
        def on_step(self, record):
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")
            raise KeyboardInterrupt

    log = RunLog({"name": "r", "method": "ce"}, path=tmp_path / "r")
    train_teacher(model, train, run_log=log, epochs=1, callbacks=[Breaks()], raise_on_interrupt=False, progress=False)
    assert load_run(tmp_path / "r").status == "failed"
    assert "saved with status 'failed'" in capsys.readouterr().err


def test_an_auto_teacher_whose_model_pt_does_not_fit_the_architecture_is_trained_again(tmp_path, capsys):
    config = _teacher_config()
    run_experiment(config, runs_dir=tmp_path, progress=False)
    model_pt = tmp_path / config.teacher_config().run_name / "model.pt"
    state = torch.load(model_pt, weights_only=True)
    state["model"] = {f"old.{k}": v for k, v in state["model"].items()}  # e.g. saved by an older model definition
    torch.save(state, model_pt)
    capsys.readouterr()
    assert run_experiment(config, runs_dir=tmp_path, progress=False, overwrite=True).status == "finished"
    assert "does not fit the teacher's architecture" in capsys.readouterr().err


# ----------------------------------------------------------------------------- full disk


@contextlib.contextmanager
def _small_filesystem(where: Path, kib: int):
    """A real file system of ``kib`` KiB at ``where``: loop-mounted ext4, else tmpfs; ``None`` if not allowed."""
    where.mkdir()
    image = where.with_suffix(".img")
    attempts = []
    if shutil.which("mkfs.ext4") and os.geteuid() == 0:
        with open(image, "wb") as f:
            f.truncate(kib * 1024)
        made = subprocess.run(["mkfs.ext4", "-q", "-m", "0", "-F", str(image)], capture_output=True)
        attempts.append(["mount", "-o", "loop", str(image), str(where)] if made.returncode == 0 else None)
    if os.geteuid() == 0:
        attempts.append(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)])
    for command in filter(None, attempts):
        if shutil.which(command[0]) and subprocess.run(command, capture_output=True).returncode == 0:
            try:
                yield where
            finally:
                subprocess.run(["umount", "-l", str(where)], capture_output=True)
                image.unlink(missing_ok=True)
            return
    image.unlink(missing_ok=True)
    yield None


def test_a_full_disk_ends_the_run_failed_with_one_line_and_keeps_what_was_written(tmp_path):
    with _small_filesystem(tmp_path / "disk", kib=1024) as disk:
        if disk is None:
            pytest.skip("no loop or tmpfs mount here: the monkeypatched ENOSPC test covers the code path")
        ballast = disk / "ballast"
        free = shutil.disk_usage(disk).free
        with open(ballast, "wb") as f:  # leave room for a few flushes only
            f.write(b"\0" * max(free - 160 * 1024, 0))
        process = _start_long_run(disk / "runs", "full")
        _, err = process.communicate(timeout=180)
        assert process.returncode == 2, err
        lines = [line for line in err.splitlines() if line.startswith("cskd-viz:")]
        assert len(lines) == 1 and "No space left on device" in lines[0], err
        assert "Traceback" not in err
        log = load_run(disk / "runs" / "full")
        assert log.status == "failed" and "No space left on device" in log.reason
        assert len(log.steps) > 0  # the steps flushed before the disk filled are kept
        assert not (disk / "runs" / "full" / "model.pt").exists()


def test_enospc_on_a_part_ends_the_run_failed_and_the_status_still_lands(tmp_path, monkeypatch):
    """Where no small file system can be mounted this is the full-disk check; it runs everywhere."""
    import errno

    from cskd_viz.runs import store

    real_write, calls = store.atomic_write, []

    def fill_up(path, write):
        calls.append(path)
        if path.suffix == ".parquet" and len(calls) > 6:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, write)

    monkeypatch.setattr(store, "atomic_write", fill_up)
    train, test, _ = make_loaders("digits", batch_size=64, seed=0)
    log = RunLog({"name": "full", "method": "ce"}, path=tmp_path / "full")
    with pytest.raises(OSError, match="No space left on device"):
        train_teacher(
            get_model("mlp_small", 10, (1, 8, 8)),
            train,
            test,
            run_log=log,
            epochs=50,
            log_every=1,
            flush_interval_s=0,
            progress=False,
        )
    loaded = load_run(tmp_path / "full")
    assert loaded.status == "failed" and "No space left on device" in loaded.reason
    assert len(loaded.steps) > 0


def test_a_disk_that_fills_up_as_the_run_ends_leaves_it_failed_not_finished(tmp_path, monkeypatch):
    import errno

    from cskd_viz.runs import RunLogWriteError, store

    real_write = store.atomic_write

    def full_at_the_end(path, write):
        if path.name.startswith("compacted"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, write)

    monkeypatch.setattr(store, "atomic_write", full_at_the_end)
    with pytest.raises(RunLogWriteError, match="No space left on device"):
        _digits_run(tmp_path, "full")
    loaded = load_run(tmp_path / "full")
    assert loaded.status == "failed" and "No space left on device" in loaded.reason  # its last rows are missing
