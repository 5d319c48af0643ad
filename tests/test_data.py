"""Tests for cskd_viz.data: digits, synthetic, Fashion-MNIST (IDX), CIFAR-10/100 and seeded loaders.

CIFAR and most Fashion-MNIST tests use tiny stand-ins written in the real on-disk formats
(tests/standin_data.py); one test reads the Debian ``dataset-fashion-mnist`` files (required in CI).
Nothing here downloads: an autouse fixture makes any download attempt fail the test.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from standin_data import idx_bytes, patch_torchvision_md5, write_cifar, write_fashion_mnist, write_idx

from cskd_viz import data
from cskd_viz.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    FASHION_MNIST_CLASSES,
    CifarDataset,
    cifar10,
    cifar100,
    digits,
    fashion_mnist,
    load_datasets,
    make_loaders,
    read_idx,
    synthetic,
)


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch, tmp_path):
    """Any download attempt fails loudly; $CSKD_DATA points at an empty per-test directory."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to download: {args} {kwargs}")

    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.mnist as tv_mnist

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", refuse)
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", refuse)
    monkeypatch.setenv("CSKD_DATA", str(tmp_path / "cskd_data"))


def batches(loader, n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i, (x, y) in enumerate(loader):
        if i == n:
            break
        out.append((x, y))
    return out


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# --- digits and synthetic -------------------------------------------------------------------


def test_digits_shapes_range_and_fixed_split():
    train, test, info = digits(seed=3)
    x, y = train.tensors
    assert (len(train), len(test)) == (1348, 449)
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert set(y.tolist()) == set(range(10)) and info.num_classes == 10 and not info.augmented
    # The run's seed must not move samples between train and test (no teacher/student test leak).
    other_seed, other_test, _ = digits(seed=4)
    assert torch.equal(other_seed.tensors[0], x) and torch.equal(other_test.tensors[0], test.tensors[0])
    other_split, _, _ = digits(split_seed=1)
    assert not torch.equal(other_split.tensors[0], x)


def test_synthetic_overlap_and_errors():
    train, test, info = synthetic(num_classes=4, samples_per_class=10, dim=3, overlap=0.5)
    assert len(train) + len(test) == 40 and train[0][0].shape == (3,) and info.input_shape == (3,)
    with pytest.raises(ValueError, match="overlap"):
        synthetic(overlap=0)
    with pytest.raises(ValueError, match="num_classes"):
        synthetic(num_classes=1)


# --- registry and loaders -------------------------------------------------------------------


def test_make_loaders_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"dataset must be one of .*cifar10.*cifar100.*digits.*fashion-mnist"):
        make_loaders("mnist")


