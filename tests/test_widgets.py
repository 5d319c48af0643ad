"""Tests for cskd_viz.widgets: the temperature tuner, the run browser and the run launcher, headless."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import io  # noqa: E402
import threading  # noqa: E402
import types  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

pytest.importorskip("ipywidgets")

from cskd_viz import losses, runs, widgets  # noqa: E402


@pytest.fixture(autouse=True)
def _no_show(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("plt.show() called by library code")

    monkeypatch.setattr(plt, "show", forbidden)
    monkeypatch.setattr(Figure, "show", forbidden)
    yield
    plt.close("all")


@pytest.fixture
def pair(gen) -> tuple[torch.Tensor, torch.Tensor]:
    teacher = 3.0 * torch.randn(40, 7, generator=gen)
    return teacher + 1.5 * torch.randn(40, 7, generator=gen), teacher


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


# ----------------------------------------------------------------------------- TemperatureTuner


def test_tuner_values_match_the_library(pair):
    student, teacher = pair
    tuner = widgets.TemperatureTuner(student, teacher, temperature=3.0, t_low=1.5, t_high=5.0)
    state = tuner.state()
    assert state["kd_loss"] == pytest.approx(float(losses.kd_loss(student, teacher, 3.0)), rel=1e-5)
    assert state["cskd_loss"] == pytest.approx(float(losses.cskd_loss(student, teacher, 3.0, 1.5, 5.0)), rel=1e-5)
    assert state["cosine_distance"] == pytest.approx(
        float(losses.batch_cosine_distance(student, teacher, 3.0)), rel=1e-5
    )
    temps = losses.cswt_temperatures(student, teacher, 1.5, 5.0)
    assert state["mean_temperature"] == pytest.approx(float(temps.mean()), rel=1e-5)
    assert (state["min_temperature"], state["max_temperature"]) == pytest.approx((1.5, 5.0))
    assert state["batch_size"] == 40 and state["cswt"] is True and state["clamped"] is False


def test_tuner_t_high_changes_state_readout_and_image(pair):
    tuner = widgets.TemperatureTuner(*pair)
    before, readout, image = tuner.state(), tuner.readout.value, tuner.image.value
    tuner.t_high_slider.value = 9.0
    after = tuner.state()
    assert after["t_high"] == 9.0
    assert after["mean_temperature"] > before["mean_temperature"]
    assert after["max_temperature"] == pytest.approx(9.0)
    assert after["cskd_loss"] != before["cskd_loss"]
    assert after["kd_loss"] == before["kd_loss"]  # KD uses only the fixed T
    assert tuner.readout.value != readout
    assert tuner.image.value != image and tuner.image.value[:4] == b"\x89PNG"
    assert after["redraws"] == before["redraws"] + 1


def test_tuner_cswt_toggle_and_temperature(pair):
    student, teacher = pair
    tuner = widgets.TemperatureTuner(student, teacher)
    tuner.cswt_toggle.value = False
    assert tuner.state()["cskd_loss"] == pytest.approx(float(losses.cskd_loss(student, teacher, cswt=False)), rel=1e-5)
    assert "CSWT off" in tuner.readout.value
    tuner.t_slider.value = 2.5
    state = tuner.state()
    assert state["kd_loss"] == pytest.approx(float(losses.kd_loss(student, teacher, 2.5)), rel=1e-5)
    assert state["cskd_loss"] == pytest.approx(2.5**2 * state["cosine_distance"], rel=1e-6)


def test_tuner_batch_size_uses_a_fixed_sub_batch(pair):
    tuner = widgets.TemperatureTuner(*pair, seed=1)
    tuner.batch_slider.value = 8
    state = tuner.state()
    sub_s, sub_t = tuner._student[:8], tuner._teacher[:8]
    assert state["batch_size"] == 8
    assert state["cskd_loss"] == pytest.approx(float(losses.cskd_loss(sub_s, sub_t)), rel=1e-5)
    again = widgets.TemperatureTuner(*pair, seed=1, batch_size=8).state()
    assert again["cskd_loss"] == pytest.approx(state["cskd_loss"])


def test_tuner_clamps_t_low_above_t_high(pair):
    tuner = widgets.TemperatureTuner(*pair, t_low=2.0, t_high=6.0)
    tuner.t_low_slider.value = 7.0  # past T_high: must not raise
    state = tuner.state()
    assert state["t_low"] <= state["t_high"]
    assert tuner.t_high_slider.value == 7.0
    assert state["clamped"] and "T_high raised" in state["clamp_note"]
    assert "cskd-clamp" in tuner.readout.value
    # Everything equal: every T_i is the midpoint (= 7), no NaN.
    assert state["mean_temperature"] == pytest.approx(7.0)
    assert np.isfinite(state["cskd_loss"])

    tuner.t_high_slider.value = 3.0  # below T_low: T_low follows it down
    state = tuner.state()
    assert (tuner.t_low_slider.value, tuner.t_high_slider.value) == (3.0, 3.0)
    assert "T_low lowered" in state["clamp_note"]

    tuner.t_slider.value = 5.0  # an ordinary move clears the note
    assert not tuner.state()["clamped"]


def test_tuner_single_sample_is_refused():
    """One sample's per-class cosines are 1 trivially (d = 0): the tuner needs at least two rows."""
    z = torch.tensor([[2.0, 0.5, -1.0]])
    with pytest.raises(ValueError, match="needs at least 2"):
        widgets.TemperatureTuner(z + 0.3, z)


