"""``CSKDMonitorCallback``: record a Lightning run with :class:`cskd_viz.Monitor`.

Return the logits from your ``LightningModule`` steps::

    def training_step(self, batch, batch_idx):
        x, y = batch
        student_logits = self.student(x)
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        loss = F.cross_entropy(student_logits, y) + self.criterion(student_logits, teacher_logits)
        return {"loss": loss, "student_logits": student_logits, "teacher_logits": teacher_logits,
                "targets": y, "temperatures": self.criterion.last_temperatures}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        return {"student_logits": self.student(x), "teacher_logits": self.teacher(x), "targets": y}

    trainer = lightning.Trainer(callbacks=[CSKDMonitorCallback("runs/my_run", num_classes=100)])

Training steps are recorded at Lightning's ``global_step`` (optimiser steps; with gradient
accumulation only the batch that steps is recorded), with the first optimiser's learning rate.
Validation batches are fed to the monitor and become one evaluation at the end of each
validation epoch (not during the sanity check). The run ends ``finished`` when fitting ends,
``interrupted`` on Ctrl-C and ``failed`` on any other exception. Under DDP every rank records
(losses and accuracies averaged over ranks, evaluations synchronised) and rank 0 writes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'cskd_viz.integrations.lightning needs Lightning: pip install "cskd-viz[lightning]" (or lightning>=2.2)'
    ) from error

from cskd_viz.monitor import Monitor

__all__ = ["CSKDMonitorCallback"]

_KEYS = ("student_key", "teacher_key", "targets_key", "losses_key", "temperatures_key", "loss_key")


class CSKDMonitorCallback(Callback):
    """A Lightning ``Callback`` feeding a :class:`~cskd_viz.Monitor` from what the steps return.

    Args:
        run_dir: the run directory (see :class:`~cskd_viz.Monitor`).
        num_classes: ``C``.
        student_key, teacher_key, targets_key: keys of the ``(B, C)`` logits and ``(B,)`` targets
            in the dicts ``training_step`` and ``validation_step`` return.
        losses_key: optional key of a dict of named loss terms (recorded as ``loss_<name>``).
        temperatures_key: optional key of the ``(B,)`` CSWT temperatures.
        loss_key: key of the total loss (Lightning's own ``"loss"``).
        eval_split: the split name of the evaluations (``"test"``, the one run summaries and
            ``cskd-viz report`` read).
        **monitor_options: keyword arguments of :class:`~cskd_viz.Monitor` (``log_every``,
            ``temperature``, ``config``, ``class_names``, ``overwrite``, ...).

    Attributes:
        monitor: the :class:`~cskd_viz.Monitor` of the current fit (``None`` before it starts).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        num_classes: int,
        *,
        student_key: str = "student_logits",
        teacher_key: str = "teacher_logits",
        targets_key: str = "targets",
        losses_key: str = "losses",
        temperatures_key: str = "temperatures",
        loss_key: str = "loss",
        eval_split: str = "test",
        **monitor_options: Any,
    ) -> None:
        super().__init__()
        keys = (student_key, teacher_key, targets_key, losses_key, temperatures_key, loss_key)
        for name, key in zip(_KEYS, keys, strict=True):
            if not isinstance(key, str) or not key:
                raise ValueError(f"{name} must be a non-empty string, got {key!r}")
        self.run_dir, self.num_classes, self.monitor_options = run_dir, num_classes, monitor_options
        self.keys = dict(zip(_KEYS, keys, strict=True))
        self.eval_split = eval_split
        self.monitor: Monitor | None = None
        self._last_step = 0
        self._validated = False

    # ------------------------------------------------------------------ lifecycle
    def on_fit_start(self, trainer, pl_module) -> None:
        group = None
        if trainer.world_size > 1:
            from cskd_viz.distributed import default_group

            group = default_group()
        options = {"total_steps": _total_steps(trainer), **self.monitor_options}
        config = {"framework": "lightning", "max_epochs": trainer.max_epochs, **dict(options.pop("config", None) or {})}
        self.monitor = Monitor(self.run_dir, self.num_classes, config=config, group=group, **options)
        self._last_step = 0

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self.monitor.close("finished")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.close("interrupted" if isinstance(exception, KeyboardInterrupt) else "failed")

    # ------------------------------------------------------------------ training
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.monitor is None or step <= self._last_step:  # accumulating gradients: no optimiser step yet
            return
        self._last_step = step
        out = self._outputs(outputs, "training_step")
        keys = self.keys
        losses = out.get(keys["losses_key"])
        total = out.get(keys["loss_key"])
        if losses is not None and not isinstance(losses, Mapping):
            raise ValueError(f"training_step's {keys['losses_key']!r} must be a dict of named loss terms")
        named = {"loss": total, **(losses or {})} if total is not None else losses
        self.monitor.log_step(
            step,
            out[keys["student_key"]],
            out.get(keys["teacher_key"]),
            out.get(keys["targets_key"]),
            losses=named,
            epoch=trainer.current_epoch,
            temperatures=out.get(keys["temperatures_key"]),
            lr=_learning_rate(trainer),
        )

    # ------------------------------------------------------------------ validation
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.monitor is None or trainer.sanity_checking:
            return
        out = self._outputs(outputs, "validation_step")
        keys = self.keys
        if keys["targets_key"] not in out:
            raise ValueError(f"validation_step must return the targets under {keys['targets_key']!r}")
        self.monitor.eval_update(out[keys["student_key"]], out.get(keys["teacher_key"]), out[keys["targets_key"]])
        self._validated = True

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.monitor is None or trainer.sanity_checking or not self._validated:
            return
        self._validated = False
        self.monitor.log_eval(trainer.current_epoch, step=trainer.global_step, split=self.eval_split)

    def _outputs(self, outputs: Any, hook: str) -> Mapping:
        student_key = self.keys["student_key"]
        if not isinstance(outputs, Mapping) or student_key not in outputs:
            got = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise ValueError(
                f"{hook} must return a dict with the student logits under {student_key!r} "
                f"(and {self.keys['teacher_key']!r}, {self.keys['targets_key']!r}) for CSKDMonitorCallback, got {got}"
            )
        return outputs


def _total_steps(trainer) -> int | None:
    try:
        total = trainer.estimated_stepping_batches
    except Exception:  # noqa: BLE001 - only a hint: the last step is then recorded if log_every divides it
        return None
    return int(total) if isinstance(total, (int, float)) and 0 < total < float("inf") else None


def _learning_rate(trainer) -> float | None:
    optimizers = trainer.optimizers
    return float(optimizers[0].param_groups[0]["lr"]) if optimizers else None
