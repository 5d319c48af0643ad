"""User errors of the cskd-viz command (issue #14, findings 8-10 and the minor items).

Every user error — a path, the environment, data, a checkpoint — is one line
``cskd-viz: error: <why>`` on stderr and exit status 2, never a traceback. The cases that fail
before torch is imported run the real command in a subprocess (fast); the rest call ``main``
in-process on real files and directories.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from standin_data import patch_torchvision_md5, write_cifar

from cskd_viz.cli import main
from cskd_viz.runs import RunLog, load_run

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK")
TINY = ["--student", "mlp_small", "--teacher", "none", "--method", "ce", "--max-steps", "2", "--no-progress"]


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, prefix: list[str] = ()):
    """``python -m cskd_viz.cli ARGS`` as a user runs it (no torchrun variables unless given)."""
    base = {k: v for k, v in os.environ.items() if k not in TORCHRUN}
    full_env = {**base, "PYTHONPATH": str(REPO), "CSKD_VIZ_FAST": "1", **(env or {})}
    command = [*prefix, sys.executable, "-m", "cskd_viz.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=180)


def assert_one_line_error(stderr: str, *fragments: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("cskd-viz: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def read_only_dir(tmp_path: Path) -> tuple[Path, list[str]]:
    """A directory nobody may write to, and the command prefix that makes it so.

    Not root: ``chmod 555``. Root ignores permission bits, so then a read-only tmpfs is mounted over
    it in a private mount namespace of the command alone (``unshare -m``; nothing leaks out).
    """
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        return ro, []
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    script = f'mount -t tmpfs -o ro tmpfs {shlex.quote(str(ro))} && exec "$@"'
    prefix = [unshare, "-m", "sh", "-c", script, "sh"] if unshare and mount else []
    if prefix:
        probe = subprocess.run([*prefix, "sh", "-c", f"! mkdir {shlex.quote(str(ro / 'x'))} 2>/dev/null"], timeout=30)
        if probe.returncode == 0:
            return ro, prefix
    pytest.skip("as root, chmod does not stop writes, and this machine cannot mount a read-only tmpfs (unshare -m)")


# --- finding 8: paths ---------------------------------------------------------------------------

PATH_CASES = ["read-only runs dir", "runs dir through a file", "name too long", "report out read-only"]


@pytest.mark.parametrize("case", PATH_CASES)
def test_path_errors_are_one_line_exit_2_before_training(case, tmp_path):
    (tmp_path / "somefile").write_text("x")
    prefix: list[str] = []
    if case == "read-only runs dir":
        ro, prefix = read_only_dir(tmp_path)
        args, expected = ["train", *TINY, "--runs-dir", str(ro / "runs")], ("--runs-dir", "is not writable")
    elif case == "runs dir through a file":
        args, expected = ["train", *TINY, "--runs-dir", "somefile/sub"], ("somefile is a file, not a directory",)
    elif case == "name too long":
        args, expected = ["train", *TINY, "--runs-dir", "runs", "--name", "a" * 300], ("--name has 300 bytes",)
    else:
        RunLog({"name": "r1", "method": "ce"}, path=tmp_path / "runs" / "r1").finish()
        ro, prefix = read_only_dir(tmp_path)
        args, expected = ["report", "runs/r1", "--out", str(ro / "figures")], ("--out", "is not writable")
    result = cli(args, tmp_path, prefix=prefix)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr, *expected)
    assert case.startswith("report") or not (tmp_path / "runs").exists()  # refused before anything was written


# --- finding 8: the distributed environment ------------------------------------------------------


def test_world_size_without_rendezvous_variables(tmp_path):
    result = cli(["train", *TINY], tmp_path, env={"WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert result.returncode == 2
    line = assert_one_line_error(result.stderr, "WORLD_SIZE=2 but RANK, MASTER_ADDR, MASTER_PORT is not set")
    assert "LOCAL_RANK=0" in line and "MASTER_ADDR unset" in line and "torchrun" in line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(180)
def test_missing_torchrun_peer_times_out(tmp_path):
    """The full rendezvous environment for 2 ranks, only rank 0 started: it gives up after --dist-timeout."""
    port = str(_free_port())
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    result = cli(["train", *TINY, "--runs-dir", "runs", "--dist-timeout", "3"], tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    line = assert_one_line_error(result.stderr, "rendezvous timed out", "--dist-timeout")
    for name, value in env.items():
        assert f"{name}={value}" in line
    assert not (tmp_path / "runs").exists()


def test_dist_timeout_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dist-timeout", "0"])
    assert exit_info.value.code == 2 and "--dist-timeout must be a positive number" in capsys.readouterr().err


# --- finding 8: data --------------------------------------------------------------------------------


def test_missing_cifar_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CSKD_DATA", str(tmp_path / "data"))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "cifar10", *TINY, "--runs-dir", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "cifar10 not found in", "cifar-10-batches-py", "$CSKD_DATA")


# --- finding 9: checkpoints ------------------------------------------------------------------------


def _checkpoints(tmp_path: Path) -> dict[str, Path]:
    from cskd_viz.models import get_model
    from cskd_viz.train import save_checkpoint

    good = tmp_path / "good.pt"
    save_checkpoint(get_model("mlp_large", 10, (1, 8, 8)), good)
    state = torch.load(good, weights_only=True)["model"]
    files = {"empty": b"", "text": b"epoch,loss\n1,0.5\n", "truncated": good.read_bytes()[: good.stat().st_size // 2]}
    paths = {}
    for name, raw in files.items():
        paths[name] = tmp_path / f"{name}.pt"
        paths[name].write_bytes(raw)
    nan = {k: v.clone() for k, v in state.items()}
    nan["net.1.weight"][0, 0] = float("nan")
    torch.save({"model": nan}, paths.setdefault("nan", tmp_path / "nan.pt"))
    torch.save({"model": {k: v.long() for k, v in state.items()}}, paths.setdefault("int64", tmp_path / "int64.pt"))
    return paths


CHECKPOINT_CASES = {
    "empty": "is empty (0 bytes)",
    "text": "is not a PyTorch checkpoint",
    "truncated": "is truncated or corrupt",
    "nan": "non-finite weights (NaN or inf) in 1 of",
    "int64": "dtype mismatches (",
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_unusable_teacher_checkpoint_is_one_line(case, tmp_path, capsys):
    path = _checkpoints(tmp_path)[case]
    args = ["train", "--student", "mlp_small", "--teacher", "mlp_large", "--teacher-checkpoint", str(path)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--method", "kd", "--max-steps", "1", "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    assert exit_info.value.code == 2
    line = assert_one_line_error(capsys.readouterr().err, CHECKPOINT_CASES[case], str(path))
    if case in ("nan", "int64"):
        assert "net.1.weight" in line and (case == "nan" or "torch.int64 vs model torch.float32" in line)
    assert not (tmp_path / "runs").exists()  # refused before training


# --- finding 10: a planted CIFAR file ------------------------------------------------------------


class _Planted:
    """Unpickling this runs a shell command (what a planted data file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_planted_cifar_file_runs_nothing(tmp_path, monkeypatch, capsys):
    """Even with md5 sums that match it (the default verify=True), the planted file is refused unrun."""
    src = write_cifar(tmp_path / "data", "cifar10", n_train=10, n_test=4)
    marker = tmp_path / "PWNED"
    planted = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1"
    planted.write_bytes(pickle.dumps({"data": _Planted(marker), "labels": [0]}, protocol=2))
    md5 = {**src["md5"], "data_batch_1": hashlib.md5(planted.read_bytes()).hexdigest()}
    patch_torchvision_md5(monkeypatch, "cifar10", md5)
    monkeypatch.setenv("CSKD_DATA", str(tmp_path / "data"))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "cifar10", *TINY, "--runs-dir", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, str(planted), "not a genuine CIFAR file", "system")
    assert not marker.exists()


