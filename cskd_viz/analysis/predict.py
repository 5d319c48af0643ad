"""Logits of a model over a dataset, with an optional on-disk cache that is verified before use.

Cache files are keyed by a SHA-256 of the model (its class and every state-dict entry's name,
dtype, shape and bytes) and of the dataset's identity (:func:`dataset_identity`: class, length,
``name``/``split``/``train`` attributes, ``Subset`` indices and the bytes of a few samples). A file
holds a header (format, key, ``N``, ``C``, dtypes, a SHA-256 of the payload) and the payload; it is
written to a temporary file and renamed into place, so a crash never leaves a half-written file
under the final name. A file that cannot be read, was written for another key, has the wrong
``N`` or whose payload digest differs is reported (a warning) and rebuilt, never trusted.

A dataset with random augmentation gives different samples on every access: its fingerprint
changes, so every call is a miss (its logits would not be reproducible anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from cskd_viz._validation import check_bool, check_positive_int
from cskd_viz.distributed import resolve_device

__all__ = ["predict_logits", "model_fingerprint", "dataset_identity", "cache_key"]

CACHE_FORMAT = "cskd_viz.analysis.logits/1"
_FINGERPRINT_SAMPLES = 8
_IDENTITY_ATTRIBUTES = ("name", "split", "train")


# ----------------------------------------------------------------------------- identity


def _tensor_bytes(x: Tensor) -> bytes:
    """The raw bytes of a tensor of any dtype (bf16 included: viewed as bytes before NumPy)."""
    return x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _value_bytes(value: Any) -> bytes:
    """Bytes that identify one element of a dataset item: a tensor, an array, a number or anything else."""
    if isinstance(value, Tensor):
        return f"tensor{tuple(value.shape)}{value.dtype}".encode() + _tensor_bytes(value)
    if isinstance(value, (tuple, list)):
        return b"(" + b",".join(_value_bytes(v) for v in value) + b")"
    array = np.asarray(value)
    if array.dtype == object:
        return repr(value).encode()
    return f"array{array.shape}{array.dtype}".encode() + np.ascontiguousarray(array).tobytes()


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of a model's class and every state-dict entry (name, dtype, shape, bytes).

    Example:
        >>> a, b = nn.Linear(3, 2), nn.Linear(3, 2)
        >>> model_fingerprint(a) == model_fingerprint(a), model_fingerprint(a) == model_fingerprint(b)
        (True, False)
    """
    digest = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, value in model.state_dict().items():
        if isinstance(value, Tensor):
            digest.update(f"|{name}:{value.dtype}:{tuple(value.shape)}|".encode())
            digest.update(_tensor_bytes(value))
        else:  # extra state
            digest.update(f"|{name}:{value!r}|".encode())
    return digest.hexdigest()


def dataset_identity(dataset: Any) -> dict[str, Any]:
    """What identifies a dataset for the cache: class, length, a few attributes and a sample fingerprint.

    The fingerprint is a SHA-256 of up to 8 evenly spaced items (first and last included), so two
    datasets of one class and length that differ in those samples get different identities.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> identity = dataset_identity(TensorDataset(torch.zeros(5, 2), torch.zeros(5)))
        >>> identity["type"], identity["length"]
        ('torch.utils.data.dataset.TensorDataset', 5)
    """
    n = len(dataset)
    identity: dict[str, Any] = {"type": f"{type(dataset).__module__}.{type(dataset).__qualname__}", "length": n}
    for attribute in _IDENTITY_ATTRIBUTES:
        value = getattr(dataset, attribute, None)
        if isinstance(value, (str, bool, int)):
            identity[attribute] = value
    if isinstance(dataset, Subset):
        identity["indices"] = hashlib.sha256(np.asarray(dataset.indices, dtype=np.int64).tobytes()).hexdigest()
        identity["parent"] = dataset_identity(dataset.dataset)
    digest = hashlib.sha256()
    for index in sorted({int(i) for i in np.linspace(0, n - 1, min(n, _FINGERPRINT_SAMPLES))}):
        digest.update(_value_bytes(dataset[index]))
    identity["samples"] = digest.hexdigest()
    return identity


def cache_key(model: nn.Module, dataset: Any) -> str:
    """The cache key (SHA-256 hex) of ``model`` run over ``dataset``."""
    identity = json.dumps(dataset_identity(dataset), sort_keys=True)
    return hashlib.sha256(f"{CACHE_FORMAT}|{model_fingerprint(model)}|{identity}".encode()).hexdigest()


# ----------------------------------------------------------------------------- cache files


def _payload_digest(logits: Tensor, targets: Tensor) -> str:
    return hashlib.sha256(_tensor_bytes(logits) + _tensor_bytes(targets)).hexdigest()


