"""The run launcher: start a short distillation run in a background thread and watch it train."""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cskd_viz._validation import check_scalar, check_temperature_range
from cskd_viz.widgets._common import _Displayable, _new_figure, figure_png

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["RunLauncher"]


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
        import ipywidgets  # noqa: F401 - the panel needs ipywidgets: fail on that before checking arguments

        datasets, methods, dataset = self._resolve_choices(datasets, methods, dataset, method)
        temperature, t_low, t_high = self._check_settings(temperature, t_low, t_high, epochs, config)
        self._init_state(runs_dir, config, redraw_every_s, dpi)
        self._build_controls(
            datasets=datasets,
            methods=methods,
            dataset=dataset,
            method=method,
            temperature=temperature,
            t_low=t_low,
            t_high=t_high,
            epochs=epochs,
        )
        self._connect()
        self._build_layout()
        self.figure, self._artists = self._build_figure()

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _resolve_choices(
        datasets: Sequence[str] | None, methods: Sequence[str] | None, dataset: str | None, method: str
    ) -> tuple[list[str], list[str], str]:
        """The dataset and method choices (defaults filled in) and the initial dataset, all checked."""
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
        return datasets, methods, dataset

    @staticmethod
    def _check_settings(
        temperature: float, t_low: float, t_high: float, epochs: int, config: Mapping[str, Any] | None
    ) -> tuple[float, float, float]:
        """Validate the initial run settings; return ``temperature, t_low, t_high`` as checked."""
        temperature = check_scalar(temperature, "temperature")
        t_low, t_high = check_temperature_range(t_low, t_high)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping of RunConfig fields, got {type(config).__name__}")
        return temperature, t_low, t_high

    def _init_state(
        self, runs_dir: str | Path, config: Mapping[str, Any] | None, redraw_every_s: float, dpi: float
    ) -> None:
        """Set the run state: no thread, result or error yet, empty history."""
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

    def _build_controls(
        self,
        *,
        datasets: list[str],
        methods: list[str],
        dataset: str,
        method: str,
        temperature: float,
        t_low: float,
        t_high: float,
        epochs: int,
    ) -> None:
        """Create the controls, the progress display, the status line and the image."""
        import ipywidgets as widgets

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

    def _connect(self) -> None:
        """Keep ``T_low <= T_high`` as the sliders move; Run starts a run and Stop ends it."""
        self.t_low_slider.observe(self._keep_order, names="value")
        self.t_high_slider.observe(self._keep_order, names="value")
        self.run_button.on_click(lambda button: self.start())
        self.stop_button.on_click(lambda button: self.stop())

    def _build_layout(self) -> None:
        """Lay the panel out in ``self.widget``."""
        import ipywidgets as widgets

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
