"""``cskd-viz analyze``: compare students with their teacher from checkpoints, or from runs of ours.

::

    cskd-viz analyze --dataset cifar100 --teacher resnet32x4=teacher.pth \\
        --student kd=resnet8x4:kd.pth --student cskd=resnet8x4:cskd.pth --out report/

- ``--teacher ARCH=PATH`` and ``--student NAME=ARCH:PATH`` name :mod:`cskd_viz.models` architectures
  and checkpoint files in any format :func:`cskd_viz.train.load_checkpoint` reads (mdistiller's
  ``{"model": state_dict}``, ``{"state_dict": ...}``, a bare state dict, ``module.`` prefixes).
- ``--run RUN_DIR`` adds the student of a run our trainer wrote (its ``model.pt``, named after the
  run); without ``--teacher``, that run's teacher is used, and without ``--dataset``, its dataset.
- It prints the summary table and writes ``report.html`` (one self-contained page) and the frames as
  Parquet under ``--out``.

Every user error (a bad spec, an unknown architecture, a checkpoint that does not fit, a dataset that
is not on disk) is one line and exit status 2, checked before any model runs where it can be.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from cskd_viz._cli_checks import dir_problem, fail

__all__ = ["register", "ModelSpec", "parse_teacher", "parse_student"]

SUMMARY_COLUMNS = ("student", "accuracy", "teacher_accuracy", "agreement", "cosine_distance", "mean_kl", "ece")


@dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate: its report name, architecture and checkpoint file."""

    name: str
    arch: str
    path: Path


def parse_teacher(text: str) -> ModelSpec:
    """``ARCH=PATH`` (``ValueError`` naming the flag otherwise).

    Example:
        >>> parse_teacher("resnet32x4=ckpt/teacher.pth")
        ModelSpec(name='teacher', arch='resnet32x4', path=PosixPath('ckpt/teacher.pth'))
    """
    arch, sep, path = text.partition("=")
    if not sep or not arch.strip() or not path.strip():
        raise ValueError(f"--teacher must be ARCH=PATH (e.g. resnet32x4=teacher.pth), got {text!r}")
    return ModelSpec("teacher", arch.strip(), Path(path.strip()))


def parse_student(text: str) -> ModelSpec:
    """``NAME=ARCH:PATH`` (``ValueError`` naming the flag otherwise).

    Example:
        >>> parse_student("kd=resnet8x4:runs/kd.pth")
        ModelSpec(name='kd', arch='resnet8x4', path=PosixPath('runs/kd.pth'))
    """
    name, sep, rest = text.partition("=")
    arch, colon, path = rest.partition(":")
    if not sep or not colon or not name.strip() or not arch.strip() or not path.strip():
        raise ValueError(f"--student must be NAME=ARCH:PATH (e.g. kd=resnet8x4:kd.pth), got {text!r}")
    return ModelSpec(name.strip(), arch.strip(), Path(path.strip()))


