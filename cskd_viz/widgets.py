"""Notebook panels made of plain ipywidgets: a temperature tuner, a run browser and a run launcher.

Figures are matplotlib ``Figure`` objects that never touch ``pyplot``: each panel builds its
figure once, updates the artists in place (``set_data``, ``set_offsets``, ``set_ydata``) and
renders it to PNG into an ``ipywidgets.Image``. That works with JupyterLab's plain inline
backend (no ipympl, no custom JavaScript), and headless in tests.

Every panel exposes ``.widget`` (the root box) and displays itself when it is a cell's value.
"""

from __future__ import annotations

import html
import io
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cskd_viz import losses
from cskd_viz._validation import check_pair, check_scalar, check_temperature_range, compute_dtype

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import Tensor

__all__ = ["figure_png", "TemperatureTuner", "RunBrowser", "RunLauncher"]


def figure_png(fig: Figure, *, compress_level: int = 1) -> bytes:
    """Render ``fig`` with the Agg canvas and return PNG bytes (fast, low-compression encoding).

    Args:
        fig: a matplotlib figure (attached to any canvas, or none).
        compress_level: zlib level 0-9 of the PNG encoder (1: fast, files a little larger).

    Example:
        >>> from matplotlib.figure import Figure
        >>> figure_png(Figure(figsize=(1, 1), dpi=10))[:4]
        b'\\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return _canvas_png(canvas, compress_level)


def _canvas_png(canvas: Any, compress_level: int = 1) -> bytes:
    """PNG bytes of what an Agg canvas holds now (no redraw)."""
    from PIL import Image

    width, height = canvas.get_width_height(physical=True)
    image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="png", compress_level=compress_level)
    return buffer.getvalue()


@contextmanager
def _single_torch_thread() -> Iterator[None]:
    """Run small tensor work on one intra-op thread (restored after).

    The tuner's tensors are ~1e5 elements: splitting them over threads gains nothing, and on a
    busy machine the OpenMP workers' spin-waits cost far more than the work. The setting is per
    calling thread with OpenMP, so a run training in a background thread is not affected.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _new_figure(figsize: tuple[float, float], dpi: float, **kwargs: Any) -> Figure:
    """A figure outside pyplot (no global registry, never auto-shown by the inline backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, **kwargs)
    FigureCanvasAgg(fig)
    return fig


class _Displayable:
    """Display ``self.widget`` when the panel object is a cell's value."""

    widget: Any

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _fmt(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4g}"


# ----------------------------------------------------------------------------- temperature tuner


