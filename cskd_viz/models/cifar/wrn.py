"""Wide ResNets for CIFAR (``wrn_{depth}_{width}``) with mdistiller-compatible parameter names.

Names follow ``mdistiller/models/cifar/wrn.py`` (``block1.layer.0.bn1``, ``convShortcut``), so the
published ``wrn_40_2`` CIFAR-100 teacher loads strictly. Pre-activation blocks
(``BN -> ReLU -> conv``), ``depth = 6n + 4``, stage widths ``16k, 32k, 64k`` for widen factor ``k``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WideBasicBlock", "NetworkBlock", "WideResNet", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"]


class WideBasicBlock(nn.Module):
    """Pre-activation block; a 1x1 ``convShortcut`` when the width changes, else identity."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.droprate = drop_rate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (
            None
            if self.equalInOut
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        # As in the reference: the identity path carries the raw input, a projection the activated one.
        shortcut = x if self.equalInOut else self.convShortcut(act)
        return shortcut + out


class NetworkBlock(nn.Module):
    """``nb_layers`` wide blocks in ``self.layer`` (the first one changes width and stride)."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(nb_layers)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``: ``(B, 3, 32, 32) -> (B, num_classes)``.

    Example:
        >>> import torch
        >>> net = WideResNet(depth=10, num_classes=10, widen_factor=1)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, depth: int, num_classes: int, widen_factor: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"depth must be 6n + 4 (10, 16, 22, 28, 40, ...), got {depth}")
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(channels[3], num_classes)
        self.nChannels = channels[3]
        self.stage_channels = channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, dict]:
        """Logits ``(B, C)``; with ``return_features`` also ``{"feats": [stem, s1, s2, s3], "pooled_feat": (B, D)}``."""
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        pooled = F.avg_pool2d(self.relu(self.bn1(f3)), 8).flatten(1)
        logits = self.fc(pooled)
        if return_features:
            return logits, {"feats": [f0, f1, f2, f3], "pooled_feat": pooled}
        return logits


def wrn_16_1(num_classes: int = 100) -> WideResNet:
    """WRN-16-1."""
    return WideResNet(16, num_classes, widen_factor=1)


def wrn_16_2(num_classes: int = 100) -> WideResNet:
    """WRN-16-2 (student of wrn_40_2)."""
    return WideResNet(16, num_classes, widen_factor=2)


def wrn_40_1(num_classes: int = 100) -> WideResNet:
    """WRN-40-1 (student of wrn_40_2)."""
    return WideResNet(40, num_classes, widen_factor=1)


def wrn_40_2(num_classes: int = 100) -> WideResNet:
    """WRN-40-2 (a published mdistiller teacher)."""
    return WideResNet(40, num_classes, widen_factor=2)
