"""ShuffleNet V1 / V2 for CIFAR (mdistiller's ``ShuffleV1`` and ``ShuffleV2`` students).

Parameter names follow ``mdistiller/models/cifar/ShuffleNetv1.py`` and ``ShuffleNetv2.py``
(``layerK.i.convJ`` / ``bnJ``, ``linear``). Students in the paper's heterogeneous pairs
(resnet32x4 / wrn_40_2 -> ShuffleV1, resnet32x4 -> ShuffleV2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ShuffleNetV1", "ShuffleNetV2", "ShuffleV1", "ShuffleV2"]


def _channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """``(N, C, H, W) -> (N, g, C/g, H, W) -> (N, C/g, g, H, W) -> (N, C, H, W)``."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV1Block(nn.Module):
    """Grouped 1x1 -> shuffle -> depthwise 3x3 -> grouped 1x1; stride 2 concatenates an avg-pooled shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid_planes = out_planes // 4
        self.g = 1 if in_planes == 24 else groups  # the first block sees the 24-channel stem: no grouping
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=1, groups=self.g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(
            mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1, groups=mid_planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)) if stride == 2 else nn.Sequential()

    def forward(self, x: Tensor) -> Tensor:
        out = _channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.g)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return F.relu(torch.cat([out, res], 1) if self.stride == 2 else out + res)


class ShuffleNetV1(nn.Module):
    """ShuffleNet V1 for 32x32 inputs: ``(B, 3, 32, 32) -> (B, num_classes)``.

    Example:
        >>> import torch
        >>> ShuffleV1(num_classes=10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, out_planes: list[int], num_blocks: list[int], groups: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.linear = nn.Linear(out_planes[2], num_classes)

    def _make_layer(self, out_planes: int, num_blocks: int, groups: int) -> nn.Sequential:
        layers = []
        for i in range(num_blocks):
            cat_planes = self.in_planes if i == 0 else 0  # stride-2 blocks concatenate their input
            layers.append(ShuffleV1Block(self.in_planes, out_planes - cat_planes, 2 if i == 0 else 1, groups))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, dict]:
        """Logits ``(B, C)``; with ``return_features`` also ``{"feats": [stem, s1, s2, s3], "pooled_feat": (B, D)}``."""
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        pooled = F.avg_pool2d(f3, 4).flatten(1)
        logits = self.linear(pooled)
        if return_features:
            return logits, {"feats": [f0, f1, f2, f3], "pooled_feat": pooled}
        return logits


class ShuffleV2Block(nn.Module):
    """Split channels in half, transform one half (1x1, depthwise 3x3, 1x1), concatenate, shuffle."""

    def __init__(self, in_channels: int, split_ratio: float = 0.5) -> None:
        super().__init__()
        self.split_ratio = split_ratio
        c = int(in_channels * split_ratio)
        self.conv1 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        c = int(x.shape[1] * self.split_ratio)
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return _channel_shuffle(torch.cat([x1, out], 1), 2)


class ShuffleV2DownBlock(nn.Module):
    """Stride-2 block: both branches downsample, ``out_channels / 2`` each, concatenated and shuffled."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return _channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 for 32x32 inputs: ``(B, 3, 32, 32) -> (B, num_classes)``.

    Example:
        >>> import torch
        >>> ShuffleV2(num_classes=10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, out_channels: list[int], num_blocks: list[int], num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)
        self.stage_channels = list(out_channels)

    def _make_layer(self, out_channels: int, num_blocks: int) -> nn.Sequential:
        layers: list[nn.Module] = [ShuffleV2DownBlock(self.in_channels, out_channels)]
        layers += [ShuffleV2Block(out_channels) for _ in range(num_blocks)]
        self.in_channels = out_channels
        return nn.Sequential(*layers)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, dict]:
        """Logits ``(B, C)``; with ``return_features`` also ``{"feats": [stem, s1, s2, s3], "pooled_feat": (B, D)}``."""
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        pooled = F.avg_pool2d(F.relu(self.bn2(self.conv2(f3))), 4).flatten(1)
        logits = self.linear(pooled)
        if return_features:
            return logits, {"feats": [f0, f1, f2, f3], "pooled_feat": pooled}
        return logits


def ShuffleV1(num_classes: int = 100) -> ShuffleNetV1:
    """ShuffleNet V1, groups 3, widths 240/480/960, blocks 4/8/4 (mdistiller's ``ShuffleV1``)."""
    return ShuffleNetV1([240, 480, 960], [4, 8, 4], groups=3, num_classes=num_classes)


def ShuffleV2(num_classes: int = 100) -> ShuffleNetV2:
    """ShuffleNet V2 1x, widths 116/232/464/1024, blocks 3/7/3 (mdistiller's ``ShuffleV2``)."""
    return ShuffleNetV2([116, 232, 464, 1024], [3, 7, 3], num_classes=num_classes)