def test_tuner_two_samples():
    z = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.5]])
    tuner = widgets.TemperatureTuner(z + 0.3, z)  # both rows shifted alike: equal similarities
    state = tuner.state()
    assert state["batch_size"] == 2 and tuner.batch_slider.min == tuner.batch_slider.max == 2
    assert state["mean_temperature"] == pytest.approx(4.0)  # midpoint of (2, 6)
    assert state["cosine_distance"] == pytest.approx(float(losses.batch_cosine_distance(z + 0.3, z, 4.0)), abs=1e-6)
    tuner.t_high_slider.value = 8.0
    assert tuner.state()["mean_temperature"] == pytest.approx(5.0)


def test_tuner_blitted_image_matches_a_fresh_render(pair):
    tuner = widgets.TemperatureTuner(*pair)
    for value in (6.5, 7.0, 7.5):
        tuner.t_high_slider.value = value
    tuner.t_slider.value = 3.3
    fast, slow = _pixels(tuner.image.value), _pixels(tuner.render_fresh())
    assert fast.shape == slow.shape
    # Same picture; only antialiased edges where moving artists overlap static ones may differ.
    assert np.mean(np.abs(fast - slow) > 40) < 0.002
    assert tuner.full_redraws < tuner.redraws


def test_tuner_widget_descriptions_and_dom_classes(pair):
    tuner = widgets.TemperatureTuner(*pair)
    descriptions = [s.description for s in (tuner.t_slider, tuner.t_low_slider, tuner.t_high_slider)]
    assert descriptions == ["T", "T_low", "T_high"]
    assert tuner.batch_slider.description == "batch size"
    assert tuner.cswt_toggle.description == "CSWT"
    assert "cskd-readout" in tuner.readout._dom_classes
    assert "cskd-t-high" in tuner.t_high_slider._dom_classes
    bundle = tuner._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == tuner.widget.model_id


def test_tuner_never_touches_pyplot(pair):
    before = plt.get_fignums()
    tuner = widgets.TemperatureTuner(*pair)
    tuner.t_high_slider.value = 8.0
    tuner.render_fresh()
    assert plt.get_fignums() == before


