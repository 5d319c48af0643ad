"""Global-batch CSKD under ``torch.distributed`` data parallelism (DDP, ``torchrun``).

CSKD compares *batch predictions* (the columns ``P[:, j]``), so under data parallelism each
process's loss depends on its local slice of the batch. Passing ``group=`` (a process group,
usually ``torch.distributed.group.WORLD``) to :func:`cskd_viz.losses.cskd_loss`,
:func:`~cskd_viz.losses.batch_cosine_distance` or :func:`~cskd_viz.losses.cswt_temperatures`
computes them on the *global* batch: the concatenation, in rank order, of the ``(B, C)`` local
batches of all ``N`` ranks. The losses all-gather the student and teacher logits once
(:func:`gather_batch`: a shape check plus one all-gather of ``(B, 2C)``) and then run the
single-process computation on the ``(N * B, C)`` global batch, so values are those of one
process on the concatenated batch by construction.

Scaling (why no factor is needed). Every rank computes the same global loss ``L``. The gradient
of the all-gather for rank ``k``'s rows is the *sum* over ranks of the gradients every rank
computed for them (the semantics of ``torch.distributed.nn.functional.all_gather``), i.e.
``N * dL/dz_k``. DDP then *averages* parameter gradients over the ``N`` ranks:
``(1/N) sum_k N * dL/dz_k * dz_k/dθ = dL/dθ``, the single-process gradient on the
concatenated batch. This is the same convention as a local ``CE`` (mean over the local batch):
its per-rank gradient on ``z_k`` is also ``N`` times the single-process one, and DDP's average
restores it. So ``w_ce * CE(local) + w_kd * cskd_loss(..., group=...)`` needs no rescaling.
Since all ranks compute the same ``L``, the losses get that sum without a backward collective
(``N`` times the local gradient, :func:`gather_rows` with ``reduce_grad=False``).

Requirements: every rank has the same local batch size ``B`` (checked: a clear ``ValueError`` on
every rank otherwise), and every rank calls the loss (collectives must match, as with DDP).

The second half of this module is the trainer's *session*: :func:`distributed_session` (the
process group for the duration of a run, from torchrun's environment, checked by
:func:`check_torchrun_environment`; a rendezvous that fails or outlasts ``timeout_s`` raises
:class:`DistributedEnvironmentError`; defined in :mod:`cskd_viz._torchrun`), :func:`shard_loader` and
:func:`shard_eval_loader` (each rank's share of the data), :func:`on_main` (decide on rank 0, tell
everyone), :func:`broadcast_module` and :func:`any_rank`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler, Subset

from cskd_viz._torchrun import (
    DistributedEnvironmentError,
    check_torchrun_environment,
    distributed_session,
    process_device,
    resolve_device,
)

__all__ = [
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "default_group",
    "global_batch_size",
    "all_reduce_max",
    "all_reduce_sum",
    "all_reduce_mean",
    "gather_rows",
    "gather_batch",
    "local_rows",
    "resolve_device",
    "process_device",
    "distributed_session",
    "DistributedEnvironmentError",
    "check_torchrun_environment",
    "loader_options",
    "shard_loader",
    "shard_eval_loader",
    "on_main",
    "broadcast_module",
    "any_rank",
]


def _dist():
    import torch.distributed as dist

    return dist


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is available and a default process group is initialised.

    Example:
        >>> is_distributed()  # a plain Python process
        False
    """
    dist = _dist()
    return bool(dist.is_available() and dist.is_initialized())


def get_rank(group: Any = None) -> int:
    """This process's rank in ``group`` (the default group if ``None``); ``0`` when not distributed.

    Example:
        >>> get_rank()
        0
    """
    return _dist().get_rank(group) if is_distributed() else 0


def get_world_size(group: Any = None) -> int:
    """The number of ranks in ``group`` (the default group if ``None``); ``1`` when not distributed.

    Example:
        >>> get_world_size()
        1
    """
    return _dist().get_world_size(group) if is_distributed() else 1


def is_main_process() -> bool:
    """``True`` on global rank 0, and in a non-distributed process (log and write files only here).

    Example:
        >>> is_main_process()
        True
    """
    return get_rank() == 0


def default_group() -> Any:
    """``torch.distributed.group.WORLD`` when distributed, else ``None`` (local mode).

    Handy for ``cskd_loss(..., group=default_group() if global_batch else None)``.

    Example:
        >>> default_group() is None
        True
    """
    return _dist().group.WORLD if is_distributed() else None


