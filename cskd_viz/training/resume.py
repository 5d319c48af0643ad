"""Training checkpoints: what a run needs to continue exactly where it was, written and read safely.

A checkpoint is written at the end of an epoch (every ``checkpoint_every`` epochs, at the last one,
and when the run is stopped at an epoch end) to ``<run>/checkpoints/epoch-<NNNN>.pt``, ``NNNN``
the number of epochs done. It holds:

- ``model``, ``optimizer`` (SGD's momentum buffers) and ``scaler`` (fp16 AMP) state dicts;
- ``step`` and ``epoch`` (the position of the per-step schedule: the LR is a function of the step);
- the RNG states of torch (CPU and CUDA), NumPy, Python's ``random`` and every ``torch.Generator``
  of the training data (the loader's and its sampler's, and those a dataset holds, e.g.
  :class:`~cskd_viz.data.CifarDataset`'s augmentation); under DDP one set per rank;
- ``fingerprint``: the settings that decide what the run computes, to refuse resuming with others
  (:func:`check_fingerprint`); ``num_classes``; ``elapsed_s``, the training time so far (a resumed
  run's ``elapsed_s`` goes on from it, so the run log's last ``elapsed_s`` is the total training time).

Only tensors and plain containers are stored (NumPy's RNG key as a tensor), so it is read with
``torch.load(weights_only=True)``: a planted file cannot run code. Each is written to a temporary
file, ``fsync``-ed and moved into place with ``os.replace``; the last :data:`KEEP` are kept. A
newest checkpoint that cannot be read (truncated, corrupt) gives a warning naming it, and the older
one is used; the unreadable file is left where it is.

Resuming is exact: on CPU with ``torch.use_deterministic_algorithms(True)``, a run interrupted and
resumed ends with the same weights, bit for bit, and the same run log as one that ran through
(``tests/test_resume.py``).
"""

from __future__ import annotations

import io
import os
import random
import re
import threading
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "CHECKPOINT_DIR",
    "KEEP",
    "RESUME_IGNORED",
    "ResumeError",
    "checkpoint_files",
    "write_checkpoint",
    "read_checkpoint",
    "check_fingerprint",
    "rng_state",
    "set_rng_state",
    "data_generators",
]

CHECKPOINT_DIR = "checkpoints"
KEEP = 2
FORMAT = "cskd_viz-train-checkpoint"
VERSION = 1
_NAME = re.compile(r"^epoch-(\d{4,})\.pt$")
# Settings that may change between a run and its resumption: where it runs, how fast data loads,
# how often it saves, what is shown. Everything else in the fingerprint must be equal.
RESUME_IGNORED = ("device", "num_workers", "checkpoint_every", "progress", "flush_interval_s", "raise_on_interrupt")


class ResumeError(ValueError):
    """A run that cannot be resumed: no checkpoint, none readable, or one of another configuration."""


# ----------------------------------------------------------------------------- RNG states


def data_generators(loader: DataLoader) -> list[torch.Generator]:
    """Every ``torch.Generator`` that decides ``loader``'s batches: the loader's, its samplers', and those
    held by its dataset and the datasets it wraps (``.dataset``/``.datasets`` chains), each once, in a
    fixed order."""
    found: list[torch.Generator] = []

    def add(value: Any) -> None:
        if isinstance(value, torch.Generator) and all(value is not g for g in found):
            found.append(value)

    add(loader.generator)
    for sampler in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        add(getattr(sampler, "generator", None))
    stack, seen = [loader.dataset], set()
    while stack:
        obj = stack.pop(0)
        if id(obj) in seen or not hasattr(obj, "__dict__"):
            continue
        seen.add(id(obj))
        for value in vars(obj).values():
            add(value)
            if isinstance(value, Dataset):
                stack.append(value)
            elif isinstance(value, (list, tuple)):
                stack.extend(v for v in value if isinstance(v, Dataset))
    return found


def rng_state(generators: Iterable[torch.Generator]) -> dict[str, Any]:
    """The RNG states of torch, CUDA, NumPy, Python and ``generators``, as tensors and plain values."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": name,
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },  # fmt: skip
        "python": [version, list(internal), gauss_next],
        "data": [g.get_state() for g in generators],
    }


def set_rng_state(state: Mapping[str, Any], generators: list[torch.Generator]) -> None:
    """Restore :func:`rng_state`'s value (the data generators must be the same number, in the same order)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if len(state["data"]) != len(generators):
        raise ResumeError(
            f"the checkpoint holds {len(state['data'])} data generator state(s), the training data has "
            f"{len(generators)}: the data pipeline changed since the checkpoint"
        )
    for generator, saved in zip(generators, state["data"], strict=True):
        generator.set_state(saved)


