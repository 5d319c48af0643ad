"""Datasets for short distillation runs, as standard torch ``Dataset``/``DataLoader`` objects.

``digits`` (scikit-learn's bundled 8x8 digits) is the offline default. Every loader is seeded:
the same ``seed`` gives the same split, the same batches in the same order, and (for CIFAR)
the same random crops and flips.

- ``digits``: scikit-learn's bundled digits, ``(1, 8, 8)``;
- ``synthetic``: a Gaussian mixture, ``(dim,)``;
- ``fashion-mnist``: IDX files from the Debian package ``dataset-fashion-mnist``, ``$CSKD_DATA``
  or a torchvision download, ``(1, 28, 28)``;
- ``cifar10`` / ``cifar100``: torchvision's on-disk format under ``$CSKD_DATA``, ``(3, 32, 32)``,
  read with a restricted unpickler (:mod:`cskd_viz._cifar_files`): a planted file cannot run code.

Nothing is downloaded unless ``download=True`` is passed.
"""

from __future__ import annotations

import copy
import functools
import gzip
import inspect
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset, get_worker_info

from cskd_viz._cifar_files import DataFileError, UnsafeDataFileError, read_cifar

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "load_datasets",
    "make_loaders",
    "digits",
    "synthetic",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "read_idx",
    "data_root",
    "CifarDataset",
    "FASHION_MNIST_SYSTEM_DIR",
    "DataFileError",
    "UnsafeDataFileError",
    "canonical_dataset_name",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    Attributes:
        name: registry name.
        num_classes: ``C``.
        input_shape: ``(channels, height, width)`` of one sample.
        class_names: one label per class.
        augmented: whether the training set applies random augmentation (then teacher logits
            differ between epochs and cannot be cached).
        mean: per-channel mean subtracted from the inputs (``None``: not standardised).
        std: per-channel standard deviation the inputs were divided by (``None``: not standardised).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    augmented: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _split(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(n * test_fraction))
    return order[n_test:], order[:n_test]


