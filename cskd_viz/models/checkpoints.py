"""Load published teacher checkpoints (mdistiller / CRD format) into the model zoo.

mdistiller's CIFAR-100 teachers are saved as ``{"model": state_dict, ...}``, sometimes with the
``module.`` prefix that ``nn.DataParallel`` adds to every key. :func:`load_teacher` accepts that
format, a ``{"state_dict": ...}`` dict, or a bare state dict; strips ``module.``; and loads
*strictly*, naming every missing, unexpected or mis-shaped key when the file does not fit.

A file that cannot be used is a :class:`CheckpointError` (a ``ValueError``) with a one-line
reason: empty, not a PyTorch checkpoint, truncated or corrupt, holding Python objects the safe
loader (``torch.load(weights_only=True)``) refuses, of the wrong structure, with tensors whose
dtype kind differs from the model's (an int64 tensor for a float parameter is refused, not cast),
or with NaN/inf weights (named, first few and a count).
"""

from __future__ import annotations

import os
import pickle
import re
import tarfile
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from cskd_viz.models import MODELS, get_model

__all__ = [
    "CheckpointError",
    "load_teacher",
    "read_checkpoint",
    "extract_state_dict",
    "state_dict_mismatches",
    "check_state_dict",
]

_SHOW = 8  # keys listed per category in error messages
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # the first pickle of torch.save's legacy (pre-zip) format


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message says why in one line."""


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def _sniff(file: Path) -> str | None:
    """What ``file`` looks like: ``"zip"``, ``"pickle"`` (torch's legacy format, or not), ``"tar"``, or None."""
    with open(file, "rb") as fh:
        head = fh.read(8)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    return "tar" if tarfile.is_tarfile(file) else None


class _NoGlobals(pickle.Unpickler):
    """Reads plain data only: any class or function reference is refused (nothing can run)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to import {module}.{name}")


def _first_pickle(file: Path) -> Any:
    """The first pickled object in ``file`` when it is plain data (legacy checkpoints: the magic number)."""
    try:
        with open(file, "rb") as fh:
            return _NoGlobals(fh).load()
    except Exception:  # noqa: BLE001 - parsing arbitrary bytes: any failure means "not the magic number"
        return None


def _container_problem(file: Path, kind: str | None) -> str | None:
    """Why ``file`` cannot be a torch.save file, judged from its container alone (None: it may be one)."""
    if kind is None:
        with open(file, "rb") as fh:
            head = fh.read(24)
        return f"it is not a PyTorch checkpoint (a file written by torch.save); it starts with {head!r}"
    if kind == "zip":
        try:
            with zipfile.ZipFile(file) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, EOFError):
            return f"it is truncated or corrupt ({file.stat().st_size} bytes; its zip archive has no end)"
        if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
            return "it is a zip archive but not a PyTorch checkpoint (no data.pkl inside)"
    if kind == "pickle" and _first_pickle(file) != _LEGACY_MAGIC_NUMBER:
        return "it is a Python pickle, not a PyTorch checkpoint (torch.save's files start with its magic number)"
    return None


def _load_problem(err: BaseException, kind: str | None, weights_only: bool) -> str:
    """The one-line reason for a failed ``torch.load`` of a file whose container looked right."""
    text = str(err)
    if weights_only and isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in text:
        found = re.search(r"WeightsUnpickler error: (.*?)(?: was not an allowed global|\.?\n|$)", text)
        detail = f" ({found.group(1).strip()})" if found else ""
        return f"it holds Python objects other than tensors and plain containers, which the safe loader refuses{detail}"
    if isinstance(err, EOFError) or any(sign in text for sign in ("PytorchStreamReader", "truncat", "EOF", "corrupt")):
        return "it is truncated or corrupt (" + (text.splitlines()[0][:160] if text.strip() else "it ends early") + ")"
    if kind == "tar":
        return "it is a tar archive, not a checkpoint: extract the checkpoint file from it first"
    if "magic number" in text.lower():
        return "it is not a PyTorch checkpoint (no torch.save magic number)"
    first = text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__
    return f"torch.load failed: {type(err).__name__}: {first}"


def read_checkpoint(
    path: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    weights_only: bool = True,
    label: str | None = None,
    unsafe_hint: str = "",
) -> Any:
    """``torch.load(path)`` with a one-line :class:`CheckpointError` for every file it cannot use.

    The reasons: ``is empty (0 bytes)``; ``is not a PyTorch checkpoint`` (text, a plain pickle, a zip
    without ``data.pkl``, a tar archive); ``is truncated or corrupt``; Python objects the safe
    loader refuses (``weights_only=True``, the default: only tensors and plain containers).

    Args:
        path: the file.
        map_location: passed to ``torch.load``.
        weights_only: ``torch.load``'s safe mode; ``False`` only for files you trust.
        label: how messages name the file (default ``checkpoint '<path>'``).
        unsafe_hint: appended to the message when the safe loader refuses the file's objects.

    Raises:
        FileNotFoundError: no file at ``path`` (or a directory).
        CheckpointError: the file cannot be used (the message says why).

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "empty.pt"
        ...     _ = path.write_bytes(b"")
        ...     read_checkpoint(path, label="checkpoint empty.pt")
        Traceback (most recent call last):
        ...
        cskd_viz.models.checkpoints.CheckpointError: checkpoint empty.pt cannot be read: it is empty (0 bytes)
    """
    file = Path(path)
    label = label or f"checkpoint {str(file)!r}"
    if not file.is_file():
        what = "is a directory, not a checkpoint file" if file.is_dir() else "does not exist"
        raise FileNotFoundError(f"{label} {what}")
    try:
        if file.stat().st_size == 0:
            raise CheckpointError(f"{label} cannot be read: it is empty (0 bytes)")
        kind = _sniff(file)
    except OSError as err:
        raise CheckpointError(f"{label} cannot be read: {err.strerror or err}") from None
    problem = _container_problem(file, kind)
    if problem:
        raise CheckpointError(f"{label} cannot be read: {problem}")
    try:
        return torch.load(file, map_location=map_location, weights_only=weights_only)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as err:
        reason = _load_problem(err, kind, weights_only)
    hint = unsafe_hint if reason.startswith("it holds Python objects") else ""
    raise CheckpointError(f"{label} cannot be read: {reason}{hint}")


def extract_state_dict(checkpoint: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside ``checkpoint``: its ``"model"`` or ``"state_dict"`` entry, or itself.

    ``module.`` prefixes (from ``nn.DataParallel`` / DDP) are removed.

    Example:
        >>> import torch
        >>> sorted(extract_state_dict({"model": {"module.fc.weight": torch.zeros(1)}, "epoch": 240}))
        ['fc.weight']
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{source} must hold a dict (a state dict or {{'model': state_dict}}), got {type(checkpoint).__name__}"
        )
    for entry in ("model", "state_dict"):
        if isinstance(checkpoint.get(entry), Mapping):
            checkpoint = checkpoint[entry]
            others = [str(k) for k, v in checkpoint.items() if not (isinstance(k, str) and torch.is_tensor(v))]
            if others or not checkpoint:
                raise CheckpointError(
                    f"{source}: its {entry!r} entry is not a state dict (names mapped to tensors); "
                    + (f"non-tensor entries ({len(others)}): [{_listing(others)}]" if others else "it is empty")
                )
            break
    else:
        if not checkpoint or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            raise CheckpointError(
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


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return "floating"
    if dtype.is_complex:
        return "complex"
    return "bool" if dtype == torch.bool else "integer"


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, mismatch: str) -> None:
    """Refuse a state dict that ``model.load_state_dict`` would load wrongly or not at all.

    In order: missing / unexpected / mis-shaped keys (:func:`state_dict_mismatches`); tensors whose
    dtype *kind* differs from the model's (an int64 tensor for a float parameter would be cast
    silently; float64 or float16 for float32 is fine); NaN or infinite values in floating tensors.

    Args:
        model: the model the state dict is for.
        state: the state dict (``module.`` prefixes already stripped).
        source: how the message names the file, e.g. ``"checkpoint 'teacher.pt'"``.
        mismatch: the phrase after ``source`` for a misfit, e.g. ``"does not match MLP"``.

    Raises:
        CheckpointError: the message names the offending keys (the first few and a count).

    Example:
        >>> import torch
        >>> check_state_dict(nn.Linear(2, 1), {"weight": torch.zeros(1, 2), "bias": torch.tensor([float("nan")])},
        ...                  "checkpoint x.pt", "does not match Linear")
        Traceback (most recent call last):
        ...
        cskd_viz.models.checkpoints.CheckpointError: checkpoint x.pt holds non-finite weights (NaN or inf) in 1 of \
