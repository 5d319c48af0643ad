"""CIFAR-10/100 python-version batch files, read without running anything they contain.

The official files are Python pickles of dicts holding lists, strings, ints and one numpy
``uint8`` array. ``pickle.load`` would run whatever a planted file asks for, so they are read with
:class:`CifarUnpickler`, which resolves only the few numpy names an array needs and refuses every
other import before anything runs (:class:`UnsafeDataFileError`). The md5 sums of the official
release (from torchvision's dataset classes) are checked unless ``verify=False``.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DataFileError", "UnsafeDataFileError", "CifarUnpickler", "read_cifar_batch", "read_cifar", "CIFAR_URL"]

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


class DataFileError(ValueError):
    """A dataset file that is not what it should be (truncated, corrupt, or of the wrong layout)."""


class UnsafeDataFileError(DataFileError, pickle.UnpicklingError):
    """A data file that asks to import something a genuine dataset file never needs; nothing of it was run."""


def _numpy(submodule: str, name: str) -> Callable[..., Any]:
    """``numpy._core.<submodule>.<name>`` (numpy 2), else ``numpy.core.<submodule>.<name>`` (numpy 1)."""
    for base in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{base}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this numpy has no {submodule}.{name}")


def _latin1(text: Any, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 writes ``bytes`` into protocol-2 pickles, for latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


class _ArrayType:
    """Stands for ``numpy.ndarray`` in a pickle: genuine files only hand it to ``_reconstruct``.

    Calling it (``REDUCE``/``NEWOBJ``, e.g. ``ndarray((2**40,), 'u1')``) would allocate whatever a
    planted file asks for, so it is refused.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("unexpected call of numpy.ndarray (genuine files never call it)")


def _check_plain(dtype: Any) -> None:
    """Refuse all but plain numbers: an object dtype (or flags saying so, which ``dtype.__setstate__``
    takes from the file) would read raw bytes of the file as pointers."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or dtype.flags or dtype.fields is not None:
        raise pickle.UnpicklingError(f"unexpected array dtype {dtype!r} (genuine files hold plain numbers)")


class _PickledArray(np.ndarray):
    """What ``_reconstruct`` makes: ``BUILD`` may fill it with plain numbers only (see :func:`_check_plain`)."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("unexpected array state")
        _check_plain(state[-3])
        super().__setstate__(state)


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct`` as genuine pickles use it: an empty array that ``BUILD`` then fills.

    Any other shape would be allocated before the data it should hold is read (a planted file could
    ask for terabytes).
    """
    if subtype is not _ArrayType or not isinstance(shape, tuple) or shape != (0,):
        raise pickle.UnpicklingError(f"unexpected _reconstruct({getattr(subtype, '__name__', subtype)}, {shape!r})")
    return _numpy("multiarray", "_reconstruct")(_PickledArray, shape, dtype)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's ``_frombuffer`` (protocol-5 pickles) for plain numbers only."""
    _check_plain(dtype)
    return _numpy("numeric", "_frombuffer")(buffer, dtype, shape, order)


# What the official files (Python 2 / numpy pickles) and Python 3 re-pickles of them reference.
_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: _ArrayType,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1,
}
for _base in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_base}.multiarray", "_reconstruct")] = lambda: _reconstruct
    _ALLOWED[(f"{_base}.multiarray", "scalar")] = lambda: _numpy("multiarray", "scalar")
    _ALLOWED[(f"{_base}.numeric", "_frombuffer")] = lambda: _frombuffer


class CifarUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR batch files: plain containers and numpy arrays, nothing else.

    Strings are decoded as latin-1 (as torchvision reads the Python 2 files). Any other global
    (a class or function to call, e.g. ``os.system``) raises :class:`UnsafeDataFileError` when it
    is looked up, before anything could call it.

    Example:
        >>> import io, pickle
        >>> raw = pickle.dumps({"data": np.zeros((1, 3), np.uint8), "labels": [1]}, protocol=2)
        >>> CifarUnpickler(io.BytesIO(raw), "batch").load()["labels"]
        [1]
        >>> CifarUnpickler(io.BytesIO(pickle.dumps(print)), "planted").load()
        Traceback (most recent call last):
        ...
        cskd_viz._cifar_files.UnsafeDataFileError: planted is not a genuine CIFAR file: ...
    """

    def __init__(self, file: Any, source: str | Path) -> None:
        super().__init__(file, encoding="latin1")
        self.source = str(source)

    def find_class(self, module: str, name: str) -> Any:
        make = _ALLOWED.get((module, name))
        if make is None:
            raise UnsafeDataFileError(
                f"{self.source} is not a genuine CIFAR file: it asks to import {module}.{name}, which CIFAR "
                "files never do; refused before anything in it ran. Delete it and get the original files "
                f"(download=True, or the python version from {CIFAR_URL})"
            )
        return make()

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeDataFileError(f"{self.source} is not a genuine CIFAR file: it holds a persistent id")


def _text(value: Any) -> Any:
    return value.decode("latin1") if isinstance(value, bytes) else value


def read_cifar_batch(path: str | Path) -> dict[str, Any]:
    """One CIFAR batch (or meta) file as a dict with ``str`` keys, read by :class:`CifarUnpickler`.

    Raises:
        UnsafeDataFileError: the file asks to import something (a planted file).
        DataFileError: the file is truncated, corrupt or not a dict.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            entry = CifarUnpickler(fh, path).load()
    except UnsafeDataFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, LookupError, AttributeError, OverflowError) as err:
        reason = str(err) or "it ends early"
        raise DataFileError(f"{path} is truncated or corrupt, not a readable CIFAR file ({reason})") from err
    if not isinstance(entry, dict):
        raise DataFileError(f"{path} is not a CIFAR file: it holds a {type(entry).__name__}, not a dict")
    plain = {key: value.view(np.ndarray) if isinstance(value, _PickledArray) else value for key, value in entry.items()}
    return {_text(key): value for key, value in plain.items()}


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _images_and_labels(path: Path, entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    images = entry.get("data")
    labels = entry.get("labels", entry.get("fine_labels"))
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataFileError(f"{path}: 'data' must be a uint8 (N, 3072) array, got {got}")
    try:
        targets = np.asarray(labels, dtype=np.int64) if isinstance(labels, list) else None
    except (TypeError, ValueError, OverflowError):
        targets = None
    if targets is None or targets.shape != (len(images),):
        raise DataFileError(f"{path}: needs 'labels' (or 'fine_labels'), a list of {len(images)} ints")
    return images.reshape(-1, 3, 32, 32), targets


def read_cifar(
    kind: str, folder: Path, files: Sequence[Sequence[Any]], meta: dict[str, Any], verify: bool
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """``([(train images, labels), (test images, labels)], class names)`` from a CIFAR folder.

    Args:
        kind: ``"cifar10"`` or ``"cifar100"`` (for messages).
        folder: ``cifar-10-batches-py`` or ``cifar-100-python``.
        files: ``[train_list, test_list]``, torchvision's ``[[file name, md5], ...]`` lists.
        meta: torchvision's ``meta`` entry: ``filename``, ``key`` (class names) and ``md5``.
        verify: check the md5 sums of the official release first.

    Images come as uint8 ``(N, 3, 32, 32)``. Missing files or failed md5 sums raise
    ``FileNotFoundError``; a bad file :class:`DataFileError` (:class:`UnsafeDataFileError` when
    planted).
    """
    listed = [*files[0], *files[1], [meta["filename"], meta["md5"]]]
    missing = [name for name, _ in listed if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{kind} not found in {folder}: missing {', '.join(missing)} of its python-version files. Point "
            f"$CSKD_DATA (or root=) at the directory that holds {folder.name}, or pass download=True on a machine "
            f"with internet (the files: {CIFAR_URL}, python version)"
        )
    if verify:
        failed = [name for name, md5 in listed if md5 and _md5(folder / name) != md5]
        if failed:
            raise FileNotFoundError(
                f"{kind} files in {folder} fail the md5 check of the official release: {', '.join(failed)}. They "
                "are not the original files (damaged, or replaced by someone): get the originals again with "
                f"download=True (it fetches and overwrites them), or the python version from {CIFAR_URL} "
                f"extracted under {folder.parent}"
            )
    splits = []
    for names in files:
        parts = [_images_and_labels(folder / name, read_cifar_batch(folder / name)) for name, _ in names]
        images = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 3, 32, 32), np.uint8)
        labels = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
        splits.append((images, labels))
    classes = read_cifar_batch(folder / meta["filename"]).get(meta["key"])
    if not isinstance(classes, list) or not all(isinstance(c, (str, bytes)) for c in classes):
        raise DataFileError(f"{folder / meta['filename']}: {meta['key']!r} must be a list of class names")
    return splits, [_text(c) for c in classes]