# --- minor items -------------------------------------------------------------------------------------


def test_dataset_names_follow_one_rule_in_the_cli(tmp_path, capsys):
    assert main(["train", "--dataset", "DIGITS", *TINY, "--runs-dir", str(tmp_path / "runs")]) == 0
    log = load_run(tmp_path / "runs" / "ce-mlp_small-digits-s0")
    assert log.config["dataset"] == "digits" and log.status == "finished"


def test_interrupt_before_training_claims_no_run_log(tmp_path, monkeypatch, capsys):
    import cskd_viz.data

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cskd_viz.data, "make_loaders", interrupted)
    assert main(["train", *TINY, "--runs-dir", str(tmp_path / "runs")]) == 130
    err = capsys.readouterr().err
    assert "interrupted before any run log was written" in err and "saved" not in err

    class Terminated(KeyboardInterrupt):  # what a SIGTERM becomes: a KeyboardInterrupt with its exit code
        exit_code = 143

        def __str__(self) -> str:
            return "terminated by SIGTERM"

    def terminated(*args, **kwargs):
        raise Terminated

    monkeypatch.setattr(cskd_viz.data, "make_loaders", terminated)
    assert main(["train", *TINY, "--runs-dir", str(tmp_path / "runs")]) == 143
    assert "cskd-viz: terminated by SIGTERM before any run log was written" in capsys.readouterr().err