def _check_group(group: Any) -> None:
    dist = _dist()
    if not is_distributed():
        raise RuntimeError(
            "group was given but torch.distributed is not initialised: call "
            "torch.distributed.init_process_group first (torchrun does the rendezvous), or pass group=None"
        )
    if not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"group must be a torch.distributed ProcessGroup or None, got {type(group).__name__}")


def global_batch_size(local_batch_size: int, group: Any = None) -> int:
    """``N * B``: the global batch size, after checking every rank has the same ``B``.

    A collective: every rank of ``group`` must call it. Outside ``torch.distributed`` (or with
    ``group=None``) it returns ``local_batch_size``.

    Args:
        local_batch_size: this rank's ``B >= 1``.
        group: process group, or ``None`` for local mode.

    Returns:
        The number of rows of the concatenated batch.

    Raises:
        ValueError: on every rank, when the ranks' local batch sizes differ (all-gather needs equal
            shapes; drop the last incomplete batch, e.g. ``DistributedSampler`` + ``drop_last=True``).

    Example:
        >>> global_batch_size(32)
        32
    """
    if isinstance(local_batch_size, bool) or not isinstance(local_batch_size, int) or local_batch_size < 1:
        raise ValueError(f"local_batch_size must be an int >= 1, got {local_batch_size!r}")
    if group is None:
        return local_batch_size
    _check_group(group)
    sizes = _gather_ints((local_batch_size,), group, device=None)
    _require_equal([size for (size,) in sizes], "local batch size")
    return local_batch_size * len(sizes)


def _collective_device(group: Any, like: Tensor | None) -> torch.device:
    if like is not None:
        return like.device
    return (
        torch.device("cuda", torch.cuda.current_device())
        if _dist().get_backend(group) == "nccl"
        else torch.device("cpu")
    )


def _gather_ints(values: tuple[int, ...], group: Any, device: torch.device | None) -> list[tuple[int, ...]]:
    """All-gather a short tuple of ints (up to 16) from every rank of ``group``: one tiny collective."""
    if len(values) > 16:
        raise ValueError(f"at most 16 dimensions are supported, got {len(values)}")
    dist = _dist()
    device = device if device is not None else _collective_device(group, None)
    mine = torch.tensor([len(values), *values, *([0] * (16 - len(values)))], dtype=torch.int64, device=device)
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, mine, group=group)
    return [tuple(int(v) for v in t[1 : 1 + int(t[0])].tolist()) for t in out]


def _require_equal(per_rank: list[Any], what: str) -> None:
    """Raise the same ``ValueError`` on every rank when the gathered values differ."""
    if any(v != per_rank[0] for v in per_rank):
        listing = ", ".join(f"rank {r}: {v}" for r, v in enumerate(per_rank))
        raise ValueError(
            f"global-batch CSKD needs the same {what} on every rank, got {listing}; "
            "use drop_last=True (DataLoader/DistributedSampler) so every rank gets full batches"
        )


def all_reduce_max(tensor: Tensor, group: Any) -> Tensor:
    """Element-wise maximum over the ranks of ``group``, without gradient.

    Used so that every rank rescales a probability column by the same global column maximum,
    and for the global ``max(s)`` / ``min(s)`` of CSWT. The input is not modified.

    Args:
        tensor: any tensor, same shape on every rank.
        group: a process group.

    Returns:
        A new detached tensor ``max_r tensor_r``.
    """
    return _all_reduce(tensor, group, _dist().ReduceOp.MAX)


def all_reduce_sum(tensor: Tensor, group: Any) -> Tensor:
    """Element-wise sum over the ranks of ``group``, without gradient (the input is not modified).

    Args:
        tensor: any tensor, same shape on every rank.
        group: a process group.

    Returns:
        A new detached tensor ``sum_r tensor_r``.
    """
    return _all_reduce(tensor, group, _dist().ReduceOp.SUM)


def _all_reduce(tensor: Tensor, group: Any, op: Any) -> Tensor:
    """A detached copy of ``tensor`` reduced with ``op`` over ``group`` (the input is not modified)."""
    _check_group(group)
    out = tensor.detach().clone().contiguous()
    _dist().all_reduce(out, op=op, group=group)
    return out


