"""The ``cskd-viz`` command: ``demo``, ``train`` and ``report``.

- ``cskd-viz demo``: train a teacher, then CE / KD / CSKD / CSKD+CSWT students with the same
  budget on the bundled digits data; print a comparison table; write the run logs under
  ``--runs-dir`` and PNG figures under ``--out``. ``CSKD_VIZ_FAST=1`` shrinks the budget (tests).
- ``cskd-viz train``: one configured run (see :class:`cskd_viz.train.RunConfig`).
- ``cskd-viz report RUN_DIR...``: summary table and PNG figures of existing runs.
- ``cskd-viz analyze``: students against their teacher from checkpoints or runs (``cskd_viz._cli_analyze``).

``demo`` and ``train`` also run under ``torchrun --nproc_per_node=N`` (data parallel, see
``docs/distributed.md``): ``--batch-size`` is then the per-process batch, ``train --global-batch``
computes CSKD on the global batch of all processes, and only rank 0 prints and writes files.

Bad flags or values exit with status 2 and an argparse-style message. Every other user error (a
path that cannot be written, torchrun's environment or a rendezvous that times out after
``--dist-timeout`` seconds, missing or unsafe data files, an unusable checkpoint) exits with status
2 and one line, ``cskd-viz: error: <why>``, checked before training where possible; only bugs show a
traceback. Ctrl-C exits with status 130 (a termination signal with its own ``exit_code``) and says
which run log it saved, if any.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from cskd_viz._cli_checks import dir_problem, fail, interrupted_message, name_problem
from cskd_viz._cli_run_flags import DIST_TIMEOUT_HELP, add_run_flags, run_config_from_args

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

# Commands that live in their own light modules: each has ``register(sub)``, which adds its sub-parser(s)
# with ``set_defaults(run=handler)``; a handler is called as ``handler(args, sub_parser) -> exit status``.
COMMAND_MODULES: tuple[str, ...] = ("cskd_viz._cli_analyze", "cskd_viz._cli_experiments")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (imports nothing heavy: ``cskd-viz --help`` and flag errors are instant)."""
    parser = argparse.ArgumentParser(
        prog="cskd-viz", description="Cosine Similarity Knowledge Distillation, made visible."
    )
    sub = parser.add_subparsers(dest="command")
    sub.required = True

    demo = sub.add_parser("demo", help="teacher + CE/KD/CSKD/CSKD+CSWT students on digits, table + figures")
    demo.add_argument("--runs-dir", default="runs", help="where run logs go (default: runs)")
    demo.add_argument("--out", default="demo_output", help="where PNG figures go (default: demo_output)")
    demo.add_argument("--seed", type=int, default=0, help="seed of data split, order and init (default: 0)")
    demo.add_argument("--seeds", type=int, default=1, help="repeat with this many seeds and average (default: 1)")
    demo.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    demo.add_argument("--dist-timeout", type=float, default=60.0, metavar="SECONDS", help=DIST_TIMEOUT_HELP)
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.add_argument("--no-figures", action="store_true", help="print the table only")

    train = sub.add_parser("train", help="one configured run")
    add_run_flags(train)
    train.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run --name (or the config's run name) under --runs-dir from its last checkpoint",
    )
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")

    report = sub.add_parser("report", help="summary table and figures of existing runs")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (or a runs root)")
    report.add_argument("--out", default="report_output", help="where PNG figures go (default: report_output)")
    report.add_argument("--no-figures", action="store_true", help="print the table only")
    demo.set_defaults(run=_run_demo)
    train.set_defaults(run=_run_train)
    report.set_defaults(run=_run_report)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    sub.metavar = "{" + ",".join(sub.choices) + "}"
    return parser


# ----------------------------------------------------------------------------- output


def _run_labels(logs) -> list[str]:
    """The runs' names, made unique the way ``stack_runs`` does (``name``, ``name#2``, ...)."""
    labels, seen = [], {}
    for log in logs:
        seen[log.name] = seen.get(log.name, 0) + 1
        labels.append(log.name if seen[log.name] == 1 else f"{log.name}#{seen[log.name]}")
    return labels


def _table(logs) -> str:
    """One row per run: name (duplicates as ``name#2``), method, status (``dead``: its writer is gone
    while it said running), test/best accuracy, agreement, ``d(T)``, and ``reason`` when a run has one."""
    from cskd_viz.runs import compare_runs

    logs = list(logs)
    frame = compare_runs(logs).assign(name=_run_labels(logs))
    shown = frame.assign(method=frame["method"].map(lambda m: METHOD_LABELS.get(m, m)))
    columns = ["name", "method", "status", "final_accuracy", "best_accuracy", "final_agreement"]
    columns.append("final_cosine_distance")
    if shown["reason"].notna().any():
        shown = shown.assign(reason=shown["reason"].map(lambda r: "-" if r is None else _short_text(r, 60)))
        columns.append("reason")
    shown = shown[columns]
    shown = shown.rename(
        columns={
            "final_accuracy": "test accuracy",
            "best_accuracy": "best accuracy",
            "final_agreement": "agreement",
            "final_cosine_distance": "d(T)",
        }
    )
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")


