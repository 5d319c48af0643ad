"""Model registry: small CPU nets and (in :mod:`cskd_viz.models.cifar`) the CIFAR zoo.

``get_model(name, num_classes, input_shape)`` builds any registered model by name.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from cskd_viz.models.small import MLP, SmallCNN

__all__ = ["MLP", "SmallCNN", "MODELS", "get_model", "register_model", "count_parameters"]

ModelFactory = Callable[[int, tuple], nn.Module]

MODELS: dict[str, ModelFactory] = {
    "mlp_small": lambda num_classes, input_shape: MLP(input_shape, num_classes, hidden=(32,)),
    "mlp_large": lambda num_classes, input_shape: MLP(input_shape, num_classes, hidden=(256, 256)),
    "cnn_small": lambda num_classes, input_shape: SmallCNN(input_shape, num_classes, channels=(8, 16)),
    "cnn_large": lambda num_classes, input_shape: SmallCNN(input_shape, num_classes, channels=(32, 64, 128)),
}


def register_model(name: str, factory: ModelFactory) -> None:
    """Add ``factory(num_classes, input_shape) -> nn.Module`` to the registry under ``name``."""
    MODELS[name] = factory


def get_model(name: str, num_classes: int, input_shape: tuple[int, ...] = (3, 32, 32)) -> nn.Module:
    """Build the registered model ``name`` for ``num_classes`` outputs.

    Example:
        >>> get_model("mlp_small", 10, (1, 8, 8)).__class__.__name__
        'MLP'
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return MODELS[name](num_classes, tuple(input_shape))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
