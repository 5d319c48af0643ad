"""Short training runs: teachers, distilled students, a teacher-logit cache, progress bars, callbacks.

Three entry points:

- :func:`train_teacher` trains a model with cross-entropy;
- :func:`distill` trains a student against a frozen teacher with a method of :mod:`cskd_viz.methods`;
- :func:`run_experiment` does everything from a :class:`RunConfig` (data, models, teacher, run
  directory, checkpoint) and is what the CLI and the widgets' ``RunLauncher`` call.

The first two take the fields of :class:`TrainSettings` as keyword arguments. Every run is
recorded through :class:`cskd_viz.Monitor`, the same recorder a loop of your own uses
(``docs/own_loop.md``).

Parts: :mod:`~cskd_viz.training.settings` (``TrainSettings``, schedules),
:mod:`~cskd_viz.training.loop` (the loop), :mod:`~cskd_viz.training.teacher_cache`,
:mod:`~cskd_viz.training.checkpoints`, :mod:`~cskd_viz.training.config` (``RunConfig``),
:mod:`~cskd_viz.training.experiment` (``run_experiment``), :mod:`~cskd_viz.training.callbacks`,
:mod:`~cskd_viz.training.precision` (``amp``), :mod:`~cskd_viz.training.resume` (training checkpoints, the
file format), :mod:`~cskd_viz.training.checkpointing` (the trainer's side of them),
:mod:`~cskd_viz.training.resume_log` (a run log re-opened at a checkpoint) and
:mod:`~cskd_viz.training.two_views` (methods on two augmented views); the distributed session lives in
:mod:`cskd_viz.distributed`.

**Long runs.** With ``checkpoint_dir`` (``run_experiment``: ``<run>/checkpoints``) a checkpoint is
written every ``checkpoint_every`` epochs and at the end; ``resume=True`` continues from the newest one,
exactly (``docs/run_format.md``, "Checkpoints and resume").

**Callbacks** are any objects with some of these methods (missing ones are skipped):
``on_train_begin(run_log)``, ``on_step(record: StepRecord)``,
``on_epoch_end(epoch: int, record: EvalRecord | None)`` and ``on_train_end(run_log)``.
"""

from cskd_viz.distributed import distributed_session, resolve_device, shard_loader
from cskd_viz.training.callbacks import Callback, LambdaCallback
from cskd_viz.training.checkpoints import load_checkpoint, save_checkpoint
from cskd_viz.training.config import RunConfig
from cskd_viz.training.experiment import run_experiment
from cskd_viz.training.loop import distill, train_teacher
from cskd_viz.training.resume import ResumeError
from cskd_viz.training.settings import SCHEDULES, TrainSettings
from cskd_viz.training.teacher_cache import IndexedDataset, TeacherLogitCache, with_indices

__all__ = [
    "Callback",
    "LambdaCallback",
    "IndexedDataset",
    "TeacherLogitCache",
    "RunConfig",
    "TrainSettings",
    "with_indices",
    "shard_loader",
    "distributed_session",
    "resolve_device",
    "train_teacher",
    "distill",
    "run_experiment",
    "ResumeError",
    "load_checkpoint",
    "save_checkpoint",
    "SCHEDULES",
]
