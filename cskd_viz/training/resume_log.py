"""Re-open a run's log to continue it from a training checkpoint (``run_experiment(..., resume=True)``).

A thin layer over :meth:`cskd_viz.runs.RunLog.reopen`, which does the work: the run directory is
locked for this writer (a run whose process still lives is refused with ``RunBusyError``), the rows
of steps up to the checkpoint's step are kept (rows logged after it, which the resumed run logs
again, are dropped; the checkpoint's own evaluation has the checkpoint's step and stays), and
``config.json`` says ``running`` with the checkpoint's progress and a new ``run_id``. A crash at any
moment leaves a run that loads. This module only words its refusals (but ``RunBusyError``) as :class:`ResumeError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cskd_viz.runs import RunLog
from cskd_viz.runs.ownership import RunBusyError
from cskd_viz.runs.records import RunLogError
from cskd_viz.training.resume import ResumeError

__all__ = ["reopen_run_log"]


def reopen_run_log(path: str | os.PathLike, config: Mapping[str, Any], *, step: int, epoch: int) -> RunLog:
    """The run log at ``path``, owned by this process again, holding only the rows of steps ``<= step``.

    Args:
        path: the run directory.
        config: the run's config (written to ``config.json``).
        step, epoch: the checkpoint's step and (0-based) epoch: the run's progress from now on.

    Raises:
        RunBusyError: another live process writes the run.
        ResumeError: ``path`` is not a run directory of the current schema.
    """
    try:
        return RunLog.reopen(path, config, step=step, epoch=epoch)
    except RunBusyError:
        raise
    except RunLogError as err:  # no run there, a malformed one, or another schema: said as a resume refusal
        raise ResumeError(f"the run cannot be resumed: {err}") from None
