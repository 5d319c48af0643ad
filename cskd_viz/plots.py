"""Figures of CSKD at work: matplotlib (+ seaborn's colour-blind palette), each returning a ``Figure``.

Every function takes plain pandas frames (the :mod:`cskd_viz.runs` schema: ``class_cosine``,
``temperatures``, ``temperature_hist``, ``evals``) or tensors, draws on ``ax`` when given
(else on a new ``pyplot`` figure), titles and labels every axis, and returns the figure. The
library never calls ``plt.show()``; in a notebook, end the cell with ``fig = ...;`` or let the
inline backend show it.

Colour: sequential data uses ``viridis``, categorical data seaborn's ``"colorblind"`` palette;
both are readable with the common forms of colour-vision deficiency.

Example:
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"step": [1, 1, 2, 2], "class": [0, 1, 0, 1], "cosine": [0.9, 0.8, 0.95, 0.85]})
    >>> fig = plot_class_cosine_heatmap(frame)
    >>> fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()
    ('step', 'class')
    >>> import matplotlib.pyplot as plt; plt.close(fig)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cskd_viz import diagnostics, losses
from cskd_viz._validation import check_pair, check_scalar, check_temperature_range

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "palette",
    "plot_class_cosine_heatmap",
    "plot_class_cosine_heatmaps",
    "plot_temperature_trace",
    "plot_temperature_histogram",
    "plot_cswt_mapping",
    "plot_kl_vs_cosine_scatter",
    "plot_kl_vs_cosine_transforms",
    "plot_learning_curves",
    "plot_agreement",
    "batch_size_effect_frame",
    "plot_batch_size_frame",
    "plot_batch_size_effect",
]

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


# ----------------------------------------------------------------------------- CSWT temperatures


def plot_temperature_trace(
    temperatures_frame: pd.DataFrame,
    ax: Axes | None = None,
    title: str | None = None,
    *,
    t_low: float | None = None,
    t_high: float | None = None,
    color: Any = None,
) -> Figure:
    """CSWT temperatures ``T_i`` over training: median with q25-q75 and q05-q95 bands per logged step.

    Args:
        temperatures_frame: ``RunLog.temperatures`` (``step``, ``q05``, ``q25``, ``q50``, ``q75``, ``q95``).
            An empty frame (CSWT off) gives a labelled, empty panel.
        ax: axes to draw on; a new figure when ``None``.
        title: default "CSWT temperatures over training".
        t_low, t_high: draw the configured range as dotted lines.
        color: line/band colour (default: the first colour-blind palette colour).

    Returns:
        The figure.

    Example:
        >>> import pandas as pd
        >>> f = pd.DataFrame({"step": [1, 2], "q05": [2.1, 2.0], "q25": [3, 3], "q50": [4, 4], "q75": [5, 5],
        ...                   "q95": [5.9, 6.0]})
        >>> plot_temperature_trace(f).axes[0].get_ylabel()
        'temperature T_i'
        >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    frame = _require_frame(temperatures_frame, ("step", "q05", "q25", "q50", "q75", "q95"), "temperatures_frame")
    fig, ax = _figure_and_ax(ax, (7.0, 3.5))
    ax.set_title(title if title is not None else "CSWT temperatures over training")
    ax.set_xlabel("step")
    ax.set_ylabel("temperature T_i")
    if frame.empty:
        _no_data(ax, "no CSWT temperatures logged (CSWT off?)")
        return fig
    frame = frame.sort_values("step")
    color = color if color is not None else palette(1)[0]
    step = frame["step"].to_numpy(dtype=float)
    ax.fill_between(step, frame["q05"], frame["q95"], color=color, alpha=0.18, linewidth=0, label="q05-q95")
    ax.fill_between(step, frame["q25"], frame["q75"], color=color, alpha=0.38, linewidth=0, label="q25-q75")
    ax.plot(step, frame["q50"], color=color, linewidth=1.8, label="median")
    for value, name in ((t_low, "T_low"), (t_high, "T_high")):
        if value is not None:
            ax.axhline(value, color="0.35", linestyle=":", linewidth=1.0)
            ax.annotate(name, (0.01, value), xycoords=("axes fraction", "data"), ha="left", va="bottom", fontsize=8)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.08 * (high - low))
    ax.legend(loc="best", fontsize=8)
    return fig


