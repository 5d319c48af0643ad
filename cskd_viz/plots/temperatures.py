"""CSWT temperatures: the trace of their quantiles, their histogram and the cosine-to-temperature mapping."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cskd_viz import losses
from cskd_viz._validation import check_temperature_range, check_temperature_value
from cskd_viz.plots._common import _as_1d_array, _figure_and_ax, _no_data, _require_frame, palette

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
    if temperature is not None:  # before a figure exists
        temperature = check_temperature_value(temperature, "temperature")
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
        ax.axhline(temperature, color=colors[2], linestyle="--", linewidth=1.2, label=f"fixed T = {temperature:g}")
    top = max(t_high, temperature or t_high)
    ax.set_ylim(max(0.0, t_low - 0.1 * (top - t_low) - 0.5), top + 0.1 * (top - t_low) + 0.5)
    ax.legend(loc="best", fontsize=8)
    return fig
