"""Tests for cskd_viz.plots: every function returns a titled, labelled Figure on small inputs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cskd_viz import diagnostics, losses, plots  # noqa: E402


@pytest.fixture(autouse=True)
def _no_show_and_close(monkeypatch):
    """The library must never call plt.show(); close every figure a test made."""

    def forbidden(*args, **kwargs):
        raise AssertionError("plt.show() called by library code")

    monkeypatch.setattr(plt, "show", forbidden)
    monkeypatch.setattr(Figure, "show", forbidden)
    yield
    plt.close("all")


@pytest.fixture
def class_cosine() -> pd.DataFrame:
    rows = [
        {"step": step, "class": c, "cosine": 1.0 - 0.4 * np.exp(-step / 20) * (c + 1) / 4}
        for step in (1, 11, 21, 31)
        for c in range(4)
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def temperatures() -> pd.DataFrame:
    steps = np.array([1, 11, 21, 31])
    return pd.DataFrame(
        {
            "step": steps,
            "q05": 2.1 + 0 * steps,
            "q25": 3.0 - steps / 100,
            "q50": 4.0 - steps / 100,
            "q75": 5.0 - steps / 100,
            "q95": 5.9 + 0 * steps,
            "mean": 4.0,
            "min": 2.0,
            "max": 6.0,
        }
    )


@pytest.fixture
def temperature_hist() -> pd.DataFrame:
    edges = np.linspace(2.0, 6.0, 5)
    parts = [
        pd.DataFrame({"step": step, "bin_left": edges[:-1], "bin_right": edges[1:], "count": counts})
        for step, counts in ((10, [1, 2, 3, 4]), (20, [4, 3, 2, 1]))
    ]
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def evals() -> dict[str, pd.DataFrame]:
    def frame(offset: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "epoch": [0, 1, 2],
                "step": [10, 20, 30],
                "split": "test",
                "accuracy": np.array([0.5, 0.7, 0.8]) + offset,
                "agreement": np.array([0.6, 0.8, 0.9]) + offset,
                "loss": [1.0, 0.7, 0.5],
                "cosine_distance": [0.2, 0.1, 0.05],
                "teacher_accuracy": 0.95,
            }
        )

    return {"kd": frame(0.0), "cskd": frame(0.02)}


@pytest.fixture
def pair(gen) -> tuple[torch.Tensor, torch.Tensor]:
    teacher = 3.0 * torch.randn(48, 6, generator=gen)
    return teacher + torch.randn(48, 6, generator=gen), teacher


def _legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


# ----------------------------------------------------------------------------- heatmaps


def test_class_cosine_heatmap_labels_and_grid(class_cosine):
    fig = plots.plot_class_cosine_heatmap(class_cosine)
    ax = fig.axes[0]
    assert isinstance(fig, Figure)
    assert ax.get_title() == "Per-class cosine of batch predictions"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("step", "class")
    image = ax.images[0]
    assert image.get_array().shape == (4, 4)  # classes x steps
    assert fig.axes[1].get_ylabel() == "cos(P_s[:, j], P_t[:, j])"  # the colour bar


def test_class_cosine_heatmap_draws_on_given_ax(class_cosine):
    fig, ax = plt.subplots()
    assert plots.plot_class_cosine_heatmap(class_cosine, ax=ax, title="mine", colorbar=False) is fig
    assert ax.get_title() == "mine"
    assert len(fig.axes) == 1


def test_class_cosine_heatmaps_share_one_colour_scale(class_cosine):
    other = class_cosine.assign(cosine=class_cosine["cosine"] ** 3)
    fig = plots.plot_class_cosine_heatmaps({"kd": class_cosine, "cskd": other})
    meshes = [fig.axes[0].images[0], fig.axes[1].images[0]]
    limits = {(m.norm.vmin, m.norm.vmax) for m in meshes}
    assert len(limits) == 1
    (vmin, vmax) = limits.pop()
    assert vmin == pytest.approx(float(other["cosine"].min()))
    assert vmax == pytest.approx(float(class_cosine["cosine"].max()))
    assert [fig.axes[0].get_title(), fig.axes[1].get_title()] == ["kd", "cskd"]
    assert fig.get_suptitle() == "Per-class cosine of batch predictions"
    assert len(fig.axes) == 3  # two panels, one colour bar


def _long_run(classes: int, steps: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    step = np.arange(1, steps + 1) * 10
    cosine = np.clip(0.5 + 0.5 * np.linspace(0, 1, steps)[None, :] - 0.3 * rng.random((classes, 1)), 0, 1)
    return pd.DataFrame(
        {"step": np.repeat(step, classes), "class": np.tile(np.arange(classes), steps), "cosine": cosine.T.reshape(-1)}
    )


def test_heatmap_of_a_long_run_is_binned_to_the_axes_width(tmp_path):
    frame = _long_run(1000, 2000)
    fig = plots.plot_class_cosine_heatmap(frame)
    image = fig.axes[0].images[0]
    assert image.get_array().shape == (1000, 600)  # 2000 steps binned to 600 columns
    np.testing.assert_allclose(image.get_array()[:, -1], frame[frame.step > 19_960].groupby("class").cosine.mean(),
                               rtol=0.02)  # fmt: skip
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert labels and all(label.endswith("k") or label == "0" for label in labels), labels
    fig.savefig(tmp_path / "long.png", dpi=80)


def test_heatmap_order_and_top_k_name_the_worst_classes():
    frame = _long_run(50, 30)
    final = frame[frame.step == frame.step.max()].set_index("class").cosine
    names = [f"class-{c}" for c in range(50)]
    fig = plots.plot_class_cosine_heatmap(frame, top_k=5, order="worst_final", class_names=names)
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (5, 30)
    shown = [t.get_text() for t in ax.get_yticklabels()]
    worst = [names[c] for c in final.sort_values().index[:5]]
    assert shown == worst[::-1]  # the worst on top
    with pytest.raises(ValueError, match="order must be one of"):
        plots.plot_class_cosine_heatmap(frame, order="best")
    with pytest.raises(ValueError, match="class_names has 2 names for 50 classes"):
        plots.plot_class_cosine_heatmap(frame, class_names=["a", "b"])


def test_step_ticks_are_readable():
    from cskd_viz.plots._common import human_count

    assert [human_count(v) for v in (0, 950, 15_000, 150_000, 1_250_000)] == ["0", "950", "15k", "150k", "1.2M"]


def test_heatmap_empty_frame_gives_labelled_panel():
    empty = pd.DataFrame(columns=["step", "class", "cosine"])
    fig = plots.plot_class_cosine_heatmap(empty)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "step"
    assert "no per-class cosines" in ax.texts[0].get_text()


def test_heatmap_bad_input():
    with pytest.raises(TypeError, match="class_cosine_frame"):
        plots.plot_class_cosine_heatmap({"step": [1]})
    with pytest.raises(ValueError, match="class_cosine_frame is missing columns \\['cosine'\\]"):
        plots.plot_class_cosine_heatmap(pd.DataFrame({"step": [1], "class": [0]}))
    with pytest.raises(ValueError, match="frames"):
        plots.plot_class_cosine_heatmaps({})


# ----------------------------------------------------------------------------- temperatures


def test_temperature_trace_bands_and_labels(temperatures):
    fig = plots.plot_temperature_trace(temperatures, t_low=2.0, t_high=6.0)
    ax = fig.axes[0]
    assert ax.get_title() == "CSWT temperatures over training"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("step", "temperature T_i")
    assert _legend_texts(ax) == ["q05-q95", "q25-q75", "median"]
    median = ax.get_lines()[0]
    np.testing.assert_allclose(median.get_ydata(), temperatures["q50"])


def test_temperature_trace_empty_frame_when_cswt_off():
    empty = pd.DataFrame(columns=["step", "q05", "q25", "q50", "q75", "q95", "mean", "min", "max"])
    ax = plots.plot_temperature_trace(empty).axes[0]
    assert "CSWT off" in ax.texts[0].get_text()
    assert ax.get_ylabel() == "temperature T_i"


def test_temperature_histogram_defaults_to_last_step(temperature_hist):
    ax = plots.plot_temperature_histogram(temperature_hist).axes[0]
    assert ax.get_title() == "CSWT temperatures at step 20"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("temperature T_i", "samples")
    assert [p.get_height() for p in ax.patches] == [4, 3, 2, 1]


def test_temperature_histogram_chosen_step(temperature_hist):
    ax = plots.plot_temperature_histogram(temperature_hist, step=10).axes[0]
    assert [p.get_height() for p in ax.patches] == [1, 2, 3, 4]
    assert [p.get_width() for p in ax.patches] == [1.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="step=15 was not logged"):
        plots.plot_temperature_histogram(temperature_hist, step=15)


def test_cswt_mapping_without_cosines():
    ax = plots.plot_cswt_mapping(2.0, 6.0).axes[0]
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [0.0, 1.0]
    assert list(line.get_ydata()) == [6.0, 2.0]  # least similar -> T_high, most similar -> T_low
    assert ax.get_ylabel() == "temperature T_i"
    assert ax.get_title() == "CSWT mapping: similarity -> temperature"


def test_cswt_mapping_scatter_matches_library(pair):
    student, teacher = pair
    cosines = diagnostics.per_sample_cosine(student, teacher)
    ax = plots.plot_cswt_mapping(2.0, 6.0, cosines=cosines, temperature=4.0).axes[0]
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], cosines.numpy(), rtol=1e-6)
    np.testing.assert_allclose(offsets[:, 1], losses.cswt_temperatures(student, teacher).numpy(), rtol=1e-5)
    assert ax.get_xlabel() == "per-sample cosine s_i (T = 1)"
    assert "fixed T = 4" in _legend_texts(ax)


def test_cswt_mapping_equal_cosines_give_midpoint():
    ax = plots.plot_cswt_mapping(2.0, 6.0, cosines=[0.7]).axes[0]  # B = 1
    assert ax.collections[0].get_offsets()[0, 1] == pytest.approx(4.0)


def test_cswt_mapping_bad_input():
    with pytest.raises(ValueError, match="t_low must be <= t_high"):
        plots.plot_cswt_mapping(6.0, 2.0)
    with pytest.raises(ValueError, match="cosines"):
        plots.plot_cswt_mapping(2.0, 6.0, cosines=[[0.1, 0.2]])
    with pytest.raises(ValueError, match="cosines contains NaN"):
        plots.plot_cswt_mapping(2.0, 6.0, cosines=[0.1, float("nan")])


# ----------------------------------------------------------------------------- KL vs cosine


def test_kl_vs_cosine_scatter(pair):
    student, teacher = pair
    frame = diagnostics.KLvsCosine(student, teacher).per_sample()
    ax = plots.plot_kl_vs_cosine_scatter(frame, temperature=4.0).axes[0]
    assert ax.get_title() == "Per-sample KL vs cosine distance"
    assert ax.get_xlabel() == "1 - cos(P_s[i], P_t[i]) (T = 4)"
    assert ax.get_ylabel() == "KL(P_t[i] || P_s[i])"
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(frame)
    title = ax.get_legend().get_title().get_text()
    rho = float(title.split("=")[1])
    assert -1.0 <= rho <= 1.0


def test_kl_vs_cosine_scatter_log_axes(pair):
    frame = diagnostics.KLvsCosine(*pair).per_sample()
    ax = plots.plot_kl_vs_cosine_scatter(frame, log=True).axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")


def test_kl_vs_cosine_transforms_panels(pair):
    frame = diagnostics.KLvsCosine(*pair).frame()
    fig = plots.plot_kl_vs_cosine_transforms(frame)
    scale_ax, shift_ax = fig.axes
    assert scale_ax.get_xlabel() == "scale a (student logits * a)"
    assert shift_ax.get_xlabel() == "shift b (student logits + b)"
    assert scale_ax.get_xscale() == "log"
    assert fig.get_suptitle() == "KD vs CSKD under logit transforms"
    assert _legend_texts(scale_ax)[:2] == ["KD loss", "CSKD loss"]
    # A shift leaves the softmax unchanged: both normalised curves are flat at 1.
    for line in shift_ax.get_lines()[:2]:
        np.testing.assert_allclose(line.get_ydata(), 1.0, rtol=1e-5)


def test_kl_vs_cosine_transforms_shades_opposite_directions():
    frame = pd.DataFrame(
        {
            "transform": "scale",
            "amount": [0.5, 1.0, 2.0],
            "kd_loss": [1.0, 2.0, 3.0],
            "cskd_loss": [3.0, 2.0, 1.0],
        }
    )
    ax = plots.plot_kl_vs_cosine_transforms(frame).axes[0]
    assert "opposite directions" in _legend_texts(ax)
    assert len(ax.patches) == 2  # two shaded intervals


def test_kl_vs_cosine_transforms_bad_ax(pair):
    frame = diagnostics.KLvsCosine(*pair).frame()
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="ax must be None or a sequence of 2"):
        plots.plot_kl_vs_cosine_transforms(frame, ax=ax)
    with pytest.raises(ValueError, match="frame is missing columns"):
        plots.plot_kl_vs_cosine_transforms(frame, measures=("nope",))


# ----------------------------------------------------------------------------- runs


def test_learning_curves_from_dict(evals):
    ax = plots.plot_learning_curves(evals).axes[0]
    assert ax.get_title() == "Test accuracy"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "test accuracy")
    assert _legend_texts(ax) == ["kd", "cskd", "teacher"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), evals["cskd"]["accuracy"])


def test_learning_curves_from_long_frame_and_runlog_like(evals):
    long = pd.concat([f.assign(run=name) for name, f in evals.items()], ignore_index=True)
    ax_long = plots.plot_learning_curves(long, metric="loss").axes[0]

    class FakeLog:
        def __init__(self, frame):
            self.evals = frame

    ax_logs = plots.plot_learning_curves({k: FakeLog(v) for k, v in evals.items()}, metric="loss").axes[0]
    assert ax_long.get_ylabel() == "test cross-entropy"
    for a, b in zip(ax_long.get_lines(), ax_logs.get_lines(), strict=True):
        np.testing.assert_allclose(a.get_ydata(), b.get_ydata())


def test_learning_curves_step_axis_and_smoothing():
    steps = pd.DataFrame({"step": np.arange(1, 11), "loss": np.linspace(2, 1, 10)})
    ax = plots.plot_learning_curves({"run": steps}, metric="loss", x="step", smooth=3).axes[0]
    assert ax.get_xlabel() == "step"
    assert ax.get_lines()[0].get_ydata()[2] == pytest.approx(steps["loss"][:3].mean())


def test_learning_curves_bad_input(evals):
    with pytest.raises(ValueError, match="evals_by_run is missing columns \\['nope'\\]"):
        plots.plot_learning_curves(evals, metric="nope")
    with pytest.raises(TypeError, match="evals_by_run"):
        plots.plot_learning_curves([1, 2])
    with pytest.raises(ValueError, match="smooth"):
        plots.plot_learning_curves(evals, smooth=0)


def test_agreement_skips_runs_without_agreement(evals):
    teacher = evals["kd"].assign(agreement=np.nan)
    ax = plots.plot_agreement({**evals, "teacher": teacher}).axes[0]
    assert ax.get_title() == "Student-teacher top-1 agreement"
    assert ax.get_ylabel() == "top-1 agreement with teacher"
    assert _legend_texts(ax) == ["kd", "cskd"]


# ----------------------------------------------------------------------------- batch size


def test_batch_size_effect_frame_numbers(pair):
    student, teacher = pair
    frame = plots.batch_size_effect_frame(student, teacher, [2, 4, 48], temperature=4.0, repeats=3, seed=0)
    assert list(frame.columns[:2]) == ["batch_size", "repeat"]
    assert len(frame) == 9
    pairs = frame[frame["batch_size"] == 2]  # the smallest batch CSKD accepts: d is no longer trivially 0
    assert (pairs["cosine_distance"] > 0).all()
    full = frame[frame["batch_size"] == 48]
    expected = float(losses.batch_cosine_distance(student, teacher, 4.0))
    np.testing.assert_allclose(full["cosine_distance"], expected, rtol=1e-5)
    np.testing.assert_allclose(full["kd_loss"], float(losses.kd_loss(student, teacher, 4.0)), rtol=1e-5)
    cosines = diagnostics.per_class_cosine(student, teacher, 4.0).double()
    np.testing.assert_allclose(full["class_cosine_std"], float(cosines.std(correction=0)), rtol=1e-4)


def test_batch_size_effect_frame_is_seeded(pair):
    a = plots.batch_size_effect_frame(*pair, [8], repeats=4, seed=3)
    b = plots.batch_size_effect_frame(*pair, [8], repeats=4, seed=3)
    c = plots.batch_size_effect_frame(*pair, [8], repeats=4, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["cosine_distance"], c["cosine_distance"])


def test_batch_size_effect_frame_bad_input(pair):
    with pytest.raises(ValueError, match="batch_sizes must hold ints in \\[2, 48\\]"):
        plots.batch_size_effect_frame(*pair, [64])
    with pytest.raises(ValueError, match="batch_sizes must hold ints in \\[2, 48\\].*batch of one"):
        plots.batch_size_effect_frame(*pair, [1, 8])
    with pytest.raises(ValueError, match="batch_sizes"):
        plots.batch_size_effect_frame(*pair, [])
    with pytest.raises(ValueError, match="repeats"):
        plots.batch_size_effect_frame(*pair, [4], repeats=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        plots.batch_size_effect_frame(*pair, [4], temperature=0.0)


def test_plot_batch_size_effect(pair):
    fig = plots.plot_batch_size_effect(*pair, [2, 4, 8, 48], repeats=2)
    d_ax, std_ax = fig.axes
    assert d_ax.get_xlabel() == std_ax.get_xlabel() == "batch size"
    assert d_ax.get_ylabel() == "cosine distance d(T)"
    assert std_ax.get_ylabel() == "std of per-class cosine"
    assert d_ax.get_xscale() == "log"
    assert fig.get_suptitle().startswith("Batch size changes CSKD's batch cosine (T = 4")
    np.testing.assert_allclose(d_ax.get_lines()[0].get_xdata(), [2, 4, 8, 48])


def test_palette_is_colorblind():
    import seaborn as sns

    assert plots.palette(3) == list(sns.color_palette("colorblind", 3))


def test_plots_do_not_add_pyplot_figures_when_ax_given(class_cosine, temperatures, evals):
    fig, axes = plt.subplots(1, 3)
    before = plt.get_fignums()
    plots.plot_class_cosine_heatmap(class_cosine, ax=axes[0])
    plots.plot_temperature_trace(temperatures, ax=axes[1])
    plots.plot_learning_curves(evals, ax=axes[2])
    assert plt.get_fignums() == before