def all_reduce_mean(tensor: Tensor, group: Any) -> Tensor:
    """Element-wise mean over the ranks of ``group``, without gradient.

    With equal local batch sizes, the mean over ranks of a local batch mean is the global batch mean.

    Args:
        tensor: a floating tensor, same shape on every rank.
        group: a process group.

    Returns:
        A new detached tensor ``(1/N) sum_r tensor_r``.
    """
    return _all_reduce(tensor, group, _dist().ReduceOp.SUM) / _dist().get_world_size(group)


def _all_gather_cat(tensor: Tensor, group: Any) -> Tensor:
    """Plain all-gather along dim 0 (shapes must already be known to agree)."""
    parts = [torch.empty_like(tensor) for _ in range(_dist().get_world_size(group))]
    _dist().all_gather(parts, tensor, group=group)
    return torch.cat(parts, dim=0)


# gather_batch's one-collective protocol: the agreed payload capacity (elements per rank) for each
# (group, dtype, device). Every rank updates it from the same gathered headers, so it stays equal
# on all ranks, and every buffer sent has the agreed size even when a rank's batch is smaller.
_CAPACITY: dict[tuple[int, torch.dtype, torch.device], tuple[Any, int]] = {}
_HEADER = 8  # [B, width of part 1, ..., width of part 7], zero padded


def _check_headers(headers: list[tuple[int, ...]]) -> None:
    _require_equal([h[0] for h in headers], "local batch size")
    _require_equal([tuple(w for w in h[1:] if w) for h in headers], "number of columns (classes)")


def _gather_with_header(x: Tensor, header: tuple[int, ...], group: Any) -> Tensor:
    """All-gather ``(B, k)`` rows whose shape may differ between ranks, checked, in one collective.

    The first call per (group, dtype, device) all-gathers the headers (tiny ints), checks them and
    records ``B * k`` as the capacity. Later calls send ``[header, payload zero-padded to the
    capacity]`` in one all-gather, so the buffers always have equal sizes; every rank then checks
    all headers alike (``ValueError`` everywhere on a mismatch). A payload larger than the capacity
    (equal on every rank, as the headers show) gets a new capacity and a second, plain all-gather.
    """
    padded = tuple(header) + (0,) * (_HEADER - len(header))
    key = (id(group), x.dtype, x.device)
    entry = _CAPACITY.get(key)
    if entry is None or entry[0] is not group:
        _check_headers(_gather_ints(padded, group, x.device))
        _CAPACITY[key] = (group, x.numel())
        return _all_gather_cat(x, group)
    capacity = entry[1]
    buffer = x.new_zeros(1, _HEADER + capacity)
    buffer[0, :_HEADER] = torch.tensor(padded, dtype=x.dtype, device=x.device)
    fits = x.numel() <= capacity
    if fits:
        buffer[0, _HEADER : _HEADER + x.numel()] = x.reshape(-1)
    gathered = _all_gather_cat(buffer, group)
    _check_headers([tuple(int(v) for v in row) for row in gathered[:, :_HEADER].tolist()])
    if fits:
        return gathered[:, _HEADER : _HEADER + x.numel()].reshape(-1, *x.shape[1:])
    _CAPACITY[key] = (group, x.numel())
    return _all_gather_cat(x, group)


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0; backward sums every rank's gradient for the local rows (or scales by N)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, tensor: Tensor, group: Any, reduce_grad: bool, header: tuple[int, ...] | None
    ) -> Tensor:
        dist = _dist()
        ctx.group = group
        ctx.reduce_grad = reduce_grad
        ctx.world = dist.get_world_size(group)
        ctx.rank = dist.get_rank(group)
        ctx.rows = tensor.shape[0]
        tensor = tensor.detach().contiguous()
        if header is None:
            return _all_gather_cat(tensor, group)
        return _gather_with_header(tensor, header, group)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        start = ctx.rank * ctx.rows
        if not ctx.reduce_grad:
            # Every rank computed the same function of the same gathered tensor, so the sum over
            # ranks of their gradients is N times ours: no communication needed.
            return ctx.world * grad_output[start : start + ctx.rows], None, None, None
        # Same semantics as torch.distributed.nn.functional.all_gather (reduce-scatter with SUM),
        # as one all_reduce: gloo has no reduce_scatter, and torch's gloo emulation costs N scatters.
        grad = grad_output.contiguous().clone()
        _dist().all_reduce(grad, op=_dist().ReduceOp.SUM, group=ctx.group)
        return grad[start : start + ctx.rows], None, None, None


