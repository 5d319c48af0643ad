"""The published CSKD objective (``cskd_published``) against an independent float64 re-derivation."""

from __future__ import annotations

import itertools

import numpy as np
import published_reference as pref
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cskd_viz import Monitor, published
from cskd_viz.methods import get_method, method_names, method_parameters, total_loss
from cskd_viz.published import CSKDPublished
from cskd_viz.runs import load_run

B, C = 7, 5


def _logits(seed: int, b: int = B, c: int = C, scale: float = 3.0) -> torch.Tensor:
    return scale * torch.randn(b, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture
def views():
    targets = torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(9))
    return (_logits(1), _logits(2)), (_logits(3), _logits(4)), targets


def _close(actual, expected, rtol=1e-10):
    np.testing.assert_allclose(np.asarray(torch.as_tensor(actual).detach(), dtype=np.float64), expected, rtol=rtol)


# ----------------------------------------------------------------------------- the term functions


@pytest.mark.parametrize("abs_eps", [True, False])
def test_term_functions_match_the_reference(views, abs_eps):
    (zs, zt), _, _ = views
    temps = torch.linspace(2.0, 6.0, B, dtype=torch.float64)
    kw = {"abs_eps_cosine": abs_eps}
    _close(published.cs_loss(zs, zt, 4.0, alpha=2.0, **kw), pref.cs(zs, zt, 4.0, 2.0, abs_eps))
    _close(published.cs_mat_loss(zs, zt, temps, alpha=1.5, **kw), pref.cs(zs, zt, temps.numpy(), 1.5, abs_eps))
    _close(published.cswt_temperatures(zs, zt, 1.5, 7.0, **kw), pref.cswt(zs, zt, 1.5, 7.0, abs_eps))
    for temperature in (4.0, temps):
        t_ref = temperature if isinstance(temperature, float) else temperature.numpy()
        _close(published.cc_loss(zs, zt, temperature, **kw), pref.cc(zs, zt, t_ref, abs_eps))
        _close(published.bc_loss(zs, zt, temperature, **kw), pref.bc(zs, zt, t_ref, abs_eps))


def test_published_cosine_has_the_abs_and_the_eps():
    a = torch.tensor([[1e-5, 0.0], [0.0, 1.0]], dtype=torch.float64)
    expected = [pref.cosine(a[:, j].numpy(), a[:, j].numpy(), True) for j in range(2)]
    _close(published.published_cosine(a, a), expected, rtol=1e-14)
    assert float(published.published_cosine(a, a)[0]) < 0.99  # the eps matters for tiny vectors
    b = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    _close(published.published_cosine(b, -b, dim=1), [1.0, 1.0], rtol=1e-7)  # |a.b|


def test_masks_match_numpy_percentile():
    for seed in range(5):
        zt = _logits(seed, b=6 + seed % 2)
        sample, cls = published.confidence_masks(zt)
        ref_sample, ref_cls = pref.masks(zt)
        assert sample.tolist() == ref_sample.tolist() and cls.tolist() == ref_cls.tolist()
        assert sample.any() and cls.any()


def test_cswt_midpoint_when_all_samples_agree_equally():
    z = torch.zeros(4, 3, dtype=torch.float64)
    assert published.cswt_temperatures(z, z, 2.0, 6.0).tolist() == [4.0] * 4


# ----------------------------------------------------------------------------- the objective, every switch


SWITCHES = [
    dict(zip(("strong_view", "cc", "bc", "abs_eps"), combo, strict=True))
    for combo in itertools.product([True, False], repeat=4)
    if combo[1] == combo[2] or combo[0]  # 12 of 16 combinations: cc/bc apart only with the strong view
]


