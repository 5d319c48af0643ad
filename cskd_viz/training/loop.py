"""The training loop behind :func:`train_teacher` and :func:`distill`, recorded through :class:`cskd_viz.Monitor`.

A step is forward, loss, backward and the optimiser step. On a step that is not logged, the only
host-device synchronisation is the losses' input check (one read-back); the divergence check adds none.
Every ``log_every`` steps (and the first and last) the step goes to the run's
:class:`~cskd_viz.monitor.Monitor`, whose :class:`~cskd_viz.runs.StepRecord` reaches the callbacks;
each epoch ends with an evaluation (:meth:`Monitor.log_eval`) when there is a test loader.

**Stopping.** A ``stop_event`` (``threading.Event``) set by another thread or by a callback ends
the run after the current step with status ``"interrupted"``. A ``KeyboardInterrupt`` (Ctrl-C, or
*Interrupt kernel* in Jupyter) also saves the run log with status ``"interrupted"``; it is then
re-raised by default (``raise_on_interrupt=False`` returns the log instead).

**Data parallelism** (``torchrun``, see ``docs/distributed.md``): with ``N > 1`` ranks the
training loader is sharded (:func:`~cskd_viz.distributed.shard_loader`), the model wrapped in
``DistributedDataParallel``, ``global_batch=True`` passes the default group to the method, the
test set is split exactly across the ranks (:func:`~cskd_viz.distributed.shard_eval_loader`) and
the monitor reduces over all ranks; rank 0 alone shows a bar, calls callbacks and writes files.
Ranks agree on stopping at logged steps and epoch ends.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, SequentialSampler

from cskd_viz._termination import Terminated, deferred_termination, pending_termination, raise_pending_termination
from cskd_viz._validation import MAX_ABS_LOGIT
from cskd_viz.distributed import (
    any_rank,
    default_group,
    get_rank,
    get_world_size,
    process_device,
    resolve_device,
    shard_eval_loader,
    shard_loader,
)
from cskd_viz.methods import Method, get_method, method_names, total_loss
from cskd_viz.monitor import Monitor
from cskd_viz.runs import EvalRecord, RunLog
from cskd_viz.runs.records import reason_of
from cskd_viz.training import checkpointing
from cskd_viz.training.callbacks import Hooks
from cskd_viz.training.checkpointing import Checkpointing, as_checkpointing
from cskd_viz.training.checkpoints import save_checkpoint
from cskd_viz.training.faults import FiniteWatch, TrainingDiverged, add_note, nonfinite_parameters
from cskd_viz.training.precision import Precision
from cskd_viz.training.settings import TrainSettings, check_train_loader, check_trainer_inputs, lr_factor
from cskd_viz.training.teacher_cache import TeacherLogitCache, data_augmented, with_indices
from cskd_viz.training.two_views import TwoViewModel, check_cache, two_view_loader

__all__ = ["train_teacher", "distill"]


class _Trainer:
    """One training run (teacher or student). Internal: use train_teacher / distill."""

    def __init__(
        self,
        model: nn.Module,
        teacher: nn.Module | None,
        method: Method,
        loaders: tuple[DataLoader, DataLoader | None],
        settings: TrainSettings,
        *,
        info: Any = None,
        callbacks: Sequence[Any] = (),
        stop_event: threading.Event | None = None,
        run_log: RunLog | None = None,
        model_path: str | os.PathLike | None = None,
        checkpoints: Checkpointing | None = None,
    ) -> None:
        train_loader, test_loader = loaders
        check_trainer_inputs(model, teacher, method, train_loader, test_loader, stop_event)
        self.settings, self.method, self.stop_event = settings, method, stop_event
        self.model_path = Path(model_path) if model_path is not None else None
        self.device = process_device(resolve_device(settings.device))
        self.world = get_world_size()
        self.rank = get_rank()
        self.main = self.rank == 0
        self.group = self._loss_group()
        self.two_views = bool(getattr(method, "two_views", False))  # batches (x_weak, x_strong, y): two_views.py
        if self.two_views:
            train_loader = two_view_loader(train_loader)
        check_train_loader(method, train_loader, global_batch=self.group is not None, world_size=self.world)
        if self.world > 1:
            train_loader = shard_loader(train_loader, seed=settings.seed or 0)
            test_loader = shard_eval_loader(test_loader) if test_loader is not None else None
        self.train_loader, self.test_loader = train_loader, test_loader
        self.n_epochs, self.total_steps = settings.total_steps(len(train_loader))
        self.model = model.to(self.device)
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        self.precision = Precision(self.device, settings.amp, self.model)
        milestones = settings.lr_milestones
        per_epoch = len(train_loader)
        steps = [m * per_epoch for m in milestones] if milestones is not None else None
        self.factor = lr_factor(settings.schedule, self.total_steps, milestones=steps)
        self.temperature = settings.temperature or method.diagnostic_temperature
        self.use_cache = self._use_cache(data_augmented(train_loader, info))
        self.hooks = Hooks(callbacks if self.main else ())  # callbacks, bars and files: rank 0 only
        self.run_log = self._prepare_log(run_log)
        self.monitor: Monitor | None = None  # opened at the first step, when C is known
        self.step = self.epoch = 0
        self.watch = FiniteWatch()
        self._test_teacher_logits: list | None = None
        self._postfix: dict[str, str] = {}
        self.checkpointing = checkpoints
        self.resume_from = checkpointing.load(self)  # (state, path), checked against these settings; or None

    def _loss_group(self) -> Any:
        if not self.settings.global_batch:
            return None
        if self.world == 1:
            message = (
                "global_batch=True has no effect in a single process: launch with torchrun "
                "(--nproc_per_node=N) for global-batch CSKD over N processes"
            )
        elif not self.method.supports_group:
            message = (
                f"global_batch=True changes only the CSKD methods; {self.method.name!r} is computed on each "
                "rank's local batch (for CE and KD, means of per-sample terms, that is the same thing)"
            )
        else:
            return default_group()
        warnings.warn(message, UserWarning, stacklevel=5)
        return None

    def _use_cache(self, augmented: bool | None) -> bool:
        cache = self.settings.cache_teacher
        if self.two_views:
            check_cache(self.method, cache)
            return False
        if self.teacher is None or cache is False:
            return False
        if cache is None:
            return augmented is False and self.method.needs_teacher
        if augmented:
            raise ValueError("cache_teacher=True but the training data is augmented: teacher logits change per epoch")
        return True

    def _prepare_log(self, run_log: RunLog | None) -> RunLog:
        s, method = self.settings, self.method
        details = {
            "method": method.name,
            **method.params(),
            "cswt": method.temperature_range is not None,
            "diagnostic_temperature": self.temperature,
            "epochs": s.epochs,
            "max_steps": s.max_steps,
            "batch_size": self.train_loader.batch_size,
            "lr": s.lr,
            "momentum": s.momentum,
            "weight_decay": s.weight_decay,
            "schedule": s.schedule,
            "seed": s.seed,
            "log_every": s.log_every,
            "global_batch": s.global_batch,
        }
        facts = {
            "steps_per_epoch": len(self.train_loader),
            "total_steps": self.total_steps,
            "device": str(self.device),
            "teacher_cache": self.use_cache,
            "world_size": self.world,
        }
        if run_log is None:
            return RunLog({"name": s.name or method.name, **details, **facts})
        for key, value in details.items():
            run_log.config.setdefault(key, value)
        run_log.config.update(facts)
        return run_log

    def _open_monitor(self, num_classes: int, elapsed_s: float = 0.0) -> Monitor:
        """The run's monitor; ``elapsed_s``: the training time of a resumed run's earlier segments."""
        t_low, t_high = self.method.temperature_range or (2.0, 6.0)
        return Monitor(
            self.run_log,
            num_classes,
            log_every=self.settings.log_every,
            temperature=self.temperature,
            t_low=t_low,
            t_high=t_high,
            total_steps=self.total_steps,
            flush_interval_s=self.settings.flush_interval_s,
            group=default_group() if self.world > 1 else None,
            elapsed_offset_s=elapsed_s,
        )

    # -------------------------------------------------------------- the loop
    def run(self) -> RunLog:
        from tqdm.auto import tqdm

        s = self.settings
        if s.seed is not None:
            torch.manual_seed(s.seed)
        name = s.name or self.run_log.name
        progress = s.progress if self.main else False
        disable = None if progress is None else not progress
        bar = tqdm(total=self.total_steps, desc=name, unit="step", disable=disable, dynamic_ncols=True, leave=True)
        try:
            for hook in self.hooks.train_begin:
                hook(self.run_log)
            with deferred_termination():
                status = self._loop(bar)
            self._check_weights()
        except KeyboardInterrupt as err:
            self._end_interrupted(bar, err)
            if s.raise_on_interrupt or isinstance(err, Terminated):  # a signal always ends the process
                raise
            if self.main:
                saved = f"; the run log is saved with status {self.run_log.status!r}" if self.run_log.path else ""
                print(f"cskd_viz: run {name!r} interrupted at step {self.step}{saved}", file=sys.stderr)
            return self.run_log
        except BaseException as err:
            reason = str(err) if isinstance(err, TrainingDiverged) else reason_of(err)
            if isinstance(err, TrainingDiverged):
                err.run = str(self.run_log.path or name)
            self._end(bar, "failed", reason=reason, failing=err)
            raise
        self._end(bar, status)
        raise_pending_termination()  # a signal during the last step: the run is complete, the process still ends
        return self.run_log

    def _end_interrupted(self, bar, err: KeyboardInterrupt) -> None:
        """Ctrl-C or a termination signal: ``interrupted``, or ``failed`` if the weights are no longer finite."""
        how = (
            f"{err} at step {self.step}" if isinstance(err, Terminated) else f"interrupted (Ctrl-C) at step {self.step}"
        )
        bad = nonfinite_parameters(self.model)
        if bad:
            self._end(bar, "failed", reason=f"{how}; the weights are not finite ({', '.join(bad[:3])})")
        else:
            self._end(bar, "interrupted", reason=how)

    def _loop(self, bar) -> str:
        model, settings = self.model, self.settings
        train_model = TwoViewModel(model) if self.two_views else model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            train_model = DistributedDataParallel(train_model)  # the frozen teacher needs no wrapper
        optimizer = torch.optim.SGD(
            model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
        cache, loader = self._training_data()
        start = self._resume(optimizer, loader, bar)
        if self.step >= self.total_steps:  # resumed from the checkpoint at the end of the budget
            return "finished"
        for epoch in range(start, self.n_epochs):
            self.epoch = epoch
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)  # a new shuffle per epoch for DistributedSampler
            model.train()
            for batch in loader:
                log_now = self._train_step(train_model, optimizer, batch, cache, bar)
                if self._stop_requested(log_now):
                    return "interrupted"
                if self.step >= self.total_steps:
                    break
            if self._end_epoch(bar, optimizer, loader):
                return "interrupted"
            if self.step >= self.total_steps:
                break
        return "finished"

    def _train_step(self, train_model, optimizer, batch, cache, bar) -> bool:
        """One optimiser step (forward under autocast with ``amp``, backward, SGD); whether it was logged."""
        device, precision = self.device, self.precision
        log_now = self.monitor is None or self.monitor.will_log(self.step + 1)  # step 1 always logs
        with precision.autocast():
            if self.two_views:
                student_logits, teacher_logits, y, terms = self._two_view_terms(train_model, batch, log_now)
            else:
                x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
                student_logits = train_model(x)
                teacher_logits = self._teacher_logits(batch, x, cache, log_now)
                terms = self._terms(student_logits, teacher_logits, y, log_now)
            loss = total_loss(terms)
        optimizer.zero_grad(set_to_none=True)
        precision.backward(loss)
        lr = self.settings.lr * self.factor(self.step)  # per-step schedule, set by hand: cheaper than an LRScheduler
        for group in optimizer.param_groups:
            group["lr"] = lr
        precision.step(optimizer)
        self.step += 1
        self.watch.add(self.step, loss, lr)
        if log_now:
            self._check_finite()
            if precision.enabled:
                terms = {k: precision.full(v) if isinstance(v, Tensor) else v for k, v in terms.items()}
            full = precision.full
            self._record(full(student_logits), full(teacher_logits), y, loss, terms, lr, bar)
        return log_now

    def _resume(self, optimizer, loader, bar) -> int:
        """Continue from the checkpoint (model, optimiser, RNG, step; the monitor opened); the epoch to start at."""
        if self.resume_from is None:
            return 0
        state, path = self.resume_from
        self.resume_from = None  # the weights are large: keep no second copy
        start = checkpointing.restore(self, state, optimizer, loader, source=f"checkpoint {path}")
        # the next step logs only when it is due; elapsed_s goes on from the checkpoint's (total training time)
        self.monitor = self._open_monitor(int(state["num_classes"]), float(state.get("elapsed_s", 0.0)))
        if self.main:
            self.run_log.set_progress(self.step, self.epoch)
        bar.update(self.step - bar.n)
        return start

    def _two_view_terms(self, train_model, batch, log_now: bool) -> tuple:
        """Student (both views, one call) and teacher (both, no grad) on ``(x_weak, x_strong, y)``; the weak
        view's logits (for the diagnostics), the targets and the method's terms."""
        weak, strong, y = (t.to(self.device, non_blocking=True) for t in batch[:3])
        student_weak, student_strong = train_model(weak, strong)
        with torch.no_grad():
            teacher_weak, teacher_strong = self.teacher(weak), self.teacher(strong)
        terms = self._terms(student_weak, teacher_weak, y, log_now, strong=(student_strong, teacher_strong))
        return student_weak, teacher_weak, y, terms

    def _terms(self, student_logits, teacher_logits, targets, log_now: bool, strong=None) -> dict:
        views = {"strong": strong} if strong is not None else {}
        try:
            return self.method(student_logits, teacher_logits, targets, extras=log_now, group=self.group, **views)
        except ValueError as err:  # the losses refuse non-finite or huge logits: say how they got so
            diverged = self.watch.first_bad() or self._diverged_logits(student_logits, self.step + 1)
            if diverged is not None:
                raise diverged from err
            raise

    def _diverged_logits(self, student_logits: Tensor, step: int) -> TrainingDiverged | None:
        """The divergence that made ``student_logits`` NaN, infinite or beyond ``MAX_ABS_LOGIT``, if it did
        (this rank's logits: no collective, since it runs on an error path)."""
        low, high = torch.stack(torch.aminmax(student_logits.detach().float())).tolist()
        if all(math.isfinite(v) for v in (low, high)):
            if max(-low, high) <= MAX_ABS_LOGIT:
                return None
            kind = f"larger than {MAX_ABS_LOGIT:.0e} in magnitude"
        else:
            kind = "non-finite"
        lr = self.settings.lr * self.factor(self.step)
        return TrainingDiverged(step, kind, lr, what="the student's logits")

    def _check_weights(self) -> None:
        """A run never ends ``finished`` with NaN or infinite weights (a model.pt is what later runs reuse)."""
        bad = nonfinite_parameters(self.model)
        if bad:
            raise TrainingDiverged(self.step, "non-finite", None, what=f"the weights ({', '.join(bad[:3])})")

    def _check_finite(self) -> None:
        """Raise :class:`TrainingDiverged` if a loss since the last check was NaN or infinite (one host read)."""
        diverged = self.watch.first_bad()
        if self.world > 1 and any_rank(diverged is not None, self.device) and diverged is None:
            diverged = TrainingDiverged(self.step, "non-finite", None, what="another rank's loss")
        if diverged is not None:
            raise diverged

    def _training_data(self) -> tuple[TeacherLogitCache | None, DataLoader]:
        if not self.use_cache:
            return None, self.train_loader
        # The whole training set on every rank: a rank's shard changes every epoch.
        cache = TeacherLogitCache.build(self.teacher, self.train_loader.dataset, self.device)
        return cache, with_indices(self.train_loader)

    def _teacher_logits(self, batch, x, cache: TeacherLogitCache | None, log_now: bool):
        if self.teacher is None or not (self.method.needs_teacher or log_now):
            return None
        if cache is not None:
            return cache[batch[2]]
        with torch.no_grad():
            return self.teacher(x)

    def _record(self, student_logits, teacher_logits, targets, loss, terms, lr, bar) -> None:
        if self.monitor is None:
            self.monitor = self._open_monitor(student_logits.shape[1])
        losses = {"loss": loss, **{k: v for k, v in terms.items() if k.startswith("loss_")}}
        self.monitor.log_step(
            self.step,
            student_logits,
            teacher_logits,
            targets,
            losses=losses,
            epoch=self.epoch,
            temperatures=terms.get("temperatures"),
            lr=lr,
        )
        if not self.main:
            return
        bar.update(self.step - bar.n)
        if self.hooks.step:  # a callback sees every record as it happens
            record = self.monitor.latest_record()
            for hook in self.hooks.step:
                hook(record)
        latest = self.monitor.latest_record(summarise=False)  # the newest computed one: free
        if not bar.disable and latest is not None:
            self._postfix = _postfix(latest.metrics)
            bar.set_postfix(self._postfix, refresh=False)

    def _stop_requested(self, log_now: bool, before_stop=None) -> bool:
        """Whether to stop after this step; under DDP the ranks agree at logged steps only (no collective on
        others). ``before_stop(stopping)`` runs once that is known, before a termination signal is raised."""
        wants = self.stop_event is not None and self.stop_event.is_set()
        signalled = pending_termination() is not None
        if self.world > 1:
            wants = log_now and any_rank(wants or signalled, self.device)
        if before_stop is not None:
            before_stop(wants or (signalled and self.world == 1))
        if wants or (signalled and self.world == 1):
            self.run_log.set_progress(self.step, self.epoch)
            raise_pending_termination()  # a SIGTERM/SIGHUP: this step is done, now end like Ctrl-C
        return wants

    def _end_epoch(self, bar, optimizer, loader) -> bool:
        """Progress, evaluation, callbacks and the checkpoint at the end of an epoch; whether to stop."""
        bar.update(self.step - bar.n)
        self.run_log.set_progress(self.step, self.epoch)
        record = self._evaluate() if self.test_loader is not None and self.monitor is not None else None
        if record is not None and not bar.disable:
            bar.set_postfix({**self._postfix, "test": f"{record.metrics['accuracy']:.3f}"})
        for hook in self.hooks.epoch_end:
            hook(self.epoch, record)
        self._check_finite()

        def checkpoint(stopping: bool) -> None:  # every N epochs, at the end, and when the run stops here
            every = self.settings.checkpoint_every
            last = self.epoch + 1 >= self.n_epochs or self.step >= self.total_steps
            if self.checkpointing is not None and (stopping or last or (self.epoch + 1) % every == 0):
                checkpointing.save(self, optimizer, loader)

        return self._stop_requested(log_now=True, before_stop=checkpoint)

    @torch.no_grad()
    def _evaluate(self) -> EvalRecord:
        model, teacher, monitor = self.model, self.teacher, self.monitor
        was_training = model.training
        model.eval()
        # The teacher's test logits are computed once and reused, when the test order is fixed.
        reuse = isinstance(self.test_loader.sampler, SequentialSampler) and self._test_teacher_logits is not None
        cached = self._test_teacher_logits if reuse else None
        computed, batches = [], 0
        try:
            for i, batch in enumerate(self.test_loader):
                batches += 1
                x = batch[0].to(self.device, non_blocking=True)
                y = batch[1].to(self.device, non_blocking=True)
                t = None
                if teacher is not None:
                    t = cached[i] if cached is not None else teacher(x).detach()
                    computed.append(t)
                with self.precision.autocast():
                    student_logits = model(x)
                student_logits, t = self.precision.full(student_logits), self.precision.full(t)
                try:
                    monitor.eval_update(student_logits, t, y)
                except ValueError as err:  # logits the metrics refuse: from a diverged model?
                    diverged = self._diverged_logits(student_logits, self.step)
                    if diverged is not None:
                        raise diverged from err
                    raise
        finally:
            model.train(was_training)
        if batches == 0:
            raise ValueError("test_loader yields no samples")
        self._test_teacher_logits = computed if teacher is not None else None
        return monitor.log_eval(self.epoch, step=self.step)

    def _end(self, bar, status: str, reason: str | None = None, failing: BaseException | None = None) -> None:
        """Save the model (``model_path``), then close the run with ``status``; while ``failing`` ends the run,
        a failure to save becomes a note on that error. A termination signal meanwhile is only noted."""
        bar.close()
        with deferred_termination():  # saving and closing are never cut short
            self._close(status, reason, failing)

    def _close(self, status: str, reason: str | None, failing: BaseException | None) -> None:
        unsaved = self._save_model() if status in ("finished", "interrupted") else None
        if unsaved is not None:
            status, reason = "failed", f"the model could not be saved: {unsaved}"
            failing = failing or unsaved
        try:
            if self.monitor is not None:
                self.monitor.close(status, reason=reason)
            elif self.main:
                self.run_log.finish(status, reason=reason)
            else:  # other ranks write nothing: only the status is kept, in memory
                self.run_log.status = status
        except Exception as err:  # noqa: BLE001 - never mask the exception that ended the run
            if failing is None:
                raise
            add_note(failing, f"the run log of {self.run_log.name!r} could not be closed: {err}")
        for hook in self.hooks.train_end:
            try:
                hook(self.run_log)
            except Exception:  # noqa: BLE001 - never mask the exception that ended the run
                if failing is None:
                    raise
        if unsaved is not None and unsaved is failing:
            raise unsaved

    def _save_model(self) -> Exception | None:
        """Write ``{"model": state_dict}`` to ``model_path`` while the run is still held (rank 0); the error, if any."""
        if self.model_path is None or not self.main:
            return None
        try:
            save_checkpoint(self.model, self.model_path)
        except Exception as err:  # noqa: BLE001 - the run is then closed as failed, and the error raised
            return err
        return None


def _postfix(metrics: dict) -> dict:
    out = {"loss": f"{metrics['loss']:.3f}", "acc": f"{metrics['train_accuracy']:.2f}"}
    for key, label in (("agreement", "agree"), ("mean_temperature", "T")):
        value = metrics.get(key, float("nan"))
        if value == value:
            out[label] = f"{value:.2f}"
    return out


# ----------------------------------------------------------------------------- public trainers


def train_teacher(
    model: nn.Module,
    train_loader: DataLoader,
    test_loader: DataLoader | None = None,
    *,
    callbacks: Sequence[Any] = (),
    stop_event: threading.Event | None = None,
    run_log: RunLog | None = None,
    model_path: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | Checkpointing | None = None,
    resume: bool = False,
    **settings: Any,
) -> RunLog:
    """Train ``model`` with cross-entropy for ``epochs`` epochs or ``max_steps`` steps.

    ``L = CE(z, y)``; SGD with momentum, weight decay and a per-step learning-rate schedule.
    Columns that need a teacher (``agreement``, ``cosine_distance``) are NaN.

    Args:
        model: the network, ``(B, ...) -> (B, C)``; trained in place.
        train_loader: yields ``(x, y)`` batches.
        test_loader: evaluated at the end of each epoch (``evals`` frame), or ``None``.
        callbacks: objects with ``on_train_begin/on_step/on_epoch_end/on_train_end`` (any subset).
        stop_event: a ``threading.Event``; once set, the run ends after the current step.
        run_log: where to record (e.g. a :class:`RunLog` with a directory); an in-memory one by default.
        model_path: where to save ``{"model": state_dict}`` when the run ends ``finished`` or
            ``interrupted`` (never for ``failed``, never non-finite weights), before the log is closed.
        checkpoint_dir: where to write training checkpoints (every ``checkpoint_every`` epochs, at
            the end, and when stopped at an epoch end; :mod:`~cskd_viz.training.resume`); ``None``: none.
        resume: continue from the newest readable checkpoint in ``checkpoint_dir`` (same settings,
            else a ``ResumeError`` naming the fields that differ). The steps after it are logged into
            ``run_log``; to continue a run directory's log, pass
            :meth:`RunLog.reopen(path, config, step=..., epoch=...) <cskd_viz.runs.RunLog.reopen>`'s at the
            checkpoint's step (``run_experiment`` does).
        **settings: the fields of :class:`~cskd_viz.training.TrainSettings` (``epochs``,
            ``max_steps``, ``lr``, ``schedule``, ``device``, ``seed``, ``log_every``, ``progress``, ...).

    Returns:
        The :class:`RunLog` (status ``"finished"`` or ``"interrupted"``).

    Example:
        >>> from cskd_viz.data import make_loaders
        >>> from cskd_viz.models import get_model
        >>> train, test, info = make_loaders("synthetic", batch_size=32, seed=0)
        >>> net = get_model("mlp_small", info.num_classes, info.input_shape)
        >>> log = train_teacher(net, train, test, max_steps=5, progress=False)
        >>> log.status, int(log.steps.step.iloc[-1]), len(log.evals)
        ('finished', 5, 1)
    """
    options = TrainSettings(**{"name": "teacher", **settings, "cache_teacher": False})
    trainer = _Trainer(
        model,
        None,
        get_method("ce"),
        (train_loader, test_loader),
        options,
        callbacks=callbacks,
        stop_event=stop_event,
        run_log=run_log,
        model_path=model_path,
        checkpoints=as_checkpointing(checkpoint_dir, resume),
    )
    return trainer.run()


def distill(
    student: nn.Module,
    teacher: nn.Module,
    train_loader: DataLoader,
    test_loader: DataLoader | None = None,
    *,
    method: str | Method = "cskd_cswt",
    info: Any = None,
    callbacks: Sequence[Any] = (),
    stop_event: threading.Event | None = None,
    run_log: RunLog | None = None,
    model_path: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | Checkpointing | None = None,
    resume: bool = False,
    **settings: Any,
) -> RunLog:
    """Train ``student`` against a frozen ``teacher`` (``eval()``, ``no_grad``) with a distillation method.

    ``L = w_ce * CE(z_s, y) + w_kd * L_method(z_s, z_t)`` (see :mod:`cskd_viz.methods`). The
    teacher is also used for diagnostics (agreement, per-class cosine, ``d(T)``), so a ``"ce"``
    student with a teacher is the honest baseline of a comparison.

    Args:
        student: trained in place. ``teacher``: never updated.
        train_loader, test_loader: as in :func:`train_teacher`.
        method: a :class:`~cskd_viz.methods.Method` or a registry name (default parameters).
        info: the :class:`~cskd_viz.data.DatasetInfo` from ``make_loaders`` (tells whether the
            data is augmented, for the teacher-logit cache).
        callbacks, stop_event, run_log, model_path, checkpoint_dir, resume: as in :func:`train_teacher`.
        **settings: the fields of :class:`~cskd_viz.training.TrainSettings`; ``cache_teacher``
            (``True`` with augmented data is a ``ValueError``), ``temperature`` (of the
            diagnostics) and ``global_batch`` (CSKD on the global batch under torch.distributed;
            a warning when it changes nothing) matter here.

    Returns:
        The :class:`RunLog`.

    Example:
        >>> from cskd_viz.data import make_loaders
        >>> from cskd_viz.models import get_model
        >>> train, test, info = make_loaders("synthetic", batch_size=32, seed=0)
        >>> teacher = get_model("mlp_large", info.num_classes, info.input_shape)
        >>> student = get_model("mlp_small", info.num_classes, info.input_shape)
        >>> log = distill(student, teacher, train, test, method="cskd_cswt", max_steps=5, info=info, progress=False)
        >>> log.config["teacher_cache"], sorted(c for c in log.steps.columns if c.startswith("loss_"))
        (True, ['loss_ce', 'loss_cskd'])
    """
    if isinstance(method, str):
        method = get_method(method)
    if not isinstance(method, Method):
        raise TypeError(f"method must be a Method or one of {method_names()}, got {type(method).__name__}")
    if teacher is None:
        raise ValueError("teacher must be an nn.Module (use train_teacher to train without one)")
    trainer = _Trainer(
        student,
        teacher,
        method,
        (train_loader, test_loader),
        TrainSettings(**settings),
        info=info,
        callbacks=callbacks,
        stop_event=stop_event,
        run_log=run_log,
        model_path=model_path,
        checkpoints=as_checkpointing(checkpoint_dir, resume),
    )
    return trainer.run()