def plot_temperature_histogram(
    temperature_hist_frame: pd.DataFrame,
    step: int | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    *,
    color: Any = None,
) -> Figure:
    """Histogram of the CSWT temperatures ``T_i`` of one logged step.

    Args:
        temperature_hist_frame: ``RunLog.temperature_hist`` (``step``, ``bin_left``, ``bin_right``, ``count``).
        step: which logged step (default: the last one).
        ax: axes to draw on; a new figure when ``None``.
        title: default "CSWT temperatures at step N".
        color: bar colour.

    Returns:
        The figure.

    Example:
        >>> import pandas as pd
        >>> f = pd.DataFrame({"step": [3, 3], "bin_left": [2.0, 4.0], "bin_right": [4.0, 6.0], "count": [5, 3]})
        >>> plot_temperature_histogram(f).axes[0].get_title()
        'CSWT temperatures at step 3'
        >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    frame = _require_frame(temperature_hist_frame, ("step", "bin_left", "bin_right", "count"), "temperature_hist_frame")
    fig, ax = _figure_and_ax(ax, (5.0, 3.5))
    ax.set_xlabel("temperature T_i")
    ax.set_ylabel("samples")
    if frame.empty:
        ax.set_title(title if title is not None else "CSWT temperatures")
        _no_data(ax, "no CSWT temperatures logged (CSWT off?)")
        return fig
    steps = frame["step"].unique()
    if step is None:
        step = int(steps.max())
    elif step not in set(steps.tolist()):
        raise ValueError(f"step={step} was not logged; logged steps run from {int(steps.min())} to {int(steps.max())}")
    rows = frame[frame["step"] == step].sort_values("bin_left")
    left = rows["bin_left"].to_numpy(dtype=float)
    width = rows["bin_right"].to_numpy(dtype=float) - left
    color = color if color is not None else palette(1)[0]
    ax.bar(left, rows["count"].to_numpy(dtype=float), width=width, align="edge", color=color, edgecolor="white")
    ax.set_title(title if title is not None else f"CSWT temperatures at step {int(step)}")
    return fig


def plot_cswt_mapping(
    t_low: float = 2.0,
    t_high: float = 6.0,
    cosines: Any = None,
    ax: Axes | None = None,
    title: str | None = None,
    *,
    temperature: float | None = None,
) -> Figure:
    """The CSWT mapping ``s_i -> T_i = T_low + (T_high - T_low) (max s - s_i) / (max s - min s)``.

    Without ``cosines`` the x-axis is the normalised similarity ``(s_i - min s) / (max s - min s)``.
    With a batch's per-sample cosines ``s_i`` (``diagnostics.per_sample_cosine`` at ``T = 1``),
    the line spans that batch's ``[min s, max s]`` and every sample is drawn on it; when all
    ``s_i`` are equal every ``T_i`` is the midpoint ``(T_low + T_high) / 2``.

    Args:
        t_low, t_high: the CSWT range, ``0 < t_low <= t_high``.
        cosines: optional ``(B,)`` per-sample cosines (tensor, array or list).
        ax: axes to draw on; a new figure when ``None``.
        title: default "CSWT mapping: similarity -> temperature".
        temperature: also draw the fixed temperature ``T`` of CSKD's first term.

    Returns:
        The figure.

    Example:
        >>> fig = plot_cswt_mapping(2.0, 6.0, cosines=[0.2, 0.9, 0.5])
        >>> fig.axes[0].get_ylabel()
        'temperature T_i'
        >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    t_low, t_high = check_temperature_range(t_low, t_high)
    fig, ax = _figure_and_ax(ax, (5.0, 3.5))
    colors = palette(3)
    ax.set_title(title if title is not None else "CSWT mapping: similarity -> temperature")
    ax.set_ylabel("temperature T_i")
    if cosines is None:
        ax.plot([0.0, 1.0], [t_high, t_low], color=colors[0], linewidth=2, label="T_i")
        ax.set_xlabel("normalised similarity (s_i - min s) / (max s - min s)")
        ax.set_xlim(-0.02, 1.02)
    else:
        s = _as_1d_array(cosines, "cosines")
        temps = losses._cswt_from_cosines(torch.as_tensor(s, dtype=torch.float64), t_low, t_high).numpy()
        lo, hi = float(s.min()), float(s.max())
        if hi > lo:
            ax.plot([lo, hi], [t_high, t_low], color=colors[0], linewidth=2, label="mapping")
            pad = 0.05 * (hi - lo)
        else:
            ax.axhline((t_low + t_high) / 2, color=colors[0], linewidth=2, label="mapping (no spread: midpoint)")
            pad = 0.05
        ax.scatter(s, temps, s=14, color=colors[1], alpha=0.7, zorder=3, label=f"samples (B={s.size})")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_xlabel("per-sample cosine s_i (T = 1)")
    ax.axhline(t_low, color="0.5", linestyle=":", linewidth=1)
    ax.axhline(t_high, color="0.5", linestyle=":", linewidth=1)
    if temperature is not None:
        temperature = check_scalar(temperature, "temperature")
        ax.axhline(temperature, color=colors[2], linestyle="--", linewidth=1.2, label=f"fixed T = {temperature:g}")
    top = max(t_high, temperature or t_high)
    ax.set_ylim(max(0.0, t_low - 0.1 * (top - t_low) - 0.5), top + 0.1 * (top - t_low) + 0.5)
    ax.legend(loc="best", fontsize=8)
    return fig


