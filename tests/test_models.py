"""Tests for cskd_viz.models: the registry, small nets, the CIFAR zoo's mdistiller compatibility and load_teacher.

The expected state-dict keys and shapes come from tests/fixtures/mdistiller_cifar100_state_dicts.json,
written by tests/fixtures/make_mdistiller_manifest.py from mdistiller's model definitions (block
counts, widths, shortcut rules) without building any of our models.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import pytest
import torch

from cskd_viz.models import MODELS, ZOO_MODELS, count_parameters, get_model, load_teacher
from cskd_viz.models.cifar import CIFAR_ALIASES, CIFAR_MODELS
from cskd_viz.models.cifar.resnet import ResNet
from cskd_viz.models.cifar.resnetv2 import BottleneckV2, ResNetV2
from cskd_viz.models.cifar.vgg import VGG
from cskd_viz.models.cifar.wrn import WideResNet

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "mdistiller_cifar100_state_dicts.json").read_text())
# Forward passes skip the four biggest (> 14M parameters): the same classes run in smaller members.
BIG = {"ResNet34", "ResNet50", "vgg16_bn", "vgg19_bn"}


@pytest.fixture
def one_thread():
    """Zoo forward passes on one thread: the machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- registry ---------------------------------------------------------------------------------


def test_manifest_covers_the_whole_zoo():
    assert set(MANIFEST["models"]) == set(CIFAR_MODELS)
    assert set(ZOO_MODELS) == set(CIFAR_MODELS) | set(CIFAR_ALIASES) and set(ZOO_MODELS) <= set(MODELS)
    named_in_issue = {"resnet8x4", "resnet32x4", "resnet20", "resnet56", "wrn_16_2", "wrn_40_2", "vgg8_bn", "vgg13_bn"}
    assert named_in_issue <= set(CIFAR_MODELS)


def test_manifest_file_matches_its_generator():
    spec = importlib.util.spec_from_file_location("make_manifest", FIXTURES / "make_mdistiller_manifest.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    regenerated = {name: [[k, s] for k, s in keys.items] for name, keys in generator.manifest().items()}
    assert regenerated == MANIFEST["models"]


def test_get_model_errors():
    with pytest.raises(ValueError, match=r"model must be one of .*resnet32x4.*wrn_40_2"):
        get_model("resnet1000", 100)
    with pytest.raises(ValueError, match=r"input_shape must be \(3, 32, 32\) for the CIFAR zoo model 'resnet8'"):
        get_model("resnet8", 10, (1, 28, 28))
    with pytest.raises(ValueError, match="num_classes"):
        get_model("resnet8", 0)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ResNet(9, [16, 16, 32, 64]), "6n \\+ 2"),
        (lambda: ResNet(10, [16, 16, 32, 64], "bottleneck"), "9n \\+ 2"),
        (lambda: ResNet(8, [16, 16, 32, 64], "plain"), "block_name"),
        (lambda: ResNet(8, [16, 32, 64]), "num_filters"),
        (lambda: WideResNet(12, 10), "6n \\+ 4"),
        (lambda: VGG([[64]], batch_norm=True), "5 stages"),
    ],
)
def test_zoo_constructor_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("name", ["mlp_small", "mlp_large", "cnn_small", "cnn_large"])
def test_small_models_forward(name):
    model = get_model(name, 7, (1, 8, 8))
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 7) and count_parameters(model) > 0


# --- mdistiller compatibility -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ZOO_MODELS))
def test_state_dict_keys_and_shapes_match_mdistiller(name):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = get_model(name, MANIFEST["num_classes"])
    got = [(key, list(t.shape)) for key, t in model.state_dict().items()]
    expected = [tuple(item) for item in MANIFEST["models"][CIFAR_ALIASES.get(name, name)]]
    got_d, exp_d = dict(got), dict(expected)
    assert not (missing := sorted(set(exp_d) - set(got_d))), f"keys mdistiller has and we lack: {missing[:10]}"
    assert not (extra := sorted(set(got_d) - set(exp_d))), f"keys we have and mdistiller lacks: {extra[:10]}"
    assert {k: v for k, v in got_d.items() if v != exp_d[k]} == {}
    assert got == expected  # same registration order as well


