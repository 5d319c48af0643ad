"""Teacher-logit cache: epoch time of ``distill`` with the cache vs recomputing the teacher every step.

Same student (same initial weights), teacher, digits loader and method (CE + CSKD with CSWT) on
both sides; only ``cache_teacher`` differs. Two ratios per pair (cache / no cache):

- *steady*: median epoch time over epochs 2.. (the cache is built during epoch 1);
- *whole run*: total time of all epochs, cache building included.

Target (issue 3): epoch time with the cache <= 0.5x without it, for a teacher with at least 4x
the student's forward FLOPs (printed). Run: ``python -m benchmarks.teacher_cache``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from benchmarks._harness import machine_line
from cskd_viz.data import make_loaders
from cskd_viz.methods import get_method
from cskd_viz.models import get_model
from cskd_viz.train import Callback, distill

PAIRS = (("cnn_small", "cnn_large"), ("mlp_small", "mlp_large"))


def forward_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on one sample (Conv2d and Linear layers)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return total


class _EpochTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_begin(self, run_log) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, record) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.times.append(now - self.start)
        self.start = now


def measure(student_name: str, teacher_name: str, epochs: int = 4, repeats: int = 5, device: str = "cpu") -> dict:
    torch.manual_seed(0)
    train, _, info = make_loaders("digits", batch_size=64, seed=0)
    teacher = get_model(teacher_name, info.num_classes, info.input_shape).eval()
    initial = get_model(student_name, info.num_classes, info.input_shape)
    method = get_method("cskd_cswt")

    def run(cache: bool) -> list[float]:
        timer = _EpochTimer()
        distill(
            copy.deepcopy(initial),
            teacher,
            train,
            method=method,
            epochs=epochs,
            cache_teacher=cache,
            info=info,
            log_every=10,
            device=device,
            progress=False,
            callbacks=[timer],
        )
        return timer.times

    run(True)  # warm-up
    run(False)
    steady, whole = [], []
    for i in range(repeats):
        order = (True, False) if i % 2 == 0 else (False, True)
        times = {cache: run(cache) for cache in order}
        steady.append(statistics.median(times[True][1:]) / statistics.median(times[False][1:]))
        whole.append(sum(times[True]) / sum(times[False]))
    return {
        "pair": f"{student_name} <- {teacher_name}",
        "flops_ratio": forward_macs(teacher, info.input_shape) / forward_macs(initial, info.input_shape),
        "steady": statistics.median(steady),
        "steady_range": (min(steady), max(steady)),
        "whole": statistics.median(whole),
        "whole_range": (min(whole), max(whole)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    print(machine_line(), "| device", args.device)
    print(
        "epoch time with teacher cache / without; digits, batch 64, CE + CSKD(CSWT); "
        "target <= 0.5x (teacher >= 4x FLOPs)"
    )
    for student, teacher in PAIRS:
        r = measure(student, teacher, args.epochs, args.repeats, args.device)
        print(
            f"{r['pair']:<24} teacher/student FLOPs {r['flops_ratio']:.1f}x  "
            f"steady epoch ratio (median) {r['steady']:.3f} ({r['steady_range'][0]:.3f}-{r['steady_range'][1]:.3f})  "
            f"whole-run ratio {r['whole']:.3f} ({r['whole_range'][0]:.3f}-{r['whole_range'][1]:.3f})"
        )


if __name__ == "__main__":
    main()
