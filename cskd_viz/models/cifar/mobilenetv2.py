"""MobileNetV2 for CIFAR (mdistiller's ``MobileNetV2`` = ``mobile_half``: expansion 6, width 0.5).

Parameter names follow ``mdistiller/models/cifar/mobilenetv2.py`` (``conv1.0``, ``blocks.i.j.conv.k``,
``conv2.0``, ``classifier.0``). A student in the paper's heterogeneous pairs (vgg13 / ResNet50 ->
MobileNetV2).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

__all__ = ["InvertedResidual", "MobileNetV2", "mobile_half"]


def _conv_bn_relu(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True)
    )


class InvertedResidual(nn.Module):
    """Pointwise expand -> depthwise 3x3 -> pointwise project (no ReLU); residual when shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = inp * expand_ratio
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with expansion ``T`` and width multiplier ``width_mult``: ``(B, 3, 32, 32) -> (B, C)``.

    Example:
        >>> import torch
        >>> mobile_half(num_classes=10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    # (expansion, channels, repeats, first stride); expansion None means "use T".
    SETTINGS = [
        (1, 16, 1, 1),
        (None, 24, 2, 1),
        (None, 32, 3, 2),
        (None, 64, 4, 2),
        (None, 96, 3, 1),
        (None, 160, 3, 2),
        (None, 320, 1, 1),
    ]

    def __init__(self, T: int, feature_dim: int, input_size: int = 32, width_mult: float = 1.0) -> None:
        super().__init__()
        if input_size % 32 != 0:
            raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
        input_channel = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, input_channel, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in self.SETTINGS:
            output_channel = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(input_channel, output_channel, stride, T if t is None else t))
                input_channel = output_channel
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(input_channel, self.last_channel, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, feature_dim))
        self.avgpool = nn.AvgPool2d(input_size // 16, ceil_mode=True)
        self.stage_channels = [int(c * width_mult) for c in (32, 24, 32, 96, 320)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, dict]:
        """Logits ``(B, C)``; with ``return_features``, also ``{"feats": [5 maps], "pooled_feat": (B, 1280)}``."""
        out = self.conv1(x)
        feats = [out]
        for i, block in enumerate(self.blocks):
            out = block(out)
            if i in (1, 2, 4, 6):
                feats.append(out)
        pooled = self.avgpool(self.conv2(out)).flatten(1)
        logits = self.classifier(pooled)
        if return_features:
            return logits, {"feats": feats, "pooled_feat": pooled}
        return logits


def mobile_half(num_classes: int = 100) -> MobileNetV2:
    """MobileNetV2 with expansion 6 and width 0.5 (mdistiller's ``MobileNetV2`` student)."""
    return MobileNetV2(T=6, feature_dim=num_classes, width_mult=0.5)
