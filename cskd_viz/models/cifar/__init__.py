"""The CIFAR model zoo of mdistiller, with identical ``state_dict`` keys and shapes.

Published mdistiller / CRD CIFAR-100 teachers (``{"model": state_dict}``) load strictly into
these models (see :func:`cskd_viz.models.checkpoints.load_teacher`). Every model maps
``(B, 3, 32, 32) -> (B, num_classes)``; ``model(x, return_features=True)`` also returns
``{"feats": [stage maps], "pooled_feat": (B, D)}``.

``CIFAR_MODELS`` maps each name to a builder ``f(num_classes) -> nn.Module``; the names of
mdistiller's ``cifar_model_dict`` that differ (``vgg8`` ... ``vgg19`` mean the BN variants,
``MobileNetV2`` means ``mobile_half``) are accepted as aliases.

Example:
    >>> import torch
    >>> CIFAR_MODELS["resnet8"](10)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cskd_viz.models.cifar.mobilenetv2 import MobileNetV2, mobile_half
from cskd_viz.models.cifar.resnet import (
    ResNet,
    resnet8,
    resnet8x4,
    resnet14,
    resnet20,
    resnet32,
    resnet32x4,
    resnet44,
    resnet56,
    resnet110,
)
from cskd_viz.models.cifar.resnetv2 import ResNet18, ResNet34, ResNet50, ResNetV2
from cskd_viz.models.cifar.shufflenet import ShuffleNetV1, ShuffleNetV2, ShuffleV1, ShuffleV2
from cskd_viz.models.cifar.vgg import VGG, vgg8_bn, vgg11_bn, vgg13_bn, vgg16_bn, vgg19_bn
from cskd_viz.models.cifar.wrn import WideResNet, wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2

__all__ = [
    "CIFAR_MODELS",
    "CIFAR_ALIASES",
    "CIFAR_INPUT_SHAPE",
    "MobileNetV2",
    "ResNet",
    "ResNetV2",
    "ShuffleNetV1",
    "ShuffleNetV2",
    "VGG",
    "WideResNet",
]

CIFAR_INPUT_SHAPE = (3, 32, 32)

CIFAR_MODELS: dict[str, Callable[[int], nn.Module]] = {
    "resnet8": resnet8,
    "resnet14": resnet14,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "ResNet18": ResNet18,
    "ResNet34": ResNet34,
    "ResNet50": ResNet50,
    "wrn_16_1": wrn_16_1,
    "wrn_16_2": wrn_16_2,
    "wrn_40_1": wrn_40_1,
    "wrn_40_2": wrn_40_2,
    "vgg8_bn": vgg8_bn,
    "vgg11_bn": vgg11_bn,
    "vgg13_bn": vgg13_bn,
    "vgg16_bn": vgg16_bn,
    "vgg19_bn": vgg19_bn,
    "mobile_half": mobile_half,
    "ShuffleV1": ShuffleV1,
    "ShuffleV2": ShuffleV2,
}

# mdistiller's cifar_model_dict names -> ours.
CIFAR_ALIASES: dict[str, str] = {
    "vgg8": "vgg8_bn",
    "vgg11": "vgg11_bn",
    "vgg13": "vgg13_bn",
    "vgg16": "vgg16_bn",
    "vgg19": "vgg19_bn",
    "MobileNetV2": "mobile_half",
}
