"""The run browser: overlay the curves of runs under a directory and look at one run's heatmap."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cskd_viz.widgets._common import _Displayable, _new_figure, figure_png

__all__ = ["RunBrowser"]


class RunBrowser(_Displayable):
    """Pick runs under ``runs_dir``, overlay their curves, and look at one run's heatmap.

    The top figure overlays the selected runs' ``metric`` (dropdown) and their top-1 agreement per
    epoch; the bottom one shows the per-class cosine heatmap and the CSWT temperature trace of the
    run chosen in ``heatmap run``. A table summarises the selection (:func:`cskd_viz.runs.compare_runs`).
    A run that cannot be read (a corrupt or malformed file) is left out, with one line naming it and
    the reason in ``message``; the other runs are shown all the same.

    Args:
        runs_dir: the directory holding ``<name>/config.json`` run directories.
        metric: initial curve metric (``accuracy``, ``loss``, ``cosine_distance``, ``agreement``).
        dpi: resolution of the rendered figures.

    Attributes:
        widget, run_select (``SelectMultiple``), metric_dropdown, heatmap_dropdown, refresh_button,
        curves_image, heatmap_image, table (``HTML``), message (``HTML``).
    """

    METRICS = ("accuracy", "agreement", "loss", "cosine_distance")

    def __init__(self, runs_dir: str | Path = "runs", metric: str = "accuracy", *, dpi: float = 72.0) -> None:
        import ipywidgets as widgets

        if metric not in self.METRICS:
            raise ValueError(f"metric must be one of {self.METRICS}, got {metric!r}")
        self.runs_dir = Path(runs_dir)
        self._dpi = dpi
        self._cache: dict[str, tuple[float, Any]] = {}
        self._listed: list[str] = []  # notes of the last scan: the runs list_runs could not read
        self._skipped: dict[str, str] = {}  # path -> why a run was left out while drawing
        self._stamps: tuple | None = None  # none yet: the first refresh always draws
        self._updating = False
        self.run_select = widgets.SelectMultiple(options=[], description="runs", rows=6)
        self.run_select.layout.width = "420px"
        self.metric_dropdown = widgets.Dropdown(options=list(self.METRICS), value=metric, description="metric")
        self.heatmap_dropdown = widgets.Dropdown(options=[], description="heatmap run")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.curves_image = widgets.Image(format="png")
        self.heatmap_image = widgets.Image(format="png")
        self.table = widgets.HTML()
        self.message = widgets.HTML()
        for control, dom_class in ((self.run_select, "cskd-run-select"), (self.table, "cskd-run-table")):
            control.add_class(dom_class)
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.run_select, widgets.VBox([self.metric_dropdown, self.heatmap_dropdown])]),
                self.refresh_button,
                self.message,
                self.table,
                self.curves_image,
                self.heatmap_image,
            ]
        )
        self.widget.add_class("cskd-run-browser")
        self.run_select.observe(self._on_select, names="value")
        self.metric_dropdown.observe(lambda change: self.update(heatmap=False), names="value")
        self.heatmap_dropdown.observe(lambda change: self.update(curves=False), names="value")
        self.refresh_button.on_click(lambda button: self.refresh())
        self.refresh()

    # ------------------------------------------------------------------ data
    def _load(self, path: str) -> Any:
        """The run at ``path`` (cached; refreshed when written since), or ``None`` if it cannot be read."""
        from cskd_viz import runs

        stamp = _stamp(path)
        cached = self._cache.get(path)
        try:
            if cached is None:  # lazy: frames are read when a plot asks for them
                self._cache[path] = (stamp, runs.load_run(path))
            elif cached[0] != stamp:  # written since: read only its new parts
                self._cache[path] = (stamp, cached[1].refresh())
        except runs.RunLogError as err:
            self._skip(path, err)
            return None
        return self._cache[path][1]

    def _skip(self, path: str, err: Exception) -> None:
        """Leave a run out of the drawing, with one line in ``message`` saying why."""
        self._cache.pop(path, None)
        self._skipped[path] = " ".join(str(err).split())
        self._show_notes()

    def _show_notes(self) -> None:
        skipped = [f"skipped {html.escape(Path(p).name)}: {html.escape(why)}" for p, why in self._skipped.items()]
        self.message.value = "<br>".join([*self._listed, *skipped])

    def selected_logs(self) -> dict[str, Any]:
        """``{run name: RunLog}`` of the selected runs (names made unique), without runs that cannot be read."""
        logs: dict[str, Any] = {}
        for path in self.run_select.value:
            log = self._load(path)
            if log is None:
                continue
            name, k = log.name, 2
            while name in logs:
                name, k = f"{log.name}#{k}", k + 1
            logs[name] = log
        return logs

    # ------------------------------------------------------------------ events
    def refresh(self) -> None:
        """Re-scan ``runs_dir`` (new runs appear; a running run reads its new parts) and redraw
        what changed: nothing is drawn again when no run was written since the last refresh."""
        from cskd_viz import runs

        listing = runs.list_runs(self.runs_dir)
        stamps = tuple((path, _stamp(path)) for path in listing["path"].astype(str))
        if stamps == self._stamps:
            return
        self._stamps = stamps
        readable = listing[listing["status"] != "unreadable"]
        options = [
            (f"{row['name']}  ({row['method']}, {row['status']})", str(row["path"])) for _, row in readable.iterrows()
        ]
        previous = [p for p in self.run_select.value if p in {value for _, value in options}]
        self._updating = True
        try:
            self.run_select.options = options
            # At first the newest runs are selected (all of them in a small directory).
            newest = [value for _, value in options][-MAX_INITIAL_SELECTION:]
            self.run_select.value = tuple(previous) if previous else tuple(newest)
        finally:
            self._updating = False
        skipped = listing[listing["status"] == "unreadable"]
        notes = [f"{len(readable)} run(s) in {html.escape(str(self.runs_dir))}"]
        notes += [
            f"skipped {html.escape(str(r['name']))}: {html.escape(' '.join(str(r['error']).split()))}"
            for _, r in skipped.iterrows()
        ]
        self._listed, self._skipped = notes, {}  # a new scan: runs left out while drawing get another try
        self._show_notes()
        self._on_select(None)

    def _on_select(self, change: Any) -> None:
        if self._updating:
            return
        paths = list(self.run_select.value)
        labels = dict((value, label.split("  (")[0]) for label, value in self.run_select.options)
        current = self.heatmap_dropdown.value
        self._updating = True
        try:
            self.heatmap_dropdown.options = [(labels[p], p) for p in paths]
            if paths:
                self.heatmap_dropdown.value = current if current in paths else paths[-1]
        finally:
            self._updating = False
        self.update()

    def update(self, curves: bool = True, heatmap: bool = True) -> None:
        """Redraw the summary table and overlaid curves (``curves``) and the chosen run's heatmap (``heatmap``)."""
        if self._updating:
            return
        logs = self.selected_logs()
        if not logs:
            self.table.value = "<i>no run selected</i>"
            self.curves_image.value = b""
            self.heatmap_image.value = b""
            return
        if curves:
            self._draw_curves(logs)
        if heatmap:
            self._draw_heatmap()

    def _draw_curves(self, logs: Mapping[str, Any]) -> None:
        from cskd_viz import plots, runs

        logs = {name: log for name, log in logs.items() if self._readable(log, "evals")}
        if not logs:
            self.table.value = "<i>no readable run selected</i>"
            self.curves_image.value = b""
            return
        summary = runs.compare_runs(list(logs.values()))
        columns = ["name", "method", "final_accuracy", "final_agreement", "best_accuracy", "steps", "status"]
        self.table.value = summary[columns].to_html(index=False, float_format=lambda x: f"{x:.4f}", border=0)
        fig = _new_figure((11.0, 3.6), self._dpi, layout="constrained")
        ax_metric, ax_agree = fig.subplots(1, 2)
        evals = {name: log.evals for name, log in logs.items()}
        plots.plot_learning_curves(evals, metric=self.metric_dropdown.value, ax=ax_metric)
        plots.plot_agreement(evals, ax=ax_agree)
        self.curves_image.value = figure_png(fig)

    def _draw_heatmap(self) -> None:
        from cskd_viz import plots

        path = self.heatmap_dropdown.value
        if path is None:
            self.heatmap_image.value = b""
            return
        log = self._load(path)
        if log is None or not self._readable(log, "class_cosine", "temperatures"):
            self.heatmap_image.value = b""
            return
        fig = _new_figure((11.0, 3.6), self._dpi, layout="constrained")
        ax_heat, ax_temp = fig.subplots(1, 2, width_ratios=[1.4, 1.0])
        plots.plot_class_cosine_heatmap(log.class_cosine, ax=ax_heat, title=f"{log.name}: per-class cosine")
        temperatures = log.temperatures
        cswt = not temperatures.empty
        plots.plot_temperature_trace(
            temperatures,
            ax=ax_temp,
            title=f"{log.name}: CSWT temperatures",
            t_low=log.config.get("t_low") if cswt else None,
            t_high=log.config.get("t_high") if cswt else None,
        )
        self.heatmap_image.value = figure_png(fig)

    def _readable(self, log: Any, *frames: str) -> bool:
        """Whether ``log``'s ``frames`` read; if not, the run is left out with a line saying why."""
        from cskd_viz import runs

        try:
            for frame in frames:
                log.frame(frame)
        except runs.RunLogError as err:
            self._skip(str(log.path), err)
            return False
        return True


MAX_INITIAL_SELECTION = 8


def _stamp(path: str) -> tuple[int, int]:
    """Which write of a run's ``config.json`` this is (every flush replaces it: a new inode), or zeros."""
    from cskd_viz import runs

    try:
        stat = (Path(path) / runs.CONFIG_FILE).stat()
    except OSError:
        return 0, 0
    return stat.st_ino, stat.st_mtime_ns