class TemperatureTuner(_Displayable):
    """Sliders for ``T``, ``T_low``, ``T_high``, batch size and CSWT on fixed logits, with a live view.

    The view shows (1) the CSWT mapping ``s_i -> T_i`` with every sample of the batch on it,
    (2) the histogram of the ``T_i``, (3) the per-class cosines ``c_j(T)`` of batch predictions,
    and a readout of ``L_kd = T^2 mean_i KL(P_t[i] || P_s[i])`` next to
    ``L_cskd = T^2 d(T) + mean(T_i)^2 d(T_i)`` (second term only with CSWT on).

    The batch-size slider takes the first ``b`` rows of a fixed seeded permutation of the logits,
    so smaller batches are nested sub-batches. Moving ``T_low`` above ``T_high`` (or ``T_high``
    below ``T_low``) never raises: the other slider is pushed along so ``T_low <= T_high``, and
    the readout says so.

    Args:
        student_logits: ``(B, C)`` student logits (e.g. a trained pair's logits on a test batch).
        teacher_logits: ``(B, C)`` teacher logits.
        temperature: initial ``T``.
        t_low, t_high: initial CSWT range, ``0 < t_low <= t_high``.
        cswt: initial state of the CSWT toggle.
        batch_size: initial batch size (default: all ``B`` rows).
        t_max: upper end of the temperature sliders.
        bins: histogram bins over ``[T_low, T_high]``.
        seed: seed of the sub-batch permutation.
        figsize, dpi: size of the rendered figure.
        continuous_update: redraw while a slider is dragged (else on release).

    Attributes:
        widget: the root ``ipywidgets.VBox``.
        t_slider, t_low_slider, t_high_slider, batch_slider, cswt_toggle: the controls
            (descriptions ``T``, ``T_low``, ``T_high``, ``batch size``, ``CSWT``).
        readout: ``ipywidgets.HTML`` with DOM class ``cskd-readout``.
        image: ``ipywidgets.Image`` holding the rendered figure (DOM class ``cskd-figure``).
        figure: the matplotlib figure (updated in place).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> teacher = torch.randn(32, 5, generator=g) * 3
        >>> tuner = TemperatureTuner(teacher + torch.randn(32, 5, generator=g), teacher)
        >>> before = tuner.state()["mean_temperature"]
        >>> tuner.t_high_slider.value = 8.0
        >>> tuner.state()["mean_temperature"] > before
        True
    """

    def __init__(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        temperature: float = 4.0,
        t_low: float = 2.0,
        t_high: float = 6.0,
        cswt: bool = True,
        batch_size: int | None = None,
        *,
        t_max: float = 12.0,
        bins: int = 30,
        seed: int = 0,
        figsize: tuple[float, float] = (11.0, 3.3),
        dpi: float = 72.0,
        continuous_update: bool = True,
    ) -> None:
        import ipywidgets as widgets

        check_pair(student_logits, teacher_logits)
        temperature = check_scalar(temperature, "temperature")
        t_low, t_high = check_temperature_range(t_low, t_high)
        if not isinstance(cswt, bool):
            raise TypeError(f"cswt must be a bool, got {type(cswt).__name__}")
        n, self.num_classes = student_logits.shape
        if batch_size is None:
            batch_size = n
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
            raise ValueError(f"batch_size must be an int in [1, {n}] (the number of logit rows), got {batch_size!r}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive int, got {bins!r}")
        t_max = max(check_scalar(t_max, "t_max"), temperature, t_high)
        t_min = min(0.5, temperature, t_low)

        dtype = compute_dtype(student_logits, teacher_logits)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
        self._student = student_logits.detach().to("cpu", dtype)[order].contiguous()
        self._teacher = teacher_logits.detach().to("cpu", dtype)[order].contiguous()
        self._sample_cosines: dict[int, Tensor] = {}
        self._bins = bins
        self._busy = False
        self._clamp_note = ""
        self._values: dict[str, Any] = {}
        self.redraws = 0
        self.last_redraw_s = float("nan")

        common = {"continuous_update": continuous_update, "style": {"description_width": "72px"}}
        slider_layout = widgets.Layout(width="330px")
        self.t_slider = widgets.FloatSlider(
            value=temperature, min=t_min, max=t_max, step=0.1, description="T", layout=slider_layout, **common
        )
        self.t_low_slider = widgets.FloatSlider(
            value=t_low, min=t_min, max=t_max, step=0.1, description="T_low", layout=slider_layout, **common
        )
        self.t_high_slider = widgets.FloatSlider(
            value=t_high, min=t_min, max=t_max, step=0.1, description="T_high", layout=slider_layout, **common
        )
        self.batch_slider = widgets.IntSlider(
            value=batch_size, min=1, max=n, step=1, description="batch size", layout=slider_layout, **common
        )
        self.cswt_toggle = widgets.ToggleButton(value=cswt, description="CSWT", tooltip="cosine-similarity-weighted T")
        for control, dom_class in (
            (self.t_slider, "cskd-t"),
            (self.t_low_slider, "cskd-t-low"),
            (self.t_high_slider, "cskd-t-high"),
            (self.batch_slider, "cskd-batch-size"),
            (self.cswt_toggle, "cskd-cswt"),
        ):
            control.add_class(dom_class)
        self.readout = widgets.HTML()
        self.readout.add_class("cskd-readout")
        self.image = widgets.Image(format="png")
        self.image.add_class("cskd-figure")
        controls = widgets.VBox(
            [self.t_slider, self.t_low_slider, self.t_high_slider, self.batch_slider, self.cswt_toggle]
        )
        self.widget = widgets.VBox([widgets.HBox([controls, self.readout]), self.image])
        self.widget.add_class("cskd-temperature-tuner")

        self._figsize, self._dpi = figsize, dpi
        self._background: Any = None
        self._legend_regions: list[Any] = []
        self._background_limits: tuple = ()
        self.full_redraws = 0
        self.figure, self._artists = self._build_figure()
        self.t_slider.observe(self._on_change, names="value")
        self.batch_slider.observe(self._on_change, names="value")
        self.cswt_toggle.observe(self._on_change, names="value")
        self.t_low_slider.observe(self._on_t_low, names="value")
        self.t_high_slider.observe(self._on_t_high, names="value")
        self.update()

    # ------------------------------------------------------------------ events
    def _on_change(self, change: Mapping[str, Any]) -> None:
        if self._busy:
            return
        self._clamp_note = ""
        self.update()

    def _clamp(self, moved: Any, other: Any, other_must_be: str) -> None:
        """Push ``other`` to the moved slider's value when the order ``T_low <= T_high`` breaks."""
        if self._busy:
            return
        low, high = self.t_low_slider.value, self.t_high_slider.value
        self._clamp_note = ""
        if low > high:
            self._busy = True
            try:
                other.value = moved.value
            finally:
                self._busy = False
            self._clamp_note = (
                f"{moved.description} moved past {other.description}: "
                f"{other.description} {other_must_be} to {moved.value:.2f} (T_low <= T_high)"
            )
        self.update()

    def _on_t_low(self, change: Mapping[str, Any]) -> None:
        self._clamp(self.t_low_slider, self.t_high_slider, "raised")

    def _on_t_high(self, change: Mapping[str, Any]) -> None:
        self._clamp(self.t_high_slider, self.t_low_slider, "lowered")

    # ------------------------------------------------------------------ computation
    def _compute(self) -> dict[str, Any]:
        b = int(self.batch_slider.value)
        temperature = float(self.t_slider.value)
        t_low = float(self.t_low_slider.value)
        t_high = max(float(self.t_high_slider.value), t_low)  # the sliders are kept ordered; be safe anyway
        cswt = bool(self.cswt_toggle.value)
        student, teacher = self._student[:b], self._teacher[:b]
        # The logits were validated once in __init__; the losses' private helpers skip re-checking
        # them and share one softmax between KD and the per-class cosines (tests compare every
        # number with the public functions).
        with torch.no_grad():
            if b not in self._sample_cosines:
                self._sample_cosines[b] = losses._per_sample_cosine(student, teacher, 1.0)
            sample_cosines = self._sample_cosines[b]
            temperatures = losses._cswt_from_cosines(sample_cosines, t_low, t_high)
            log_s = torch.log_softmax(student / temperature, dim=1)
            log_t = torch.log_softmax(teacher / temperature, dim=1)
            class_cosines = losses._cosine_of_directions(losses._directions(log_s, 0), losses._directions(log_t, 0), 0)
            kd = temperature**2 * float((log_t.exp() * (log_t - log_s)).sum(1).mean())
            d_fixed = float(1.0 - class_cosines.mean())
            d_cswt = float(1.0 - losses._per_class_cosine(student, teacher, temperatures).mean())
        mean_t = float(temperatures.mean())
        cskd = temperature**2 * d_fixed + (mean_t**2 * d_cswt if cswt else 0.0)
        return {
            "temperature": temperature,
            "t_low": t_low,
            "t_high": t_high,
            "batch_size": b,
            "cswt": cswt,
            "kd_loss": kd,
            "cskd_loss": cskd,
            "cosine_distance": d_fixed,
            "cswt_cosine_distance": d_cswt,
            "mean_temperature": mean_t,
            "min_temperature": float(temperatures.min()),
            "max_temperature": float(temperatures.max()),
            "sample_cosines": sample_cosines.numpy(),
            "temperatures": temperatures.numpy(),
            "class_cosines": class_cosines.numpy(),
        }

    # ------------------------------------------------------------------ figure
    def _build_figure(self, animated: bool = True) -> tuple[Figure, dict[str, Any]]:
        """Build the three panels once. ``animated`` artists (the ones that move) are left out of a
        full ``canvas.draw()`` and blitted on top of the cached static background instead."""
        from cskd_viz.plots import palette

        fig = _new_figure(self._figsize, self._dpi)
        fig.subplots_adjust(left=0.055, right=0.99, bottom=0.17, top=0.88, wspace=0.27)
        ax_map, ax_hist, ax_class = fig.subplots(1, 3)
        colors = palette(4)
        c = self.num_classes
        t_min, t_max = self.t_slider.min, self.t_slider.max
        art: dict[str, Any] = {"axes": (ax_map, ax_hist, ax_class), "colors": colors}
        (art["map_line"],) = ax_map.plot([0.0, 1.0], [1.0, 1.0], color=colors[0], linewidth=2, label="mapping")
        art["map_points"] = ax_map.scatter([0.5], [1.0], s=9, color=colors[1], alpha=0.6, zorder=3, label="samples")
        art["map_fixed"] = ax_map.axhline(1.0, color=colors[2], linestyle="--", linewidth=1.2, label="fixed T")
        ax_map.set_ylim(0.0, t_max * 1.04)
        ax_map.set_xlabel("per-sample cosine s_i (T = 1)")
        ax_map.set_ylabel("temperature T_i")
        ax_map.legend(loc="upper right", fontsize=7, framealpha=1.0)
        ax_map.set_title("CSWT mapping s_i -> T_i", fontsize=10)

        edges = np.linspace(0.0, 1.0, self._bins + 1)
        art["hist"] = ax_hist.stairs(np.zeros(self._bins), edges, fill=True, color=colors[1], alpha=0.8)
        art["hist_mean"] = ax_hist.axvline(0.5, color="0.2", linewidth=1.2, label="mean T_i")
        art["hist_fixed"] = ax_hist.axvline(0.5, color=colors[2], linestyle="--", linewidth=1.2, label="fixed T")
        ax_hist.set_xlim(t_min - 0.02 * t_max, t_max * 1.02)
        ax_hist.set_xlabel("temperature T_i")
        ax_hist.set_ylabel("fraction of the batch")
        ax_hist.legend(loc="upper right", fontsize=7, framealpha=1.0)
        ax_hist.set_title("CSWT temperatures T_i of the batch", fontsize=10)

        class_edges = np.arange(c + 1, dtype=float) - 0.5
        art["classes"] = ax_class.stairs(np.ones(c), class_edges, fill=True, color=colors[0], alpha=0.85, baseline=0.0)
        art["class_mean"] = ax_class.axhline(1.0, color=colors[3], linewidth=1.2, label="mean = 1 - d(T)")
        ax_class.set_xlim(-0.5, c - 0.5)
        ax_class.set_xlabel("class j")
        ax_class.set_ylabel("cos(P_s[:, j], P_t[:, j])")
        ax_class.legend(loc="lower right", fontsize=7, framealpha=1.0)
        ax_class.set_title("per-class cosine c_j(T) of batch predictions", fontsize=10)

        art["dynamic"] = [
            art[k]
            for k in (
                "map_line",
                "map_points",
                "map_fixed",
                "hist",
                "hist_mean",
                "hist_fixed",
                "classes",
                "class_mean",
            )
        ]
        art["legends"] = [ax.get_legend() for ax in art["axes"]]
        for artist in art["dynamic"]:
            artist.set_animated(animated)
        return fig, art

    @staticmethod
    def _nice_ceiling(value: float) -> float:
        """Smallest of 1, 2, 5 x 10^k that is >= ``value`` (``value > 0``)."""
        value = max(value, 1e-6)
        power = 10.0 ** np.floor(np.log10(value))
        for factor in (1.0, 2.0, 5.0, 10.0):
            if factor * power >= value:
                return factor * power
        return 10.0 * power

    def _draw(self, art: dict[str, Any], v: Mapping[str, Any]) -> None:
        """Move the artists of a figure built by ``_build_figure`` to the values ``v``.

        Axis limits change only in coarse steps (and with hysteresis), so most slider moves
        leave every axis, tick and label as it was and only the moving artists are redrawn.
        """
        ax_map, ax_hist, ax_class = art["axes"]
        colors = art["colors"]
        s, temps = v["sample_cosines"], v["temperatures"]
        t_low, t_high, temperature = v["t_low"], v["t_high"], v["temperature"]
        s_min, s_max = float(s.min()), float(s.max())
        if s_max > s_min:
            art["map_line"].set_data([s_min, s_max], [t_high, t_low])
        else:
            mid = (t_low + t_high) / 2
            art["map_line"].set_data([s_min - 0.05, s_max + 0.05], [mid, mid])
        art["map_points"].set_offsets(np.column_stack([s, temps]))
        art["map_points"].set_alpha(0.6 if v["cswt"] else 0.15)
        art["map_fixed"].set_ydata([temperature, temperature])
        left, right = np.floor(s_min * 20 - 0.5) / 20, np.ceil(s_max * 20 + 0.5) / 20
        if ax_map.get_xlim() != (left, right):
            ax_map.set_xlim(left, right)

        if t_high > t_low:
            edges = np.linspace(t_low, t_high, self._bins + 1)
        else:
            edges = np.linspace(t_low - 0.5, t_high + 0.5, self._bins + 1)
        # Fractions, not counts: the y-axis (and so the cached background) survives batch-size moves.
        counts, _ = np.histogram(temps, bins=edges)
        fractions = counts / max(1, temps.size)
        art["hist"].set_data(fractions, edges)
        art["hist"].set_facecolor(colors[1] if v["cswt"] else "0.75")
        art["hist_mean"].set_xdata([v["mean_temperature"]] * 2)
        art["hist_fixed"].set_xdata([temperature] * 2)
        peak = float(fractions.max()) * 1.1
        top = ax_hist.get_ylim()[1]
        if not (peak <= top and peak >= 0.2 * top):
            ax_hist.set_ylim(0.0, min(self._nice_ceiling(peak), 1.1))

        cosines = v["class_cosines"]
        art["classes"].set_data(cosines)
        art["class_mean"].set_ydata([1.0 - v["cosine_distance"]] * 2)
        low = float(cosines.min())
        bottom = ax_class.get_ylim()[0]
        if not (bottom <= low - 0.005 and low - bottom <= 0.25):
            ax_class.set_ylim(max(0.0, np.floor(low * 20 - 1.0) / 20), 1.01)

    def _render(self) -> bytes:
        """Blit the moving artists on the cached background; redraw everything only when limits moved.

        The static figure (axes, ticks, labels, titles, legends) is drawn once and cached; each
        update restores it, draws the moving artists on top, then puts the cached (opaque)
        legends back over them, so no text is laid out or rasterised again.
        """
        canvas = self.figure.canvas
        limits = tuple(ax.get_xlim() + ax.get_ylim() for ax in self._artists["axes"])
        if self._background is None or limits != self._background_limits:
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.figure.bbox)
            renderer = canvas.get_renderer()
            self._legend_regions = [
                canvas.copy_from_bbox(legend.get_window_extent(renderer).expanded(1.0, 1.0).padded(1.0))
                for legend in self._artists["legends"]
            ]
            self._background_limits = limits
            self.full_redraws += 1
        else:
            canvas.restore_region(self._background)
        for artist in self._artists["dynamic"]:
            self.figure.draw_artist(artist)
        for region in self._legend_regions:
            canvas.restore_region(region)
        return _canvas_png(canvas)

    def _readout_html(self, v: Mapping[str, Any]) -> str:
        rows = [
            ("KD loss  T² · mean KL", v["kd_loss"]),
            ("CSKD loss" + ("  T² d(T) + mean(T_i)² d(T_i)" if v["cswt"] else "  T² d(T)"), v["cskd_loss"]),
            ("d(T)", v["cosine_distance"]),
            ("d(T_i)" + ("" if v["cswt"] else " (unused)"), v["cswt_cosine_distance"]),
            ("mean T_i", v["mean_temperature"]),
            ("T_i range", None),
        ]
        cells = []
        for label, value in rows:
            shown = (
                f"{v['min_temperature']:.3g} – {v['max_temperature']:.3g}"
                if value is None
                else html.escape(_fmt(value))
            )
            cells.append(
                f"<tr><td style='padding-right:1em'>{html.escape(label)}</td>"
                f"<td style='text-align:right;font-family:monospace'>{shown}</td></tr>"
            )
        note = ""
        if self._clamp_note:
            note = f"<div class='cskd-clamp' style='color:#b35806'>⚠ {html.escape(self._clamp_note)}</div>"
        header = (
            f"<b>T = {v['temperature']:.2f}, T_low = {v['t_low']:.2f}, T_high = {v['t_high']:.2f}, "
            f"batch = {v['batch_size']}, CSWT {'on' if v['cswt'] else 'off'}</b>"
        )
        return f"<div style='margin-left:1.5em'>{header}<table>{''.join(cells)}</table>{note}</div>"

    # ------------------------------------------------------------------ public
    def update(self, full: bool = False) -> None:
        """Recompute every value from the controls and redraw the figure in place.

        Args:
            full: redraw the static parts too (axes, ticks, labels), as happens anyway when an
                axis range has to move; by default only the moving artists are redrawn.
        """
        start = time.perf_counter()
        if full:
            self._background = None
        with _single_torch_thread():
            values = self._compute()
        self._draw(self._artists, values)
        self.image.value = self._render()
        self.readout.value = self._readout_html(values)
        self._values = values
        self.redraws += 1
        self.last_redraw_s = time.perf_counter() - start

    def state(self) -> dict[str, Any]:
        """Current values: controls, ``kd_loss``, ``cskd_loss``, ``cosine_distance`` (``d(T)``),
        ``cswt_cosine_distance`` (``d(T_i)``), ``mean/min/max_temperature``, ``clamped``, ``redraws``."""
        keys = (
            "temperature",
            "t_low",
            "t_high",
            "batch_size",
            "cswt",
            "kd_loss",
            "cskd_loss",
            "cosine_distance",
            "cswt_cosine_distance",
            "mean_temperature",
            "min_temperature",
            "max_temperature",
        )
        state = {k: self._values[k] for k in keys}
        state.update(clamped=bool(self._clamp_note), clamp_note=self._clamp_note, redraws=self.redraws)
        return state

    def render_fresh(self) -> bytes:
        """Build a new figure, draw the current values and render it (the slow path; for benchmarks)."""
        fig, art = self._build_figure(animated=False)
        with _single_torch_thread():
            values = self._compute()
        self._draw(art, values)
        return figure_png(fig)