@pytest.mark.parametrize("name", sorted(set(CIFAR_MODELS) - BIG))
def test_zoo_forward(name, one_thread):
    torch.manual_seed(0)
    model = get_model(name, 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        again, feats = model(x, return_features=True)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert torch.equal(logits, again)
    head = dict(model.named_modules())[list(model.state_dict())[-1].rsplit(".", 1)[0]]
    assert feats["pooled_feat"].shape == (2, head.in_features)
    assert all(f.shape[0] == 2 and f.ndim == 4 for f in feats["feats"])


def test_bottleneck_resnetv2_forward(one_thread):
    """ResNet50's block type, in a small network (ResNet50 itself only has its keys checked)."""
    model = ResNetV2(BottleneckV2, [1, 1, 1, 1], num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_zoo_trains_in_train_mode(one_thread):
    model = get_model("resnet8", 10)
    loss = model(torch.randn(4, 3, 32, 32)).logsumexp(dim=1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# --- load_teacher -----------------------------------------------------------------------------


class NotATensor:
    """A pickled Python object that torch.load's weights_only mode refuses."""


@pytest.fixture(scope="module")
def resnet8_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    model = get_model("resnet8", 100)
    model.train()
    model(torch.randn(8, 3, 32, 32))  # non-trivial BN running statistics
    return model.state_dict()


def logits_of(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.ones(2, 3, 32, 32))


def reference(state) -> torch.Tensor:
    model = get_model("resnet8", 100)
    model.load_state_dict(state)
    return logits_of(model.eval())


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"model": sd},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 240},
    ],
    ids=["model", "module-prefix", "bare", "state_dict"],
)
def test_load_teacher_formats(tmp_path, resnet8_state, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(resnet8_state), path)
    teacher = load_teacher(path, "resnet8")
    assert not teacher.training
    assert torch.equal(logits_of(teacher), reference(resnet8_state))


def test_load_teacher_mdistiller_style_checkpoint(tmp_path, resnet8_state):
    """A full training checkpoint as mdistiller / CRD save it, from a DataParallel model."""
    params = list(get_model("resnet8", 100).parameters())
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9).state_dict()
    optimizer["state"] = {i: {"momentum_buffer": torch.zeros_like(p)} for i, p in enumerate(params)}
    state = {f"module.{k}": v for k, v in resnet8_state.items()}
    checkpoint = {"epoch": 240, "model": state, "best_acc": torch.tensor(73.5), "optimizer": optimizer}
    torch.save(checkpoint, tmp_path / "ckpt_epoch_240.pth")
    teacher = load_teacher(str(tmp_path / "ckpt_epoch_240.pth"), "resnet8", num_classes=100)
    assert torch.equal(logits_of(teacher), reference(resnet8_state))


def test_load_teacher_accepts_mdistiller_alias(tmp_path):
    with torch.device("meta"):
        shapes = get_model("vgg13_bn", 100).state_dict()
    torch.save({"model": {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()}}, tmp_path / "v.pth")
    assert type(load_teacher(tmp_path / "v.pth", "vgg13")).__name__ == "VGG"


def test_load_teacher_without_num_batches_tracked(tmp_path, resnet8_state):
    old = {k: v for k, v in resnet8_state.items() if not k.endswith("num_batches_tracked")}
    torch.save({"model": old}, tmp_path / "old.pth")
    assert torch.equal(logits_of(load_teacher(tmp_path / "old.pth", "resnet8")), reference(resnet8_state))


