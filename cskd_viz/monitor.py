"""``Monitor``: the one way any training loop records a run that ``load_run``, ``RunBrowser`` and ``report`` read.

A plain PyTorch loop::

    with Monitor("runs/my_run", num_classes=100, config={"method": "cskd"}) as monitor:
        for step, (x, y) in enumerate(loader, start=1):
            student_logits, teacher_logits = student(x), teacher(x)
            loss = F.cross_entropy(student_logits, y) + criterion(student_logits, teacher_logits)
            ...backward, optimiser step...
            monitor.log_step(step, student_logits, teacher_logits, y, losses=loss,
                             temperatures=criterion.last_temperatures)
        monitor.log_eval(epoch, test_student_logits, test_teacher_logits, test_targets)

Steps are 1-based optimiser steps. Only every ``log_every``-th step (and step 1, and step
``total_steps`` when given) is recorded; on the other steps ``log_step`` checks that the step
moved forward and returns, without touching a tensor (so it never waits for a GPU). A recorded
step is checked and copied to the host at once (one device-to-host copy of the batch's logits);
its record is computed later together with the other steps recorded since the last write
(:mod:`cskd_viz._step_summary`: a few NumPy operations for all of them), which keeps the cost on
the training thread small. :meth:`Monitor.latest_record` gives the newest record at any time.
A record holds:

- ``loss`` (the total) and every named term as ``loss_<name>``;
- ``train_accuracy`` (with ``targets``), ``agreement`` (with ``teacher_logits``);
- the per-class cosine of batch predictions at ``temperature`` and ``cosine_distance = 1 - mean``;
- with ``temperatures``: quantiles, mean, min, max and a 12-bin histogram over
  ``[t_low, t_high]`` (:func:`cskd_viz.metrics.temperature_stats`);
- ``lr`` and ``elapsed_s`` (seconds since the monitor was created, plus ``elapsed_offset_s``).

Evaluations (:meth:`Monitor.log_eval`) take whole-split logits, or batches fed through
:meth:`Monitor.eval_update`, and record epoch-level accuracy, CE loss, agreement, teacher
accuracy and per-class cosine (:mod:`cskd_viz.metrics`).

Under ``torch.distributed`` pass ``group=`` (every rank creates a monitor and calls it on the same
steps): step losses, accuracy and agreement are averaged over the ranks' batches with one small
all-reduce per recorded step (the per-class cosine and temperatures describe rank 0's batch),
evaluations are synchronised over the ranks' batches, and only rank 0 writes files.

As a context manager the run ends ``finished``, ``interrupted`` on ``KeyboardInterrupt``, and
``failed`` on any other exception (which is re-raised). The log is written at most once per
``flush_interval_s`` from a background thread, and synchronously at :meth:`Monitor.close`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cskd_viz._step_summary import RawStep, counts_of, host_logits, host_temperatures, summarise
from cskd_viz._validation import (
    check_logits,
    check_pair,
    check_positive_int,
    check_scalar,
    check_temperature_range,
    check_temperature_value,
)
from cskd_viz.runs import EvalRecord, RunLog, StepRecord
from cskd_viz.runs.records import reason_of

__all__ = ["Monitor", "HIST_BINS"]

HIST_BINS = 12
_NAN = float("nan")
_MAX_PENDING_BYTES = 32 * 2**20  # captured steps are summarised at the latest when they hold this much


def _open_log(run_dir: Any, config: dict[str, Any], overwrite: bool, writes: bool) -> RunLog:
    """A new RunLog at ``run_dir`` (refusing to replace a run unless ``overwrite``), or the given one."""
    if isinstance(run_dir, RunLog):
        for key, value in config.items():
            run_dir.config.setdefault(key, value)
        return run_dir
    if run_dir is None or not writes:
        return RunLog(config)
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"run_dir must be a path, a RunLog or None, got {type(run_dir).__name__}")
    path = Path(run_dir)
    config.setdefault("name", path.name)
    # RunLog locks the directory first, then checks what it holds and (overwrite) clears it: a run
    # that another process is writing is refused (RunBusyError, a ValueError), never deleted.
    return RunLog(config, path=path, overwrite=overwrite)


def _named_losses(losses: Any) -> tuple[list[str], list[Any]]:
    """``(["loss", "loss_<name>", ...], values)`` from a scalar or a mapping of terms."""
    if losses is None:
        return [], []
    if not isinstance(losses, Mapping):
        return ["loss"], [losses]
    names, values = [], []
    for key, value in losses.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"losses keys must be non-empty strings, got {key!r}")
        name = key if key == "loss" or key.startswith("loss_") else f"loss_{key}"
        if value is None:
            raise TypeError(f"losses[{name!r}] must be a number or a scalar tensor, got None")
        names.append(name)
        values.append(value)
    if "loss" not in names:  # the total defaults to the sum of the terms
        names.insert(0, "loss")
        values.insert(0, None)
    return names, values


def _loss_values(names: list[str], values: list[Any]) -> list[float]:
    """The losses as floats (``None``, the total of the terms, becomes their sum); one copy from an accelerator."""
    tensors, numbers = [], []
    for name, value in zip(names, values, strict=True):
        if value is None:
            continue
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(f"losses[{name!r}] must be a scalar, got a tensor of shape {tuple(value.shape)}")
            value = value.detach()
            tensors.append(value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
            raise TypeError(f"losses[{name!r}] must be a number or a scalar tensor, got {type(value).__name__}")
        numbers.append(value)
    if tensors and any(t.device.type != "cpu" for t in tensors):
        host = iter(torch.stack([t.reshape(()).float() for t in tensors]).tolist())  # one synchronisation
        numbers = [next(host) if isinstance(v, Tensor) else float(v) for v in numbers]
    else:
        numbers = [float(v) for v in numbers]
    if names and values[0] is None:
        numbers.insert(0, sum(numbers))
    return numbers


class Monitor:
    """Record a training run from any loop (see the module docstring).

    Args:
        run_dir: the run directory to create (refused if it holds a run, unless ``overwrite``);
            ``None`` for an in-memory log; or an existing :class:`~cskd_viz.runs.RunLog` to record into.
        num_classes: ``C``; every logit tensor must be ``(B, C)``.
        log_every: record every this many steps (and step 1, and ``total_steps``).
        temperature: ``T`` of the per-class cosine and ``d(T)``.
        t_low, t_high: the range of the temperature histogram (the CSWT range).
        config: anything JSON-able to keep in ``config.json`` (e.g. ``{"method": "cskd"}``).
        class_names: ``C`` names, kept in the config for plots and reports.
        total_steps: the last step, recorded whatever ``log_every`` says.
        flush_interval_s: write the log at most this often while training (0: at every record).
        overwrite: replace a run already at ``run_dir``.
        group: a ``torch.distributed`` process group whose ranks all call this monitor.
        elapsed_offset_s: seconds of training done before this monitor was created, added to every
            ``elapsed_s`` (a resumed run passes its earlier segments' time, so ``elapsed_s`` is the
            total training time).

    Example:
        >>> monitor = Monitor(None, num_classes=3, log_every=2)
        >>> z = torch.randn(8, 3)
        >>> for step in (1, 2, 3):
        ...     monitor.log_step(step, z, z, losses=0.5)
        >>> monitor.latest_record().step
        2
        >>> monitor.close(); monitor.run_log.steps[["step", "loss", "cosine_distance"]].values.tolist()
        [[1.0, 0.5, 0.0], [2.0, 0.5, 0.0]]
    """

    def __init__(
        self,
        run_dir: str | os.PathLike | RunLog | None,
        num_classes: int,
        *,
        log_every: int = 10,
        temperature: float = 4.0,
        t_low: float = 2.0,
        t_high: float = 6.0,
        config: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        total_steps: int | None = None,
        flush_interval_s: float = 1.0,
        overwrite: bool = False,
        group: Any = None,
        elapsed_offset_s: float = 0.0,
    ) -> None:
        offset = check_scalar(elapsed_offset_s, "elapsed_offset_s", positive=False)
        if offset < 0:
            raise ValueError(f"elapsed_offset_s must be >= 0, got {elapsed_offset_s!r}")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.log_every = check_positive_int(log_every, "log_every")
        self.total_steps = check_positive_int(total_steps, "total_steps", allow_none=True)
        self.temperature = check_temperature_value(temperature, "temperature")
        self.t_low, self.t_high = check_temperature_range(t_low, t_high)
        self.flush_interval_s = check_scalar(flush_interval_s, "flush_interval_s", positive=False)
        if self.flush_interval_s < 0:
            raise ValueError(f"flush_interval_s must be >= 0, got {flush_interval_s!r}")
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping or None, got {type(config).__name__}")
        names = None
        if class_names is not None:
            names = [str(name) for name in class_names]
            if len(names) != num_classes:
                raise ValueError(f"class_names has {len(names)} names, num_classes is {num_classes}")
        self.group = group
        self.world, self.rank = self._group_size_and_rank(group)
        defaults = {
            "method": "custom",
            "num_classes": num_classes,
            "log_every": log_every,
            "diagnostic_temperature": self.temperature,
            "t_low": self.t_low,
            "t_high": self.t_high,
            "class_names": names,
        }
        self.run_log = _open_log(run_dir, {**defaults, **dict(config or {})}, overwrite, writes=self.rank == 0)
        self._eval = _EvalMetrics(num_classes, self.temperature, group)
        self._last_step = 0
        self._epoch = 0
        self._closed = False
        self._pending: list[RawStep] = []
        self._pending_bytes = 0
        self._latest: StepRecord | None = None
        self._start = self._last_flush = time.perf_counter()
        self._offset = offset

    @property
    def elapsed_s(self) -> float:
        """Seconds since this monitor was created, plus ``elapsed_offset_s`` (what a step recorded now gets)."""
        return self._offset + time.perf_counter() - self._start

    @staticmethod
    def _group_size_and_rank(group: Any) -> tuple[int, int]:
        if group is None:
            return 1, 0
        from cskd_viz.distributed import get_rank, get_world_size

        return get_world_size(group), get_rank(group)

    # ------------------------------------------------------------------ steps
    def will_log(self, step: int) -> bool:
        """Whether :meth:`log_step` records ``step`` (a loop can skip extra work on other steps)."""
        return step == 1 or step % self.log_every == 0 or step == self.total_steps

    def log_step(
        self,
        step: int,
        student_logits: Tensor,
        teacher_logits: Tensor | None = None,
        targets: Tensor | None = None,
        *,
        losses: Any = None,
        epoch: int | None = None,
        temperatures: Tensor | None = None,
        lr: float | None = None,
    ) -> None:
        """Record step ``step`` if it is due (see :meth:`will_log`).

        A recorded step is checked and copied to the host at once; its record (see the module
        docstring) is computed with the other steps recorded since the last write, at the next write
        (at most every ``flush_interval_s``), :meth:`latest_record`, :meth:`log_eval` or :meth:`close`.

        Args:
            step: the 1-based optimiser step; must increase from call to call.
            student_logits: ``(B, C)``. ``teacher_logits``: ``(B, C)`` or ``None`` (no teacher).
            targets: ``(B,)`` integer labels, or ``None``.
            losses: the loss (a scalar tensor or number) or a mapping of named terms; the entry
                ``"loss"`` is the total (the sum of the others when missing), other names are
                recorded as ``loss_<name>``.
            epoch: the 0-based epoch (the last one given by default).
            temperatures: ``(B,)`` CSWT temperatures the loss used (e.g. ``CSKDLoss.last_temperatures``).
            lr: the learning rate.
        """
        self._check_open()
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        if step <= self._last_step:
            raise ValueError(f"step must increase: got step {step} after step {self._last_step}")
        if epoch is not None:
            self._epoch = self._checked_epoch(epoch)
        if not self.will_log(step):
            self._last_step = step
            return
        raw = self._capture(step, student_logits, teacher_logits, targets, losses, temperatures, lr)
        self._last_step = step  # a refused step can be logged again
        if self.world > 1:  # a collective, in step order on every rank
            raw.counts, raw.losses = self._reduced(counts_of(raw), raw.losses)
        self._pending.append(raw)
        self._pending_bytes += raw.nbytes
        if self._pending_bytes > _MAX_PENDING_BYTES:
            self._summarise()
        self._maybe_flush()

    def latest_record(self, summarise: bool = True) -> StepRecord | None:
        """The record of the newest recorded step (``None`` before the first).

        Args:
            summarise: compute the pending steps' records first (``False``: the newest record already
                computed, which costs nothing; a progress bar's choice).
        """
        if summarise:
            self._summarise()
        return self._latest

    @staticmethod
    def _checked_epoch(epoch: Any) -> int:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        return epoch

    def _check_logits(self, student_logits: Any, teacher_logits: Any, targets: Any) -> None:
        """Shape and dtype checks (no pass over the values: finiteness is read off the results)."""
        for name, value in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
            if value is None and name == "teacher_logits":
                continue
            if not isinstance(value, Tensor) or not value.is_floating_point() or value.dim() != 2:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"{name} must be a floating (B, C) tensor, got {shape}")
            if value.shape[1] != self.num_classes or value.shape[0] == 0:
                raise ValueError(
                    f"{name} must have shape (B, {self.num_classes}) with B >= 1 (num_classes={self.num_classes}), "
                    f"got {tuple(value.shape)}"
                )
        if teacher_logits is not None and teacher_logits.shape != student_logits.shape:
            raise ValueError(
                f"teacher_logits must have the shape of student_logits {tuple(student_logits.shape)}, "
                f"got {tuple(teacher_logits.shape)}"
            )
        if targets is not None:
            if not isinstance(targets, Tensor) or targets.is_floating_point() or targets.dtype == torch.bool:
                raise TypeError("targets must be an integer tensor of class indices (B,)")
            if targets.shape != student_logits.shape[:1]:
                raise ValueError(f"targets must have shape ({student_logits.shape[0]},), got {tuple(targets.shape)}")

    def _capture(self, step, student_logits, teacher_logits, targets, losses, temperatures, lr) -> RawStep:
        """Check one step's input and copy it to the host (errors name the argument, at once)."""
        self._check_logits(student_logits, teacher_logits, targets)
        names, values = _named_losses(losses)
        loss_values = _loss_values(names, values)
        student, teacher = host_logits(student_logits, teacher_logits)
        labels = np.array(targets.detach().cpu().numpy(), dtype=np.int64) if targets is not None else None
        if labels is not None and labels.size and not (0 <= labels.min() and labels.max() < self.num_classes):
            raise ValueError(
                f"targets must be class indices in [0, {self.num_classes}) (num_classes), "
                f"got values from {labels.min()} to {labels.max()}"
            )
        temps = host_temperatures(temperatures, student.shape[0]) if temperatures is not None else None
        lr = _NAN if lr is None else float(lr)
        elapsed = self.elapsed_s
        return RawStep(step, self._epoch, names, loss_values, student, teacher, labels, temps, lr, elapsed)

    def _summarise(self) -> None:
        """Compute the records of the pending steps and hand them to the run log."""
        if not self._pending:
            return
        records = summarise(self._pending, self.temperature, self.t_low, self.t_high, HIST_BINS)
        self._pending, self._pending_bytes = [], 0  # only once their records exist
        if self.rank == 0:
            for record in records:
                self.run_log.log_step(record)
        self._latest = records[-1]

    def _reduced(self, counts: list, loss_values: list[float]) -> tuple[list, list[float]]:
        """Counts summed and losses ``n``-weighted over the group's ranks (one all-reduce)."""
        from cskd_viz.distributed import all_reduce_sum

        n = counts[0]
        placeholders = [c != c for c in counts]  # NaN: no targets / no teacher on this step
        local = [0.0 if empty else c for c, empty in zip(counts, placeholders, strict=True)]
        local = torch.tensor([*local, *(v * n for v in loss_values)], dtype=torch.float64)
        device = torch.device("cuda", torch.cuda.current_device()) if _uses_nccl(self.group) else None
        summed = all_reduce_sum(local.to(device), self.group).tolist()
        total = summed[0]
        counts = [_NAN if empty else summed[i] for i, empty in enumerate(placeholders)]
        return counts, [v / total for v in summed[3:]]

    def _maybe_flush(self) -> None:
        now = time.perf_counter()
        if now - self._last_flush >= self.flush_interval_s:
            self._summarise()
            if self.rank == 0:
                self.run_log.flush(background=True)
            self._last_flush = now

    # ------------------------------------------------------------------ evaluation
    def eval_update(self, student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor) -> None:
        """Add one evaluation batch: ``(B, C)`` logits (teacher ``None`` without a teacher), ``(B,)`` targets."""
        self._check_open()
        if targets is None:
            raise ValueError("targets are required for an evaluation (accuracy and CE loss)")
        self._check_logits(student_logits, teacher_logits, targets)
        if targets.numel():
            low, high = torch.aminmax(targets.detach())
            if not (0 <= int(low) and int(high) < self.num_classes):
                raise ValueError(
                    f"targets must be class indices in [0, {self.num_classes}) (num_classes), "
                    f"got values from {int(low)} to {int(high)}"
                )
        self._eval.update(student_logits, teacher_logits, targets)

    def log_eval(
        self,
        epoch: int,
        student_logits: Tensor | None = None,
        teacher_logits: Tensor | None = None,
        targets: Tensor | None = None,
        *,
        step: int | None = None,
        split: str = "test",
    ) -> EvalRecord:
        """Record one evaluation: of the given whole-split logits, or of the :meth:`eval_update` batches.

        Returns:
            The :class:`~cskd_viz.runs.EvalRecord`: ``accuracy``, ``loss`` (CE), ``agreement``,
            ``cosine_distance`` (epoch-level ``d(T)``), ``teacher_accuracy`` and per-class cosines.
        """
        self._check_open()
        epoch = self._checked_epoch(epoch)
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise ValueError(f"step must be a non-negative int or None, got {step!r}")
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string, got {split!r}")
        self._summarise()
        if student_logits is not None:
            self.eval_update(student_logits, teacher_logits, targets)
        elif not self._eval.updated:
            raise ValueError("log_eval needs logits: pass student_logits and targets, or call eval_update first")
        metrics, class_cosine = self._eval.compute_and_reset()
        record = EvalRecord(epoch, self._last_step if step is None else step, metrics, split, class_cosine)
        self._epoch = max(self._epoch, epoch)
        if self.rank == 0:
            self.run_log.log_eval(record)
            self._maybe_flush()
        return record

    # ------------------------------------------------------------------ end
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this Monitor is closed (status {self.run_log.status!r}): start a new one")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, status: str = "finished", reason: str | None = None) -> None:
        """Write the log with its final status (``finished``, ``interrupted`` or ``failed``) and, if
        given, the ``reason`` it ended so (kept in ``config.json``); later calls do nothing."""
        if self._closed:
            return
        if status not in ("finished", "interrupted", "failed"):
            raise ValueError(f"status must be 'finished', 'interrupted' or 'failed', got {status!r}")
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"reason must be a str or None, got {type(reason).__name__}")
        self._closed = True
        try:
            self._summarise()
        except Exception as err:  # noqa: BLE001 - the log is written with what it has; the error is not lost
            status, reason = "failed", reason or reason_of(err, limit=200)
            raise
        finally:
            self._finish(status, reason)

    def _finish(self, status: str, reason: str | None = None) -> None:
        if self._last_step > self.run_log.progress["step"]:
            self.run_log.set_progress(self._last_step, self._epoch)
        if self.rank == 0:
            self.run_log.finish(status, reason=reason)
        else:
            self.run_log.status, self.run_log.reason = status, reason

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("interrupted", reason="KeyboardInterrupt")
        else:
            try:
                self.close("failed", reason=reason_of(exc, limit=200))
            except Exception:  # noqa: BLE001 - never mask the exception that ended the run
                pass
        return False

    def __repr__(self) -> str:
        return f"Monitor({self.run_log!r}, log_every={self.log_every})"


