"""Tests of cskd_viz.diagnostics against the independent references in tests/reference.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as ref
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cskd_viz import diagnostics, losses
from cskd_viz.diagnostics import (
    AgreementAccumulator,
    KLvsCosine,
    PerClassCosineAccumulator,
    TemperatureStatsAccumulator,
    per_class_cosine,
    per_sample_cosine,
    per_sample_kl,
    prediction_entropy,
    top1_agreement,
)


def _randn(*shape, seed=0, dtype=torch.float64, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _batches(n_batches=5, b=7, c=6, seed=0, dtype=torch.float64, scale=2.0):
    """A list of (student, teacher) batches with varying batch sizes (the last one smaller)."""
    out = []
    for k in range(n_batches):
        rows = b if k < n_batches - 1 else max(1, b // 2)
        zs = _randn(rows, c, seed=seed + 2 * k, dtype=dtype, scale=scale)
        zt = zs + _randn(rows, c, seed=seed + 2 * k + 1, dtype=dtype, scale=scale / 2)
        out.append((zs, zt))
    return out


@st.composite
def logit_pairs(draw, max_b: int = 8, max_c: int = 7, scale: float = 20.0, min_b: int = 1):
    b = draw(st.integers(min_b, max_b))
    c = draw(st.integers(1, max_c))
    elements = st.floats(-scale, scale, allow_nan=False, allow_infinity=False, width=32)
    zs = draw(arrays(np.float64, (b, c), elements=elements))
    zt = draw(arrays(np.float64, (b, c), elements=elements))
    return torch.from_numpy(zs), torch.from_numpy(zt)


# ----------------------------------------------------------------------------- per-batch functions vs reference


@pytest.mark.parametrize("temperature", [1.0, 4.0, "per_sample"])
def test_per_class_cosine_matches_reference(logits64, temperature):
    zs, zt = logits64
    t = 1.0 + torch.arange(zs.shape[0], dtype=torch.float64) / 2 if temperature == "per_sample" else temperature
    got = per_class_cosine(zs, zt, t)
    assert got.shape == (zs.shape[1],) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref.per_class_cosine(zs, zt, t), rtol=1e-12)
    assert float(1 - got.mean()) == pytest.approx(float(losses.batch_cosine_distance(zs, zt, t)), rel=1e-12)


def test_per_class_cosine_default_temperature_is_4(logits64):
    zs, zt = logits64
    np.testing.assert_allclose(per_class_cosine(zs, zt).numpy(), ref.per_class_cosine(zs, zt, 4.0), rtol=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 3.0, "per_sample"])
def test_per_sample_cosine_matches_reference(logits64, temperature):
    zs, zt = logits64
    t = 0.5 + torch.arange(zs.shape[0], dtype=torch.float64) if temperature == "per_sample" else temperature
    got = per_sample_cosine(zs, zt, t)
    assert got.shape == (zs.shape[0],) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref.per_sample_cosine(zs, zt, t), rtol=1e-12)
    # default T = 1: the similarities CSWT uses
    np.testing.assert_allclose(per_sample_cosine(zs, zt).numpy(), ref.per_sample_cosine(zs, zt, 1.0), rtol=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 4.0, "per_sample"])
def test_per_sample_kl_matches_reference(logits64, temperature):
    zs, zt = logits64
    t = 0.5 + torch.arange(zs.shape[0], dtype=torch.float64) if temperature == "per_sample" else temperature
    got = per_sample_kl(zs, zt, t)
    assert got.shape == (zs.shape[0],) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref.per_sample_kl(zs, zt, t), rtol=1e-10)
    # KD loss is T^2 times the mean per-sample KL
    if not isinstance(t, torch.Tensor):
        assert float(losses.kd_loss(zs, zt, t)) == pytest.approx(t**2 * float(got.mean()), rel=1e-12)


def test_top1_agreement_matches_reference(logits, logits64):
    for zs, zt in (logits, logits64):
        got = top1_agreement(zs, zt)
        assert got.dim() == 0
        assert float(got) == pytest.approx(ref.top1_agreement(zs, zt))
    z = _randn(9, 4, seed=3)
    assert float(top1_agreement(z, z)) == 1.0
    assert float(top1_agreement(z, -z)) == 0.0


@pytest.mark.parametrize("temperature", [1.0, 2.5, "per_sample"])
def test_prediction_entropy_matches_reference(logits64, temperature):
    z = logits64[0]
    t = 0.5 + torch.arange(z.shape[0], dtype=torch.float64) if temperature == "per_sample" else temperature
    got = prediction_entropy(z, t)
    assert got.shape == (z.shape[0],) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref.entropy(z, t), rtol=1e-10)
    assert bool((got >= 0).all()) and bool((got <= math.log(z.shape[1]) + 1e-12).all())
    assert prediction_entropy(torch.zeros(2, 8)).tolist() == pytest.approx([math.log(8)] * 2)


def test_diagnostics_have_no_grad(logits):
    zs = logits[0].clone().requires_grad_()
    for value in (
        per_class_cosine(zs, logits[1]),
        per_sample_cosine(zs, logits[1]),
        per_sample_kl(zs, logits[1]),
        prediction_entropy(zs),
        top1_agreement(zs, logits[1]),
    ):
        assert not value.requires_grad


@given(logit_pairs(min_b=2), st.floats(0.25, 16.0))
def test_property_cosines_in_unit_interval(pair, temperature):
    zs, zt = pair
    for dtype in (torch.float64, torch.float32):
        c = per_class_cosine(zs.to(dtype), zt.to(dtype), temperature)
        s = per_sample_cosine(zs.to(dtype), zt.to(dtype), temperature)
        # exactly [0, 1], no tolerance: both are clamped (an unclamped float32 cosine can be 1.0000001)
        assert bool((c >= 0).all()) and bool((c <= 1).all())
        assert bool((s >= 0).all()) and bool((s <= 1).all())
    assert bool((per_sample_kl(zs, zt, temperature) >= 0).all())
    np.testing.assert_allclose(
        per_class_cosine(zs, zt, temperature).numpy(), ref.per_class_cosine(zs, zt, temperature), atol=1e-10
    )


@pytest.mark.parametrize("log10_p", [-20.0, -30.0, -200.0])
def test_per_class_cosine_exact_for_rare_classes(log10_p):
    gen = torch.Generator().manual_seed(5)
    zs, zt = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    gap = -log10_p * math.log(10) * 4.0
    zs[:, 0] -= gap + 4 * torch.rand(6, generator=gen)
    zt[:, 0] -= gap + 4 * torch.rand(6, generator=gen)
    exact = ref.mp_per_class_cosine(zs, zt, 4.0)
    assert ref.mp_column_norms(zs, 4.0)[0] < 10 ** (log10_p + 1)
    np.testing.assert_allclose(per_class_cosine(zs, zt, 4.0).double().numpy(), exact, rtol=1e-5)


# ----------------------------------------------------------------------------- dtypes and extreme input


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_computed_in_float32(logits, dtype):
    zs, zt = (x.to(dtype) for x in logits)
    for fn in (per_class_cosine, per_sample_cosine, per_sample_kl):
        value = fn(zs, zt)
        assert value.dtype == torch.float32 and torch.isfinite(value).all()
        torch.testing.assert_close(value, fn(zs.float(), zt.float()))
    assert prediction_entropy(zs).dtype == torch.float32
    assert float(top1_agreement(zs, zt)) == float(top1_agreement(zs.float(), zt.float()))


def test_float64_in_float64_out(logits64):
    zs, zt = logits64
    for value in (per_class_cosine(zs, zt), per_sample_cosine(zs, zt), per_sample_kl(zs, zt), prediction_entropy(zs)):
        assert value.dtype == torch.float64


@pytest.mark.parametrize("shape", [(2, 4), (6, 2), (2, 1), (4, 1)])
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_extreme_but_valid_input_is_finite(shape, scale):
    zs, zt = (
        _randn(*shape, seed=1, dtype=torch.float32, scale=scale),
        _randn(*shape, seed=2, dtype=torch.float32, scale=scale),
    )
    for value in (
        per_class_cosine(zs, zt),
        per_sample_cosine(zs, zt),
        per_sample_kl(zs, zt),
        prediction_entropy(zs),
        top1_agreement(zs, zt),
    ):
        assert torch.isfinite(value).all()
    np.testing.assert_allclose(
        per_class_cosine(zs, zt).double().numpy(), ref.mp_per_class_cosine(zs, zt, 4.0), atol=1e-5
    )
    np.testing.assert_allclose(per_sample_kl(zs, zt).double().numpy(), ref.per_sample_kl(zs, zt), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- KLvsCosine


def test_kl_vs_cosine_frame_columns_and_shift_invariance(logits):
    zs, zt = logits
    helper = KLvsCosine(zs, zt, temperature=4.0)
    frame = helper.frame(scales=[0.5, 1.0, 2.0], shifts=[-5.0, 0.0, 3.0])
    assert set(frame.columns) >= {
        "transform",
        "amount",
        "kd_loss",
        "mean_kl",
        "cosine_distance",
        "cskd_loss",
        "mean_sample_cosine_distance",
    }
    assert len(frame) == 6 and list(frame["transform"]) == ["scale"] * 3 + ["shift"] * 3
    base = frame[(frame["transform"] == "scale") & (frame["amount"] == 1.0)].iloc[0]
    assert base.kd_loss == pytest.approx(ref.kd_loss(zs, zt, 4.0), rel=1e-4)
    assert base.mean_kl == pytest.approx(float(np.mean(ref.per_sample_kl(zs, zt, 4.0))), rel=1e-4)
    assert base.cosine_distance == pytest.approx(ref.batch_cosine_distance(zs, zt, 4.0), rel=1e-4)
    assert base.cskd_loss == pytest.approx(ref.cskd_loss(zs, zt, 4.0, cswt=False), rel=1e-4)
    assert base.mean_sample_cosine_distance == pytest.approx(1 - np.mean(ref.per_sample_cosine(zs, zt, 4.0)), rel=1e-4)
    measures = ["kd_loss", "mean_kl", "cosine_distance", "cskd_loss", "mean_sample_cosine_distance"]
    # a shift of every student logit leaves the softmax, hence both measures, unchanged
    for _, row in frame[frame["transform"] == "shift"].iterrows():
        for m in measures:
            assert row[m] == pytest.approx(base[m], rel=1e-4, abs=1e-6), (row["amount"], m)
    # a scale changes them (the softmax sharpens/flattens)
    for _, row in frame[(frame["transform"] == "scale") & (frame["amount"] != 1.0)].iterrows():
        for m in measures:
            assert abs(row[m] - base[m]) > 1e-4, (row["amount"], m)


def test_kl_vs_cosine_scaled_values_match_reference(logits64):
    zs, zt = logits64
    frame = KLvsCosine(zs, zt, temperature=2.0).frame(scales=[3.0], shifts=[])
    row = frame.iloc[0]
    assert row["transform"] == "scale" and row["amount"] == 3.0
    assert row.kd_loss == pytest.approx(ref.kd_loss(3.0 * zs, zt, 2.0), rel=1e-10)
    assert row.cosine_distance == pytest.approx(ref.batch_cosine_distance(3.0 * zs, zt, 2.0), rel=1e-10)


def test_kl_vs_cosine_identical_logits_give_zero(logits):
    z = logits[0]
    frame = KLvsCosine(z, z.clone()).frame(scales=[1.0], shifts=[2.0])
    for m in ("kd_loss", "mean_kl", "cosine_distance", "cskd_loss"):
        assert frame[m].abs().max() < 1e-5


def test_kl_vs_cosine_per_sample_frame(logits64):
    zs, zt = logits64
    frame = KLvsCosine(zs, zt, temperature=2.0).per_sample()
    assert list(frame.columns) == ["sample", "kl", "cosine_distance", "top1_agree"]
    assert list(frame["sample"]) == list(range(zs.shape[0]))
    np.testing.assert_allclose(frame["kl"], ref.per_sample_kl(zs, zt, 2.0), rtol=1e-10)
    np.testing.assert_allclose(frame["cosine_distance"], 1 - ref.per_sample_cosine(zs, zt, 2.0), atol=1e-12)
    assert list(frame["top1_agree"]) == [bool(a.argmax() == b.argmax()) for a, b in zip(zs, zt, strict=True)]


def test_kl_vs_cosine_does_not_keep_the_graph(logits):
    zs = logits[0].clone().requires_grad_()
    helper = KLvsCosine(zs, logits[1])
    assert not helper.student_logits.requires_grad


# ----------------------------------------------------------------------------- PerClassCosineAccumulator


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_per_class_accumulator_equals_all_at_once(dtype):
    batches = _batches(dtype=dtype)
    acc = PerClassCosineAccumulator(6, temperature=3.0)
    for zs, zt in batches:
        acc.update(zs, zt)
    all_s = torch.cat([b[0] for b in batches])
    all_t = torch.cat([b[1] for b in batches])
    got = acc.compute()
    assert got.shape == (6,) and got.dtype == torch.float64
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(got.numpy(), per_class_cosine(all_s, all_t, 3.0).double().numpy(), rtol=rtol)
    np.testing.assert_allclose(got.numpy(), ref.per_class_cosine(all_s, all_t, 3.0), rtol=rtol)
    assert acc.samples == all_s.shape[0] and acc.batches == len(batches)


def test_per_class_accumulator_batch_mean_differs_from_epoch_value():
    batches = _batches(seed=10)
    acc = PerClassCosineAccumulator(6, temperature=4.0)
    for zs, zt in batches:
        acc.update(zs, zt)
    per_batch = torch.stack([per_class_cosine(zs, zt, 4.0) for zs, zt in batches])
    np.testing.assert_allclose(acc.compute_batch_mean().numpy(), per_batch.mean(0).numpy(), rtol=1e-12)
    # the epoch-level cosine is a different quantity (documented): they must not be confused
    assert float((acc.compute_batch_mean() - acc.compute()).abs().max()) > 1e-6


@pytest.mark.parametrize("log10_p", [-30.0, -200.0])
def test_per_class_accumulator_exact_for_rare_classes(log10_p):
    """Columns of tiny probabilities (squares below float64's range for 1e-200) stay exact."""
    batches = []
    gen = torch.Generator().manual_seed(7)
    gap = -log10_p * math.log(10) * 4.0
    for _ in range(3):
        zs, zt = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
        zs[:, 0] -= gap + 4 * torch.rand(5, generator=gen)
        zt[:, 0] -= gap + 4 * torch.rand(5, generator=gen)
        batches.append((zs, zt))
    acc = PerClassCosineAccumulator(4, temperature=4.0)
    for zs, zt in batches:
        acc.update(zs, zt)
    all_s = torch.cat([b[0] for b in batches])
    all_t = torch.cat([b[1] for b in batches])
    exact = ref.mp_per_class_cosine(all_s, all_t, 4.0)
    assert 0.3 < exact[0] < 0.999
    np.testing.assert_allclose(acc.compute().numpy(), exact, rtol=1e-6)
    np.testing.assert_allclose(per_class_cosine(all_s, all_t, 4.0).double().numpy(), exact, rtol=1e-5)


def test_per_class_accumulator_merge_equals_single():
    batches = _batches(n_batches=6, seed=20)
    single = PerClassCosineAccumulator(6)
    first, second = PerClassCosineAccumulator(6), PerClassCosineAccumulator(6)
    for k, (zs, zt) in enumerate(batches):
        single.update(zs, zt)
        (first if k % 2 == 0 else second).update(zs, zt)
    first.merge(second)
    np.testing.assert_allclose(first.compute().numpy(), single.compute().numpy(), rtol=1e-12)
    np.testing.assert_allclose(first.compute_batch_mean().numpy(), single.compute_batch_mean().numpy(), rtol=1e-12)
    assert (first.samples, first.batches) == (single.samples, single.batches)
    # merging an empty accumulator changes nothing
    before = first.compute().clone()
    first.merge(PerClassCosineAccumulator(6))
    torch.testing.assert_close(first.compute(), before)
    empty = PerClassCosineAccumulator(6)
    empty.merge(single)
    torch.testing.assert_close(empty.compute(), single.compute())


def test_per_class_accumulator_reset_and_compute_before_update():
    acc = PerClassCosineAccumulator(3)
    with pytest.raises(RuntimeError, match="before any update"):
        acc.compute()
    with pytest.raises(RuntimeError, match="before any update"):
        acc.compute_batch_mean()
    acc.update(_randn(4, 3, seed=1), _randn(4, 3, seed=2))
    acc.compute()
    acc.reset()
    assert acc.samples == 0 and acc.batches == 0
    with pytest.raises(RuntimeError, match="before any update"):
        acc.compute()
    z = _randn(4, 3, seed=3)
    acc.update(z, z)
    assert acc.compute().tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_per_class_accumulator_memory_is_flat():
    acc = PerClassCosineAccumulator(5)
    acc.update(_randn(3, 5, seed=0), _randn(3, 5, seed=1))

    def state_sizes():
        return {k: v.numel() for k, v in vars(acc).items() if isinstance(v, torch.Tensor)}

    sizes = state_sizes()
    assert sizes and all(n <= 5 * 5 for n in sizes.values())  # O(C): five (C,) rows at most
    for k in range(30):
        acc.update(_randn(16, 5, seed=k), _randn(16, 5, seed=k + 100))
    assert state_sizes() == sizes
    assert not any(isinstance(v, list) for v in vars(acc).values())


def test_per_class_accumulator_detaches_and_accepts_half(logits):
    acc = PerClassCosineAccumulator(5)
    acc.update(logits[0].clone().requires_grad_().half(), logits[1].half())
    assert torch.isfinite(acc.compute()).all() and not acc.compute().requires_grad


# ----------------------------------------------------------------------------- TemperatureStatsAccumulator


def test_temperature_stats_match_numpy():
    gen = torch.Generator().manual_seed(9)
    chunks = [2.0 + 4.0 * torch.rand(n, generator=gen, dtype=torch.float64) for n in (5, 8, 1, 13)]
    chunks.append(torch.tensor([2.0, 6.0, 4.0], dtype=torch.float64))  # both edges and the midpoint
    acc = TemperatureStatsAccumulator(2.0, 6.0, bins=7)
    for c in chunks:
        acc.update(c)
    allv = torch.cat(chunks).numpy()
    stats = acc.compute()
    assert stats["count"] == allv.size
    assert stats["mean"] == pytest.approx(allv.mean(), rel=1e-12)
    assert stats["std"] == pytest.approx(allv.std(), rel=1e-9)
    assert stats["min"] == allv.min() and stats["max"] == allv.max()
    counts, edges = np.histogram(allv, bins=7, range=(2.0, 6.0))
    assert stats["histogram"].tolist() == counts.tolist()
    np.testing.assert_allclose(stats["bin_edges"].numpy(), edges)
    assert int(stats["histogram"].sum()) == allv.size


def test_temperature_stats_from_real_cswt_temperatures():
    acc = TemperatureStatsAccumulator(2.0, 6.0, bins=4)
    everything = []
    for zs, zt in _batches(seed=30):
        temps = losses.cswt_temperatures(zs, zt, 2.0, 6.0)
        everything.append(temps)
        acc.update(temps)
    allv = torch.cat(everything).numpy()
    stats = acc.compute()
    assert stats["min"] == pytest.approx(2.0) and stats["max"] == pytest.approx(6.0)
    assert stats["mean"] == pytest.approx(allv.mean()) and stats["std"] == pytest.approx(allv.std())
    assert stats["histogram"].tolist() == np.histogram(allv, bins=4, range=(2.0, 6.0))[0].tolist()


def test_temperature_stats_merge_reset_and_flat_memory():
    a, b, single = (TemperatureStatsAccumulator(1.0, 3.0, bins=5) for _ in range(3))
    with pytest.raises(RuntimeError, match="before any update"):
        single.compute()
    for k in range(10):
        t = 1.0 + 2.0 * torch.rand(6, generator=torch.Generator().manual_seed(k))
        single.update(t)
        (a if k % 2 else b).update(t)
    a.merge(b)
    sa, ss = a.compute(), single.compute()
    for key in ("count", "mean", "std", "min", "max"):
        assert sa[key] == pytest.approx(ss[key], rel=1e-12)
    assert sa["histogram"].tolist() == ss["histogram"].tolist()
    assert single.histogram.numel() == 5
    single.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        single.compute()


def test_temperature_stats_degenerate_range():
    acc = TemperatureStatsAccumulator(3.0, 3.0, bins=3)
    acc.update(torch.full((4,), 3.0))
    stats = acc.compute()
    assert stats["mean"] == 3.0 and stats["std"] == 0.0 and int(stats["histogram"].sum()) == 4


# ----------------------------------------------------------------------------- AgreementAccumulator


def test_agreement_accumulator_equals_all_at_once():
    batches = _batches(seed=40)
    targets = [
        torch.randint(0, 6, (zs.shape[0],), generator=torch.Generator().manual_seed(k))
        for k, (zs, _) in enumerate(batches)
    ]
    acc = AgreementAccumulator()
    with pytest.raises(RuntimeError, match="before any update"):
        acc.compute()
    for (zs, zt), y in zip(batches, targets, strict=True):
        acc.update(zs, zt, y)
    all_s = torch.cat([b[0] for b in batches])
    all_t = torch.cat([b[1] for b in batches])
    all_y = torch.cat(targets).numpy()
    got = acc.compute()
    assert got["agreement"] == pytest.approx(ref.top1_agreement(all_s, all_t))
    assert got["agreement"] == pytest.approx(float(top1_agreement(all_s, all_t)))
    assert got["student_accuracy"] == pytest.approx(float(np.mean(all_s.argmax(1).numpy() == all_y)))
    assert got["teacher_accuracy"] == pytest.approx(float(np.mean(all_t.argmax(1).numpy() == all_y)))


def test_agreement_accumulator_without_targets_merge_reset():
    batches = _batches(seed=50)
    a, b, single = AgreementAccumulator(), AgreementAccumulator(), AgreementAccumulator()
    for k, (zs, zt) in enumerate(batches):
        single.update(zs, zt)
        (a if k % 2 else b).update(zs, zt)
    assert set(single.compute()) == {"agreement"}
    a.merge(b)
    assert a.compute() == single.compute()
    single.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        single.compute()


# ----------------------------------------------------------------------------- bad input

GOOD = _randn(4, 3, seed=70, dtype=torch.float32)


def _calls(student, teacher):
    return {
        "per_class_cosine": lambda: per_class_cosine(student, teacher),
        "per_sample_cosine": lambda: per_sample_cosine(student, teacher),
        "per_sample_kl": lambda: per_sample_kl(student, teacher),
        "top1_agreement": lambda: top1_agreement(student, teacher),
        "KLvsCosine": lambda: KLvsCosine(student, teacher),
        "PerClassCosineAccumulator.update": lambda: PerClassCosineAccumulator(3).update(student, teacher),
        "AgreementAccumulator.update": lambda: AgreementAccumulator().update(student, teacher),
    }


BAD_LOGITS = [
    (torch.randn(4, 3), torch.randn(4, 2), ValueError, r"student_logits and teacher_logits.*same shape"),
    (torch.randn(4, 3), torch.randn(5, 3), ValueError, r"student_logits and teacher_logits.*same shape"),
    (torch.randn(12), torch.randn(12), ValueError, r"student_logits must be 2-D"),
    (torch.randn(4, 3), torch.randn(2, 2, 3), ValueError, r"teacher_logits must be 2-D"),
    (torch.randn(0, 3), torch.randn(0, 3), ValueError, r"student_logits is an empty batch"),
    (torch.randn(4, 0), torch.randn(4, 0), ValueError, r"student_logits has no classes"),
    (torch.ones(4, 3, dtype=torch.int64), torch.randn(4, 3), TypeError, r"student_logits must have a floating dtype"),
    (torch.randn(4, 3), torch.ones(4, 3, dtype=torch.uint8), TypeError, r"teacher_logits must have a floating dtype"),
    (torch.tensor([[0.0, float("nan"), 1.0]] * 4), torch.randn(4, 3), ValueError, r"student_logits contains NaN"),
    (torch.randn(4, 3), torch.tensor([[0.0, float("inf"), 1.0]] * 4), ValueError, r"teacher_logits contains NaN"),
    ([[0.0, 1.0, 2.0]] * 4, torch.randn(4, 3), TypeError, r"student_logits must be a torch.Tensor"),
    (torch.randn(4, 3), np.zeros((4, 3)), TypeError, r"teacher_logits must be a torch.Tensor"),
]


@pytest.mark.parametrize("name", list(_calls(GOOD, GOOD)))
@pytest.mark.parametrize(("student", "teacher", "error", "pattern"), BAD_LOGITS)
def test_bad_logits_raise(name, student, teacher, error, pattern):
    with pytest.raises(error, match=pattern):
        _calls(student, teacher)[name]()


@pytest.mark.parametrize(
    ("logits", "error", "pattern"),
    [
        (torch.randn(5), ValueError, r"logits must be 2-D"),
        (torch.randn(0, 3), ValueError, r"logits is an empty batch"),
        (torch.ones(2, 3, dtype=torch.int64), TypeError, r"logits must have a floating dtype"),
        (torch.tensor([[float("nan"), 0.0]]), ValueError, r"logits contains NaN"),
        ([[1.0, 2.0]], TypeError, r"logits must be a torch.Tensor"),
    ],
)
def test_prediction_entropy_bad_logits(logits, error, pattern):
    with pytest.raises(error, match=pattern):
        prediction_entropy(logits)


BAD_TEMPERATURE = [
    (0.0, ValueError, r"temperature must be > 0"),
    (-2.0, ValueError, r"temperature must be > 0"),
    (float("nan"), ValueError, r"temperature must be finite"),
    (float("inf"), ValueError, r"temperature must be finite"),
    ("1", TypeError, r"temperature must be a real number"),
    (None, TypeError, r"temperature must be a real number"),
]
BAD_TEMPERATURE_TENSOR = [
    (torch.tensor([1.0, 0.0, 1.0, 1.0]), ValueError, r"temperature must be > 0"),
    (torch.tensor([1.0, float("nan"), 1.0, 1.0]), ValueError, r"temperature contains NaN"),
    (torch.ones(3), ValueError, r"temperature must be a float or a \(4,\) tensor"),
    (torch.ones(4, dtype=torch.int32), TypeError, r"temperature must have a floating dtype"),
]


@pytest.mark.parametrize(("temperature", "error", "pattern"), BAD_TEMPERATURE + BAD_TEMPERATURE_TENSOR)
@pytest.mark.parametrize("fn", [per_class_cosine, per_sample_cosine, per_sample_kl])
def test_bad_temperature_raises(fn, temperature, error, pattern):
    with pytest.raises(error, match=pattern):
        fn(GOOD, GOOD, temperature)


@pytest.mark.parametrize(("temperature", "error", "pattern"), BAD_TEMPERATURE + BAD_TEMPERATURE_TENSOR)
def test_prediction_entropy_bad_temperature(temperature, error, pattern):
    with pytest.raises(error, match=pattern):
        prediction_entropy(GOOD, temperature)


@pytest.mark.parametrize(("temperature", "error", "pattern"), BAD_TEMPERATURE)
@pytest.mark.parametrize(
    "make", [lambda t: KLvsCosine(GOOD, GOOD, t), lambda t: PerClassCosineAccumulator(3, temperature=t)]
)
def test_bad_float_temperature_in_constructors(make, temperature, error, pattern):
    with pytest.raises(error, match=pattern):
        make(temperature)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"scales": [0.0]}, ValueError, r"scales must be > 0"),
        ({"scales": [-1.0]}, ValueError, r"scales must be > 0"),
        ({"scales": ["x"]}, TypeError, r"scales must be a real number"),
        ({"shifts": [float("nan")]}, ValueError, r"shifts must be finite"),
        ({"shifts": [None]}, TypeError, r"shifts must be a real number"),
    ],
)
def test_kl_vs_cosine_bad_transforms(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        KLvsCosine(GOOD, GOOD).frame(**kwargs)


@pytest.mark.parametrize(
    ("num_classes", "error"), [(0, ValueError), (-3, ValueError), ("3", TypeError), (3.0, TypeError), (True, TypeError)]
)
def test_per_class_accumulator_bad_num_classes(num_classes, error):
    with pytest.raises(error, match=r"num_classes must be a positive int"):
        PerClassCosineAccumulator(num_classes)


def test_per_class_accumulator_wrong_class_count_and_merge():
    acc = PerClassCosineAccumulator(3)
    with pytest.raises(ValueError, match=r"student_logits has 4 classes.*expects 3"):
        acc.update(torch.randn(2, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"same num_classes and temperature"):
        acc.merge(PerClassCosineAccumulator(4))
    with pytest.raises(ValueError, match=r"same num_classes and temperature"):
        acc.merge(PerClassCosineAccumulator(3, temperature=2.0))
    with pytest.raises(TypeError, match=r"other must be a PerClassCosineAccumulator"):
        acc.merge(TemperatureStatsAccumulator())


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"t_low": 6.0, "t_high": 2.0}, ValueError, r"t_low must be <= t_high"),
        ({"t_low": 0.0}, ValueError, r"t_low must be > 0"),
        ({"t_high": float("nan")}, ValueError, r"t_high must be finite"),
        ({"t_low": "2"}, TypeError, r"t_low must be a real number"),
        ({"bins": 0}, ValueError, r"bins must be a positive int"),
        ({"bins": 2.5}, TypeError, r"bins must be a positive int"),
        ({"bins": "4"}, TypeError, r"bins must be a positive int"),
    ],
)
def test_temperature_stats_bad_constructor(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        TemperatureStatsAccumulator(**kwargs)


@pytest.mark.parametrize(
    ("temperatures", "error", "pattern"),
    [
        ([2.0, 3.0], TypeError, r"temperatures must be a torch.Tensor"),
        (np.array([2.0, 3.0]), TypeError, r"temperatures must be a torch.Tensor"),
        (torch.ones(2, 2), ValueError, r"temperatures must be 1-D"),
        (torch.tensor(2.0), ValueError, r"temperatures must be 1-D"),
        (torch.tensor([2.0, float("nan")]), ValueError, r"temperatures contains NaN"),
        (torch.tensor([2.0, float("inf")]), ValueError, r"temperatures contains NaN or infinite"),
        (torch.tensor([2.0, 0.0]), ValueError, r"temperatures must be > 0"),
        (torch.tensor([2.0, -1.0]), ValueError, r"temperatures must be > 0"),
        (torch.tensor([2, 3]), TypeError, r"temperatures must have a floating dtype"),
    ],
)
def test_temperature_stats_bad_update(temperatures, error, pattern):
    with pytest.raises(error, match=pattern):
        TemperatureStatsAccumulator().update(temperatures)


def test_temperature_stats_bad_merge():
    acc = TemperatureStatsAccumulator(2.0, 6.0, bins=4)
    with pytest.raises(ValueError, match=r"same t_low, t_high and bins"):
        acc.merge(TemperatureStatsAccumulator(2.0, 6.0, bins=5))
    with pytest.raises(TypeError, match=r"other must be a TemperatureStatsAccumulator"):
        acc.merge(AgreementAccumulator())


@pytest.mark.parametrize(
    ("targets", "error", "pattern"),
    [
        (torch.tensor([0, 1, 2]), ValueError, r"targets must have shape \(4,\)"),
        (torch.zeros(4, 1, dtype=torch.long), ValueError, r"targets must have shape \(4,\)"),
        ([0, 1, 2, 0], TypeError, r"targets must be a torch.Tensor"),
        (torch.zeros(4), TypeError, r"targets must have an integer dtype"),
    ],
)
def test_agreement_accumulator_bad_targets(targets, error, pattern):
    with pytest.raises(error, match=pattern):
        AgreementAccumulator().update(GOOD, GOOD, targets)


def test_agreement_accumulator_bad_merge():
    with pytest.raises(TypeError, match=r"other must be an AgreementAccumulator"):
        AgreementAccumulator().merge(PerClassCosineAccumulator(3))


def test_public_names():
    for name in diagnostics.__all__:
        assert hasattr(diagnostics, name)
