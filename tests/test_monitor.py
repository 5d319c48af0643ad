"""Monitor: any loop records a run that loads, shows in RunBrowser and reports like one of our trainer's."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cskd_viz import Monitor
from cskd_viz.losses import CSKDLoss
from cskd_viz.runs import FRAMES, RunLog, load_run

ROOT = Path(__file__).resolve().parents[1]
C = 5


def _batch(seed: int, n: int = 16):
    g = torch.Generator().manual_seed(seed)
    teacher = 2.0 * torch.randn(n, C, generator=g)
    student = teacher + torch.randn(n, C, generator=g)
    return student, teacher, torch.randint(0, C, (n,), generator=g)


def _plain_loop(monitor: Monitor, steps: int = 12, fail_at: int | None = None, error=KeyboardInterrupt, epoch_every=6):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, C)
    teacher = torch.nn.Linear(8, C)
    criterion = CSKDLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, C, (16,), generator=g)
        student_logits = model(x)
        with torch.no_grad():
            teacher_logits = teacher(x)
        ce, cskd = F.cross_entropy(student_logits, y), criterion(student_logits, teacher_logits)
        optimizer.zero_grad()
        (ce + cskd).backward()
        optimizer.step()
        if step == fail_at:
            raise error
        monitor.log_step(
            step, student_logits, teacher_logits, y, losses={"ce": ce, "cskd": cskd},
            epoch=(step - 1) // epoch_every, temperatures=criterion.last_temperatures, lr=0.1,
        )  # fmt: skip
        if step % epoch_every == 0:
            with torch.no_grad():
                xt = torch.randn(40, 8, generator=g)
                monitor.log_eval((step - 1) // epoch_every, model(xt), teacher(xt), torch.randint(0, C, (40,)))


def test_plain_loop_run_loads_like_a_trainer_run(tmp_path):
    with Monitor(tmp_path / "run", C, log_every=4, config={"method": "cskd_cswt", "dataset": "toy"}) as monitor:
        _plain_loop(monitor)
    log = load_run(tmp_path / "run")
    assert log.status == "finished" and log.progress == {"step": 12, "epoch": 1}
    assert log.steps["step"].tolist() == [1, 4, 8, 12]
    assert {"loss", "loss_ce", "loss_cskd", "train_accuracy", "agreement", "cosine_distance"} <= set(log.steps)
    torch.testing.assert_close(
        torch.tensor(log.steps["loss"].values), torch.tensor((log.steps["loss_ce"] + log.steps["loss_cskd"]).values)
    )
    assert len(log.class_cosine) == 4 * C and len(log.temperatures) == 4 and len(log.temperature_hist) == 4 * 12
    assert log.evals["epoch"].tolist() == [0, 1] and log.evals["split"].tolist() == ["test", "test"]
    assert log.config["method"] == "cskd_cswt" and log.config["num_classes"] == C
    summary = log.summary()
    assert summary["steps"] == 12 and 0 <= summary["final_accuracy"] <= 1 and summary["status"] == "finished"
    for name in FRAMES:
        assert list(getattr(log, name).columns)[: len(FRAMES[name])] or name == "steps"


def test_steps_summarised_together_equal_steps_summarised_one_by_one():
    """Records are computed for many steps at once; the result must not depend on the grouping."""
    one_by_one, together = Monitor(None, C, log_every=1), Monitor(None, C, log_every=1)
    for step in range(1, 9):
        s, t, y = _batch(step, n=16 if step % 3 else 9)  # two batch sizes: two groups
        kwargs = {"losses": {"ce": float(step)}, "temperatures": torch.full((s.shape[0],), 2.0 + step / 4), "lr": 0.1}
        one_by_one.log_step(step, s, t, y if step != 4 else None, **kwargs)
        one_by_one.latest_record()
        together.log_step(step, s, t, y if step != 4 else None, **kwargs)
    a, b = one_by_one.run_log, together.run_log
    together.latest_record()
    for name in ("steps", "class_cosine", "temperatures", "temperature_hist"):
        left, right = getattr(a, name).drop(columns="elapsed_s", errors="ignore"), getattr(b, name)
        right = right.drop(columns="elapsed_s", errors="ignore")
        assert left.equals(right), name


def test_records_match_the_diagnostics():
    from cskd_viz.diagnostics import per_class_cosine, top1_agreement

    s, t, y = _batch(2)
    monitor = Monitor(None, C, temperature=3.0)
    monitor.log_step(1, s, t, y, losses=torch.tensor(0.5))
    record = monitor.latest_record()
    torch.testing.assert_close(
        torch.tensor(record.class_cosine, dtype=torch.float64), per_class_cosine(s, t, 3.0).double(), atol=1e-6, rtol=0
    )
    assert record.metrics["agreement"] == pytest.approx(float(top1_agreement(s, t)))
    assert record.metrics["train_accuracy"] == pytest.approx(float((s.argmax(1) == y).float().mean()))
    assert record.metrics["loss"] == 0.5 and math.isnan(record.metrics["lr"])
    assert record.metrics["cosine_distance"] == pytest.approx(1 - sum(record.class_cosine) / C)


def test_unlogged_steps_touch_no_tensor():
    """Meta tensors have no data: any read (a device sync on a GPU) would raise."""
    monitor = Monitor(None, C, log_every=5)
    meta = torch.empty(16, C, device="meta")
    for step in (2, 3, 4, 6):
        assert monitor.log_step(step, meta, meta, losses=torch.empty((), device="meta")) is None
    assert monitor.run_log.steps.empty


def test_eval_batches_equal_whole_split():
    s, t, y = _batch(3, n=48)
    whole, batched = Monitor(None, C), Monitor(None, C)
    expected = whole.log_eval(0, s, t, y)
    for k in range(0, 48, 10):
        batched.eval_update(s[k : k + 10], t[k : k + 10], y[k : k + 10])
    got = batched.log_eval(0)
    for key in ("accuracy", "agreement", "loss", "teacher_accuracy", "cosine_distance"):
        assert got.metrics[key] == pytest.approx(expected.metrics[key], rel=1e-6), key
    assert expected.metrics["loss"] == pytest.approx(float(F.cross_entropy(s, y)), rel=1e-6)
    without_teacher = Monitor(None, C).log_eval(0, s, None, y)
    assert math.isnan(without_teacher.metrics["agreement"]) and without_teacher.class_cosine is None


def test_keyboard_interrupt_leaves_an_interrupted_run_that_loads(tmp_path):
    with pytest.raises(KeyboardInterrupt), Monitor(tmp_path / "run", C, log_every=2) as monitor:
        _plain_loop(monitor, fail_at=7)
    log = load_run(tmp_path / "run")
    assert log.status == "interrupted" and log.steps["step"].max() == 6
    assert not list((tmp_path / "run").glob(".*tmp"))


def test_other_exceptions_mark_the_run_failed(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), Monitor(tmp_path / "run", C, log_every=2) as monitor:
        _plain_loop(monitor, fail_at=5, error=RuntimeError("boom"))
    assert load_run(tmp_path / "run").status == "failed"


def test_ctrl_c_in_a_separate_process_leaves_a_loadable_run(tmp_path):
    """A real SIGINT, as a notebook's Interrupt kernel sends, while the loop runs."""
    code = f"""
import signal, sys, time, torch
sys.path.insert(0, {str(ROOT)!r})
from cskd_viz import Monitor
z = torch.randn(8, {C})
with Monitor({str(tmp_path / "run")!r}, {C}, log_every=1, flush_interval_s=0) as monitor:
    step = 0
    while True:
        step += 1
        monitor.log_step(step, z, z, losses=1.0)
        if step == 3:
            print("ready", flush=True)
        time.sleep(0.01)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(__import__("signal").SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    log = load_run(tmp_path / "run")
    assert log.status == "interrupted" and log.steps["step"].max() >= 3


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m, s, t, y: m.log_step(1, s[:, :3], t[:, :3], y), ValueError, r"student_logits must have shape \(B, 5"),
        (lambda m, s, t, y: m.log_step(1, s, t[:4], y), ValueError, "teacher_logits must have the shape"),
        (lambda m, s, t, y: m.log_step(1, s, t, y[:3]), ValueError, r"targets must have shape \(16,\)"),
        (lambda m, s, t, y: m.log_step(1, s, t, y.float()), TypeError, "targets must be an integer tensor"),
        (lambda m, s, t, y: m.log_step(1, s.long(), t, y), ValueError, "student_logits must be a floating"),
        (lambda m, s, t, y: m.log_step(1, s, t.fill_(float("nan")), y), ValueError, "teacher_logits contains NaN"),
        (lambda m, s, t, y: m.log_step(1, s, t, y, losses={"ce": torch.ones(3)}), ValueError, r"losses\['loss_ce'\]"),
        (lambda m, s, t, y: m.log_step(1, s, t, y, temperatures=torch.ones(3)), ValueError, "temperatures must be a"),
        (lambda m, s, t, y: m.log_step(1, s, t, y, temperatures=-torch.ones(16)), ValueError, "finite and > 0"),
        (lambda m, s, t, y: m.log_step(0, s, t, y), ValueError, "step must increase"),
        (lambda m, s, t, y: m.log_step(1.0, s, t, y), TypeError, "step must be an int"),
        (lambda m, s, t, y: m.log_step(1, s, t, y, epoch=-1), ValueError, "epoch must be a non-negative int"),
        (lambda m, s, t, y: m.log_eval(0), ValueError, "log_eval needs logits"),
        (lambda m, s, t, y: m.eval_update(s, t, None), ValueError, "targets are required"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_the_argument_named(call, error, match):
    s, t, y = _batch(4)
    monitor = Monitor(None, C, log_every=1)
    with pytest.raises(error, match=match):
        call(monitor, s, t, y)
    assert monitor.latest_record() is None and monitor.run_log.steps.empty  # nothing of the refused call


def test_steps_going_backwards_and_logging_after_close():
    s, t, y = _batch(5)
    monitor = Monitor(None, C, log_every=1)
    monitor.log_step(5, s, t, y)
    with pytest.raises(ValueError, match="step must increase: got step 3 after step 5"):
        monitor.log_step(3, s, t, y)
    monitor.close()
    monitor.close()  # a second close does nothing
    with pytest.raises(RuntimeError, match="Monitor is closed"):
        monitor.log_step(6, s, t, y)
    with pytest.raises(RuntimeError, match="Monitor is closed"):
        monitor.log_eval(0, s, t, y)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_classes": 0}, ValueError, "num_classes must be a positive int"),
        ({"log_every": 0}, ValueError, "log_every must be a positive int"),
        ({"temperature": -1.0}, ValueError, "temperature must be > 0"),
        ({"t_low": 6.0, "t_high": 2.0}, ValueError, "t_low must be <= t_high"),
        ({"class_names": ["a", "b"]}, ValueError, "class_names has 2 names, num_classes is 5"),
        ({"config": [1, 2]}, TypeError, "config must be a mapping"),
        ({"flush_interval_s": -1.0}, ValueError, "flush_interval_s must be >= 0"),
    ],
)
def test_bad_options_are_refused(kwargs, error, match):
    options = {"num_classes": C, **kwargs}
    with pytest.raises(error, match=match):
        Monitor(None, options.pop("num_classes"), **options)


def test_an_existing_run_is_never_replaced_silently(tmp_path):
    with Monitor(tmp_path / "run", C) as monitor:
        monitor.log_step(1, *_batch(6))
    with pytest.raises(ValueError, match="already holds a run: pass overwrite=True"):
        Monitor(tmp_path / "run", C)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty and is not a cskd_viz run"):
        Monitor(tmp_path / "other", C, overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    with Monitor(tmp_path / "run", C, overwrite=True) as monitor:
        pass
    assert load_run(tmp_path / "run").steps.empty


def test_total_steps_logs_the_last_step_and_class_names_are_kept(tmp_path):
    names = ["a", "b", "c", "d", "e"]
    with Monitor(tmp_path / "run", C, log_every=4, total_steps=7, class_names=names) as monitor:
        s, t, y = _batch(7)
        for step in range(1, 8):
            monitor.log_step(step, s, t, y, losses=1.0)
    log = load_run(tmp_path / "run")
    assert log.steps["step"].tolist() == [1, 4, 7] and log.config["class_names"] == names


def test_records_into_an_existing_run_log():
    run_log = RunLog({"name": "mine", "method": "kd"})
    monitor = Monitor(run_log, C, log_every=1)
    monitor.log_step(1, *_batch(8), losses=0.25)
    monitor.close("interrupted")
    assert run_log.status == "interrupted" and run_log.config["method"] == "kd" and len(run_log.steps) == 1


def test_monitor_run_in_report_and_run_browser(tmp_path):
    with Monitor(tmp_path / "runs" / "mine", C, log_every=2, config={"method": "cskd_cswt"}) as monitor:
        _plain_loop(monitor)
    result = subprocess.run(
        [sys.executable, "-m", "cskd_viz.cli", "report", str(tmp_path / "runs"), "--out", str(tmp_path / "fig")],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"mine\s", result.stdout)
    assert {"accuracy.png", "class_cosine.png", "temperatures-mine.png"} <= {
        p.name for p in (tmp_path / "fig").iterdir()
    }
    pytest.importorskip("ipywidgets")
    from cskd_viz.widgets import RunBrowser

    browser = RunBrowser(tmp_path / "runs")
    assert "mine" in str(browser.run_select.options)


def test_docs_own_loop_example_runs_as_written(tmp_path, monkeypatch):
    text = (ROOT / "docs" / "own_loop.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    program = blocks[0]
    assert "Monitor(" in program and "CSKDLoss(" in program
    assert len([line for line in program.splitlines() if line.strip()]) <= 40
    monkeypatch.chdir(tmp_path)
    exec(compile(program, "docs/own_loop.md", "exec"), {"__name__": "own_loop"})
    log = load_run(tmp_path / "runs" / "own-loop")
    assert log.status == "finished" and len(log.evals) == 2 and log.steps["step"].iloc[-1] >= 40
    assert log.temperatures["q50"].between(2.0, 6.0).all()


def test_a_none_loss_is_refused_at_once_and_loses_nothing(tmp_path):
    monitor = Monitor(tmp_path / "run", C, log_every=1, flush_interval_s=3600)
    s, t, y = _batch(20)
    for step in range(1, 4):
        monitor.log_step(step, s, t, y, losses={"ce": 1.0})
    with pytest.raises(TypeError, match=r"losses\['loss_kd'\] must be a number"):
        monitor.log_step(4, s, t, y, losses={"ce": 1.0, "kd": None})
    monitor.log_step(4, s, t, y, losses={"ce": 1.0})  # the refused step can be logged again
    monitor.close()
    assert load_run(tmp_path / "run").steps["step"].tolist() == [1, 2, 3, 4]


def test_out_of_range_targets_name_num_classes():
    s, t, y = _batch(21)
    monitor = Monitor(None, C, log_every=1)
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 5\)"):
        monitor.log_step(1, s, t, torch.full_like(y, 7))
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 5\)"):
        monitor.log_eval(0, s, t, torch.full_like(y, -1))
