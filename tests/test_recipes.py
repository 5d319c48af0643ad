"""Every recipe builds a valid RunConfig on stand-in CIFAR-100 files and trains 2 steps of its objective."""

from __future__ import annotations

import sys

import pytest
import torch
from standin_data import write_cifar
from torch.utils.data import DataLoader

from cskd_viz import recipes
from cskd_viz.data import cifar100
from cskd_viz.methods import total_loss
from cskd_viz.models import MODELS, get_model
from cskd_viz.training import RunConfig
from cskd_viz.views import two_view_dataset

PAPER_PAIRS = {
    "res56_res20": 0.025,
    "res110_res32": 0.025,
    "res32x4_res8x4": 0.025,
    "vgg13_vgg8": 0.025,
    "wrn40_2_wrn16_2": 0.025,
    "wrn40_2_wrn40_1": 0.025,
    "res32x4_ShuffleV1": 0.01,
    "res32x4_ShuffleV2": 0.01,
    "ResNet50_MobileNetV2": 0.01,
    "vgg13_MobileNetV2": 0.01,
    "wrn40_2_ShuffleV1": 0.01,
}


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, "cifar100", n_train=8, n_test=4)
    train, _, info = cifar100(seed=0, root=root, verify=False)
    return root, train, info


def test_names_settings_and_listing():
    names = recipes.recipe_names()
    assert names == [f"cifar100/{p}" for p in PAPER_PAIRS] + [f"mdistiller/kd/{p}" for p in PAPER_PAIRS]
    for pair, lr in PAPER_PAIRS.items():
        cskd, kd = recipes.get_recipe(f"cifar100/{pair}"), recipes.get_recipe(f"mdistiller/kd/{pair}")
        assert (cskd["method"], cskd["lr"], cskd["epochs"], cskd["batch_size"]) == ("cskd_published", lr, 480, 64)
        assert (cskd["w_ce"], cskd["w_kd"], cskd["temperature"], cskd["t_low"], cskd["t_high"]) == (1, 1, 4, 2, 6)
        assert cskd["method_options"]["masks"] == "as_published" and cskd["method_options"]["alpha"] == 2.0
        assert (kd["method"], kd["lr"], kd["epochs"], kd["w_ce"], kd["w_kd"], kd["temperature"]) == (
            "kd",
            0.05,
            240,
            0.1,
            0.9,
            4.0,
        )
        for r in (cskd, kd):
            assert (r["momentum"], r["weight_decay"], r["schedule"], r["lr_milestones"]) == (
                0.9,
                5e-4,
                "step",
                (150, 180, 210),
            )
            assert r["student"] in MODELS and r["teacher"] in MODELS and r["dataset"] == "cifar100"
    text = recipes.describe_recipes()
    assert all(name in text for name in names)
    assert recipes.teacher_checkpoint_hint("cifar100/res32x4_res8x4").endswith("resnet32x4_vanilla/ckpt_epoch_240.pth")


def test_get_recipe_returns_a_copy_and_unknown_names_list_the_known_ones():
    recipe = recipes.get_recipe("cifar100/res32x4_res8x4")
    recipe["method_options"]["masks"] = "none"
    assert recipes.get_recipe("cifar100/res32x4_res8x4")["method_options"]["masks"] == "as_published"
    with pytest.raises(
        ValueError, match=r"unknown recipe 'cifar100/res32x4_res9'.*cifar100/res56_res20.*mdistiller/kd"
    ):
        recipes.get_recipe("cifar100/res32x4_res9")


def test_module_imports_no_torch():
    code = "import sys, cskd_viz.recipes; print('torch' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _step(config: RunConfig, student, teacher, batch, optimizer) -> float:
    method = config.make_method()
    if method.two_views:
        x_weak, x_strong, y = batch
        student_weak, student_strong = student(x_weak), student(x_strong)
        with torch.no_grad():
            teacher_weak, teacher_strong = teacher(x_weak), teacher(x_strong)
        terms = method(student_weak, teacher_weak, y, strong=(student_strong, teacher_strong))
    else:
        x, y = batch
        with torch.no_grad():
            teacher_logits = teacher(x)
        terms = method(student(x), teacher_logits, y)
    loss = total_loss(terms)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@pytest.mark.parametrize("name", recipes.recipe_names())
def test_recipe_builds_a_run_config_and_trains_two_steps(name, standin, tmp_path):
    root, train, info = standin
    recipe = recipes.get_recipe(name)
    torch.manual_seed(0)
    teacher = get_model(recipe["teacher"], info.num_classes).eval()
    checkpoint = tmp_path / "teacher.pth"
    torch.save({"model": teacher.state_dict()}, checkpoint)
    config = RunConfig(**{**recipe, "teacher_checkpoint": str(checkpoint), "batch_size": 4})
    assert config.make_method().name == recipe["method"]
    student = get_model(config.student, info.num_classes)
    before = [p.detach().clone() for p in student.parameters()]
    optimizer = torch.optim.SGD(
        student.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    data = two_view_dataset(train, seed=0) if config.make_method().two_views else train
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    losses = [_step(config, student, teacher, batch, optimizer) for batch in loader]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
