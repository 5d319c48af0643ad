"""The trainer's support for two-view methods (``Method.two_views``, e.g. ``cskd_published``).

Such a method is called as ``method(student_weak, teacher_weak, targets, strong=(student_strong,
teacher_strong))``. The trainer then:

- wraps the training set with :func:`cskd_viz.views.two_view_dataset` (same sampler, generator,
  batch size and workers), so a batch is ``(x_weak, x_strong, y)``; a loader whose dataset already
  yields two views (a :class:`~cskd_viz.views.TwoViewDataset`) is used as it is;
- runs the student on both views through one :class:`TwoViewModel` call (one forward of the
  DDP-wrapped module per step, each view its own batch-norm statistics), and the frozen teacher on
  both under ``no_grad``;
- keeps the teacher-logit cache off: the strong view is drawn afresh every epoch, so teacher logits
  computed once would be wrong (``cache_teacher=True`` is refused, saying so);
- records the weak view in the diagnostics (agreement, per-class cosine, temperatures) and every
  ``loss_*`` term the method returns (``loss_cc``, ``loss_bc``) in the steps frame.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.utils.data import DataLoader

__all__ = ["TwoViewModel", "two_view_loader", "check_cache"]


class TwoViewModel(nn.Module):
    """``model`` applied to two batches in one call: ``(model(x_weak), model(x_strong))``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_weak: Tensor, x_strong: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(x_weak), self.model(x_strong)


def two_view_loader(loader: DataLoader) -> DataLoader:
    """``loader`` over the two-view wrapper of its dataset (unchanged when it already yields two views)."""
    from cskd_viz.distributed import loader_options
    from cskd_viz.views import TwoViewDataset, two_view_dataset

    if isinstance(loader.dataset, TwoViewDataset):
        return loader
    dataset = two_view_dataset(loader.dataset)
    common = loader_options(loader)
    if loader.batch_size is None:  # a custom batch_sampler
        return DataLoader(dataset, batch_sampler=loader.batch_sampler, **common)
    return DataLoader(
        dataset, batch_size=loader.batch_size, sampler=loader.sampler, drop_last=loader.drop_last, **common
    )


def check_cache(method: Any, cache_teacher: bool | None) -> None:
    """Refuse ``cache_teacher=True`` for a two-view method, saying why."""
    if cache_teacher:
        raise ValueError(
            f"cache_teacher=True cannot be used with the two-view method {method.name!r}: its strong view is "
            "augmented afresh every epoch, so teacher logits computed once would be wrong (leave cache_teacher unset)"
        )