# ----------------------------------------------------------------------------- files


def checkpoint_files(directory: str | os.PathLike) -> list[Path]:
    """The checkpoints in ``directory``, newest (most epochs) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m[1]), Path(e.path)) for e in os.scandir(directory) if (m := _NAME.match(e.name))]
    return [path for _, path in sorted(found, reverse=True)]


def write_checkpoint(directory: str | os.PathLike, state: Mapping[str, Any], keep: int = KEEP) -> Path:
    """Write ``state`` as ``epoch-<epochs done>.pt`` atomically (temporary file, ``fsync``, ``os.replace``),
    then delete all but the newest ``keep``; the path written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"epoch-{state['epoch'] + 1:04d}.pt"
    tmp = directory / f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"
    buffer = io.BytesIO()  # serialised in memory first: a full disk is then a plain OSError (ENOSPC)
    torch.save({"format": FORMAT, "version": VERSION, **state}, buffer)
    try:
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    for old in checkpoint_files(directory)[keep:]:
        old.unlink(missing_ok=True)
    for stale in directory.glob(".epoch-*.tmp"):  # left by a writer killed mid-write (the run has one writer)
        stale.unlink(missing_ok=True)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_REQUIRED = ("epoch", "step", "model", "optimizer", "rng", "fingerprint", "num_classes")


def _load(path: Path) -> dict[str, Any]:
    """One checkpoint file, read with ``weights_only=True`` and checked; ``ValueError`` saying why not."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, corrupt, or holding objects weights_only refuses
        raise ValueError(f"cannot be read ({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"is not a cskd_viz training checkpoint (no format {FORMAT!r})")
    if state.get("version") != VERSION:
        raise ValueError(f"has version {state.get('version')!r}; this cskd_viz reads version {VERSION}")
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise ValueError(f"lacks {missing}")
    return state


def read_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """The newest readable checkpoint in ``directory`` and its path.

    A newer file that cannot be read is skipped with a ``UserWarning`` naming it, and renamed
    ``<name>.corrupt`` (kept for inspection; no longer one of the last checkpoints that pruning keeps).

    Raises:
        ResumeError: there is no checkpoint, or none can be read (each file is named with why).
    """
    directory = Path(directory)
    files = checkpoint_files(directory)
    if not files:
        raise ResumeError(
            f"no checkpoint in {directory}: the run cannot be resumed (checkpoints are written every "
            "checkpoint_every epochs, --checkpoint-every; a run stopped before its first one starts over)"
        )
    problems = []
    for path in files:
        try:
            state = _load(path)
        except ValueError as err:
            problems.append((path, f"{path} {err}"))
            continue
        for bad, problem in problems:
            kept = _set_aside(bad)
            warnings.warn(f"checkpoint {problem}: resuming from the older {path.name} ({kept})", UserWarning,
                          stacklevel=2)  # fmt: skip
        return state, path
    raise ResumeError("no usable checkpoint: " + "; ".join(problem for _, problem in problems))


def _set_aside(path: Path) -> str:
    """Rename an unreadable checkpoint ``<name>.corrupt``; say where it is now."""
    target = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, target)
    except OSError as err:
        return f"it stays as {path.name}: it could not be renamed ({err.strerror})"
    return f"kept as {target.name}"


def check_fingerprint(saved: Mapping[str, Any], current: Mapping[str, Any], source: str) -> None:
    """Refuse to resume with settings other than those the checkpoint was made with.

    ``saved`` and ``current`` map setting names to JSON values; keys in :data:`RESUME_IGNORED` may
    differ, a key missing on one side counts as ``None``. The error lists every differing field.
    """
    keys = sorted((set(saved) | set(current)) - set(RESUME_IGNORED))
    differ = [k for k in keys if _norm(saved.get(k)) != _norm(current.get(k))]
    if differ:
        fields = ", ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {current.get(k)!r} now" for k in differ)
        raise ResumeError(
            f"{source} was made with another configuration ({fields}): resume with the run's own settings, "
            "or start a new run (another --name)"
        )


def _norm(value: Any) -> Any:
    """Tuples and lists compare equal (a checkpoint stores lists), ints and equal floats too."""
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value
