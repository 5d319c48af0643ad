"""Trainer overhead: steps/s of ``distill(...)`` (diagnostics every 10 steps) vs a bare hand-written loop.

Both sides train the same student from the same initial weights on the same digits loader with
the same teacher forward (cache off on both sides, so the work per step is identical) and the
same objective ``CE + CSKD(CSWT)``. The bare loop is forward, loss, backward, ``optimizer.step()``
and nothing else (no schedule, no logging). ``distill`` adds the method object, the LR schedule,
diagnostics every 10 steps (per-class cosine, CSWT quantiles and histogram), callbacks, tqdm
(disabled) and the atomic run-log writes to a temporary directory. No evaluation on either side.

One torch thread on both sides (see ``one_torch_thread``). Target (issue 9): ``distill`` steps/s
>= 0.97x the bare loop. Run: ``python -m benchmarks.trainer_overhead``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks._harness import alternate, machine_line, one_torch_thread
from cskd_viz import losses
from cskd_viz.data import make_loaders
from cskd_viz.methods import get_method
from cskd_viz.models import get_model
from cskd_viz.runs import RunLog
from cskd_viz.train import distill

PAIRS = (("mlp_small", "mlp_large"), ("cnn_small", "mlp_large"))


def _bare(student, teacher, loader, epochs: int, lr: float, device: torch.device) -> int:
    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    student.train()
    teacher.eval()
    steps = 0
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            student_logits = student(x)
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = F.cross_entropy(student_logits, y) + losses.cskd_loss(
                student_logits, teacher_logits, 4.0, 2.0, 6.0, cswt=True
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    return steps


def measure(student_name: str, teacher_name: str, epochs: int = 20, repeats: int = 7, device: str = "cpu") -> dict:
    """Median steps/s ratio ``distill / bare`` (and its min-max) for one student/teacher pair."""
    torch.manual_seed(0)
    device = torch.device(device)
    train, _, info = make_loaders("digits", batch_size=64, seed=0)
    teacher = get_model(teacher_name, info.num_classes, info.input_shape).eval().to(device)
    initial = get_model(student_name, info.num_classes, info.input_shape).to(device)
    method = get_method("cskd_cswt")
    steps = epochs * len(train)
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def ours() -> None:
            student = copy.deepcopy(initial)
            run_log = RunLog({"name": "bench", "method": method.name}, path=Path(tmp) / f"run{next(counter)}")
            distill(
                student,
                teacher,
                train,
                method=method,
                epochs=epochs,
                lr=0.05,
                device=device,
                cache_teacher=False,
                log_every=10,
                progress=False,
                run_log=run_log,
            )

        def bare() -> None:
            _bare(copy.deepcopy(initial), teacher, train, epochs, 0.05, device)
            if device.type == "cuda":
                torch.cuda.synchronize()

        with one_torch_thread():
            ours_s, bare_s = alternate(ours, bare, repeats=repeats, warmup=1)
    ratios = [b / o for o, b in zip(ours_s, bare_s, strict=True)]  # steps/s ratio = time ratio inverted
    return {
        "pair": f"{student_name} <- {teacher_name}",
        "steps": steps,
        "distill_steps_per_s": steps / statistics.median(ours_s),
        "bare_steps_per_s": steps / statistics.median(bare_s),
        "ratio": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="per timed run (20: the demo's budget)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    print(machine_line(), "| device", args.device)
    print("distill (log_every=10, run log on disk) vs bare loop; digits, batch 64, CE + CSKD(CSWT); target >= 0.97x")
    for student, teacher in PAIRS:
        r = measure(student, teacher, args.epochs, args.repeats, args.device)
        print(
            f"{r['pair']:<24} {r['steps']} steps/side  distill {r['distill_steps_per_s']:.1f} steps/s  "
            f"bare {r['bare_steps_per_s']:.1f} steps/s  ratio (median) {r['ratio']:.3f}  "
            f"min-max {r['min']:.3f}-{r['max']:.3f}"
        )


if __name__ == "__main__":
    main()
