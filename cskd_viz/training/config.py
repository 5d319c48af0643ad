"""``RunConfig``: everything one run of :func:`~cskd_viz.training.run_experiment` needs, validated on construction."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cskd_viz._validation import check_positive_int
from cskd_viz.methods import Method, get_method, method_names, method_parameters
from cskd_viz.training.settings import SCHEDULES, TrainSettings, check_batch_size, check_milestones, check_seed

__all__ = ["RunConfig"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")
_METHOD_FIELDS = ("temperature", "t_low", "t_high", "w_ce", "w_kd")  # fields make_method passes on


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, validated on construction (clear ``ValueError``/``TypeError``).

    Attributes:
        dataset: a :mod:`cskd_viz.data` name (``"digits"``, ...).
        student: a :mod:`cskd_viz.models` name: the model this run trains.
        teacher: a model name, or ``None`` to train ``student`` alone with CE (a teacher run).
        teacher_checkpoint: a ``{"model": state_dict}`` file for ``teacher``. ``None``: the teacher
            is trained first for ``teacher_epochs`` (run ``teacher-<arch>-<dataset>-...`` under
            ``runs_dir``) and reused by later runs with the same teacher settings.
        method: ``"ce"``, ``"kd"``, ``"cskd"``, ``"cskd_cswt"`` or ``"dist"``.
        temperature, t_low, t_high: ``T`` and the CSWT range (defaults 4, 2, 6).
        w_ce, w_kd: weights of the CE and method terms.
        epochs, max_steps: budget (at least one; the first reached ends the run).
        teacher_epochs, teacher_lr: budget and learning rate (``None``: ``lr``) of an auto-trained teacher.
        batch_size, lr, momentum, weight_decay, schedule: optimisation. ``batch_size >= 2`` for the
            CSKD methods (one sample's per-class cosines are 1 trivially), unless ``global_batch``.
        seed: seeds the data split, the loader order and the model initialisation.
        log_every: diagnostics every this many steps.
        name: run directory name (``None``: ``<method>-<student>-<dataset>-s<seed>``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        cache_teacher: see :func:`distill` (``None``: automatic).
        global_batch: under ``torchrun`` with ``N > 1`` processes, CSKD on the global batch of all
            processes (``batch_size`` is always the per-process batch); no effect in one process.
        lr_milestones: with ``schedule="step"``, the 0-based epochs at whose start the learning rate is
            multiplied by 0.1, mdistiller-style (``(150, 180, 210)``); ``None`` (default): at 62.5%, 75%
            and 87.5% of the steps. Giving them with another schedule is a ``ValueError``.
        num_workers: ``DataLoader`` worker processes (0: load in the training process). The batches
            are the same for every value (the loader's seeded generator fixes the workers' seeds).
        amp: mixed precision, ``torch.autocast`` (bf16 on CPU and on CUDA with bf16, fp16 with a
            gradient scaler on other CUDA devices); see :mod:`cskd_viz.training.precision`.
        checkpoint_every: a training checkpoint (model, optimiser, RNG states, step) every this many
            epochs and at the end, in ``<run>/checkpoints/`` (the last 2 are kept); what
            ``run_experiment(..., resume=True)`` and ``cskd-viz train --resume`` continue from.
        method_options: further keyword arguments of ``get_method(method, ...)``, for parameters
            that have no field here (e.g. DIST's ``beta``/``gamma``); JSON values. Checked at
            construction: an unknown or invalid option is a ``TypeError``/``ValueError``.

    Example:
        >>> RunConfig(method="kd", epochs=2).run_name
        'kd-cnn_small-digits-s0'
        >>> RunConfig(temperature=-1)
        Traceback (most recent call last):
        ...
        ValueError: temperature must be > 0, got -1.0
    """

    dataset: str = "digits"
    student: str = "cnn_small"
    teacher: str | None = "cnn_large"
    teacher_checkpoint: str | None = None
    method: str = "cskd_cswt"
    temperature: float = 4.0
    t_low: float = 2.0
    t_high: float = 6.0
    w_ce: float = 1.0
    w_kd: float = 1.0
    epochs: int | None = 10
    max_steps: int | None = None
    teacher_epochs: int = 20
    teacher_lr: float | None = None
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0
    log_every: int = 10
    name: str | None = None
    device: str = "cpu"
    cache_teacher: bool | None = None
    global_batch: bool = False
    lr_milestones: tuple[int, ...] | None = None
    num_workers: int = 0
    amp: bool = False
    checkpoint_every: int = 10
    method_options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        from cskd_viz._validation import check_scalar, check_temperature_range, check_temperature_value
        from cskd_viz.data import canonical_dataset_name
        from cskd_viz.models import MODELS

        def choice(value, options, label):
            if value not in options:
                raise ValueError(f"{label} must be one of {sorted(options)}, got {value!r}")

        object.__setattr__(self, "dataset", canonical_dataset_name(self.dataset))  # the rule load_datasets uses
        choice(self.student, MODELS, "student")
        if self.teacher is not None:
            choice(self.teacher, MODELS, "teacher")
        choice(self.method, method_names(), "method")
        if self.teacher is None:
            if self.method != "ce":
                raise ValueError(f"method {self.method!r} needs a teacher: set teacher (e.g. 'cnn_large')")
            if self.teacher_checkpoint is not None:
                raise ValueError("teacher_checkpoint is given but teacher is None: name the teacher architecture")
        if self.teacher_checkpoint is not None:
            if not isinstance(self.teacher_checkpoint, (str, os.PathLike)):
                raise TypeError(f"teacher_checkpoint must be a path, got {type(self.teacher_checkpoint).__name__}")
            if not Path(self.teacher_checkpoint).is_file():
                raise ValueError(f"teacher_checkpoint {os.fspath(self.teacher_checkpoint)!r} is not a file")
            object.__setattr__(self, "teacher_checkpoint", os.fspath(self.teacher_checkpoint))
        object.__setattr__(self, "temperature", check_temperature_value(self.temperature, "temperature"))
        for label in ("lr", "w_ce", "w_kd", "momentum", "weight_decay"):
            object.__setattr__(self, label, check_scalar(getattr(self, label), label, positive=label == "lr"))
        for label in ("w_ce", "w_kd", "weight_decay"):
            if getattr(self, label) < 0:
                raise ValueError(f"{label} must be >= 0, got {getattr(self, label)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.teacher_lr is not None:
            object.__setattr__(self, "teacher_lr", check_scalar(self.teacher_lr, "teacher_lr"))
        t_low, t_high = check_temperature_range(self.t_low, self.t_high)
        object.__setattr__(self, "t_low", t_low)
        object.__setattr__(self, "t_high", t_high)
        check_positive_int(self.epochs, "epochs", allow_none=True)
        check_positive_int(self.max_steps, "max_steps", allow_none=True)
        if self.epochs is None and self.max_steps is None:
            raise ValueError("give epochs or max_steps (or both)")
        for label in ("teacher_epochs", "batch_size", "log_every"):
            check_positive_int(getattr(self, label), label)
        if not self.global_batch:  # with it, the global batch of all processes counts: checked when training starts
            check_batch_size(self.method, self.batch_size)
        check_seed(self.seed)
        choice(self.schedule, SCHEDULES, "schedule")
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {self.device!r}")
        if self.name is not None and (not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name)):
            raise ValueError(
                f"name must start with a letter or digit and use only letters, digits and . _ + = -, got {self.name!r}"
            )
        if self.cache_teacher is not None and not isinstance(self.cache_teacher, bool):
            raise TypeError(f"cache_teacher must be True, False or None, got {self.cache_teacher!r}")
        if not isinstance(self.global_batch, bool):
            raise TypeError(f"global_batch must be True or False, got {self.global_batch!r}")
        self._check_long_run_fields()

    def _check_long_run_fields(self) -> None:
        """``lr_milestones``, ``num_workers``, ``amp``, ``checkpoint_every`` and ``method_options``."""
        object.__setattr__(self, "lr_milestones", check_milestones(self.lr_milestones, self.schedule))
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {self.num_workers!r}")
        if not isinstance(self.amp, bool):
            raise TypeError(f"amp must be True or False, got {self.amp!r}")
        check_positive_int(self.checkpoint_every, "checkpoint_every")
        options = self.method_options
        if not isinstance(options, Mapping):
            raise TypeError(f"method_options must be a mapping of parameter names to values, got {options!r}")
        options = dict(options)
        taken = sorted(set(options) & set(_METHOD_FIELDS))
        if taken:
            raise ValueError(f"method_options {taken} are RunConfig fields: set the field(s) instead")
        try:
            json.dumps(options, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"method_options must hold JSON values (numbers, strings, lists): {err}") from None
        object.__setattr__(self, "method_options", options)
        try:
            self.make_method()
        except (TypeError, ValueError) as err:
            raise type(err)(f"method_options of method {self.method!r}: {err}") from None

    @property
    def cswt(self) -> bool:
        """Whether the method uses cosine-similarity-weighted temperatures."""
        return self.method in ("cskd_cswt", "cskd_published")

    @property
    def run_name(self) -> str:
        """``name``, or ``<method>-<student>-<dataset>-s<seed>``."""
        return self.name or f"{self.method}-{self.student}-{self.dataset}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``cswt`` (what goes into the run's ``config.json``; JSON values only:
        ``lr_milestones`` is a list there, and a config without the newer fields means their defaults)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["lr_milestones"] = list(self.lr_milestones) if self.lr_milestones is not None else None
        values["method_options"] = json.loads(json.dumps(dict(self.method_options)))
        return {**values, "name": self.run_name, "cswt": self.cswt}

    def train_settings(self, **overrides: Any) -> TrainSettings:
        """The :class:`TrainSettings` of this config's run (``overrides``: e.g. ``progress``, ``device``)."""
        fields = ("epochs", "max_steps", "lr", "momentum", "weight_decay", "schedule", "seed", "log_every")
        fields += ("lr_milestones", "amp", "checkpoint_every")
        values = {name: getattr(self, name) for name in fields}
        values.update(
            device=self.device,
            cache_teacher=self.cache_teacher,
            temperature=self.temperature if self.teacher is not None else None,
            global_batch=self.global_batch,
            name=self.run_name,
        )
        return TrainSettings(**{**values, **overrides})

    def make_method(self) -> Method:
        """The configured method object (the fields it takes, plus ``method_options``)."""
        candidates = {name: getattr(self, name) for name in _METHOD_FIELDS}
        allowed = method_parameters(self.method)
        params = {k: v for k, v in candidates.items() if k in allowed}
        return get_method(self.method, **params, **dict(self.method_options))

    def teacher_config(self) -> RunConfig:
        """The config of the CE run that trains this config's teacher (when no checkpoint is given):
        ``teacher_epochs`` at ``teacher_lr``, in full precision, with the schedule's default milestones."""
        if self.teacher is None:
            raise ValueError("this config has no teacher")
        key = {
            k: getattr(self, k)
            for k in ("dataset", "teacher", "teacher_epochs", "batch_size", "momentum", "weight_decay", "schedule")
        }
        key.update(lr=self.teacher_lr or self.lr, seed=self.seed)
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
        return dataclasses.replace(
            self,
            student=self.teacher,
            teacher=None,
            teacher_checkpoint=None,
            method="ce",
            w_ce=1.0,
            # CE ignores these: the defaults, so a sweep over them reuses one teacher
            w_kd=1.0,
            temperature=4.0,
            t_low=2.0,
            t_high=6.0,
            epochs=self.teacher_epochs,
            max_steps=None,
            lr=self.teacher_lr or self.lr,
            name=f"teacher-{self.teacher}-{self.dataset}-s{self.seed}-{digest}",
            cache_teacher=None,
            global_batch=False,
            method_options={},
            lr_milestones=None,  # the student's milestones are epochs of its own budget
            amp=False,  # a teacher is trained in full precision (and reused by every student)
        )
