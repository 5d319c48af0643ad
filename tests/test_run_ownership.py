"""Who writes a run: one writer per run directory (processes and threads), dead runs, disk errors.

Real processes and real files: writer processes are this file run as a script. They import the
library, say ``ready``, wait for a ``go`` file (so that they race), claim the run directory as
``run_experiment`` does (``claim_new_dir``), log steps whose ``loss`` is their own index, and hold
the run until the test writes a ``release`` file. Nothing here depends on how long anything takes.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cskd_viz.runs import (
    EvalRecord,
    RunBusyError,
    RunLog,
    RunLogError,
    RunLogWriteError,
    StepRecord,
    list_runs,
    load_run,
    ownership,
    store,
)
from cskd_viz.runs.ownership import claim_new_dir

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 60.0  # an upper bound for a child to reach a point: never reached unless something hangs


def _writer(root: str, name: str, index: int, overwrite: bool, go: str, release: str) -> None:
    """A child: race for ``root/name`` once ``go`` exists; hold the run until ``release`` exists."""
    print("ready", flush=True)
    _wait_for(Path(go))
    try:
        claim = claim_new_dir(Path(root), name, overwrite=overwrite)
    except RunLogError as err:
        print(json.dumps({"refused": str(err), "busy": isinstance(err, RunBusyError)}), flush=True)
        return
    log = RunLog({"name": claim.path.name, "method": "ce", "writer": index}, path=claim.path, claim=claim)
    for step in range(1, 21):
        log.log_step(StepRecord(step, 0, {"loss": float(index)}, [float(index)] * 3))
        if step % 5 == 0:
            log.flush(background=step % 10 == 0)
    print(json.dumps({"path": str(claim.path), "run_id": log.run_id, "pid": os.getpid()}), flush=True)
    _wait_for(Path(release))
    log.log_eval(EvalRecord(0, 20, {"accuracy": index / 10}))
    log.finish()
    print("done", flush=True)


def _holder(path: str, steps: int) -> None:
    """A child that writes a run at ``path`` and then lives (until it is killed). Its heartbeat is
    turned off, so that the tests can check that nothing else changes a file."""
    ownership.HEARTBEAT_INTERVAL_S = 10**6
    log = RunLog({"name": Path(path).name, "method": "kd"}, path=path)
    for step in range(1, steps + 1):
        log.log_step(StepRecord(step, 0, {"loss": 1.0}))
    log.flush()
    print(json.dumps({"pid": os.getpid(), "run_id": log.run_id}), flush=True)
    while True:
        time.sleep(1.0)


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )


def _line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    assert line, f"the child ended early: {proc.stderr.read()}"
    return line.strip()


def _files(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``path``: its bytes and modification time."""
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()}


def _finished_run(path: Path, name: str = "old") -> None:
    log = RunLog({"name": name, "method": "kd", "writer": -1}, path=path)
    log.log_step(StepRecord(1, 0, {"loss": -1.0}, [0.0] * 3))
    log.finish()


# ----------------------------------------------------------------------------- finding 1: two writers, one run


@pytest.mark.timeout(300)
@pytest.mark.parametrize("overwrite", [False, True], ids=["distinct", "overwrite"])
def test_four_writer_processes_racing_for_one_name(tmp_path, overwrite):
    root, go, release = tmp_path / "runs", tmp_path / "go", tmp_path / "release"
    if overwrite:  # a finished run of that name is there to be replaced
        _finished_run(root / "same")
    procs = [_spawn("writer", str(root), "same", str(i), str(int(overwrite)), str(go), str(release)) for i in range(4)]
    try:
        for proc in procs:
            assert _line(proc) == "ready"
        go.touch()
        results = [json.loads(_line(proc)) for proc in procs]  # all have claimed or been refused by now
        release.touch()
        for proc in procs:
            proc.wait(timeout=WAIT_S)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [proc.returncode for proc in procs] == [0] * 4, [proc.stderr.read() for proc in procs]
    owners = {i: r for i, r in enumerate(results) if "path" in r}
    refused = [r for r in results if "refused" in r]
    if overwrite:
        assert len(owners) == 1 and len(refused) == 3, results
        [owner] = owners.values()
        for r in refused:
            assert r["busy"], r
            assert f"is being written by another process (pid {owner['pid']} on host" in r["refused"]
            assert "wait for it to end or pick another name" in r["refused"]
    else:
        assert not refused and sorted(Path(r["path"]).name for r in owners.values()) == [
            "same", "same-2", "same-3", "same-4"
        ]  # fmt: skip
    assert sorted(p.name for p in root.iterdir()) == sorted(Path(r["path"]).name for r in owners.values())
    for index, owner in owners.items():  # every directory holds one run: its own config and its own steps
        log = load_run(owner["path"])
        assert (log.run_id, log.config["writer"], log.status) == (owner["run_id"], index, "finished")
        assert log.steps["step"].tolist() == list(range(1, 21)) and set(log.steps["loss"]) == {float(index)}
        assert set(log.class_cosine["cosine"]) == {float(index)}
        assert log.evals["accuracy"].tolist() == [index / 10]
        assert not (Path(owner["path"]) / ownership.LOCK_FILE).exists()  # a finished run holds no lock file


