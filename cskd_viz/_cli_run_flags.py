"""The flags that describe one run (a :class:`~cskd_viz.train.RunConfig`), shared by every command that
trains: ``cskd-viz train`` and the base config of ``cskd-viz sweep`` / ``cskd-viz search``.

Light on purpose (argparse only): ``cskd-viz --help`` and flag errors import no torch.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["DIST_TIMEOUT_HELP", "add_run_flags", "run_config_values", "run_config_from_args"]

DIST_TIMEOUT_HELP = (
    "under torchrun: seconds a process waits for the others at the rendezvous (e.g. a peer that never "
    "started) before it gives up with an error (default: 60); later collectives keep torch's default"
)


# flag dest -> (RunConfig field, default shown in the help). Every run-config flag parses to None when
# it is not given, so that a --recipe's value can be told from an explicit flag (which wins).
_FIELDS = {
    "dataset": "digits",
    "student": "cnn_small",
    "teacher": "cnn_large",
    "teacher_checkpoint": None,
    "teacher_epochs": 20,
    "method": "cskd_cswt",
    "temperature": 4.0,
    "t_low": 2.0,
    "t_high": 6.0,
    "w_ce": 1.0,
    "w_kd": 1.0,
    "epochs": None,
    "max_steps": None,
    "batch_size": 64,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "lr_milestones": None,
    "seed": 0,
    "log_every": 10,
    "name": None,
    "device": "cpu",
    "global_batch": False,
    "num_workers": 0,
    "amp": False,
    "checkpoint_every": 10,
}


def _milestones(text: str) -> tuple[int, ...]:
    """``--lr-milestones 150,180,210`` -> ``(150, 180, 210)``."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs such as 150,180,210, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs such as 150,180,210, got {text!r}")
    return values


def _option_value(text: str) -> bool | int | float | str | None:
    """A ``--method-option`` value: ``true``/``false`` (any case), ``null`` (None), an int, a float, else the text.

    ``none`` stays the text ``"none"`` (e.g. ``masks=none``, a mode of ``cskd_published``); ``null`` is ``None``.
    """
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        return value
    return text


def _method_option(text: str) -> tuple[str, bool | int | float | str | None]:
    """``--method-option masks=none`` -> ``("masks", "none")``; ``strong_view=false`` -> ``("strong_view", False)``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as masks=none or strong_view=false, got {text!r}")
    return key, _option_value(value.strip())


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Add the run-config flags (recipe, dataset, models, method, temperatures, budget, optimiser, where it goes).

    A flag that is not given parses to ``None`` and means the ``--recipe``'s value, else the default in its help.
    """

    def add(flag: str, help: str | None = None, **options) -> None:
        dest = flag[2:].replace("-", "_")
        default = _FIELDS.get(dest)
        shown = f"(default: {default})" if default is not None and options.get("action") != "store_true" else ""
        text = " ".join(part for part in (help, shown) if part) or None
        parser.add_argument(flag, default=None, help=text, **options)

    parser.add_argument(
        "--recipe",
        default=None,
        metavar="NAME",
        help="start from a named recipe (e.g. cifar100/res32x4_res8x4; 'list' shows them); flags given override it",
    )
    add("--dataset")
    add("--student")
    add("--teacher", "teacher architecture, or 'none' to train with CE alone")
    add("--teacher-checkpoint", "{'model': state_dict} file for --teacher")
    add("--teacher-epochs", "epochs of an auto-trained teacher", type=int)
    add("--method", "ce, kd, cskd, cskd_cswt, dist, ...")
    add("--temperature", type=float)
    add("--t-low", type=float)
    add("--t-high", type=float)
    add("--w-ce", type=float)
    add("--w-kd", type=float)
    add("--epochs", "epoch budget (default 10 without --max-steps)", type=int)
    add("--max-steps", type=int)
    add("--batch-size", type=int)
    add("--lr", type=float)
    add("--momentum", "SGD momentum", type=float)
    add("--weight-decay", "SGD weight decay", type=float)
    add("--schedule", "per-step LR schedule", choices=("cosine", "step", "constant"))
    add(
        "--lr-milestones",
        "epochs at whose start the LR is multiplied by 0.1, e.g. 150,180,210 (implies --schedule step)",
        type=_milestones,
        metavar="E1,E2,...",
    )
    add("--seed", type=int)
    add("--log-every", type=int)
    parser.add_argument("--runs-dir", default="runs")
    add("--name")
    add("--device", "cpu, cuda or auto")
    parser.add_argument("--dist-timeout", type=float, default=60.0, metavar="SECONDS", help=DIST_TIMEOUT_HELP)
    add(
        "--global-batch",
        "under torchrun: CSKD on the global batch of all processes (default: each process's own batch)",
        action="store_true",
    )
    add("--num-workers", "DataLoader worker processes (the batches are the same for every value)", type=int)
    add("--amp", "mixed precision: bf16 autocast on CPU (and CUDA with bf16), else fp16 + GradScaler",
        action="store_true")  # fmt: skip
    add("--checkpoint-every", "a training checkpoint every this many epochs, and at the end", type=int)
    _add_method_option(parser)


