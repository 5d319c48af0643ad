"""Shared pieces of the figures: palette, figure and axes helpers, labels, checks of input frames."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cskd_viz._validation import check_figure_size

SEQUENTIAL_CMAP = "viridis"

_METRIC_LABELS = {
    "accuracy": "test accuracy",
    "agreement": "top-1 agreement with teacher",
    "loss": "test cross-entropy",
    "cosine_distance": "cosine distance d(T)",
    "teacher_accuracy": "teacher accuracy",
    "train_accuracy": "train accuracy (batch)",
    "mean_temperature": "mean CSWT temperature",
    "class_cosine_std": "std of per-class cosine",
    "kd_loss": "KD loss",
    "cskd_loss": "CSKD loss",
    "mean_kl": "mean KL",
    "mean_sample_cosine_distance": "1 - mean per-sample cosine",
}


# ----------------------------------------------------------------------------- helpers


def palette(n: int) -> list[tuple[float, float, float]]:
    """``n`` colours from seaborn's colour-blind-safe ``"colorblind"`` palette (cycled if ``n > 10``).

    Example:
        >>> len(palette(3))
        3
    """
    import seaborn as sns

    return list(sns.color_palette("colorblind", max(int(n), 1)))[: max(int(n), 1)]


def _figure_and_ax(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    check_figure_size(figsize)  # the one check of figure sizes for the plots (positive, finite inches)
    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return ax.figure, ax


def _figure_and_axes(ax: Any, n: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, list[Axes]]:
    """``n`` axes side by side, new or given (``ax``: a sequence of ``n`` Axes, or one Axes when ``n == 1``)."""
    check_figure_size(figsize)
    if ax is None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, n, figsize=figsize, squeeze=False, layout="constrained", **kwargs)
        return fig, list(axes[0])
    axes = [ax] if isinstance(ax, Axes) else list(ax)
    if len(axes) != n or not all(isinstance(a, Axes) for a in axes):
        raise ValueError(f"ax must be None or a sequence of {n} matplotlib Axes, got {ax!r}")
    return axes[0].figure, axes


def _require_frame(frame: Any, columns: Sequence[str], name: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing columns {missing}; it has {list(frame.columns)}")
    return frame


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _label(metric: str) -> str:
    return _METRIC_LABELS.get(metric, metric.replace("_", " "))


def _cell_edges(values: np.ndarray) -> np.ndarray:
    """Edges around sorted cell centres (midpoints inside, half a gap outside)."""
    values = np.asarray(values, dtype=float)
    if values.size == 1:
        return np.array([values[0] - 0.5, values[0] + 0.5])
    mid = (values[1:] + values[:-1]) / 2
    return np.concatenate([[values[0] - (mid[0] - values[0])], mid, [values[-1] + (values[-1] - mid[-1])]])


def _as_1d_array(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array (B,), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


# ----------------------------------------------------------------------------- per-class cosine heatmaps


MAX_HEATMAP_COLUMNS = 600  # about an axes' width in pixels: more columns than that cannot be seen


def human_count(value: float, _position: Any = None) -> str:
    """A tick label for a step count: ``950``, ``15k``, ``150k``, ``1.2M``.

    Example:
        >>> [human_count(v) for v in (950, 15000, 150000, 1200000)]
        ['950', '15k', '150k', '1.2M']
    """
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            text = f"{value / scale:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:g}"


def _cosine_matrix(frame: pd.DataFrame, max_columns: int = MAX_HEATMAP_COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """``(C, T')`` cosines (classes x time bins) and the ``(T' + 1,)`` step edges of the bins.

    A run's frame is a complete grid in step-major order, so it is a reshape; anything else goes
    through a pivot. Time is binned to at most ``max_columns`` columns, each the mean of its steps.
    """
    steps = frame["step"].to_numpy()
    classes = frame["class"].to_numpy()
    n_classes = int(classes.max()) + 1 if len(classes) else 0
    grid = len(frame) % max(n_classes, 1) == 0 and np.array_equal(
        classes, np.tile(np.arange(n_classes), len(frame) // max(n_classes, 1))
    )
    if grid:
        matrix = frame["cosine"].to_numpy(dtype=float).reshape(-1, n_classes).T
        step_values = steps[::n_classes].astype(float)
    else:
        pivot = frame.pivot_table(index="class", columns="step", values="cosine", aggfunc="mean")
        pivot = pivot.reindex(range(n_classes))
        matrix, step_values = pivot.to_numpy(dtype=float), pivot.columns.to_numpy(dtype=float)
    order = np.argsort(step_values, kind="stable")
    matrix, step_values = matrix[:, order], step_values[order]
    if matrix.shape[1] > max_columns:
        starts = np.linspace(0, matrix.shape[1], max_columns + 1).astype(int)[:-1]
        with np.errstate(invalid="ignore"):
            sums = np.add.reduceat(np.nan_to_num(matrix), starts, axis=1)
            counts = np.add.reduceat(np.isfinite(matrix).astype(float), starts, axis=1)
            matrix = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        edges = np.append(step_values[starts], step_values[-1])
    else:
        edges = _cell_edges(step_values)
    return matrix, edges


def _draw_heatmap(ax: Axes, matrix: np.ndarray, edges: np.ndarray, vmin: float, vmax: float, cmap: str,
                  labels: list[str] | None = None):  # fmt: skip
    """``imshow`` of a ``(C, T)`` matrix over the step range; readable ticks whatever the size."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    rows = matrix.shape[0]
    image = ax.imshow(
        np.ma.masked_invalid(matrix), aspect="auto", origin="lower", interpolation="nearest",
        extent=(edges[0], edges[-1], -0.5, rows - 0.5), vmin=vmin, vmax=vmax, cmap=cmap,
    )  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(human_count))
    if labels is not None and rows <= 40:
        ax.set_yticks(range(rows))
        ax.set_yticklabels(labels, fontsize=8 if rows > 20 else None)
    elif rows <= 20:
        ax.set_yticks(range(rows))
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("class")
    return image