def test_tuner_bad_input(pair):
    student, teacher = pair
    with pytest.raises(ValueError, match="t_low must be <= t_high"):
        widgets.TemperatureTuner(student, teacher, t_low=6.0, t_high=2.0)
    with pytest.raises(ValueError, match="batch_size must be an int in \\[2, 40\\]"):
        widgets.TemperatureTuner(student, teacher, batch_size=41)
    with pytest.raises(ValueError, match="batch_size must be an int in \\[2, 40\\]"):
        widgets.TemperatureTuner(student, teacher, batch_size=1)
    with pytest.raises(ValueError, match="same shape"):
        widgets.TemperatureTuner(student, teacher[:, :3])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        widgets.TemperatureTuner(student, teacher, temperature=0.0)
    with pytest.raises(TypeError, match="cswt must be a bool"):
        widgets.TemperatureTuner(student, teacher, cswt=1)


def test_figure_png_renders_any_figure():
    fig = Figure(figsize=(2, 1), dpi=50)
    fig.subplots().plot([0, 1], [1, 0])
    png = widgets.figure_png(fig)
    assert _pixels(png).shape == (50, 100, 3)


# ----------------------------------------------------------------------------- run logs for the browser


def _write_run(root, name: str, method: str, accuracy: float, cswt: bool = True) -> None:
    log = runs.RunLog(
        {"name": name, "method": method, "dataset": "digits", "cswt": cswt, "t_low": 2.0, "t_high": 6.0},
        path=root / name,
    )
    for step in (1, 11, 21):
        log.log_step(
            runs.StepRecord(
                step=step,
                epoch=step // 11,
                metrics={"loss": 1.0 / step, "loss_ce": 0.5 / step, "agreement": 0.5, "train_accuracy": 0.5},
                class_cosine=[0.9 + 0.001 * step, 0.8, 0.95],
                temperature_stats=(
                    {"q05": 2.1, "q25": 3.0, "q50": 4.0, "q75": 5.0, "q95": 5.9, "mean": 4.0, "min": 2.0, "max": 6.0}
                    if cswt
                    else None
                ),
                temperature_hist=[(2.0, 4.0, 3), (4.0, 6.0, 5)] if cswt else None,
            )
        )
    for epoch in (0, 1):
        log.log_eval(
            runs.EvalRecord(
                epoch=epoch,
                step=11 * (epoch + 1),
                metrics={
                    "accuracy": accuracy + 0.1 * epoch,
                    "agreement": 0.7 + 0.1 * epoch,
                    "loss": 0.5,
                    "cosine_distance": 0.1,
                    "teacher_accuracy": 0.95,
                },
            )
        )
    log.finish()


@pytest.fixture
def runs_dir(tmp_path):
    _write_run(tmp_path, "kd-a", "kd", 0.6, cswt=False)
    _write_run(tmp_path, "cskd-b", "cskd_cswt", 0.7)
    return tmp_path


def test_run_browser_lists_overlays_and_heatmaps(runs_dir):
    browser = widgets.RunBrowser(runs_dir)
    assert len(browser.run_select.options) == 2
    assert len(browser.run_select.value) == 2  # everything selected at first
    assert browser.curves_image.value[:4] == b"\x89PNG"
    assert browser.heatmap_image.value[:4] == b"\x89PNG"
    assert "kd-a" in browser.table.value and "cskd-b" in browser.table.value
    assert sorted(browser.selected_logs()) == ["cskd-b", "kd-a"]

    cskd_path = str(runs_dir / "cskd-b")
    browser.run_select.value = (cskd_path,)
    assert browser.heatmap_dropdown.value == cskd_path
    assert "kd-a" not in browser.table.value
    curves, heatmap = browser.curves_image.value, browser.heatmap_image.value
    browser.metric_dropdown.value = "loss"
    assert browser.curves_image.value != curves
    assert browser.heatmap_image.value == heatmap  # only the curves depend on the metric

    browser.run_select.value = (cskd_path, str(runs_dir / "kd-a"))
    browser.heatmap_dropdown.value = str(runs_dir / "kd-a")
    assert browser.heatmap_image.value != heatmap


