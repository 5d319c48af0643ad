"""Model checkpoints in mdistiller's format (``{"model": state_dict}``), written atomically."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch
from torch import nn

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Save ``{"model": state_dict}`` (mdistiller's format) atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        torch.save({"model": model.state_dict()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(model: nn.Module, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a checkpoint into ``model`` strictly, in any format :func:`cskd_viz.models.load_teacher` reads
    (``{"model": state_dict}``, ``{"state_dict": ...}`` or a bare state dict; ``module.`` prefixes stripped).

    The file is read with ``torch.load(weights_only=True)`` (tensors and plain containers only).

    Raises:
        CheckpointError: (a ``ValueError``, one line) a missing, empty, non-PyTorch, truncated or
            corrupt file; keys or shapes that do not match ``model``; tensors whose dtype kind differs
            from the model's (an int64 tensor for a float parameter is refused, not cast); NaN or
            infinite weights. The message names the file and the keys.
    """
    from cskd_viz.models.checkpoints import CheckpointError, check_state_dict, extract_state_dict, read_checkpoint

    path = Path(path)
    label = f"checkpoint {path}"
    try:
        checkpoint = read_checkpoint(path, map_location=map_location, weights_only=True, label=label)
    except FileNotFoundError as err:
        raise CheckpointError(str(err)) from None
    state = extract_state_dict(checkpoint, source=label)
    mismatch = f"does not match {type(model).__name__}"
    check_state_dict(model, state, label, mismatch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # anything the checks above did not foresee
        raise CheckpointError(f"{label} {mismatch}: {err}") from err
    return model