# ----------------------------------------------------------------------------- run browser


class RunBrowser(_Displayable):
    """Pick runs under ``runs_dir``, overlay their curves, and look at one run's heatmap.

    The top figure overlays the selected runs' ``metric`` (dropdown) and their top-1 agreement per
    epoch; the bottom one shows the per-class cosine heatmap and the CSWT temperature trace of the
    run chosen in ``heatmap run``. A table summarises the selection (:func:`cskd_viz.runs.compare_runs`).

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
        from cskd_viz import runs

        config_file = Path(path) / runs.CONFIG_FILE
        stamp = config_file.stat().st_mtime if config_file.exists() else 0.0
        cached = self._cache.get(path)
        if cached is None or cached[0] != stamp:
            self._cache[path] = (stamp, runs.load_run(path))
        return self._cache[path][1]

    def selected_logs(self) -> dict[str, Any]:
        """``{run name: RunLog}`` of the selected runs (names made unique)."""
        logs: dict[str, Any] = {}
        for path in self.run_select.value:
            log = self._load(path)
            name, k = log.name, 2
            while name in logs:
                name, k = f"{log.name}#{k}", k + 1
            logs[name] = log
        return logs

    # ------------------------------------------------------------------ events
    def refresh(self) -> None:
        """Re-scan ``runs_dir`` (new runs appear; a running run is reloaded) and redraw."""
        from cskd_viz import runs

        listing = runs.list_runs(self.runs_dir)
        readable = listing[listing["status"] != "unreadable"]
        options = [
            (f"{row['name']}  ({row['method']}, {row['status']})", str(row["path"])) for _, row in readable.iterrows()
        ]
        previous = [p for p in self.run_select.value if p in {value for _, value in options}]
        self._updating = True
        try:
            self.run_select.options = options
            self.run_select.value = tuple(previous) if previous else tuple(value for _, value in options)
        finally:
            self._updating = False
        skipped = listing[listing["status"] == "unreadable"]
        notes = [f"{len(readable)} run(s) in {html.escape(str(self.runs_dir))}"]
        notes += [
            f"skipped {html.escape(str(r['name']))}: {html.escape(str(r['error']))}" for _, r in skipped.iterrows()
        ]
        self.message.value = "<br>".join(notes)
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


# ----------------------------------------------------------------------------- run launcher


def _field(obj: Any, name: str) -> Any:
    """``obj[name]`` for mappings, else ``getattr(obj, name, None)``."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


