"""How the batch size changes CSKD's batch cosine distance on fixed logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cskd_viz import diagnostics, losses
from cskd_viz._validation import MIN_CSKD_BATCH, check_pair, check_temperature_value

if TYPE_CHECKING:
    from torch import Tensor

from cskd_viz.plots._common import _figure_and_axes, _label, _require_frame, palette

# ----------------------------------------------------------------------------- batch-size effect


def batch_size_effect_frame(
    student_logits: Tensor,
    teacher_logits: Tensor,
    batch_sizes: Sequence[int],
    temperature: float = 4.0,
    repeats: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """How CSKD's batch quantities change with the batch size, on fixed logits.

    For every ``b`` in ``batch_sizes`` and every repeat, draw ``b`` of the ``N`` rows without
    replacement (seeded) and compute on that sub-batch:
    ``cosine_distance`` ``d(T) = 1 - mean_j c_j(T)``, ``class_cosine_std`` (population std of the
    per-class cosines ``c_j`` across classes), ``class_cosine_min`` and, for contrast,
    ``kd_loss`` (a per-sample mean: its expectation does not depend on ``b``). Sizes start at 2:
    at ``b = 1`` every column has one entry, so every ``c_j = 1`` and ``d = 0`` whatever the logits
    (the losses refuse such a batch).

    Args:
        student_logits: ``(N, C)`` logits to sample from.
        teacher_logits: ``(N, C)``.
        batch_sizes: sub-batch sizes, each in ``[2, N]``.
        temperature: ``T`` in ``[1e-3, 1e3]``.
        repeats: random sub-batches per size (``>= 1``).
        seed: seed of the sub-batch draws.

    Returns:
        A tidy frame, one row per (``batch_size``, ``repeat``).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> s, t = torch.randn(64, 10, generator=g), torch.randn(64, 10, generator=g)
        >>> f = batch_size_effect_frame(s, t, [2, 8, 64], repeats=3)
        >>> sorted(f["batch_size"].unique().tolist()), len(f)
        ([2, 8, 64], 9)
    """
    check_pair(student_logits, teacher_logits)
    temperature = check_temperature_value(temperature, "temperature")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    n = student_logits.shape[0]
    sizes = list(batch_sizes) if not isinstance(batch_sizes, (int, str)) else None
    if not sizes:
        raise ValueError(f"batch_sizes must be a non-empty sequence of ints, got {batch_sizes!r}")
    for b in sizes:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not MIN_CSKD_BATCH <= b <= n:
            raise ValueError(
                f"batch_sizes must hold ints in [{MIN_CSKD_BATCH}, {n}] (the number of logit rows; a batch of one "
                f"has every per-class cosine 1 trivially), got {b!r}"
            )
    generator = torch.Generator().manual_seed(int(seed))
    student = student_logits.detach().cpu()
    teacher = teacher_logits.detach().cpu()
    rows = []
    with torch.no_grad():
        for b in sizes:
            for r in range(repeats):
                index = torch.randperm(n, generator=generator)[: int(b)]
                s, t = student[index], teacher[index]
                cosines = diagnostics.per_class_cosine(s, t, temperature).to(torch.float64)
                rows.append(
                    {
                        "batch_size": int(b),
                        "repeat": r,
                        "cosine_distance": float(1.0 - cosines.mean()),
                        "class_cosine_std": float(cosines.std(correction=0)),
                        "class_cosine_min": float(cosines.min()),
                        "kd_loss": float(losses.kd_loss(s, t, temperature)),
                    }
                )
    return pd.DataFrame(rows)


def plot_batch_size_frame(
    frame: pd.DataFrame,
    ax: Sequence[Axes] | None = None,
    title: str | None = None,
    *,
    metrics: Sequence[str] = ("cosine_distance", "class_cosine_std"),
    band: tuple[float, float] = (0.1, 0.9),
) -> Figure:
    """Plot a :func:`batch_size_effect_frame`: per metric, the mean over repeats and a quantile band.

    Args:
        frame: columns ``batch_size`` and the ``metrics``.
        ax: ``None`` or one Axes per metric.
        title: figure suptitle (default "Batch size changes CSKD's batch cosine").
        metrics: columns to draw, one panel each.
        band: lower and upper quantile of the shaded band across repeats.

    Returns:
        The figure (x-axis: batch size, log2 scale).

    Example:
        >>> import pandas as pd
        >>> f = pd.DataFrame({"batch_size": [1, 4, 4], "cosine_distance": [0.0, 0.1, 0.2],
        ...                   "class_cosine_std": [0.0, 0.05, 0.07]})
        >>> [a.get_xlabel() for a in plot_batch_size_frame(f).axes]
        ['batch size', 'batch size']
        >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one column")
    frame = _require_frame(frame, ["batch_size", *metrics], "frame")
    lo_q, hi_q = band
    if not 0.0 <= lo_q <= hi_q <= 1.0:
        raise ValueError(f"band must be two quantiles 0 <= low <= high <= 1, got {band!r}")
    fig, axes = _figure_and_axes(ax, len(metrics), (4.5 * len(metrics), 3.6))
    colors = palette(len(metrics))
    grouped = frame.groupby("batch_size")
    for axis, metric, color in zip(axes, metrics, colors, strict=True):
        sizes = np.array(sorted(grouped.groups), dtype=float)
        mean = grouped[metric].mean().reindex(sizes).to_numpy(dtype=float)
        low = grouped[metric].quantile(lo_q).reindex(sizes).to_numpy(dtype=float)
        high = grouped[metric].quantile(hi_q).reindex(sizes).to_numpy(dtype=float)
        axis.fill_between(
            sizes, low, high, color=color, alpha=0.25, linewidth=0, label=f"{lo_q:.0%}-{hi_q:.0%} of sub-batches"
        )
        axis.plot(sizes, mean, marker="o", color=color, label="mean over sub-batches")
        if sizes.size and sizes.min() > 0:
            axis.set_xscale("log", base=2)
        axis.set_xlabel("batch size")
        axis.set_ylabel(_label(metric))
        axis.set_title(_label(metric))
        axis.legend(loc="best", fontsize=8)
    fig.suptitle(title if title is not None else "Batch size changes CSKD's batch cosine")
    return fig


def plot_batch_size_effect(
    student_logits: Tensor,
    teacher_logits: Tensor,
    batch_sizes: Sequence[int],
    temperature: float = 4.0,
    repeats: int = 20,
    seed: int = 0,
    ax: Sequence[Axes] | None = None,
    title: str | None = None,
    *,
    metrics: Sequence[str] = ("cosine_distance", "class_cosine_std"),
) -> Figure:
    """``d(T)`` and the per-class cosine spread against batch size, on fixed logits.

    Computes :func:`batch_size_effect_frame` (random sub-batches of the given logits) and plots it
    with :func:`plot_batch_size_frame`; call those two directly to keep the numbers.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> s, t = torch.randn(32, 5, generator=g), torch.randn(32, 5, generator=g)
        >>> fig = plot_batch_size_effect(s, t, [2, 8, 32], repeats=2)
        >>> fig.axes[0].get_ylabel()
        'cosine distance d(T)'
        >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    frame = batch_size_effect_frame(student_logits, teacher_logits, batch_sizes, temperature, repeats, seed)
    default_title = f"Batch size changes CSKD's batch cosine (T = {float(temperature):g}, {repeats} sub-batches each)"
    return plot_batch_size_frame(frame, ax=ax, title=title if title is not None else default_title, metrics=metrics)