def test_load_teacher_names_missing_and_unexpected_keys(tmp_path, resnet8_state):
    state = dict(resnet8_state)
    del state["fc.weight"], state["layer2.0.bn1.running_var"]
    state["projector.weight"] = torch.zeros(3)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as err:
        load_teacher(tmp_path / "bad.pth", "resnet8")
    message = str(err.value)
    assert "missing keys (2): [layer2.0.bn1.running_var, fc.weight]" in message
    assert "unexpected keys (1): [projector.weight]" in message and "'resnet8'" in message


def test_load_teacher_wrong_architecture_lists_keys(tmp_path, resnet8_state):
    torch.save({"model": resnet8_state}, tmp_path / "r8.pth")
    with pytest.raises(
        ValueError, match=r"does not fit 'resnet20'.*missing keys \(60\): \[layer1\.1\.conv1\.weight.*more\)"
    ):
        load_teacher(tmp_path / "r8.pth", "resnet20")
    with pytest.raises(
        ValueError, match=r"shape mismatches \(2\): \[fc\.weight: checkpoint \(100, 64\) vs model \(10, 64\)"
    ):
        load_teacher(tmp_path / "r8.pth", "resnet8", num_classes=10)


def test_load_teacher_bad_arch_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match=r"arch must be one of \[.*'resnet32x4'.*'wrn_40_2'.*\], got 'resnet9'"):
        load_teacher(tmp_path / "whatever.pth", "resnet9")


def test_load_teacher_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'.*nowhere\.pth' does not exist"):
        load_teacher(tmp_path / "nowhere.pth", "resnet8")
    with pytest.raises(FileNotFoundError, match="is a directory"):
        load_teacher(tmp_path, "resnet8")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"teacher checkpoint .*junk\.pth' cannot be read: it is not a PyTorch"):
        load_teacher(tmp_path / "junk.pth", "resnet8")


def test_load_teacher_unsafe_pickle_needs_opt_in(tmp_path, resnet8_state):
    torch.save({"model": resnet8_state, "extra": NotATensor()}, tmp_path / "obj.pth")
    with pytest.raises(ValueError, match="weights_only=False"):
        load_teacher(tmp_path / "obj.pth", "resnet8")
    teacher = load_teacher(tmp_path / "obj.pth", "resnet8", weights_only=False)
    assert torch.equal(logits_of(teacher), reference(resnet8_state))


def test_load_teacher_not_a_state_dict(tmp_path):
    torch.save({"epoch": 3, "acc": 0.5}, tmp_path / "meta.pth")
    with pytest.raises(ValueError, match=r"no 'model' or 'state_dict' entry.*top-level keys: \[epoch, acc\]"):
        load_teacher(tmp_path / "meta.pth", "resnet8")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="must hold a dict"):
        load_teacher(tmp_path / "list.pth", "resnet8")


def test_pickle_of_not_a_tensor_class_is_importable():
    # torch.save needs NotATensor to be importable by pickle from this module.
    assert pickle.loads(pickle.dumps(NotATensor())).__class__.__name__ == "NotATensor"


# --- unusable checkpoint files (issue #14, finding 9) --------------------------------------------


def _damaged(tmp_path, state) -> dict[str, object]:
    """Real files of each kind that cannot be a teacher, by name."""
    good = tmp_path / "good.pth"
    torch.save({"model": state}, good)
    raw = good.read_bytes()
    files = {
        "empty": b"",
        "text": b"epoch,loss\n1,0.5\n",  # the old loader said "cannot be read: 101" / KeyError: 101 for such files
        "truncated": raw[: len(raw) // 2],
        "truncated-head": raw[:100],
    }
    out = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        out[name] = tmp_path / name
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": state}, legacy, _use_new_zipfile_serialization=False)
    (tmp_path / "legacy-truncated").write_bytes(legacy.read_bytes()[: legacy.stat().st_size // 2])
    out["legacy-truncated"] = tmp_path / "legacy-truncated"
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"model": {"fc.weight": [1.0]}}, protocol=2))
    out["plain-pickle"] = tmp_path / "plain.pkl"
    return out


