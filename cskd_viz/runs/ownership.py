"""Who writes a run: an OS lock in the run directory, a heartbeat, and telling a dead run from a live one.

A live writer holds an exclusive ``flock`` on ``<run>/.lock`` (its pid and host written inside) from
the moment its :class:`~cskd_viz.runs.RunLog` is created until ``finish()``; the OS releases it
when the process ends, however it ends (SIGKILL included). Every writer of a directory (a new run,
an overwrite) takes the lock first and only then looks at, clears or writes the directory, so two
writers never share one. ``flock`` locks belong to open file descriptions, so two ``RunLog`` of
one process (two threads) exclude each other too.

While it holds the lock, the writer rewrites ``config.json`` at least every
:data:`HEARTBEAT_INTERVAL_S` with a fresh ``heartbeat`` time. A reader calls a run whose
``config.json`` says ``running`` *dead* when its lock is free (probed read-only: the lock file is
opened for reading, never created) and its heartbeat (or, for runs without one, ``config.json``'s
modification time) is older than :data:`STALE_AFTER_S`. A reader's probe holds a shared lock for
an instant; a writer retries its lock for :data:`ACQUIRE_RETRY_S` before it refuses.

Where ``fcntl`` is missing (Windows) there are no locks: dead runs are told by their heartbeat alone.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import threading
import time
import weakref
from datetime import datetime
from pathlib import Path
from typing import Any

from cskd_viz.runs.records import CONFIG_FILE, FORMAT, RunLogError, _now, write_error

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".lock"
HEARTBEAT_INTERVAL_S = 10.0  # how often a live writer refreshes config.json's heartbeat
STALE_AFTER_S = 120.0  # a running run with a free lock and a heartbeat this old is dead
ACQUIRE_RETRY_S = 1.0  # a writer retries a held lock this long (a reader's probe holds it briefly)
_POLL_S = 0.02
# The lock file's note of who holds it is padded to this size: a reserve that a writer on a full disk
# frees (truncating the file, keeping the lock) to write its final config.json.
RESERVE_BYTES = 16384
_TMP = re.compile(r"^\..+\.tmp$")  # a temporary file of an interrupted atomic write
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_CLAIMS: weakref.WeakSet = weakref.WeakSet()  # the claims of this process
_ACQUIRING = threading.Lock()


class RunBusyError(RunLogError):
    """The run directory is being written by another live process (or another ``RunLog`` of this one)."""


class RunClaim:
    """This process's exclusive lock on ``<path>/.lock``: it, and only it, writes the run at ``path``.

    Released by :meth:`release`, when the object is garbage-collected, or by the OS at exit.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.real = os.path.realpath(path)
        self._fd: int | None = fd
        _CLAIMS.add(self)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def free_reserve(self) -> bool:
        """Give the disk space of the lock file's padding back (the lock stays); whether there was any."""
        try:
            if self._fd is None or os.fstat(self._fd).st_size == 0:
                return False
            os.ftruncate(self._fd, 0)
        except OSError:
            return False
        return True

    def release(self, remove: bool = False) -> None:
        """Release the lock; with ``remove``, delete the lock file first (a writer that opened it
        meanwhile sees that it is gone once it gets the lock, and locks a new one)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if remove and _is_current(fd, self.path / LOCK_FILE):
                (self.path / LOCK_FILE).unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)  # the only descriptor of the lock: closing it releases the flock

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"RunClaim({str(self.path)!r}, held={self.held})"


def _forget_claims_in_child() -> None:
    """A forked child must not write its parent's runs: it drops its copies of the lock descriptors
    (the parent's lock stays, since a flock is released only when every copy is closed)."""
    global _ACQUIRING
    _ACQUIRING = threading.Lock()  # another thread of the parent may have held it at the fork
    for claim in list(_CLAIMS):
        fd, claim._fd = claim._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_claims_in_child)


def writer_info() -> dict[str, Any]:
    """``{"pid", "host"}`` of this process, as written into the lock file and ``config.json``."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


# ----------------------------------------------------------------------------- the lock


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` if it is free (no wait)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks (ENOLCK, EOPNOTSUPP): the heartbeat still tells
        pass
    return True


def _held_here(path: Path) -> bool:
    """Whether this process holds the run at ``path``. Asked before opening its lock file: where
    ``flock`` is emulated with POSIX locks (NFS), two descriptors of one process do not exclude
    each other, and closing any of them drops the process's lock."""
    real = os.path.realpath(path)
    return any(claim.held and claim.real == real for claim in list(_CLAIMS))


