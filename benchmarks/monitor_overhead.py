"""Monitor overhead: a bare training loop vs the same loop recording through ``Monitor(log_every=10)``.

Both sides train the same student from the same weights on the same digits loader with the same
teacher forward and ``CE + CSKDLoss()``; the recorded side calls ``monitor.log_step`` every step
(a no-op on 9 steps of 10) and writes the run to a temporary directory (creation and ``close()``
included). One torch thread, as for the loss rows. Target (issue 9): at most 3% of step time.
Run: ``python -m benchmarks.monitor_overhead``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks._harness import Comparison, Measurement, alternate, machine_line, one_torch_thread
from cskd_viz.data import make_loaders
from cskd_viz.losses import CSKDLoss
from cskd_viz.models import get_model
from cskd_viz.monitor import Monitor

PAIRS = (("mlp_small", "mlp_large"), ("cnn_small", "mlp_large"))


def _loop(student, teacher, loader, epochs: int, monitor: Monitor | None) -> None:
    criterion = CSKDLoss()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    step = 0
    for epoch in range(epochs):
        for x, y in loader:
            student_logits = student(x)
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = F.cross_entropy(student_logits, y) + criterion(student_logits, teacher_logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if monitor is not None:
                monitor.log_step(
                    step, student_logits, teacher_logits, y, losses=loss, epoch=epoch,
                    temperatures=criterion.last_temperatures, lr=0.05,
                )  # fmt: skip


def _compare(student_name: str, teacher_name: str, epochs: int, repeats: int, tmp: Path) -> Comparison:
    torch.manual_seed(0)
    train, _, info = make_loaders("digits", batch_size=64, seed=0)
    teacher = get_model(teacher_name, info.num_classes, info.input_shape).eval()
    initial = get_model(student_name, info.num_classes, info.input_shape)
    counter = iter(range(10**6))

    def recorded() -> None:
        with Monitor(tmp / f"{student_name}-{next(counter)}", info.num_classes, log_every=10) as monitor:
            _loop(copy.deepcopy(initial), teacher, train, epochs, monitor)

    def bare() -> None:
        _loop(copy.deepcopy(initial), teacher, train, epochs, None)

    ours, base = alternate(recorded, bare, repeats=repeats)
    name = f"Monitor overhead: loop + Monitor(log_every=10) vs bare loop, {student_name} <- {teacher_name}"
    return Comparison(f"{name}, {epochs * len(train)} steps", "with Monitor", "bare loop", ours, base, "<= 1.03x")


def _fixed_cost(tmp: Path, repeats: int = 21) -> Measurement:
    """What opening and closing a monitored run costs once, whatever its length (a few steps logged)."""
    s, t, y = torch.randn(64, 10), torch.randn(64, 10), torch.randint(0, 10, (64,))
    times = []
    for k in range(repeats):
        start = time.perf_counter()
        with Monitor(tmp / f"fixed-{k}", 10, log_every=1) as monitor:
            for step in range(1, 4):
                monitor.log_step(step, s, t, y, losses=1.0)
        times.append(1000 * (time.perf_counter() - start))
    return Measurement("Monitor: open + 3 recorded steps + close (compaction) of one run, fixed per run", times,
                       "ms", "-")  # fmt: skip


def run(epochs: int = 30, repeats: int = 7) -> list:
    with one_torch_thread(), tempfile.TemporaryDirectory() as tmp:
        rows: list = [_compare(student, teacher, epochs, repeats, Path(tmp)) for student, teacher in PAIRS]
        return rows + [_fixed_cost(Path(tmp))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    print(machine_line())
    for result in run(args.epochs, args.repeats):
        row = result.row()
        ratio, spread, target = row["ratio (median)"], row["ratio min-max"], row["target"]
        print(f"{row['benchmark']}: ratio {ratio} (min-max {spread}), target {target}")


if __name__ == "__main__":
    main()
