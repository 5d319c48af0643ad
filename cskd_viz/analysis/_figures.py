"""Figures of a :class:`~cskd_viz.analysis.report.DistillationReport`, drawn from its frames alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cskd_viz.plots._common import SEQUENTIAL_CMAP, _figure_and_ax, _figure_and_axes, _no_data, palette

DistillationReport = Any  # cskd_viz.analysis.report.DistillationReport, which imports this module

_PANEL = (4.2, 3.6)


def _panels(n: int, **kwargs) -> tuple[Figure, list]:
    return _figure_and_axes(None, n, (_PANEL[0] * n, _PANEL[1]), **kwargs)


def class_cosine_figure(report: DistillationReport, k: int) -> Figure:
    """One panel per student: ``cosine_epoch`` sorted ascending, the batch-mean reading beside it, ``k`` worst named."""
    students = report.students
    fig, axes = _panels(len(students), sharey=True)
    colors = palette(2)
    temperature = report.settings.get("temperature", float("nan"))
    for ax, name in zip(axes, students, strict=True):
        rows = report.per_class[report.per_class["student"] == name].sort_values("rank")
        rank = rows["rank"].to_numpy()
        style = {"marker": "o", "markersize": 3} if len(rows) <= 60 else {}
        ax.plot(rank, rows["cosine_epoch"], color=colors[0], label="epoch (whole set)", **style)
        ax.plot(rank, rows["cosine_batch_mean"], color=colors[1], linewidth=1, label="mean over batches")
        worst = rows.head(k)
        ax.scatter(worst["rank"], worst["cosine_epoch"], color="black", s=18, zorder=3)
        named = zip(worst["rank"], worst["class_name"], worst["cosine_epoch"], strict=True)
        lines = [f"{rank}. {label} ({value:.3f})" for rank, label, value in named]
        ax.text(0.97, 0.03, "worst:\n" + "\n".join(lines), transform=ax.transAxes, ha="right", va="bottom",
                fontsize=8, bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"})  # fmt: skip
        ax.set_title(name)
        ax.set_xlabel("class rank (1 = worst cosine)")
        ax.set_ylabel(f"c_j(T = {temperature:g})")
        ax.legend(loc="center left", fontsize=8)
    fig.suptitle(f"Per-class cosine of batch predictions, sorted ({k} worst named)")
    return fig


def student_scatter_figure(report: DistillationReport, k: int) -> Figure:
    """Per-class ``cosine_epoch`` of the first student against each other student; ``k`` largest gaps named."""
    first, *others = report.students
    fig, axes = _panels(len(others))
    table = report.per_class.pivot(index="class", columns="student", values="cosine_epoch")
    names = report.per_class.drop_duplicates("class").set_index("class")["class_name"]
    low = float(np.nanmin(table.to_numpy())) if table.size else 0.0
    for ax, other in zip(axes, others, strict=True):
        x, y = table[first], table[other]
        ax.scatter(x, y, s=12, alpha=0.7, color=palette(1)[0])
        ax.plot([low, 1.0], [low, 1.0], color="0.5", linewidth=1, linestyle="--", label="equal cosine")
        for j in (y - x).abs().nlargest(k).index:
            ax.annotate(str(names[j]), (x[j], y[j]), xytext=(3, 3), textcoords="offset points", fontsize=7)
        ax.set_title(f"{other} vs {first}")
        ax.set_xlabel(f"c_j of {first}")
        ax.set_ylabel(f"c_j of {other}")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle("Per-class cosine, student against student (one point per class)")
    return fig


def kl_cosine_figure(report: DistillationReport) -> Figure:
    """One panel per student: hexbin density of per-sample KL against ``1 - s_i`` (log counts)."""
    students = report.students
    fig, axes = _panels(len(students))
    temperature = report.settings.get("temperature", float("nan"))
    for ax, name in zip(axes, students, strict=True):
        rows = report.per_sample[report.per_sample["student"] == name]
        x, y = rows["cosine_distance"].to_numpy(), rows["kl"].to_numpy()
        rho = pd.Series(x).rank().corr(pd.Series(y).rank()) if len(x) > 1 else float("nan")
        if len(x):
            cells = ax.hexbin(x, y, gridsize=40, bins="log", mincnt=1, cmap=SEQUENTIAL_CMAP)
            fig.colorbar(cells, ax=ax, label="samples (log scale)")
        else:
            _no_data(ax, "no samples")
        ax.set_title(f"{name} (Spearman rho = {rho:.3f})")
        ax.set_xlabel("1 - cos(P_s[i], P_t[i]) (T = 1)")
        ax.set_ylabel(f"KL(P_t[i] || P_s[i]) (T = {temperature:g})")
    fig.suptitle("Per-sample KL vs cosine distance: where they disagree")
    return fig


def temperature_figure(report: DistillationReport) -> Figure:
    """Histogram of every student's per-sample CSWT temperatures within the report's batches."""
    settings = report.settings
    fig, ax = _figure_and_ax(None, (5.5, 3.8))
    edges = np.linspace(settings.get("t_low", 2.0), settings.get("t_high", 6.0), 25)
    if edges[0] == edges[-1]:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    for name, color in zip(report.students, palette(len(report.students)), strict=True):
        values = report.per_sample.loc[report.per_sample["student"] == name, "cswt_temperature"].dropna()
        ax.hist(values, bins=edges, histtype="step", linewidth=1.5, color=color, label=name)
    ax.set_title(f"CSWT temperatures in random batches of {settings.get('batch_size')}")
    ax.set_xlabel("CSWT temperature T_i")
    ax.set_ylabel("samples")
    ax.legend(loc="best", fontsize=8)
    return fig


def reliability_figure(report: DistillationReport) -> Figure:
    """Accuracy against mean confidence per bin, teacher and students, each labelled with its ECE."""
    fig, ax = _figure_and_ax(None, (4.8, 4.4))
    frame = report.calibration
    models = list(dict.fromkeys(frame["model"]))
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="perfect calibration")
    for model, color in zip(models, palette(len(models)), strict=True):
        rows = frame[(frame["model"] == model) & (frame["count"] > 0)]
        ece = float((rows["count"] * rows["gap"].abs()).sum() / rows["count"].sum()) if len(rows) else float("nan")
        ax.plot(rows["confidence"], rows["accuracy"], marker="o", markersize=4, color=color,
                label=f"{model} (ECE {ece:.3f})")  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"Reliability diagram ({report.settings.get('ece_bins', 15)} equal-width bins)")
    ax.set_xlabel("confidence (top-1 probability, T = 1)")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def report_figures(report: DistillationReport, *, k: int = 5) -> dict[str, Figure]:
    """Every figure of :meth:`DistillationReport.figures`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int (how many classes to name), got {k!r}")
    figures = {"class_cosine": class_cosine_figure(report, k)}
    if len(report.students) >= 2:
        figures["student_scatter"] = student_scatter_figure(report, k)
    figures["kl_vs_cosine"] = kl_cosine_figure(report)
    figures["cswt_temperatures"] = temperature_figure(report)
    figures["reliability"] = reliability_figure(report)
    return figures
