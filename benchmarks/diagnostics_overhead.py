"""Diagnostics overhead: ``distill`` logging diagnostics every step vs (almost) never.

Both sides train the same student from the same weights on the same digits loader with the
teacher-logit cache on (so the teacher does not dominate) and CE + CSKD(CSWT). "Never" is
``log_every`` larger than the run, which still logs the first and last step. One torch thread.
Target: every-step logging at most 5% slower (ratio of run times <= 1.05).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch

from benchmarks._harness import Comparison, alternate, machine_line, one_torch_thread
from cskd_viz.data import make_loaders
from cskd_viz.methods import get_method
from cskd_viz.models import get_model
from cskd_viz.runs import RunLog
from cskd_viz.train import distill


def run(
    epochs: int = 2, repeats: int = 5, student_name: str = "cnn_small", teacher_name: str = "mlp_large"
) -> list[Comparison]:
    torch.manual_seed(0)
    train, _, info = make_loaders("digits", batch_size=64, seed=0)
    teacher = get_model(teacher_name, info.num_classes, info.input_shape).eval()
    initial = get_model(student_name, info.num_classes, info.input_shape)
    method = get_method("cskd_cswt")
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def side(log_every: int):
            def go() -> None:
                run_log = RunLog({"name": "bench", "method": method.name}, path=Path(tmp) / f"run{next(counter)}")
                distill(
                    copy.deepcopy(initial), teacher, train, method=method, epochs=epochs, info=info,
                    cache_teacher=True, log_every=log_every, progress=False, run_log=run_log,
                )  # fmt: skip

            return go

        with one_torch_thread():
            every, never = alternate(side(1), side(10**9), repeats=repeats)
    steps = epochs * len(train)
    return [
        Comparison(
            f"diagnostics every step vs never: distill {student_name} <- {teacher_name}, {steps} steps",
            "log_every=1",
            "first/last step only",
            every,
            never,
            "<= 1.05x",
        )  # fmt: skip
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(machine_line())
    for result in run(args.epochs, args.repeats):
        row = result.row()
        print(
            f"{row['benchmark']}: ratio {row['ratio (median)']} "
            f"(min-max {row['ratio min-max']}), target {row['target']}"
        )


if __name__ == "__main__":
    main()