# ----------------------------------------------------------------------------- KL vs cosine


def plot_kl_vs_cosine_scatter(
    per_sample_frame: pd.DataFrame,
    ax: Axes | None = None,
    title: str | None = None,
    *,
    temperature: float | None = None,
    log: bool = False,
) -> Figure:
    """Per-sample KL against per-sample cosine distance (from ``KLvsCosine.per_sample()``).

    ``x = 1 - cos(P_s[i], P_t[i])``, ``y = KL(P_t[i] || P_s[i])``, coloured by top-1 agreement
    when a ``top1_agree`` column is present. The legend title gives Spearman's rank correlation:
    where it is below 1 the two measures *order* the samples differently.

    Args:
        per_sample_frame: columns ``kl``, ``cosine_distance`` (and optionally ``top1_agree``).
        ax: axes to draw on; a new figure when ``None``.
        title: default "Per-sample KL vs cosine distance".
        temperature: the temperature the frame was computed at (only for the axis labels).
        log: log-scale both axes (zeros are clipped to the smallest positive value).

    Returns:
        The figure.

    Example:
        >>> import torch
        >>> from cskd_viz.diagnostics import KLvsCosine
        >>> g = torch.Generator().manual_seed(0)
        >>> frame = KLvsCosine(torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)).per_sample()
        >>> plot_kl_vs_cosine_scatter(frame).axes[0].get_ylabel()
        'KL(P_t[i] || P_s[i])'
        >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    frame = _require_frame(per_sample_frame, ("kl", "cosine_distance"), "per_sample_frame")
    fig, ax = _figure_and_ax(ax, (5.0, 4.0))
    suffix = f" (T = {temperature:g})" if temperature is not None else ""
    ax.set_title(title if title is not None else "Per-sample KL vs cosine distance")
    ax.set_xlabel(f"1 - cos(P_s[i], P_t[i]){suffix}")
    ax.set_ylabel("KL(P_t[i] || P_s[i])")
    if frame.empty:
        _no_data(ax, "no samples")
        return fig
    x = frame["cosine_distance"].to_numpy(dtype=float)
    y = frame["kl"].to_numpy(dtype=float)
    colors = palette(2)
    if "top1_agree" in frame.columns:
        agree = frame["top1_agree"].to_numpy(dtype=bool)
        for mask, label, color in ((agree, "top-1 agree", colors[0]), (~agree, "top-1 disagree", colors[1])):
            if mask.any():
                ax.scatter(x[mask], y[mask], s=12, alpha=0.7, color=color, label=label)
    else:
        ax.scatter(x, y, s=12, alpha=0.7, color=colors[0], label="samples")
    if log:
        positive = np.concatenate([x[x > 0], y[y > 0]])
        floor = float(positive.min()) if positive.size else 1e-12
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(left=floor / 2)
        ax.set_ylim(bottom=floor / 2)
    rho = pd.Series(x).rank().corr(pd.Series(y).rank()) if len(x) > 1 else float("nan")
    ax.legend(title=f"Spearman rho = {rho:.3f}", loc="best", fontsize=8, title_fontsize=8)
    return fig


def plot_kl_vs_cosine_transforms(
    frame: pd.DataFrame,
    ax: Axes | Sequence[Axes] | None = None,
    title: str | None = None,
    *,
    measures: Sequence[str] = ("kd_loss", "cskd_loss"),
    normalize: bool = True,
) -> Figure:
    """How KD and CSKD react when the student's logits are scaled or shifted (``KLvsCosine.frame()``).

    One panel per transform (``scale``: ``z_s * a``, log x-axis; ``shift``: ``z_s + b``). With
    ``normalize`` each measure is divided by its maximum over that panel, so curves of different
    magnitude share an axis. Intervals where the first two measures move in *opposite*
    directions are shaded: there the losses disagree about whether the student got closer.

    Args:
        frame: columns ``transform``, ``amount`` and the ``measures``.
        ax: ``None``, or one Axes per transform present in ``frame``.
        title: figure suptitle (default "KD vs CSKD under logit transforms").
        measures: columns to draw (``kd_loss``, ``cskd_loss``, ``mean_kl``, ``cosine_distance`` ...).
        normalize: divide each curve by its maximum over the panel.

    Returns:
        The figure.

    Example:
        >>> import torch
        >>> from cskd_viz.diagnostics import KLvsCosine
        >>> g = torch.Generator().manual_seed(0)
        >>> f = KLvsCosine(torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)).frame()
        >>> [a.get_xlabel() for a in plot_kl_vs_cosine_transforms(f).axes]
        ['scale a (student logits * a)', 'shift b (student logits + b)']
        >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    measures = list(measures)
    if not measures:
        raise ValueError("measures must name at least one column")
    frame = _require_frame(frame, ["transform", "amount", *measures], "frame")
    transforms = [t for t in ("scale", "shift") if (frame["transform"] == t).any()]
    transforms += [t for t in frame["transform"].unique() if t not in transforms]
    if not transforms:
        raise ValueError("frame has no rows")
    fig, axes = _figure_and_axes(ax, len(transforms), (5.0 * len(transforms), 3.8))
    colors = palette(len(measures))
    for axis, transform in zip(axes, transforms, strict=True):
        rows = frame[frame["transform"] == transform].sort_values("amount")
        amount = rows["amount"].to_numpy(dtype=float)
        curves = {}
        for measure, color in zip(measures, colors, strict=True):
            values = rows[measure].to_numpy(dtype=float)
            if normalize:
                peak = np.nanmax(np.abs(values)) if values.size else 0.0
                values = values / peak if peak > 0 else values
            curves[measure] = values
            axis.plot(amount, values, marker="o", color=color, label=_label(measure))
        if len(measures) >= 2 and amount.size >= 2:
            da, db = np.diff(curves[measures[0]]), np.diff(curves[measures[1]])
            tol = 1e-9 * max(1.0, float(np.nanmax(np.abs(np.concatenate([curves[measures[0]], curves[measures[1]]])))))
            disagree = (np.abs(da) > tol) & (np.abs(db) > tol) & (np.sign(da) != np.sign(db))
            for k in np.flatnonzero(disagree):
                axis.axvspan(amount[k], amount[k + 1], color="0.85", zorder=0)
            if disagree.any():
                axis.plot([], [], color="0.85", linewidth=8, label="opposite directions")
        if transform == "scale":
            if (amount > 0).all():
                axis.set_xscale("log", base=2)
            axis.set_xlabel("scale a (student logits * a)")
        elif transform == "shift":
            axis.set_xlabel("shift b (student logits + b)")
        else:
            axis.set_xlabel(f"{transform} amount")
        axis.set_ylabel("loss / max over panel" if normalize else "loss")
        axis.ticklabel_format(axis="y", useOffset=False)
        if normalize:
            low = min(0.0, float(np.nanmin([np.nanmin(v) for v in curves.values()])))
            axis.set_ylim(low - 0.05, 1.08)
        axis.set_title(f"student logits: {transform}")
        axis.legend(loc="best", fontsize=8)
    fig.suptitle(title if title is not None else "KD vs CSKD under logit transforms")
    return fig


