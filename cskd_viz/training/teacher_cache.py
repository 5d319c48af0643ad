"""The teacher-logit cache: teacher logits computed once per training set and looked up by sample index.

When the training data has no random augmentation, the teacher's logits for a sample never
change, so they are computed once for the whole training set (teacher in ``eval()`` mode,
``no_grad``) and looked up by sample index afterwards; later epochs never run the teacher. The
training loader is rebuilt around an :class:`IndexedDataset` with the *same* sampler and
generator, so the batches and their order are exactly those of the original loader.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from cskd_viz.distributed import loader_options

__all__ = ["IndexedDataset", "with_indices", "TeacherLogitCache", "data_augmented"]


class IndexedDataset(Dataset):
    """Wrap a dataset so items become ``(x, y, index)``: the key of the teacher-logit cache.

    Example:
        >>> ds = IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 0])))
        >>> ds[2][2], len(ds)
        (2, 3)
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index][:2]
        return x, y, index


def with_indices(loader: DataLoader) -> DataLoader:
    """The same loader (same sampler, generator, batch size, collate) over an :class:`IndexedDataset`.

    Iterating it yields ``(x, y, idx)`` batches with exactly the samples, in exactly the order,
    that iterating ``loader`` would have produced (they share the sampler and its generator).

    Example:
        >>> from cskd_viz.data import make_loaders
        >>> train, _, _ = make_loaders("synthetic", batch_size=8, seed=0)
        >>> x, y, idx = next(iter(with_indices(train)))
        >>> idx.shape
        torch.Size([8])
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(f"loader must be a torch DataLoader, got {type(loader).__name__}")
    common = loader_options(loader)
    dataset = IndexedDataset(loader.dataset)
    if loader.batch_size is None:  # a custom batch_sampler
        return DataLoader(dataset, batch_sampler=loader.batch_sampler, **common)
    return DataLoader(
        dataset, batch_size=loader.batch_size, sampler=loader.sampler, drop_last=loader.drop_last, **common
    )


class TeacherLogitCache:
    """Teacher logits for every training sample, computed once, looked up by sample index.

    Args:
        logits: ``(N, C)`` logits, row ``i`` for dataset item ``i``.

    Example:
        >>> data = TensorDataset(torch.randn(10, 4), torch.zeros(10, dtype=torch.long))
        >>> teacher = nn.Linear(4, 3)
        >>> cache = TeacherLogitCache.build(teacher, data, batch_size=4)
        >>> torch.allclose(cache[torch.tensor([7, 2])], teacher(data.tensors[0][[7, 2]]), atol=1e-6)
        True
    """

    def __init__(self, logits: Tensor) -> None:
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise ValueError("logits must be a (N, C) tensor")
        self.logits = logits

    @classmethod
    @torch.no_grad()
    def build(
        cls, teacher: nn.Module, dataset: Dataset, device: str | torch.device = "cpu", batch_size: int = 512
    ) -> TeacherLogitCache:
        """Run ``teacher`` (in ``eval()`` mode, ``no_grad``) over ``dataset`` in index order."""
        was_training = teacher.training
        teacher.eval()
        device = torch.device(device)
        chunks = []
        try:
            for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                chunks.append(teacher(batch[0].to(device, non_blocking=True)).detach())
        finally:
            teacher.train(was_training)
        if not chunks:
            raise ValueError("dataset is empty: nothing to cache")
        return cls(torch.cat(chunks))

    def __len__(self) -> int:
        return self.logits.shape[0]

    def __getitem__(self, index: Tensor) -> Tensor:
        return self.logits[index.to(self.logits.device, non_blocking=True)]


def data_augmented(train_loader: DataLoader, info: Any) -> bool | None:
    """True/False when known (``info.augmented``, a dataset's ``augmented`` flag, a TensorDataset)."""
    if info is not None and getattr(info, "augmented", None) is not None:
        return bool(info.augmented)
    dataset = getattr(train_loader, "dataset", None)
    if getattr(dataset, "augmented", None) is not None:
        return bool(dataset.augmented)
    if isinstance(dataset, TensorDataset):
        return False
    return None