def test_load_datasets_rejects_unknown_options_and_bad_seed():
    with pytest.raises(TypeError, match=r"'digits' takes the options \['test_fraction', 'split_seed'\].*train_size"):
        load_datasets("digits", train_size=10)
    with pytest.raises(TypeError, match="seed must be an int"):
        load_datasets("digits", seed=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        make_loaders("digits", batch_size=0)


def test_dataset_names_are_case_and_underscore_tolerant(tmp_path):
    write_fashion_mnist(tmp_path, n_train=10, n_test=5)
    _, _, info = load_datasets("Fashion_MNIST", root=tmp_path)
    assert info.name == "fashion-mnist"


@pytest.mark.parametrize(("spelling", "name"), [("DIGITS", "digits"), ("fashion_mnist", "fashion-mnist"),
                                                (" Cifar10 ", "cifar10"), ("digits", "digits")])  # fmt: skip
def test_one_dataset_name_rule_for_loaders_and_run_configs(spelling, name):
    """load_datasets accepted "DIGITS" and "fashion_mnist" but RunConfig (and so the CLI) refused them."""
    from cskd_viz.train import RunConfig

    assert data.canonical_dataset_name(spelling) == name
    config = RunConfig(dataset=spelling, epochs=1)
    assert config.dataset == name and config.run_name == f"cskd_cswt-cnn_small-{name}-s0"
    assert config.teacher_config() == RunConfig(dataset=name, epochs=1).teacher_config()  # the same teacher run
    for bad in ("mnist", "fashion mnist", None):
        with pytest.raises(ValueError, match=r"dataset must be one of \['cifar10', 'cifar100', 'digits'"):
            RunConfig(dataset=bad)


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_same_seed_same_batches(name):
    first = batches(make_loaders(name, batch_size=16, seed=7)[0])
    second = batches(make_loaders(name, batch_size=16, seed=7)[0])
    other = batches(make_loaders(name, batch_size=16, seed=8)[0])
    assert_same_batches(first, second)
    assert not torch.equal(first[0][0], other[0][0])


# --- IDX reader -------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    dtype=st.sampled_from(["u1", "i1", "i2", "i4", "f4", "f8"]),
    gz=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_read_idx_round_trips_every_type(tmp_path_factory, shape, dtype, gz, seed):
    rng = np.random.default_rng(seed)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = write_idx(tmp_path_factory.mktemp("idx") / "a-idx", array, gz=gz)
    out = read_idx(path)
    assert out.shape == array.shape and out.dtype == np.dtype(dtype) and np.array_equal(out, array)
    out[...] = 0  # a writable copy: the cached array stays intact
    assert np.array_equal(read_idx(path), array)


def test_read_idx_known_bytes_are_big_endian(tmp_path):
    (tmp_path / "x").write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))
    assert read_idx(tmp_path / "x").tolist() == [258, -2]


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x08\x03\x00\x00", "not an IDX file"),
        (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 5]), "not an IDX file"),
        (bytes([0, 0, 8, 3, 0, 0, 0, 2]), "header truncated"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 7]), r"promises shape \(3,\).*10 bytes"),
        (b"", "not an IDX file"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, payload, match):
    (tmp_path / "bad").write_bytes(payload)
    with pytest.raises(ValueError, match=match):
        read_idx(tmp_path / "bad")