def _uses_nccl(group: Any) -> bool:
    import torch.distributed as dist

    return dist.get_backend(group) == "nccl"


class _EvalMetrics:
    """The metrics of one evaluation: CE, accuracy, agreement and per-class cosine, over batches."""

    def __init__(self, num_classes: int, temperature: float, group: Any) -> None:
        self.num_classes, self.temperature, self.group = num_classes, temperature, group
        self.updated = self.with_teacher = False
        self._metrics: tuple | None = None

    def _make(self):
        from cskd_viz.metrics import Agreement, PerClassCosine, _Totals

        options = {"sync_on_compute": self.group is not None, "process_group": self.group}
        cosine = PerClassCosine(self.num_classes, self.temperature, **options)
        self._metrics = (_Totals(2, **options), Agreement(**options), cosine)

    def update(self, student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor) -> None:
        if self._metrics is None:
            self._make()
        totals, agreement, cosine = self._metrics
        s = student_logits.detach()
        # Values first (one read), so that no metric takes a batch another one then refuses.
        if teacher_logits is not None:
            check_pair(s, teacher_logits, targets)
        else:
            check_logits(s, "student_logits")
        ce = F.cross_entropy(s.float(), targets.to(s.device), reduction="sum")
        correct = (s.argmax(1) == targets.to(s.device)).sum()
        totals.update(torch.stack([ce.double(), correct.double()]), s.shape[0])
        if teacher_logits is not None:
            agreement.update(s, teacher_logits, targets)
            cosine.update(s, teacher_logits)
            self.with_teacher = True
        self.updated = True

    def compute_and_reset(self) -> tuple[dict[str, float], list[float] | None]:
        totals, agreement, cosine = self._metrics
        (ce_sum, correct), n = totals.compute()
        metrics = {"accuracy": correct / n, "agreement": _NAN, "loss": ce_sum / n, "cosine_distance": _NAN}
        metrics["teacher_accuracy"] = _NAN
        class_cosine = None
        if self.with_teacher:
            result = agreement.compute()
            per_class = cosine.compute()
            class_cosine = per_class.tolist()
            metrics.update(
                agreement=result["agreement"],
                cosine_distance=float(1.0 - per_class.mean()),
                teacher_accuracy=result["teacher_accuracy"],
            )
        for metric in self._metrics:
            metric.reset()
        self.updated = self.with_teacher = False
        return metrics, class_cosine