def _short_text(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_figures(logs, out: str | os.PathLike) -> list[Path]:
    """Write the comparison figures of ``logs`` as PNG files under ``out``; return the paths (each once).

    Runs of the same name are told apart as ``name#2``, ... (legends, ``temperatures-<name>.png``
    files; characters other than letters, digits and ``.-_#`` become ``_`` in file names). A figure
    that fails (or a missing plotting dependency) gives a warning and is skipped.
    """
    import re

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
        if path not in written:
            written.append(path)

    evals = stack_runs(logs, "evals")
    if len(evals):
        save("accuracy.png", lambda: plots.plot_learning_curves(evals, "accuracy"))
        if evals["agreement"].notna().any():
            save("agreement.png", lambda: plots.plot_agreement(evals))
            save("cosine_distance.png", lambda: plots.plot_learning_curves(evals, "cosine_distance"))
    labels = _run_labels(logs)
    with_cosine = {label: log.class_cosine for label, log in zip(labels, logs, strict=True) if len(log.class_cosine)}
    if with_cosine:
        save("class_cosine.png", lambda: plots.plot_class_cosine_heatmaps(with_cosine))
    files = {}  # label -> file name, unique even where two labels differ only in unsafe characters
    for label in labels:
        stem = re.sub(r"[^A-Za-z0-9._#-]", "_", label)
        files[label] = stem if stem not in files.values() else f"{stem}#{len(files) + 1}"
    for label, log in zip(labels, logs, strict=True):
        if len(log.temperatures):
            t_low, t_high = log.config.get("t_low"), log.config.get("t_high")
            save(
                f"temperatures-{files[label]}.png",
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
    start = time.perf_counter()
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    _check_launch(args, parser)
    if _writes_files():
        _check_dir(args.runs_dir, "--runs-dir", parser)
        if not args.no_figures:
            _check_dir(args.out, "--out", parser)
    import torch

    from cskd_viz.distributed import is_main_process
    from cskd_viz.train import distributed_session, resolve_device, run_experiment
    from cskd_viz.training.faults import TrainingDiverged

    try:
        configs = [
            config for seed in range(args.seed, args.seed + args.seeds) for config in demo_configs(seed, args.device)
        ]
        resolve_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    progress = False if args.no_progress else None
    logs = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the demo's tiny nets run fastest on one thread (no contention on small CPUs)
    try:
        # under torchrun: one process group for all the runs
        with distributed_session(args.device, timeout_s=args.dist_timeout):
            main = is_main_process()
            for config in configs:
                logs.append(run_experiment(config, args.runs_dir, progress=progress, overwrite=True))
    except _user_errors() as err:  # e.g. a foreign directory where a demo run should go, a full disk
        fail(err)
    except TrainingDiverged as err:
        return _diverged(err)
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
    _check_launch(args, parser)
    if _writes_files():
        _check_dir(args.runs_dir, "--runs-dir", parser)
        problem = name_problem(args.runs_dir, args.name)
        if problem:
            fail(problem)
    from cskd_viz.distributed import is_main_process
    from cskd_viz.train import distributed_session, run_experiment
    from cskd_viz.training.faults import TrainingDiverged

    checkpoint = args.teacher_checkpoint
    if checkpoint is not None and not os.path.isfile(checkpoint):  # a user error like any other unusable checkpoint
        why = "a directory" if os.path.isdir(checkpoint) else "no such file"
        fail(f"--teacher-checkpoint {checkpoint} is not a file ({why})")
    if args.resume and args.overwrite:
        parser.error("--resume continues a run and --overwrite replaces it: give one of them")
    config = run_config_from_args(args, parser)
    if config.teacher_checkpoint is not None:
        _check_checkpoint(config)
    try:
        with distributed_session(config.device, timeout_s=args.dist_timeout):  # under torchrun; else a no-op
            main = is_main_process()
            log = run_experiment(
                config,
                args.runs_dir,
                progress=False if args.no_progress else None,
                overwrite=args.overwrite,
                resume=args.resume,
            )
    except _user_errors() as err:  # e.g. overwrite refused for a foreign directory, missing dataset files
        fail(err)
    except TrainingDiverged as err:
        return _diverged(err)
    if not main:  # other ranks of a torchrun launch: rank 0 prints (and wrote the run log)
        return 0 if log.status == "finished" else 1
    print(_table([log]))
    print(f"\nrun log: {log.path}  status: {log.status}{_training_time(log)}")
    return 0 if log.status == "finished" else 1


def _training_time(log) -> str:
    """``"  training time: 12.3 s"``: the last logged ``elapsed_s`` (all segments of a resumed run); or ``""``."""
    steps = log.steps
    elapsed = steps["elapsed_s"].dropna() if "elapsed_s" in steps else ()
    return f"  training time: {float(elapsed.max()):.1f} s" if len(elapsed) else ""


def _diverged(err) -> int:
    """A run whose loss stopped being finite: one line (it ends ``failed``, with this reason in its log), exit 1."""
    print(f"cskd-viz: the run {err.run} failed: {err}", file=sys.stderr)
    return 1


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a run raises for a user's mistake or environment (one line, exit 2), not for a bug.

    ``ValueError`` covers refused run directories, data files and checkpoints (``RunLogError``,
    ``DataFileError``, ``CheckpointError``); ``OSError`` missing data files, unwritable or full disks.
    """
    from cskd_viz.distributed import DistributedEnvironmentError

    return (ValueError, OSError, DistributedEnvironmentError)


def _check_launch(args, parser) -> None:
    """``--dist-timeout`` and torchrun's environment, before anything heavy is imported."""
    from cskd_viz._torchrun import DistributedEnvironmentError, check_timeout, check_torchrun_environment

    try:
        check_timeout(args.dist_timeout)
    except ValueError:
        parser.error(f"--dist-timeout must be a positive number of seconds, got {args.dist_timeout}")
    try:
        check_torchrun_environment()
    except (ValueError, DistributedEnvironmentError) as err:
        fail(err)


def _writes_files() -> bool:
    """Whether this process writes run logs and figures: global rank 0 of a torchrun launch, or the only process
    (``RANK`` counts only with ``WORLD_SIZE > 1``, as for the launch itself; checked by :func:`_check_launch`)."""
    from cskd_viz._torchrun import torchrun_world_size

    return torchrun_world_size() <= 1 or os.environ.get("RANK", "0").strip() in ("", "0")


def _check_dir(path: str, flag: str, parser) -> None:
    """Exit 2 with one line unless ``path`` can be created and written as a directory (``parser``: unused)."""
    del parser  # kept in the signature its callers use
    problem = dir_problem(path, flag)
    if problem:
        fail(problem)


def _check_checkpoint(config) -> None:
    """Fail early (exit 2, one line) when the teacher checkpoint cannot be used for the teacher architecture."""
    from cskd_viz.data import load_datasets
    from cskd_viz.models import get_model
    from cskd_viz.train import load_checkpoint

    try:
        _, _, info = load_datasets(config.dataset, seed=config.seed)
        load_checkpoint(get_model(config.teacher, info.num_classes, info.input_shape), config.teacher_checkpoint)
    except (ValueError, OSError) as err:  # CheckpointError and DataFileError are ValueErrors
        fail(err)


def _report_paths(args, parser) -> list[Path]:
    """The run directories to report: each argument, or every run directory inside a runs root
    (a directory without ``config.json`` whose sub-directories have one, readable or not)."""
    from cskd_viz.runs import CONFIG_FILE

    paths: list[Path] = []
    for raw in args.run_dirs:
        path = Path(raw)
        if not path.exists():
            parser.error(f"{raw}: no such directory")
        if path.is_dir() and not (path / CONFIG_FILE).exists():
            children = sorted(p for p in path.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())
            if children:  # a runs root: report every run inside
                paths.extend(children)
                continue
        paths.append(path)
    return paths


def _run_report(args, parser) -> int:
    """Print the table (and write the figures) of the readable runs; an unreadable run is skipped with
    one warning line on stderr, naming it and why. No readable run at all is an error (exit 2)."""
    from cskd_viz.runs import RunLogError, load_run

    logs, skipped = [], []
    for path in _report_paths(args, parser):
        try:
            log = load_run(path)
            log.frames()  # every frame now: a corrupt one skips its run here, not half-way through the figures
        except RunLogError as err:
            skipped.append((path, err))
            continue
        logs.append(log)
    if not logs:
        more = f" (and {len(skipped) - 1} more unreadable run(s))" if len(skipped) > 1 else ""
        parser.error(f"{skipped[0][1]}{more}")
    for path, err in skipped:
        print(f"cskd-viz report: warning: skipped the run {path}: {_short_text(err, 400)}", file=sys.stderr)
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
    sub_parser = parser._subparsers._group_actions[0].choices[args.command]  # for errors naming the command
    started = time.time()
    from cskd_viz._termination import Terminated, termination_as_interrupt, termination_raised

    try:
        with termination_as_interrupt():  # SIGTERM and SIGHUP end a run like Ctrl-C (exit 143 and 129)
            return args.run(args, sub_parser)
    except KeyboardInterrupt as err:  # Ctrl-C; a termination signal is a subclass with its own exit_code
        stop = err
    except Exception:  # a signal during an import can surface as an ImportError (or another error)
        if termination_raised() is None:
            raise
        stop = Terminated(termination_raised())
    # names the run logs it really left on disk (none when it came before training)
    print("\n" + interrupted_message(stop, getattr(args, "runs_dir", None), started), file=sys.stderr)
    return getattr(stop, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
