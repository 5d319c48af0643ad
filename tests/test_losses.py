"""Tests of cskd_viz.losses against the independent references in tests/reference.py."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import reference as ref
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cskd_viz import losses
from cskd_viz.losses import batch_cosine_distance, cskd_loss, cswt_temperatures, dist_loss, exact_cosine, kd_loss

RTOL64 = 1e-10

# ----------------------------------------------------------------------------- strategies


@st.composite
def logit_pairs(draw, max_b: int = 8, max_c: int = 7, scale: float = 20.0, min_b: int = 1, min_c: int = 1):
    """A float64 ``(B, C)`` student/teacher pair with bounded entries."""
    b = draw(st.integers(min_b, max_b))
    c = draw(st.integers(min_c, max_c))
    elements = st.floats(-scale, scale, allow_nan=False, allow_infinity=False, width=32)
    zs = draw(arrays(np.float64, (b, c), elements=elements))
    zt = draw(arrays(np.float64, (b, c), elements=elements))
    return torch.from_numpy(zs), torch.from_numpy(zt)


temperatures = st.floats(0.25, 16.0, allow_nan=False)


@st.composite
def temperature_ranges(draw):
    """``0 < t_low <= t_high``, including the degenerate ``t_low == t_high``."""
    t_low = draw(st.floats(0.05, 20.0, allow_nan=False))
    t_high = draw(st.one_of(st.just(t_low), st.floats(t_low, 40.0, allow_nan=False)))
    return t_low, t_high


def _randn(*shape, seed=0, dtype=torch.float64, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _per_row_t(b, seed=1, dtype=torch.float64):
    return 1.0 + 5.0 * torch.rand(b, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- vs reference


@pytest.mark.parametrize("temperature", [1.0, 4.0, 0.5, "per_sample"])
def test_kd_loss_matches_reference(logits64, temperature):
    zs, zt = logits64
    t = _per_row_t(zs.shape[0]) if temperature == "per_sample" else temperature
    got = kd_loss(zs, zt, t)
    assert got.dtype == torch.float64 and got.dim() == 0
    assert float(got) == pytest.approx(ref.kd_loss(zs, zt, t), rel=RTOL64)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 7.5])
def test_kd_loss_equals_mdistiller(logits, logits64, temperature):
    for zs, zt in (logits, logits64):
        expected = ref.kd_loss_mdistiller(zs, zt, temperature)
        rel = 1e-12 if zs.dtype == torch.float64 else 1e-5
        assert float(kd_loss(zs, zt, temperature)) == pytest.approx(float(expected), rel=rel)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 0.3, "per_sample"])
def test_batch_cosine_distance_matches_reference(logits64, temperature):
    zs, zt = logits64
    t = _per_row_t(zs.shape[0], seed=3) if temperature == "per_sample" else temperature
    got = batch_cosine_distance(zs, zt, t)
    assert got.dtype == torch.float64 and got.dim() == 0
    assert float(got) == pytest.approx(ref.batch_cosine_distance(zs, zt, t), rel=RTOL64)


def test_batch_cosine_distance_float32_matches_reference(logits):
    zs, zt = logits
    got = batch_cosine_distance(zs, zt, 4.0)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(ref.batch_cosine_distance(zs, zt, 4.0), rel=1e-4, abs=1e-6)


def test_per_sample_temperature_uses_row_temperature_for_both():
    """A (B,) temperature equal to a constant is the float temperature; row i uses T[i] for s and t."""
    zs, zt = _randn(5, 4, seed=1), _randn(5, 4, seed=2)
    const = torch.full((5,), 3.0, dtype=torch.float64)
    assert float(batch_cosine_distance(zs, zt, const)) == pytest.approx(float(batch_cosine_distance(zs, zt, 3.0)))
    assert float(kd_loss(zs, zt, const)) == pytest.approx(float(kd_loss(zs, zt, 3.0)))
    # per-row temperature == dividing each row of the logits by its temperature at T = 1
    t = _per_row_t(5)
    scaled = batch_cosine_distance(zs / t[:, None], zt / t[:, None], 1.0)
    assert float(batch_cosine_distance(zs, zt, t)) == pytest.approx(float(scaled), rel=1e-12)


@pytest.mark.parametrize("t_range", [(2.0, 6.0), (1.0, 1.0), (0.5, 10.0)])
def test_cswt_temperatures_match_reference(logits64, t_range):
    zs, zt = logits64
    got = cswt_temperatures(zs, zt, *t_range)
    assert got.shape == (zs.shape[0],) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref.cswt_temperatures(zs, zt, *t_range), rtol=1e-10)


def test_cswt_temperatures_docstring_case():
    s = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    t = torch.tensor([[3.0, 0.0], [3.0, 0.0]])
    assert cswt_temperatures(s, t).tolist() == [2.0, 6.0]


@pytest.mark.parametrize("cswt", [True, False])
@pytest.mark.parametrize("params", [(4.0, 2.0, 6.0), (1.0, 1.0, 3.0), (2.5, 3.0, 3.0)])
def test_cskd_loss_matches_reference(logits64, cswt, params):
    zs, zt = logits64
    got = cskd_loss(zs, zt, *params, cswt=cswt)
    assert got.dtype == torch.float64 and got.dim() == 0
    assert float(got) == pytest.approx(ref.cskd_loss(zs, zt, *params, cswt=cswt), rel=RTOL64)


def test_cskd_loss_defaults_are_design_defaults(logits64):
    zs, zt = logits64
    assert float(cskd_loss(zs, zt)) == pytest.approx(ref.cskd_loss(zs, zt, 4.0, 2.0, 6.0, True), rel=RTOL64)
    assert float(kd_loss(zs, zt)) == pytest.approx(ref.kd_loss(zs, zt, 4.0), rel=RTOL64)


def test_cskd_loss_float32_matches_reference(logits):
    zs, zt = logits
    got = cskd_loss(zs, zt)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(ref.cskd_loss(zs, zt), rel=1e-4)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (2.0, 0.5), (0.0, 1.0), (1.0, 0.0)])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dist_loss_matches_pearson_reference(logits64, weights, temperature):
    zs, zt = logits64
    got = dist_loss(zs, zt, temperature, *weights)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(ref.dist_loss(zs, zt, temperature, *weights), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (2.0, 0.5)])
def test_dist_loss_matches_published_code(logits64, logits, weights):
    for zs, zt in (logits64, logits):
        published = ref.dist_loss_published(zs, zt, 4.0, *weights, eps=0.0)
        rel = 1e-10 if zs.dtype == torch.float64 else 1e-4
        assert float(dist_loss(zs, zt, 4.0, *weights)) == pytest.approx(float(published), rel=rel)
        # the published eps=1e-8 only nudges the value
        nudged = ref.dist_loss_published(zs, zt, 4.0, *weights)
        assert float(dist_loss(zs, zt, 4.0, *weights)) == pytest.approx(float(nudged), rel=1e-4)


def test_dist_intra_term_is_centred_batch_cosine(logits64):
    """gamma-only DIST at T is T^2 (1 - mean_j pearson(column j)): the centred cousin of d(T)."""
    zs, zt = logits64
    ps, pt = ref.softmax(zs, 2.0), ref.softmax(zt, 2.0)
    rho = np.mean([np.corrcoef(ps[:, j], pt[:, j])[0, 1] for j in range(ps.shape[1])])
    assert float(dist_loss(zs, zt, 2.0, beta=0.0, gamma=1.0)) == pytest.approx(4.0 * (1 - rho), rel=1e-10)


def test_exact_cosine_matches_reference():
    a, b = _randn(6, 3, seed=4), _randn(6, 3, seed=5)
    cols = exact_cosine(a, b, dim=0)
    rows = exact_cosine(a, b, dim=1)
    np.testing.assert_allclose(cols.numpy(), [ref.cosine(a[:, j], b[:, j]) for j in range(3)], rtol=1e-12)
    np.testing.assert_allclose(rows.numpy(), [ref.cosine(a[i], b[i]) for i in range(6)], rtol=1e-12)
    np.testing.assert_allclose(
        exact_cosine(a, b, dim=-1).numpy(), F.cosine_similarity(a, b, dim=-1, eps=0).numpy(), rtol=1e-12
    )


def test_exact_cosine_zero_rules():
    zero, x = torch.zeros(4, 1), torch.tensor([[0.0], [1.0], [2.0], [0.5]])
    assert exact_cosine(zero, zero).tolist() == [1.0]
    assert exact_cosine(zero, x).tolist() == [0.0]
    assert exact_cosine(x, zero).tolist() == [0.0]
    assert exact_cosine(x, x).tolist() == pytest.approx([1.0])
    assert exact_cosine(x, -x).tolist() == pytest.approx([-1.0])
    # mixed: one column both zero, one column one zero, one ordinary column
    a = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]])
    b = torch.tensor([[0.0, 3.0, 2.0], [0.0, 4.0, 4.0]])
    assert exact_cosine(a, b).tolist() == pytest.approx([1.0, 0.0, 1.0])


def test_exact_cosine_tiny_and_subnormal_vectors():
    for magnitude in (1e-20, 1e-30, 1e-40):  # 1e-40 is subnormal in float32
        a = torch.tensor([1.0, 3.0, 0.5]) * magnitude
        b = torch.tensor([2.0, 1.0, 4.0]) * magnitude
        expected = ref.mp_cosine(a.double().tolist(), b.double().tolist())
        assert float(exact_cosine(a, b)) == pytest.approx(expected, rel=1e-5)
        assert float(exact_cosine(a.double(), b.double())) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- gradients


def _leaf(*shape, seed, scale=1.5):
    return _randn(*shape, seed=seed, scale=scale).requires_grad_()


def test_gradcheck_kd_loss():
    zs, zt = _leaf(5, 4, seed=10), _leaf(5, 4, seed=11)
    assert torch.autograd.gradcheck(lambda a, b: kd_loss(a, b, 3.0), (zs, zt))
    t = _per_row_t(5)
    assert torch.autograd.gradcheck(lambda a, b: kd_loss(a, b, t), (zs, zt))


def test_gradcheck_batch_cosine_distance():
    zs, zt = _leaf(5, 4, seed=12), _leaf(5, 4, seed=13)
    assert torch.autograd.gradcheck(lambda a, b: batch_cosine_distance(a, b, 2.0), (zs, zt))
    t = _per_row_t(5, seed=7)
    assert torch.autograd.gradcheck(lambda a, b: batch_cosine_distance(a, b, t), (zs, zt))


@pytest.mark.parametrize("fn", [lambda a, b: batch_cosine_distance(a, b, 2.0), cskd_loss])
def test_double_backward_is_refused_not_silently_zero(fn):
    """The fused closed-form backward is once-differentiable: a second derivative must raise, not be 0."""
    zs, zt = _leaf(5, 4, seed=26), _leaf(5, 4, seed=27)
    with pytest.raises(RuntimeError, match="differentiable once.*create_graph"):
        # e.g. a gradient penalty: without the error its second derivative would silently be 0
        torch.autograd.grad(fn(zs, zt), zs, create_graph=True)
    (grad,) = torch.autograd.grad(fn(zs, zt), zs)  # plain backward is unaffected
    assert torch.isfinite(grad).all()


def test_gradcheck_cskd_loss_without_cswt():
    zs, zt = _leaf(6, 3, seed=14), _leaf(6, 3, seed=15)
    assert torch.autograd.gradcheck(lambda a, b: cskd_loss(a, b, 4.0, cswt=False), (zs, zt))
    assert torch.autograd.gradcheck(lambda a, b: cskd_loss(a, b, 0.7, cswt=False), (zs, zt))


def test_gradcheck_dist_loss():
    zs, zt = _leaf(5, 4, seed=16), _leaf(5, 4, seed=17)
    assert torch.autograd.gradcheck(lambda a, b: dist_loss(a, b, 2.0, 1.0, 0.5), (zs, zt))


def test_gradcheck_exact_cosine():
    a, b = _leaf(5, 3, seed=18), _leaf(5, 3, seed=19)
    assert torch.autograd.gradcheck(lambda x, y: exact_cosine(x, y, dim=0), (a, b))
    assert torch.autograd.gradcheck(lambda x, y: exact_cosine(x, y, dim=1), (a, b))
    tiny_a = (_randn(4, 2, seed=20).abs() * 1e-25).requires_grad_()
    tiny_b = (_randn(4, 2, seed=21).abs() * 1e-25).requires_grad_()
    # gradients of a scale-invariant function scale like 1/|x|: check relative accuracy via rescaled inputs
    g = torch.autograd.grad(exact_cosine(tiny_a, tiny_b).sum(), tiny_a)[0]
    a1 = (tiny_a.detach() * 1e25).requires_grad_()
    g1 = torch.autograd.grad(exact_cosine(a1, tiny_b.detach() * 1e25).sum(), a1)[0]
    torch.testing.assert_close(g * 1e-25, g1, rtol=1e-10, atol=0)


def test_cswt_temperatures_have_no_grad():
    zs, zt = _leaf(5, 4, seed=22), _leaf(5, 4, seed=23)
    temps = cswt_temperatures(zs, zt)
    assert temps.grad_fn is None and not temps.requires_grad


def test_cswt_gradient_equals_fixed_temperature_gradient():
    """CSWT's T_i are a stop-gradient: grad of cskd_loss == grad with T_i passed in as constants."""
    zs, zt = _leaf(6, 5, seed=24), _leaf(6, 5, seed=25)
    loss = cskd_loss(zs, zt, 4.0, 2.0, 6.0, cswt=True)
    g_s, g_t = torch.autograd.grad(loss, (zs, zt))

    temps = cswt_temperatures(zs, zt, 2.0, 6.0)
    assert temps.unique().numel() > 1  # a genuine per-sample temperature
    manual = 16.0 * batch_cosine_distance(zs, zt, 4.0) + temps.mean() ** 2 * batch_cosine_distance(zs, zt, temps)
    m_s, m_t = torch.autograd.grad(manual, (zs, zt))
    assert float(loss.detach()) == pytest.approx(float(manual.detach()), rel=1e-12)
    torch.testing.assert_close(g_s, m_s, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(g_t, m_t, rtol=1e-10, atol=1e-14)
    # and the fixed-temperature path itself is gradcheck-exact
    fixed = temps.clone()
    assert torch.autograd.gradcheck(
        lambda a, b: 16.0 * batch_cosine_distance(a, b, 4.0) + fixed.mean() ** 2 * batch_cosine_distance(a, b, fixed),
        (zs, zt),
    )


@pytest.mark.parametrize("case", ["float", "per_sample", "rare", "float32"])
def test_fused_path_equals_op_by_op_autograd(case):
    """batch_cosine_distance's fused closed-form backward == autograd through the plain ops."""
    if case == "rare":
        zs, zt = _rare_class_logits(-35.0, seed=80).double(), _rare_class_logits(-35.0, seed=81).double()
    else:
        dtype = torch.float32 if case == "float32" else torch.float64
        zs, zt = _randn(6, 5, seed=82, dtype=dtype, scale=2.0), _randn(6, 5, seed=83, dtype=dtype, scale=2.0)
    t = _per_row_t(6, dtype=zs.dtype) if case == "per_sample" else 4.0
    zs, zt = zs.requires_grad_(), zt.requires_grad_()
    fused = batch_cosine_distance(zs, zt, t)
    plain = 1.0 - losses._per_class_cosine(zs, zt, t).mean()
    rtol = 1e-5 if zs.dtype == torch.float32 else 1e-10
    assert float(fused.detach()) == pytest.approx(float(plain.detach()), rel=rtol, abs=1e-12)
    for a, b in zip(torch.autograd.grad(fused, (zs, zt)), torch.autograd.grad(plain, (zs, zt)), strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-6 if zs.dtype == torch.float32 else 1e-14)


def test_gradients_reach_both_inputs(logits):
    zs, zt = (x.clone().requires_grad_() for x in logits)
    cskd_loss(zs, zt).backward()
    assert zs.grad is not None and zt.grad is not None
    assert torch.isfinite(zs.grad).all() and zs.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- properties


@given(logit_pairs(min_b=2), temperatures)
def test_property_distance_in_unit_interval(pair, temperature):
    zs, zt = pair
    d = float(batch_cosine_distance(zs, zt, temperature))
    assert -4e-16 <= d <= 1.0  # a few ulps below 0 when every cosine rounds to 1 + eps
    d32 = float(batch_cosine_distance(zs.float(), zt.float(), temperature))
    assert -1e-6 <= d32 <= 1.0 + 1e-6
    assert d == pytest.approx(ref.batch_cosine_distance(zs, zt, temperature), abs=1e-9)


@given(logit_pairs(min_b=2), temperatures, temperature_ranges())
def test_property_cskd_of_identical_logits_is_zero(pair, temperature, t_range):
    z = pair[0]
    assert float(cskd_loss(z, z.clone(), temperature, *t_range)) == pytest.approx(0.0, abs=1e-9)
    assert float(cskd_loss(z.float(), z.float(), temperature, *t_range)) == pytest.approx(0.0, abs=1e-3)
    assert float(kd_loss(z, z.clone(), temperature)) == pytest.approx(0.0, abs=1e-9)


def _pearson_well_conditioned(zs, zt, temperature, rel=1e-6) -> bool:
    """Every probability row and column is either exactly constant or clearly not (centring is then stable).

    A row like softmax([0, 1e-13, 0]) has a well-defined Pearson direction only in exact arithmetic:
    centring cancels all but the last bits, so its correlation depends on the summation order.
    """
    for p in (ref.softmax(zs, temperature), ref.softmax(zt, temperature)):
        for vectors in (p, p.T):
            spread = vectors.max(1) - vectors.min(1)
            if np.any((spread > 0) & (spread < rel * np.abs(vectors).max(1))):
                return False
    return True


@given(logit_pairs(min_b=2, min_c=2), st.randoms(use_true_random=False), temperature_ranges())
@example(  # identical student and teacher: per-sample cosines equal up to rounding noise only
    pair=(torch.tensor([[1.5, 1.0], [0.0, 0.0]], dtype=torch.float64),) * 2,
    rnd=random.Random(1),
    t_range=(0.5, 1.0),
)
def test_property_joint_permutation_invariance(pair, rnd, t_range):
    zs, zt = pair
    rows = list(range(zs.shape[0]))
    cols = list(range(zs.shape[1]))
    rnd.shuffle(rows)
    rnd.shuffle(cols)
    ps, pt = zs[rows][:, cols], zt[rows][:, cols]
    fns = [
        lambda a, b: batch_cosine_distance(a, b, 3.0),
        lambda a, b: cskd_loss(a, b, cswt=False),
        lambda a, b: kd_loss(a, b, 2.0),
    ]
    if _pearson_well_conditioned(zs, zt, 2.0):
        fns.append(lambda a, b: dist_loss(a, b, 2.0))
    for fn in fns:
        assert float(fn(ps, pt)) == pytest.approx(float(fn(zs, zt)), rel=1e-9, abs=1e-12)
    # CSWT's min-max map divides by the spread of the s_i: rounding (~1e-16) in s_i becomes
    # ~1e-16 / spread in T_i, so the tolerance follows the conditioning.
    s = ref.per_sample_cosine(zs, zt)
    rel = 1e-9 + 1e-13 / max(float(s.max() - s.min()), 1e-300)
    cskd = lambda a, b: cskd_loss(a, b, 4.0, *t_range)  # noqa: E731
    assert float(cskd(ps, pt)) == pytest.approx(float(cskd(zs, zt)), rel=rel, abs=1e-12)
    # CSWT temperatures follow the sample permutation
    torch.testing.assert_close(
        cswt_temperatures(ps, pt, *t_range), cswt_temperatures(zs, zt, *t_range)[rows], rtol=rel, atol=1e-12
    )


@given(logit_pairs(max_b=10), temperature_ranges(), st.sampled_from([torch.float64, torch.float32]))
@example(  # float32 rounding once put T_i one ulp above t_high
    pair=(torch.zeros(2, 2, dtype=torch.float64), torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)),
    t_range=(1.0, 1.67227642312902),
    dtype=torch.float32,
)
def test_property_cswt_bounds_order_and_extremes(pair, t_range, dtype):
    zs, zt = (x.to(dtype) for x in pair)
    t_low, t_high = t_range
    temps = cswt_temperatures(zs, zt, t_low, t_high)
    assert temps.shape == (zs.shape[0],)
    assert not torch.isnan(temps).any()
    lo = torch.tensor(t_low, dtype=dtype)
    hi = torch.tensor(t_high, dtype=dtype)
    assert bool((temps >= lo).all()) and bool((temps <= hi).all())

    s = torch.from_numpy(ref.per_sample_cosine(zs, zt, 1.0))
    s_lib = losses._per_sample_cosine(zs, zt, 1.0)  # exactly the similarities CSWT uses
    np.testing.assert_allclose(s_lib.double().numpy(), s.numpy(), atol=1e-6 if dtype == torch.float32 else 1e-12)
    order = torch.argsort(s_lib, stable=True)
    sorted_t = temps[order]
    assert bool((sorted_t[1:] <= sorted_t[:-1]).all()), "T_i must be non-increasing in s_i"

    spread = float(s_lib.max() - s_lib.min())
    noise = 64 * torch.finfo(dtype).eps  # spreads at rounding level count as "all equal"
    if spread > noise:
        assert float(temps[torch.argmax(s_lib)]) == pytest.approx(t_low, rel=1e-6)
        assert float(temps[torch.argmin(s_lib)]) == pytest.approx(t_high, rel=1e-6)
    else:
        assert temps.tolist() == pytest.approx([(t_low + t_high) / 2] * zs.shape[0], rel=1e-6)


