"""Tiny stand-in datasets written in the real on-disk formats, for tests that must never download.

- :func:`write_idx` / :func:`write_fashion_mnist`: the IDX files of (Fashion-)MNIST, ``.gz`` or plain;
- :func:`write_cifar`: torchvision's python-pickle layout (``cifar-10-batches-py/data_batch_1..5``,
  ``test_batch``, ``batches.meta``; ``cifar-100-python/train``, ``test``, ``meta``). The files do
  not match torchvision's md5 sums: load them with ``verify=False``, or patch the sums with
  :func:`patch_torchvision_md5` to run torchvision's own integrity check on them.

Each writer returns the arrays it wrote, so tests compare loaded values against the source.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C}
_IDX_CODES |= {np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``: magic ``00 00 type ndim``, big-endian uint32 sizes, big-endian data."""
    array = np.asarray(array)
    code = _IDX_CODES[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool | None = None) -> Path:
    """Write ``array`` as IDX to ``path`` (gzip-compressed when the name ends in ``.gz`` or ``gz``)."""
    data = idx_bytes(array)
    path = Path(path)
    if gz if gz is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def write_fashion_mnist(
    directory: Path, n_train: int = 40, n_test: int = 20, seed: int = 0, gz: bool = True
) -> dict[str, np.ndarray]:
    """The four Fashion-MNIST IDX files with random ``(n, 28, 28)`` uint8 images and labels 0..9."""
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(directory / (name + (".gz" if gz else "")), array, gz=gz)
    return arrays


def _pickle(path: Path, obj: dict) -> str:
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar(root: Path, kind: str = "cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0) -> dict:
    """A tiny CIFAR-10/100 in torchvision's python format under ``root``.

    Returns ``{"train_images": (n, 32, 32, 3) uint8, "train_labels", "test_images", "test_labels",
    "classes", "md5": {file name: md5}}``. CIFAR-10 spreads the training images over five batches.
    """
    rng = np.random.default_rng(seed)
    num_classes = 10 if kind == "cifar10" else 100
    train = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    train_labels = (np.arange(n_train) % num_classes).astype(np.int64)
    test_labels = rng.integers(0, num_classes, n_test).astype(np.int64)

    def rows(images: np.ndarray) -> np.ndarray:  # the files store (n, 3072) rows, channel-major
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), -1)

    md5 = {}
    if kind == "cifar10":
        folder = Path(root) / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        classes = CIFAR10_NAMES
        for b, idx in enumerate(np.array_split(np.arange(n_train), 5), start=1):
            batch = {"batch_label": f"training batch {b} of 5", "labels": train_labels[idx].tolist()}
            batch |= {"data": rows(train[idx]), "filenames": [f"img_{i}.png" for i in idx]}
            md5[f"data_batch_{b}"] = _pickle(folder / f"data_batch_{b}", batch)
        batch = {"batch_label": "testing batch 1 of 1", "labels": test_labels.tolist(), "data": rows(test)}
        md5["test_batch"] = _pickle(folder / "test_batch", batch | {"filenames": [""] * n_test})
        meta = {"label_names": classes, "num_cases_per_batch": max(1, n_train // 5), "num_vis": 3072}
        md5["batches.meta"] = _pickle(folder / "batches.meta", meta)
    else:
        folder = Path(root) / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        classes = [f"class_{j:03d}" for j in range(num_classes)]
        for name, images, labels in (("train", train, train_labels), ("test", test, test_labels)):
            entry = {"filenames": [""] * len(images), "batch_label": name, "fine_labels": labels.tolist()}
            entry |= {"coarse_labels": (labels // 5).tolist(), "data": rows(images)}
            md5[name] = _pickle(folder / name, entry)
        md5["meta"] = _pickle(
            folder / "meta", {"fine_label_names": classes, "coarse_label_names": list("abcdefghijklmnopqrst")}
        )
    return {
        "train_images": train,
        "train_labels": train_labels,
        "test_images": test,
        "test_labels": test_labels,
        "classes": classes,
        "md5": md5,
    }


def patch_torchvision_md5(monkeypatch, kind: str, md5: dict[str, str]) -> None:
    """Make torchvision's CIFAR class expect the stand-in's md5 sums (undone by ``monkeypatch``)."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if kind == "cifar10" else datasets.CIFAR100
    monkeypatch.setattr(cls, "train_list", [[name, md5[name]] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[name, md5[name]] for name, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5[cls.meta["filename"]]})
