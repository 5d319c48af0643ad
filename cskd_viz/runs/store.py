"""The files of a run (schema 2): append-only Parquet parts per frame, compacted at the end.

Each frame is a directory of Parquet files. ``<frame>/part-<seq>.parquet`` holds the rows one
flush added (``seq`` counts flushes from 1); each is written to a temporary name and moved into
place, so a reader sees whole parts only. ``<frame>/compacted-<N>.parquet`` holds the rows of
flushes ``1..N``. ``config.json``'s ``flushed`` says which flushes count: readers take the newest
compaction within it and the parts after that. A compaction writes its files for every frame, then
``config.json``, then deletes what they replace, so a kill at any moment leaves a run whose frames
agree, with no row twice. A finished run holds one file per frame directory, which any Parquet
reader reads as is (``pyarrow.parquet.read_table("run/steps")``, DuckDB's
``'run/steps/*.parquet'``). Layouts: ``steps``, ``temperatures``, ``evals`` are flat; ``class_cosine``
is one row per step with a fixed-size list of ``C`` float32 cosines; ``temperature_hist`` is one
row per step with three lists (``bin_left``, ``bin_right``, ``count``). The tidy long frames of
:mod:`cskd_viz.runs` are made on reading. See ``docs/run_format.md``.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cskd_viz.runs.records import FRAMES, RunLogError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

_PART = re.compile(r"^part-(?P<seq>\d{6,})\.parquet$")
_COMPACTED = re.compile(r"^compacted-(?P<seq>\d{6,})\.parquet$")
_FLOAT = "float64"


def _pa():
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


def arrow_error() -> type[Exception]:
    """pyarrow's base exception (``ArrowInvalid``, ...), imported lazily."""
    pa, _ = _pa()
    return pa.ArrowException


def one_line(err: BaseException, limit: int = 200) -> str:
    """An error's message on one line, at most ``limit`` characters."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def part_path(directory: Path, frame: str, seq: int) -> Path:
    """Where flush ``seq`` writes ``frame``'s rows (the frame's directory is created on first use)."""
    folder = directory / frame
    if not folder.is_dir():  # a stat is cheaper than mkdir(exist_ok=True), which fails and catches
        folder.mkdir(exist_ok=True)
    return folder / f"part-{seq:06d}.parquet"


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def atomic_write(path: Path, write: Callable[[Path], None]) -> int:
    """Write ``path`` through a temporary file in the same directory and ``os.replace``; its size."""
    tmp = _tmp_path(path)
    try:
        write(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size


# ----------------------------------------------------------------------------- rows -> Arrow


def _flat_table(rows: list[dict], int_columns: Sequence[str], str_columns: Sequence[str] = ()) -> pa.Table:
    pa, _ = _pa()
    columns: dict[str, list] = {}
    for i, row in enumerate(rows):
        for key in row:
            if key not in columns:
                columns[key] = [None] * i
        for key, values in columns.items():
            values.append(row.get(key))
    arrays, names = [], []
    for key, values in columns.items():
        if key in int_columns:
            arrays.append(pa.array(values, type=pa.int64()))
        elif key in str_columns:
            arrays.append(pa.array([None if v is None else str(v) for v in values], type=pa.string()))
        else:
            floats = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
            arrays.append(pa.array(floats))
        names.append(key)
    return pa.Table.from_arrays(arrays, names=names)


def rows_to_table(frame: str, rows: list) -> pa.Table:
    """The Arrow table of one frame's pending rows (see the module docstring for the layouts)."""
    pa, _ = _pa()
    if frame == "class_cosine":
        steps = [step for step, _ in rows]
        values = np.asarray([cosines for _, cosines in rows], dtype=np.float32)
        width = values.shape[1] if values.ndim == 2 else 0
        cosine = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)
        return pa.Table.from_arrays([pa.array(steps, type=pa.int64()), cosine], names=["step", "cosine"])
    if frame == "temperature_hist":
        columns = list(zip(*rows, strict=True))
        arrays = [
            pa.array(columns[0], type=pa.int64()),
            pa.array(columns[1], type=pa.list_(pa.float64())),
            pa.array(columns[2], type=pa.list_(pa.float64())),
            pa.array(columns[3], type=pa.list_(pa.int64())),
        ]
        return pa.Table.from_arrays(arrays, names=["step", "bin_left", "bin_right", "count"])
    int_columns = ("step", "epoch")
    return _flat_table(rows, int_columns, ("split",) if frame == "evals" else ())


# ----------------------------------------------------------------------------- Arrow -> tidy frames