def test_read_idx_rejects_corrupt_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))
    (tmp_path / "bad.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_idx(tmp_path / "bad.gz")


def test_read_idx_rereads_a_changed_file(tmp_path):
    path = write_idx(tmp_path / "l", np.array([1, 2], dtype=np.uint8))
    assert read_idx(path).tolist() == [1, 2]
    write_idx(path, np.array([3, 4, 5], dtype=np.uint8))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    assert read_idx(path).tolist() == [3, 4, 5]


# --- Fashion-MNIST ----------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx_files_exactly(tmp_path, gz):
    src = write_fashion_mnist(tmp_path, n_train=30, n_test=12, gz=gz)
    train, test, info = fashion_mnist(root=tmp_path)
    x, y = train.tensors
    assert x.shape == (30, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(x, torch.from_numpy(src["train-images-idx3-ubyte"]).float().div(255).unsqueeze(1))
    assert torch.equal(y, torch.from_numpy(src["train-labels-idx1-ubyte"]).long())
    assert torch.equal(test.tensors[1], torch.from_numpy(src["t10k-labels-idx1-ubyte"]).long())
    assert info.input_shape == (1, 28, 28) and info.class_names == FASHION_MNIST_CLASSES and not info.augmented


def test_fashion_mnist_subsets_are_seeded_subsets(tmp_path):
    src = write_fashion_mnist(tmp_path, n_train=50, n_test=20)
    a, ta, _ = fashion_mnist(root=tmp_path, train_size=10, test_size=5, seed=1)
    b, _, _ = fashion_mnist(root=tmp_path, train_size=10, test_size=5, seed=1)
    c, _, _ = fashion_mnist(root=tmp_path, train_size=10, test_size=5, seed=2)
    assert len(a) == 10 and len(ta) == 5
    assert torch.equal(a.tensors[0], b.tensors[0]) and not torch.equal(a.tensors[0], c.tensors[0])
    full = torch.from_numpy(src["train-images-idx3-ubyte"]).float().div(255).flatten(1)
    for row in a.tensors[0].flatten(1):  # every subsampled image is one of the originals
        assert (full == row).all(dim=1).any()
    with pytest.raises(ValueError, match=r"train_size must be None or an int in \[1, 50\]"):
        fashion_mnist(root=tmp_path, train_size=51)
    with pytest.raises(ValueError, match="test_size"):
        fashion_mnist(root=tmp_path, test_size=0)


def test_fashion_mnist_search_order(tmp_path, monkeypatch):
    system, cskd = tmp_path / "system", tmp_path / "cskd_data"
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", system)
    # torchvision's layout under $CSKD_DATA, plain files
    write_fashion_mnist(cskd / "FashionMNIST" / "raw", n_train=13, n_test=3, gz=False)
    assert len(fashion_mnist()[0]) == 13
    write_fashion_mnist(cskd / "fashion-mnist", n_train=12, n_test=3)
    assert len(fashion_mnist()[0]) == 12
    write_fashion_mnist(system, n_train=11, n_test=3)  # the Debian package's directory wins
    assert len(fashion_mnist()[0]) == 11


def test_fashion_mnist_missing_lists_places_looked_in(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    partial = tmp_path / "cskd_data" / "fashion-mnist"
    write_fashion_mnist(partial)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()  # three of four files is not enough
    with pytest.raises(FileNotFoundError) as err:
        fashion_mnist()
    message = str(err.value)
    for place in (tmp_path / "system", partial, tmp_path / "cskd_data" / "FashionMNIST" / "raw"):
        assert str(place) in message
    assert "dataset-fashion-mnist" in message and "download=True" in message
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "elsewhere")):
        fashion_mnist(root=tmp_path / "elsewhere")


def test_fashion_mnist_inconsistent_files(tmp_path):
    write_fashion_mnist(tmp_path, n_train=10, n_test=5)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(9, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"train files disagree.*\(9,\)"):
        fashion_mnist(root=tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(10, 12, dtype=np.uint8))
    with pytest.raises(ValueError, match="labels must be in 0..9"):
        fashion_mnist(root=tmp_path)


def test_fashion_mnist_loaders_are_seeded(tmp_path):
    write_fashion_mnist(tmp_path, n_train=40, n_test=10)
    first = batches(make_loaders("fashion-mnist", batch_size=8, seed=5, root=tmp_path)[0])
    second = batches(make_loaders("fashion-mnist", batch_size=8, seed=5, root=tmp_path)[0])
    assert_same_batches(first, second)
    assert first[0][0].shape == (8, 1, 28, 28)


def test_fashion_mnist_debian_package_files():
    """The real data from the Debian package ``dataset-fashion-mnist`` (installed by .ci/run)."""
    if not (data.FASHION_MNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file():
        message = f"Debian package dataset-fashion-mnist not installed ({data.FASHION_MNIST_SYSTEM_DIR})"
        if os.environ.get("CSKD_VIZ_REQUIRE_FASHION_MNIST") == "1":
            pytest.fail(message)
        pytest.skip(message)
    labels = read_idx(data.FASHION_MNIST_SYSTEM_DIR / "train-labels-idx1-ubyte.gz")
    test_labels = read_idx(data.FASHION_MNIST_SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz")
    assert np.bincount(labels).tolist() == [6000] * 10 and np.bincount(test_labels).tolist() == [1000] * 10
    assert labels[0] == 9 and test_labels[0] == 9  # both splits open with an ankle boot
    train, test, info = fashion_mnist(train_size=256, test_size=128, seed=0)
    x, y = train.tensors
    assert x.shape == (256, 1, 28, 28) and len(test) == 128 and info.class_names[9] == "Ankle boot"
    assert x.min() >= 0 and x.max() <= 1 and 0.2 < x.mean() < 0.37  # the full set's mean is 0.286
    loader, _, _ = make_loaders("fashion-mnist", batch_size=32, seed=0, train_size=256, test_size=128)
    xb, yb = next(iter(loader))
    assert xb.shape == (32, 1, 28, 28) and yb.dtype == torch.long


# --- CIFAR ------------------------------------------------------------------------------------


def normalised(images_hwc: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(images_hwc).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def stack(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*[dataset[i] for i in range(len(dataset))], strict=True)
    return torch.stack(xs), torch.stack(ys)


@pytest.mark.parametrize(
    ("kind", "loader", "mean", "std"),
    [("cifar10", cifar10, CIFAR10_MEAN, CIFAR10_STD), ("cifar100", cifar100, CIFAR100_MEAN, CIFAR100_STD)],
)
def test_cifar_standin_values(tmp_path, kind, loader, mean, std):
    src = write_cifar(tmp_path, kind, n_train=23, n_test=9)
    train, test, info = loader(root=tmp_path, verify=False, augment=False)
    x, y = stack(train)
    assert x.shape == (23, 3, 32, 32) and torch.allclose(x, normalised(src["train_images"], mean, std), atol=1e-6)
    assert torch.equal(y, torch.from_numpy(src["train_labels"]))
    xt, yt = stack(test)
    assert torch.allclose(xt, normalised(src["test_images"], mean, std), atol=1e-6)
    assert torch.equal(yt, torch.from_numpy(src["test_labels"]))
    assert info.num_classes == (10 if kind == "cifar10" else 100) and info.class_names == tuple(src["classes"])
    assert info.input_shape == (3, 32, 32) and info.mean == mean and info.std == std and not info.augmented
    assert cifar10 is not loader or info.class_names[0] == "airplane"


def test_cifar_default_verifies_md5(tmp_path):
    write_cifar(tmp_path, "cifar10")
    with pytest.raises(FileNotFoundError, match=r"cifar10 files in .*cifar-10-batches-py fail the md5 check") as err:
        cifar10(root=tmp_path)
    message = str(err.value)
    assert "download=True" in message and "https://www.cs.toronto.edu/~kriz/cifar.html" in message
    assert "verify=False" not in message  # never suggested as the fix for a file that is not the original


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_loads_through_torchvisions_integrity_check(tmp_path, monkeypatch, kind):
    """With the stand-in's md5 sums, torchvision's own class (verify=True) reads the same data."""
    src = write_cifar(tmp_path, kind, n_train=10, n_test=4)
    patch_torchvision_md5(monkeypatch, kind, src["md5"])
    train, _, info = load_datasets(kind, root=tmp_path, augment=False)
    assert torch.equal(stack(train)[1], torch.from_numpy(src["train_labels"]))
    assert info.name == kind


def test_cifar_missing_names_folder_and_files(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"cifar100 not found.*cifar-100-python.*train, test, meta.*download=True"
    ):
        cifar100(root=tmp_path / "nothing", verify=False)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cskd_data")):  # the default root is $CSKD_DATA
        cifar10()


def test_cifar_corrupt_labels_and_sizes(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=10, n_test=4)
    with pytest.raises(ValueError, match="train_size"):
        cifar10(root=tmp_path, verify=False, train_size=11)
    train, test, _ = cifar10(root=tmp_path, verify=False, train_size=6, test_size=2, seed=1)
    assert (len(train), len(test)) == (6, 2)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(path.read_bytes())
    batch["labels"][0] = 10
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ValueError, match=r"labels .* must be in 0..9"):
        cifar10(root=tmp_path, verify=False)


def test_cifar_augmentation_is_torchvisions_crop_and_flip(tmp_path):
    """Every augmented sample is pad(4) + 32x32 crop (+ horizontal flip) of the raw image, and all
    offsets 0..8 and both flips occur."""
    src = write_cifar(tmp_path, "cifar10", n_train=5, n_test=2)
    train, test, info = cifar10(root=tmp_path, verify=False, seed=0)
    assert info.augmented and train.augmented and not test.augmented
    raw = torch.from_numpy(src["train_images"][2]).permute(2, 0, 1)  # uint8 (3, 32, 32)
    padded = TF.pad(raw, [4])  # torchvision's RandomCrop(32, padding=4) pads with zeros first
    candidates = {}  # raw bytes of every possible output -> (top, left, flip)
    for top in range(9):
        for left in range(9):
            crop = TF.crop(padded, top, left, 32, 32)
            candidates[crop.numpy().tobytes()] = (top, left, False)
            candidates[TF.hflip(crop).numpy().tobytes()] = (top, left, True)
    mean, std = torch.tensor(CIFAR10_MEAN).view(3, 1, 1), torch.tensor(CIFAR10_STD).view(3, 1, 1)
    seen = set()
    for _ in range(160):
        x, _ = train[2]
        key = ((x * std + mean) * 255).round().to(torch.uint8).numpy().tobytes()
        assert key in candidates, "augmented sample is no crop/flip of the source image"
        seen.add(candidates[key])
    assert {t for t, _, _ in seen} == set(range(9)) and {lf for _, lf, _ in seen} == set(range(9))
    assert {f for _, _, f in seen} == {False, True}


def test_cifar_augmented_loaders_are_seeded(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=24, n_test=4)
    kwargs = dict(batch_size=8, root=tmp_path, verify=False)
    first = make_loaders("cifar10", seed=3, **kwargs)[0]
    epoch1, epoch2 = batches(first), batches(first)
    again = make_loaders("cifar10", seed=3, **kwargs)[0]
    assert_same_batches(epoch1, batches(again))
    assert_same_batches(epoch2, batches(again))  # the second epoch repeats too
    assert not torch.equal(epoch1[0][0], epoch2[0][0])  # new order and new crops per epoch
    other = batches(make_loaders("cifar10", seed=4, **kwargs)[0])
    assert not torch.equal(epoch1[0][0], other[0][0])


def test_cifar_augmented_loaders_are_seeded_with_workers(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=16, n_test=4)
    kwargs = dict(batch_size=8, root=tmp_path, verify=False, num_workers=1)
    first = batches(make_loaders("cifar10", seed=3, **kwargs)[0])
    second = batches(make_loaders("cifar10", seed=3, **kwargs)[0])
    assert_same_batches(first, second)


def test_cifar_dataset_pickles_with_its_generator_state():
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    ds = CifarDataset(images, torch.tensor([0, 1, 2]), (0.5,) * 3, (0.25,) * 3, augment=True, seed=9)
    ds[0]
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy[1][0], ds[1][0])


def test_cifar_dataset_rejects_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        CifarDataset(torch.zeros(2, 3, 32, 32), torch.zeros(2), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="targets"):
        CifarDataset(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(3), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="mean and std"):
        CifarDataset(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2), (0.5,), (0.5,))


# --- CIFAR files as the official release writes them, and planted ones (issue #14, finding 10) ----


def _py2_str(raw: bytes) -> bytes:  # a Python 2 ``str``: SHORT_BINSTRING or BINSTRING
    return (b"U" + bytes([len(raw)]) + raw) if len(raw) < 256 else (b"T" + len(raw).to_bytes(4, "little") + raw)


def _py2_int(v: int) -> bytes:
    return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + v.to_bytes(4, "little", signed=True)


def _py2_obj(obj) -> bytes:
    """Protocol-2 opcodes as Python 2's cPickle wrote the CIFAR files (str, not unicode; numpy.core arrays)."""
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2_obj(k) + _py2_obj(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, list):
        return b"](" + b"".join(_py2_obj(v) for v in obj) + b"e"
    if isinstance(obj, str):
        return _py2_str(obj.encode("latin1"))
    if isinstance(obj, int):
        return _py2_int(obj)
    assert isinstance(obj, np.ndarray) and obj.dtype == np.uint8 and obj.ndim == 2
    dtype = b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R("
    dtype += _py2_int(3) + _py2_str(b"|") + b"NNN" + _py2_int(-1) + _py2_int(-1) + _py2_int(0) + b"tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _py2_int(0) + b"\x85" + _py2_str(b"b")
    shape = _py2_int(obj.shape[0]) + _py2_int(obj.shape[1]) + b"\x86"
    return array + b"\x87R(" + _py2_int(1) + shape + dtype + b"\x89" + _py2_str(obj.tobytes()) + b"tb"


def _rewrite_as_python2(folder) -> dict[str, str]:
    """Re-write every stand-in file of ``folder`` the way the official files are pickled; their md5 sums."""
    md5 = {}
    for path in sorted(folder.iterdir()):
        entry = pickle.loads(path.read_bytes())
        path.write_bytes(b"\x80\x02" + _py2_obj(entry) + b".")
        assert pickle.loads(path.read_bytes(), encoding="bytes")  # what the official files need in Python 3
        md5[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
    return md5


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
@pytest.mark.parametrize("verify", [False, True])
def test_cifar_files_pickled_like_the_official_release(tmp_path, monkeypatch, kind, verify):
    src = write_cifar(tmp_path, kind, n_train=10, n_test=4)
    md5 = _rewrite_as_python2(tmp_path / ("cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python"))
    if verify:
        patch_torchvision_md5(monkeypatch, kind, md5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. numpy 2's DeprecationWarning for the files' numpy.core names
        train, test, info = load_datasets(kind, root=tmp_path, augment=False, verify=verify)
    assert torch.equal(stack(train)[1], torch.from_numpy(src["train_labels"]))
    raw = torch.from_numpy(src["test_images"]).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(info.mean).view(3, 1, 1), torch.tensor(info.std).view(3, 1, 1)
    assert torch.allclose(stack(test)[0], (raw - mean) / std, atol=1e-6)
    assert info.class_names == tuple(src["classes"])


class _Runs:
    """Unpickling this calls ``call(*args)``: what a planted data file does."""

    def __init__(self, call, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return (self.call, self.args)


def _planted(marker) -> dict[str, object]:
    import builtins

    return {
        "os.system": _Runs(os.system, f"touch '{marker}'"),
        "builtins.eval": _Runs(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
    }


@pytest.mark.parametrize("how", ["os.system", "builtins.eval"])
@pytest.mark.parametrize("where", ["data_batch_3", "batches.meta"])
@pytest.mark.parametrize("verify", [False, True])
def test_planted_cifar_file_is_refused_and_runs_nothing(tmp_path, monkeypatch, how, where, verify):
    src = write_cifar(tmp_path, "cifar10", n_train=10, n_test=4)
    marker = tmp_path / "marker"
    path = tmp_path / "cifar-10-batches-py" / where
    payload = {"data": _planted(marker)[how], "labels": [1, 2]} if where != "batches.meta" else _planted(marker)[how]
    path.write_bytes(pickle.dumps(payload, protocol=2))
    if verify:  # even sums that match the planted file (verify=True) do not make it run
        patch_torchvision_md5(monkeypatch, "cifar10", {**src["md5"], where: hashlib.md5(path.read_bytes()).hexdigest()})
    name = r"(posix|nt|os)\.system" if how == "os.system" else r"(__builtin__|builtins)\.eval"  # as pickled
    expected = rf"{path} is not a genuine CIFAR file: it asks to import {name}, .*refused before anything in it ran"
    with pytest.raises(data.UnsafeDataFileError, match=expected):
        cifar10(root=tmp_path, verify=verify)
    assert not marker.exists()


def test_cifar_truncated_file_names_it(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=10, n_test=4)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(data.DataFileError, match=rf"{path} is truncated or corrupt"):
        cifar10(root=tmp_path, verify=False)
    path.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(data.DataFileError, match=rf"{path} is not a CIFAR file: it holds a list"):
        cifar10(root=tmp_path, verify=False)
