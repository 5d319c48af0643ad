"""Termination signals as Ctrl-C: ``SIGTERM`` and ``SIGHUP`` end a run cleanly (light: no torch import).

``SIGTERM`` (``timeout``, schedulers, ``kill``) and ``SIGHUP`` (a closed terminal) are handled like
Ctrl-C once :func:`termination_as_interrupt` is active (the ``cskd-viz`` command activates it):
inside the training loop (:func:`deferred_termination`) the current step finishes first, then
:class:`Terminated` (a ``KeyboardInterrupt``) ends the run as ``interrupted`` with its model and log
saved; the command exits ``128 + signal`` (143 for SIGTERM, 129 for SIGHUP). A second signal, or
one that arrives outside the loop, raises at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = [
    "Terminated",
    "termination_as_interrupt",
    "deferred_termination",
    "termination_after",
    "termination_raised",
    "pending_termination",
    "raise_pending_termination",
]

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
_state = {"deferring": 0, "pending": None, "raised": None}


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal; ``exit_code`` is the shell's ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(f"terminated by {signal.Signals(self.signum).name}")


def _handle(signum: int, frame) -> None:
    if _state["deferring"] and _state["pending"] is None:
        _state["pending"] = signum  # the training loop ends the run after the current step
        return
    # Also noted: an import cut short by the exception may turn it into an ImportError (or swallow it),
    # so the training loop still stops at its first step and the command still exits 128 + signum.
    _state["pending"] = _state["pending"] or signum
    _state["raised"] = signum
    raise Terminated(signum)


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` while active (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["raised"] = None
    previous = {signum: signal.signal(signum, _handle) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state["pending"] = None


@contextlib.contextmanager
def deferred_termination() -> Iterator[None]:
    """Within it a first termination signal is only noted; :func:`pending_termination` reports it."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1


@contextlib.contextmanager
def termination_after() -> Iterator[None]:
    """A termination signal within the block (main thread only) waits until the block is done, then is
    raised, unless an outer :func:`deferred_termination` takes it (for a short write that must not be cut)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with deferred_termination():
        yield
    if not _state["deferring"]:
        raise_pending_termination()


def termination_raised() -> int | None:
    """The signal a :class:`Terminated` was raised for since :func:`termination_as_interrupt` was last
    entered, if any (kept after it exits: an error that replaced the exception is then told from a bug)."""
    return _state["raised"]


def pending_termination() -> int | None:
    """The signal number noted by a deferred termination, if any (cleared by raising it)."""
    return _state["pending"]


def raise_pending_termination() -> None:
    """Raise :class:`Terminated` for a noted signal (the run's step has finished)."""
    signum, _state["pending"] = _state["pending"], None
    if signum is not None:
        raise Terminated(signum)
