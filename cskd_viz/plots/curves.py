"""Learning and agreement curves of one or several runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cskd_viz.plots._common import _figure_and_ax, _label, _no_data, _require_frame, human_count, palette

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
    if x == "step":  # 150k, not 150000: labels that never collide on long runs
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(human_count))
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
