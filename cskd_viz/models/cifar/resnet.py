"""CIFAR ResNets (depth ``6n + 2``) with mdistiller-compatible parameter names.

Same module and attribute names as ``mdistiller/models/cifar/resnet.py`` (itself from CRD /
RepDistiller), so the published CIFAR-100 teachers (``resnet56``, ``resnet110``,
``resnet32x4``) load with a strict ``load_state_dict``. Differences: ``forward`` returns logits
only (features on request), and no ``is_last`` pre-activation bookkeeping.

Stem ``conv3x3 -> BN -> ReLU`` at 32x32, three stages of ``n`` residual blocks (strides 1, 2, 2:
32x32, 16x16, 8x8), 8x8 average pooling, a linear head: ``(B, 3, 32, 32) -> (B, num_classes)``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    """1x1 conv + BN projection when the shape changes (key names ``downsample.0``, ``downsample.1``)."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), each with BN; residual sum then ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class ResNet(nn.Module):
    """CIFAR ResNet: ``depth = 6n + 2`` (basic blocks) or ``9n + 2`` (bottlenecks).

    Args:
        depth: total number of conv/linear layers.
        num_filters: ``[stem, stage1, stage2, stage3]`` widths, e.g. ``[16, 16, 32, 64]``.
        block_name: ``"basicblock"`` or ``"bottleneck"`` (case-insensitive).
        num_classes: ``C``.

    Example:
        >>> import torch
        >>> net = ResNet(8, [16, 16, 32, 64], num_classes=10)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> logits, feats = net(torch.zeros(2, 3, 32, 32), return_features=True)
        >>> [tuple(f.shape[1:]) for f in feats["feats"]], tuple(feats["pooled_feat"].shape)
        ([(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)], (2, 64))
    """

    def __init__(
        self, depth: int, num_filters: list[int], block_name: str = "basicblock", num_classes: int = 10
    ) -> None:
        super().__init__()
        kind = block_name.lower()
        if kind == "basicblock":
            if (depth - 2) % 6 != 0 or depth < 8:
                raise ValueError(f"depth must be 6n + 2 (8, 14, 20, ...) with basic blocks, got {depth}")
            n, block = (depth - 2) // 6, BasicBlock
        elif kind == "bottleneck":
            if (depth - 2) % 9 != 0 or depth < 11:
                raise ValueError(f"depth must be 9n + 2 (11, 20, 29, ...) with bottlenecks, got {depth}")
            n, block = (depth - 2) // 9, Bottleneck
        else:
            raise ValueError(f"block_name must be 'basicblock' or 'bottleneck', got {block_name!r}")
        if len(num_filters) != 4:
            raise ValueError(f"num_filters must have 4 entries (stem + 3 stages), got {num_filters}")

        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, num_filters[1], n)
        self.layer2 = self._make_layer(block, num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(block, num_filters[3], n, stride=2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(num_filters[3] * block.expansion, num_classes)
        self.stage_channels = list(num_filters)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        out_planes = planes * block.expansion
        layers = [block(self.inplanes, planes, stride, _shortcut(self.inplanes, out_planes, stride))]
        self.inplanes = out_planes
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, dict]:
        """Logits ``(B, C)``; with ``return_features`` also ``{"feats": [stem, s1, s2, s3], "pooled_feat": (B, D)}``."""
        f0 = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        pooled = self.avgpool(f3).flatten(1)
        logits = self.fc(pooled)
        if return_features:
            return logits, {"feats": [f0, f1, f2, f3], "pooled_feat": pooled}
        return logits


def resnet8(num_classes: int = 100) -> ResNet:
    """ResNet-8, widths 16/16/32/64 (~0.09M parameters at C = 100)."""
    return ResNet(8, [16, 16, 32, 64], "basicblock", num_classes)


def resnet14(num_classes: int = 100) -> ResNet:
    """ResNet-14, widths 16/16/32/64."""
    return ResNet(14, [16, 16, 32, 64], "basicblock", num_classes)


def resnet20(num_classes: int = 100) -> ResNet:
    """ResNet-20, widths 16/16/32/64 (a classic CIFAR student)."""
    return ResNet(20, [16, 16, 32, 64], "basicblock", num_classes)


def resnet32(num_classes: int = 100) -> ResNet:
    """ResNet-32, widths 16/16/32/64."""
    return ResNet(32, [16, 16, 32, 64], "basicblock", num_classes)


def resnet44(num_classes: int = 100) -> ResNet:
    """ResNet-44, widths 16/16/32/64."""
    return ResNet(44, [16, 16, 32, 64], "basicblock", num_classes)


def resnet56(num_classes: int = 100) -> ResNet:
    """ResNet-56, widths 16/16/32/64 (a published mdistiller teacher)."""
    return ResNet(56, [16, 16, 32, 64], "basicblock", num_classes)


def resnet110(num_classes: int = 100) -> ResNet:
    """ResNet-110, widths 16/16/32/64 (a published mdistiller teacher)."""
    return ResNet(110, [16, 16, 32, 64], "basicblock", num_classes)


def resnet8x4(num_classes: int = 100) -> ResNet:
    """ResNet-8 with 4x widths 32/64/128/256 (student of resnet32x4)."""
    return ResNet(8, [32, 64, 128, 256], "basicblock", num_classes)


def resnet32x4(num_classes: int = 100) -> ResNet:
    """ResNet-32 with 4x widths 32/64/128/256 (a published mdistiller teacher)."""
    return ResNet(32, [32, 64, 128, 256], "basicblock", num_classes)
