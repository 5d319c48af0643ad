"""The process group of a run, from torchrun's environment (re-exported by :mod:`cskd_viz.distributed`).

:func:`distributed_session` creates the default process group for the duration of a block when
``WORLD_SIZE > 1``, after :func:`check_torchrun_environment` has made sure the rendezvous
variables are complete and sensible, and with a ``timeout_s`` that bounds the rendezvous itself:
a rank whose peers never start gives up after ``timeout_s`` seconds with a
:class:`DistributedEnvironmentError` naming what it saw, instead of waiting for 30 minutes.

This module imports ``torch`` only when a function needs it, so the ``cskd-viz`` command checks
the environment before its heavy imports.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any

__all__ = [
    "DistributedEnvironmentError",
    "TORCHRUN_VARIABLES",
    "DEFAULT_TIMEOUT_S",
    "torchrun_world_size",
    "check_torchrun_environment",
    "resolve_device",
    "process_device",
    "distributed_session",
]

# What torchrun sets for every worker (env:// rendezvous), in the order messages list them.
TORCHRUN_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK")
DEFAULT_TIMEOUT_S = 60.0


class DistributedEnvironmentError(RuntimeError):
    """torchrun's environment is incomplete or malformed, or the rendezvous with the other ranks failed."""


def environment_summary() -> str:
    """The rendezvous variables as ``NAME=value`` (``NAME unset``), for messages.

    Example:
        >>> "MASTER_ADDR" in environment_summary()
        True
    """
    return ", ".join(
        f"{name}={os.environ[name]}" if os.environ.get(name) else f"{name} unset" for name in TORCHRUN_VARIABLES
    )