2 tensors: [bias (1 of 1 values)]; it comes from a diverged or damaged run
    """
    problems = state_dict_mismatches(model, state)
    if problems:
        raise CheckpointError(f"{source} {mismatch}: {problems}")
    expected = model.state_dict()
    kinds = [
        f"{k}: checkpoint {state[k].dtype} vs model {v.dtype}"
        for k, v in expected.items()
        if k in state and _kind(state[k].dtype) != _kind(v.dtype)
    ]
    if kinds:
        raise CheckpointError(
            f"{source} {mismatch}: dtype mismatches ({len(kinds)}): [{_listing(kinds)}] "
            "(loading would cast these tensors silently)"
        )
    bad = []
    for key, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad.append(f"{key} ({count} of {tensor.numel()} values)")
    if bad:
        raise CheckpointError(
            f"{source} holds non-finite weights (NaN or inf) in {len(bad)} of {len(state)} tensors: "
            f"[{_listing(bad)}]; it comes from a diverged or damaged run"
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
        ValueError: unknown ``arch`` (the valid names are listed).
        CheckpointError: (a ``ValueError``) a file that cannot be read (empty, not a PyTorch
            checkpoint, truncated), or a state dict that does not fit the model (missing /
            unexpected / mis-shaped keys, dtype kinds, NaN or inf weights: the keys are named).
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
    label = f"teacher checkpoint {str(file)!r}"
    checkpoint = read_checkpoint(
        file,
        map_location=map_location,
        weights_only=weights_only,
        label=label,
        unsafe_hint=" (if you trust this file, pass weights_only=False)",
    )
    state = extract_state_dict(checkpoint, source=label)
    model = get_model(arch, num_classes, input_shape)
    check_state_dict(model, state, label, f"does not fit {arch!r} with num_classes={num_classes}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # anything the checks above did not foresee
        raise CheckpointError(f"{label} does not fit {arch!r}: {err}") from err
    return model.eval()
