"""One trial's run on ``nproc`` data-parallel processes: a ``torchrun --standalone`` launch of this module.

The sweep's process writes the config as JSON, launches ``python -m torch.distributed.run
--standalone --nproc_per_node=N -m cskd_viz.experiments._launch CONFIG RUNS_DIR RESULT``, and reads the
run directory that rank 0 names in ``RESULT``. Every rank calls ``run_experiment`` with the same
config (it joins the process group and shards the data; rank 0 alone writes the run), exactly as
``cskd-viz train`` does under ``torchrun``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["run_distributed"]

_STOP_WAIT_S = 60  # after Ctrl-C: how long the launch may take to end its run as interrupted


def _command(config_file: Path, runs_dir: str, result_file: Path, nproc: int) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*launcher, "-m", "cskd_viz.experiments._launch", str(config_file), runs_dir, str(result_file)]


def _environment() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per process: N processes share the cores
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # a standalone launch is on this machine: loopback
    return env


def _stop(process: subprocess.Popen) -> None:
    """Ctrl-C to the whole launch (launcher and ranks end their run as interrupted), then kill it if it hangs."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.communicate(timeout=_STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    except ProcessLookupError:
        pass


def run_distributed(config: Any, runs_dir: str | os.PathLike, nproc: int) -> Any:
    """Run ``config`` on ``nproc`` processes of this machine (gloo on CPU) and return rank 0's :class:`RunLog`.

    A launch that fails raises ``RuntimeError`` with the end of its output; Ctrl-C interrupts the launch
    (its run log is saved as ``interrupted``) and is raised again.
    """
    from cskd_viz.runs import load_run

    with tempfile.TemporaryDirectory(prefix="cskd-viz-launch-") as tmp:
        config_file, result_file = Path(tmp) / "config.json", Path(tmp) / "result.json"
        fields = {k: v for k, v in config.to_dict().items() if k != "cswt"}  # cswt follows from the method
        config_file.write_text(json.dumps(fields))
        process = subprocess.Popen(
            _command(config_file, os.fspath(runs_dir), result_file, nproc),
            env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # a signal meant for the launch reaches every rank, and only them
        )  # fmt: skip
        try:
            output, _ = process.communicate()
        except BaseException:
            _stop(process)
            raise
        if process.returncode != 0 or not result_file.is_file():
            # The first rank to fail names the cause (the others are stopped after it); else the output's end.
            errors = sorted(Path(tmp).glob("result.json.rank*.error"), key=lambda p: p.stat().st_mtime_ns)
            cause = errors[0].read_text() if errors else "\n".join(output.strip().splitlines()[-20:])
            raise RuntimeError(f"the {nproc}-process launch exited with status {process.returncode}: {cause}")
        return load_run(json.loads(result_file.read_text())["path"])


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - runs in the launched processes
    from cskd_viz.training import RunConfig, run_experiment

    config_file, runs_dir, result_file = argv if argv is not None else sys.argv[1:]
    config = RunConfig(**json.loads(Path(config_file).read_text()))
    rank = os.environ.get("RANK", "0")
    try:
        log = run_experiment(config, runs_dir, progress=False)
    except BaseException as err:  # what the launcher's own report of a failed rank leaves out
        Path(f"{result_file}.rank{rank}.error").write_text(f"rank {rank}: {type(err).__name__}: {err}")
        raise
    if rank == "0":
        partial = Path(f"{result_file}.part")
        partial.write_text(json.dumps({"path": str(log.path), "status": log.status}))
        os.replace(partial, result_file)


if __name__ == "__main__":  # pragma: no cover
    main()
