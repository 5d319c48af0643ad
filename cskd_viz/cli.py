"""The ``cskd-viz`` command: ``demo``, ``train`` and ``report``.

- ``cskd-viz demo``: train a teacher, then CE / KD / CSKD / CSKD+CSWT students with the same
  budget on the bundled digits data; print a comparison table; write the run logs under
  ``--runs-dir`` and PNG figures under ``--out``. ``CSKD_VIZ_FAST=1`` shrinks the budget (tests).
- ``cskd-viz train``: one configured run (see :class:`cskd_viz.train.RunConfig`).
- ``cskd-viz report RUN_DIR...``: summary table and PNG figures of existing runs.

``demo`` and ``train`` also run under ``torchrun --nproc_per_node=N`` (data parallel, see
``docs/distributed.md``): ``--batch-size`` is then the per-process batch, ``train --global-batch``
computes CSKD on the global batch of all processes, and only rank 0 prints and writes files.

Bad flags, values or paths exit with status 2 and an argparse-style message, never a traceback;
Ctrl-C exits with status 130 after saving the interrupted run log.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser", "DEMO_METHODS", "demo_configs"]

DEMO_METHODS = ("ce", "kd", "cskd", "cskd_cswt")
METHOD_LABELS = {"ce": "CE", "kd": "KD", "cskd": "CSKD", "cskd_cswt": "CSKD+CSWT", "dist": "DIST"}

# The demo's budget: every student gets exactly the same one. Tuned on digits for a 2-core CPU.
DEMO = dict(
    dataset="digits",
    student="mlp_small",
    teacher="mlp_large",
    teacher_epochs=30,
    epochs=20,
    batch_size=64,
    lr=0.05,
    temperature=4.0,
    t_low=2.0,
    t_high=6.0,
    w_ce=1.0,
    w_kd=1.0,
)
DEMO_FAST = dict(teacher_epochs=2, epochs=1, max_steps=8)


def _fast() -> bool:
    return os.environ.get("CSKD_VIZ_FAST", "").strip() not in ("", "0", "false", "False")


def demo_configs(seed: int = 0, device: str = "cpu", fast: bool | None = None) -> list:
    """The demo's :class:`~cskd_viz.train.RunConfig` list, one per method (same budget for all).

    Example:
        >>> [(c.method, c.epochs) for c in demo_configs(fast=False)][:2]
        [('ce', 20), ('kd', 20)]
    """
    from cskd_viz.train import RunConfig

    settings = dict(DEMO)
    if _fast() if fast is None else fast:
        settings.update(DEMO_FAST)
    return [
        RunConfig(method=method, seed=seed, device=device, name=f"demo-{method}-s{seed}", **settings)
        for method in DEMO_METHODS
    ]


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (imports nothing heavy: ``cskd-viz --help`` and flag errors are instant)."""
    parser = argparse.ArgumentParser(
        prog="cskd-viz", description="Cosine Similarity Knowledge Distillation, made visible."
    )
    sub = parser.add_subparsers(dest="command", metavar="{demo,train,report}")
    sub.required = True

    demo = sub.add_parser("demo", help="teacher + CE/KD/CSKD/CSKD+CSWT students on digits, table + figures")
    demo.add_argument("--runs-dir", default="runs", help="where run logs go (default: runs)")
    demo.add_argument("--out", default="demo_output", help="where PNG figures go (default: demo_output)")
    demo.add_argument("--seed", type=int, default=0, help="seed of data split, order and init (default: 0)")
    demo.add_argument("--seeds", type=int, default=1, help="repeat with this many seeds and average (default: 1)")
    demo.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.add_argument("--no-figures", action="store_true", help="print the table only")

    train = sub.add_parser("train", help="one configured run")
    train.add_argument("--dataset", default="digits")
    train.add_argument("--student", default="cnn_small")
    train.add_argument("--teacher", default="cnn_large", help="teacher architecture, or 'none' to train with CE alone")
    train.add_argument("--teacher-checkpoint", default=None, help="{'model': state_dict} file for --teacher")
    train.add_argument("--teacher-epochs", type=int, default=20, help="epochs of an auto-trained teacher")
    train.add_argument("--method", default="cskd_cswt", help="ce, kd, cskd, cskd_cswt or dist (default: cskd_cswt)")
    train.add_argument("--temperature", type=float, default=4.0)
    train.add_argument("--t-low", type=float, default=2.0)
    train.add_argument("--t-high", type=float, default=6.0)
    train.add_argument("--w-ce", type=float, default=1.0)
    train.add_argument("--w-kd", type=float, default=1.0)
    train.add_argument("--epochs", type=int, default=None, help="epoch budget (default 10 without --max-steps)")
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=0.05)
    train.add_argument("--schedule", default="cosine", choices=("cosine", "step", "constant"))
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--log-every", type=int, default=10)
    train.add_argument("--runs-dir", default="runs")
    train.add_argument("--name", default=None)
    train.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    train.add_argument(
        "--global-batch",
        action="store_true",
        help="under torchrun: CSKD on the global batch of all processes (default: each process's own batch)",
    )

    report = sub.add_parser("report", help="summary table and figures of existing runs")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (or a runs root)")
    report.add_argument("--out", default="report_output", help="where PNG figures go (default: report_output)")
    report.add_argument("--no-figures", action="store_true", help="print the table only")
    return parser