def digits(seed: int = 0, test_fraction: float = 0.25, split_seed: int = 0) -> tuple[Dataset, Dataset, DatasetInfo]:
    """scikit-learn's bundled digits: 1797 images ``(1, 8, 8)`` in ``[0, 1]``, 10 classes, offline.

    The train/test split depends on ``split_seed`` only, not on the run's ``seed``: a teacher
    trained with one seed never sees the test images of a student trained with another.

    Example:
        >>> train, test, info = digits()
        >>> len(train) + len(test), info.input_shape
        (1797, (1, 8, 8))
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    targets = torch.as_tensor(bunch.target, dtype=torch.long)
    del seed  # the data and its split are fixed; the run's seed only shuffles the loader
    train_idx, test_idx = _split(len(targets), test_fraction, split_seed)
    info = DatasetInfo("digits", 10, (1, 8, 8), tuple(str(d) for d in range(10)))
    return (
        TensorDataset(images[train_idx], targets[train_idx]),
        TensorDataset(images[test_idx], targets[test_idx]),
        info,
    )


def synthetic(
    seed: int = 0,
    num_classes: int = 5,
    samples_per_class: int = 200,
    dim: int = 16,
    overlap: float = 1.0,
    test_fraction: float = 0.25,
) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Gaussian mixture toy: class means on a sphere of radius 3, noise std ``overlap``.

    Larger ``overlap`` makes classes harder to separate (``overlap=0.2``: nearly separable,
    ``overlap=3``: heavily mixed). Samples have shape ``(dim,)``.

    Example:
        >>> train, test, info = synthetic(num_classes=3, samples_per_class=10, dim=4)
        >>> train[0][0].shape, info.num_classes
        (torch.Size([4]), 3)
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if samples_per_class < 1 or dim < 1:
        raise ValueError(f"samples_per_class and dim must be >= 1, got {samples_per_class} and {dim}")
    if not overlap > 0:
        raise ValueError(f"overlap must be > 0, got {overlap}")
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=gen)
    means = 3.0 * means / means.norm(dim=1, keepdim=True)
    targets = torch.arange(num_classes).repeat_interleave(samples_per_class)
    inputs = means[targets] + overlap * torch.randn(len(targets), dim, generator=gen)
    train_idx, test_idx = _split(len(targets), test_fraction, seed)
    info = DatasetInfo("synthetic", num_classes, (dim,), tuple(f"class {j}" for j in range(num_classes)))
    return (
        TensorDataset(inputs[train_idx], targets[train_idx]),
        TensorDataset(inputs[test_idx], targets[test_idx]),
        info,
    )


def data_root() -> Path:
    """Directory for datasets this package reads or downloads: ``$CSKD_DATA`` if set, else ``~/.cache/cskd_viz``.

    Example:
        >>> isinstance(data_root(), Path)
        True
    """
    env = os.environ.get("CSKD_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cskd_viz"


def _size(name: str, value: int | None, available: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= available:
        raise ValueError(f"{name} must be None or an int in [1, {available}], got {value!r}")
    return value


def _subset(n: int, size: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of ``range(n)`` (kept in the original order), or all of them."""
    if size is None or size == n:
        return np.arange(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return np.sort(order[:size].numpy())


# ---------------------------------------------------------------------------------------------
# IDX files (the MNIST / Fashion-MNIST format)

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    del mtime_ns, size  # part of the cache key only: a changed file is read again
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: corrupt gzip data ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic number {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header truncated ({len(raw)} bytes for {ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: IDX header promises shape {shape} of {dtype} ({expected} bytes), the data has {len(raw)} bytes"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
    array.setflags(write=False)  # shared by the cache
    return array


def _idx(path: Path) -> np.ndarray:
    stat = path.stat()
    return _read_idx_cached(str(path), stat.st_mtime_ns, stat.st_size)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or plain) into a numpy array.

    Format: two zero bytes, a type byte (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C``
    int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions ``d``, ``d`` big-endian
    uint32 sizes, then the values in C order (big-endian).

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "labels-idx1-ubyte"
        ...     _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9]))
        ...     read_idx(path)
        array([7, 0, 9], dtype=uint8)
    """
    return _idx(Path(path)).copy()


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST

# Where the Debian package ``dataset-fashion-mnist`` installs the four IDX .gz files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _fashion_files(directory: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in _FASHION_FILES.items():
        candidate = next((p for p in (directory / f"{stem}.gz", directory / stem) if p.is_file()), None)
        if candidate is None:
            return None
        found[key] = candidate
    return found


def _fashion_dirs(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        base = Path(root).expanduser()
        return [base, base / "FashionMNIST" / "raw"]
    base = data_root()
    return [FASHION_MNIST_SYSTEM_DIR, base / "fashion-mnist", base / "FashionMNIST" / "raw"]


def _fashion_split(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> TensorDataset:
    x = torch.from_numpy(images[idx].astype(np.float32) / np.float32(255.0)).unsqueeze(1)
    y = torch.from_numpy(labels[idx].astype(np.int64))
    return TensorDataset(x, y)


def fashion_mnist(
    seed: int = 0,
    root: str | os.PathLike | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    download: bool = False,
) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Fashion-MNIST from its IDX files: images ``(1, 28, 28)`` in ``[0, 1]``, 10 classes.

    Looks for ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
    ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]`` in, in order:
    ``root`` (and ``root/FashionMNIST/raw``) when given; otherwise ``FASHION_MNIST_SYSTEM_DIR``
    (the Debian package ``dataset-fashion-mnist``), ``$CSKD_DATA/fashion-mnist`` and
    ``$CSKD_DATA/FashionMNIST/raw`` (``$CSKD_DATA`` meaning ``data_root()``, default ``~/.cache/cskd_viz``). With
    ``download=True`` and nothing found, torchvision downloads the files into ``root`` or
    ``data_root()``. The official 60000/10000 split is kept; ``train_size`` / ``test_size``
    take seeded random subsets for short CPU runs.

    Raises:
        FileNotFoundError: no directory holds the four files (the message lists where it looked).
        ValueError: a file is not valid IDX, or sizes are out of range.

    Example (needs the files, so not run as a doctest)::

        train, test, info = fashion_mnist(train_size=1000, test_size=500)
        train[0][0].shape      # torch.Size([1, 28, 28])
        info.class_names[9]    # 'Ankle boot'
    """
    dirs = _fashion_dirs(root)
    files = next((found for d in dirs if (found := _fashion_files(d)) is not None), None)
    if files is None and download:
        target = Path(root).expanduser() if root is not None else data_root()
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(str(target), train=True, download=True)
        except Exception as err:  # network errors come in many types
            raise RuntimeError(f"downloading Fashion-MNIST into {target} failed: {err}") from err
        files = _fashion_files(target / "FashionMNIST" / "raw")
    if files is None:
        looked = ", ".join(str(d) for d in dirs)
        raise FileNotFoundError(
            "Fashion-MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            f"t10k-labels-idx1-ubyte; .gz or plain) not found. Looked in: {looked}. "
            "Install the Debian package dataset-fashion-mnist, put the files in $CSKD_DATA/fashion-mnist, "
            "pass root=DIR, or pass download=True on a machine with internet."
        )
    arrays = {key: _idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(
                f"Fashion-MNIST {split} files disagree: images {images.shape} in {files[f'{split}_images']}, "
                f"labels {labels.shape} in {files[f'{split}_labels']} (expected (N, 28, 28) and (N,))"
            )
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"Fashion-MNIST labels must be in 0..9, {files[f'{split}_labels']} has {labels.max()}")
    n_train, n_test = len(arrays["train_labels"]), len(arrays["test_labels"])
    train_idx = _subset(n_train, _size("train_size", train_size, n_train), seed)
    test_idx = _subset(n_test, _size("test_size", test_size, n_test), seed + 1)
    info = DatasetInfo("fashion-mnist", 10, (1, 28, 28), FASHION_MNIST_CLASSES)
    return (
        _fashion_split(arrays["train_images"], arrays["train_labels"], train_idx),
        _fashion_split(arrays["test_images"], arrays["test_labels"], test_idx),
        info,
    )


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
# mdistiller's CIFAR-100 statistics: its published teachers were trained on inputs normalised with these.
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def crop_flip(img: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad ``(C, H, W)`` by ``padding``, crop back to ``(H, W)`` at a random offset and flip left-right
    with probability 1/2, from one uniform draw over all (top, left, flip) triples of ``generator``."""
    p = padding
    h, w = img.shape[1:]
    draw = int(torch.randint(0, 2 * (2 * p + 1) ** 2, (1,), generator=generator))
    top, left, flip = draw // (2 * (2 * p + 1)), (draw // 2) % (2 * p + 1), draw % 2
    img = F.pad(img, (p, p, p, p))[:, top : top + h, left : left + w]
    return img.flip(-1) if flip else img


class SeededImages(Dataset):
    """uint8 images ``(N, C, H, W)`` with ``(N,)`` labels, standardised per item, and a generator of their own.

    The base of the CIFAR datasets (:class:`CifarDataset`, :class:`cskd_viz.views.TwoViewDataset`):
    the generator is seeded with ``seed``, re-seeded in a DataLoader worker from that worker's seed
    (which the loader's generator fixes) and pickled with its state, so a seeded loader yields the
    same random items every time, with or without workers. ``padding`` is the crop padding.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        seed: int,
        padding: int,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if targets.shape != (len(images),):
            raise ValueError(f"targets must have shape ({len(images)},), got {tuple(targets.shape)}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1] or min(std) <= 0:
            raise ValueError(f"mean and std need {images.shape[1]} entries (std > 0), got {mean} and {std}")
        self.images = images
        self.targets = targets.long()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self._scale = 1.0 / (255.0 * self.std)
        self._shift = -self.mean / self.std
        self.padding = padding
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self._worker_id: int | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def _rng(self) -> torch.Generator:
        worker = get_worker_info()
        if worker is not None and worker.id != self._worker_id:
            self._generator.manual_seed(worker.seed)  # = loader's base seed + worker id
            self._worker_id = worker.id
        return self._generator

    def _standardise(self, img: torch.Tensor) -> torch.Tensor:
        """``(img / 255 - mean) / std`` in one fused op."""
        return torch.addcmul(self._shift, img.float(), self._scale)

    def reseeded(self, seed: int) -> SeededImages:
        """A copy (sharing the images) whose generator starts from ``seed``: e.g. one stream per DDP rank."""
        twin = copy.copy(self)
        twin.seed, twin._generator, twin._worker_id = seed, torch.Generator().manual_seed(seed), None
        return twin

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_generator"] = self._generator.get_state()
        return state

    def __setstate__(self, state: dict) -> None:
        generator = torch.Generator()
        generator.set_state(state.pop("_generator"))
        self.__dict__.update(state, _generator=generator)


class CifarDataset(SeededImages):
    """uint8 images ``(N, 3, H, W)`` standardised per item, with optional seeded crop + flip.

    ``x = (img / 255 - mean) / std``. With ``augment=True`` each item is first zero-padded by
    ``padding`` pixels, cropped back to ``H x W`` at a random offset and flipped left-right with
    probability 1/2 — the distribution of torchvision's ``RandomCrop(H, padding=4)`` followed by
    ``RandomHorizontalFlip()``. The random numbers come from the dataset's own generator (see
    :class:`SeededImages`), so a seeded loader yields the same augmented batches every time.

    Example:
        >>> images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
        >>> ds = CifarDataset(images, torch.arange(4), mean=(0.5,) * 3, std=(0.5,) * 3, augment=True)
        >>> x, y = ds[1]
        >>> x.shape, float(x.max()), int(y)
        (torch.Size([3, 32, 32]), -1.0, 1)
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: bool = False,
        seed: int = 0,
        padding: int = 4,
    ) -> None:
        super().__init__(images, targets, mean, std, seed, padding)
        self.augment = augment

    @property
    def augmented(self) -> bool:
        """Whether items are randomly augmented (then a teacher's logits differ between epochs)."""
        return self.augment

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[index]
        if self.augment:
            img = crop_flip(img, self.padding, self._rng())
        return self._standardise(img), self.targets[index]


def _cifar(
    kind: str,
    seed: int,
    root: str | os.PathLike | None,
    download: bool,
    augment: bool,
    train_size: int | None,
    test_size: int | None,
    verify: bool,
) -> tuple[Dataset, Dataset, DatasetInfo]:
    from torchvision.datasets import cifar as tv_cifar

    base, num_classes = (tv_cifar.CIFAR10, 10) if kind == "cifar10" else (tv_cifar.CIFAR100, 100)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if kind == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    root_dir = Path(root).expanduser() if root is not None else data_root()
    folder = root_dir / base.base_folder
    files = [base.train_list, base.test_list]
    try:
        splits, classes = read_cifar(kind, folder, files, base.meta, verify)
    except FileNotFoundError:
        if not download:
            raise
        try:  # torchvision's downloader checks the archive's md5; the files are then read as above
            tv_cifar.download_and_extract_archive(base.url, str(root_dir), filename=base.filename, md5=base.tgz_md5)
        except OSError as err:  # download failures (URLError is an OSError)
            raise RuntimeError(f"downloading {kind} into {root_dir} failed: {err}") from err
        splits, classes = read_cifar(kind, folder, files, base.meta, verify)
    if len(classes) != num_classes:
        raise DataFileError(f"{kind} metadata in {folder} lists {len(classes)} classes, expected {num_classes}")

    def tensors(split: int, size: int | None, name: str, subset_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = splits[split]
        idx = _subset(len(labels), _size(name, size, len(labels)), subset_seed)
        targets = torch.from_numpy(labels[idx])
        if len(targets) and (targets.min() < 0 or targets.max() >= num_classes):
            bad = int(targets.min()) if targets.min() < 0 else int(targets.max())
            raise DataFileError(f"{kind} labels in {folder} must be in 0..{num_classes - 1}, got {bad}")
        return torch.from_numpy(np.ascontiguousarray(images[idx])), targets

    train_x, train_y = tensors(0, train_size, "train_size", seed)
    test_x, test_y = tensors(1, test_size, "test_size", seed + 1)
    aug_seed = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(seed)))
    info = DatasetInfo(kind, num_classes, (3, 32, 32), tuple(classes), augment, mean, std)
    return (
        CifarDataset(train_x, train_y, mean, std, augment=augment, seed=aug_seed),
        CifarDataset(test_x, test_y, mean, std, augment=False),
        info,
    )


def cifar10(
    seed: int = 0,
    root: str | os.PathLike | None = None,
    download: bool = False,
    augment: bool = True,
    train_size: int | None = None,
    test_size: int | None = None,
    verify: bool = True,
) -> tuple[Dataset, Dataset, DatasetInfo]:
    """CIFAR-10 in torchvision's ``CIFAR10`` layout (its file lists and md5 sums): images ``(3, 32, 32)``, 10 classes.

    Reads ``root/cifar-10-batches-py`` (``root`` defaults to ``data_root()``, i.e. ``$CSKD_DATA``
    or ``~/.cache/cskd_viz``); downloads only with ``download=True``. Inputs are standardised with
    the CIFAR-10 channel statistics; the training set gets crop (padding 4) + horizontal flip
    augmentation when ``augment`` (then ``info.augmented`` is True). ``train_size`` / ``test_size``
    take seeded random subsets. ``verify=False`` skips the md5 check against the official release
    (files must still exist) — for stand-in files you wrote yourself. Either way the files are read
    with a restricted unpickler that accepts only plain containers and numpy arrays, so a planted
    file cannot run code.

    Raises:
        FileNotFoundError: the files are missing or fail the md5 check (the message says where it looked
            and how to get the original files).
        DataFileError: a file is truncated, corrupt or of the wrong layout (a ``ValueError``);
            :class:`UnsafeDataFileError` when it asks to import anything beyond numpy's array builders.

    Example (needs the files, so not run as a doctest)::

        train, test, info = cifar10(train_size=1000)
        info.augmented, train[0][0].shape   # (True, torch.Size([3, 32, 32]))
    """
    return _cifar("cifar10", seed, root, download, augment, train_size, test_size, verify)


def cifar100(
    seed: int = 0,
    root: str | os.PathLike | None = None,
    download: bool = False,
    augment: bool = True,
    train_size: int | None = None,
    test_size: int | None = None,
    verify: bool = True,
) -> tuple[Dataset, Dataset, DatasetInfo]:
    """CIFAR-100 (fine labels) in torchvision's ``CIFAR100`` layout: ``(3, 32, 32)``, 100 classes.

    As :func:`cifar10` (folder ``root/cifar-100-python``), standardised with mdistiller's CIFAR-100
    statistics so its published teachers see the inputs they were trained on.

    Example (needs the files, so not run as a doctest)::

        train, test, info = cifar100(train_size=1000, augment=False)
        info.num_classes, info.augmented   # (100, False)
    """
    return _cifar("cifar100", seed, root, download, augment, train_size, test_size, verify)


DATASETS = {
    "digits": digits,
    "synthetic": synthetic,
    "fashion-mnist": fashion_mnist,
    "cifar10": cifar10,
    "cifar100": cifar100,
}


def canonical_dataset_name(name: str) -> str:
    """The registered name ``name`` means: case-insensitive, ``_`` counts as ``-``, spaces around ignored.

    The one rule for dataset names: :func:`load_datasets`, ``RunConfig`` and the CLI all use it.

    Raises:
        ValueError: not a registered name (the valid ones are listed).

    Example:
        >>> canonical_dataset_name("Fashion_MNIST"), canonical_dataset_name("DIGITS")
        ('fashion-mnist', 'digits')
    """
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return key


def load_datasets(name: str, seed: int = 0, **kwargs) -> tuple[Dataset, Dataset, DatasetInfo]:
    """``(train, test, info)`` for a registered dataset name (see ``DATASETS``).

    Names follow :func:`canonical_dataset_name` (``"fashion_mnist"``, ``"DIGITS"`` work). ``kwargs``
    go to the dataset function; an option it does not take is a ``TypeError`` listing the valid ones.

    Example:
        >>> train, test, info = load_datasets("synthetic", num_classes=3, samples_per_class=4)
        >>> len(train) + len(test), info.name
        (12, 'synthetic')
    """
    key = canonical_dataset_name(name)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    factory = DATASETS[key]
    options = [p for p in inspect.signature(factory).parameters if p != "seed"]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise TypeError(f"dataset {key!r} takes the options {options}, got unexpected {unknown}")
    return factory(seed=seed, **kwargs)


def make_loaders(
    name: str, batch_size: int = 64, seed: int = 0, num_workers: int = 0, drop_last: bool = True, **kwargs
) -> tuple[DataLoader, DataLoader, DatasetInfo]:
    """Seeded ``(train_loader, test_loader, info)``; the train loader shuffles with ``seed``.

    ``drop_last`` (default on) drops the train loader's last partial batch: CSKD compares batch
    predictions, so a 4-sample remainder batch would be a different loss (and shows as a stripe in
    every per-step diagnostic). It is ignored when the training set is smaller than one batch.

    ``kwargs`` go to the dataset (e.g. ``train_size=``, ``root=``, ``download=``). The same
    ``seed`` gives the same batches (CIFAR augmentation included, also with ``num_workers > 0``).

    Example:
        >>> train, test, info = make_loaders("digits", batch_size=32)
        >>> next(iter(train))[0].shape
        torch.Size([32, 1, 8, 8])
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    train, test, info = load_datasets(name, seed=seed, **kwargs)
    train_loader = DataLoader(
        train,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        num_workers=num_workers,
        drop_last=bool(drop_last) and len(train) >= batch_size,
    )
    test_loader = DataLoader(test, batch_size=max(batch_size, 256), shuffle=False, num_workers=num_workers)
    return train_loader, test_loader, info
