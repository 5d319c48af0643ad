"""Small networks sized for CPU runs on digits, Fashion-MNIST and toy data."""

from __future__ import annotations

import math

from torch import Tensor, nn


class MLP(nn.Module):
    """Multilayer perceptron on flattened inputs ``(B, *input_shape) -> (B, num_classes)``.

    Example:
        >>> import torch
        >>> MLP((1, 8, 8), 10, hidden=(32,))(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (64,)) -> None:
        super().__init__()
        sizes = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Conv-BN-ReLU blocks (the last ones pooled) then a linear head: ``(B, C_in, H, W) -> (B, num_classes)``.

    Example:
        >>> import torch
        >>> SmallCNN((1, 8, 8), 10, channels=(8, 16))(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...] = (16, 32)) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"SmallCNN needs image input_shape (C, H, W), got {input_shape}")
        layers: list[nn.Module] = []
        c_in = input_shape[0]
        for i, c_out in enumerate(channels):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            if i > 0 or input_shape[1] > 16:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