@pytest.mark.parametrize("masks", published.MASK_MODES)
@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: "-".join(k for k, v in s.items() if v) or "off")
def test_objective_matches_the_reference(views, masks, switches):
    weak, strong, y = views
    params = {"w_ce": 0.7, "w_kd": 1.3, "temperature": 3.5, "t_low": 1.5, "t_high": 6.5}
    alpha = 2.0 if switches["abs_eps"] else 1.25
    method = get_method(
        "cskd_published",
        **params,
        masks=masks,
        alpha=alpha,
        strong_view=switches["strong_view"],
        cc=switches["cc"],
        bc=switches["bc"],
        abs_eps_cosine=switches["abs_eps"],
    )
    out = method(*weak, y, strong=strong if switches["strong_view"] else None)
    expected = pref.objective(weak, strong, y, **params, masks=masks, alpha=alpha, **switches)
    assert set(out) == set(expected)
    for key, value in expected.items():
        _close(out[key], value)


def test_cc_and_bc_are_at_t4_whatever_the_kd_temperature(views):
    weak, strong, y = views
    at3, at4 = (CSKDPublished(temperature=t, masks="none")(*weak, y, strong=strong) for t in (3.0, 4.0))
    temps = at3["temperatures"]
    for key, term in (("loss_cc", published.cc_loss), ("loss_bc", published.bc_loss)):
        torch.testing.assert_close(at3[key], term(*weak, 4.0) + term(*weak, temps), rtol=1e-13, atol=0)
        assert torch.equal(at3[key], at4[key])  # only cs and cs_mat follow the method's T ...
        assert abs(float(at3[key] - term(*weak, 3.0) - term(*weak, temps))) > 1e-6  # ... (T = 3 would differ)
    assert not torch.equal(at3["loss_kd"], at4["loss_kd"])
    params = {"temperature": 3.0, "corr_temperature": 2.5, "masks": "as_published"}
    out = CSKDPublished(**params)(*weak, y, strong=strong)
    expected = pref.objective(weak, strong, y, **params)
    for key, value in expected.items():
        _close(out[key], value)


def test_reduces_to_cskd_cswt_in_float64(views):
    weak, _, y = views
    reduced = CSKDPublished(
        w_ce=0.4, w_kd=2.5, temperature=3.0, strong_view=False, cc=False, bc=False, masks="none", alpha=1.0,
        abs_eps_cosine=False,
    )  # fmt: skip
    out = reduced(*weak, y)
    ours = get_method("cskd_cswt", w_ce=0.4, w_kd=2.5, temperature=3.0)(*weak, y)
    assert set(out) == {"loss_ce", "loss_kd", "temperatures"}
    torch.testing.assert_close(total_loss(out), total_loss(ours), rtol=1e-13, atol=0)
    torch.testing.assert_close(out["loss_kd"], ours["loss_cskd"], rtol=1e-13, atol=0)
    torch.testing.assert_close(out["temperatures"], ours["temperatures"], rtol=1e-14, atol=0)


def test_strong_view_uses_the_weak_temperatures(views):
    weak, strong, y = views
    out = CSKDPublished(cc=False, bc=False, masks="none")(*weak, y, strong=strong)
    weak_only = CSKDPublished(cc=False, bc=False, masks="none", strong_view=False)(*weak, y)
    temps = published.cswt_temperatures(*weak)
    strong_kd = published.cs_loss(*strong, 4.0) + published.cs_mat_loss(*strong, temps)
    torch.testing.assert_close(out["loss_kd"], weak_only["loss_kd"] + strong_kd, rtol=1e-12, atol=0)


def test_as_published_scales_by_the_true_fraction(views):
    weak, _, y = views
    kwargs = {"strong_view": False}
    scaled = CSKDPublished(masks="as_published", **kwargs)(*weak, y)
    plain = CSKDPublished(masks="none", **kwargs)(*weak, y)
    sample, cls = published.confidence_masks(weak[1])
    for key, mask in (("loss_kd", sample), ("loss_bc", sample), ("loss_cc", cls)):
        torch.testing.assert_close(scaled[key], mask.double().mean() * plain[key], rtol=1e-13, atol=0)