def table_to_frame(frame: str, table: pa.Table | None) -> pd.DataFrame:
    """The tidy pandas frame of :data:`~cskd_viz.runs.FRAMES` from a stored table (``None``: empty)."""
    import pandas as pd

    columns = FRAMES[frame]
    if table is None or table.num_rows == 0:
        return _empty(frame)
    if frame == "class_cosine":
        steps = table.column("step").to_numpy()
        flat = table.column("cosine").combine_chunks()
        width = flat.type.list_size
        cosine = flat.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, width)
        return pd.DataFrame(
            {
                "step": np.repeat(steps, width),
                "class": np.tile(np.arange(width, dtype=np.int64), len(steps)),
                "cosine": cosine.reshape(-1),
            }
        )
    if frame == "temperature_hist":
        sizes = np.asarray(table.column("count").combine_chunks().value_lengths())
        for name in ("bin_left", "bin_right"):
            if not np.array_equal(np.asarray(table.column(name).combine_chunks().value_lengths()), sizes):
                raise ValueError("the fields bin_left, bin_right, count differ in length")
        out = {"step": np.repeat(table.column("step").to_numpy(), sizes)}
        for name in ("bin_left", "bin_right", "count"):
            out[name] = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return pd.DataFrame(out).astype({"count": "int64"})
    df = table.to_pandas()
    for column in columns:
        if column not in df.columns:
            df[column] = pd.Series(dtype=_dtype(column), index=df.index)
    return _ordered(frame, df)


def _dtype(column: str) -> str:
    if column in ("step", "epoch", "class", "count"):
        return "int64"
    return "object" if column == "split" else _FLOAT


def _empty(frame: str, extra: Sequence[str] = ()) -> pd.DataFrame:
    import pandas as pd

    names = [*FRAMES[frame], *(c for c in extra if c not in FRAMES[frame])]
    return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in names})


def _ordered(frame: str, df: pd.DataFrame) -> pd.DataFrame:
    """Columns in schema order; for ``steps`` the ``loss_*`` terms right after ``loss``."""
    base = list(FRAMES[frame])
    extra = [c for c in df.columns if c not in base]
    if frame == "steps":
        terms = [c for c in extra if c.startswith("loss_")]
        rest = [c for c in extra if not c.startswith("loss_")]
        order = [*base[:3], *terms, *base[3:], *rest]
    else:
        order = [*base, *extra]
    df = df[order]
    for column in df.columns:
        dtype = _dtype(column) if column in FRAMES[frame] or column.startswith("loss_") else None
        if dtype and dtype != "object" and str(df[column].dtype) != dtype:
            df = df.astype({column: dtype})
    return df


# ----------------------------------------------------------------------------- reading


def _read_table(path: Path, frame: str) -> pa.Table:
    pa, pq = _pa()
    try:
        with pq.ParquetFile(path) as handle:  # one file: cheaper than read_table's dataset machinery
            table = handle.read()
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException, ValueError) as err:
        raise RunLogError(f"{path} is corrupt: cannot read it as Parquet ({one_line(err)})") from None
    return conform(frame, table, path)


def _kind(t: pa.DataType) -> str:
    import pyarrow.types as types

    if types.is_null(t):
        return "null"
    if types.is_integer(t):
        return "int"
    if types.is_floating(t):
        return "float"
    if types.is_string(t) or types.is_large_string(t):
        return "str"
    if types.is_fixed_size_list(t) or types.is_list(t) or types.is_large_list(t):
        return f"list<{_kind(t.value_type)}>"
    return str(t)


# The stored layout of each list frame (column -> kind); flat frames hold int step/epoch, a str
# split (evals) and float values (ints and nulls are taken as floats).
_LAYOUTS = {
    "class_cosine": {"step": "int", "cosine": "list<float>"},
    "temperature_hist": {"step": "int", "bin_left": "list<float>", "bin_right": "list<float>", "count": "list<int>"},
}
_ACCEPTS = {"int": ("int",), "float": ("float", "int", "null"), "str": ("str", "null")}
_ACCEPTS.update({"list<float>": ("list<float>", "list<int>"), "list<int>": ("list<int>",)})


def _wanted(frame: str, name: str) -> str | None:
    layout = _LAYOUTS.get(frame)
    if layout is not None:
        return layout.get(name)  # None: a column this frame does not read
    return "int" if name in ("step", "epoch") else "str" if name == "split" else "float"


_CHECKED: set = set()  # (frame, schema) pairs found to follow the layout with nothing to cast


