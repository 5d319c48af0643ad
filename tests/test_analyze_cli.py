"""``cskd-viz analyze`` end to end: checkpoints the test saves (``{"model": sd}`` and ``module.`` forms),
students of our own runs, the printed summary, the written report, and one-line errors for bad input."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from cskd_viz.analysis import DistillationReport, compare, predict_logits
from cskd_viz.cli import main
from cskd_viz.data import load_datasets
from cskd_viz.models import get_model

pytestmark = pytest.mark.slow


def _model(arch: str, seed: int, info) -> torch.nn.Module:
    torch.manual_seed(seed)
    return get_model(arch, info.num_classes, info.input_shape)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A digits teacher (``{"model": sd}``) and two students: ``{"model": sd}`` and a bare ``module.`` state dict."""
    root = tmp_path_factory.mktemp("ckpt")
    _, test, info = load_datasets("digits")
    models = {"teacher": _model("mlp_large", 1, info), "plain": _model("mlp_small", 2, info)}
    models["ddp"] = _model("mlp_small", 3, info)
    paths = {name: root / f"{name}.pth" for name in models}
    torch.save({"model": models["teacher"].state_dict(), "epoch": 240}, paths["teacher"])
    torch.save({"model": models["plain"].state_dict()}, paths["plain"])
    torch.save({f"module.{k}": v for k, v in models["ddp"].state_dict().items()}, paths["ddp"])
    return models, paths, test, info


def _analyze(tmp_path, *args: str) -> int:
    return main(["analyze", "--out", str(tmp_path / "report"), "--no-progress", *args])


def test_analyze_checkpoints_end_to_end(checkpoints, tmp_path, capsys):
    models, paths, test, info = checkpoints
    code = _analyze(
        tmp_path, "--dataset", "digits", "--teacher", f"mlp_large={paths['teacher']}",
        "--student", f"plain=mlp_small:{paths['plain']}", "--student", f"ddp=mlp_small:{paths['ddp']}",
        "--temperature", "3", "--batch-size", "32", "--seed", "5",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^\s*plain\s+0\.\d{4}", out, re.M) and re.search(r"^\s*ddp\s+0\.\d{4}", out, re.M)
    assert f"report: {tmp_path / 'report' / 'report.html'}" in out

    written = DistillationReport.from_parquet(tmp_path / "report" / "frames")
    logits = {name: predict_logits(m, test, device="cpu", progress=False) for name, m in models.items()}
    targets = logits["teacher"][1]
    direct = compare(
        logits["teacher"][0], {"plain": logits["plain"][0], "ddp": logits["ddp"][0]}, targets,
        class_names=list(info.class_names), temperature=3.0, batch_size=32, seed=5,
    )  # fmt: skip
    pd.testing.assert_frame_equal(written.summary, direct.summary)
    pd.testing.assert_frame_equal(written.per_class, direct.per_class)
    accuracy = (logits["ddp"][0].argmax(1) == targets).double().mean().item()
    assert written.summary.set_index("student").loc["ddp", "accuracy"] == pytest.approx(accuracy, abs=1e-12)
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 5 and "What to look at" in page


def test_analyze_students_of_our_runs(tmp_path, capsys):
    from cskd_viz.train import RunConfig, run_experiment

    runs = tmp_path / "runs"
    base = dict(dataset="digits", student="mlp_small", teacher="mlp_large", teacher_epochs=1, max_steps=3, epochs=1)
    for method in ("kd", "cskd"):
        run_experiment(RunConfig(method=method, name=f"{method}-run", **base), runs, progress=False)
    code = _analyze(tmp_path, "--run", str(runs / "kd-run"), "--run", str(runs / "cskd-run"))
    out = capsys.readouterr().out
    assert code == 0
    assert "teacher mlp_large" in out and "on digits test" in out
    report = DistillationReport.from_parquet(tmp_path / "report" / "frames")
    assert report.students == ["kd-run", "cskd-run"]
    assert np.isfinite(report.summary["cosine_distance"]).all()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "digits", "--teacher", "nope={teacher}", "--student", "a=mlp_small:{plain}"],
         "--teacher: unknown architecture: model must be one of"),
        (["--dataset", "digits", "--teacher", "mlp_small={teacher}", "--student", "a=mlp_small:{plain}"],
         "--teacher: checkpoint {teacher} does not match MLP: missing keys"),
        (["--dataset", "digits", "--teacher", "mlp_large={teacher}", "--student", "a=mlp_large:{plain}"],
         "--student a: checkpoint {plain} does not match MLP"),
        (["--dataset", "digits", "--teacher", "mlp_large={teacher}", "--student", "a=mlp_small:{missing}"],
         "--student a: checkpoint {missing} is not a file"),
        (["--dataset", "cifar100", "--teacher", "resnet8={teacher}", "--student", "a=resnet8:{plain}"],
         "--dataset cifar100: cifar100 not found in"),
        (["--dataset", "nope", "--teacher", "mlp_large={teacher}", "--student", "a=mlp_small:{plain}"],
         "--dataset: dataset must be one of"),
    ],
    ids=["unknown-arch", "teacher-mismatch", "student-mismatch", "missing-file", "dataset-offline", "bad-dataset"],
)  # fmt: skip
def test_user_errors_are_one_line(checkpoints, tmp_path, monkeypatch, capsys, args, message):
    _, paths, _, _ = checkpoints
    monkeypatch.setenv("CSKD_DATA", str(tmp_path / "no-data"))  # nothing is downloaded: the error says how to get it
    names = {"teacher": paths["teacher"], "plain": paths["plain"], "missing": tmp_path / "missing.pth"}
    with pytest.raises(SystemExit) as exit_info:
        _analyze(tmp_path, *[a.format(**names) for a in args])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert err.startswith("cskd-viz: error: " + message.format(**names)), err
    assert "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "report" / "report.html").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--teacher", "resnet8"], "--teacher must be ARCH=PATH"),
        (["--teacher", "a=b", "--student", "kd=resnet8"], "--student must be NAME=ARCH:PATH"),
        (["--teacher", "a={teacher}"], "give at least one --student"),
        (["--student", "a=mlp_small:{plain}"], "--teacher ARCH=PATH is required"),
        (["--teacher", "a={teacher}", "--student", "a=x:{plain}", "--student", "a=x:{plain}"],
         "student names must differ"),
    ],
    ids=["teacher-spec", "student-spec", "no-student", "no-teacher", "duplicate-names"],
)  # fmt: skip
def test_bad_flags_exit_2_naming_the_flag(checkpoints, tmp_path, capsys, args, message):
    _, paths, _, _ = checkpoints
    with pytest.raises(SystemExit) as exit_info:
        _analyze(
            tmp_path, "--dataset", "digits", *[a.format(teacher=paths["teacher"], plain=paths["plain"]) for a in args]
        )
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_run_without_weights_or_teacher_is_refused(tmp_path, capsys):
    from cskd_viz.train import RunConfig, run_experiment

    runs = tmp_path / "runs"
    log = run_experiment(RunConfig(dataset="digits", student="mlp_small", teacher=None, method="ce", max_steps=2,
                                   epochs=1, name="teacher-only"), runs, progress=False)  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        _analyze(tmp_path, "--run", str(log.path))
    assert exit_info.value.code == 2
    assert "trained without a teacher" in capsys.readouterr().err
    (log.path / "model.pt").unlink()
    with pytest.raises(SystemExit):
        _analyze(tmp_path, "--run", str(log.path))
    assert "has no model.pt" in capsys.readouterr().err