@pytest.mark.parametrize("overwrite", [False, True], ids=["distinct", "overwrite"])
def test_two_threads_racing_for_one_name(tmp_path, overwrite):
    barrier, results, logs = threading.Barrier(2), [None, None], [None, None]
    if overwrite:
        _finished_run(tmp_path / "same")

    from cskd_viz.training.experiment import _unique_dir  # what two RunLauncher panels call, in two threads

    def race(i: int) -> None:
        barrier.wait()
        try:
            claims = []
            path = _unique_dir(tmp_path, "same", overwrite, claims)
            logs[i] = RunLog({"name": path.name, "method": "ce", "writer": i}, path=path, claim=claims[0])
            logs[i].log_step(StepRecord(1, 0, {"loss": float(i)}))
            results[i] = path
        except RunLogError as err:
            results[i] = err

    threads = [threading.Thread(target=race, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [i for i in range(2) if isinstance(results[i], Path)]
    if overwrite:
        assert len(won) == 1, results
        error = results[1 - won[0]]
        assert isinstance(error, RunBusyError) and "another RunLog of this process" in str(error)
    else:
        assert sorted(results[i].name for i in won) == ["same", "same-2"]
    for i in won:
        logs[i].finish()
        loaded = load_run(results[i])
        assert loaded.config["writer"] == i and loaded.steps["loss"].tolist() == [float(i)]


def test_two_monitors_with_one_path_in_two_threads(tmp_path):
    from cskd_viz import Monitor

    barrier, outcomes = threading.Barrier(2), []

    def open_monitor() -> None:
        barrier.wait()
        try:
            outcomes.append(Monitor(tmp_path / "m", 3, overwrite=True))
        except ValueError as err:
            outcomes.append(err)

    threads = [threading.Thread(target=open_monitor) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monitors = [o for o in outcomes if not isinstance(o, Exception)]
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(monitors) == 1 and len(errors) == 1 and isinstance(errors[0], RunBusyError), outcomes
    monitors[0].close()
    assert load_run(tmp_path / "m").status == "finished"


def test_temporary_file_names_are_unique_per_thread(tmp_path):
    names, barrier = [], threading.Barrier(2)  # two live threads (a finished thread's id may be reused)

    def name() -> None:
        names.append(store._tmp_path(tmp_path / "config.json"))
        barrier.wait()

    threads = [threading.Thread(target=name) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 2 and all(str(os.getpid()) in n.name for n in names)


def test_run_directories_are_created_with_mkdir_and_a_suffix(tmp_path):
    (tmp_path / "x").mkdir()  # an empty directory is taken: never shared, never reused
    first = claim_new_dir(tmp_path, "x")
    second = claim_new_dir(tmp_path, "x")
    assert (first.path.name, second.path.name) == ("x-2", "x-3")
    first.release()
    second.release()


# ----------------------------------------------------------------------------- overwrite refused while held


@pytest.mark.timeout(300)
def test_overwrite_is_refused_while_another_live_process_writes_the_run(tmp_path, capsys):
    from cskd_viz import Monitor
    from cskd_viz.cli import main
    from cskd_viz.train import RunConfig, run_experiment

    busy = tmp_path / "busy"
    proc = _spawn("holder", str(busy), "3")
    try:
        holder = json.loads(_line(proc))
        before = _files(busy)
        message = rf"run {busy} is being written by another process \(pid {holder['pid']} on host [^)]+\): wait for"
        with pytest.raises(RunBusyError, match=message):
            Monitor(busy, 3, overwrite=True)
        with pytest.raises(ValueError, match=message):
            RunLog({"name": "busy"}, path=busy, overwrite=True)
        config = RunConfig(method="ce", teacher=None, student="mlp_small", epochs=None, max_steps=2, name="busy")
        with pytest.raises(ValueError, match=message):
            run_experiment(config, tmp_path, progress=False, overwrite=True)
        args = ["train", "--method", "ce", "--teacher", "none", "--max-steps", "2", "--name", "busy", "--overwrite"]
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--runs-dir", str(tmp_path), "--no-progress"])
        assert exit_info.value.code == 2 and "is being written by another process" in capsys.readouterr().err
        assert _files(busy) == before  # nothing was deleted, nothing written
        assert load_run(busy).run_id == holder["run_id"] and load_run(busy).status == "running"
    finally:
        proc.kill()
        proc.wait(timeout=WAIT_S)
    RunLog({"name": "busy"}, path=busy, overwrite=True).finish()  # its writer is gone: replaced now
    assert load_run(busy).steps.empty


# ----------------------------------------------------------------------------- finding 3: dead runs


@pytest.mark.timeout(300)
def test_a_killed_run_is_dead_a_live_one_running_and_no_file_changes(tmp_path, monkeypatch):
    from cskd_viz.cli import main

    dead, live = tmp_path / "killed", tmp_path / "live"
    victim, alive = _spawn("holder", str(dead), "4"), _spawn("holder", str(live), "2")
    try:
        json.loads(_line(victim))
        json.loads(_line(alive))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=WAIT_S)
        assert load_run(dead).status == "running"  # killed just now: its heartbeat is still fresh
        monkeypatch.setattr(ownership, "STALE_AFTER_S", 0.0)  # as if that heartbeat were old
        before = {path: _files(path) for path in (dead, live)}
        assert (load_run(dead).status, load_run(live).status) == ("dead", "running")
        table = list_runs(tmp_path).set_index("name")
        assert table.loc["killed", "status"] == "dead" and table.loc["live", "status"] == "running"
        assert table.loc["killed", "steps"] == 4
        reader = load_run(live)
        assert main(["report", str(tmp_path), "--no-figures"]) == 0
        alive.send_signal(signal.SIGTERM)  # the default action of SIGTERM: the process ends at once
        alive.wait(timeout=WAIT_S)
        assert reader.refresh().status == "dead"
        assert {path: _files(path) for path in (dead, live)} == before  # readers changed nothing
    finally:
        for proc in (victim, alive):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=WAIT_S)


def test_report_shows_a_status_column_and_reasons(tmp_path, monkeypatch, capsys):
    from cskd_viz.cli import main

    for name, status, reason in (("ok", "finished", None), ("nan", "failed", "loss became NaN at step 131")):
        log = RunLog({"name": name, "method": "kd"}, path=tmp_path / name)
        log.log_eval(EvalRecord(0, 1, {"accuracy": 0.5}))
        log.finish(status, reason=reason)
    old = RunLog({"name": "gone", "method": "kd"}, path=tmp_path / "gone")
    old._end_ownership()  # its writer vanished without finishing (as if killed)
    monkeypatch.setattr(ownership, "STALE_AFTER_S", 0.0)
    assert main(["report", str(tmp_path), "--no-figures"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["name", "method", "status"] and header[-1] == "reason"
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert " dead " in rows["gone"] and " finished " in rows["ok"]
    assert " failed " in rows["nan"] and rows["nan"].endswith("loss became NaN at step 131")
    assert load_run(tmp_path / "nan").reason == "loss became NaN at step 131"
    assert list_runs(tmp_path).set_index("name").loc["nan", "reason"] == "loss became NaN at step 131"


def test_monitor_close_keeps_the_reason(tmp_path):
    import torch

    from cskd_viz import Monitor

    monitor = Monitor(tmp_path / "a", 3)
    monitor.close("interrupted", reason="stopped by the user")
    assert load_run(tmp_path / "a").reason == "stopped by the user"
    with pytest.raises(RuntimeError, match="boom"), Monitor(tmp_path / "b", 3) as monitor:
        monitor.log_step(1, torch.zeros(2, 3), None, losses=1.0)
        raise RuntimeError("boom\nsecond line")
    loaded = load_run(tmp_path / "b")
    assert (loaded.status, loaded.reason) == ("failed", "RuntimeError: boom")


def test_the_heartbeat_refreshes_config_json_until_finish(tmp_path, monkeypatch):
    monkeypatch.setattr(ownership, "HEARTBEAT_INTERVAL_S", 0.02)
    log = RunLog({"name": "beat", "method": "ce"}, path=tmp_path / "beat")
    log.log_step(StepRecord(1, 0, {"loss": 1.0}))
    log.flush()
    first = json.loads((tmp_path / "beat" / "config.json").read_text())
    lock = json.loads((tmp_path / "beat" / ownership.LOCK_FILE).read_text())
    assert lock["pid"] == os.getpid() and first["writer"]["pid"] == os.getpid()
    deadline = time.monotonic() + WAIT_S
    while (now := json.loads((tmp_path / "beat" / "config.json").read_text()))["heartbeat"] == first["heartbeat"]:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.01)
    assert {k: v for k, v in now.items() if k != "heartbeat"} == {k: v for k, v in first.items() if k != "heartbeat"}
    thread = log._beat_thread
    log.finish()
    assert not thread.is_alive() and log._beat_thread is None
    final = (tmp_path / "beat" / "config.json").read_bytes()
    time.sleep(0.1)  # five heartbeat intervals: none may come after finish
    assert (tmp_path / "beat" / "config.json").read_bytes() == final
    assert not (tmp_path / "beat" / ownership.LOCK_FILE).exists()


def test_an_abandoned_log_releases_its_run(tmp_path):
    import gc

    log = RunLog({"name": "a", "method": "ce"}, path=tmp_path / "a")
    with pytest.raises(RunBusyError):
        RunLog({"name": "a"}, path=tmp_path / "a", overwrite=True)
    del log
    gc.collect()
    RunLog({"name": "a"}, path=tmp_path / "a", overwrite=True).finish()


def test_an_abandoned_log_that_flushed_in_the_background_releases_its_run(tmp_path):
    import gc

    log = RunLog({"name": "a", "method": "ce"}, path=tmp_path / "a")
    log.log_step(StepRecord(1, 0, {"loss": 1.0}))
    log.flush(background=True)  # as a Monitor does: the writer thread must not keep the log alive
    log.wait()
    del log
    gc.collect()
    assert ownership.lock_state(tmp_path / "a") != "held"
    RunLog({"name": "a"}, path=tmp_path / "a", overwrite=True).finish()
    for thread in threading.enumerate():
        if thread.name.startswith("cskd_viz-runlog"):
            thread.join(timeout=WAIT_S)  # both end once their log is gone (the writer at once)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("cskd_viz-runlog")]


def test_a_refused_log_at_a_finished_run_adds_no_lock_file(tmp_path):
    _finished_run(tmp_path / "r")
    before = _files(tmp_path / "r")
    with pytest.raises(RunLogError, match="already holds a run"):
        RunLog({"name": "r"}, path=tmp_path / "r")
    assert _files(tmp_path / "r") == before


def test_loading_a_finished_run_left_uncompacted_leaves_no_lock_file(tmp_path, monkeypatch):
    log = _some_log(tmp_path / "r")
    monkeypatch.setattr(store, "remove", lambda paths: None)  # killed after the final status, before deleting parts
    log.finish()
    monkeypatch.undo()
    assert store.part_files(tmp_path / "r", "steps")
    assert load_run(tmp_path / "r").steps["step"].tolist() == [1, 2, 3]  # compacted on load
    assert not store.part_files(tmp_path / "r", "steps") and not (tmp_path / "r" / ownership.LOCK_FILE).exists()


# ----------------------------------------------------------------------------- disk errors


def _enospc_for(monkeypatch, predicate):
    real = store.atomic_write

    def atomic_write(path, write):
        if predicate(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write)

    monkeypatch.setattr(store, "atomic_write", atomic_write)


def _some_log(path: Path) -> RunLog:
    log = RunLog({"name": path.name, "method": "ce"}, path=path)
    for step in (1, 2):
        log.log_step(StepRecord(step, 0, {"loss": 1.0}, [0.5, 0.5]))
    log.flush()
    log.log_step(StepRecord(3, 0, {"loss": 1.0}, [0.5, 0.5]))
    return log


def test_a_full_disk_while_flushing_keeps_what_was_written(tmp_path, monkeypatch):
    log = _some_log(tmp_path / "r")
    _enospc_for(monkeypatch, lambda path: path.parent.name == "class_cosine")
    with pytest.raises(RunLogWriteError) as info:
        log.flush()
    err = info.value
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and isinstance(err.__cause__, OSError)
    assert str(err) == f"could not write the run log {tmp_path / 'r'}: No space left on device"
    assert load_run(tmp_path / "r").steps["step"].tolist() == [1, 2]
    log.log_step(StepRecord(4, 0, {"loss": 1.0}))
    log.flush(background=True)
    with pytest.raises(RunLogWriteError, match="could not write the run log"):
        log.wait()
    monkeypatch.undo()
    log.finish()
    assert load_run(tmp_path / "r").steps["step"].tolist() == [1, 2, 3, 4]


def test_a_full_disk_while_finishing_still_writes_the_final_status(tmp_path, monkeypatch):
    log = _some_log(tmp_path / "r")
    _enospc_for(monkeypatch, lambda path: path.name.startswith("compacted"))
    with pytest.raises(RunLogWriteError, match=f"could not write the run log {tmp_path / 'r'}: No space left"):
        log.finish("failed", reason="the disk is full")
    loaded = load_run(tmp_path / "r")
    assert (loaded.status, loaded.reason) == ("failed", "the disk is full")
    assert loaded.steps["step"].tolist() == [1, 2]  # the rows written before stay; step 3 stays pending
    assert not list((tmp_path / "r").glob("*/compacted-*")) and log._beat_thread is None
    monkeypatch.undo()
    log.finish("failed", reason="the disk is full")  # room again: the pending rows go in
    assert load_run(tmp_path / "r").steps["step"].tolist() == [1, 2, 3]


def test_the_lock_files_reserve_makes_room_for_the_final_status_on_a_full_disk(tmp_path, monkeypatch):
    log = _some_log(tmp_path / "r")
    lock = tmp_path / "r" / ownership.LOCK_FILE
    assert lock.stat().st_size == ownership.RESERVE_BYTES
    # a full disk but for the reserve: nothing can be written until the lock file gives its space back
    _enospc_for(monkeypatch, lambda path: lock.stat().st_size > 0)
    with pytest.raises(RunLogWriteError):
        log.finish("failed", reason="disk full")
    loaded = load_run(tmp_path / "r")
    assert (loaded.status, loaded.reason, loaded.steps["step"].tolist()) == ("failed", "disk full", [1, 2])


def test_a_disk_that_refuses_everything_leaves_a_run_that_turns_dead(tmp_path, monkeypatch):
    log = _some_log(tmp_path / "r")
    _enospc_for(monkeypatch, lambda path: True)
    with pytest.raises(RunLogWriteError):
        log.finish()
    monkeypatch.undo()
    assert load_run(tmp_path / "r").status == "running"  # its heartbeat is fresh
    monkeypatch.setattr(ownership, "STALE_AFTER_S", 0.0)
    loaded = load_run(tmp_path / "r")
    assert loaded.status == "dead" and loaded.steps["step"].tolist() == [1, 2]


# ----------------------------------------------------------------------------- validate before mutating


def _state(log: RunLog) -> tuple:
    files = _files(log.path)
    return copy.deepcopy(log._pending), dict(log.progress), log.status, log.reason, log._seq, files


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda log: log.log_step(StepRecord(2**70, 0, {"loss": 1.0})), ValueError),
        (lambda log: log.log_step(StepRecord(5, 0, {"loss": 10**400})), ValueError),
        (lambda log: log.log_step(StepRecord(5, 0, {"loss": 1.0}, [0.5] * 3)), ValueError),  # 2 classes before
        (lambda log: log.log_step(StepRecord(5, 0, {}, temperature_hist=[(2.0, 4.0, float("inf"))])), ValueError),
        (lambda log: log.log_step(StepRecord(5, 0, {}, temperature_hist=[(2.0, 4.0, 2**64)])), ValueError),
        (lambda log: log.log_eval(EvalRecord(1, 5, {"accuracy": 10**400})), ValueError),
        (lambda log: log.log_eval(EvalRecord(1, -5, {"accuracy": 0.5})), ValueError),
        (lambda log: log.log_eval(EvalRecord(1, 5, {"accuracy": 0.5}, split=None)), TypeError),
        (lambda log: log.set_progress("3", 0), ValueError),
        (lambda log: log.set_progress(3, 2**64), ValueError),
        (lambda log: log.finish("paused"), ValueError),
        (lambda log: log.finish("failed", reason=3), TypeError),
    ],
)
def test_a_refused_call_leaves_the_log_as_it_was(tmp_path, call, error):
    log = _some_log(tmp_path / "r")
    before = _state(log)
    with pytest.raises(error):
        call(log)
    assert _state(log) == before
    log.finish()
    assert load_run(tmp_path / "r").steps["step"].tolist() == [1, 2, 3]


def test_a_loaded_run_refuses_writes(tmp_path):
    log = _some_log(tmp_path / "r")
    reader = load_run(tmp_path / "r")
    before = _files(tmp_path / "r")
    for call in (
        lambda: reader.log_step(StepRecord(9, 0, {"loss": 1.0})),
        lambda: reader.log_eval(EvalRecord(0, 9, {"accuracy": 1.0})),
        lambda: reader.set_progress(9, 0),
        reader.flush,
        reader.finish,
        reader.compact,
    ):
        with pytest.raises(RunLogError, match="was loaded from disk: it is read-only"):
            call()
    assert _files(tmp_path / "r") == before and reader.progress == {"step": 2, "epoch": 0}
    log.finish()


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        _writer(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1", sys.argv[6], sys.argv[7])
    else:
        _holder(sys.argv[2], int(sys.argv[3]))