def torchrun_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset or empty).

    Example:
        >>> isinstance(torchrun_world_size(), int)
        True
    """
    raw = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE must be an integer, got {raw!r}") from None


def _integer(name: str, low: int, high: int) -> str | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not re.fullmatch(r"\d+", raw) or not low <= int(raw) <= high:
        return f"{name}={raw} is not an integer in [{low}, {high}]"
    return None


def check_torchrun_environment() -> int:
    """The world size of this launch, after checking torchrun's variables are complete and sensible.

    ``WORLD_SIZE`` unset or ``1``: a single process, nothing else is needed. ``WORLD_SIZE > 1``
    needs ``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` (``torchrun`` sets them all, with
    ``LOCAL_RANK``); ``RANK`` must lie in ``[0, WORLD_SIZE)`` and ``MASTER_PORT`` be a port number.

    Raises:
        ValueError: ``WORLD_SIZE`` is not an integer.
        DistributedEnvironmentError: a variable is missing or malformed; the message says which
            variables were set (with their values) and which were not.

    Example:
        >>> import os
        >>> os.environ.get("WORLD_SIZE", "1") != "1" or check_torchrun_environment() == 1
        True
    """
    wanted = torchrun_world_size()
    if wanted <= 1:
        return 1
    seen = environment_summary()
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name, "").strip()]
    if missing:
        raise DistributedEnvironmentError(
            f"WORLD_SIZE={wanted} but {', '.join(missing)} is not set: launch with torchrun "
            f"(e.g. torchrun --standalone --nproc_per_node={wanted} ...), which sets them all "
            f"(seen: {seen}), or unset WORLD_SIZE to run in one process"
        )
    bad = [
        problem
        for problem in (
            _integer("RANK", 0, wanted - 1),
            _integer("LOCAL_RANK", 0, 1 << 16),
            _integer("MASTER_PORT", 1, 65535),
        )
        if problem
    ]
    if bad:
        raise DistributedEnvironmentError(f"torchrun environment is malformed: {'; '.join(bad)} (seen: {seen})")
    return wanted


def resolve_device(device: Any = "cpu") -> Any:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available) as a ``torch.device``.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    import torch

    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu', 'cuda' or 'auto', got {type(device).__name__}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", device):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available (use 'cpu' or 'auto')")
        return torch.device(device)
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def process_device(device: Any) -> Any:
    """``cuda`` without an index means this process's current device (``cuda:LOCAL_RANK`` under torchrun)."""
    import torch

    if device.type == "cuda" and device.index is None and _world_size() > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def check_timeout(timeout_s: Any) -> float:
    """``timeout_s`` as a positive finite float (``ValueError`` otherwise).

    Example:
        >>> check_timeout(3)
        3.0
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < float("inf"):
        raise ValueError(f"timeout_s (--dist-timeout) must be a positive number of seconds, got {timeout_s!r}")
    return float(timeout_s)


def _init_process_group(backend: str, timeout_s: float) -> None:
    """``init_process_group`` from the environment; a failed or timed-out rendezvous is a clear error."""
    from datetime import timedelta

    import torch.distributed as dist

    # DistStoreError (no peer joined in time), DistNetworkError (no rank 0 to connect to, port in use)
    rendezvous_errors = getattr(dist, "DistError", RuntimeError)
    try:
        # env://: the TCPStore of the rendezvous waits for the other ranks for `timeout` too
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    except rendezvous_errors as err:
        _raise_rendezvous_error(err, timeout_s)
    # The short timeout was for the rendezvous: later collectives get torch's own default back (30 min for
    # gloo, 10 for NCCL), so that a rank busy for a minute (rank 0 writing files) never times the others out.
    from torch.distributed import constants

    default = constants.default_pg_nccl_timeout if backend == "nccl" else constants.default_pg_timeout
    set_timeout = getattr(dist, "set_timeout", None) or dist.distributed_c10d._set_pg_timeout
    set_timeout(default)


def _raise_rendezvous_error(err: Exception, timeout_s: float) -> None:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(". ")
    what = "timed out" if "time" in reason.lower() else "failed"
    raise DistributedEnvironmentError(
        f"torch.distributed rendezvous {what} (timeout {timeout_s:g} s; {environment_summary()}): {reason}. "
        "Start all WORLD_SIZE processes (torchrun does), make MASTER_ADDR:MASTER_PORT reachable from every "
        "rank, or give the others more time with --dist-timeout SECONDS"
    ) from None


@contextlib.contextmanager
def distributed_session(device: Any = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[int]:
    """Initialise ``torch.distributed`` from torchrun's environment for the duration of a block.

    Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE > 1`` in the environment) and when no
    process group exists yet, this checks the environment (:func:`check_torchrun_environment`) and
    calls ``init_process_group`` (``env://``: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``) with ``nccl`` when ``device`` is CUDA (after
    ``torch.cuda.set_device(LOCAL_RANK)``, or the index of ``"cuda:N"``) and ``gloo`` otherwise,
    and destroys the group when the block ends. Otherwise (one process, or a group the caller
    created) it does nothing. Nested sessions are no-ops.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``: picks the backend.
        timeout_s: how long a rank waits for the others at the rendezvous (a peer that never
            starts) before it raises (default 60 s; the CLI's ``--dist-timeout``). Later
            collectives keep torch's default timeout (30 min for gloo, 10 min for NCCL).

    Yields:
        The world size (1 without torch.distributed).

    Raises:
        DistributedEnvironmentError: incomplete or malformed torchrun variables, or a rendezvous
            that failed or timed out (the message names the variables it saw).

    Example:
        >>> with distributed_session("cpu") as world:  # a plain process: nothing to do
        ...     world
        1
    """
    import torch
    import torch.distributed as dist

    device = resolve_device(device)
    timeout_s = check_timeout(timeout_s)
    wanted = torchrun_world_size()
    if wanted <= 1 or not dist.is_available() or dist.is_initialized():
        yield _world_size()
        return
    check_torchrun_environment()
    if device.type == "cuda":
        torch.cuda.set_device(device.index if device.index is not None else int(os.environ.get("LOCAL_RANK", "0")))
    _init_process_group("nccl" if device.type == "cuda" else "gloo", timeout_s)
    try:
        yield _world_size()
    finally:
        dist.destroy_process_group()
