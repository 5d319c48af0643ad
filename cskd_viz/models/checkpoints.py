"""Load published teacher checkpoints (mdistiller / CRD format) into the model zoo.

mdistiller's CIFAR-100 teachers are saved as ``{"model": state_dict, ...}``, sometimes with the
``module.`` prefix that ``nn.DataParallel`` adds to every key. :func:`load_teacher` accepts that
format, a ``{"state_dict": ...}`` dict, or a bare state dict; strips ``module.``; and loads
*strictly*, naming every missing, unexpected or mis-shaped key when the file does not fit.
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from cskd_viz.models import MODELS, get_model

__all__ = ["load_teacher", "extract_state_dict", "state_dict_mismatches"]

_SHOW = 8  # keys listed per category in error messages


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def extract_state_dict(checkpoint: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside ``checkpoint``: its ``"model"`` or ``"state_dict"`` entry, or itself.

    ``module.`` prefixes (from ``nn.DataParallel`` / DDP) are removed.

    Example:
        >>> import torch
        >>> sorted(extract_state_dict({"model": {"module.fc.weight": torch.zeros(1)}, "epoch": 240}))
        ['fc.weight']
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{source} must hold a dict (a state dict or {{'model': state_dict}}), got {type(checkpoint)}")
    for entry in ("model", "state_dict"):
        if isinstance(checkpoint.get(entry), Mapping):
            checkpoint = checkpoint[entry]
            break
    else:
        if not checkpoint or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            raise ValueError(
                f"{source} has no 'model' or 'state_dict' entry and is not a state dict; "
                f"top-level keys: [{_listing([str(k) for k in checkpoint])}]"
            )
    state = OrderedDict(checkpoint)
    metadata = getattr(checkpoint, "_metadata", None)
    if metadata is not None:  # module versions, which BatchNorm's loading consults
        state._metadata = metadata  # type: ignore[attr-defined]
    consume_prefix_in_state_dict_if_present(state, "module.")
    return state


def state_dict_mismatches(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """Why ``state`` does not fit ``model``: missing, unexpected and mis-shaped keys, each counted and
    listed ("" when it fits).

    A missing ``num_batches_tracked`` is not counted: BatchNorm fills it itself (checkpoints from old
    PyTorch lack it).

    Example:
        >>> import torch
        >>> state_dict_mismatches(nn.Linear(2, 3), {"weight": torch.zeros(3, 2)})
        'missing keys (1): [bias], unexpected keys (0): [], shape mismatches (0): []'
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mis_shaped):
        return ""
    return (
        f"missing keys ({len(missing)}): [{_listing(missing)}], "
        f"unexpected keys ({len(unexpected)}): [{_listing(unexpected)}], "
        f"shape mismatches ({len(mis_shaped)}): [{_listing(mis_shaped)}]"
    )


def load_teacher(
    path: str | os.PathLike,
    arch: str,
    num_classes: int = 100,
    map_location: str | torch.device = "cpu",
    input_shape: tuple[int, ...] = (3, 32, 32),
    weights_only: bool = True,
) -> nn.Module:
    """Build ``arch`` and load the checkpoint at ``path`` strictly; returns the model in eval mode.

    Args:
        path: a ``torch.save`` file holding ``{"model": state_dict}`` (mdistiller), ``{"state_dict": ...}``
            or a bare state dict; keys may carry a ``module.`` prefix.
        arch: a registered model name (see ``cskd_viz.models.MODELS``), e.g. ``"resnet32x4"``.
        num_classes: ``C`` of the checkpoint's head (100 for mdistiller's CIFAR-100 teachers).
        map_location: passed to ``torch.load``.
        input_shape: input shape for the model builder (the CIFAR zoo needs ``(3, 32, 32)``).
        weights_only: ``torch.load``'s safe mode (tensors and plain containers only). Pass ``False``
            only for a file you trust that stores other Python objects.

    Raises:
        ValueError: unknown ``arch`` (the valid names are listed), an unreadable file, or a state dict
            that does not fit the model (missing / unexpected / mis-shaped keys are named).
        FileNotFoundError: no file at ``path``.

    Example:
        >>> import tempfile, torch
        >>> from cskd_viz.models import get_model
        >>> net = get_model("resnet8", 100)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     torch.save({"model": net.state_dict()}, f"{tmp}/ckpt.pth")
        ...     teacher = load_teacher(f"{tmp}/ckpt.pth", "resnet8")
        >>> teacher.training
        False
    """
    if not isinstance(arch, str) or arch not in MODELS:
        raise ValueError(f"arch must be one of {sorted(MODELS)}, got {arch!r}")
    file = Path(path)
    if not file.is_file():
        what = "is a directory, not a checkpoint file" if file.is_dir() else "does not exist"
        raise FileNotFoundError(f"teacher checkpoint {str(file)!r} {what}")
    try:
        checkpoint = torch.load(file, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as err:
        hint = " (if you trust this file, pass weights_only=False)" if weights_only else ""
        raise ValueError(f"could not unpickle teacher checkpoint {str(file)!r}{hint}: {err}") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"could not read teacher checkpoint {str(file)!r}: {err}") from err
    state = extract_state_dict(checkpoint, source=f"teacher checkpoint {str(file)!r}")

    model = get_model(arch, num_classes, input_shape)
    problems = state_dict_mismatches(model, state)
    if problems:
        raise ValueError(
            f"teacher checkpoint {str(file)!r} does not fit {arch!r} with num_classes={num_classes}: {problems}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # anything the checks above did not foresee
        raise ValueError(f"teacher checkpoint {str(file)!r} does not fit {arch!r}: {err}") from err
    return model.eval()
