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


def plot_class_cosine_heatmap(
    class_cosine_frame: pd.DataFrame,
    ax: Axes | None = None,
    title: str | None = None,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = SEQUENTIAL_CMAP,
    colorbar: bool = True,
) -> Figure:
    """Per-class cosine of batch predictions ``c_j = cos(P_s[:, j], P_t[:, j])``: classes x logged steps.

    Args:
        class_cosine_frame: tidy frame with columns ``step``, ``class``, ``cosine`` (``RunLog.class_cosine``).
        ax: axes to draw on; a new figure when ``None``.
        title: figure title (default: "Per-class cosine of batch predictions").
        vmin, vmax: colour scale limits (default: the data's range), so two heatmaps can share one.
        cmap: a sequential colormap (default ``viridis``, colour-blind safe).
        colorbar: add a colour bar labelled ``cos(P_s[:, j], P_t[:, j])``.

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
    matrix = _cosine_matrix(frame)
    values = matrix.to_numpy(dtype=float)
    lo = float(np.nanmin(values)) if vmin is None else vmin
    hi = float(np.nanmax(values)) if vmax is None else vmax
    if hi <= lo:
        lo, hi = lo - 1e-3, hi + 1e-3
    mesh = _draw_heatmap(ax, matrix, lo, hi, cmap)
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
) -> Figure:
    """Several runs' per-class cosine heatmaps side by side, on one shared colour scale.

    Args:
        frames: ``{run name: class_cosine frame}`` (columns ``step``, ``class``, ``cosine``).
        ax: ``None`` or one Axes per run.
        title: figure suptitle (default: "Per-class cosine of batch predictions").
        vmin, vmax: shared colour limits (default: the range over all runs).
        cmap: a sequential colormap.

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
    finite = [m.to_numpy(dtype=float) for m in matrices.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in finite]) if finite else np.array([])
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        lo, hi = lo - 1e-3, hi + 1e-3
    mesh = None
    for axis, name in zip(axes, frames, strict=True):
        axis.set_title(str(name))
        if name in matrices:
            mesh = _draw_heatmap(axis, matrices[name], lo, hi, cmap)
        else:
            axis.set_xlabel("step")
            axis.set_ylabel("class")
            _no_data(axis, "no per-class cosines logged")
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label="cos(P_s[:, j], P_t[:, j])")
    fig.suptitle(title if title is not None else "Per-class cosine of batch predictions")
    return fig
