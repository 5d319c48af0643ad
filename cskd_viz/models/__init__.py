"""Model registry: small CPU nets and (in :mod:`cskd_viz.models.cifar`) the CIFAR zoo.

``get_model(name, num_classes, input_shape)`` builds any registered model by name. The CIFAR zoo
(``resnet8`` ... ``resnet110``, ``resnet8x4``, ``resnet32x4``, ``ResNet18/34/50``, ``wrn_*``,
``vgg*_bn``, ``mobile_half``, ``ShuffleV1/V2``, plus mdistiller's aliases ``vgg8`` ... ``vgg19``,
``MobileNetV2``) has mdistiller's exact ``state_dict`` keys and takes ``(3, 32, 32)`` inputs;
:func:`cskd_viz.models.checkpoints.load_teacher` loads published teachers into it.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cskd_viz.models.cifar import CIFAR_ALIASES, CIFAR_INPUT_SHAPE, CIFAR_MODELS
from cskd_viz.models.small import MLP, SmallCNN

__all__ = [
    "MLP",
    "SmallCNN",
    "MODELS",
    "ZOO_MODELS",
    "get_model",
    "register_model",
    "count_parameters",
    "load_teacher",
]

ModelFactory = Callable[[int, tuple], nn.Module]

MODELS: dict[str, ModelFactory] = {
    "mlp_small": lambda num_classes, input_shape: MLP(input_shape, num_classes, hidden=(32,)),
    "mlp_large": lambda num_classes, input_shape: MLP(input_shape, num_classes, hidden=(256, 256)),
    "cnn_small": lambda num_classes, input_shape: SmallCNN(input_shape, num_classes, channels=(8, 16)),
    "cnn_large": lambda num_classes, input_shape: SmallCNN(input_shape, num_classes, channels=(32, 64, 128)),
}


def _zoo_factory(name: str, builder: Callable[[int], nn.Module]) -> ModelFactory:
    def factory(num_classes: int, input_shape: tuple) -> nn.Module:
        if tuple(input_shape) != CIFAR_INPUT_SHAPE:
            raise ValueError(
                f"input_shape must be {CIFAR_INPUT_SHAPE} for the CIFAR zoo model {name!r}, got {tuple(input_shape)}"
            )
        return builder(num_classes)

    return factory


# The CIFAR zoo (and mdistiller's alias names), all for (3, 32, 32) inputs.
ZOO_MODELS: tuple[str, ...] = tuple(CIFAR_MODELS) + tuple(CIFAR_ALIASES)
for _name, _builder in CIFAR_MODELS.items():
    MODELS[_name] = _zoo_factory(_name, _builder)
for _alias, _target in CIFAR_ALIASES.items():
    MODELS[_alias] = _zoo_factory(_alias, CIFAR_MODELS[_target])


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


# checkpoints.py imports get_model from this module, so it comes last.
from cskd_viz.models.checkpoints import load_teacher  # noqa: E402