def test_interrupt_during_training_names_the_saved_run_log(tmp_path, monkeypatch, capsys):
    steps = []
    original = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    args = ["train", "--student", "mlp_small", "--teacher", "none", "--method", "ce", "--max-steps", "4"]
    args += ["--no-progress", "--runs-dir", str(tmp_path / "runs"), "--name", "cut"]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert f"the run log was saved: {tmp_path / 'runs' / 'cut'} (status 'interrupted')" in err
    assert load_run(tmp_path / "runs" / "cut").status == "interrupted"


# --- review of issue 14 ---------------------------------------------------------------------------

KD = ["--teacher", "mlp_large", "--method", "kd"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--runs-dir", ""], "--runs-dir is empty"),
        (["--teacher-checkpoint", "missing.pt", *KD], "missing.pt is not a file (no such file)"),
        (["--teacher-checkpoint", ".", *KD], "--teacher-checkpoint . is not a file (a directory)"),
    ],
)
def test_empty_runs_dir_and_missing_checkpoints_are_one_line(args, expected, tmp_path, monkeypatch, capsys):
    """``--runs-dir ''`` once wrote the run into the working directory; a missing checkpoint printed the usage."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *TINY, *args])
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, expected)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_stray_rank_without_world_size_still_checks_the_paths(tmp_path, monkeypatch, capsys):
    """``RANK=1`` alone is one process that writes: its paths are checked before training, like any other."""
    (tmp_path / "somefile").write_text("x")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *TINY, "--runs-dir", str(tmp_path / "somefile" / "sub")])
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "--runs-dir", "is a file, not a directory")


def _gadget_pickles() -> dict[str, bytes]:
    """Pickles that use only the numpy names genuine CIFAR files need, to allocate or to read pointers."""
    import numpy as np

    numpy_v8 = pickle.dumps(np.zeros(1, "V8"), protocol=0)
    flagged = numpy_v8.replace(b"I8\nI1\nI0\nt", b"I8\nI1\nI63\nt")  # dtype.__setstate__ flags: "holds objects"
    assert flagged != numpy_v8
    huge = pickle.dumps(np.arange(3, dtype=np.uint8), protocol=0).replace(b"(I1\n(I3\nt", b"(I1\n(I1099511627776\nt")
    object_array = pickle.dumps(np.array([1, 2, 3], dtype=object), protocol=0)
    return {
        "ndarray call": b"cnumpy\nndarray\n((I1099511627776\ntS'u1'\ntR.",
        "_reconstruct shape": b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I1099511627776\ntS'b'\ntR.",
        "object array": object_array.replace(b"(I1\n(I3\nt", b"(I1\n(I1099511627776\nt"),
        "object flags": flagged,
        "huge shape": huge,
    }


@pytest.mark.parametrize("case", sorted(_gadget_pickles()))
def test_cifar_gadgets_of_allowed_names_are_refused(case, tmp_path):
    """A huge array asked for, an object dtype, or flags saying "objects": refused before allocating or reading."""
    from cskd_viz._cifar_files import DataFileError, read_cifar_batch

    path = tmp_path / "data_batch_1"
    path.write_bytes(_gadget_pickles()[case])
    with pytest.raises(DataFileError, match=str(path)):
        read_cifar_batch(path)


def test_real_format_cifar_batches_load_as_plain_arrays(tmp_path):
    import numpy as np

    from cskd_viz._cifar_files import read_cifar_batch

    src = write_cifar(tmp_path, "cifar10", n_train=10, n_test=4)
    entry = read_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch")
    assert type(entry["data"]) is np.ndarray and entry["data"].dtype == np.uint8
    assert entry["labels"] == src["test_labels"].tolist()
    for protocol in range(6):
        path = tmp_path / f"p{protocol}"
        path.write_bytes(pickle.dumps({"data": np.arange(6, dtype=np.uint8).reshape(2, 3)}, protocol=protocol))
        assert read_cifar_batch(path)["data"].tolist() == [[0, 1, 2], [3, 4, 5]]
