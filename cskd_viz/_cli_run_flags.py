"""The flags that describe one run (a :class:`~cskd_viz.train.RunConfig`), shared by every command that
trains: ``cskd-viz train`` and the base config of ``cskd-viz sweep`` / ``cskd-viz search``.

Light on purpose (argparse only): ``cskd-viz --help`` and flag errors import no torch.
"""

from __future__ import annotations

import argparse

__all__ = ["DIST_TIMEOUT_HELP", "add_run_flags", "run_config_from_args"]

DIST_TIMEOUT_HELP = (
    "under torchrun: seconds a process waits for the others at the rendezvous (e.g. a peer that never "
    "started) before it gives up with an error (default: 60); later collectives keep torch's default"
)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Add the run-config flags (dataset, models, method, temperatures, budget, optimiser, where it goes)."""
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--student", default="cnn_small")
    parser.add_argument("--teacher", default="cnn_large", help="teacher architecture, or 'none' to train with CE alone")
    parser.add_argument("--teacher-checkpoint", default=None, help="{'model': state_dict} file for --teacher")
    parser.add_argument("--teacher-epochs", type=int, default=20, help="epochs of an auto-trained teacher")
    parser.add_argument("--method", default="cskd_cswt", help="ce, kd, cskd, cskd_cswt or dist (default: cskd_cswt)")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--t-low", type=float, default=2.0)
    parser.add_argument("--t-high", type=float, default=6.0)
    parser.add_argument("--w-ce", type=float, default=1.0)
    parser.add_argument("--w-kd", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=None, help="epoch budget (default 10 without --max-steps)")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--schedule", default="cosine", choices=("cosine", "step", "constant"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--name", default=None)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--dist-timeout", type=float, default=60.0, metavar="SECONDS", help=DIST_TIMEOUT_HELP)
    parser.add_argument(
        "--global-batch",
        action="store_true",
        help="under torchrun: CSKD on the global batch of all processes (default: each process's own batch)",
    )


def run_config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The :class:`~cskd_viz.train.RunConfig` of the run flags (a bad value: argparse-style exit 2)."""
    from cskd_viz.train import RunConfig, resolve_device

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
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    return config
