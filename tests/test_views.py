"""The two-view CIFAR dataset of ``cskd_published``: shapes, determinism, strong != weak, Cutout."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from cskd_viz.data import CIFAR100_MEAN, CIFAR100_STD, CifarDataset
from cskd_viz.views import TwoViewDataset, _cutout, two_view_dataset


def _base(n: int = 8, seed: int = 0) -> CifarDataset:
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return CifarDataset(images, torch.arange(n) % 100, CIFAR100_MEAN, CIFAR100_STD, augment=True, seed=seed)


def _batches(ds, workers: int = 0, seed: int = 3):
    loader = DataLoader(
        ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(seed), num_workers=workers
    )
    return [tuple(t.clone() for t in batch) for batch in loader]


def test_shapes_dtypes_and_targets():
    base = _base()
    x_weak, x_strong, y = next(iter(DataLoader(two_view_dataset(base, seed=1), batch_size=8)))
    assert x_weak.shape == x_strong.shape == (8, 3, 32, 32)
    assert x_weak.dtype == x_strong.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == base.targets.tolist()
    assert two_view_dataset(base).augmented and len(two_view_dataset(base)) == 8


def test_weak_view_is_a_standardised_crop_and_flip_of_the_image():
    base = _base(2)
    ds = two_view_dataset(base, seed=5)
    weak, _, _ = ds[0]
    pixels = weak * base.std + base.mean  # back to [0, 1]
    padded = torch.nn.functional.pad(base.images[0].float() / 255, (4, 4, 4, 4))
    found = any(
        torch.allclose(pixels, view, atol=1e-5)
        for top in range(9)
        for left in range(9)
        for view in (padded[:, top : top + 32, left : left + 32],)
        for view in (view, view.flip(-1))
    )
    assert found


def test_same_seed_same_batches_and_workers_agree():
    first = _batches(two_view_dataset(_base(), seed=11))
    second = _batches(two_view_dataset(_base(), seed=11))
    for a, b in zip(first, second, strict=True):
        for x, z in zip(a, b, strict=True):
            assert torch.equal(x, z)
    other = _batches(two_view_dataset(_base(), seed=12))
    assert not torch.equal(first[0][1], other[0][1])
    with_workers = [_batches(two_view_dataset(_base(), seed=11), workers=2) for _ in range(2)]
    assert all(torch.equal(x, z) for a, b in zip(*with_workers, strict=True) for x, z in zip(a, b, strict=True))


def test_global_rng_is_left_alone():
    ds = two_view_dataset(_base(), seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ds[0], ds[1]
    assert torch.equal(torch.rand(3), expected)


def test_strong_differs_from_weak_and_between_epochs():
    ds = two_view_dataset(_base(), seed=2)
    items = [ds[i] for i in range(8)]
    assert all(not torch.equal(weak, strong) for weak, strong, _ in items)
    again = [ds[i] for i in range(8)]  # the generator moved on: new draws
    assert any(not torch.equal(a[1], b[1]) for a, b in zip(items, again, strict=True))
    shared = two_view_dataset(_base(), seed=2, cutout=False, magnitude=0, num_ops=0)  # the default: shared crop
    assert all(torch.equal(weak, strong) for weak, strong, _ in (shared[i] for i in range(8)))  # strong = weak + more
    own = two_view_dataset(_base(), seed=2, shared_crop=False, cutout=False, magnitude=0, num_ops=0)
    assert any(not torch.equal(weak, strong) for weak, strong, _ in (own[i] for i in range(8)))


def test_cutout_zeroes_one_clipped_square_of_up_to_half_the_side():
    for seed in range(20):
        x = _cutout(torch.ones(3, 32, 32), torch.Generator().manual_seed(seed))
        zero = (x == 0).all(0)
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 16 and 1 <= len(cols) <= 16
        assert int(zero.sum()) == len(rows) * len(cols)  # a rectangle, the square clipped at the borders
        assert (rows.diff() == 1).all() and (cols.diff() == 1).all()
        assert bool((x[:, ~zero] == 1).all())


def test_strong_view_has_a_cutout_square_at_zero():
    ds = TwoViewDataset(torch.full((1, 3, 32, 32), 200, dtype=torch.uint8), torch.zeros(1), (0.1,) * 3, (0.2,) * 3)
    _, strong, _ = ds[0]
    assert int((strong == 0).all(0).sum()) >= 64  # at least an 8x8 corner of the 16x16 square


def test_pickles_with_its_generator_state():
    ds = two_view_dataset(_base(), seed=4)
    ds[0]
    copy = pickle.loads(pickle.dumps(ds))
    for a, b in zip(ds[1], copy[1], strict=True):
        assert torch.equal(a, b)


def test_bad_inputs():
    with pytest.raises(TypeError, match="needs a CIFAR training set"):
        two_view_dataset(torch.utils.data.TensorDataset(torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="uint8"):
        TwoViewDataset(torch.zeros(2, 3, 32, 32), torch.zeros(2), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="mean and std"):
        TwoViewDataset(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2), (0.5,), (0.5,))
    with pytest.raises(TypeError, match="seed must be an int"):
        TwoViewDataset(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2), (0.5,) * 3, (0.5,) * 3, seed=1.5)
