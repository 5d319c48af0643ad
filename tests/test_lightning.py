"""CSKDMonitorCallback with real Lightning: a tiny LightningModule, two epochs on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

lightning = pytest.importorskip("lightning", reason="Lightning is in the dev extra: pip install -e '.[dev]'")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from cskd_viz.integrations.lightning import CSKDMonitorCallback  # noqa: E402
from cskd_viz.losses import CSKDLoss  # noqa: E402
from cskd_viz.runs import load_run  # noqa: E402

C, D = 4, 6


class Distiller(lightning.LightningModule):
    def __init__(self, fail_at: int | None = None, error: type[BaseException] = RuntimeError, keys=None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.student, self.teacher = torch.nn.Linear(D, C), torch.nn.Linear(D, C)
        self.teacher.requires_grad_(False)
        self.criterion = CSKDLoss()
        self.fail_at, self.error = fail_at, error
        self.keys = keys or {"student": "student_logits", "teacher": "teacher_logits", "targets": "targets"}

    def training_step(self, batch, batch_idx):
        if self.fail_at is not None and self.global_step == self.fail_at:
            raise self.error("stop here")
        x, y = batch
        student_logits = self.student(x)
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        ce, cskd = F.cross_entropy(student_logits, y), self.criterion(student_logits, teacher_logits)
        return {
            "loss": ce + cskd,
            "losses": {"ce": ce, "cskd": cskd},
            self.keys["student"]: student_logits,
            self.keys["teacher"]: teacher_logits,
            self.keys["targets"]: y,
            "temperatures": self.criterion.last_temperatures,
        }

    def validation_step(self, batch, batch_idx):
        x, y = batch
        return {self.keys["student"]: self.student(x), self.keys["teacher"]: self.teacher(x), self.keys["targets"]: y}

    def configure_optimizers(self):
        return torch.optim.SGD(self.student.parameters(), lr=0.1)


def _loader(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n, D, generator=g), torch.randint(0, C, (n,), generator=g))
    return DataLoader(data, batch_size=16, drop_last=True)


def _fit(tmp_path, module: Distiller, callback: CSKDMonitorCallback, epochs: int = 2) -> None:
    trainer = lightning.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        num_sanity_val_steps=1, callbacks=[callback],
    )  # fmt: skip
    trainer.fit(module, _loader(96, 1), _loader(48, 2))


def test_two_epochs_record_a_run_that_loads(tmp_path):
    callback = CSKDMonitorCallback(tmp_path / "run", C, log_every=2, config={"method": "cskd_cswt"})
    _fit(tmp_path, Distiller(), callback)
    log = load_run(tmp_path / "run")
    assert log.status == "finished" and log.config["framework"] == "lightning"
    assert log.steps["step"].tolist() == [1, 2, 4, 6, 8, 10, 12]  # 6 steps/epoch, 12 = the last step
    assert {"loss", "loss_ce", "loss_cskd"} <= set(log.steps.columns)
    torch.testing.assert_close(
        torch.tensor(log.steps["loss"].values), torch.tensor((log.steps["loss_ce"] + log.steps["loss_cskd"]).values)
    )
    assert log.steps["lr"].eq(0.1).all() and len(log.temperatures) == 7
    assert log.evals["epoch"].tolist() == [0, 1] and log.evals["step"].tolist() == [6, 12]  # no sanity-check eval
    assert log.evals["accuracy"].between(0, 1).all() and log.evals["agreement"].notna().all()
    assert log.class_cosine["class"].nunique() == C


def test_keyboard_interrupt_closes_the_run_as_interrupted(tmp_path):
    callback = CSKDMonitorCallback(tmp_path / "run", C, log_every=1)
    with pytest.raises((KeyboardInterrupt, SystemExit)):  # Lightning turns Ctrl-C into sys.exit(1)
        _fit(tmp_path, Distiller(fail_at=4, error=KeyboardInterrupt), callback)
    log = load_run(tmp_path / "run")
    assert log.status == "interrupted" and log.steps["step"].max() == 4


def test_an_error_closes_the_run_as_failed(tmp_path):
    callback = CSKDMonitorCallback(tmp_path / "run", C, log_every=1)
    with pytest.raises(RuntimeError, match="stop here"):
        _fit(tmp_path, Distiller(fail_at=3), callback)
    assert load_run(tmp_path / "run").status == "failed"


def test_key_names_are_arguments(tmp_path):
    keys = {"student": "zs", "teacher": "zt", "targets": "y"}
    callback = CSKDMonitorCallback(tmp_path / "run", C, student_key="zs", teacher_key="zt", targets_key="y")
    _fit(tmp_path, Distiller(keys=keys), callback, epochs=1)
    assert load_run(tmp_path / "run").evals["agreement"].notna().all()


def test_missing_logits_are_a_clear_error(tmp_path):
    callback = CSKDMonitorCallback(tmp_path / "run", C)
    with pytest.raises(ValueError, match="must return a dict with the student logits under 'student_logits'"):
        _fit(tmp_path, Distiller(keys={"student": "other", "teacher": "zt", "targets": "y"}), callback, epochs=1)
    assert load_run(tmp_path / "run").status == "failed"
    with pytest.raises(ValueError, match="student_key must be a non-empty string"):
        CSKDMonitorCallback(tmp_path / "x", C, student_key="")