def _is_current(fd: int, lock: Path) -> bool:
    """Whether the locked file is still the one at ``lock`` (not removed or replaced since it was opened)."""
    try:
        here = os.stat(lock)
    except FileNotFoundError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _holder(fd: int, path: Path) -> dict[str, Any]:
    """Who holds the lock: the lock file's content, else ``config.json``'s ``writer``; ``{}`` if unknown."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 4096).decode("utf-8"))
    except (OSError, ValueError):
        holder = None
    if not isinstance(holder, dict):
        try:
            holder = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")).get("writer")
        except (OSError, ValueError, AttributeError):
            holder = None
    return holder if isinstance(holder, dict) else {}


def busy_message(path: Path, holder: dict[str, Any]) -> str:
    pid, host = holder.get("pid", "unknown"), holder.get("host", "unknown")
    who = "another process"
    if holder and pid == os.getpid() and host == socket.gethostname():
        who = "another RunLog of this process"
    return f"run {path} is being written by {who} (pid {pid} on host {host}): wait for it to end or pick another name"


def acquire(path: Path, retry_s: float | None = None) -> RunClaim:
    """Lock the run directory ``path`` (its lock file is created if missing) for this writer.

    A held lock is retried for ``retry_s`` (default :data:`ACQUIRE_RETRY_S`), then refused with
    :class:`RunBusyError` naming the holder. After locking, the locked file must still be the one at
    the path (else it was removed or replaced meanwhile and the new one is locked instead).
    """
    deadline = time.monotonic() + (ACQUIRE_RETRY_S if retry_s is None else retry_s)
    while True:
        fd, holder = _acquire_once(path)
        if fd is not None:
            break
        if time.monotonic() >= deadline:
            raise RunBusyError(busy_message(path, holder))
        time.sleep(_POLL_S)
    try:
        data = json.dumps({**writer_info(), "since": _now()}).encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data.ljust(max(RESERVE_BYTES, len(data))))
    except OSError:  # a full disk: the lock works without the note of who holds it
        pass
    return RunClaim(path, fd)


def _acquire_once(path: Path) -> tuple[int | None, dict[str, Any]]:
    """One attempt: the locked descriptor of the current lock file, or ``None`` and who holds it."""
    lock = path / LOCK_FILE
    with _ACQUIRING:  # one thread of this process at a time between the registry check and the lock
        if _held_here(path):
            return None, writer_info()
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o644)
            except OSError as err:
                raise write_error(path, err) from err
            try:
                if not _try_lock(fd):
                    holder = _holder(fd, path)
                    os.close(fd)
                    return None, holder
                if _is_current(fd, lock):
                    return fd, {}
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # the lock file was removed or replaced since it was opened: lock the new one


def lock_state(path: Path) -> str:
    """``"held"`` (a live writer has the run), ``"free"``, or ``"none"`` (no lock file, or no locks here).

    Read-only: the lock file is opened for reading (never created) and share-locked for an instant.
    """
    if _held_here(path):
        return "held"
    if fcntl is None:
        return "none"
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDONLY | _CLOEXEC)
    except OSError:
        return "none"
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "held"
        except OSError:
            return "none"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return "free"
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- liveness


def heartbeat_age(path: Path, meta: dict[str, Any]) -> float | None:
    """Seconds since the writer was last seen: the newer of ``meta["heartbeat"]`` and ``config.json``'s
    modification time (runs without a heartbeat have only the latter); ``None`` if neither is known."""
    seen = []
    beat = meta.get("heartbeat")
    if isinstance(beat, str):
        try:
            seen.append(datetime.fromisoformat(beat).timestamp())
        except (ValueError, OverflowError, OSError):
            pass
    try:
        seen.append((path / CONFIG_FILE).stat().st_mtime)
    except OSError:
        pass
    return time.time() - max(seen) if seen else None


def is_dead(path: Path, meta: dict[str, Any]) -> bool:
    """Whether a run whose ``config.json`` says ``running`` has no live writer: its lock is not held
    and its heartbeat is at least :data:`STALE_AFTER_S` old. Changes no file."""
    if lock_state(path) == "held":
        return False
    age = heartbeat_age(path, meta)
    return age is not None and age >= STALE_AFTER_S


def heartbeat(target: weakref.ref, stop: threading.Event) -> None:
    """The heartbeat thread of a ``RunLog``: ``_beat()`` every :data:`HEARTBEAT_INTERVAL_S` until
    ``stop`` is set or the log is garbage-collected (only a weak reference is kept)."""
    while not stop.wait(HEARTBEAT_INTERVAL_S):
        log = target()
        if log is None:
            return
        try:
            log._beat()
        except Exception:  # noqa: BLE001 - a full disk: the next real write reports it
            pass
        del log


# ----------------------------------------------------------------------------- claiming a directory


def _entries(path: Path) -> list[str]:
    """What a directory holds besides the lock file and temporary files of interrupted writes."""
    return [e.name for e in os.scandir(path) if e.name != LOCK_FILE and not _TMP.match(e.name)]


def _is_run(path: Path) -> bool:
    try:
        meta = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def clear(path: Path) -> None:
    """Delete everything in the run directory but its lock file (call it while holding the lock)."""
    for entry in os.scandir(path):
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _refuse(claim: RunClaim, created_lock: bool, message: str) -> RunLogError:
    """Release ``claim`` (removing the lock file this call created) and return the error to raise."""
    claim.release(remove=created_lock)
    return RunLogError(message)


def claim(path: Path, overwrite: bool = False) -> RunClaim:
    """Claim ``path`` for a new run: create it (and its parents) if needed, lock it, then, locked,
    look at what it holds. Empty: fine. A run: cleared with ``overwrite`` (all but the lock file),
    else refused. Anything else: refused. Refusals are :class:`RunLogError` (:class:`RunBusyError`
    when another writer holds it)."""
    if path.exists() and not path.is_dir():
        raise RunLogError(f"run_dir {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(path, err) from err
    created_lock = not (path / LOCK_FILE).exists()
    held = acquire(path)
    try:
        if _entries(path):
            if not _is_run(path):
                raise _refuse(held, created_lock, f"run_dir {path} is not empty and is not a cskd_viz run: "
                              "refusing to write into it")  # fmt: skip
            if not overwrite:
                raise _refuse(held, created_lock, f"run_dir {path} already holds a run: pass overwrite=True to "
                              "replace it, or a new path")  # fmt: skip
            clear(path)
    except OSError as err:
        held.release()
        raise write_error(path, err) from err
    return held


def claim_new_dir(root: Path, name: str, overwrite: bool = False) -> RunClaim:
    """Claim a directory for a new run named ``name`` under ``root`` (created if missing).

    With ``overwrite``: ``root/name`` itself, cleared while locked; refused when another writer
    holds it (:class:`RunBusyError`) or when it exists and is not a run. Otherwise the first of
    ``name``, ``name-2``, ``name-3``, ... that this call creates (``mkdir`` without ``exist_ok``:
    two writers never get the same one).
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(root / name, err) from err
    if overwrite:
        return _claim_for_overwrite(root / name)
    for k in itertools.count(1):
        path = root / (name if k == 1 else f"{name}-{k}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise write_error(path, err) from err
        try:
            held = acquire(path)
        except RunBusyError:  # an overwriting writer took it between our mkdir and our lock
            continue
        if not _entries(path):
            return held
        held.release()
    raise AssertionError("unreachable")  # pragma: no cover


def _claim_for_overwrite(path: Path) -> RunClaim:
    try:
        path.mkdir()
        created = True
    except FileExistsError:
        created = False
    except OSError as err:
        raise write_error(path, err) from err
    if not path.is_dir():
        raise RunLogError(f"{path} exists and is not a directory")
    foreign = f"{path} exists and is not a cskd_viz run directory: refusing to overwrite it"
    had_lock = (path / LOCK_FILE).exists()
    for attempt in range(2):
        held = acquire(path)
        entries = _entries(path)
        if entries and not _is_run(path):
            raise _refuse(held, not had_lock, foreign)
        if entries or created or had_lock:
            try:
                clear(path)
            except OSError as err:
                held.release()
                raise write_error(path, err) from err
            return held
        if attempt:  # still empty and unclaimed after a pause: a directory of someone else's
            raise _refuse(held, True, foreign)
        # Empty with no lock file: maybe another writer's new run directory, locked an instant from now.
        held.release()
        time.sleep(0.1)
    raise AssertionError("unreachable")  # pragma: no cover
