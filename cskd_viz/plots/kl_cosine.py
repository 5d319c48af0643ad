"""KL versus cosine: per-sample scatter and the effect of logit scaling and shifting."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cskd_viz.plots._common import _figure_and_ax, _figure_and_axes, _label, _no_data, _require_frame, palette

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