def test_run_browser_refresh_finds_new_runs_and_skips_foreign_dirs(runs_dir):
    browser = widgets.RunBrowser(runs_dir)
    _write_run(runs_dir, "dist-c", "dist", 0.65)
    (runs_dir / "broken").mkdir()
    (runs_dir / "broken" / "config.json").write_text("{not json")
    with pytest.warns(UserWarning, match="skipped the run .*broken: .*cannot parse JSON"):
        browser.refresh()
    assert len(browser.run_select.options) == 3
    assert "skipped broken" in browser.message.value


def test_run_browser_refresh_redraws_only_what_changed(tmp_path):
    live = runs.RunLog({"name": "live", "method": "kd", "dataset": "digits"}, path=tmp_path / "live")
    live.log_step(runs.StepRecord(1, 0, {"loss": 1.0, "agreement": 0.5}, [0.5, 0.6, 0.7]))
    live.log_eval(runs.EvalRecord(0, 1, {"accuracy": 0.5, "agreement": 0.5, "loss": 1.0, "cosine_distance": 0.4}))
    live.flush()
    browser = widgets.RunBrowser(tmp_path)
    first = browser.curves_image.value
    browser.refresh()
    assert browser.curves_image.value is first  # nothing written since: nothing drawn again
    live.log_eval(runs.EvalRecord(1, 2, {"accuracy": 0.9, "agreement": 0.8, "loss": 0.5, "cosine_distance": 0.2}))
    live.flush()
    browser.refresh()
    assert browser.curves_image.value != first
    assert browser.selected_logs()["live"].evals["accuracy"].tolist() == [0.5, 0.9]  # its new part was read


def test_run_browser_empty_dir(tmp_path):
    browser = widgets.RunBrowser(tmp_path / "nothing-here")
    assert browser.run_select.options == ()
    assert "no run selected" in browser.table.value
    with pytest.raises(ValueError, match="metric must be one of"):
        widgets.RunBrowser(tmp_path, metric="speed")


# ----------------------------------------------------------------------------- RunLauncher


class _FakeRunLog:
    def __init__(self, name: str, status: str, path) -> None:
        self.name, self.status, self.path = name, status, path
        self.config = {"name": name, "epochs": 3, "teacher": "cnn_large"}


