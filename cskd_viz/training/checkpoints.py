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

    Raises:
        ValueError: missing file, unreadable file, or keys/shapes that do not match ``model``
            (the message names them).
    """
    from cskd_viz.models.checkpoints import extract_state_dict, state_dict_mismatches

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"checkpoint {path} cannot be read: {err}") from None
    state = extract_state_dict(checkpoint, source=f"checkpoint {path}")
    problems = state_dict_mismatches(model, state)
    if problems:
        raise ValueError(f"checkpoint {path} does not match {type(model).__name__}: {problems}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # anything the checks above did not foresee
        raise ValueError(f"checkpoint {path} does not match {type(model).__name__}: {err}") from err
    return model
