"""``RunLog``: a run's config, status and tidy frames; written as append-only Parquet parts."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cskd_viz._termination import termination_after
from cskd_viz.runs import ownership, store
from cskd_viz.runs.meta import apply_meta, read_meta
from cskd_viz.runs.records import (
    CONFIG_FILE,
    FORMAT,
    FRAMES,
    SCHEMA_VERSION,
    STATUSES,
    EvalRecord,
    RunLogError,
    RunLogWriteError,
    StepRecord,
    _histogram,
    _index,
    _json_safe,
    _now,
    _number,
    _summary,
    _values,
    write_error,
)

if TYPE_CHECKING:
    import pandas as pd

STEP_FRAMES = ("steps", "class_cosine", "temperatures", "temperature_hist")
# What reading a stored file that does not follow the format can raise, besides RunLogError.
_CORRUPT = (ValueError, TypeError, AttributeError, OverflowError, KeyError, IndexError, FileNotFoundError)


class RunLog:
    """The record of one training run: config, status and tidy frames (see :mod:`cskd_viz.runs`).

    Args:
        config: the run's configuration (a ``RunConfig.to_dict()`` or any JSON-able mapping);
            should hold ``name`` and ``method``.
        path: the run directory; ``None`` keeps the log in memory only (``flush`` is a no-op).
            The directory is created, locked for this writer (:mod:`cskd_viz.runs.ownership`: the
            lock is held until :meth:`finish`, and a heartbeat thread refreshes ``config.json``
            meanwhile) and a loadable, empty log is written at once. Refused with ``RunLogError``:
            a directory another live writer holds (``RunBusyError``), one that holds a run (unless
            ``overwrite``) or anything else.
        status: initial status.
        overwrite: replace a run at ``path``: its files are deleted while the lock is held.
        claim: a :class:`~cskd_viz.runs.ownership.RunClaim` already held on ``path`` (from
            :func:`~cskd_viz.runs.ownership.claim_new_dir`), which this log takes over.

    Write errors (a full disk, ...) are raised as
    :class:`~cskd_viz.runs.RunLogWriteError` (an ``OSError``, one line naming the run directory);
    what was written before stays and loads. Every method checks its arguments before it changes
    anything, so a refused call leaves the log as it was.

    Frames are DataFrame attributes: ``steps``, ``class_cosine``, ``temperatures``,
    ``temperature_hist``, ``evals``. Rows logged since the last :meth:`flush` live in memory; the
    rest lives on disk and is read on access (new parts only, after the first access).

    Example:
        >>> log = RunLog({"name": "demo", "method": "ce"})
        >>> log.log_step(StepRecord(step=1, epoch=0, metrics={"loss": 2.3, "loss_ce": 2.3}))
        >>> list(log.steps.columns[:4]), log.status
        (['step', 'epoch', 'loss', 'loss_ce'], 'running')
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        path: str | os.PathLike | None = None,
        status: str = "running",
        *,
        overwrite: bool = False,
        claim: ownership.RunClaim | None = None,
    ):
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping, got {type(config).__name__}")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.config: dict[str, Any] = dict(config)
        self.status = status
        self.reason: str | None = None  # why the run ended as it did, e.g. "loss became NaN at step 131"
        self.path: Path | None = Path(path) if path is not None else None
        self.progress: dict[str, int] = {"step": 0, "epoch": 0}
        self.created = self.updated = _now()
        self.run_id = uuid.uuid4().hex  # tells this run from a later one at the same path
        self.schema_version = SCHEMA_VERSION
        self.bytes_written = 0
        self._pending: dict[str, list] = {name: [] for name in FRAMES}
        self._inflight: dict[int, dict[str, list]] = {}
        self._seq = 0
        self._committed = 0  # the last flush whose config.json is on disk
        self._own = True  # this object writes the run (False for a run loaded from disk)
        self._cache: dict[str, tuple[pd.DataFrame, int]] = {}  # frame -> (stored rows, last part read)
        self._raw_rows: dict[str, int] = {}  # frame -> rows read from disk before any step selection
        self._lock = threading.Lock()
        self._writer: store.PartWriter | None = None
        self._selection: tuple[slice | None, int | None] = (None, None)
        self._widths: dict[str, int] = {}
        self._io_lock = threading.RLock()  # config.json writes: the writer's and the heartbeat's
        self._claim: ownership.RunClaim | None = None
        self._beat_stop: threading.Event | None = None
        self._beat_thread: threading.Thread | None = None
        self._last_meta: dict[str, Any] | None = None  # the last config.json written (flushes it confirms)
        self._last_write = 0.0
        if self.path is not None:
            self._claim = self._take(claim, overwrite)
            try:
                self.flush()
            except BaseException:
                self._end_ownership()
                raise
            self._start_heartbeat()

    @classmethod
    def reopen(cls, path: str | os.PathLike, config: Mapping[str, Any], *, step: int, epoch: int) -> RunLog:
        """Write the run at ``path`` again, from step ``step`` on: its log keeps only the rows of steps ``<= step``.

        What a resumed run does (``run_experiment(..., resume=True)``, ``step`` its checkpoint's). With the run's
        lock taken, the kept rows of each frame are written as ``compacted-<N>.parquet`` (``N`` past every flush
        number there), then ``config.json`` (``flushed = N``, status ``running``, progress ``step``/``epoch``, a
        new ``run_id``), then the files these replace are deleted: a crash at any moment leaves a run that
        loads. The log then writes like a new one (parts ``N + 1, ...``, then :meth:`finish`).

        Args:
            path: a run directory (schema 2). config: the run's config, written to ``config.json``.
            step, epoch: the last step kept and the run's (0-based) epoch: its progress from now on.

        Raises:
            RunBusyError: another live process writes the run.
            RunLogError: no run at ``path``, a malformed one, or one of another schema.
        """
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping, got {type(config).__name__}")
        path, step, epoch = Path(path), _index(step, "step"), _index(epoch, "epoch")
        if not (path / CONFIG_FILE).is_file():
            raise RunLogError(f"no run at {path} (no {CONFIG_FILE})")
        claim = ownership.acquire(path)
        try:
            log = cls(config)  # in memory until it takes the run over
            with log._writing():
                log._continue(path, claim, step, epoch)
            return log
        except BaseException:
            claim.release()
            raise

    def _continue(self, path: Path, claim: ownership.RunClaim, step: int, epoch: int) -> None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        meta = read_meta(path)
        if meta["schema_version"] != SCHEMA_VERSION:
            raise RunLogError(f"{path} is a schema-{meta['schema_version']} run: it cannot be written again")
        upto, kept = meta.get("flushed"), {}
        for frame in FRAMES:
            table, _ = store.read_table(path, frame, upto=upto)
            if table is not None:
                kept[frame] = table.filter(pc.less_equal(table.column("step"), step))
        files = [f for frame in FRAMES for f in (*store.part_files(path, frame), *store._compacted_files(path, frame))]
        seq = max([upto or 0, *(n for n, _ in files)]) + 1
        self.path, self._claim, self.created = path, claim, meta.get("created") or self.created
        for frame, table in kept.items():
            target = path / frame / f"compacted-{seq:06d}.parquet"
            self.bytes_written += store.atomic_write(target, lambda tmp, t=table: pq.write_table(t, tmp))
            if frame == "class_cosine" and table.num_rows:
                self._widths["class_cosine"] = table.schema.field("cosine").type.list_size
        self._seq = self._committed = seq
        self.progress = {"step": step, "epoch": epoch}
        self._write_meta()
        store.remove([file for _, file in files])
        self._start_heartbeat()

    def _take(self, claim: ownership.RunClaim | None, overwrite: bool) -> ownership.RunClaim:
        if claim is None:
            return ownership.claim(self.path, overwrite)
        if not isinstance(claim, ownership.RunClaim) or not claim.held:
            raise TypeError(f"claim must be a RunClaim this process holds, got {claim!r}")
        if os.path.realpath(claim.path) != os.path.realpath(self.path):
            raise ValueError(f"claim is for {claim.path}, not for {self.path}")
        return claim

    # ------------------------------------------------------------------ frames
    @property
    def name(self) -> str:
        """The run's name (``config["name"]``, else the directory name)."""
        name = self.config.get("name")
        if name:
            return str(name)
        return self.path.name if self.path is not None else "run"

    @property
    def steps(self) -> pd.DataFrame:
        return self.frame("steps")

    @property
    def class_cosine(self) -> pd.DataFrame:
        return self.frame("class_cosine")

    @property
    def temperatures(self) -> pd.DataFrame:
        return self.frame("temperatures")

    @property
    def temperature_hist(self) -> pd.DataFrame:
        return self.frame("temperature_hist")

    @property
    def evals(self) -> pd.DataFrame:
        return self.frame("evals")

    def frames(self) -> dict[str, pd.DataFrame]:
        """All frames by name."""
        return {name: self.frame(name) for name in FRAMES}

    def frame(self, name: str) -> pd.DataFrame:
        """One frame: the stored rows (read once, then only new parts) plus those not yet on disk."""
        if name not in FRAMES:
            raise ValueError(f"frame must be one of {sorted(FRAMES)}, got {name!r}")
        import pandas as pd

        cached, through = self._cache.get(name, (None, 0))
        with self._lock:  # what is on disk and what is still in flight, as one snapshot
            upto = self._committed
            flying = {seq: rows[name] for seq, rows in self._inflight.items() if rows[name]}
        if self.path is not None and self.path.is_dir():
            before = self._raw_rows.get(name, 0)
            try:
                table, last = self._read_new(name, through, upto, before)
                fresh = store.table_to_frame(name, self._select(name, table)) if table is not None else None
            except RunLogError:
                raise
            except (*_CORRUPT, store.arrow_error()) as err:  # a safety net: store checks each file it reads
                why = f"{type(err).__name__}: {store.one_line(err)}"
                raise RunLogError(f"{self.path / name} is corrupt: {why}") from None
            if table is not None:
                self._raw_rows[name] = before + table.num_rows
                cached = fresh if cached is None else pd.concat([cached, fresh], ignore_index=True)
                self._cache[name] = (cached, last)
                through = last
        unsaved = [rows for seq, rows in sorted(flying.items()) if seq > through]
        if self._pending[name]:
            unsaved.append(self._pending[name])
        pieces = [store.table_to_frame(name, store.rows_to_table(name, rows)) for rows in unsaved]
        if self.path is None and pieces:  # in memory: absorb, so each access converts only new rows
            cached = pd.concat([c for c in (cached, *pieces) if c is not None], ignore_index=True)
            self._cache[name] = (cached, 0)
            self._pending[name] = []
            pieces = []
        parts = [c for c in (cached, *pieces) if c is not None and len(c)]
        if not parts:
            return store._empty(name)
        return store._ordered(name, pd.concat(parts, ignore_index=True)) if len(parts) > 1 else parts[0]

    def _read_new(self, name: str, through: int, upto: int | None, before: int):
        """New stored rows of one frame. A loaded snapshot older than a compaction that happened since
        (whose parts may be gone) moves on to the newest flush first, as :meth:`refresh` would."""
        if self._own:
            return store.read_table(self.path, name, through, upto, before)
        try:
            return store.read_table(self.path, name, through, upto, before, strict=True)
        except store.StaleSnapshot:
            self.refresh()
            # Still older: the compaction's config.json is not written yet, so its parts still exist.
            return store.read_table(self.path, name, through, self._confirmed(), before)

    def _confirmed(self) -> int | None:
        """The last flush whose rows every frame holds (``config.json`` is written after the parts);
        for a run loaded from disk, the one it was loaded or last refreshed at (a consistent snapshot)."""
        with self._lock:
            return self._committed

    def refresh(self) -> RunLog:
        """Move a loaded run on to what its writer has flushed since (status, progress, new rows).

        Frames read afterwards add only the new parts. A no-op for a run this object writes.
        """
        if self._own or self.path is None:
            return self
        meta = read_meta(self.path)
        if meta.get("run_id") != self.run_id:  # another run now lives at this path: start over
            self._cache.clear()
            self._raw_rows.clear()
        apply_meta(self, meta)
        return self

    def _select(self, name: str, table: Any) -> Any:
        """Rows of the steps chosen at :func:`load_run` (``steps=``/``every=``); all of them by default."""
        mask = self._step_mask(name, table.column("step").to_numpy())
        if mask is None:
            return table
        import pyarrow as pa

        return table.filter(pa.array(mask))

    def _select_frame(self, name: str, df: pd.DataFrame) -> pd.DataFrame:
        mask = self._step_mask(name, df["step"].to_numpy())
        return df if mask is None else df[mask].reset_index(drop=True)

    def _step_mask(self, name: str, step: np.ndarray) -> np.ndarray | None:
        window, every = self._selection
        if name not in STEP_FRAMES or (window is None and every is None):
            return None
        keep = np.ones(len(step), dtype=bool)
        if window is not None:
            if window.start is not None:
                keep &= step >= window.start
            if window.stop is not None:
                keep &= step < window.stop
        if every is not None:  # one grid for every frame: every k-th logged step of the steps frame
            keep &= np.isin(step, self._every_grid(window, every))
        return keep

    def _every_grid(self, window: slice | None, every: int) -> np.ndarray:
        """The logged steps ``every=`` keeps: the k-th ones of the whole run's ``steps`` (in the window)."""
        if self.schema_version == 1:
            all_steps = store.read_csv_frame(self.path, "steps")["step"].to_numpy()
        else:
            table, _ = store.read_table(self.path, "steps", upto=self._confirmed())
            all_steps = table.column("step").to_numpy() if table is not None else np.zeros(0, dtype=np.int64)
        unique = np.unique(all_steps)
        if window is not None and window.start is not None:
            unique = unique[unique >= window.start]
        if window is not None and window.stop is not None:
            unique = unique[unique < window.stop]
        return unique[::every]

    # ------------------------------------------------------------------ recording
    def log_step(self, record: StepRecord) -> None:
        """Append one logged step to ``steps``, ``class_cosine``, ``temperatures``, ``temperature_hist``.

        The whole record is checked before anything is appended, so a refused record leaves no trace.
        """
        self._check_recording()
        if not isinstance(record, StepRecord):
            raise TypeError(f"record must be a StepRecord, got {type(record).__name__}")
        step, epoch = _index(record.step, "step"), _index(record.epoch, "epoch")
        row = {"step": step, "epoch": epoch, **_values(record.metrics, "record.metrics")}
        cosines = stats = hist = None
        if record.class_cosine is not None:
            cosines = [_number(c, "record.class_cosine") for c in record.class_cosine]
            if not cosines:
                raise ValueError("record.class_cosine is empty: give one cosine per class, or None")
            self._check_width("class_cosine", len(cosines))
        if record.temperature_stats is not None:
            stats = {"step": step, **_values(record.temperature_stats, "record.temperature_stats")}
        if record.temperature_hist is not None:
            hist = _histogram(step, record.temperature_hist)
        self._pending["steps"].append(row)
        if cosines is not None:
            self._pending["class_cosine"].append((step, cosines))
            self._widths.setdefault("class_cosine", len(cosines))
        if stats is not None:
            self._pending["temperatures"].append(stats)
        if hist is not None:
            self._pending["temperature_hist"].append(hist)
        if step >= self.progress["step"]:  # a record computed late never moves progress back
            self.progress = {"step": step, "epoch": epoch}

    def _check_width(self, frame: str, width: int) -> None:
        known = self._widths.get(frame, width)
        if width != known:
            raise ValueError(f"record.class_cosine has {width} classes, earlier records had {known}")

    def log_eval(self, record: EvalRecord) -> None:
        """Append one evaluation to ``evals`` (and move ``progress`` to its step and epoch)."""
        self._check_recording()
        if not isinstance(record, EvalRecord):
            raise TypeError(f"record must be an EvalRecord, got {type(record).__name__}")
        step, epoch = _index(record.step, "step"), _index(record.epoch, "epoch")
        metrics = _values(record.metrics, "record.metrics")
        if not isinstance(record.split, str) or not record.split:
            raise TypeError(f"record.split must be a non-empty str, got {record.split!r}")
        self._pending["evals"].append({"epoch": epoch, "step": step, "split": record.split, **metrics})
        self.progress = {"step": step, "epoch": epoch}

    def set_progress(self, step: int, epoch: int) -> None:
        """Record how far training got (written to ``config.json`` on the next flush)."""
        self._check_recording()
        self.progress = {"step": _index(step, "step"), "epoch": _index(epoch, "epoch")}

    def _check_recording(self) -> None:
        if not self._own:
            raise RunLogError(
                f"the run {self.path} was loaded from disk: it is read-only (its writer records into it; "
                "refresh() shows what it wrote since)"
            )

    # ------------------------------------------------------------------ disk
    def _meta(self, flushed: int) -> dict[str, Any]:
        self.updated = _now()
        return {
            "format": FORMAT,
            "schema_version": self.schema_version,
            "flushed": flushed,
            "run_id": self.run_id,
            "status": self.status,
            "reason": self.reason,
            "progress": dict(self.progress),
            "created": self.created,
            "updated": self.updated,
            "writer": ownership.writer_info(),
            "config": _json_safe(self.config),
        }

    def flush(self, background: bool = False) -> None:
        """Write the rows logged since the last flush as new parts, then ``config.json`` (no-op in memory).

        Args:
            background: hand the rows to a background thread and return (a bounded queue: when it is
                full this waits); writes keep their order, and a later synchronous flush, ``wait()`` or
                ``finish()`` re-raises an error one of them met (its rows are written again next time).

        Raises:
            RunLogWriteError: the disk refused a write (its rows stay pending: written again next time).
        """
        if self.path is None:
            return
        self._check_writable()
        with self._writing():
            self._check_writer()
            self._own_dir()
            self._seq += 1
            rows, self._pending = self._pending, {name: [] for name in FRAMES}
            job = (self._seq, rows, self._meta(self._seq))
            with self._lock:
                self._inflight[self._seq] = rows
            if background:
                if self._writer is None:
                    self._writer = self._start_writer()
                self._writer.submit(job)
                return
            self.wait()
            try:
                self._write_job(job)
            except BaseException:
                self._restore_failed()
                raise

    def _start_writer(self) -> store.PartWriter:
        """The background writer; it holds this log weakly, so that an unfinished log is still garbage
        collected (releasing its lock), and it ends then."""
        method = weakref.WeakMethod(self._write_job)

        def write(job: tuple[int, dict[str, list], dict]) -> None:
            target = method()
            if target is not None:
                target(job)

        writer = store.PartWriter(write)
        weakref.finalize(self, writer.stop)
        return writer

    def _write_job(self, job: tuple[int, dict[str, list], dict]) -> None:
        """Write one flush: each frame's part, then ``config.json``; undo the parts if anything fails."""
        import pyarrow.parquet as pq

        seq, rows, meta = job
        written: list[Path] = []
        try:
            for name, frame_rows in rows.items():
                if frame_rows:
                    table = store.rows_to_table(name, frame_rows)
                    target = store.part_path(self.path, name, seq)
                    self.bytes_written += store.atomic_write(target, lambda tmp, t=table: pq.write_table(t, tmp))
                    written.append(target)
            self._write_config(meta)
        except BaseException:
            for target in written:  # a failed flush leaves no part behind: its rows are written again later
                target.unlink(missing_ok=True)
            raise
        with self._lock:
            self._inflight.pop(seq, None)
            self._committed = seq

    def _restore_failed(self) -> None:
        """Put the rows of flushes that did not reach the disk back in front of the pending rows."""
        with self._lock:
            failed, self._inflight = self._inflight, {}
        for seq in sorted(failed, reverse=True):
            for name, rows in failed[seq].items():
                self._pending[name][:0] = rows

    def wait(self) -> None:
        """Wait until background writes are on disk; re-raise an error one of them met."""
        with self._writing():
            if self._writer is not None:
                self._writer.wait()
            self._check_writer()

    def _check_writer(self) -> None:
        if self._writer is not None and self._writer.error is not None:
            self._writer.wait()
            error, self._writer.error = self._writer.error, None
            self._restore_failed()
            raise error

    def _check_writable(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise RunLogError(f"{self.path} is a schema-{self.schema_version} run: it is read-only")
        self._check_recording()

    @contextlib.contextmanager
    def _writing(self):
        """Raise an ``OSError`` of the disk as one :class:`RunLogWriteError` naming the run directory."""
        try:
            yield
        except RunLogWriteError:
            raise
        except OSError as err:
            raise write_error(self.path, err) from err

    # ------------------------------------------------------------------ ownership
    def _own_dir(self) -> None:
        """Hold the run's lock before writing. It is taken at creation; once :meth:`finish` released it,
        a later write takes it again, unless another run took the directory meanwhile."""
        if self._claim is not None and self._claim.held:
            return
        claim = ownership.acquire(self.path)
        try:
            run_id = json.loads((self.path / CONFIG_FILE).read_text(encoding="utf-8")).get("run_id")
        except (OSError, ValueError, AttributeError):
            run_id = None
        if run_id != self.run_id:
            claim.release()
            raise RunLogError(f"{self.path} now holds another run (or none): this log cannot write there any more")
        self._claim = claim
        self._start_heartbeat()

    def _start_heartbeat(self) -> None:
        if self._beat_thread is not None:
            return
        self._beat_stop = threading.Event()
        self._beat_thread = threading.Thread(
            target=ownership.heartbeat,
            args=(weakref.ref(self), self._beat_stop),
            name="cskd_viz-runlog-heartbeat",
            daemon=True,
        )
        self._beat_thread.start()
        weakref.finalize(self, self._beat_stop.set)  # garbage-collected unfinished: the thread ends at once

    def _beat(self) -> None:
        """Rewrite ``config.json`` as last written with a fresh ``heartbeat`` (from the heartbeat thread;
        skipped when a flush wrote it lately)."""
        with self._io_lock:
            if self._last_meta is None or self._claim is None or not self._claim.held:
                return
            if time.monotonic() - self._last_write < ownership.HEARTBEAT_INTERVAL_S / 2:
                return
            self._write_config(dict(self._last_meta))

    def _end_ownership(self) -> None:
        """Stop the heartbeat and release the lock (readers may now tell the run dead, if it says running)."""
        stop, thread = self._beat_stop, self._beat_thread
        self._beat_stop = self._beat_thread = None
        if stop is not None:
            stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        with self._io_lock:
            if self._claim is not None:
                self._claim.release(remove=True)  # a finished run directory holds no lock file

    # ------------------------------------------------------------------ the end
    def finish(self, status: str = "finished", reason: str | None = None) -> None:
        """Write the last rows and compact every frame into one file, then the final status; release the run.

        The rows logged since the last flush go straight into the compacted files (no last part to
        write and read back). The status goes last, so a run killed while compacting still says
        ``running``: a reader never sees ``finished`` before every row is in place. When writing
        fails (a full disk), ``config.json`` is still written, if the disk lets it, over the rows
        written before, as ``failed`` with the error as reason (see :meth:`_broken_finish`), and the
        error is raised; the rows not written stay
        pending, for a later ``finish()``. The lock and the heartbeat end in every case.

        Args:
            status: ``finished``, ``interrupted`` or ``failed`` (or ``running``).
            reason: why the run ended so, kept as ``reason`` in ``config.json`` (e.g. ``"loss became
                NaN at step 131 (lr 1000.0): lower --lr"``).
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"reason must be a str or None, got {type(reason).__name__}")
        if self.path is None:
            self.status, self.reason = status, reason
            return
        self._check_writable()
        with termination_after():  # a SIGTERM/SIGHUP while closing: the run is closed first, then it ends
            try:
                with self._writing():
                    self._own_dir()
                    self._finish_files(status, reason)
            finally:
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
                self._end_ownership()

    def _finish_files(self, status: str, reason: str | None) -> None:
        try:
            self.wait()
        except BaseException as err:
            self._final_status_anyway(*self._broken_finish(err, status, reason))
            raise
        rows, self._pending = self._pending, {name: [] for name in FRAMES}
        final = self._seq + 1 if any(rows.values()) else self._committed
        written: list[Path] = []
        committed = self._committed
        try:
            obsolete = store.compact(self.path, committed, rows, final, written=written)
            with self._lock:
                self._committed = final
            self.status, self.reason = status, reason
            self._write_meta()
        except BaseException as err:
            store.remove(written)  # no compacted file may outlive a failed finish: its rows go back
            with self._lock:
                self._committed = committed
            for name, frame_rows in rows.items():
                self._pending[name][:0] = frame_rows
            self._final_status_anyway(*self._broken_finish(err, status, reason))
            raise
        self._seq = max(self._seq, final)
        store.remove(obsolete)

    def _broken_finish(self, err: BaseException, status: str, reason: str | None) -> tuple[str, str | None]:
        """The status a finish that ``err`` cut short writes over the rows already on disk: the log misses
        rows, so ``failed`` (a failed run keeps its reason) or, for Ctrl-C, ``interrupted``."""
        if isinstance(err, KeyboardInterrupt):
            return "interrupted", reason if status == "interrupted" else "interrupted while the run log was closed"
        if status == "failed" and reason:
            return status, reason
        why = str(write_error(self.path, err)) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
        return "failed", store.one_line(why, 400)

    def _final_status_anyway(self, status: str, reason: str | None) -> None:
        """After a failed finish: ``config.json`` with the final status over the rows already on disk,
        if the disk takes it (else the run stays ``running`` on disk, and readers tell it dead later)."""
        self.status, self.reason = status, reason
        for _ in range(2):
            try:
                self._write_meta()
                return
            except OSError:  # a full disk: free the lock file's reserve (the lock stays) and try once more
                if self._claim is None or not self._claim.free_reserve():
                    break
            except Exception:  # noqa: BLE001 - the error that made finish fail is the one raised
                break
        self.status = "running"

    def _write_meta(self) -> None:
        self._write_config(self._meta(self._committed))

    def _write_config(self, meta: dict[str, Any]) -> None:
        with self._io_lock:
            meta["heartbeat"] = _now("milliseconds")
            text = (json.dumps(meta, indent=2) + "\n").encode()
            self.bytes_written += store.atomic_write(self.path / CONFIG_FILE, lambda tmp: tmp.write_bytes(text))
            self._last_meta, self._last_write = meta, time.monotonic()

    def compact(self) -> None:
        """Merge each frame's parts into one file (a crash at any moment leaves a run that loads)."""
        if self.path is None or self.schema_version != SCHEMA_VERSION:
            return
        self._check_writable()
        with self._writing():
            self._own_dir()
            self.wait()
            store.remove(store.compact(self.path, upto=self._confirmed()))

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        """One row of :func:`compare_runs`: final/best test accuracy, agreement, ``d(T)``, steps, status."""
        return _summary(self.config, self.status, self.progress, self.evals, self.path, self.reason)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"RunLog(name={self.name!r}, status={self.status!r}, steps={self.progress['step']}{where})"
