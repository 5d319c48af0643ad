"""The temperature tuner: sliders for ``T``, ``T_low``, ``T_high``, batch size and CSWT on fixed
logits, with a live view of the CSWT mapping, the temperatures and the per-class cosines."""

from __future__ import annotations

import html
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cskd_viz import losses
from cskd_viz._validation import (
    MIN_CSKD_BATCH,
    check_bool,
    check_figure_size,
    check_pair,
    check_temperature_range,
    check_temperature_value,
    compute_dtype,
)
from cskd_viz.widgets._common import _canvas_png, _Displayable, _fmt, _new_figure, _single_torch_thread, figure_png

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import Tensor

__all__ = ["TemperatureTuner"]

SAMPLE_COSINE_CACHE_SIZE = 8  # batch sizes whose per-sample cosines are kept (least recently used dropped)


class TemperatureTuner(_Displayable):
    """Sliders for ``T``, ``T_low``, ``T_high``, batch size and CSWT on fixed logits, with a live view.

    The view shows (1) the CSWT mapping ``s_i -> T_i`` with every sample of the batch on it,
    (2) the histogram of the ``T_i``, (3) the per-class cosines ``c_j(T)`` of batch predictions,
    and a readout of ``L_kd = T^2 mean_i KL(P_t[i] || P_s[i])`` next to
    ``L_cskd = T^2 d(T) + mean(T_i)^2 d(T_i)`` (second term only with CSWT on).

    The batch-size slider takes the first ``b`` rows of a fixed seeded permutation of the logits,
    so smaller batches are nested sub-batches; it starts at 2 (CSKD needs two samples: one sample's
    column cosines are 1 trivially), so the logits need at least two rows. The per-sample cosines
    of the last :data:`SAMPLE_COSINE_CACHE_SIZE` batch sizes are cached. Moving ``T_low`` above
    ``T_high`` (or ``T_high`` below ``T_low``) never raises: the other slider is pushed along so
    ``T_low <= T_high``, and the readout says so.

    Args:
        student_logits: ``(B, C)`` student logits (e.g. a trained pair's logits on a test batch).
        teacher_logits: ``(B, C)`` teacher logits.
        temperature: initial ``T``.
        t_low, t_high: initial CSWT range, ``0 < t_low <= t_high``.
        cswt: initial state of the CSWT toggle (a bool; ``numpy.bool_`` is accepted).
        batch_size: initial batch size in ``[2, B]`` (default: all ``B`` rows).
        t_max: upper end of the temperature sliders (at most 1000, like every temperature).
        bins: histogram bins over ``[T_low, T_high]``.
        seed: seed of the sub-batch permutation.
        figsize, dpi: size of the rendered figure: a pair of positive inches, positive dots per inch.
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
        import ipywidgets  # noqa: F401 - the panel needs ipywidgets: fail on that before checking arguments

        temperature, t_low, t_high, batch_size, t_max = self._check_arguments(
            student_logits, teacher_logits, temperature, t_low, t_high, cswt, batch_size, bins, t_max
        )
        check_figure_size(figsize, dpi)
        cswt = bool(cswt)
        n, self.num_classes = student_logits.shape
        t_min = min(0.5, temperature, t_low)
        self._store_logits(student_logits, teacher_logits, seed)
        self._sample_cosines: OrderedDict[int, Tensor] = OrderedDict()  # an LRU cache, per batch size
        self._bins = bins
        self._busy = False
        self._clamp_note = ""
        self._values: dict[str, Any] = {}
        self.redraws = 0
        self.last_redraw_s = float("nan")

        self._build_controls(
            temperature=temperature,
            t_low=t_low,
            t_high=t_high,
            t_range=(t_min, t_max),
            batch_size=batch_size,
            rows=n,
            cswt=cswt,
            continuous_update=continuous_update,
        )
        self._build_layout()

        self._figsize, self._dpi = figsize, dpi
        self._background: Any = None
        self._legend_regions: list[Any] = []
        self._background_limits: tuple = ()
        self.full_redraws = 0
        self.figure, self._artists = self._build_figure()
        self._connect()
        self.update()

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _check_arguments(
        student_logits: Tensor,
        teacher_logits: Tensor,
        temperature: float,
        t_low: float,
        t_high: float,
        cswt: bool,
        batch_size: int | None,
        bins: int,
        t_max: float,
    ) -> tuple[float, float, float, int, float]:
        """Validate the constructor's arguments; return ``temperature, t_low, t_high, batch_size, t_max``
        as used (``batch_size`` defaults to every row, ``t_max`` covers ``temperature`` and ``t_high``)."""
        check_pair(student_logits, teacher_logits)
        temperature = check_temperature_value(temperature, "temperature")
        t_low, t_high = check_temperature_range(t_low, t_high)
        check_bool(cswt, "cswt")
        n = student_logits.shape[0]
        if n < MIN_CSKD_BATCH:
            raise ValueError(
                f"student_logits has {n} row(s); the tuner needs at least {MIN_CSKD_BATCH}: CSKD's cosine of "
                "batch predictions is 1 trivially for a single sample"
            )
        if batch_size is None:
            batch_size = n
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not MIN_CSKD_BATCH <= batch_size <= n:
            raise ValueError(
                f"batch_size must be an int in [{MIN_CSKD_BATCH}, {n}] (the number of logit rows; CSKD needs "
                f"at least two samples), got {batch_size!r}"
            )
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive int, got {bins!r}")
        t_max = max(check_temperature_value(t_max, "t_max"), temperature, t_high)
        return temperature, t_low, t_high, batch_size, t_max

    def _store_logits(self, student_logits: Tensor, teacher_logits: Tensor, seed: int) -> None:
        """Keep detached CPU copies of the logits, rows in a fixed seeded order (nested sub-batches)."""
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
        n = student_logits.shape[0]
        dtype = compute_dtype(student_logits, teacher_logits)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        self._student = student_logits.detach().to("cpu", dtype)[order].contiguous()
        self._teacher = teacher_logits.detach().to("cpu", dtype)[order].contiguous()

    def _build_controls(
        self,
        *,
        temperature: float,
        t_low: float,
        t_high: float,
        t_range: tuple[float, float],
        batch_size: int,
        rows: int,
        cswt: bool,
        continuous_update: bool,
    ) -> None:
        """Create the sliders (over ``t_range``; batch size up to ``rows``) and the CSWT toggle."""
        import ipywidgets as widgets

        t_min, t_max = t_range
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
            value=batch_size,
            min=MIN_CSKD_BATCH,
            max=rows,
            step=1,
            description="batch size",
            layout=slider_layout,
            **common,
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

    def _build_layout(self) -> None:
        """Create the readout and the image, and lay the panel out in ``self.widget``."""
        import ipywidgets as widgets

        self.readout = widgets.HTML()
        self.readout.add_class("cskd-readout")
        self.image = widgets.Image(format="png")
        self.image.add_class("cskd-figure")
        controls = widgets.VBox(
            [self.t_slider, self.t_low_slider, self.t_high_slider, self.batch_slider, self.cswt_toggle]
        )
        self.widget = widgets.VBox([widgets.HBox([controls, self.readout]), self.image])
        self.widget.add_class("cskd-temperature-tuner")

    def _connect(self) -> None:
        """Redraw on every control change; ``T_low``/``T_high`` moves also keep the two ordered."""
        self.t_slider.observe(self._on_change, names="value")
        self.batch_slider.observe(self._on_change, names="value")
        self.cswt_toggle.observe(self._on_change, names="value")
        self.t_low_slider.observe(self._on_t_low, names="value")
        self.t_high_slider.observe(self._on_t_high, names="value")

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
            sample_cosines = self._cached_sample_cosines(b, student, teacher)
            temperatures = losses._cswt_from_cosines(sample_cosines, t_low, t_high)
            log_s = torch.log_softmax(student / temperature, dim=1)
            log_t = torch.log_softmax(teacher / temperature, dim=1)
            directions = (losses._directions(log_s, 0), losses._directions(log_t, 0))
            class_cosines = losses._cosine_of_directions(*directions, 0).clamp_(0.0, 1.0)  # rounding stays in [0, 1]
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

    def _cached_sample_cosines(self, b: int, student: Tensor, teacher: Tensor) -> Tensor:
        """The per-sample cosines (``T = 1``) of the first ``b`` rows, from a bounded LRU cache."""
        cache = self._sample_cosines
        if b in cache:
            cache.move_to_end(b)
        else:
            cache[b] = losses._per_sample_cosine(student, teacher, 1.0)
            while len(cache) > SAMPLE_COSINE_CACHE_SIZE:
                cache.popitem(last=False)
        return cache[b]

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
