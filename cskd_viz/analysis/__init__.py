"""Analyse checkpoints you already have: where does each student lag its teacher, class by class?

Two steps, both from plain tensors:

1. :func:`predict_logits` runs a model over a dataset once (eval mode, ``no_grad``) and returns
   ``(logits (N, C), targets (N,))``, optionally through an on-disk cache that is keyed by the
   model's weights and the dataset's identity and is verified before it is trusted.
2. :func:`compare` measures every student against the teacher from those logits alone and returns
   a :class:`DistillationReport`: tidy pandas frames (``summary``, ``per_class``, ``per_sample``,
   ``confusion``, ``calibration``), ``figures()`` and a parquet round trip.

``import cskd_viz.analysis`` is light: torch, pandas and matplotlib load only when a function is used.

Example:
    >>> import torch
    >>> from cskd_viz.analysis import compare
    >>> g = torch.Generator().manual_seed(0)
    >>> teacher = torch.randn(32, 4, generator=g)
    >>> report = compare(teacher, {"kd": teacher + 0.5 * torch.randn(32, 4, generator=g)},
    ...                  torch.randint(0, 4, (32,), generator=g), batch_size=8)
    >>> list(report.summary["student"]), len(report.per_class)
    (['kd'], 4)
"""

from __future__ import annotations

import importlib

__all__ = ["predict_logits", "compare", "DistillationReport"]

_WHERE = {"predict_logits": "predict", "compare": "comparison", "DistillationReport": "report"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"cskd_viz.analysis.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