@given(logit_pairs(), temperatures)
def test_property_kd_equals_mdistiller(pair, temperature):
    zs, zt = pair
    expected = float(ref.kd_loss_mdistiller(zs, zt, temperature))
    assert float(kd_loss(zs, zt, temperature)) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@given(logit_pairs(min_b=2), temperatures)
def test_property_losses_non_negative_and_finite(pair, temperature):
    zs, zt = pair
    for value in (
        kd_loss(zs, zt, temperature),
        cskd_loss(zs, zt, temperature),
        dist_loss(zs, zt, temperature),
    ):
        assert math.isfinite(float(value)) and float(value) >= -1e-9


@given(st.integers(1, 6), st.integers(1, 6), st.floats(-50, 50), temperature_ranges())
def test_property_all_equal_similarities_give_midpoint(b, c, value, t_range):
    z = torch.full((b, c), value, dtype=torch.float64)
    temps = cswt_temperatures(z, z.clone(), *t_range)
    assert temps.tolist() == pytest.approx([(t_range[0] + t_range[1]) / 2] * b)


def test_cswt_single_sample_gets_midpoint():
    zs, zt = _randn(1, 5, seed=30), _randn(1, 5, seed=31)
    assert cswt_temperatures(zs, zt, 2.0, 6.0).tolist() == [4.0]
    assert cswt_temperatures(zs.float(), zt.float(), 1.0, 2.0).tolist() == [1.5]
    with pytest.raises(ValueError, match=r"cskd_loss needs at least 2 samples"):  # the loss refuses B = 1
        cskd_loss(zs, zt)