def gather_rows(tensor: Tensor, group: Any, *, check: bool = True, reduce_grad: bool = True) -> Tensor:
    """Differentiable all-gather along dim 0: ``(B, ...)`` per rank -> ``(N * B, ...)`` in rank order.

    Forward: the local rows of every rank, concatenated in rank order (rank ``r`` holds rows
    ``r*B : (r+1)*B``). Backward: rank ``k`` receives ``sum_r dL_r / d(rows of k)``, the sum over
    ranks of the gradients every rank computed for its rows (as ``torch.distributed.nn`` does).
    When every rank computes the same loss ``L`` this is ``N * dL/d(rows of k)``, which DDP's
    gradient averaging turns into the single-process gradient (see the module docstring).

    Args:
        tensor: ``(B, ...)`` local rows; the same shape on every rank.
        group: a process group.
        check: first all-gather the shapes and raise ``ValueError`` on every rank if they differ
            (one extra tiny collective; without it, gloo aborts the process on a mismatch).
        reduce_grad: ``True`` (exact for any use): backward all-reduces the gradient. ``False``:
            backward returns ``N * dL/d(rows of k)`` without communication, which equals the sum
            *only if every rank computes the same function of the gathered tensor* (true inside
            the CSKD losses, whose result is the same scalar on every rank; not true if the
            gathered tensor feeds rank-specific terms).

    Returns:
        ``(N * B, ...)`` tensor, differentiable with respect to ``tensor``.

    Raises:
        ValueError: shapes differ between ranks (e.g. a smaller last batch on one rank).
    """
    _check_group(group)
    if not isinstance(tensor, Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() == 0:
        raise ValueError("tensor must have at least one dimension (rows along dim 0), got a 0-d tensor")
    if check:
        _require_equal(_gather_ints(tuple(tensor.shape), group, tensor.device), "tensor shape")
    return _GatherRows.apply(tensor, group, reduce_grad, None)


def gather_batch(*tensors: Any, group: Any, reduce_grad: bool = False) -> tuple[Any, ...]:
    """All-gather several per-sample tensors of one batch in a *single* collective.

    Each tensor is ``(B,)`` or ``(B, k)``; they are concatenated along dim 1 (in the dtype of the
    first tensor, float32 for fp16/bf16), gathered and split again, so student logits, teacher
    logits and per-sample temperatures cost one all-gather instead of three. Non-tensor
    arguments (e.g. a float temperature) are passed through unchanged. An output whose input
    does not require grad is detached, so no gradient is computed for it.

    Shapes are checked on every call (``ValueError`` on every rank if the local batch sizes or
    column counts differ) without a separate collective: each rank's rows travel with a small
    header in a buffer of an agreed capacity (settled by one tiny extra all-gather on the first
    call, and again only when batches grow). By default the backward needs no communication
    (``reduce_grad=False``, see :func:`gather_rows`): meant for callers, like the CSKD losses,
    that compute the *same* function of the gathered batch on every rank.

    Args:
        *tensors: ``(B,)``/``(B, k)`` tensors (same ``B``) or plain values.
        group: a process group.
        reduce_grad: as in :func:`gather_rows`; ``True`` if the gathered tensors feed
            rank-specific computations.

    Returns:
        The global ``(N * B,)``/``(N * B, k)`` tensors, in the order given.
    """
    parts = [t for t in tensors if isinstance(t, Tensor)]
    if not parts:
        return tuple(tensors)
    # The header travels in the data dtype: float32/float64 hold its integers exactly, half types may not.
    dtype = torch.float32 if parts[0].dtype in (torch.float16, torch.bfloat16) else parts[0].dtype
    if any(t.dim() not in (1, 2) or t.shape[0] != parts[0].shape[0] for t in parts):
        raise ValueError(
            f"gather_batch needs (B,) or (B, k) tensors with the same B, got shapes {[tuple(t.shape) for t in parts]}"
        )
    if len(parts) > _HEADER - 1:
        raise ValueError(f"gather_batch gathers at most {_HEADER - 1} tensors at once, got {len(parts)}")
    if not all(t.is_floating_point() for t in parts):
        raise TypeError(f"gather_batch needs floating tensors, got dtypes {[t.dtype for t in parts]}")
    _check_group(group)
    columns = [(t if t.dim() == 2 else t.unsqueeze(1)).to(dtype) for t in parts]
    header = (parts[0].shape[0], *(c.shape[1] for c in columns))
    x = torch.cat(columns, dim=1)
    gathered = _GatherRows.apply(x, group, reduce_grad, header).split([c.shape[1] for c in columns], dim=1)
    out, i = [], 0
    for t in tensors:
        if not isinstance(t, Tensor):
            out.append(t)
            continue
        g = gathered[i] if t.dim() == 2 else gathered[i].squeeze(1)
        out.append(g if t.requires_grad else g.detach())
        i += 1
    return tuple(out)


def local_rows(global_tensor: Tensor, group: Any) -> Tensor:
    """This rank's rows ``r*B : (r+1)*B`` of a global ``(N * B, ...)`` tensor (inverse of a gather).

    Args:
        global_tensor: a tensor gathered in rank order, first dimension divisible by ``N``.
        group: a process group.

    Returns:
        The ``(B, ...)`` slice belonging to this rank.
    """
    _check_group(group)
    world, rank = _dist().get_world_size(group), _dist().get_rank(group)
    if global_tensor.shape[0] % world:
        raise ValueError(f"global_tensor has {global_tensor.shape[0]} rows, not a multiple of the {world} ranks")
    rows = global_tensor.shape[0] // world
    return global_tensor[rank * rows : (rank + 1) * rows]


# ----------------------------------------------------------------------------- the trainer's session
# (resolve_device, process_device and distributed_session live in cskd_viz._torchrun, imported above)


def loader_options(loader: DataLoader) -> dict[str, Any]:
    """The DataLoader arguments a rebuilt loader keeps (workers, collate, generator, ...)."""
    options = dict(
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        persistent_workers=loader.persistent_workers,
    )
    if loader.num_workers > 0:
        options["prefetch_factor"] = loader.prefetch_factor
    return options


def _replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    num_replicas = get_world_size() if num_replicas is None else num_replicas
    rank = get_rank() if rank is None else rank
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"num_replicas must be a positive int, got {num_replicas!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be an int in [0, {num_replicas}), got {rank!r}")
    return num_replicas, rank