# ----------------------------------------------------------------------------- runs: learning curves, agreement


def _long_runs(evals_by_run: Any, name: str, frame_attr: str = "evals") -> pd.DataFrame:
    """A long frame with a ``run`` column from ``{name: frame or RunLog}`` or a frame with ``run``."""
    if isinstance(evals_by_run, pd.DataFrame):
        return _require_frame(evals_by_run, ("run",), name)
    if not isinstance(evals_by_run, Mapping) or not evals_by_run:
        raise TypeError(f"{name} must be a non-empty dict {{run name: frame}} or a DataFrame with a 'run' column")
    parts = []
    for run, value in evals_by_run.items():
        frame = getattr(value, frame_attr, value)
        frame = _require_frame(frame, (), f"{name}[{run!r}]")
        parts.append(frame.assign(run=str(run)))
    return pd.concat(parts, ignore_index=True)


def plot_learning_curves(
    evals_by_run: Mapping[str, pd.DataFrame] | pd.DataFrame,
    metric: str = "accuracy",
    ax: Axes | None = None,
    title: str | None = None,
    *,
    x: str = "epoch",
    smooth: int | None = None,
    show_teacher: bool = True,
) -> Figure:
    """One curve per run of ``metric`` over ``x`` (e.g. test accuracy per epoch).

    Args:
        evals_by_run: ``{run name: RunLog.evals frame (or a RunLog)}`` or one long frame with a ``run``
            column (``runs.stack_runs(logs)``). ``RunLog.steps`` frames work too with ``x="step"``.
        metric: the column to draw (``accuracy``, ``agreement``, ``loss``, ``cosine_distance`` ...).
        ax: axes to draw on; a new figure when ``None``.
        title: default e.g. "Test accuracy".
        x: the x column (``epoch`` or ``step``).
        smooth: rolling-mean window (in rows) for noisy per-step curves.
        show_teacher: for ``metric="accuracy"``, draw the teacher's accuracy (column
            ``teacher_accuracy``) as a dashed line when all runs share one teacher.

    Returns:
        The figure.

    Example:
        >>> import pandas as pd
        >>> e = pd.DataFrame({"epoch": [0, 1], "accuracy": [0.5, 0.8], "agreement": [0.6, 0.9]})
        >>> ax = plot_learning_curves({"kd": e, "cskd": e}).axes[0]
        >>> ax.get_xlabel(), ax.get_ylabel(), [t.get_text() for t in ax.get_legend().get_texts()]
        ('epoch', 'test accuracy', ['kd', 'cskd'])
        >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a column name (str), got {type(metric).__name__}")
    if smooth is not None and (isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1):
        raise ValueError(f"smooth must be None or a positive int, got {smooth!r}")
    long = _long_runs(evals_by_run, "evals_by_run")
    _require_frame(long, ("run", x, metric), "evals_by_run")
    fig, ax = _figure_and_ax(ax, (6.5, 4.0))
    ax.set_title(title if title is not None else _label(metric)[:1].upper() + _label(metric)[1:])
    ax.set_xlabel(x)
    ax.set_ylabel(_label(metric))
    runs = list(dict.fromkeys(long["run"].tolist()))
    colors = palette(len(runs))
    drawn = 0
    for run, color in zip(runs, colors, strict=True):
        rows = long[long["run"] == run].sort_values(x)
        values = rows[metric].astype(float)
        if values.isna().all():
            continue
        if smooth:
            values = values.rolling(smooth, min_periods=1).mean()
        marker = "o" if len(rows) <= 30 else None
        ax.plot(rows[x].to_numpy(dtype=float), values.to_numpy(), marker=marker, color=color, label=str(run))
        drawn += 1
    if show_teacher and metric == "accuracy" and "teacher_accuracy" in long.columns:
        teacher = long.sort_values(x).groupby("run")["teacher_accuracy"].last().dropna().unique()
        if len(teacher) == 1:
            ax.axhline(float(teacher[0]), color="0.3", linestyle="--", linewidth=1.2, label="teacher")
    if x == "epoch":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if drawn == 0:
        _no_data(ax, f"no {metric} values")
    else:
        ax.legend(loc="best", fontsize=8)
    return fig


def plot_agreement(
    evals_by_run: Mapping[str, pd.DataFrame] | pd.DataFrame,
    ax: Axes | None = None,
    title: str | None = None,
    *,
    x: str = "epoch",
    smooth: int | None = None,
) -> Figure:
    """Student-teacher top-1 agreement per run (runs without agreement, e.g. the teacher, are skipped).

    Same inputs as :func:`plot_learning_curves` with ``metric="agreement"``.

    Example:
        >>> import pandas as pd
        >>> e = pd.DataFrame({"epoch": [0, 1], "agreement": [0.6, 0.9]})
        >>> plot_agreement({"kd": e}).axes[0].get_title()
        'Student-teacher top-1 agreement'
        >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    return plot_learning_curves(
        evals_by_run,
        metric="agreement",
        ax=ax,
        title=title if title is not None else "Student-teacher top-1 agreement",
        x=x,
        smooth=smooth,
        show_teacher=False,
    )


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
    ``kd_loss`` (a per-sample mean: its expectation does not depend on ``b``). At ``b = 1`` every
    column has one entry, so every ``c_j = 1`` and ``d = 0``.

    Args:
        student_logits: ``(N, C)`` logits to sample from.
        teacher_logits: ``(N, C)``.
        batch_sizes: sub-batch sizes, each in ``[1, N]``.
        temperature: ``T > 0``.
        repeats: random sub-batches per size (``>= 1``).
        seed: seed of the sub-batch draws.

    Returns:
        A tidy frame, one row per (``batch_size``, ``repeat``).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> s, t = torch.randn(64, 10, generator=g), torch.randn(64, 10, generator=g)
        >>> f = batch_size_effect_frame(s, t, [1, 8, 64], repeats=3)
        >>> f.groupby("batch_size")["cosine_distance"].mean().round(6).tolist()[0]
        0.0
        >>> len(f)
        9
    """
    check_pair(student_logits, teacher_logits)
    temperature = check_scalar(temperature, "temperature")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    n = student_logits.shape[0]
    sizes = list(batch_sizes) if not isinstance(batch_sizes, (int, str)) else None
    if not sizes:
        raise ValueError(f"batch_sizes must be a non-empty sequence of ints, got {batch_sizes!r}")
    for b in sizes:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 1 <= b <= n:
            raise ValueError(f"batch_sizes must hold ints in [1, {n}] (the number of logit rows), got {b!r}")
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