# ----------------------------------------------------------------------------- dtypes and extreme input


def test_float64_in_float64_out(logits64):
    zs, zt = logits64
    for value in (
        kd_loss(zs, zt),
        batch_cosine_distance(zs, zt, 4.0),
        cswt_temperatures(zs, zt),
        cskd_loss(zs, zt),
        dist_loss(zs, zt),
        exact_cosine(zs, zt),
    ):
        assert value.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32_and_stay_finite(logits, dtype):
    zs, zt = (x.to(dtype) for x in logits)
    for name, value in (
        ("kd", kd_loss(zs, zt)),
        ("bcd", batch_cosine_distance(zs, zt, 4.0)),
        ("cswt", cswt_temperatures(zs, zt)),
        ("cskd", cskd_loss(zs, zt)),
        ("dist", dist_loss(zs, zt)),
    ):
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value).all(), name
    # float32 computation on the half values: equal to the float32 result on the same (rounded) values
    assert float(cskd_loss(zs, zt)) == pytest.approx(float(cskd_loss(zs.float(), zt.float())), rel=1e-6)
    assert float(cskd_loss(zs, zt)) == pytest.approx(ref.cskd_loss(zs, zt), rel=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_gradients_flow_back_to_half_leaf(logits, dtype):
    zs = logits[0].to(dtype).requires_grad_()
    zt = logits[1].to(dtype)
    for fn in (cskd_loss, kd_loss, dist_loss, lambda a, b: batch_cosine_distance(a, b, 4.0)):
        zs.grad = None
        fn(zs, zt).backward()
        assert zs.grad is not None and zs.grad.dtype == dtype
        assert torch.isfinite(zs.grad).all()


@pytest.mark.parametrize("scale", [1e2, 1e3, 1e4])
def test_huge_logits_stay_finite(scale):
    zs = _randn(8, 10, seed=40, dtype=torch.float32, scale=scale).requires_grad_()
    zt = _randn(8, 10, seed=41, dtype=torch.float32, scale=scale)
    for fn in (
        kd_loss,
        cskd_loss,
        dist_loss,
        lambda a, b: cskd_loss(a, b, cswt=False),
        lambda a, b: batch_cosine_distance(a, b, 4.0),
    ):
        zs.grad = None
        value = fn(zs, zt)
        assert torch.isfinite(value), fn
        value.backward()
        assert torch.isfinite(zs.grad).all(), fn
    assert torch.isfinite(cswt_temperatures(zs, zt)).all()
    d = float(batch_cosine_distance(zs.detach(), zt, 4.0))
    assert 0.0 <= d <= 1.0
    assert d == pytest.approx(1 - float(np.mean(ref.mp_per_class_cosine(zs, zt, 4.0))), abs=1e-5)


@pytest.mark.parametrize("shape", [(2, 5), (7, 2), (2, 2), (5, 1), (2, 1)])
def test_small_shapes_stay_finite(shape):
    """The smallest batches CSKD accepts (B = 2; B = 1 is refused, see tests/test_bad_inputs.py)."""
    zs = _randn(*shape, seed=50, scale=3.0).requires_grad_()
    zt = _randn(*shape, seed=51, scale=3.0)
    for fn in (
        kd_loss,
        cskd_loss,
        dist_loss,
        lambda a, b: batch_cosine_distance(a, b, 4.0),
        lambda a, b: exact_cosine(a, b, 0),
        lambda a, b: exact_cosine(a, b, 1),
    ):
        zs.grad = None
        value = fn(zs, zt)
        assert torch.isfinite(value).all()
        value.sum().backward()
        assert torch.isfinite(zs.grad).all()
    zs = zs.detach()
    assert float(cskd_loss(zs, zt)) == pytest.approx(ref.cskd_loss(zs, zt), rel=1e-10, abs=1e-12)
    if shape[1] == 1:  # one class: every probability is 1, nothing to distil
        assert float(cskd_loss(zs, zt)) == pytest.approx(0.0, abs=1e-12)
        assert float(kd_loss(zs, zt)) == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- rarely predicted classes


def _rare_class_logits(log10_p: float, seed: int, b: int = 6, temperature: float = 4.0):
    """float32 logits whose last class has probability ~10**log10_p (varying per sample) at ``temperature``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, 4, generator=g)
    gap = -log10_p * math.log(10) * temperature
    z[:, -1] = z[:, :-1].max(1).values - gap + temperature * torch.rand(b, generator=g) * 3
    return z


@pytest.mark.parametrize("log10_p", [-20.0, -25.0, -30.0, -60.0, -300.0])
def test_rare_class_cosine_is_exact(log10_p):
    zs = _rare_class_logits(log10_p, seed=60)
    zt = _rare_class_logits(log10_p, seed=61)
    assert max(ref.mp_column_norms(zs, 4.0)[-1:]) < 10 ** (log10_p + 2)
    exact = ref.mp_per_class_cosine(zs, zt, 4.0)
    assert 0.3 < exact[-1] < 0.999  # a genuine, non-trivial direction
    from cskd_viz.diagnostics import per_class_cosine

    np.testing.assert_allclose(per_class_cosine(zs, zt, 4.0).double().numpy(), exact, rtol=1e-5)
    np.testing.assert_allclose(per_class_cosine(zs.double(), zt.double(), 4.0).numpy(), exact, rtol=1e-10)
    d = float(batch_cosine_distance(zs, zt, 4.0))
    assert d == pytest.approx(1 - exact.mean(), rel=1e-5)


def test_naive_eps_cosine_is_biased_for_rare_classes():
    """The shortcut cos = a.b / (|a||b| + eps) (or F.cosine_similarity) misses a rare class entirely."""
    zs = _rare_class_logits(-25.0, seed=62)
    zt = _rare_class_logits(-25.0, seed=63)
    exact = ref.mp_per_class_cosine(zs, zt, 4.0)
    ps, pt = F.softmax(zs / 4.0, 1), F.softmax(zt / 4.0, 1)
    naive_eps = (ps * pt).sum(0) / (ps.norm(dim=0) * pt.norm(dim=0) + 1e-8)
    naive_torch = F.cosine_similarity(ps, pt, dim=0)
    assert abs(float(naive_eps[-1]) - exact[-1]) > 0.3
    assert abs(float(naive_torch[-1]) - exact[-1]) > 0.3
    naive_d = 1 - float(naive_eps.mean())
    lib_d = float(batch_cosine_distance(zs, zt, 4.0))
    assert abs(naive_d - (1 - exact.mean())) > 0.05  # the bias is visible in d itself
    assert lib_d == pytest.approx(1 - exact.mean(), rel=1e-5)


@pytest.mark.parametrize("log10_p", [-30.0, -50.0])
def test_dist_loss_exact_and_finite_for_rare_classes(log10_p):
    """DIST's column correlations keep a rarely predicted class (float32 probabilities below 1e-45 underflow)."""
    zs = _rare_class_logits(log10_p, seed=66).requires_grad_()
    zt = _rare_class_logits(log10_p, seed=67)
    value = dist_loss(zs, zt, 4.0, beta=0.0, gamma=1.0)
    assert float(value.detach()) == pytest.approx(ref.dist_loss(zs, zt, 4.0, beta=0.0, gamma=1.0), rel=1e-5)
    value.backward()
    assert torch.isfinite(zs.grad).all()


def test_rare_class_with_per_sample_temperature_is_exact():
    zs = _rare_class_logits(-28.0, seed=64)
    zt = _rare_class_logits(-28.0, seed=65)
    t = torch.full((6,), 4.0) + 0.01 * torch.arange(6.0)
    exact = ref.mp_per_class_cosine(zs, zt, t)
    assert float(batch_cosine_distance(zs, zt, t)) == pytest.approx(1 - exact.mean(), rel=1e-5)


# ----------------------------------------------------------------------------- bad input

GOOD = _randn(4, 3, seed=70, dtype=torch.float32)


def _call_all(student, teacher):
    """Every public loss called with the given logits; yields (name, thunk)."""
    return [
        ("kd_loss", lambda: kd_loss(student, teacher)),
        ("kd_loss_vec", lambda: kd_loss(student, teacher, torch.full((4,), 2.0))),
        ("batch_cosine_distance", lambda: batch_cosine_distance(student, teacher, 4.0)),
        ("cswt_temperatures", lambda: cswt_temperatures(student, teacher)),
        ("cskd_loss", lambda: cskd_loss(student, teacher)),
        ("cskd_loss_off", lambda: cskd_loss(student, teacher, cswt=False)),
        ("dist_loss", lambda: dist_loss(student, teacher)),
    ]


NAMES = [n for n, _ in _call_all(GOOD, GOOD)]

BAD_LOGITS = [
    # (student, teacher, error, pattern)
    (torch.randn(4, 3), torch.randn(4, 2), ValueError, r"student_logits and teacher_logits.*same shape"),
    (torch.randn(4, 3), torch.randn(5, 3), ValueError, r"student_logits and teacher_logits.*same shape"),
    (torch.randn(12), torch.randn(12), ValueError, r"student_logits must be 2-D"),
    (torch.randn(4, 3), torch.randn(2, 2, 3), ValueError, r"teacher_logits must be 2-D"),
    (torch.tensor(1.0), torch.tensor(1.0), ValueError, r"student_logits must be 2-D"),
    (torch.randn(0, 3), torch.randn(0, 3), ValueError, r"student_logits is an empty batch"),
    (torch.randn(4, 0), torch.randn(4, 0), ValueError, r"student_logits has no classes"),
    (torch.ones(4, 3, dtype=torch.int64), torch.randn(4, 3), TypeError, r"student_logits must have a floating dtype"),
    (torch.randn(4, 3), torch.ones(4, 3, dtype=torch.int32), TypeError, r"teacher_logits must have a floating dtype"),
    (torch.ones(4, 3, dtype=torch.bool), torch.randn(4, 3), TypeError, r"student_logits must have a floating dtype"),
    (torch.randn(4, 3, dtype=torch.complex64), torch.randn(4, 3), TypeError, r"student_logits.*floating"),
    (torch.tensor([[0.0, float("nan"), 1.0]] * 4), torch.randn(4, 3), ValueError, r"student_logits contains NaN"),
    (torch.randn(4, 3), torch.tensor([[0.0, float("inf"), 1.0]] * 4), ValueError, r"teacher_logits contains NaN"),
    (torch.tensor([[0.0, -float("inf"), 1.0]] * 4), torch.randn(4, 3), ValueError, r"student_logits.*infinite"),
    ([[0.0, 1.0, 2.0]] * 4, torch.randn(4, 3), TypeError, r"student_logits must be a torch.Tensor"),
    (torch.randn(4, 3), np.zeros((4, 3)), TypeError, r"teacher_logits must be a torch.Tensor"),
    (None, torch.randn(4, 3), TypeError, r"student_logits must be a torch.Tensor"),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("student", "teacher", "error", "pattern"), BAD_LOGITS)
def test_bad_logits_raise(name, student, teacher, error, pattern):
    thunk = dict(_call_all(student, teacher))[name]
    with pytest.raises(error, match=pattern):
        thunk()


BAD_TEMPERATURE = [
    (0.0, ValueError, r"temperature must be > 0"),
    (-1.0, ValueError, r"temperature must be > 0"),
    (float("nan"), ValueError, r"temperature must be finite"),
    (float("inf"), ValueError, r"temperature must be finite"),
    ("4", TypeError, r"temperature must be a real number"),
    (None, TypeError, r"temperature must be a real number"),
    (True, TypeError, r"temperature must be a real number"),
]
BAD_TEMPERATURE_TENSOR = [
    (torch.tensor([2.0, 0.0, 1.0, 3.0]), ValueError, r"temperature must be > 0"),
    (torch.tensor([2.0, -1.0, 1.0, 3.0]), ValueError, r"temperature must be > 0"),
    (torch.tensor([2.0, float("nan"), 1.0, 3.0]), ValueError, r"temperature contains NaN"),
    (torch.tensor([2.0, float("inf"), 1.0, 3.0]), ValueError, r"temperature contains NaN or infinite"),
    (torch.tensor([2.0, 1.0, 3.0]), ValueError, r"temperature must be a float or a \(4,\) tensor"),
    (torch.ones(5), ValueError, r"temperature must be a float or a \(4,\) tensor"),
    (torch.ones(4, 1), ValueError, r"temperature must be a float or a \(4,\) tensor"),
    (torch.ones(4, dtype=torch.int64), TypeError, r"temperature must have a floating dtype"),
    (torch.tensor(0.0), ValueError, r"temperature must be > 0"),
    (torch.tensor(-2.0), ValueError, r"temperature must be > 0"),
]


@pytest.mark.parametrize(("temperature", "error", "pattern"), BAD_TEMPERATURE + BAD_TEMPERATURE_TENSOR)
@pytest.mark.parametrize("fn", [kd_loss, batch_cosine_distance])
def test_bad_temperature_raises(fn, temperature, error, pattern):
    with pytest.raises(error, match=pattern):
        fn(GOOD, GOOD, temperature)


@pytest.mark.parametrize(("temperature", "error", "pattern"), BAD_TEMPERATURE)
@pytest.mark.parametrize("fn", [cskd_loss, dist_loss])
def test_bad_float_temperature_raises(fn, temperature, error, pattern):
    with pytest.raises(error, match=pattern):
        fn(GOOD, GOOD, temperature)


@pytest.mark.parametrize("fn", [cskd_loss, dist_loss])
def test_float_only_temperature_rejects_tensor(fn):
    with pytest.raises(TypeError, match=r"temperature must be a real number"):
        fn(GOOD, GOOD, torch.full((4,), 2.0))


BAD_RANGE = [
    ({"t_low": 6.0, "t_high": 2.0}, ValueError, r"t_low must be <= t_high"),
    ({"t_low": 0.0}, ValueError, r"t_low must be > 0"),
    ({"t_low": -1.0}, ValueError, r"t_low must be > 0"),
    ({"t_high": 0.0, "t_low": 0.0}, ValueError, r"t_low must be > 0"),
    ({"t_low": 1.0, "t_high": -3.0}, ValueError, r"t_high must be > 0"),
    ({"t_high": float("nan")}, ValueError, r"t_high must be finite"),
    ({"t_high": float("inf")}, ValueError, r"t_high must be finite"),
    ({"t_low": "2"}, TypeError, r"t_low must be a real number"),
    ({"t_high": None}, TypeError, r"t_high must be a real number"),
    ({"t_low": torch.tensor([2.0, 3.0])}, TypeError, r"t_low must be a real number"),
    ({"t_high": 1e4}, ValueError, r"t_high must be in \[0.001, 1000\]"),
    ({"t_low": 1e-4}, ValueError, r"t_low must be in \[0.001, 1000\]"),
]


@pytest.mark.parametrize(("kwargs", "error", "pattern"), BAD_RANGE)
@pytest.mark.parametrize("fn", [cswt_temperatures, cskd_loss])
def test_bad_temperature_range_raises(fn, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        fn(GOOD, GOOD, **kwargs)


def test_cskd_range_checked_even_without_cswt():
    with pytest.raises(ValueError, match=r"t_low must be <= t_high"):
        cskd_loss(GOOD, GOOD, t_low=5.0, t_high=1.0, cswt=False)


@pytest.mark.parametrize("cswt", [1, 0, "yes", None, torch.tensor(True)])
def test_cskd_cswt_must_be_bool(cswt):
    with pytest.raises(TypeError, match=r"cswt must be a bool"):
        cskd_loss(GOOD, GOOD, cswt=cswt)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"beta": -1.0}, ValueError, r"beta"),
        ({"gamma": -0.5}, ValueError, r"gamma"),
        ({"beta": float("nan")}, ValueError, r"beta must be finite"),
        ({"gamma": float("inf")}, ValueError, r"gamma must be finite"),
        ({"beta": "1"}, TypeError, r"beta must be a real number"),
        ({"gamma": None}, TypeError, r"gamma must be a real number"),
    ],
)
def test_dist_bad_weights_raise(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        dist_loss(GOOD, GOOD, **kwargs)


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "error", "pattern"),
    [
        (torch.ones(3), torch.ones(4), {}, ValueError, r"a and b must have the same shape"),
        (torch.ones(3, 2), torch.ones(2, 3), {}, ValueError, r"a and b must have the same shape"),
        ([1.0, 2.0], torch.ones(2), {}, TypeError, r"a must be a torch.Tensor"),
        (torch.ones(2), None, {}, TypeError, r"b must be a torch.Tensor"),
        (torch.ones(2, dtype=torch.int64), torch.ones(2), {}, TypeError, r"a must have a floating dtype"),
        (torch.ones(2), torch.ones(2, dtype=torch.bool), {}, TypeError, r"b must have a floating dtype"),
        (torch.tensor([1.0, float("nan")]), torch.ones(2), {}, ValueError, r"a contains NaN"),
        (torch.ones(2), torch.tensor([1.0, float("inf")]), {}, ValueError, r"b contains NaN or infinite"),
        (torch.tensor(1.0), torch.tensor(1.0), {}, ValueError, r"a must have at least one dimension"),
        (torch.ones(0, 3), torch.ones(0, 3), {}, ValueError, r"a has no entries along dim"),
        (torch.ones(2, 3), torch.ones(2, 3), {"dim": 2}, ValueError, r"dim"),
        (torch.ones(2, 3), torch.ones(2, 3), {"dim": 0.5}, TypeError, r"dim must be an int"),
    ],
)
def test_exact_cosine_bad_input_raises(a, b, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        exact_cosine(a, b, **kwargs)


def test_cskd_loss_returns_the_temperatures_it_used(logits):
    student, teacher = logits
    loss, used = losses.cskd_loss(student, teacher, return_temperatures=True)
    assert torch.equal(loss, losses.cskd_loss(student, teacher))
    assert torch.allclose(used, losses.cswt_temperatures(student, teacher)) and used.grad_fn is None
    loss_off, none = losses.cskd_loss(student, teacher, cswt=False, return_temperatures=True)
    assert none is None and torch.equal(loss_off, losses.cskd_loss(student, teacher, cswt=False))


@pytest.mark.parametrize("rare", [False, True], ids=["typical", "rare-classes"])
def test_blocked_fused_path_matches_op_by_op_autograd(rare):
    """Inputs above the fused kernel's block size take the blocked path: values and gradients must
    still equal plain autograd through the op-by-op per-class cosine (float64)."""
    gen = torch.Generator().manual_seed(7)
    batch, classes = (2048, 40) if rare else (700, 100)
    student = torch.randn(batch, classes, generator=gen, dtype=torch.float64) * 3
    teacher = torch.randn(batch, classes, generator=gen, dtype=torch.float64) * 3
    if rare:  # classes 0-4 are almost never predicted: probabilities far below float32's range
        student[:, :5] -= 800.0
        teacher[:, :5] -= 820.0
    temps = 1.0 + 5.0 * torch.rand(batch, generator=gen, dtype=torch.float64)
    assert student.numel() > 2**16
    for fixed in (4.0, temps):
        s1 = student.clone().requires_grad_()
        t1 = teacher.clone().requires_grad_()
        fused = losses.batch_cosine_distance(s1, t1, fixed)
        fused.backward()
        s2 = student.clone().requires_grad_()
        t2 = teacher.clone().requires_grad_()
        plain = 1.0 - losses._per_class_cosine(s2, t2, fixed).mean()
        plain.backward()
        assert torch.allclose(fused, plain, rtol=1e-10, atol=1e-12)
        assert torch.allclose(s1.grad, s2.grad, rtol=1e-8, atol=1e-14)
        assert torch.allclose(t1.grad, t2.grad, rtol=1e-8, atol=1e-14)