def shard_loader(
    loader: DataLoader, *, num_replicas: int | None = None, rank: int | None = None, seed: int = 0
) -> DataLoader:
    """This rank's share of a training loader: the same loader over a ``DistributedSampler``.

    Rank ``r`` of ``N`` gets the samples ``perm[r::N]`` of a seeded permutation ``perm`` of the
    dataset (``seed + epoch``: call ``loader.sampler.set_epoch(epoch)`` every epoch, as the trainer
    does), after dropping its last ``len(dataset) % N`` entries, so every rank has the same number
    of samples and therefore the same sequence of batch sizes (global-batch CSKD needs equal local
    batch sizes). The order is shuffled when ``loader`` shuffles (a ``RandomSampler``) and kept
    when it does not (a ``SequentialSampler``); batch size, ``drop_last`` (unless the shard is
    smaller than one batch), workers, collate function and generator are kept.

    Args:
        loader: a DataLoader with a ``RandomSampler``/``SequentialSampler`` (one already built on a
            ``DistributedSampler`` is returned unchanged).
        num_replicas: ``N``; the process group's size by default (1 outside torch.distributed).
        rank: ``r``; this process's rank by default.
        seed: seed of the permutation (the same on every rank).

    Returns:
        A DataLoader yielding ``ceil(floor(len(dataset) / N) / batch_size)`` batches per epoch
        (or ``floor`` with ``drop_last``).

    Raises:
        ValueError: a custom ``batch_sampler`` or another sampler type (build that loader with a
            ``DistributedSampler`` yourself), or a bad ``num_replicas``/``rank``.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.arange(10.0), torch.zeros(10, dtype=torch.long))
        >>> loader = DataLoader(data, batch_size=2, shuffle=True)
        >>> shards = [shard_loader(loader, num_replicas=3, rank=r) for r in range(3)]
        >>> [len(s.sampler) for s in shards], [len(s) for s in shards]
        ([3, 3, 3], [2, 2, 2])
        >>> seen = [int(v) for s in shards for x, _ in s for v in x]
        >>> len(seen), len(set(seen))  # disjoint shards; one sample dropped this epoch
        (9, 9)
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(f"loader must be a torch DataLoader, got {type(loader).__name__}")
    if isinstance(loader.sampler, DistributedSampler):
        return loader
    num_replicas, rank = _replicas(num_replicas, rank)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if loader.batch_size is None:
        raise ValueError(
            "loader uses a custom batch_sampler: shard it yourself (e.g. a DistributedSampler inside the batch sampler)"
        )
    if not isinstance(loader.sampler, (RandomSampler, SequentialSampler)):
        raise ValueError(
            f"cannot shard a loader whose sampler is a {type(loader.sampler).__name__}: "
            "build it with a torch.utils.data.DistributedSampler yourself"
        )
    shuffle = isinstance(loader.sampler, RandomSampler)
    sampler = DistributedSampler(loader.dataset, num_replicas, rank, shuffle=shuffle, seed=seed, drop_last=True)
    dataset, options = _rank_streams(loader.dataset, loader_options(loader), rank)
    return DataLoader(
        dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        # A shard smaller than one batch keeps its only, partial batch (as make_loaders does).
        drop_last=loader.drop_last and len(sampler) >= loader.batch_size,
        **options,
    )


def _rank_seed(seed: int, rank: int) -> int:
    """Rank ``rank``'s seed for a random stream seeded ``seed`` on rank 0 (which keeps it)."""
    return seed if rank == 0 else hash((seed, rank)) & (2**63 - 1)  # ints hash the same in every process