def _read_cache(path: Path, key: str, n: int) -> tuple[Tensor, Tensor] | None:
    """The cached ``(logits, targets)`` of ``path``, or ``None`` (with a warning) when it is not valid."""
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        header, logits, targets = entry["header"], entry["logits"], entry["targets"]
        problem = None
        if header.get("format") != CACHE_FORMAT or header.get("key") != key:
            problem = "it was written for another model or dataset"
        elif logits.dim() != 2 or tuple(logits.shape) != (n, header.get("classes")) or targets.shape != (n,):
            problem = f"it holds {tuple(logits.shape)} logits and {tuple(targets.shape)} targets for N={n} samples"
        elif header.get("digest") != _payload_digest(logits, targets):
            problem = "its payload does not match its digest"
    except Exception as error:  # noqa: BLE001 - any unreadable file is rebuilt, whatever the reason
        problem = f"it cannot be read ({type(error).__name__}: {error})"
    if problem is None:
        return logits, targets
    warnings.warn(f"logit cache {path.name} is not valid ({problem}): rebuilding it", RuntimeWarning, stacklevel=3)
    return None


def _write_cache(path: Path, key: str, logits: Tensor, targets: Tensor) -> None:
    """Write atomically: a temporary file in the same directory, renamed over ``path`` once complete."""
    header = {
        "format": CACHE_FORMAT,
        "key": key,
        "samples": logits.shape[0],
        "classes": logits.shape[1],
        "logits_dtype": str(logits.dtype),
        "digest": _payload_digest(logits, targets),
    }
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save({"header": header, "logits": logits, "targets": targets}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- inference


def _check_dataset(dataset: Any) -> int:
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        kind = type(dataset).__name__
        raise TypeError(f"dataset must be a map-style dataset (with __len__ and __getitem__), got {kind}")
    n = len(dataset)
    if n == 0:
        raise ValueError("dataset is empty: nothing to predict")
    return n


@torch.no_grad()
def _run(model: nn.Module, dataset: Any, batch_size: int, device: torch.device, progress: bool):
    """``(logits, targets)`` on the CPU, in dataset order; the model's mode and device are restored."""
    from tqdm.auto import tqdm

    was_training = model.training
    home = next(iter(model.parameters()), torch.empty(0)).device
    model.eval().to(device)
    chunks, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, pin_memory=device.type == "cuda")
    try:
        with tqdm(total=len(dataset), desc="predict_logits", unit="sample", disable=not progress) as bar:
            for batch in loader:
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise ValueError("dataset items must be (input, target, ...) pairs: got items without targets")
                chunks.append(model(batch[0].to(device, non_blocking=True)).detach().cpu())
                labels.append(torch.as_tensor(batch[1]).cpu())
                bar.update(len(labels[-1]))
    finally:
        model.train(was_training).to(home)
    logits, targets = torch.cat(chunks), torch.cat(labels)
    if logits.dim() != 2 or targets.shape != (logits.shape[0],):
        raise ValueError(f"the model must return (B, C) logits for (B,) targets, got {tuple(logits.shape)} logits")
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise TypeError(f"dataset targets must be integer class indices, got {targets.dtype}")
    return logits, targets.long()


def predict_logits(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Run ``model`` over ``dataset`` in index order (``eval()`` mode, ``no_grad``): logits and targets.

    Args:
        model: any ``nn.Module`` mapping a ``(B, ...)`` input batch to ``(B, C)`` logits. It runs on
            ``device`` and is put back in its mode (train/eval) and on its device afterwards.
        dataset: a map-style dataset whose items are ``(input, target, ...)``.
        batch_size: inference batch size.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` (CUDA when available) or a ``torch.device``.
        cache: a directory for cache files (created if missing), or ``None`` for no cache. A valid
            file for this model and dataset is returned without running the model.
        progress: show a ``tqdm`` progress bar.

    Returns:
        ``(logits (N, C), targets (N,))`` on the CPU: the model's output dtype, int64 targets.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.randn(10, 4), torch.arange(10) % 3)
        >>> logits, targets = predict_logits(nn.Linear(4, 3), data, batch_size=4, device="cpu", progress=False)
        >>> tuple(logits.shape), targets.tolist()[:4]
        ((10, 3), [0, 1, 2, 0])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    n = _check_dataset(dataset)
    batch_size = check_positive_int(batch_size, "batch_size")
    progress = check_bool(progress, "progress")
    device = resolve_device(device)
    if cache is None:
        return _run(model, dataset, batch_size, device, progress)
    if not isinstance(cache, (str, os.PathLike)):
        raise TypeError(f"cache must be a directory path (str or os.PathLike) or None, got {type(cache).__name__}")
    directory = Path(cache)
    directory.mkdir(parents=True, exist_ok=True)
    key = cache_key(model, dataset)
    path = directory / f"logits-{key[:40]}.pt"
    if path.exists() and (cached := _read_cache(path, key, n)) is not None:
        return cached
    logits, targets = _run(model, dataset, batch_size, device, progress)
    _write_cache(path, key, logits, targets)
    return logits, targets