# ----------------------------------------------------------------------------- output


def _table(logs) -> str:
    from cskd_viz.runs import compare_runs

    frame = compare_runs(logs)
    shown = frame.assign(method=frame["method"].map(lambda m: METHOD_LABELS.get(m, m)))
    shown = shown[["name", "method", "final_accuracy", "best_accuracy", "final_agreement", "final_cosine_distance"]]
    shown = shown.rename(
        columns={
            "final_accuracy": "test accuracy",
            "best_accuracy": "best accuracy",
            "final_agreement": "agreement",
            "final_cosine_distance": "d(T)",
        }
    )
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")


def write_figures(logs, out: str | os.PathLike) -> list[Path]:
    """Write the comparison figures of ``logs`` as PNG files under ``out``; return the paths.

    A figure that fails (or a missing plotting dependency) gives a warning and is skipped.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from cskd_viz import plots
        from cskd_viz.runs import stack_runs
    except Exception as err:  # noqa: BLE001 - figures are optional, the table is not
        warnings.warn(f"figures skipped: cannot import the plotting stack ({err})", stacklevel=2)
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    logs = list(logs)
    written: list[Path] = []

    def save(filename: str, make) -> None:
        try:
            fig = make()
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"figure {filename} skipped: {type(err).__name__}: {err}", stacklevel=2)
            return
        path = out / filename
        fig.savefig(path, dpi=110)  # the plots use constrained layout: no second "tight" draw
        plt.close(fig)
        written.append(path)

    evals = stack_runs(logs, "evals")
    if len(evals):
        save("accuracy.png", lambda: plots.plot_learning_curves(evals, "accuracy"))
        if evals["agreement"].notna().any():
            save("agreement.png", lambda: plots.plot_agreement(evals))
            save("cosine_distance.png", lambda: plots.plot_learning_curves(evals, "cosine_distance"))
    with_cosine = {log.name: log.class_cosine for log in logs if len(log.class_cosine)}
    if with_cosine:
        save("class_cosine.png", lambda: plots.plot_class_cosine_heatmaps(with_cosine))
    for log in logs:
        if len(log.temperatures):
            t_low, t_high = log.config.get("t_low"), log.config.get("t_high")
            save(
                f"temperatures-{log.name}.png",
                lambda log=log, t_low=t_low, t_high=t_high: plots.plot_temperature_trace(
                    log.temperatures, t_low=t_low, t_high=t_high
                ),
            )
    return written


# ----------------------------------------------------------------------------- commands


def _demo_table(logs) -> str:
    """One row per method: test accuracy, agreement with the teacher, epoch-level d(T) (mean ± std over seeds)."""
    from cskd_viz.runs import compare_runs

    frame = compare_runs(logs)
    rows = []
    for method in dict.fromkeys(frame["method"]):
        part = frame[frame["method"] == method]
        row = {"method": METHOD_LABELS.get(method, method), "seeds": len(part)}
        for column, label in (
            ("final_accuracy", "test accuracy"),
            ("final_agreement", "agreement"),
            ("final_cosine_distance", "d(T)"),
        ):
            values = part[column].astype(float)
            text = f"{values.mean():.4f}"
            if len(values) > 1:
                text += f" ± {values.std(ddof=1):.4f}"
            row[label] = text
        rows.append(row)
    import pandas as pd

    table = pd.DataFrame(rows)
    if table["seeds"].max() == 1:
        table = table.drop(columns="seeds")
    return table.to_string(index=False)


def _run_demo(args, parser) -> int:
    import torch

    from cskd_viz.distributed import is_main_process
    from cskd_viz.train import distributed_session, resolve_device, run_experiment

    start = time.perf_counter()
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    try:
        configs = [
            config for seed in range(args.seed, args.seed + args.seeds) for config in demo_configs(seed, args.device)
        ]
        resolve_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    _check_dir(args.runs_dir, "--runs-dir", parser)
    _check_dir(args.out, "--out", parser)
    progress = False if args.no_progress else None
    logs = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the demo's tiny nets run fastest on one thread (no contention on small CPUs)
    try:
        with distributed_session(args.device):  # under torchrun: one process group for all the runs
            main = is_main_process()
            for config in configs:
                logs.append(run_experiment(config, args.runs_dir, progress=progress, overwrite=True))
    except ValueError as err:  # e.g. a foreign directory where a demo run should go
        parser.error(str(err))
    finally:
        torch.set_num_threads(threads)
    if not main:  # other ranks of a torchrun launch: rank 0 prints and writes the figures
        return 0
    teacher_accuracy = sum(log.summary()["teacher_accuracy"] for log in logs) / len(logs)
    elapsed = time.perf_counter() - start
    first = configs[0]
    budget = f"{first.epochs} epochs" + (f" (at most {first.max_steps} steps)" if first.max_steps else "")
    seeds = (
        f"seed {args.seed}" if args.seeds == 1 else f"mean ± std over seeds {args.seed}..{args.seed + args.seeds - 1}"
    )
    print()
    print(
        f"CSKD demo on digits ({seeds}): teacher {first.teacher} for {first.teacher_epochs} epochs "
        f"(test accuracy {teacher_accuracy:.4f}); students {first.student}, same budget each: {budget}, "
        f"batch {first.batch_size}, lr {first.lr}, T={first.temperature}, CSWT T in [{first.t_low}, {first.t_high}]"
    )
    print(_demo_table(logs))
    figures = (
        [] if args.no_figures else write_figures([log for log in logs if log.config.get("seed") == args.seed], args.out)
    )
    print(f"\nrun logs: {Path(args.runs_dir)}/demo-*   figures: {len(figures)} PNG in {args.out}")
    print(f"demo time: {elapsed:.1f} s")
    return 0


def _run_train(args, parser) -> int:
    from cskd_viz.distributed import is_main_process
    from cskd_viz.train import RunConfig, distributed_session, resolve_device, run_experiment

    teacher = None if args.teacher.lower() in ("none", "") else args.teacher
    epochs = args.epochs if args.epochs is not None or args.max_steps is not None else 10
    try:
        config = RunConfig(
            dataset=args.dataset,
            student=args.student,
            teacher=teacher,
            teacher_checkpoint=args.teacher_checkpoint,
            teacher_epochs=args.teacher_epochs,
            method=args.method,
            temperature=args.temperature,
            t_low=args.t_low,
            t_high=args.t_high,
            w_ce=args.w_ce,
            w_kd=args.w_kd,
            epochs=epochs,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            lr=args.lr,
            schedule=args.schedule,
            seed=args.seed,
            log_every=args.log_every,
            name=args.name,
            device=args.device,
            global_batch=args.global_batch,
        )
        resolve_device(config.device)
        if config.teacher_checkpoint is not None:
            _check_checkpoint(config)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    _check_dir(args.runs_dir, "--runs-dir", parser)
    try:
        with distributed_session(config.device):  # under torchrun; a no-op in one process
            main = is_main_process()
            log = run_experiment(
                config, args.runs_dir, progress=False if args.no_progress else None, overwrite=args.overwrite
            )
    except ValueError as err:  # e.g. overwrite refused for a foreign directory, missing dataset files
        parser.error(str(err))
    if not main:  # other ranks of a torchrun launch: rank 0 prints (and wrote the run log)
        return 0 if log.status == "finished" else 1
    print(_table([log]))
    print(f"\nrun log: {log.path}  status: {log.status}")
    return 0 if log.status == "finished" else 1


def _check_dir(path: str, flag: str, parser) -> None:
    if Path(path).exists() and not Path(path).is_dir():
        parser.error(f"{flag} {path} exists and is not a directory")


def _check_checkpoint(config) -> None:
    """Fail early (exit 2) when the teacher checkpoint does not fit the teacher architecture."""
    from cskd_viz.data import load_datasets
    from cskd_viz.models import get_model
    from cskd_viz.train import load_checkpoint

    _, _, info = load_datasets(config.dataset, seed=config.seed)
    load_checkpoint(get_model(config.teacher, info.num_classes, info.input_shape), config.teacher_checkpoint)


def _run_report(args, parser) -> int:
    from cskd_viz.runs import RunLogError, is_run_dir, load_run

    paths: list[Path] = []
    for raw in args.run_dirs:
        path = Path(raw)
        if not path.exists():
            parser.error(f"{raw}: no such directory")
        if not is_run_dir(path) and path.is_dir():
            children = sorted(p for p in path.iterdir() if p.is_dir() and is_run_dir(p))
            if children:  # a runs root: report every run inside
                paths.extend(children)
                continue
        paths.append(path)
    logs = []
    for path in paths:
        try:
            logs.append(load_run(path))
        except RunLogError as err:
            parser.error(str(err))
    _check_dir(args.out, "--out", parser)
    print(_table(logs))
    if not args.no_figures:
        figures = write_figures(logs, args.out)
        print(f"\nfigures: {len(figures)} PNG in {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cskd-viz`` (and ``python -m cskd_viz.cli``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"demo": _run_demo, "train": _run_train, "report": _run_report}
    sub_parser = parser._subparsers._group_actions[0].choices[args.command]  # for errors naming the command
    try:
        return commands[args.command](args, sub_parser)
    except KeyboardInterrupt:
        print("\ncskd-viz: interrupted; the current run log was saved with status 'interrupted'", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