def conform(frame: str, table: pa.Table, path: Path) -> pa.Table:
    """``table`` (one stored file of ``frame``) checked against the frame's layout and cast to its
    types (int64 indices, float64 values); a :class:`RunLogError` naming the file and the field.
    (That the lists of one ``temperature_hist`` row agree in length is checked on reading the frame.)"""
    key = (frame, table.schema)
    if key not in _CHECKED:
        table, cast = _conform_columns(frame, table, path)
        if not cast and len(_CHECKED) < 256:  # a run's files share a few schemas: check each once
            _CHECKED.add(key)
    for name in ("step", "epoch"):
        if name in table.column_names and table.column(name).null_count:
            raise RunLogError(f"{path} is corrupt: the field {name!r} has missing values")
    if frame == "class_cosine" and table.column("cosine").null_count:
        raise RunLogError(f"{path} is corrupt: the field 'cosine' is missing for some steps")
    return table


def _conform_columns(frame: str, table: pa.Table, path: Path) -> tuple[pa.Table, bool]:
    """The per-column checks and casts of :func:`conform`; whether anything was cast."""
    import pyarrow.types as types

    pa, _ = _pa()
    names, cast = table.column_names, False
    if len(set(names)) != len(names) or "step" not in names:
        raise RunLogError(f"{path} is corrupt: its columns are {names} (one step column, no duplicates)")
    missing = [name for name in _LAYOUTS.get(frame, {}) if name not in names]
    if missing:
        raise RunLogError(f"{path} is corrupt: the field(s) {missing} are missing")
    if frame == "class_cosine" and not types.is_fixed_size_list(table.schema.field("cosine").type):
        raise RunLogError(f"{path} is corrupt: the field 'cosine' is not one fixed-size list per step")
    for index, name in enumerate(names):
        wanted, stored = _wanted(frame, name), table.schema.field(name).type
        if wanted is None:
            continue
        if _kind(stored) not in _ACCEPTS[wanted]:
            raise RunLogError(f"{path} is corrupt: the field {name!r} holds {stored}, not {wanted}")
        target = {"int": pa.int64(), "float": pa.float64()}.get(wanted)
        if target is not None and stored != target:
            try:
                table = table.set_column(index, name, table.column(name).cast(target))
            except (pa.ArrowException, OverflowError) as err:
                why = f"the field {name!r} does not fit {target} ({one_line(err)})"
                raise RunLogError(f"{path} is corrupt: {why}") from None
            cast = True
    return table, cast


def part_files(directory: Path, frame: str) -> list[tuple[int, Path]]:
    """``(seq, path)`` of the frame's parts, in order."""
    folder = directory / frame
    if not folder.is_dir():
        return []
    found = []
    for entry in os.scandir(folder):
        match = _PART.match(entry.name)
        if match:
            found.append((int(match["seq"]), Path(entry.path)))
    return sorted(found)


class StaleSnapshot(Exception):
    """A compaction newer than the reader's snapshot exists: the parts it read may be gone."""


def read_table(
    directory: Path, frame: str, after: int = 0, upto: int | None = None, rows_before: int = 0, strict: bool = False
) -> tuple[pa.Table | None, int]:
    """The stored rows of ``frame`` in parts ``after < seq <= upto``, and the last part number read.

    ``upto`` is the last flush ``config.json`` confirms: the parts of a flush killed half-way are
    never read, so the frames of a run always agree. ``rows_before`` is how many rows the parts up
    to ``after`` held: when a compaction has merged them since, those rows are skipped in the
    compacted file. Retries when a compaction replaces files while it reads. With ``strict``, raises
    :class:`StaleSnapshot` when a compaction newer than ``upto`` exists (the reader should move on).
    """
    for _ in range(5):
        try:
            return _read_once(directory, frame, after, upto, rows_before, strict)
        except FileNotFoundError:  # a concurrent compaction deleted a part we listed: read again
            continue
    try:
        return _read_once(directory, frame, after, upto, rows_before, strict)
    except FileNotFoundError as err:
        why = f"keeps changing while it is read (a file vanished: {err.filename})"
        raise RunLogError(f"{directory / frame} {why}") from None


def _compacted_files(directory: Path, frame: str) -> list[tuple[int, Path]]:
    folder = directory / frame
    if not folder.is_dir():
        return []
    found = [(int(m["seq"]), Path(e.path)) for e in os.scandir(folder) if (m := _COMPACTED.match(e.name))]
    return sorted(found)


def _read_once(directory: Path, frame: str, after: int, upto: int | None, rows_before: int, strict: bool):
    pa, _ = _pa()
    tables, through = [], after
    compacted = _compacted_files(directory, frame)
    if strict and upto is not None and any(seq > upto for seq, _ in compacted):
        raise StaleSnapshot(frame)
    usable = [(seq, path) for seq, path in compacted if upto is None or seq <= upto]
    if usable and usable[-1][0] > after:  # it holds flushes 1..seq, in order: skip the rows already read
        seq, path = usable[-1]
        tables.append(_read_table(path, frame).slice(rows_before if after else 0))
        through = seq
    for seq, path in part_files(directory, frame):
        if seq > through and (upto is None or seq <= upto):
            tables.append(_read_table(path, frame))
            through = seq
    if _compacted_files(directory, frame) != compacted:  # a compaction ran meanwhile: its parts may be gone
        raise FileNotFoundError(directory / frame)
    if not tables:
        return None, through
    try:
        return pa.concat_tables(tables, promote_options="default"), through
    except pa.ArrowException as err:  # e.g. class_cosine parts of different widths
        raise RunLogError(f"{directory / frame} is corrupt: its files do not agree ({one_line(err)})") from None


