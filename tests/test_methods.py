"""Methods: dict keys, values equal to cskd_viz.losses, weights, registry and validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cskd_viz import losses
from cskd_viz.methods import CE, CSKD, DIST, KD, get_method, method_names, method_parameters, total_loss


@pytest.fixture
def batch(gen):
    student = (2.0 * torch.randn(8, 5, generator=gen)).requires_grad_()
    teacher = 3.0 * torch.randn(8, 5, generator=gen)
    targets = torch.randint(0, 5, (8,), generator=gen)
    return student, teacher, targets


EXPECTED_KEYS = {
    "ce": {"loss_ce"},
    "kd": {"loss_ce", "loss_kd"},
    "cskd": {"loss_ce", "loss_cskd"},
    "cskd_cswt": {"loss_ce", "loss_cskd", "temperatures"},
    "dist": {"loss_ce", "loss_dist"},
    "cskd_published": {"loss_ce", "loss_kd", "loss_cc", "loss_bc", "temperatures"},
}


def test_registry_names():
    assert method_names() == sorted(EXPECTED_KEYS)


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_keys_and_scalar_losses(name, batch):
    student, teacher, targets = batch
    method = get_method(name)
    strong = (student.flip(0), teacher.flip(0)) if method.two_views else None  # a second view, for the published recipe
    out = method(student, teacher, targets, **({"strong": strong} if strong is not None else {}))
    assert set(out) == EXPECTED_KEYS[name]
    for key, value in out.items():
        if key.startswith("loss_"):
            assert value.dim() == 0 and torch.isfinite(value)
    assert method.name == name
    assert method.needs_teacher == (name != "ce")


def test_values_equal_losses_with_weights(batch):
    student, teacher, targets = batch
    ce = F.cross_entropy(student, targets)
    out = KD(w_ce=0.5, w_kd=2.0, temperature=3.0)(student, teacher, targets)
    torch.testing.assert_close(out["loss_ce"], 0.5 * ce)
    torch.testing.assert_close(out["loss_kd"], 2.0 * losses.kd_loss(student, teacher, 3.0))

    for cswt in (False, True):
        out = CSKD(w_ce=0.1, w_kd=3.0, temperature=5.0, t_low=1.5, t_high=7.0, cswt=cswt)(student, teacher, targets)
        torch.testing.assert_close(out["loss_ce"], 0.1 * ce)
        expected = losses.cskd_loss(student, teacher, 5.0, 1.5, 7.0, cswt=cswt)
        torch.testing.assert_close(out["loss_cskd"], 3.0 * expected)

    out = DIST(w_kd=1.5, temperature=2.0, beta=0.5, gamma=2.0)(student, teacher, targets)
    torch.testing.assert_close(out["loss_dist"], 1.5 * losses.dist_loss(student, teacher, 2.0, 0.5, 2.0))


def test_cswt_temperatures_are_the_ones_used_and_detached(batch):
    student, teacher, targets = batch
    out = get_method("cskd_cswt", t_low=1.0, t_high=9.0)(student, teacher, targets)
    temps = out["temperatures"]
    assert temps.shape == (8,) and not temps.requires_grad
    torch.testing.assert_close(temps, losses.cswt_temperatures(student, teacher, 1.0, 9.0))
    assert float(temps.min()) == pytest.approx(1.0) and float(temps.max()) == pytest.approx(9.0)
    # The loss written out with these temperatures equals the method's term.
    d = losses.batch_cosine_distance
    manual = 16.0 * d(student, teacher, 4.0) + temps.mean() ** 2 * d(student, teacher, temps)
    torch.testing.assert_close(out["loss_cskd"], manual)


def test_gradient_reaches_student_not_teacher(batch):
    student, teacher, targets = batch
    teacher = teacher.clone().requires_grad_()
    loss = total_loss(get_method("cskd_cswt")(student, teacher, targets))
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert teacher.grad is None


def test_total_loss_sums_loss_terms_only(batch):
    student, teacher, targets = batch
    out = get_method("cskd_cswt")(student, teacher, targets)
    torch.testing.assert_close(total_loss(out), out["loss_ce"] + out["loss_cskd"])
    with pytest.raises(ValueError, match="no 'loss_\\*' entry"):
        total_loss({"temperatures": torch.ones(2)})


def test_ce_ignores_teacher(batch):
    student, _, targets = batch
    assert set(CE()(student, None, targets)) == {"loss_ce"}


def test_name_roundtrip_and_frozen():
    method = get_method("cskd_cswt", temperature=3.0, w_kd=2.0)
    params = {k: v for k, v in method.params().items() if k in method_parameters(method.name)}
    assert get_method(method.name, **params) == method
    with pytest.raises(dataclasses.FrozenInstanceError):
        method.temperature = 5.0


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: get_method("fitnet"), ValueError, "method must be one of"),
        (lambda: get_method("ce", temperature=4.0), TypeError, "unknown parameter"),
        (lambda: get_method("cskd", cswt=True), TypeError, "unknown parameter"),
        (lambda: KD(w_kd=-1.0), ValueError, "w_kd must be >= 0"),
        (lambda: CE(w_ce=float("nan")), ValueError, "w_ce must be finite"),
        (lambda: KD(temperature=0.0), ValueError, "temperature must be > 0"),
        (lambda: CSKD(t_low=5.0, t_high=2.0), ValueError, "t_low must be <= t_high"),
        (lambda: CSKD(cswt=1), TypeError, "cswt must be a bool"),
        (lambda: DIST(beta=-0.5), ValueError, "beta must be >= 0"),
        (lambda: KD(temperature="4"), TypeError, "temperature must be a real number"),
    ],
)
def test_bad_configuration(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_bad_call_arguments(batch):
    student, teacher, targets = batch
    with pytest.raises(ValueError, match="needs teacher_logits"):
        get_method("kd")(student, None, targets)
    with pytest.raises(ValueError, match="targets must have shape"):
        get_method("kd")(student, teacher, targets[:3])
    with pytest.raises(TypeError, match="integer class indices"):
        get_method("kd")(student, teacher, targets.float())
    with pytest.raises(ValueError, match="same shape"):
        get_method("cskd")(student, teacher[:, :3], targets)


@settings(max_examples=25, deadline=None)
@given(
    w_ce=st.floats(0.0, 3.0),
    w_kd=st.floats(0.0, 3.0),
    temperature=st.floats(0.5, 8.0),
    seed=st.integers(0, 10_000),
    name=st.sampled_from(["kd", "cskd", "cskd_cswt", "dist"]),
)
def test_objective_is_weighted_sum(w_ce, w_kd, temperature, seed, name):
    gen = torch.Generator().manual_seed(seed)
    student, teacher = torch.randn(6, 4, generator=gen), 2 * torch.randn(6, 4, generator=gen)
    targets = torch.randint(0, 4, (6,), generator=gen)
    method = get_method(name, w_ce=w_ce, w_kd=w_kd, temperature=temperature)
    term = {
        "kd": lambda: losses.kd_loss(student, teacher, temperature),
        "cskd": lambda: losses.cskd_loss(student, teacher, temperature, cswt=False),
        "cskd_cswt": lambda: losses.cskd_loss(student, teacher, temperature, cswt=True),
        "dist": lambda: losses.dist_loss(student, teacher, temperature),
    }[name]()
    expected = w_ce * F.cross_entropy(student, targets) + w_kd * term
    torch.testing.assert_close(total_loss(method(student, teacher, targets)), expected, rtol=1e-5, atol=1e-6)


def test_extras_false_skips_temperatures_only(batch):
    student, teacher, targets = batch
    method = get_method("cskd_cswt")
    full, lean = method(student, teacher, targets), method(student, teacher, targets, extras=False)
    assert set(lean) == {"loss_ce", "loss_cskd"}
    for key in lean:
        torch.testing.assert_close(lean[key], full[key], rtol=0, atol=0)
