"""Every recipe builds a valid RunConfig and runs 2 steps through the real trainer on stand-in CIFAR-100 files."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from standin_data import patch_torchvision_md5, write_cifar

from cskd_viz import recipes
from cskd_viz.models import MODELS, get_model
from cskd_viz.runs import load_run
from cskd_viz.training import RunConfig, run_experiment, save_checkpoint
from cskd_viz.training.resume import checkpoint_files

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


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """Stand-in CIFAR-100 files as ``$CSKD_DATA`` (their md5 sums patched in): 8 training images, 2 test images.

    With batch 4 that is one epoch of 2 steps, so a run of 2 steps ends an epoch: it evaluates (2 images)
    and writes its checkpoint, like a real run at its end.
    """
    root = tmp_path_factory.mktemp("cifar")
    written = write_cifar(root, "cifar100", n_train=8, n_test=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CSKD_DATA", str(root))
        patch_torchvision_md5(patch, "cifar100", written["md5"])
        yield root


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """``arch -> {"model": state_dict}`` file of a randomly initialised teacher, written once per architecture."""
    folder, files = tmp_path_factory.mktemp("teachers"), {}

    def checkpoint(arch: str) -> str:
        if arch not in files:
            torch.manual_seed(0)
            files[arch] = folder / f"{arch}.pth"
            save_checkpoint(get_model(arch, 100), files[arch])
        return str(files[arch])

    return checkpoint


@pytest.mark.parametrize("name", recipes.recipe_names())
def test_recipe_runs_two_steps_through_the_trainer(name, cifar_root, teachers, tmp_path):
    recipe = recipes.get_recipe(name)
    overrides = {"teacher_checkpoint": teachers(recipe["teacher"]), "batch_size": 4, "max_steps": 2, "name": "r"}
    config = RunConfig(**{**recipe, **overrides})
    assert config.make_method().name == recipe["method"] and config.epochs == recipe["epochs"]
    log = run_experiment(config, tmp_path, progress=False)
    assert log.status == "finished"
    loaded = load_run(tmp_path / "r")
    steps = loaded.steps
    assert loaded.status == "finished" and steps["step"].tolist() == [1, 2] and loaded.config["dataset"] == "cifar100"
    terms = ["loss", "loss_ce", "loss_kd"] + (["loss_cc", "loss_bc"] if recipe["method"] == "cskd_published" else [])
    assert np.isfinite(steps[terms].to_numpy()).all() and len(loaded.evals) == 1
    assert loaded.config["teacher_cache"] is False  # augmented data (and two views for cskd_published)
    assert [p.name for p in checkpoint_files(tmp_path / "r" / "checkpoints")] == ["epoch-0001.pt"]
    assert (tmp_path / "r" / "model.pt").is_file()