def register(sub) -> None:
    """Add the ``analyze`` sub-parser to ``sub`` (an argparse sub-parsers object)."""
    parser = sub.add_parser("analyze", help="compare students with their teacher: summary, per class, HTML report")
    parser.add_argument("--dataset", default=None, help="dataset to evaluate on (default: that of the --run runs)")
    parser.add_argument("--split", default="test", choices=("test", "train"), help="which split (default: test)")
    parser.add_argument("--teacher", default=None, metavar="ARCH=PATH", help="teacher architecture and checkpoint")
    parser.add_argument(
        "--student", action="append", default=[], metavar="NAME=ARCH:PATH", help="a student (repeat the flag)"
    )
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        dest="run_dirs",
        metavar="RUN_DIR",
        help="a student trained by cskd-viz (repeatable)",
    )
    parser.add_argument("--out", default="analysis_report", help="where report.html and the frames go")
    parser.add_argument("--temperature", type=float, default=4.0, help="T of the cosines and the KL (default: 4)")
    parser.add_argument("--t-low", type=float, default=2.0)
    parser.add_argument("--t-high", type=float, default=6.0)
    parser.add_argument("--batch-size", type=int, default=64, help="size of the random batches of c_j (default 64)")
    parser.add_argument("--top-k", type=int, default=5, help="worst classes named in the tables and figures")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="data split (if the dataset has one) and batch order (default: the --run runs' seed, else 0)",
    )
    parser.add_argument("--cache", default=None, metavar="DIR", help="cache the logits here (verified on reuse)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run_analyze)


def _specs(args, parser) -> tuple[ModelSpec | None, list[ModelSpec]]:
    try:
        teacher = parse_teacher(args.teacher) if args.teacher is not None else None
        students = [parse_student(text) for text in args.student]
    except ValueError as err:
        parser.error(str(err))
    for spec in ([teacher] if teacher else []) + students:
        if not spec.path.is_file():
            flag = "--teacher" if spec is teacher else f"--student {spec.name}"
            fail(f"{flag}: checkpoint {spec.path} is not a file")
    return teacher, students


def _from_runs(run_dirs: list[str]) -> tuple[list[ModelSpec], list[dict]]:
    """The student of every run directory, and the runs' configs (a run without weights: exit 2)."""
    from cskd_viz.runs import RunLogError, load_run

    specs, configs = [], []
    for raw in run_dirs:
        try:
            config = load_run(raw).config
        except (RunLogError, OSError) as err:
            fail(f"--run {raw}: {err}")
        weights = Path(raw) / "model.pt"
        if not weights.is_file():
            fail(
                f"--run {raw}: the run has no model.pt (only finished or interrupted runs of the trainer save one; "
                f"for your own loop give the student as --student NAME=ARCH:PATH)"
            )
        specs.append(ModelSpec(config.get("name") or Path(raw).name, str(config.get("student")), weights))
        configs.append(config)
    return specs, configs


def _teacher_of_runs(configs: list[dict]) -> ModelSpec:
    sources = {(c.get("teacher"), c.get("teacher_source") or c.get("teacher_checkpoint")) for c in configs}
    if len(sources) != 1:
        fail(f"--run: the runs have different teachers {sorted(map(str, sources))}; name one with --teacher ARCH=PATH")
    arch, source = sources.pop()
    if arch is None:
        fail("--run: the run was trained without a teacher (a teacher run); name the teacher with --teacher ARCH=PATH")
    if source is None or not Path(source).is_file():
        fail(f"--run: the run's teacher ({arch}, {source}) is not available; name it with --teacher ARCH=PATH")
    return ModelSpec("teacher", arch, Path(source))


def _dataset_of(args, configs: list[dict]) -> str:
    from cskd_viz.data import canonical_dataset_name

    named = {canonical_dataset_name(c["dataset"]) for c in configs if c.get("dataset")}
    if args.dataset is None:
        if len(named) != 1:
            fail("--dataset is required (no --run, or runs on different datasets)")
        return named.pop()
    try:
        dataset = canonical_dataset_name(args.dataset)
    except ValueError as err:
        fail(f"--dataset: {err}")
    if named - {dataset}:
        fail(f"--dataset {dataset}: the --run runs were trained on {sorted(named)}")
    return dataset


def _check_options(args, parser) -> None:
    from cskd_viz._validation import check_temperature_range, check_temperature_value

    try:
        check_temperature_value(args.temperature, "--temperature")
        check_temperature_range(args.t_low, args.t_high)
    except ValueError as err:
        parser.error(str(err))
    for flag, value in (("--batch-size", args.batch_size), ("--top-k", args.top_k)):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    for flag, path in (("--out", args.out), ("--cache", args.cache)):
        problem = dir_problem(path, flag) if path is not None else None
        if problem:
            fail(problem)


def _load(spec: ModelSpec, info, flag: str):
    from cskd_viz.models import get_model
    from cskd_viz.train import load_checkpoint

    try:
        model = get_model(spec.arch, info.num_classes, info.input_shape)
    except ValueError as err:
        fail(f"{flag}: unknown architecture: {err}")
    try:
        return load_checkpoint(model, spec.path)
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError and names the file and keys
        fail(f"{flag}: {err}")


def run_analyze(args, parser) -> int:
    """Handler of ``cskd-viz analyze`` (see the module docstring); returns the exit status."""
    teacher, students = _specs(args, parser)
    run_students, configs = _from_runs(args.run_dirs)
    students += run_students
    if not students:
        parser.error("give at least one --student NAME=ARCH:PATH or --run RUN_DIR")
    names = [s.name for s in students]
    if len(set(names)) != len(names):
        parser.error(f"student names must differ, got {names}")
    if teacher is None:
        if not configs:
            parser.error("--teacher ARCH=PATH is required (or --run RUN_DIR, whose teacher is then used)")
        teacher = _teacher_of_runs(configs)
    dataset = _dataset_of(args, configs)
    _check_options(args, parser)
    seed = args.seed if args.seed is not None else int(configs[0].get("seed", 0)) if configs else 0

    from cskd_viz.analysis import compare, predict_logits
    from cskd_viz.data import load_datasets

    try:
        train, test, info = load_datasets(dataset, seed=seed)
    except (ValueError, OSError) as err:  # not on disk: the message says where it looked and how to get it
        fail(f"--dataset {dataset}: {err}")
    data = test if args.split == "test" else train
    models = {"teacher": _load(teacher, info, "--teacher")}
    models.update({s.name: _load(s, info, f"--student {s.name}") for s in students})
    progress = not args.no_progress
    logits = {}
    for name, model in models.items():
        if progress:
            print(f"predicting {name} on {dataset} ({args.split}, {len(data)} samples)", file=sys.stderr)
        logits[name], targets = predict_logits(model, data, device=args.device, cache=args.cache, progress=progress)
    teacher_logits = logits.pop("teacher")
    report = compare(
        teacher_logits, logits, targets, class_names=list(info.class_names), temperature=args.temperature,
        t_low=args.t_low, t_high=args.t_high, batch_size=min(args.batch_size, len(data)), seed=seed,
    )  # fmt: skip
    out = Path(args.out)
    report.to_parquet(out / "frames")
    page = report.to_html(out / "report.html", k=args.top_k, title=f"CSKD distillation report: {dataset}")
    _print_summary(report, teacher, dataset, args.split)
    print(f"\nreport: {page}   frames: {out / 'frames'}")
    return 0


def _print_summary(report, teacher: ModelSpec, dataset: str, split: str) -> None:
    import pandas as pd

    worst = report.worst_classes(1).set_index("student")["class_name"]
    frame = report.summary[list(SUMMARY_COLUMNS)].assign(worst_class=lambda f: f["student"].map(worst))
    print(f"teacher {teacher.arch} ({teacher.path}) on {dataset} {split}: N = {report.settings['n_samples']}")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(frame.to_string(index=False))
