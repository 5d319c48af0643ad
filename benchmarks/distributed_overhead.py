"""Step time of global-batch CSKD vs local CSKD on 2 CPU processes (gloo, DDP).

Each step is a full training step of the trainer's default digits student (``cnn_small`` on
``(1, 8, 8)`` inputs, 10 classes; ``--student mlp_small`` for a smaller one) under DDP: forward,
``CE + CSKD`` (CSWT on), backward (with DDP's gradient all-reduce), SGD update. Teacher logits are
cached tensors, as in the trainer. Both modes run in the same two processes and alternate step
by step, so machine load hits both alike; per block, each mode's median step time (the slower
rank's) is taken. Printed: the median over blocks of each mode and the median (min-max) of the
per-block ratios global / local (target <= 1.2).

Run: ``python -m benchmarks.distributed_overhead [--student cnn_small --batch-size 64 --steps 20 --repeats 9]``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from datetime import timedelta

import torch

from benchmarks._harness import Comparison

WORLD = 2
INPUT_SHAPE = (1, 8, 8)  # digits
CLASSES = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, args: argparse.Namespace, queue) -> None:
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    from cskd_viz import losses
    from cskd_viz.models import get_model

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )
    try:
        g = torch.Generator().manual_seed(rank)
        n_batches = 8
        xs = torch.randn(n_batches, args.batch_size, *INPUT_SHAPE, generator=g)
        ys = torch.randint(0, CLASSES, (n_batches, args.batch_size), generator=g)
        teacher = 3.0 * torch.randn(n_batches, args.batch_size, CLASSES, generator=g)
        torch.manual_seed(0)
        model = DDP(get_model(args.student, CLASSES, INPUT_SHAPE))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        world = dist.group.WORLD

        def step(b: int, group) -> float:
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            logits = model(xs[b])
            loss = F.cross_entropy(logits, ys[b]) + losses.cskd_loss(logits, teacher[b], group=group)
            loss.backward()
            optimizer.step()
            return time.perf_counter() - start

        def block(first: str) -> dict[str, float]:
            """Steps alternate between the modes; the median step time of each mode in this block."""
            dist.barrier()
            steps: dict[str, list[float]] = {"local": [], "global": []}
            order = (first, "global" if first == "local" else "local")
            for i in range(2 * args.steps):
                mode = order[i % 2]
                steps[mode].append(step(i % n_batches, world if mode == "global" else None))
            # The slower rank sets the pace: take the max over ranks of each mode's median.
            medians = torch.tensor([statistics.median(steps["local"]), statistics.median(steps["global"])])
            dist.all_reduce(medians, op=dist.ReduceOp.MAX)
            return {"local": float(medians[0]), "global": float(medians[1])}

        block("local")  # warm-up: allocator, gloo connections, the capacity of the one-collective gather
        times: dict[str, list[float]] = {"local": [], "global": []}
        for r in range(args.repeats):
            result = block("local" if r % 2 == 0 else "global")
            for mode in times:
                times[mode].append(result[mode])
        if rank == 0:
            queue.put(times)
    finally:
        dist.destroy_process_group()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--student", default="cnn_small", help="model name of cskd_viz.models (digits input)")
    parser.add_argument("--batch-size", type=int, default=64, help="local batch size per process")
    parser.add_argument("--steps", type=int, default=20, help="steps of each mode per block (alternating step by step)")
    parser.add_argument("--repeats", type=int, default=9, help="timed blocks")
    return parser


def run(argv: list[str] | None = None) -> list[Comparison]:
    """Measure both modes on 2 gloo processes; one :class:`~benchmarks._harness.Comparison`."""
    import torch.multiprocessing as mp

    args = _parser().parse_args([] if argv is None else argv)
    queue = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_worker, args=(_free_port(), args, queue), nprocs=WORLD, join=True, start_method="spawn")
    times = queue.get()
    name = (
        f"global- vs local-batch CSKD train step, 2 procs gloo/CPU, {args.student} digits, "
        f"B={args.batch_size}/rank ({WORLD * args.batch_size} global)"
    )
    return [Comparison(name, "global batch", "local batch", times["global"], times["local"], "<= 1.2x")]


def main(argv: list[str] | None = None) -> float:
    """Run the benchmark, print the result line, return the median ratio global / local."""
    import sys

    (result,) = run(sys.argv[1:] if argv is None else argv)
    row = result.row()
    print(row["benchmark"])
    print(f"  {row['ours']} per step | {row['baseline']} per step (medians)")
    print(f"  ratio {row['ratio (median)']} (min-max {row['ratio min-max']}), target {row['target']}")
    return result.ratio


if __name__ == "__main__":
    main()
