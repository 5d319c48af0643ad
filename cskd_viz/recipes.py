"""Named training recipes: the paper's CIFAR-100 CSKD configs and mdistiller's KD baselines.

A recipe is a dict of :class:`cskd_viz.training.RunConfig` field overrides; ``cskd-viz train --recipe
NAME`` applies it and any flag given on the command line still wins. This module imports no torch.

- ``cifar100/<teacher>_<student>`` (11 pairs, e.g. ``cifar100/res32x4_res8x4``): method
  ``cskd_published`` (two views, masks as published), ``T = 4``, ``t_low = 2``, ``t_high = 6``,
  ``w_ce = w_kd = 1``; batch 64, SGD (momentum 0.9, weight decay 5e-4), 480 epochs, LR x0.1 at the
  start of epochs 150, 180 and 210; LR 0.025 for the same-family pairs, 0.01 for the pairs with a
  ShuffleNet or MobileNetV2 student.
- ``mdistiller/kd/<teacher>_<student>`` (the same 11 pairs): Hinton KD as in mdistiller's CIFAR-100
  config, ``w_ce = 0.1``, ``w_kd = 0.9``, ``T = 4``, LR 0.05, 240 epochs, the same milestones and SGD.

The pair names are mdistiller's (``res32x4``, ``wrn40_2``, ``ShuffleV1``, ...); the models are ours
(:mod:`cskd_viz.models`, mdistiller's ``state_dict`` keys). A recipe leaves ``teacher_checkpoint``
unset: ``RunConfig`` needs an existing file, so pass ``--teacher-checkpoint``; mdistiller keeps its
CIFAR-100 teachers at :func:`teacher_checkpoint_hint` (``download_ckpts/cifar_teachers/<arch>_vanilla/
ckpt_epoch_240.pth``). The paper reports the best test accuracy over epochs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RECIPES", "PAIRS", "recipe_names", "get_recipe", "teacher_checkpoint_hint", "describe_recipes"]

# mdistiller's short names -> our zoo names
ZOO_NAMES = {
    "res56": "resnet56",
    "res20": "resnet20",
    "res110": "resnet110",
    "res32": "resnet32",
    "res32x4": "resnet32x4",
    "res8x4": "resnet8x4",
    "vgg13": "vgg13",
    "vgg8": "vgg8",
    "wrn40_2": "wrn_40_2",
    "wrn16_2": "wrn_16_2",
    "wrn40_1": "wrn_40_1",
    "ShuffleV1": "ShuffleV1",
    "ShuffleV2": "ShuffleV2",
    "ResNet50": "ResNet50",
    "MobileNetV2": "MobileNetV2",
}
# mdistiller's teacher folder names under download_ckpts/cifar_teachers/ (<name>_vanilla)
_TEACHER_FOLDERS = {
    "res56": "resnet56",
    "res110": "resnet110",
    "res32x4": "resnet32x4",
    "vgg13": "vgg13",
    "wrn40_2": "wrn_40_2",
    "ResNet50": "ResNet50",
}

# (teacher, student, CSKD learning rate)
PAIRS: tuple[tuple[str, str, float], ...] = (
    ("res56", "res20", 0.025),
    ("res110", "res32", 0.025),
    ("res32x4", "res8x4", 0.025),
    ("vgg13", "vgg8", 0.025),
    ("wrn40_2", "wrn16_2", 0.025),
    ("wrn40_2", "wrn40_1", 0.025),
    ("res32x4", "ShuffleV1", 0.01),
    ("res32x4", "ShuffleV2", 0.01),
    ("ResNet50", "MobileNetV2", 0.01),
    ("vgg13", "MobileNetV2", 0.01),
    ("wrn40_2", "ShuffleV1", 0.01),
)

_COMMON = {
    "dataset": "cifar100",
    "batch_size": 64,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "step",
    "lr_milestones": (150, 180, 210),
}
_CSKD_OPTIONS = {
    "strong_view": True,
    "cc": True,
    "bc": True,
    "masks": "as_published",
    "alpha": 2.0,
    "abs_eps_cosine": True,
    "corr_temperature": 4.0,
}


def _pair(teacher: str, student: str) -> str:
    return f"{teacher}_{student}"


def _build() -> dict[str, dict[str, Any]]:
    recipes: dict[str, dict[str, Any]] = {}
    for teacher, student, lr in PAIRS:
        models = {"teacher": ZOO_NAMES[teacher], "student": ZOO_NAMES[student]}
        recipes[f"cifar100/{_pair(teacher, student)}"] = {
            **_COMMON,
            **models,
            "method": "cskd_published",
            "temperature": 4.0,
            "t_low": 2.0,
            "t_high": 6.0,
            "w_ce": 1.0,
            "w_kd": 1.0,
            "epochs": 480,
            "lr": lr,
            "method_options": dict(_CSKD_OPTIONS),
        }
    for teacher, student, _ in PAIRS:
        recipes[f"mdistiller/kd/{_pair(teacher, student)}"] = {
            **_COMMON,
            "teacher": ZOO_NAMES[teacher],
            "student": ZOO_NAMES[student],
            "method": "kd",
            "temperature": 4.0,
            "w_ce": 0.1,
            "w_kd": 0.9,
            "epochs": 240,
            "lr": 0.05,
        }
    return recipes


RECIPES: dict[str, dict[str, Any]] = _build()


def recipe_names() -> list[str]:
    """The recipe names, the paper's CSKD pairs first, then the KD baselines.

    Example:
        >>> recipe_names()[2], len(recipe_names())
        ('cifar100/res32x4_res8x4', 22)
    """
    return list(RECIPES)


def get_recipe(name: str) -> dict[str, Any]:
    """A copy of recipe ``name``'s ``RunConfig`` field overrides.

    Raises:
        ValueError: an unknown name (the known ones are listed).

    Example:
        >>> r = get_recipe("cifar100/res32x4_res8x4")
        >>> r["student"], r["teacher"], r["lr"], r["epochs"], r["lr_milestones"]
        ('resnet8x4', 'resnet32x4', 0.025, 480, (150, 180, 210))
    """
    if not isinstance(name, str) or name not in RECIPES:
        known = ", ".join(recipe_names())
        raise ValueError(f"unknown recipe {name!r}; the known recipes are: {known} (see --recipe list)")
    recipe = dict(RECIPES[name])
    if "method_options" in recipe:
        recipe["method_options"] = dict(recipe["method_options"])
    return recipe


def teacher_checkpoint_hint(name: str) -> str:
    """Where mdistiller keeps recipe ``name``'s teacher, relative to its checkout (a hint, not checked).

    Example:
        >>> teacher_checkpoint_hint("cifar100/wrn40_2_ShuffleV1")
        'download_ckpts/cifar_teachers/wrn_40_2_vanilla/ckpt_epoch_240.pth'
    """
    get_recipe(name)  # the unknown-name error
    pair = name.rsplit("/", 1)[1]
    teacher = next(t for t, s, _ in PAIRS if _pair(t, s) == pair)
    return f"download_ckpts/cifar_teachers/{_TEACHER_FOLDERS[teacher]}_vanilla/ckpt_epoch_240.pth"


def describe_recipes() -> str:
    """The text of ``cskd-viz train --recipe list``: one line per recipe, then how to use one.

    Example:
        >>> describe_recipes().splitlines()[0]
        'recipes (cskd-viz train --recipe NAME --teacher-checkpoint FILE; flags given as well override the recipe):'
    """
    lines = [
        "recipes (cskd-viz train --recipe NAME --teacher-checkpoint FILE; flags given as well override the recipe):"
    ]
    width = max(len(name) for name in RECIPES)
    for name, r in RECIPES.items():
        lines.append(
            f"  {name:<{width}}  {r['teacher']} -> {r['student']}, {r['method']}, {r['epochs']} epochs, "
            f"lr {r['lr']:g} (x0.1 at epochs {', '.join(map(str, r['lr_milestones']))}), batch {r['batch_size']}, "
            f"w_ce {r['w_ce']:g}, w_kd {r['w_kd']:g}, T {r['temperature']:g}"
        )
    lines.append(
        "teachers: mdistiller's CIFAR-100 checkpoints, download_ckpts/cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth"
    )
    return "\n".join(lines)
