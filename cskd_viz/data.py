"""Datasets for short distillation runs, as standard torch ``Dataset``/``DataLoader`` objects.

``digits`` (scikit-learn's bundled 8x8 digits) is the offline default. Every loader is seeded:
the same ``seed`` gives the same split, the same batches in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = ["DatasetInfo", "DATASETS", "load_datasets", "make_loaders", "digits", "synthetic"]


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
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    augmented: bool = False


def _split(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(n * test_fraction))
    return order[n_test:], order[:n_test]


def digits(seed: int = 0, test_fraction: float = 0.25) -> tuple[Dataset, Dataset, DatasetInfo]:
    """scikit-learn's bundled digits: 1797 images ``(1, 8, 8)`` in ``[0, 1]``, 10 classes, offline.

    Example:
        >>> train, test, info = digits()
        >>> len(train) + len(test), info.input_shape
        (1797, (1, 8, 8))
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    targets = torch.as_tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = _split(len(targets), test_fraction, seed)
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


DATASETS = {"digits": digits, "synthetic": synthetic}


def load_datasets(name: str, seed: int = 0, **kwargs) -> tuple[Dataset, Dataset, DatasetInfo]:
    """``(train, test, info)`` for a registered dataset name (see ``DATASETS``)."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name](seed=seed, **kwargs)


def make_loaders(
    name: str, batch_size: int = 64, seed: int = 0, num_workers: int = 0, **kwargs
) -> tuple[DataLoader, DataLoader, DatasetInfo]:
    """Seeded ``(train_loader, test_loader, info)``; the train loader shuffles with ``seed``.

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
    )
    test_loader = DataLoader(test, batch_size=max(batch_size, 256), shuffle=False, num_workers=num_workers)
    return train_loader, test_loader, info