class _LauncherCallback:
    """The trainer's callback protocol (``cskd_viz.train.Callback``), forwarding to the launcher."""

    def __init__(self, launcher: RunLauncher) -> None:
        self._launcher = launcher

    def on_train_begin(self, run_log: Any) -> None:
        self._launcher._on_train_begin(run_log)

    def on_step(self, record: Any) -> None:
        self._launcher._on_step(record)

    def on_epoch_end(self, epoch: int, record: Any) -> None:
        self._launcher._on_epoch_end(epoch, record)

    def on_train_end(self, run_log: Any) -> None:
        self._launcher._on_train_end(run_log)


class RunLauncher(_Displayable):
    """Start a short distillation run from the notebook and watch it train; Stop ends it cleanly.

    Choose dataset, method, ``T``, ``T_low``, ``T_high`` and epochs, press **Run**: the run
    trains in a background thread through ``cskd_viz.train.run_experiment(config, runs_dir,
    callbacks=[...], stop_event=...)``; the progress bar (epochs), the progress line (step,
    steps/s, loss, test accuracy) and the figure (loss and batch agreement per logged step,
    per-class cosines of the last logged step) update from the trainer's callbacks. When the
    teacher is not trained yet, the trainer trains it first, and the panel shows that run.
    **Stop** sets the stop event: the trainer ends after the current step and leaves a run log
    that loads (status ``"interrupted"``).

    Args:
        runs_dir: where run directories are written.
        datasets: dataset choices (default: ``cskd_viz.data.DATASETS``).
        methods: method choices (default: ``cskd_viz.methods.method_names()``).
        dataset, method, temperature, t_low, t_high, epochs: initial values of the controls.
        config: extra ``RunConfig`` fields (``student``, ``teacher``, ``teacher_epochs``,
            ``batch_size``, ``lr``, ``max_steps`` ...).
        redraw_every_s: minimum seconds between figure redraws while training.
        dpi: resolution of the rendered figure.

    Attributes:
        widget, dataset_dropdown, method_dropdown, t_slider, t_low_slider, t_high_slider,
        epochs_slider, name_text, run_button, stop_button, progress (``IntProgress``),
        progress_label (DOM class ``cskd-progress``), status (``HTML``), image, thread,
        result (the ``RunLog`` ``run_experiment`` returned), error (the exception that ended the
        run, if any).
    """

    def __init__(
        self,
        runs_dir: str | Path = "runs",
        *,
        datasets: Sequence[str] | None = None,
        methods: Sequence[str] | None = None,
        dataset: str | None = None,
        method: str = "cskd_cswt",
        temperature: float = 4.0,
        t_low: float = 2.0,
        t_high: float = 6.0,
        epochs: int = 2,
        config: Mapping[str, Any] | None = None,
        redraw_every_s: float = 1.0,
        dpi: float = 72.0,
    ) -> None:
        import ipywidgets as widgets

        if datasets is None:
            from cskd_viz import data

            datasets = list(getattr(data, "DATASETS", {"digits": None}))
        if methods is None:
            from cskd_viz import methods as methods_module

            methods = list(methods_module.method_names())
        datasets, methods = list(datasets), list(methods)
        if not datasets or not methods:
            raise ValueError("datasets and methods must each offer at least one choice")
        dataset = dataset if dataset is not None else ("digits" if "digits" in datasets else datasets[0])
        if dataset not in datasets:
            raise ValueError(f"dataset must be one of {datasets}, got {dataset!r}")
        if method not in methods:
            raise ValueError(f"method must be one of {methods}, got {method!r}")
        temperature = check_scalar(temperature, "temperature")
        t_low, t_high = check_temperature_range(t_low, t_high)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping of RunConfig fields, got {type(config).__name__}")
        self.runs_dir = Path(runs_dir)
        self.extra_config = dict(config or {})
        self._redraw_every_s = float(redraw_every_s)
        self._dpi = dpi
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self._history: dict[str, list[float]] = {"step": [], "loss": [], "agreement": []}
        self._class_cosine: list[float] | None = None
        self._last_draw = 0.0
        self._started = 0.0
        self._phase_started = 0.0
        self._phase = ""
        self._config: Any = None
        self._last_step: int | None = None
        self._last_accuracy: float | None = None

        self.dataset_dropdown = widgets.Dropdown(options=datasets, value=dataset, description="dataset")
        self.method_dropdown = widgets.Dropdown(options=methods, value=method, description="method")
        t_max = max(12.0, temperature, t_high)
        self.t_slider = widgets.FloatSlider(value=temperature, min=0.5, max=t_max, step=0.1, description="T")
        self.t_low_slider = widgets.FloatSlider(value=t_low, min=0.5, max=t_max, step=0.1, description="T_low")
        self.t_high_slider = widgets.FloatSlider(value=t_high, min=0.5, max=t_max, step=0.1, description="T_high")
        self.epochs_slider = widgets.IntSlider(value=epochs, min=1, max=max(50, epochs), description="epochs")
        self.name_text = widgets.Text(value="", placeholder="automatic", description="run name")
        self.run_button = widgets.Button(description="Run", button_style="success", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=epochs, description="epoch")
        self.progress_label = widgets.Label(value="idle")
        self.status = widgets.HTML()
        self.image = widgets.Image(format="png")
        for control, dom_class in (
            (self.run_button, "cskd-run"),
            (self.stop_button, "cskd-stop"),
            (self.progress_label, "cskd-progress"),
            (self.status, "cskd-run-status"),
            (self.image, "cskd-figure"),
        ):
            control.add_class(dom_class)
        self.t_low_slider.observe(self._keep_order, names="value")
        self.t_high_slider.observe(self._keep_order, names="value")
        self.run_button.on_click(lambda button: self.start())
        self.stop_button.on_click(lambda button: self.stop())
        self.widget = widgets.VBox(
            [
                widgets.HBox(
                    [
                        widgets.VBox([self.dataset_dropdown, self.method_dropdown, self.epochs_slider, self.name_text]),
                        widgets.VBox([self.t_slider, self.t_low_slider, self.t_high_slider]),
                    ]
                ),
                widgets.HBox([self.run_button, self.stop_button, self.progress, self.progress_label]),
                self.status,
                self.image,
            ]
        )
        self.widget.add_class("cskd-run-launcher")
        self.figure, self._artists = self._build_figure()

    # ------------------------------------------------------------------ controls
    def _keep_order(self, change: Mapping[str, Any]) -> None:
        """Keep ``T_low <= T_high``: the slider moved last pushes the other one."""
        if self.t_low_slider.value > self.t_high_slider.value:
            if change["owner"] is self.t_low_slider:
                self.t_high_slider.value = self.t_low_slider.value
            else:
                self.t_low_slider.value = self.t_high_slider.value

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self.thread is not None and self.thread.is_alive()

    def make_config(self) -> Any:
        """The ``cskd_viz.train.RunConfig`` the controls describe (``config`` extras included)."""
        import dataclasses

        from cskd_viz import train

        values = {
            **self.extra_config,
            "dataset": self.dataset_dropdown.value,
            "method": self.method_dropdown.value,
            "temperature": float(self.t_slider.value),
            "t_low": float(self.t_low_slider.value),
            "t_high": float(self.t_high_slider.value),
            "epochs": int(self.epochs_slider.value),
        }
        name = self.name_text.value.strip()
        if name:
            values["name"] = name
        config_class = train.RunConfig
        if dataclasses.is_dataclass(config_class):
            known = {f.name for f in dataclasses.fields(config_class)}
            unknown = sorted(set(self.extra_config) - known)
            if unknown:
                raise ValueError(f"config has unknown RunConfig fields {unknown}")
            values = {k: v for k, v in values.items() if k in known}
        return config_class(**values)

    def start(self) -> None:
        """Start a run with the current settings in a background thread (no-op while one runs)."""
        with self._lock:
            if self.running:
                return
            try:
                config = self.make_config()
            except Exception as err:  # a bad setting: show it, never raise into the button callback
                self.error = err
                self.status.value = f"<span style='color:#b2182b'>cannot start: {html.escape(str(err))}</span>"
                return
            self._config = config
            self._stop_event = threading.Event()
            self.result, self.error = None, None
            self._reset_history()
            self.progress.max, self.progress.value = max(1, int(self.epochs_slider.value)), 0
            self.progress_label.value = "starting..."
            self.status.value = "running"
            self.run_button.disabled, self.stop_button.disabled = True, False
            self._started = self._phase_started = time.perf_counter()
            self.thread = threading.Thread(target=self._run, args=(config,), name="cskd-run-launcher", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        """Ask the running run to stop after its current step (its log stays loadable)."""
        self._stop_event.set()
        if self.running:
            self.progress_label.value = "stopping after this step..."

    def join(self, timeout: float | None = None) -> None:
        """Wait for the background run to end (for scripts and tests)."""
        if self.thread is not None:
            self.thread.join(timeout)

    def _run(self, config: Any) -> None:
        import inspect

        try:
            from cskd_viz import train

            kwargs: dict[str, Any] = {"callbacks": [_LauncherCallback(self)], "stop_event": self._stop_event}
            # The panel is the progress display: tqdm bars from a background thread would land in
            # whichever notebook cell happens to be running.
            if "progress" in inspect.signature(train.run_experiment).parameters:
                kwargs["progress"] = False
            self.result = train.run_experiment(config, self.runs_dir, **kwargs)
            status = _field(self.result, "status") or ("interrupted" if self._stop_event.is_set() else "finished")
            name = _field(self.result, "name") or _field(config, "name") or ""
            where = _field(self.result, "path")
            self.status.value = f"run <b>{html.escape(str(name))}</b>: {html.escape(str(status))}" + (
                f" &mdash; saved in <code>{html.escape(str(where))}</code>" if where is not None else ""
            )
        except BaseException as err:  # noqa: BLE001 - show it in the panel; the thread must not die silently
            self.error = err
            self.status.value = f"<span style='color:#b2182b'>run failed: {html.escape(repr(err))}</span>"
        finally:
            self._redraw(force=True)
            elapsed = time.perf_counter() - self._started
            self.progress_label.value = f"{self.progress_label.value} | done in {elapsed:.1f}s"
            self.run_button.disabled, self.stop_button.disabled = False, True

    # ------------------------------------------------------------------ trainer callbacks
    def _reset_history(self) -> None:
        self._history = {"step": [], "loss": [], "agreement": []}
        self._class_cosine = None
        self._last_step, self._last_accuracy = None, None

    def _on_train_begin(self, run_log: Any) -> None:
        config = _field(run_log, "config") or {}
        name = _field(run_log, "name") or config.get("name") or "run"
        # The trainer trains a missing teacher first (a run with teacher None) when ours has one.
        teacher_run = config.get("teacher", "") is None and _field(self._config, "teacher") is not None
        self._phase = f"teacher {name}" if teacher_run else str(name)
        self._phase_started = time.perf_counter()
        self._reset_history()
        epochs = config.get("epochs")
        self.progress.max = max(1, int(epochs)) if isinstance(epochs, int) and epochs > 0 else self.progress.max
        self.progress.value = 0
        self.status.value = f"training <b>{html.escape(self._phase)}</b>" + (
            " (the teacher is trained first, once)" if teacher_run else ""
        )
        self._show_progress()

    def _on_step(self, record: Any) -> None:
        metrics = _field(record, "metrics") or {}
        step = _field(record, "step")
        self._last_step = int(step) if step is not None else self._last_step
        if step is not None and "loss" in metrics:
            self._history["step"].append(float(step))
            self._history["loss"].append(float(metrics["loss"]))
            self._history["agreement"].append(float(metrics.get("agreement", float("nan"))))
        cosines = _field(record, "class_cosine")
        if cosines is not None:
            self._class_cosine = [float(c) for c in cosines]
        epoch = _field(record, "epoch")
        if epoch is not None:
            self.progress.value = min(max(self.progress.value, int(epoch)), self.progress.max)
        self._show_progress()
        self._redraw()

    def _on_epoch_end(self, epoch: int, record: Any) -> None:
        self.progress.value = min(int(epoch) + 1, self.progress.max)
        metrics = _field(record, "metrics") or {}
        if "accuracy" in metrics:
            self._last_accuracy = float(metrics["accuracy"])
        self._show_progress()
        self._redraw(force=True)

    def _on_train_end(self, run_log: Any) -> None:
        self._show_progress()
        self._redraw(force=True)

    def _show_progress(self) -> None:
        elapsed = max(time.perf_counter() - self._phase_started, 1e-9)
        parts = [self._phase, f"epoch {self.progress.value}/{self.progress.max}"]
        if self._last_step is not None:
            parts += [f"step {self._last_step}", f"{self._last_step / elapsed:.1f} steps/s"]
        if self._history["loss"]:
            parts.append(f"loss {self._history['loss'][-1]:.4f}")
        if self._last_accuracy is not None:
            parts.append(f"test acc {self._last_accuracy:.4f}")
        parts.append(f"{elapsed:.0f}s")
        self.progress_label.value = " · ".join(p for p in parts if p)

    # ------------------------------------------------------------------ figure
    def _build_figure(self) -> tuple[Figure, dict[str, Any]]:
        from cskd_viz.plots import palette

        fig = _new_figure((11.0, 3.2), self._dpi)
        fig.subplots_adjust(left=0.06, right=0.98, bottom=0.17, top=0.88, wspace=0.3)
        ax_loss, ax_agree, ax_class = fig.subplots(1, 3)
        colors = palette(3)
        (loss_line,) = ax_loss.plot([], [], color=colors[0], marker="o", markersize=3)
        (agree_line,) = ax_agree.plot([], [], color=colors[1], marker="o", markersize=3)
        bars = ax_class.stairs([1.0], [-0.5, 0.5], fill=True, color=colors[2])
        for ax, title, ylabel in (
            (ax_loss, "training loss", "loss"),
            (ax_agree, "top-1 agreement with teacher (batch)", "agreement"),
            (ax_class, "per-class cosine (last logged step)", "cos(P_s[:, j], P_t[:, j])"),
        ):
            ax.set_title(title, fontsize=10)
            ax.set_ylabel(ylabel)
            ax.set_xlabel("class j" if ax is ax_class else "step")
        return fig, {"axes": (ax_loss, ax_agree, ax_class), "loss": loss_line, "agree": agree_line, "classes": bars}

    def _redraw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_draw < self._redraw_every_s:
            return
        self._last_draw = now
        art = self._artists
        ax_loss, ax_agree, ax_class = art["axes"]
        steps = self._history["step"]
        art["loss"].set_data(steps, self._history["loss"])
        art["agree"].set_data(steps, self._history["agreement"])
        for ax in (ax_loss, ax_agree):
            ax.relim()
            ax.autoscale_view()
        if self._class_cosine:
            cosines = np.asarray(self._class_cosine)
            art["classes"].set_data(cosines, np.arange(cosines.size + 1) - 0.5)
            ax_class.set_xlim(-0.5, cosines.size - 0.5)
            low = float(cosines.min())
            ax_class.set_ylim(max(0.0, low - 0.1 * (1.0 - low) - 0.01), 1.005)
        self.image.value = figure_png(self.figure)