DAMAGED = {
    "empty": r"cannot be read: it is empty \(0 bytes\)",
    "text": r"cannot be read: it is not a PyTorch checkpoint .*starts with b'epoch,loss",
    "truncated": r"cannot be read: it is truncated or corrupt \(\d+ bytes",
    "truncated-head": r"cannot be read: it is truncated or corrupt",
    "legacy-truncated": r"cannot be read: it is truncated or corrupt",
    "plain-pickle": r"cannot be read: it is a Python pickle, not a PyTorch checkpoint",
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_unreadable_checkpoints_have_one_line_reasons(tmp_path, resnet8_state, case):
    from cskd_viz.models.checkpoints import CheckpointError
    from cskd_viz.train import load_checkpoint

    path = _damaged(tmp_path, resnet8_state)[case]
    with pytest.raises(CheckpointError, match=r"teacher checkpoint .* " + DAMAGED[case]) as err:
        load_teacher(path, "resnet8")
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match=DAMAGED[case]):
        load_checkpoint(get_model("resnet8", 100), path)


def test_legacy_format_checkpoint_still_loads(tmp_path, resnet8_state):
    torch.save({"model": resnet8_state}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    assert torch.equal(logits_of(load_teacher(tmp_path / "old.pth", "resnet8")), reference(resnet8_state))


def test_non_finite_weights_are_refused_by_name(tmp_path, resnet8_state):
    from cskd_viz.train import load_checkpoint

    state = {k: v.clone() for k, v in resnet8_state.items()}
    state["fc.weight"][0, :3] = float("nan")
    state["fc.bias"][1] = float("inf")
    keys = [k for k, v in state.items() if v.is_floating_point()]
    for key in keys[:10]:  # more than the message lists
        state[key].view(-1)[0] = float("nan")
    torch.save({"model": state}, tmp_path / "nan.pth")
    with pytest.raises(ValueError, match=r"non-finite weights \(NaN or inf\) in 12 of \d+ tensors: \[conv1\.weight "
                       r"\(1 of 432 values\), .*\(4 more\)\]") as err:  # fmt: skip
        load_teacher(tmp_path / "nan.pth", "resnet8")
    assert "'nan.pth'" in str(err.value) or "nan.pth" in str(err.value)
    with pytest.raises(ValueError, match="non-finite weights"):
        load_checkpoint(get_model("resnet8", 100), tmp_path / "nan.pth")


def test_dtype_mismatch_is_refused_not_cast(tmp_path, resnet8_state):
    from cskd_viz.train import load_checkpoint

    state = dict(resnet8_state)
    state["fc.weight"] = (state["fc.weight"] * 100).long()
    torch.save({"model": state}, tmp_path / "int.pth")
    pattern = r"dtype mismatches \(1\): \[fc\.weight: checkpoint torch\.int64 vs model torch\.float32\]"
    with pytest.raises(ValueError, match=pattern):
        load_teacher(tmp_path / "int.pth", "resnet8")
    with pytest.raises(ValueError, match=pattern):
        load_checkpoint(get_model("resnet8", 100), tmp_path / "int.pth")
    # a float64 checkpoint is the same kind of number: loaded (as load_state_dict copies it) and equal
    torch.save({"model": {k: v.double() if v.is_floating_point() else v for k, v in resnet8_state.items()}},
               tmp_path / "f64.pth")  # fmt: skip
    assert torch.equal(logits_of(load_teacher(tmp_path / "f64.pth", "resnet8")), reference(resnet8_state))


def test_state_dict_entry_with_non_tensors_is_named(tmp_path):
    torch.save({"model": {"fc.weight": torch.zeros(1), "note": "best"}}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=r"its 'model' entry is not a state dict.*non-tensor entries \(1\): \[note\]"):
        load_teacher(tmp_path / "odd.pth", "resnet8")
