"""Run logs: tidy pandas frames of a training run, written atomically to ``runs/<name>/``.

A :class:`RunLog` holds a run's config, its status and five tidy frames (one row per logged step,
per (logged step, class), per evaluation, ...), following the RunLog schema shared with
:mod:`cskd_viz.plots` and :mod:`cskd_viz.widgets`:

=====================  ============================================================================
frame                  columns
=====================  ============================================================================
``steps``              ``step, epoch, loss, loss_<term>..., train_accuracy, agreement,
                       mean_temperature, cosine_distance, lr, elapsed_s``
``class_cosine``       ``step, class, cosine``
``temperatures``       ``step, q05, q25, q50, q75, q95, mean, min, max`` (CSWT runs; else empty)
``temperature_hist``   ``step, bin_left, bin_right, count``
``evals``              ``epoch, step, split, accuracy, agreement, loss, cosine_distance,
                       teacher_accuracy``
=====================  ============================================================================

On disk (schema 2, ``docs/run_format.md``): ``config.json`` (format marker, schema version,
status, progress, config) and, per frame, append-only Parquet parts, one per flush, each holding
only the rows new since the previous flush; :meth:`RunLog.finish` compacts them into one file per
frame (:mod:`cskd_viz.runs.store`). Every file is written to a temporary name and moved into place,
so a run interrupted or killed at any moment loads: a reader sees whole parts only. While
logging, memory holds only the rows not yet flushed; a background thread behind a bounded queue
builds and writes the parts. :func:`load_run` reads ``config.json`` at once and each frame on
first access. Runs of the first release (schema 1, one CSV per frame) still load, read-only.
``status`` is ``"running"``, ``"finished"``, ``"interrupted"`` or ``"failed"`` (an exception other
than an interrupt ended the run); ``reason`` may say why (``RunLog.finish(status, reason=...)``).
Readers report ``"dead"`` (:data:`DEAD`) for a run that says ``running`` but whose writer is gone.

A live writer holds a lock in its run directory and refreshes a heartbeat in ``config.json``
(:mod:`cskd_viz.runs.ownership`): a second writer of the same directory, an overwrite included, is
refused with :class:`RunBusyError` while the first lives. Write errors (a full disk) are raised as
:class:`RunLogWriteError`, an ``OSError`` naming the run directory; a malformed run directory
gives a :class:`RunLogError` naming the file and the field.

pandas and pyarrow are imported lazily (on first frame access or write), so importing this module
stays light.
"""

from cskd_viz.runs.loading import compare_runs, is_run_dir, list_runs, load_run, stack_runs
from cskd_viz.runs.log import RunLog
from cskd_viz.runs.ownership import RunBusyError
from cskd_viz.runs.records import (
    CONFIG_FILE,
    DEAD,
    FORMAT,
    FRAMES,
    SCHEMA_VERSION,
    STATUSES,
    STEP_COLUMNS,
    SUMMARY_COLUMNS,
    EvalRecord,
    RunLogError,
    RunLogWriteError,
    StepRecord,
)

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "STEP_COLUMNS",
    "SUMMARY_COLUMNS",
    "SCHEMA_VERSION",
    "FRAMES",
    "STATUSES",
    "DEAD",
    "RunLog",
    "RunLogError",
    "RunLogWriteError",
    "RunBusyError",
    "StepRecord",
    "EvalRecord",
    "load_run",
    "list_runs",
    "compare_runs",
    "stack_runs",
    "is_run_dir",
]