def _fake_train(monkeypatch, steps_before_wait: int = 2):
    """Replace run_experiment by a loop that reports steps until the stop event (or 6 steps)."""
    from cskd_viz import train

    calls = {}

    def run_experiment(config, runs_dir, callbacks=(), stop_event=None, progress=None):
        calls.update(config=config, progress=progress)
        log = _FakeRunLog("fake", "running", runs_dir / "fake")
        for cb in callbacks:
            cb.on_train_begin(log)
        for step in range(1, 7):
            record = runs.StepRecord(step=step, epoch=(step - 1) // 2, metrics={"loss": 1.0 / step, "agreement": 0.5})
            record.class_cosine = [0.9, 0.95]
            for cb in callbacks:
                cb.on_step(record)
            if step == steps_before_wait and calls.get("wait") is not None:
                calls["wait"].set()
                stop_event.wait(10)
            if stop_event.is_set():
                log.status = "interrupted"
                break
            if step % 2 == 0:
                for cb in callbacks:
                    cb.on_epoch_end(step // 2 - 1, runs.EvalRecord(step // 2 - 1, step, {"accuracy": 0.8}))
        else:
            log.status = "finished"
        for cb in callbacks:
            cb.on_train_end(log)
        return log

    monkeypatch.setattr(train, "run_experiment", run_experiment)
    return calls


def test_run_launcher_runs_in_background_and_reports(monkeypatch, tmp_path):
    calls = _fake_train(monkeypatch)
    launcher = widgets.RunLauncher(tmp_path, method="kd", epochs=3, t_low=1.5, config={"student": "mlp_small"})
    launcher.run_button.click()
    launcher.join(30)
    assert not launcher.running and launcher.error is None
    config = calls["config"]
    assert (config.method, config.epochs, config.t_low, config.student) == ("kd", 3, 1.5, "mlp_small")
    assert calls["progress"] is False  # the panel shows progress, not tqdm from a thread
    assert launcher.progress.value == 3
    assert "step 6" in launcher.progress_label.value and "test acc 0.8000" in launcher.progress_label.value
    assert "finished" in launcher.status.value
    assert launcher.image.value[:4] == b"\x89PNG"
    assert launcher.run_button.disabled is False and launcher.stop_button.disabled is True


def test_run_launcher_stop_ends_the_run(monkeypatch, tmp_path):
    calls = _fake_train(monkeypatch)
    calls["wait"] = threading.Event()
    launcher = widgets.RunLauncher(tmp_path, method="kd")
    launcher.start()
    assert calls["wait"].wait(30)
    assert launcher.running and launcher.stop_button.disabled is False
    launcher.start()  # a second Run while running is ignored
    launcher.stop_button.click()
    launcher.join(30)
    assert not launcher.running
    assert launcher.result.status == "interrupted"
    assert "interrupted" in launcher.status.value


def test_run_launcher_bad_settings_are_shown_not_raised(monkeypatch, tmp_path):
    _fake_train(monkeypatch)
    launcher = widgets.RunLauncher(tmp_path, config={"no_such_field": 1})
    launcher.start()
    assert launcher.thread is None
    assert "no_such_field" in launcher.status.value
    with pytest.raises(ValueError, match="method must be one of"):
        widgets.RunLauncher(tmp_path, method="nope")


def test_run_launcher_reports_trainer_errors(monkeypatch, tmp_path):
    from cskd_viz import train

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(train, "run_experiment", broken)
    launcher = widgets.RunLauncher(tmp_path)
    launcher.start()
    launcher.join(30)
    assert isinstance(launcher.error, RuntimeError)
    assert "disk full" in launcher.status.value
    assert launcher.run_button.disabled is False


def test_run_launcher_keeps_t_low_below_t_high(tmp_path):
    launcher = widgets.RunLauncher(tmp_path)
    launcher.t_low_slider.value = 8.0
    assert launcher.t_high_slider.value == 8.0
    launcher.t_high_slider.value = 1.0
    assert launcher.t_low_slider.value == 1.0


@pytest.mark.slow
def test_run_launcher_real_short_run_and_stop(tmp_path):
    """A real digits run through cskd_viz.train, then a second run stopped at its first step."""
    tiny = {"student": "mlp_small", "teacher": "mlp_large", "max_steps": 3, "teacher_epochs": 1, "batch_size": 128}
    launcher = widgets.RunLauncher(tmp_path, method="cskd_cswt", epochs=1, config=tiny)
    launcher.start()
    launcher.join(600)
    assert launcher.error is None, launcher.error
    assert launcher.result.status == "finished"
    assert runs.load_run(launcher.result.path).status == "finished"

    launcher.extra_config["max_steps"] = 500
    original = launcher._on_step

    def stop_at_first_step(record):
        original(record)
        launcher.stop()

    launcher._on_step = stop_at_first_step
    launcher.start()
    launcher.join(600)
    assert launcher.error is None, launcher.error
    reloaded = runs.load_run(launcher.result.path)
    assert reloaded.status == "interrupted"
    assert 1 <= reloaded.progress["step"] < 500


def test_panels_display_themselves(pair, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setitem(
        __import__("sys").modules, "IPython.display", types.SimpleNamespace(display=lambda obj: shown.append(obj))
    )
    tuner = widgets.TemperatureTuner(*pair)
    tuner._ipython_display_()
    assert shown == [tuner.widget]
