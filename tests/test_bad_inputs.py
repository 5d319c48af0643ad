"""Bad input as a user would hit it (issue #14): each test failed on the code before the fix.

5. a batch of one sample gave a CSKD loss (and ``d``) of exactly 0, "perfect agreement";
6. extreme temperatures and finite logits near float32's limit gave NaN, OverflowError or a torch
   RuntimeError; a ``(B,)`` temperature with ``requires_grad`` silently got no gradient;
7. a refused accumulator update still counted;
11. ``cswt=np.True_`` refused, ``torch.tensor(True)`` taken as ``T = 1``, per-class cosines above 1,
    an unbounded tuner cache, torch's ``IndexError`` for out-of-range targets, PIL's error for ``dpi=0``.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from cskd_viz import Monitor, diagnostics, losses, methods, metrics  # noqa: E402
from cskd_viz._fused import weighted_batch_cosine_distance  # noqa: E402
from cskd_viz.training import RunConfig  # noqa: E402


def _pair(b: int = 6, c: int = 5, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    teacher = 3.0 * torch.randn(b, c, generator=g, dtype=dtype)
    return teacher + torch.randn(b, c, generator=g, dtype=dtype), teacher


def _targets(b: int = 6, c: int = 5) -> torch.Tensor:
    return torch.arange(b) % c


# ----------------------------------------------------------------------------- 5. a batch of one

ONE_SAMPLE_CALLS = {
    "cskd_loss": lambda s, t: losses.cskd_loss(s, t),
    "cskd_loss_cswt_off": lambda s, t: losses.cskd_loss(s, t, cswt=False),
    "batch_cosine_distance": lambda s, t: losses.batch_cosine_distance(s, t, 4.0),
    "batch_cosine_distance_per_sample_T": lambda s, t: losses.batch_cosine_distance(s, t, torch.tensor([3.0])),
    "CSKDLoss": lambda s, t: losses.CSKDLoss()(s, t),
    "methods.CSKD": lambda s, t: methods.CSKD()(s, t, torch.tensor([0])),
    "methods.cskd": lambda s, t: methods.get_method("cskd")(s, t, torch.tensor([0]), extras=False),
    "fused kernel": lambda s, t: weighted_batch_cosine_distance(s, t, s.new_full((1, 1, 1), 4.0), s.new_ones(1)),
    "per_class_cosine": lambda s, t: diagnostics.per_class_cosine(s, t),
    "KLvsCosine": lambda s, t: diagnostics.KLvsCosine(s, t),
}


@pytest.mark.parametrize("name", sorted(ONE_SAMPLE_CALLS))
def test_cskd_refuses_a_batch_of_one(name):
    s, t = _pair(1)
    with pytest.raises(ValueError, match=r"needs at least 2 samples per batch, got B=1.*cosine is 1"):
        ONE_SAMPLE_CALLS[name](s.requires_grad_(), t)


@pytest.mark.parametrize("name", sorted(ONE_SAMPLE_CALLS))
def test_cskd_accepts_a_batch_of_two(name):
    s, t = _pair(2)
    call = ONE_SAMPLE_CALLS[name]
    if "per_sample_T" in name:
        call = lambda a, b: losses.batch_cosine_distance(a, b, torch.tensor([3.0, 5.0]))  # noqa: E731
    elif name.startswith("methods"):
        call = lambda a, b: methods.CSKD()(a, b, torch.tensor([0, 1]))  # noqa: E731
    call(s, t)


def test_the_losses_that_compare_rows_still_take_one_sample():
    s, t = _pair(1)
    assert float(losses.kd_loss(s, t)) > 0  # KD compares the rows: one sample is enough
    assert losses.cswt_temperatures(s, t).tolist() == [4.0]  # the midpoint, as documented
    assert diagnostics.per_sample_cosine(s, t).shape == (1,)
    assert set(methods.KD()(s, t, torch.tensor([0]))) == {"loss_ce", "loss_kd"}


class _FakeTwoRanks:
    """Stands in for a 2-rank group: the 'other rank' holds the same rows, shifted."""

    def gather(self, *tensors, group, **kwargs):
        return tuple(torch.cat([x, x + 0.5]) if isinstance(x, torch.Tensor) else x for x in tensors)

    def local_rows(self, x, group):
        return x[: x.shape[0] // 2]


def test_under_a_group_the_global_batch_counts(monkeypatch):
    from cskd_viz import distributed

    s, t = _pair(1)
    fake = _FakeTwoRanks()
    monkeypatch.setattr(distributed, "gather_batch", fake.gather)
    monkeypatch.setattr(distributed, "local_rows", fake.local_rows)
    # one sample per rank, two in all: accepted, and equal to the loss on the concatenated batch
    loss, temps = losses.cskd_loss(s, t, group=object(), return_temperatures=True)
    torch.testing.assert_close(loss, losses.cskd_loss(torch.cat([s, s + 0.5]), torch.cat([t, t + 0.5])))
    assert temps.shape == (1,)
    d = losses.batch_cosine_distance(s, t, 4.0, group=object())
    torch.testing.assert_close(d, losses.batch_cosine_distance(torch.cat([s, s + 0.5]), torch.cat([t, t + 0.5]), 4.0))
    # a group whose global batch is one sample (e.g. a single rank): refused, naming the global batch
    monkeypatch.setattr(distributed, "gather_batch", lambda *x, group, **k: x)
    with pytest.raises(ValueError, match=r"at least 2 samples per global batch \(all ranks together\)"):
        losses.cskd_loss(s, t, group=object())


def test_run_config_refuses_batch_size_one_for_cskd_only():
    for method in ("cskd", "cskd_cswt"):
        with pytest.raises(ValueError, match=rf"batch_size must be >= 2 for method '{method}', got 1"):
            RunConfig(method=method, batch_size=1, epochs=1)
    assert RunConfig(method="kd", batch_size=1, epochs=1).batch_size == 1
    assert RunConfig(method="cskd", batch_size=2, epochs=1).batch_size == 2
    # global batch: the batch of all processes counts, checked when training starts
    assert RunConfig(method="cskd", batch_size=1, epochs=1, global_batch=True).batch_size == 1


def test_trainer_checks_refuse_cskd_loaders_with_batches_of_one():
    from cskd_viz.training.settings import check_batch_size, check_train_loader

    data = TensorDataset(torch.randn(9, 3), torch.zeros(9, dtype=torch.long))
    cskd = methods.get_method("cskd_cswt")
    with pytest.raises(ValueError, match=r"batch_size must be >= 2 for method 'cskd_cswt', got 1"):
        check_train_loader(cskd, DataLoader(data, batch_size=1))
    with pytest.raises(ValueError, match=r"ends every epoch with a batch of one sample.*drop_last=True"):
        check_train_loader(cskd, DataLoader(data, batch_size=4))  # 9 = 2 * 4 + 1
    check_train_loader(cskd, DataLoader(data, batch_size=4, drop_last=True))
    check_train_loader(cskd, DataLoader(data, batch_size=3))
    check_train_loader(methods.get_method("kd"), DataLoader(data, batch_size=1))
    check_batch_size("cskd", 1, global_batch=True, world_size=2)
    with pytest.raises(ValueError, match=r"global batch of 1 process"):
        check_batch_size("cskd", 1, global_batch=True, world_size=1)


def test_monitor_records_a_last_batch_of_one_as_undefined_not_zero():
    s, t = _pair(8)
    y = _targets(8)
    monitor = Monitor(None, num_classes=5, log_every=1)
    monitor.log_step(1, s, t, y, losses=0.5, temperatures=torch.full((8,), 3.0))
    monitor.log_step(2, s[:1], t[:1], y[:1], losses=0.4, temperatures=torch.full((1,), 3.0))  # no exception
    monitor.eval_update(s[:1], t[:1], y[:1])
    record = monitor.log_eval(0)
    monitor.close()
    steps = monitor.run_log.steps.set_index("step")
    assert steps.loc[1, "cosine_distance"] > 0 and math.isnan(steps.loc[2, "cosine_distance"])
    assert steps.loc[2, "agreement"] == 1.0 and steps.loc[2, "loss"] == pytest.approx(0.4)
    assert sorted(monitor.run_log.class_cosine["step"].unique()) == [1]  # no per-class cosines of one sample
    assert math.isnan(record.metrics["cosine_distance"]) and math.isfinite(record.metrics["loss"])


def test_epoch_cosines_of_a_single_sample_are_nan():
    s, t = _pair(1)
    assert torch.isnan(metrics.class_cosine(s, t)).all()
    metric = metrics.PerClassCosine(5)
    metric.update(s, t)
    assert torch.isnan(metric.compute()).all() and torch.isnan(metric.compute_batch_mean()).all()
    s8, t8 = _pair(8)
    metric.update(s8, t8)  # now 9 samples: defined; the batch mean only counts the batch of 8
    torch.testing.assert_close(metric.compute(), metrics.class_cosine(torch.cat([s, s8]), torch.cat([t, t8])))
    torch.testing.assert_close(metric.compute_batch_mean(), metrics.class_cosine(s8, t8))


# ----------------------------------------------------------------------------- 6. temperatures and logits

S, T6 = _pair()
SCALAR_TEMPERATURE_CALLS = {
    "kd_loss": lambda v: losses.kd_loss(S, T6, v),
    "batch_cosine_distance": lambda v: losses.batch_cosine_distance(S, T6, v),
    "cskd_loss": lambda v: losses.cskd_loss(S, T6, v),
    "dist_loss": lambda v: losses.dist_loss(S, T6, v),
    "KDLoss": lambda v: losses.KDLoss(v),
    "CSKDLoss": lambda v: losses.CSKDLoss(v),
    "DISTLoss": lambda v: losses.DISTLoss(v),
    "methods.KD": lambda v: methods.KD(temperature=v),
    "methods.CSKD": lambda v: methods.CSKD(temperature=v),
    "methods.DIST": lambda v: methods.DIST(temperature=v),
    "per_class_cosine": lambda v: diagnostics.per_class_cosine(S, T6, v),
    "per_sample_cosine": lambda v: diagnostics.per_sample_cosine(S, T6, v),
    "per_sample_kl": lambda v: diagnostics.per_sample_kl(S, T6, v),
    "prediction_entropy": lambda v: diagnostics.prediction_entropy(S, v),
    "KLvsCosine": lambda v: diagnostics.KLvsCosine(S, T6, v),
    "class_cosine": lambda v: metrics.class_cosine(S, T6, v),
    "PerClassCosine": lambda v: metrics.PerClassCosine(5, v),
}
RANGE_CALLS = {
    "cswt_temperatures": lambda **kw: losses.cswt_temperatures(S, T6, **kw),
    "cskd_loss": lambda **kw: losses.cskd_loss(S, T6, **kw),
    "CSKDLoss": lambda **kw: losses.CSKDLoss(**kw),
    "methods.CSKD": lambda **kw: methods.CSKD(**kw),
    "TemperatureStats": lambda **kw: metrics.TemperatureStats(**kw),
    "temperature_stats": lambda **kw: metrics.temperature_stats(torch.tensor([2.0, 3.0]), **kw),
}


@pytest.mark.parametrize("value", [1e-40, 1e300, 1e-4, 1e4])
@pytest.mark.parametrize("name", sorted(SCALAR_TEMPERATURE_CALLS))
def test_temperatures_outside_the_documented_range_are_refused(name, value):
    with pytest.raises(ValueError, match=r"temperature must be in \[0.001, 1000\]"):
        SCALAR_TEMPERATURE_CALLS[name](value)


@pytest.mark.parametrize("kwargs", [{"t_low": 1e-40}, {"t_high": 1e300}, {"t_low": 1e-4, "t_high": 2.0}])
@pytest.mark.parametrize("name", sorted(RANGE_CALLS))
def test_cswt_ranges_outside_the_documented_range_are_refused(name, kwargs):
    with pytest.raises(ValueError, match=r"t_(low|high) must be in \[0.001, 1000\]"):
        RANGE_CALLS[name](**kwargs)


@pytest.mark.parametrize("value", [1e-3, 1e3])
@pytest.mark.parametrize("name", sorted(SCALAR_TEMPERATURE_CALLS))
def test_the_ends_of_the_range_give_finite_results(name, value):
    out = SCALAR_TEMPERATURE_CALLS[name](value)
    if isinstance(out, torch.Tensor):
        assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "call",
    [
        lambda v: losses.kd_loss(S, T6, v),
        lambda v: losses.batch_cosine_distance(S, T6, v),
        lambda v: diagnostics.per_class_cosine(S, T6, v),
        lambda v: diagnostics.prediction_entropy(S, v),
        lambda v: metrics.TemperatureStats().update(v),
    ],
    ids=["kd_loss", "batch_cosine_distance", "per_class_cosine", "prediction_entropy", "TemperatureStats"],
)
@pytest.mark.parametrize("bad", [1e-5, 1e4, 1e300])
def test_per_sample_temperature_tensors_outside_the_range_are_refused(call, bad):
    per_sample = torch.tensor([2.0, 3.0, bad, 4.0, 5.0, 6.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"temperatures? must lie in \[0.001, 1000\] .*everywhere"):
        call(per_sample)


def test_monitor_refuses_recorded_temperatures_outside_the_range():
    s, t = _pair()
    monitor = Monitor(None, num_classes=5, log_every=1)
    with pytest.raises(ValueError, match=r"temperatures must lie in \[0.001, 1000\]"):
        monitor.log_step(1, s, t, losses=0.5, temperatures=torch.full((6,), 1e4))
    monitor.close()


@pytest.mark.parametrize("value", [3e38, -3e38, 1e31])
def test_finite_logits_beyond_the_bound_are_a_clear_error(value):
    s, t = _pair()
    big = s.clone()
    big[0, 0] = value
    calls = [
        lambda a, b: losses.kd_loss(a, b),
        lambda a, b: losses.batch_cosine_distance(a, b, 0.5),
        lambda a, b: losses.cskd_loss(a, b),
        lambda a, b: losses.dist_loss(a, b, 0.5),
        lambda a, b: methods.KD()(a, b, _targets()),
        lambda a, b: diagnostics.per_sample_kl(a, b),
        lambda a, b: metrics.PerClassCosine(5).update(a, b),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"student_logits has entries of magnitude up to .*\|z\| <= 1e\+30"):
            call(big, t)
        with pytest.raises(ValueError, match=r"teacher_logits has entries of magnitude"):
            call(t, big)
    with pytest.raises(ValueError, match=r"logits has entries of magnitude"):
        diagnostics.prediction_entropy(big)


@st.composite
def huge_logit_pairs(draw):
    """Logits up to the documented bound, with rows at both ends, in float32 or float64."""
    b, c = draw(st.integers(2, 6)), draw(st.integers(1, 5))
    bound = float(np.float32(losses.MAX_ABS_LOGIT))  # 1e30 rounded to float32 (1.0000000150e30) counts as 1e30
    elements = st.floats(-bound, bound, allow_nan=False, width=32)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    pair = [torch.from_numpy(draw(arrays(np.float32, (b, c), elements=elements))).to(dtype) for _ in range(2)]
    return pair[0], pair[1], draw(st.sampled_from([1e-3, 0.5, 4.0, 1e3]))


@given(huge_logit_pairs())
def test_property_logits_within_the_bound_give_finite_losses_and_gradients(case):
    s, t, temperature = case
    for loss in (losses.kd_loss, losses.batch_cosine_distance, losses.cskd_loss, losses.dist_loss):
        a, b = s.clone().requires_grad_(), t.clone().requires_grad_()
        value = loss(a, b, temperature)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all(), loss
    for value in (
        diagnostics.per_class_cosine(s, t, temperature),
        diagnostics.per_sample_kl(s, t, temperature),
        diagnostics.prediction_entropy(s, temperature),
        metrics.class_cosine(s, t, temperature),
    ):
        assert torch.isfinite(value).all()


def test_temperature_tensors_that_require_grad_are_refused_by_the_losses():
    s, t = _pair()
    per_sample = torch.full((6,), 3.0, requires_grad=True)
    for call in (
        lambda: losses.batch_cosine_distance(s, t, per_sample),
        lambda: losses.kd_loss(s, t, per_sample),
        lambda: losses.cskd_loss(s, t, torch.tensor(4.0, requires_grad=True)),
    ):
        with pytest.raises(ValueError, match=r"temperature requires grad.*stop-gradients.*temperature\.detach\(\)"):
            call()
    detached = losses.batch_cosine_distance(s, t, per_sample.detach())
    # diagnostics and metrics return no gradient: they take such a tensor as its values
    torch.testing.assert_close(diagnostics.per_class_cosine(s, t, per_sample), diagnostics.per_class_cosine(s, t, 3.0))
    assert torch.isfinite(detached)


@pytest.mark.parametrize("value", [np.float64(3.0), np.int64(3), np.float32(3.0), torch.tensor(3.0), torch.tensor(3)])
def test_numpy_scalars_and_0d_tensors_are_numbers(value):
    s, t = _pair()
    for fn in (losses.kd_loss, losses.batch_cosine_distance, losses.cskd_loss, losses.dist_loss):
        torch.testing.assert_close(fn(s, t, value), fn(s, t, 3.0))
    assert methods.KD(temperature=value).temperature == 3.0 and isinstance(losses.KDLoss(value).temperature, float)
    assert losses.cswt_temperatures(s, t, value, 5.0).min() == pytest.approx(3.0)


@pytest.mark.parametrize("value", [True, np.True_, torch.tensor(True), torch.tensor([True] * 6)])
def test_bools_are_not_temperatures(value):
    s, t = _pair()
    for call in (
        lambda: losses.kd_loss(s, t, value),
        lambda: losses.batch_cosine_distance(s, t, value),
        lambda: losses.cskd_loss(s, t, value),
        lambda: losses.cswt_temperatures(s, t, t_low=value),
        lambda: methods.CSKD(temperature=value),
        lambda: diagnostics.per_class_cosine(s, t, value),
    ):
        with pytest.raises(TypeError, match=r"(temperature|t_low) must be (a real number|a number or a floating)"):
            call()


# ----------------------------------------------------------------------------- 7. validate before mutate


def _states(metric) -> dict:
    return {name: getattr(metric, name).clone() for name in metric._defaults} | {"count": metric._update_count}


def _assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for name, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[name]) or (value.isnan() == after[name].isnan()).all(), name
        else:
            assert value == after[name], name


S8, T8 = _pair(8)
GOOD_AND_BAD = {  # metric factory, a good update, bad updates
    "PerClassCosine": (
        lambda: metrics.PerClassCosine(5),
        (S8, T8),
        [(S8[:, :3], T8[:, :3]), (S8, T8[:4]), (S8.clone().fill_(float("nan")), T8), (S8 * 1e32, T8)],
    ),
    "TemperatureStats": (
        lambda: metrics.TemperatureStats(),
        (torch.tensor([2.0, 3.0]),),
        [(torch.tensor([2.0, -1.0]),), (torch.tensor([2.0, 1e4]),), (torch.ones(2, 2),), ([2.0],)],
    ),
    "Agreement": (
        lambda: metrics.Agreement(),
        (S8, T8, _targets(8)),
        [(S8, T8, _targets(8) + 5), (S8, T8, -_targets(8) - 1), (S8, T8, _targets(4)), (S8, T8, _targets(8).float())],
    ),
}
GOOD_AND_BAD["PerClassCosineAccumulator"] = (
    lambda: metrics.PerClassCosineAccumulator(5),
    *GOOD_AND_BAD["PerClassCosine"][1:],
)
GOOD_AND_BAD["TemperatureStatsAccumulator"] = (
    lambda: metrics.TemperatureStatsAccumulator(),
    *GOOD_AND_BAD["TemperatureStats"][1:],
)
GOOD_AND_BAD["AgreementAccumulator"] = (lambda: metrics.AgreementAccumulator(), *GOOD_AND_BAD["Agreement"][1:])
GOOD_AND_BAD["_Totals"] = (lambda: metrics._Totals(2), (torch.ones(2), 3), [(torch.ones(3), 3), (torch.ones(2), 0)])


@pytest.mark.parametrize("name", sorted(GOOD_AND_BAD))
def test_a_refused_update_leaves_every_state_as_it_was(name):
    make, good, bads = GOOD_AND_BAD[name]
    metric = make()
    metric.update(*good)
    expected = metric.compute()
    before = _states(metric)
    for bad in bads:
        with pytest.raises((ValueError, TypeError)):
            metric.update(*bad)
        _assert_same(before, _states(metric))
        if name != "_Totals":  # forward (metric(...)) too: torchmetrics resets the states before updating
            with pytest.raises((ValueError, TypeError)):
                metric(*bad)
            _assert_same(before, _states(metric))
    assert str(metric.compute()) == str(expected)


def test_agreement_accumulator_samples_exclude_a_refused_batch():
    acc = metrics.AgreementAccumulator()
    acc.update(S8, T8, _targets(8))
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 5\)"):
        acc.update(S8, T8, _targets(8) + 3)
    assert acc.samples == 8


# ----------------------------------------------------------------------------- 11. the minor items

CSWT_CALLS = {
    "cskd_loss": lambda v: losses.cskd_loss(S, T6, cswt=v),
    "CSKDLoss": lambda v: losses.CSKDLoss(cswt=v).cswt,
    "methods.CSKD": lambda v: methods.CSKD(cswt=v).cswt,
}


@pytest.mark.parametrize("name", sorted(CSWT_CALLS))
def test_cswt_takes_numpy_bools_and_refuses_ints_and_tensors(name):
    call = CSWT_CALLS[name]
    if name == "cskd_loss":
        torch.testing.assert_close(call(np.True_), losses.cskd_loss(S, T6, cswt=True))
        torch.testing.assert_close(call(np.False_), losses.cskd_loss(S, T6, cswt=False))
    else:
        assert call(np.True_) is True and call(np.False_) is False
    for bad in (1, 0, torch.tensor(True), "yes", None):
        with pytest.raises(TypeError, match=r"cswt must be a bool"):
            call(bad)


@given(arrays(np.float32, st.tuples(st.integers(2, 8), st.integers(1, 6)), elements=st.floats(-30, 30, width=32)),
       st.floats(0.25, 16.0))  # fmt: skip
def test_property_per_class_cosine_of_identical_logits_stays_in_the_unit_interval(z, temperature):
    z = torch.from_numpy(z)
    cosines = diagnostics.per_class_cosine(z, z.clone(), temperature)  # rounding once gave 1.0000001
    assert bool((cosines >= 0).all()) and bool((cosines <= 1).all())


def test_per_class_cosine_never_exceeds_one():
    z = 5.0 * torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    assert float(diagnostics.per_class_cosine(z, z.clone(), 2.726).max()) <= 1.0


TARGET_CALLS = {
    **{f"methods.{n}": (lambda m: lambda s, t, y: m(s, t, y))(methods.get_method(n)) for n in methods.method_names()},
    "agreement": lambda s, t, y: metrics.agreement(s, t, y),
    "Agreement": lambda s, t, y: metrics.Agreement().update(s, t, y),
    "AgreementAccumulator": lambda s, t, y: metrics.AgreementAccumulator().update(s, t, y),
}


@pytest.mark.parametrize("offset", [5, -1, 10**12])
@pytest.mark.parametrize("name", sorted(TARGET_CALLS))
def test_targets_outside_the_classes_are_a_value_error_naming_them(name, offset):
    s, t = _pair()
    targets = _targets()
    targets[2] = offset
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 5\).*got values from"):
        TARGET_CALLS[name](s, t, targets)


def test_tuner_slider_starts_at_two_its_cache_is_bounded_and_figures_are_checked():
    pytest.importorskip("ipywidgets")
    from cskd_viz.widgets import tuner as tuner_module

    s, t = _pair(30)
    tuner = tuner_module.TemperatureTuner(s, t)
    assert tuner.batch_slider.min == 2
    tuner.batch_slider.value = 1  # the slider clamps to its minimum: never a batch of one
    assert tuner.state()["batch_size"] == 2 and tuner.state()["cosine_distance"] > 0
    for b in range(2, 30):
        tuner.batch_slider.value = b
        assert len(tuner._sample_cosines) <= tuner_module.SAMPLE_COSINE_CACHE_SIZE
    assert list(tuner._sample_cosines)[-1] == 29  # the most recent size is kept
    assert tuner.state()["cswt"] is True and tuner_module.TemperatureTuner(s, t, cswt=np.True_).state()["cswt"] is True
    for kwargs, pattern in (
        ({"dpi": 0}, r"dpi must be a positive finite number"),
        ({"dpi": float("inf")}, r"dpi must be"),
        ({"figsize": (0, 0)}, r"figsize must be a pair"),
        ({"figsize": (3.0,)}, r"figsize must be a pair"),
        ({"figsize": (3.0, float("nan"))}, r"figsize must be a pair"),
        ({"t_max": 1e4}, r"t_max must be in \[0.001, 1000\]"),
    ):
        with pytest.raises(ValueError, match=pattern):
            tuner_module.TemperatureTuner(s, t, **kwargs)


def test_plot_figure_sizes_are_checked_once_for_all_plots():
    from cskd_viz.plots._common import _figure_and_ax, _figure_and_axes

    for figsize in ((0, 0), (-1, 2), (2,), "wide", (2, float("inf"))):
        with pytest.raises(ValueError, match=r"figsize must be a pair"):
            _figure_and_ax(None, figsize)
        with pytest.raises(ValueError, match=r"figsize must be a pair"):
            _figure_and_axes(None, 2, figsize)


# ----------------------------------------------------------------------------- review of issue 14: more bad inputs


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.int8, torch.uint8])
@pytest.mark.parametrize("name", ["ce", "kd", "cskd_cswt", "dist"])
def test_methods_take_integer_targets_of_any_supported_dtype(name, dtype):
    s, t = _pair(4, 3)
    targets = torch.tensor([0, 1, 2, 0], dtype=dtype)
    out = methods.get_method(name)(s, t, targets)
    assert out["loss_ce"] == methods.get_method(name)(s, t, targets.long())["loss_ce"]


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_unsupported_target_dtypes_are_a_type_error(dtype):
    s, t = _pair(4, 3)
    targets = torch.tensor([0, 1, 2, 0]).to(dtype)
    for call in (lambda: methods.CE()(s, None, targets), lambda: methods.KD()(s, t, targets)):
        with pytest.raises(TypeError, match="targets must have an integer dtype"):
            call()
    with pytest.raises(TypeError, match="targets must have an integer dtype"):
        metrics.Agreement().update(s, t, targets)


@pytest.mark.parametrize(
    ("logits", "error", "pattern"),
    [
        (torch.zeros(4, 3, dtype=torch.long), TypeError, "student_logits must have a floating dtype"),
        (torch.zeros(4, 3, dtype=torch.complex64), TypeError, "student_logits must have a floating dtype"),
        (torch.zeros(0, 3), ValueError, "student_logits is an empty batch"),
        (torch.zeros(4, 0), ValueError, "student_logits has no classes"),
    ],
)
def test_ce_checks_the_structure_of_its_logits(logits, error, pattern):
    targets = torch.zeros(logits.shape[0], dtype=torch.long)
    with pytest.raises(error, match=pattern):
        methods.CE()(logits, None, targets)


def test_a_non_tensor_teacher_and_devices_are_named():
    s, t = _pair(4, 3)
    with pytest.raises(TypeError, match="teacher_logits must be a torch.Tensor"):
        methods.KD()(s, t.numpy(), _targets(4, 3))
    with pytest.raises(ValueError, match="teacher_logits are on meta but student_logits on cpu"):
        losses.kd_loss(s, t.to("meta"))
    with pytest.raises(ValueError, match="targets are on meta"):
        methods.CE()(s, None, _targets(4, 3).to("meta"))
    with pytest.raises(TypeError, match="terms must be a dict"):
        methods.total_loss([torch.tensor(1.0)])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["ce", "kd", "cskd_cswt", "dist"])
def test_the_ce_term_of_half_precision_logits_stays_finite(name, dtype):
    """In float16, CE of valid logits of magnitude 65504 was inf; it is computed in float32, as under autocast."""
    s = torch.full((4, 3), 65504.0).to(dtype)
    s[0, 0] = -65504.0
    out = methods.get_method(name)(s, -s, torch.tensor([0, 1, 2, 0]))
    assert out["loss_ce"].dtype == torch.float32
    assert all(math.isfinite(float(v)) for k, v in out.items() if k.startswith("loss_"))
    reference = torch.nn.functional.cross_entropy(s.double(), torch.tensor([0, 1, 2, 0]))
    assert float(out["loss_ce"]) == pytest.approx(float(reference), rel=1e-6)


@pytest.mark.parametrize("seed", [-1, 2**63, 2**70, 1.5, "0", True])
def test_seeds_outside_what_torch_takes_are_refused_by_name(seed):
    from cskd_viz.training import TrainSettings

    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        RunConfig(dataset="digits", method="ce", teacher=None, epochs=1, seed=seed)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        TrainSettings(epochs=1, seed=seed)
