"""Two augmented views of every CIFAR image, for the published CSKD objective (``cskd_published``).

- **weak**: zero-pad by 4, random crop back to ``H x W``, horizontal flip with probability 1/2 (the
  plain CIFAR training augmentation of :class:`cskd_viz.data.CifarDataset`);
- **strong**: the weak view's crop + flip, then torchvision's ``RandAugment(num_ops=2, magnitude=10)`` on the
  uint8 image, then standardisation, then Cutout: one square of side ``H // 2`` centred on a uniformly
  drawn pixel and clipped at the borders (so the visible side is up to half the image) is set to 0,
  the channel mean, after standardising (as Cutout is applied to normalised tensors in the published
  pipelines). ``shared_crop=False`` gives the strong view a crop + flip of its own instead (what two
  separately composed pipelines would draw); the default follows the recipe as specified: weak, then more.

Both views are standardised like the plain CIFAR path, ``(img / 255 - mean) / std``, with the
dataset's statistics. Items are ``(weak, strong, target)``, so a ``DataLoader`` batch is
``(x_weak, x_strong, y)`` with ``x_*`` of shape ``(B, 3, H, W)`` float32 and ``y`` ``(B,)`` int64.

Randomness follows :class:`~cskd_viz.data.CifarDataset`: the dataset owns a generator seeded with
``seed``, re-seeded in a ``DataLoader`` worker from that worker's seed (which the loader's generator
fixes), and pickled with its state. RandAugment draws from torch's global generator, so each item runs
it inside ``torch.random.fork_rng`` seeded from the dataset's generator: the global stream is left
untouched and a seeded loader yields the same batches every time, with or without workers.
"""

from __future__ import annotations

from typing import Any

import torch

from cskd_viz.data import CifarDataset, SeededImages, crop_flip

__all__ = ["TwoViewDataset", "two_view_dataset"]


def _cutout(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Zero one square of side ``H // 2`` centred on a random pixel, clipped at the borders (in place)."""
    h, w = x.shape[1:]
    half = (h // 2) // 2
    cy, cx = divmod(int(torch.randint(0, h * w, (1,), generator=generator)), w)
    x[:, max(cy - half, 0) : min(cy + half, h), max(cx - half, 0) : min(cx + half, w)] = 0
    return x


class TwoViewDataset(SeededImages):
    """``(weak, strong, target)`` items from uint8 images ``(N, C, H, W)`` (see the module docstring).

    Args:
        images: ``(N, C, H, W)`` uint8 images.
        targets: ``(N,)`` integer labels.
        mean, std: per-channel statistics of the standardisation (``C`` entries each, ``std > 0``).
        seed: seeds the dataset's generator (all crops, flips, RandAugment draws and Cutout squares).
        padding: zero padding of the random crops.
        num_ops, magnitude: RandAugment's number of operations per image and their magnitude (of 31 bins).
        cutout: apply Cutout to the strong view.
        shared_crop: build the strong view on the weak view's crop + flip (default); ``False``: its own draw.

    Example:
        >>> ds = TwoViewDataset(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.arange(2), (0.5,) * 3, (0.5,) * 3)
        >>> weak, strong, y = ds[1]
        >>> weak.shape, strong.shape, int(y)
        (torch.Size([3, 32, 32]), torch.Size([3, 32, 32]), 1)
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        seed: int = 0,
        *,
        padding: int = 4,
        num_ops: int = 2,
        magnitude: int = 10,
        cutout: bool = True,
        shared_crop: bool = True,
    ) -> None:
        from torchvision.transforms import v2

        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {getattr(images, 'dtype', images)!r}")
        if not isinstance(targets, torch.Tensor) or targets.shape != (len(images),):
            raise ValueError(f"targets must be a ({len(images)},) tensor, got {getattr(targets, 'shape', targets)!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        super().__init__(images, targets, mean, std, seed, padding)
        self.cutout, self.shared_crop = bool(cutout), bool(shared_crop)
        self.randaugment = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)

    @property
    def augmented(self) -> bool:
        """Always ``True``: both views are random (a teacher's logits differ from step to step)."""
        return True

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gen = self._rng()
        img = self.images[index]
        weak = crop_flip(img, self.padding, gen)
        base = weak if self.shared_crop else crop_flip(img, self.padding, gen)
        augment_seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        with torch.random.fork_rng(devices=[]):  # RandAugment draws from the global generator
            torch.manual_seed(augment_seed)
            strong = self._standardise(self.randaugment(base))
        if self.cutout:
            strong = _cutout(strong, gen)
        return self._standardise(weak), strong, self.targets[index]


def two_view_dataset(dataset: Any, seed: int | None = None, **options: Any) -> TwoViewDataset:
    """Wrap a CIFAR training set (:class:`cskd_viz.data.CifarDataset`) so it yields ``(weak, strong, target)``.

    The wrapper reads the dataset's stored uint8 images, labels, statistics and crop padding; the
    dataset's own augmentation is not used (the weak view replaces it).

    Args:
        dataset: a ``CifarDataset`` (what :func:`cskd_viz.data.cifar100` returns as its training set).
        seed: seeds the views; ``None``: derived from the dataset's augmentation seed (so the run's
            ``seed`` decides it), different from it.
        **options: :class:`TwoViewDataset` keyword arguments (``num_ops``, ``magnitude``, ``cutout``,
            ``shared_crop``).

    Raises:
        TypeError: ``dataset`` holds no uint8 CIFAR images (e.g. digits, or an already-wrapped set).

    Example:
        >>> from cskd_viz.data import CifarDataset
        >>> base = CifarDataset(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.arange(4), (0.5,) * 3, (0.5,) * 3)
        >>> x_weak, x_strong, y = next(iter(torch.utils.data.DataLoader(two_view_dataset(base, seed=0), batch_size=4)))
        >>> x_weak.shape, x_strong.shape, y.shape
        (torch.Size([4, 3, 32, 32]), torch.Size([4, 3, 32, 32]), torch.Size([4]))
    """
    if not isinstance(dataset, CifarDataset):
        raise TypeError(
            "two_view_dataset needs a CIFAR training set (cskd_viz.data.CifarDataset, uint8 images "
            f"(N, 3, H, W)), got {type(dataset).__name__}: the two-view method 'cskd_published' trains on "
            "cifar10 / cifar100 only"
        )
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(dataset.seed)))
    mean = tuple(dataset.mean.flatten().tolist())
    std = tuple(dataset.std.flatten().tolist())
    options.setdefault("padding", dataset.padding)
    return TwoViewDataset(dataset.images, dataset.targets, mean, std, seed, **options)
