"""Per-class cosine heatmaps: class x step, one run or several side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cskd_viz.plots._common import (
    SEQUENTIAL_CMAP,
    _cosine_matrix,
    _draw_heatmap,
    _figure_and_ax,
    _figure_and_axes,
    _no_data,
    _require_frame,
)

ORDERS = ("name", "worst_final", "mean")


def _arrangement(matrix: np.ndarray, order: str, top_k: int | None, class_names) -> tuple[np.ndarray, list | None]:
    """Which rows to draw, bottom to top, and their labels (``None``: plain class numbers)."""
    n = matrix.shape[0]
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    names = [str(c) for c in range(n)] if class_names is None else [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"class_names has {len(names)} names for {n} classes")
    finite = np.isfinite(matrix)
    last = np.where(finite.any(1), matrix[np.arange(n), _last_finite_column(finite)], np.inf)
    rows = np.arange(n)
    if order == "worst_final":
        rows = np.argsort(-last, kind="stable")  # lowest on top (the last rows are drawn highest)
    elif order == "mean":
        rows = np.argsort(-np.nanmean(np.where(finite, matrix, np.nan), axis=1), kind="stable")
    if top_k is not None and top_k < n:
        worst = set(np.argsort(last, kind="stable")[:top_k].tolist())
        rows = np.array([r for r in rows if r in worst])
    labelled = class_names is not None or top_k is not None or order != "name"
    return rows, [names[r] for r in rows] if labelled else None


def _last_finite_column(finite: np.ndarray) -> np.ndarray:
    """Per row, the index of its last finite column (0 for rows without any)."""
    reversed_first = np.argmax(finite[:, ::-1], axis=1)
    return finite.shape[1] - 1 - reversed_first


def plot_class_cosine_heatmap(
    class_cosine_frame: pd.DataFrame,
    ax: Axes | None = None,
    title: str | None = None,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = SEQUENTIAL_CMAP,
    colorbar: bool = True,
    order: str = "name",
    top_k: int | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Per-class cosine of batch predictions ``c_j = cos(P_s[:, j], P_t[:, j])``: classes x logged steps.

    Drawn with ``imshow`` from a reshape of the frame (fast at 1000 classes and 100k steps); a long
    run's steps are binned to about the axes' width in pixels, each column the mean of its steps.

    Args:
        class_cosine_frame: tidy frame with columns ``step``, ``class``, ``cosine`` (``RunLog.class_cosine``).
        ax: axes to draw on; a new figure when ``None``.
        title: figure title (default: "Per-class cosine of batch predictions").
        vmin, vmax: colour scale limits (default: the data's range), so two heatmaps can share one.
        cmap: a sequential colormap (default ``viridis``, colour-blind safe).
        colorbar: add a colour bar labelled ``cos(P_s[:, j], P_t[:, j])``.
        order: rows by ``"name"`` (class index), ``"worst_final"`` (lowest final cosine on top) or
            ``"mean"`` (lowest mean cosine on top).
        top_k: show only the ``k`` classes with the lowest final cosine, named on the axis.
        class_names: names of the classes (the run's ``config["class_names"]``), for the labels.

    Returns:
        The figure.

    Example:
        >>> import pandas as pd
        >>> f = pd.DataFrame({"step": [5, 5], "class": [0, 1], "cosine": [0.5, 1.0]})
        >>> plot_class_cosine_heatmap(f, title="run a").axes[0].get_title()
        'run a'
        >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    frame = _require_frame(class_cosine_frame, ("step", "class", "cosine"), "class_cosine_frame")
    fig, ax = _figure_and_ax(ax, (7.0, 4.0))
    ax.set_title(title if title is not None else "Per-class cosine of batch predictions")
    if frame.empty:
        ax.set_xlabel("step")
        ax.set_ylabel("class")
        _no_data(ax, "no per-class cosines logged")
        return fig
    matrix, edges = _cosine_matrix(frame)
    rows, labels = _arrangement(matrix, order, top_k, class_names)
    values = matrix[rows]
    lo = float(np.nanmin(values)) if vmin is None else vmin
    hi = float(np.nanmax(values)) if vmax is None else vmax
    if hi <= lo:
        lo, hi = lo - 1e-3, hi + 1e-3
    mesh = _draw_heatmap(ax, values, edges, lo, hi, cmap, labels)
    if colorbar:
        fig.colorbar(mesh, ax=ax, label="cos(P_s[:, j], P_t[:, j])")
    return fig


def plot_class_cosine_heatmaps(
    frames: Mapping[str, pd.DataFrame],
    ax: Sequence[Axes] | None = None,
    title: str | None = None,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = SEQUENTIAL_CMAP,
    order: str = "name",
    top_k: int | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Several runs' per-class cosine heatmaps side by side, on one shared colour scale.

    Args:
        frames: ``{run name: class_cosine frame}`` (columns ``step``, ``class``, ``cosine``).
        ax: ``None`` or one Axes per run.
        title: figure suptitle (default: "Per-class cosine of batch predictions").
        vmin, vmax: shared colour limits (default: the range over all runs).
        cmap: a sequential colormap.
        order, top_k, class_names: as in :func:`plot_class_cosine_heatmap`; the rows are chosen by
            the first run with data and kept for all, so the panels line up.

    Returns:
        The figure: one panel per run titled by its name, one colour bar.

    Example:
        >>> import pandas as pd
        >>> f = pd.DataFrame({"step": [1, 1], "class": [0, 1], "cosine": [0.7, 0.9]})
        >>> fig = plot_class_cosine_heatmaps({"kd": f, "cskd": f})
        >>> [a.get_title() for a in fig.axes[:2]]
        ['kd', 'cskd']
        >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    if not isinstance(frames, Mapping) or not frames:
        raise ValueError("frames must be a non-empty dict {run name: class_cosine frame}")
    for name, frame in frames.items():
        _require_frame(frame, ("step", "class", "cosine"), f"frames[{name!r}]")
    n = len(frames)
    fig, axes = _figure_and_axes(ax, n, (4.2 * n + 1.0, 4.0), sharey=True)
    matrices = {name: _cosine_matrix(frame) for name, frame in frames.items() if not frame.empty}
    rows, labels = None, None
    if matrices:
        first = next(iter(matrices.values()))[0]
        rows, labels = _arrangement(first, order, top_k, class_names)
        matrices = {name: (m[rows] if m.shape[0] == first.shape[0] else m, e) for name, (m, e) in matrices.items()}
    finite = [m for m, _ in matrices.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in finite]) if finite else np.array([])
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        lo, hi = lo - 1e-3, hi + 1e-3
    mesh = None
    for axis, name in zip(axes, frames, strict=True):
        axis.set_title(str(name))
        if name in matrices:
            matrix, edges = matrices[name]
            mesh = _draw_heatmap(axis, matrix, edges, lo, hi, cmap, labels)
        else:
            axis.set_xlabel("step")
            axis.set_ylabel("class")
            _no_data(axis, "no per-class cosines logged")
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label="cos(P_s[:, j], P_t[:, j])")
    fig.suptitle(title if title is not None else "Per-class cosine of batch predictions")
    return fig
