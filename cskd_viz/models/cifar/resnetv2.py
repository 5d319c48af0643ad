"""ImageNet-style ResNets adapted to 32x32 inputs (mdistiller's ``ResNet18`` / ``ResNet50``).

Parameter names follow ``mdistiller/models/cifar/resnetv2.py`` (``shortcut.0``, ``linear``), so
mdistiller's ``ResNet50`` CIFAR-100 teacher loads strictly. 3x3 stem at stride 1, four stages
(64, 128, 256, 512 planes; strides 1, 2, 2, 2), global average pooling, a linear head.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BasicBlockV2", "BottleneckV2", "ResNetV2", "ResNet18", "ResNet34", "ResNet50"]


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Identity (an empty ``Sequential``, as in mdistiller) or a 1x1 conv + BN projection."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class BasicBlockV2(nn.Module):
    """Two 3x3 conv + BN, residual sum, ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class BottleneckV2(nn.Module):
    """1x1, 3x3, 1x1 (x4) conv + BN, residual sum, ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.shortcut = _shortcut(in_planes, 4 * planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNetV2(nn.Module):
    """Four-stage ResNet for 32x32 inputs: ``(B, 3, 32, 32) -> (B, num_classes)``.

    Example:
        >>> import torch
        >>> net = ResNetV2(BasicBlockV2, [1, 1, 1, 1], num_classes=10)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, block: type[nn.Module], num_blocks: list[int], num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        self.stage_channels = [c * block.expansion for c in (64, 128, 256, 512)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[nn.Module], planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, dict]:
        """Logits ``(B, C)``; with ``return_features``, also ``{"feats": [stem, s1..s4], "pooled_feat": (B, D)}``."""
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        pooled = self.avgpool(f4).flatten(1)
        logits = self.linear(pooled)
        if return_features:
            return logits, {"feats": [f0, f1, f2, f3, f4], "pooled_feat": pooled}
        return logits


def ResNet18(num_classes: int = 100) -> ResNetV2:
    """ResNet-18 (basic blocks 2-2-2-2) for 32x32 inputs."""
    return ResNetV2(BasicBlockV2, [2, 2, 2, 2], num_classes)


def ResNet34(num_classes: int = 100) -> ResNetV2:
    """ResNet-34 (basic blocks 3-4-6-3) for 32x32 inputs."""
    return ResNetV2(BasicBlockV2, [3, 4, 6, 3], num_classes)


def ResNet50(num_classes: int = 100) -> ResNetV2:
    """ResNet-50 (bottlenecks 3-4-6-3) for 32x32 inputs (a published mdistiller teacher)."""
    return ResNetV2(BottleneckV2, [3, 4, 6, 3], num_classes)