def test_gradcheck_terms_and_objective():
    zs = _logits(5, 4, 3).requires_grad_()
    zt, temps = _logits(6, 4, 3), torch.tensor([2.0, 3.0, 5.0, 6.0], dtype=torch.float64)
    for eps in (True, False):
        kw = {"abs_eps_cosine": eps}
        assert torch.autograd.gradcheck(lambda a, kw=kw: published.cs_mat_loss(a, zt, temps, **kw), (zs,))
        assert torch.autograd.gradcheck(lambda a, kw=kw: published.cc_loss(a, zt, temps, **kw), (zs,))
        assert torch.autograd.gradcheck(lambda a, kw=kw: published.bc_loss(a, zt, 3.0, **kw), (zs,))
    y = torch.tensor([0, 1, 2, 0])
    strong_t = _logits(7, 4, 3)
    method, weak = CSKDPublished(), zs.detach().clone()  # a copy: gradcheck perturbs zs in place
    # the strong view's gradient is exact (its temperatures come from the weak view)
    assert torch.autograd.gradcheck(lambda a: total_loss(method(weak, zt, y, strong=(a, strong_t))), (zs,))
    # t_low == t_high: constant temperatures, so the whole objective is differentiable in the weak view
    fixed = CSKDPublished(t_low=3.0, t_high=3.0, masks="per_sample")
    assert torch.autograd.gradcheck(lambda a: total_loss(fixed(a, zt, y, strong=(a * 0.5, strong_t))), (zs,))


finite = arrays(np.float64, (5, 4), elements=st.floats(-8, 8))


@given(finite, finite)
def test_property_student_equals_teacher_gives_zero_distillation(z, other):
    z, other = torch.from_numpy(z), torch.from_numpy(other)
    out = CSKDPublished(masks="none", abs_eps_cosine=False)(
        z, z.clone(), torch.zeros(5, dtype=torch.long), strong=(other, other.clone())
    )
    for key in ("loss_kd", "loss_cc", "loss_bc"):
        assert abs(float(out[key])) < 1e-10
    assert float(out["temperatures"].min()) >= 2.0 and float(out["temperatures"].max()) <= 6.0


@given(finite, finite, st.sampled_from(published.MASK_MODES))
def test_property_terms_are_nonnegative_and_finite(zs, zt, masks):
    zs, zt = torch.from_numpy(zs), torch.from_numpy(zt)
    out = CSKDPublished(masks=masks)(zs, zt, torch.zeros(5, dtype=torch.long), strong=(zt, zs))
    for key, value in out.items():
        if key.startswith("loss_"):
            assert torch.isfinite(value) and float(value) >= -1e-9


def test_half_precision_is_computed_in_float32(views):
    weak, strong, y = views
    out = CSKDPublished()(*(z.half() for z in weak), y, strong=tuple(z.bfloat16() for z in strong))
    assert all(v.dtype == torch.float32 for v in out.values())
    ref32 = CSKDPublished()(*(z.half().float() for z in weak), y, strong=tuple(z.bfloat16().float() for z in strong))
    for key in out:
        torch.testing.assert_close(out[key], ref32[key])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_leaves_every_term_in_float32(dtype):
    """The trainer's --amp calls the method inside autocast: cc/bc's matrix products must not drop to 16 bits
    (in bf16 their cosines round to 1 and the terms to 0 at B=64, C=100)."""
    gen = torch.Generator().manual_seed(5)
    weak = [torch.randn(64, 100, generator=gen) * 3 for _ in range(2)]
    strong = tuple(torch.randn(64, 100, generator=gen) * 3 for _ in range(2))
    y = torch.randint(0, 100, (64,), generator=gen)
    method = CSKDPublished()
    ref = method(*weak, y, strong=strong)
    with torch.autocast("cpu", dtype=dtype):
        out = method(*weak, y, strong=strong)
    assert float(ref["loss_cc"]) > 1e-5 and float(ref["loss_bc"]) > 1e-5
    for key in ref:
        assert out[key].dtype == torch.float32, key
        torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- registry, errors, Monitor


