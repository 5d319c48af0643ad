"""VGG with batch norm for CIFAR (``vgg8_bn`` ... ``vgg19_bn``) with mdistiller-compatible names.

Names follow ``mdistiller/models/cifar/vgg.py``: five conv stages ``block0..block4`` (each an
``nn.Sequential`` of ``conv3x3 -> BN -> ReLU`` with the *last ReLU dropped*, so indices are
``3j`` conv, ``3j + 1`` BN), max pooling between stages (none before ``block4`` at 32x32), global
average pooling and a ``classifier`` linear layer on 512 features. The published ``vgg13``
CIFAR-100 teacher is ``vgg13_bn`` here (mdistiller also calls it ``vgg13``).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VGG", "VGG_CONFIGS", "vgg8_bn", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]

# Widths per stage; "S" = VGG-8, "A" = VGG-11, "B" = VGG-13, "D" = VGG-16, "E" = VGG-19.
VGG_CONFIGS: dict[str, list[list[int]]] = {
    "S": [[64], [128], [256], [512], [512]],
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "D": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "E": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _stage(widths: list[int], in_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers.append(nn.Conv2d(in_channels, width, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU(inplace=True))
        in_channels = width
    return nn.Sequential(*layers[:-1])  # the stage ends before its last ReLU (pre-activation feature)


class VGG(nn.Module):
    """VGG for 32x32 (or 64x64) inputs: ``(B, 3, H, W) -> (B, num_classes)``.

    Example:
        >>> import torch
        >>> net = VGG(VGG_CONFIGS["S"], batch_norm=True, num_classes=10)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, cfg: list[list[int]], batch_norm: bool = False, num_classes: int = 1000) -> None:
        super().__init__()
        if len(cfg) != 5:
            raise ValueError(f"cfg must list 5 stages of widths, got {len(cfg)}")
        self.block0 = _stage(cfg[0], 3, batch_norm)
        self.block1 = _stage(cfg[1], cfg[0][-1], batch_norm)
        self.block2 = _stage(cfg[2], cfg[1][-1], batch_norm)
        self.block3 = _stage(cfg[3], cfg[2][-1], batch_norm)
        self.block4 = _stage(cfg[4], cfg[3][-1], batch_norm)
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        self.stage_channels = [c[-1] for c in cfg]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, dict]:
        """Logits ``(B, C)``; with ``return_features``, also ``{"feats": [5 stage maps], "pooled_feat": (B, 512)}``."""
        h = x.shape[2]
        f0 = F.relu(self.block0(x))
        f1 = F.relu(self.block1(self.pool0(f0)))
        f2 = F.relu(self.block2(self.pool1(f1)))
        f3 = F.relu(self.block3(self.pool2(f2)))
        x = self.pool3(f3) if h == 64 else f3  # as in the reference: a 4th pooling only for 64x64 inputs
        f4 = F.relu(self.block4(x))
        pooled = self.pool4(f4).flatten(1)
        logits = self.classifier(pooled)
        if return_features:
            return logits, {"feats": [f0, f1, f2, f3, f4], "pooled_feat": pooled}
        return logits


def vgg8_bn(num_classes: int = 100) -> VGG:
    """VGG-8 with BN (config "S"; mdistiller's ``vgg8`` student)."""
    return VGG(VGG_CONFIGS["S"], batch_norm=True, num_classes=num_classes)


def vgg11_bn(num_classes: int = 100) -> VGG:
    """VGG-11 with BN (config "A")."""
    return VGG(VGG_CONFIGS["A"], batch_norm=True, num_classes=num_classes)


def vgg13_bn(num_classes: int = 100) -> VGG:
    """VGG-13 with BN (config "B"; mdistiller's ``vgg13`` teacher)."""
    return VGG(VGG_CONFIGS["B"], batch_norm=True, num_classes=num_classes)


def vgg16_bn(num_classes: int = 100) -> VGG:
    """VGG-16 with BN (config "D")."""
    return VGG(VGG_CONFIGS["D"], batch_norm=True, num_classes=num_classes)


def vgg19_bn(num_classes: int = 100) -> VGG:
    """VGG-19 with BN (config "E")."""
    return VGG(VGG_CONFIGS["E"], batch_norm=True, num_classes=num_classes)
