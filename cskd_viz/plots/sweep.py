"""Sweeps and searches: mean with 95% confidence bands per grid point; best-so-far and importances of a search."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cskd_viz.plots._common import _figure_and_ax, _figure_and_axes, _label, _no_data, _require_frame, palette

__all__ = ["plot_sweep"]

_SWEEP_LABELS = {
    "final_accuracy": "test accuracy (final)",
    "best_accuracy": "test accuracy (best epoch)",
    "final_agreement": "top-1 agreement with teacher",
    "final_cosine_distance": "cosine distance d(T) (final)",
}
_STAT_COLUMNS = ("metric", "n", "mean", "std", "sem", "ci_low", "ci_high", "n_failed")


def _metric_label(metric: str) -> str:
    return _SWEEP_LABELS.get(metric, _label(metric))


def _pick_metric(summary: pd.DataFrame, metric: str | None) -> tuple[pd.DataFrame, str]:
    metrics = list(dict.fromkeys(summary["metric"]))
    if metric is None:
        if len(metrics) != 1:
            raise ValueError(f"summary holds several metrics {metrics}: choose one with metric=")
        metric = metrics[0]
    if metric not in metrics:
        raise ValueError(f"metric {metric!r} is not in the summary; it has {metrics}")
    return summary[summary["metric"] == metric], metric


def _positions(values: pd.Series) -> tuple[np.ndarray, list | None, bool]:
    """x positions, tick labels (categorical x) and whether a log2 axis suits (positive, >= 8x range)."""
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric:
        labels = list(dict.fromkeys(values.astype(str)))
        return values.astype(str).map(labels.index).to_numpy(float), labels, False
    x = values.to_numpy(float)
    return x, None, bool((x > 0).all() and x.max() / x.min() >= 8)


def _draw_lines(ax: Axes, part: pd.DataFrame, x: str, hue: str | None, metric: str) -> None:
    xs, labels, log = _positions(part[x])
    part = part.assign(_x=xs)
    groups = list(part.groupby(hue, dropna=False, sort=False)) if hue else [(None, part)]
    for colour, (name, rows) in zip(palette(len(groups)), groups, strict=True):
        rows = rows.sort_values("_x")
        label = f"{hue}={name}" if hue else metric
        ax.plot(rows["_x"], rows["mean"], marker="o", color=colour, label=label)
        band = rows["ci_low"].notna()
        if band.any():
            ax.fill_between(rows["_x"][band], rows["ci_low"][band], rows["ci_high"][band], color=colour, alpha=0.2)
    if labels is not None:
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
    elif log:
        ax.set_xscale("log", base=2)
        ticks = sorted(set(xs))
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
    if hue:
        ax.legend(title=None, fontsize="small")


def _plot_summary(summary: pd.DataFrame, x: str, hue: str | None, metric: str | None, ax: Any,
                  figsize: tuple[float, float]) -> Figure:  # fmt: skip
    summary = _require_frame(summary, ["metric", "mean", "ci_low", "ci_high", "n"], "summary")
    if x is None or x not in summary.columns:
        keys = [c for c in summary.columns if c not in _STAT_COLUMNS]
        raise ValueError(f"x must be a grid column of the summary, one of {keys}; got {x!r}")
    if hue is not None and hue not in summary.columns:
        raise ValueError(f"hue {hue!r} is not a column of the summary")
    part, metric = _pick_metric(summary, metric)
    keys = [x] + ([hue] if hue else [])
    if part.duplicated(keys).any():
        others = [c for c in part.columns if c not in (*_STAT_COLUMNS, *keys)]
        raise ValueError(
            f"summary has several rows per {keys}: summarise with by={keys} or filter it on {others} first"
        )
    fig, ax = _figure_and_ax(ax, figsize)
    if part["mean"].notna().any():
        _draw_lines(ax, part, x, hue, metric)
    else:
        _no_data(ax, "no complete trial")
    n = part["n"].dropna()
    seeds = f"n = {int(n.min())}" if len(n) and n.min() == n.max() else f"n = {int(n.min())}-{int(n.max())}"
    ax.set_title(f"{_metric_label(metric)} vs {x} (mean, 95% CI; {seeds if len(n) else 'n = 0'})")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(_metric_label(metric))
    failed = int(part["n_failed"].sum()) if "n_failed" in part else 0
    if failed:
        ax.text(0.01, 0.01, f"{failed} failed point(s) left out", transform=ax.transAxes, fontsize="small")
    return fig


def _plot_search(result: Any, x: str | None, ax: Any, figsize: tuple[float, float]) -> Figure:
    """Best-so-far curve, parameter importances and (with ``x``) the objective against one field."""
    n = 3 if x is not None else 2
    fig, axes = _figure_and_axes(ax, n, figsize)
    objective = _metric_label(result.plan.objective)
    curve = result.best_so_far()
    if len(curve):
        axes[0].scatter(curve["trial"], curve["value"], s=14, color="0.55", label="trial")
        axes[0].step(curve["trial"], curve["best"], where="post", color=palette(1)[0], label="best so far")
        axes[0].legend(fontsize="small")
    else:
        _no_data(axes[0], "no complete trial")
    axes[0].set(title=f"search: best {objective} so far", xlabel="trial", ylabel=objective)
    importances = result.importances()
    if len(importances):
        order = importances.sort_values()
        axes[1].barh([name.replace("_", " ") for name in order.index], order.to_numpy(), color=palette(1)[0])
    else:
        _no_data(axes[1], "importances need 2+ complete trials")
    axes[1].set(title="parameter importance (Optuna)", xlabel="importance", ylabel="field")
    if x is not None:
        frame = result.frame()
        if x not in frame.columns:
            raise ValueError(f"x must be a field of the search, one of {result.keys}; got {x!r}")
        done = frame[frame["state"] == "COMPLETE"]
        axes[2].scatter(done[x], done["value"], s=18, color=palette(1)[0])
        axes[2].set(title=f"{objective} vs {x}", xlabel=x.replace("_", " "), ylabel=objective)
    return fig


def plot_sweep(
    summary: Any,
    x: str | None = None,
    hue: str | None = None,
    metric: str | None = None,
    ax: Any = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Mean of ``metric`` against ``x`` (one line per ``hue`` value) with 95% confidence bands.

    Args:
        summary: a frame of :meth:`cskd_viz.experiments.Sweep.summary` (columns ``<grid fields>...,
            metric, n, mean, std, sem, ci_low, ci_high, n_failed``), or a ``Sweep``. A sweep is
            summarised by ``[x, hue]``; a *search* gives a figure of its best-so-far curve and
            Optuna's parameter importances (and, with ``x``, the objective against ``x``).
        x, hue: grid fields for the x axis and the line colour. Numeric ``x`` spanning 8x or more is
            drawn on a log2 axis; any other ``x`` is categorical.
        metric: the metric to draw (needed when the summary holds several).
        ax: an Axes to draw on (for a search: a sequence of 2 or 3).
        figsize: inches (default ``(6, 4)``; a search ``(11, 3.8)`` or ``(15, 3.8)``).

    Returns:
        The figure. Bands are missing where a point has fewer than 2 complete seeds.
    """
    if hasattr(summary, "plan") and hasattr(summary, "summary"):
        if summary.kind == "search":
            return _plot_search(summary, x, ax, figsize or ((15, 3.8) if x else (11, 3.8)))
        by = [k for k in (x, hue) if k is not None]
        metrics = [metric] if metric else ["best_accuracy"]
        summary = summary.summary(by=by, metrics=metrics)
    return _plot_summary(summary, x, hue, metric, ax, figsize or (6, 4))