# ----------------------------------------------------------------------------- compaction


def compact(
    directory: Path,
    upto: int | None,
    extra: dict[str, list] | None = None,
    final: int | None = None,
    written: list[Path] | None = None,
) -> list[Path]:
    """Write ``<frame>/compacted-<final>.parquet`` for every frame: its flushes through ``upto`` plus
    ``extra`` rows not yet written (flush ``final``). Returns the files this makes obsolete: delete
    them (:func:`remove`) once ``config.json`` says ``flushed = final``, not before. The new files
    are appended to ``written`` as they appear, so a caller can undo a compaction that failed."""
    written = [] if written is None else written
    _, pq = _pa()
    if final is None:
        final = upto if upto is not None else max((s for f in FRAMES for s, _ in part_files(directory, f)), default=0)
    obsolete: list[Path] = []
    for frame in FRAMES:
        parts = [(seq, path) for seq, path in part_files(directory, frame) if upto is None or seq <= upto]
        older = [(seq, path) for seq, path in _compacted_files(directory, frame) if seq < final]
        rows = (extra or {}).get(frame) or []
        if not parts and not rows and len(older) <= 1:  # nothing new: its file (if any) stays valid
            continue
        table, _ = read_table(directory, frame, upto=upto)
        if rows:
            pa, _ = _pa()
            new = rows_to_table(frame, rows)
            table = new if table is None else pa.concat_tables([table, new], promote_options="default")
        if table is None:
            continue
        folder = directory / frame
        if not folder.is_dir():
            folder.mkdir(exist_ok=True)
        target = folder / f"compacted-{final:06d}.parquet"
        atomic_write(target, lambda tmp, t=table: pq.write_table(t, tmp))
        written.append(target)
        obsolete += [path for _, path in parts] + [path for _, path in older]
    return obsolete


def remove(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the writer thread


class PartWriter:
    """A daemon thread writing flushes (parts, then ``config.json``) in order, through a bounded queue.

    ``submit`` blocks while ``capacity`` flushes wait: a slow disk slows the loop a little instead
    of growing memory. The first error stops later writes and is re-raised by ``check``/``wait``.
    """

    def __init__(self, write: Callable[[Any], None], capacity: int = 4) -> None:
        self.error: BaseException | None = None
        self._write = write
        self._queue: queue.Queue = queue.Queue(capacity)
        self._thread = threading.Thread(target=self._run, name="cskd_viz-runlog-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self.error is None:
                    self._write(job)
            except BaseException as err:  # noqa: BLE001 - handed to the training thread
                self.error = err
            finally:
                self._queue.task_done()

    def submit(self, job: Any) -> None:
        self._queue.put(job)

    def wait(self) -> None:
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def stop(self) -> None:
        """End the thread once what is queued is written, without waiting (its owner was garbage-collected)."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:  # pragma: no cover - it writes what is queued, then waits, holding nothing of its owner
            pass


# ----------------------------------------------------------------------------- schema 1 (CSV), read-only


def read_csv_frame(directory: Path, frame: str) -> pd.DataFrame:
    """A frame of a schema-1 run (one CSV file per frame), with its columns checked."""
    import pandas as pd

    file = directory / f"{frame}.csv"
    if not file.is_file():
        raise RunLogError(f"{file} is missing (the run directory {directory} is incomplete)")
    try:
        df = pd.read_csv(file, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OverflowError) as err:
        raise RunLogError(f"{file} is corrupt: cannot parse CSV ({one_line(err)})") from None
    missing = [c for c in FRAMES[frame] if c not in df.columns]
    if missing:
        raise RunLogError(f"{file} is corrupt: missing column(s) {missing}")
    for column in [c for c in df.columns if c in FRAMES[frame] or c.startswith("loss_")]:
        dtype = _dtype(column)
        try:
            values = df[column].astype(dtype)
        except (ValueError, TypeError, OverflowError) as err:
            why = f"the field {column!r} holds a value that is not {dtype} ({one_line(err)})"
            raise RunLogError(f"{file} is corrupt: {why}") from None
        if dtype == "int64" and len(values) and values.min() < 0:
            raise RunLogError(f"{file} is corrupt: the field {column!r} has negative values")
        df[column] = values
    return _ordered(frame, df)