def _rank_streams(dataset: Any, options: dict[str, Any], rank: int) -> tuple[Any, dict[str, Any]]:
    """The dataset and loader options of ``rank``, with random augmentation streams of its own.

    Every rank builds its dataset and loader with the same seeds, so without this each rank would draw
    the same crops, flips, RandAugment ops and Cutout squares at each batch position. A dataset with a
    generator of its own (``reseeded``, e.g. :class:`~cskd_viz.data.SeededImages`) and the loader's
    generator (which seeds the workers) get per-rank seeds; rank 0 keeps its streams unchanged.
    """
    if rank == 0:
        return dataset, options
    if callable(getattr(dataset, "reseeded", None)) and isinstance(getattr(dataset, "seed", None), int):
        dataset = dataset.reseeded(_rank_seed(dataset.seed, rank))
    base = options["generator"].initial_seed() if options["generator"] is not None else torch.initial_seed()
    return dataset, {**options, "generator": torch.Generator().manual_seed(_rank_seed(base, rank))}


def shard_eval_loader(loader: DataLoader, *, num_replicas: int | None = None, rank: int | None = None) -> DataLoader:
    """This rank's share of an evaluation loader: items ``r, r + N, r + 2N, ...``, in order.

    Unlike ``DistributedSampler``, nothing is padded or dropped: the shards partition the dataset
    exactly (they may differ in length by one), so metrics synchronised over the ranks equal those
    of one process on the whole split.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.arange(5.0), torch.zeros(5, dtype=torch.long))
        >>> [[int(v) for x, _ in shard_eval_loader(DataLoader(data, batch_size=2), num_replicas=2, rank=r)
        ...   for v in x] for r in range(2)]
        [[0, 2, 4], [1, 3]]
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(f"loader must be a torch DataLoader, got {type(loader).__name__}")
    num_replicas, rank = _replicas(num_replicas, rank)
    if num_replicas == 1:
        return loader
    if loader.batch_size is None:
        raise ValueError("loader uses a custom batch_sampler: shard it yourself")
    shard = Subset(loader.dataset, range(rank, len(loader.dataset), num_replicas))
    return DataLoader(shard, batch_size=loader.batch_size, shuffle=False, **loader_options(loader))


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` on rank 0 only and give its (picklable) result to every rank.

    An exception on rank 0 is raised on every rank: a ``ValueError`` with the same message (so the
    CLI reports it everywhere), anything else as a ``RuntimeError`` on the other ranks.
    """
    if get_world_size() == 1:
        return fn()
    payload: list[Any] = [None]
    error = None
    if get_rank() == 0:
        try:
            payload = [("ok", fn())]
        except Exception as err:  # noqa: BLE001 - re-raised below, after the other ranks learn of it
            error = err
            payload = [("error", type(err).__name__, str(err))]
    _dist().broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    if payload[0][0] == "error":
        _, kind, message = payload[0]
        if kind == "ValueError":
            raise ValueError(message)
        raise RuntimeError(f"rank 0 failed: {kind}: {message}")
    return payload[0][1]


def broadcast_module(module: nn.Module) -> None:
    """Overwrite every rank's parameters and buffers with rank 0's (in place; no-op in one process)."""
    if get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            _dist().broadcast(tensor, src=0)


def any_rank(flag: bool, device: torch.device | None = None) -> bool:
    """Whether ``flag`` is true on any rank (a collective; just ``flag`` in one process)."""
    if get_world_size() == 1:
        return flag
    device = device if device is not None else _collective_device(None, None)
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device), default_group()).item() > 0)