def test_registry_and_interface():
    assert "cskd_published" in method_names()
    assert method_parameters("cskd_published") == sorted(
        [
            "w_ce",
            "w_kd",
            "temperature",
            "t_low",
            "t_high",
            "strong_view",
            "cc",
            "bc",
            "masks",
            "alpha",
            "abs_eps_cosine",
            "corr_temperature",
        ]
    )
    method = get_method("cskd_published", masks="per_sample", alpha=1.0)
    assert method.two_views and not get_method("cskd_cswt").two_views
    assert method.name == "cskd_published" and get_method(method.name, **method.params()) == method
    assert method.temperature_range == (2.0, 6.0) and method.needs_teacher and not method.supports_group
    defaults = CSKDPublished()
    assert (defaults.w_ce, defaults.w_kd, defaults.temperature, defaults.t_low, defaults.t_high) == (1, 1, 4, 2, 6)
    assert (defaults.masks, defaults.alpha, defaults.abs_eps_cosine) == ("as_published", 2.0, True)
    assert defaults.corr_temperature == 4.0


def test_extras_false_leaves_out_the_temperatures(views):
    weak, strong, y = views
    out = CSKDPublished()(*weak, y, strong=strong, extras=False)
    assert sorted(out) == ["loss_bc", "loss_cc", "loss_ce", "loss_kd"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"masks": "per_batch"}, ValueError, "masks must be one of"),
        ({"alpha": -1.0}, ValueError, "alpha must be >= 0"),
        ({"cc": 1}, TypeError, "cc must be a bool"),
        ({"strong_view": "yes"}, TypeError, "strong_view must be a bool"),
        ({"t_low": 7.0}, ValueError, "t_low must be <= t_high"),
        ({"w_kd": float("nan")}, ValueError, "w_kd must be finite"),
        ({"corr_temperature": 0.0}, ValueError, "corr_temperature must be > 0"),
        ({"corr_temperature": "4"}, TypeError, "corr_temperature must be a real number"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        get_method("cskd_published", **kwargs)


def test_bad_calls(views):
    (zs, zt), (ss, st_), y = views
    method = CSKDPublished()
    with pytest.raises(
        ValueError, match=r"strong=\(student_strong_logits, teacher_strong_logits\) is required when strong_view=True"
    ):
        method(zs, zt, y)
    with pytest.raises(TypeError, match="strong must be a pair"):
        method(zs, zt, y, strong=ss)
    with pytest.raises(ValueError, match="strong-view logits must match"):
        method(zs, zt, y, strong=(ss[:4], st_[:4]))
    with pytest.raises(ValueError, match="teacher_logits contains NaN"):
        method(zs, zt, y, strong=(ss, torch.full_like(st_, float("nan"))))
    with pytest.raises(ValueError, match="does not support group="):
        method(zs, zt, y, strong=(ss, st_), group=object())
    with pytest.raises(ValueError, match="at least 2 samples"):
        method(zs[:1], zt[:1], y[:1], strong=(ss[:1], st_[:1]))
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 5\)"):
        method(zs, zt, y + 5, strong=(ss, st_))
    with pytest.raises(ValueError, match="needs teacher_logits"):
        method(zs, None, y, strong=(ss, st_))
    assert "loss_kd" in CSKDPublished(strong_view=False)(zs, zt, y, strong=(ss, st_))  # ignored without the view
    with pytest.raises(TypeError, match="per-sample temperatures go to cs_mat_loss"):
        published.cs_loss(zs, zt, torch.full((B,), 2.0, dtype=torch.float64))


def test_monitor_records_the_terms(tmp_path, views):
    weak, strong, y = views
    method = CSKDPublished()
    with Monitor(tmp_path / "run", C, log_every=1, config={"method": method.name}) as monitor:
        for step in (1, 2):
            terms = method(*(z.float() for z in weak), y, strong=tuple(z.float() for z in strong))
            losses = {"loss": total_loss(terms), **{k: v for k, v in terms.items() if k.startswith("loss_")}}
            monitor.log_step(
                step, weak[0].float(), weak[1].float(), y, losses=losses, temperatures=terms["temperatures"]
            )
    steps = load_run(tmp_path / "run").steps
    assert {"loss", "loss_ce", "loss_kd", "loss_cc", "loss_bc"} <= set(steps)
    np.testing.assert_allclose(
        steps["loss"], steps[["loss_ce", "loss_kd", "loss_cc", "loss_bc"]].sum(axis=1), rtol=1e-5
    )
