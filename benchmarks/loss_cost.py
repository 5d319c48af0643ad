"""Loss cost: forward + backward of CSKD (CSWT on/off) and DIST, each relative to KD on the same logits."""

from __future__ import annotations

import torch

from benchmarks._harness import Comparison, alternate
from cskd_viz import losses

SHAPES = ((64, 100), (256, 100), (256, 1000), (1024, 1000))


def _step(loss_fn, student: torch.Tensor, teacher: torch.Tensor):
    def run() -> None:
        student.grad = None
        loss_fn(student, teacher).backward()

    return run


def run(shapes=SHAPES, repeats: int = 9) -> list[Comparison]:
    results = []
    gen = torch.Generator().manual_seed(0)
    candidates = {
        "cskd_loss (CSWT on)": lambda s, t: losses.cskd_loss(s, t, cswt=True),
        "cskd_loss (CSWT off)": lambda s, t: losses.cskd_loss(s, t, cswt=False),
        "dist_loss": lambda s, t: losses.dist_loss(s, t),
    }
    for batch, classes in shapes:
        student = torch.randn(batch, classes, generator=gen).requires_grad_()
        teacher = torch.randn(batch, classes, generator=gen) * 2
        inner = max(1, 20_000 // (batch * classes // 100))
        kd = _step(lambda s, t: losses.kd_loss(s, t), student, teacher)
        for label, fn in candidates.items():
            ours, base = alternate(_step(fn, student, teacher), kd, repeats=repeats, inner=inner)
            target = "<= 2.5x" if "CSWT on" in label else "-"
            results.append(
                Comparison(f"{label} vs kd_loss, fwd+bwd, B={batch} C={classes}", label, "kd_loss", ours, base, target)
            )
    return results


def main() -> None:
    for result in run():
        row = result.row()
        print(f"{row['benchmark']:<60} ratio {row['ratio (median)']} ({row['ratio min-max']})  target {row['target']}")


if __name__ == "__main__":
    main()
