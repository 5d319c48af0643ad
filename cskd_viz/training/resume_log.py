"""Re-open a run's log to continue it from a training checkpoint (``run_experiment(..., resume=True)``).

The run directory is locked for this writer first (:mod:`cskd_viz.runs.ownership`: a run whose
process still lives is refused with ``RunBusyError``). Then, with the lock held:

1. every frame is read as its ``config.json`` confirms it, and only the rows of steps up to the
   checkpoint's step are kept (rows logged after the checkpoint, which the resumed run logs again,
   are dropped; the checkpoint's own evaluation has the checkpoint's step and stays);
2. those rows are written as ``<frame>/compacted-<N>.parquet``, ``N`` one past every flush number
   in the directory (so these files outrank everything there);
3. ``config.json`` is written with ``flushed = N``, status ``running``, the checkpoint's progress and
   a new ``run_id`` (a reader that held the old rows starts over);
4. the files this replaces are deleted.

A crash at any moment leaves a run that loads: before step 3 readers see the old run, after it the
kept rows. The log is then the run's writer as if it had been created there: it flushes parts
``N + 1, ...`` and ends with ``finish()``. This module knows :class:`~cskd_viz.runs.RunLog`'s storage
(:mod:`cskd_viz.runs.store`) and sets the few private fields a new writer would have set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cskd_viz.runs import FRAMES, SCHEMA_VERSION, RunLog, ownership, store
from cskd_viz.runs.meta import read_meta
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
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ResumeError(f"no run to resume at {path} (no config.json)")
    claim = ownership.acquire(path)
    try:
        return _reopen(path, dict(config), step, epoch, claim)
    except BaseException:
        claim.release()
        raise


def _reopen(path: Path, config: dict[str, Any], step: int, epoch: int, claim: ownership.RunClaim) -> RunLog:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    meta = read_meta(path)
    if meta["schema_version"] != SCHEMA_VERSION:
        raise ResumeError(f"{path} is a schema-{meta['schema_version']} run: it cannot be resumed")
    upto = meta.get("flushed")
    kept = {}
    for frame in FRAMES:
        table, _ = store.read_table(path, frame, upto=upto)
        if table is not None:
            kept[frame] = table.filter(pc.less_equal(table.column("step"), step))
    files = [f for frame in FRAMES for f in (*store.part_files(path, frame), *store._compacted_files(path, frame))]
    seq = max([upto or 0, *(n for n, _ in files)]) + 1
    obsolete = [file for _, file in files]
    log = RunLog(config)  # in memory for now: it becomes the run's writer below
    log.path, log._claim = path, claim
    log.created = meta.get("created") or log.created
    for frame, table in kept.items():
        target = path / frame / f"compacted-{seq:06d}.parquet"
        log.bytes_written += store.atomic_write(target, lambda tmp, t=table: pq.write_table(t, tmp))
        if frame == "class_cosine" and table.num_rows:
            log._widths["class_cosine"] = table.schema.field("cosine").type.list_size
    log._seq = log._committed = seq
    log.progress = {"step": int(step), "epoch": int(epoch)}
    log._write_meta()
    store.remove(obsolete)
    log._start_heartbeat()
    return log
