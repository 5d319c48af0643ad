"""``torchrun --standalone`` of a command on this machine for the tests, bounded in time.

The launcher and both workers run in a session of their own, killed together (``SIGKILL`` to the
process group) when ``deadline_s`` passes, so a hung collective cannot hang the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def torchrun(
    target: Sequence[str], *, cwd: Path, nproc: int = 2, deadline_s: float = 150, env: Mapping[str, str] = {}
) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=nproc *target`` in ``cwd``: its output
    (stdout and stderr together) and status. One torch thread per process, gloo on loopback, no GPU."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *target]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env}
    full_env.pop("CUDA_VISIBLE_DEVICES", None)
    if sys.platform.startswith("linux"):
        full_env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback, whatever the host name resolves to
    proc = subprocess.Popen(
        command, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every worker
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish within {deadline_s} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, None)