def _add_method_option(parser: argparse.ArgumentParser) -> None:
    """``--method-option KEY=VALUE`` (repeatable): ``RunConfig.method_options``, over a ``--recipe``'s."""
    parser.add_argument(
        "--method-option",
        action="append",
        default=None,
        type=_method_option,
        metavar="KEY=VALUE",
        help="a parameter of the method that has no flag of its own (repeatable; over a --recipe's), e.g. "
        "masks=none, strong_view=false, cc=false, corr_temperature=4 (cskd_published) or beta=2 (dist); "
        "values: true/false, null (None), numbers, else text (masks=none is the text 'none')",
    )


def _recipe(name: str | None, parser: argparse.ArgumentParser) -> dict:
    """The ``--recipe``'s RunConfig overrides (``{}`` without one); ``--recipe list`` prints them and exits 0."""
    if name is None:
        return {}
    try:
        from cskd_viz import recipes
    except ImportError as err:  # pragma: no cover - the module ships with the package
        parser.error(f"--recipe: recipes are not available ({err})")
    if name == "list":
        print(recipes.describe_recipes())
        raise SystemExit(0)
    try:
        return dict(recipes.get_recipe(name))
    except ValueError as err:
        parser.error(f"--recipe: {err}")


def run_config_values(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The RunConfig keyword arguments of the run flags: the defaults, then ``--recipe``, then the flags given."""
    given = {dest: getattr(args, dest) for dest in _FIELDS if getattr(args, dest, None) is not None}
    recipe = _recipe(getattr(args, "recipe", None), parser)
    if "method" in given and given["method"] != recipe.get("method", given["method"]):
        recipe.pop("method_options", None)  # the recipe's options are its own method's parameters
    options = dict(getattr(args, "method_option", None) or ())
    if options:
        given["method_options"] = {**recipe.get("method_options", {}), **options}
    values = {**{k: v for k, v in _FIELDS.items() if k not in ("epochs", "max_steps")}, **recipe, **given}
    if isinstance(values["teacher"], str) and values["teacher"].lower() in ("none", ""):
        values["teacher"] = None
    if "epochs" not in values and "max_steps" not in values:
        values["epochs"] = 10
    values.setdefault("epochs", None)  # --max-steps alone: that many steps
    if "lr_milestones" in given and "schedule" not in given:
        values["schedule"] = "step"
    elif "schedule" in given and given["schedule"] != "step" and "lr_milestones" not in given:
        values["lr_milestones"] = None  # the recipe's milestones belong to its step schedule
    return values


def run_config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The :class:`~cskd_viz.train.RunConfig` of the run flags (a bad value: argparse-style exit 2)."""
    from cskd_viz.train import RunConfig, resolve_device

    values = run_config_values(args, parser)
    try:
        config = RunConfig(**values)
        resolve_device(config.device)
    except (ValueError, TypeError) as err:
        text = str(err)
        if getattr(args, "method_option", None) and text.startswith("method_options"):
            text = f"--method-option: {text}"  # an unknown key or a bad value (the method's own check)
        parser.error(text)
    return config
