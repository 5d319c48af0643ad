"""Shared pieces of the figures: palette, figure and axes helpers, labels, checks of input frames."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

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
    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return ax.figure, ax


def _figure_and_axes(ax: Any, n: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, list[Axes]]:
    """``n`` axes side by side, new or given (``ax``: a sequence of ``n`` Axes, or one Axes when ``n == 1``)."""
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


def _cosine_matrix(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.pivot_table(index="class", columns="step", values="cosine", aggfunc="mean").sort_index(axis=0)


def _draw_heatmap(ax: Axes, matrix: pd.DataFrame, vmin: float, vmax: float, cmap: str):
    steps = matrix.columns.to_numpy(dtype=float)
    classes = matrix.index.to_numpy(dtype=float)
    mesh = ax.pcolormesh(
        _cell_edges(steps),
        _cell_edges(classes),
        np.ma.masked_invalid(matrix.to_numpy(dtype=float)),
        vmin=vmin,
        vmax=vmax,
        cmap=cmap,
        shading="flat",
    )
    if len(classes) <= 20:
        ax.set_yticks(classes)
        ax.set_yticklabels([str(int(c)) for c in classes])
    ax.set_xlabel("step")
    ax.set_ylabel("class")
    return mesh
