"""The cskd-viz command: demo (CSKD_VIZ_FAST=1), train, report, and clean errors for bad flags and paths."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cskd_viz.cli import main
from cskd_viz.runs import load_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One fast demo run shared by the tests: (runs dir, figures dir, printed output)."""
    root = tmp_path_factory.mktemp("demo")
    runs, out = root / "runs", root / "figures"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CSKD_VIZ_FAST", "1")
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = main(["demo", "--runs-dir", str(runs), "--out", str(out), "--no-progress"])
    assert code == 0
    return runs, out, buffer.getvalue()


def test_demo_end_to_end(demo):
    runs, out, printed = demo
    for label in ("CE", "KD", "CSKD", "CSKD+CSWT", "test accuracy", "agreement", "d(T)", "demo time"):
        assert label in printed
    for method in ("ce", "kd", "cskd", "cskd_cswt"):
        log = load_run(runs / f"demo-{method}-s0")
        assert log.status == "finished" and log.config["method"] == method
        assert len(log.evals) == 1 and (runs / f"demo-{method}-s0" / "model.pt").is_file()
    budgets = {load_run(runs / f"demo-{m}-s0").progress["step"] for m in ("ce", "kd", "cskd", "cskd_cswt")}
    assert len(budgets) == 1  # the same budget for every student
    teachers = [p for p in runs.iterdir() if p.name.startswith("teacher-")]
    assert len(teachers) == 1 and load_run(teachers[0]).status == "finished"
    assert (out / "accuracy.png").is_file() and (out / "class_cosine.png").is_file()
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report(demo, tmp_path, capsys):
    runs, _, _ = demo
    out = tmp_path / "report"
    assert main(["report", str(runs / "demo-ce-s0"), str(runs / "demo-cskd-s0"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "demo-ce-s0" in printed and "demo-cskd-s0" in printed and "demo-kd-s0" not in printed
    assert (out / "accuracy.png").is_file()
    assert main(["report", str(runs), "--no-figures"]) == 0  # a runs root: every run inside
    assert "demo-kd-s0" in capsys.readouterr().out


def test_module_entry_point_subprocess(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-X", "importtime", "-m", "cskd_viz.cli"]
    result = subprocess.run([*run, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and "demo" in result.stdout and "report" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "cskd_viz" in imported and "torch" not in imported  # --help does not import torch
    result = subprocess.run(
        [*run, "train", "--lr", "abc"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2
    assert "cskd-viz train: error: argument --lr: invalid float value: 'abc'" in result.stderr


def test_train_with_checkpoint(tmp_path, capsys):
    from cskd_viz.models import get_model
    from cskd_viz.train import save_checkpoint

    save_checkpoint(get_model("mlp_large", 10, (1, 8, 8)), tmp_path / "t.pt")
    args = ["train", "--student", "mlp_small", "--teacher", "mlp_large", "--teacher-checkpoint", str(tmp_path / "t.pt"),
            "--method", "cskd_cswt", "--max-steps", "2", "--runs-dir", str(tmp_path / "runs"), "--name", "ckpt",
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert load_run(tmp_path / "runs" / "ckpt").config["teacher_source"] == str(tmp_path / "t.pt")
    save_checkpoint(get_model("mlp_small", 10, (1, 8, 8)), tmp_path / "small.pt")
    with pytest.raises(SystemExit) as exit_info:
        main([*args[:6], str(tmp_path / "small.pt"), *args[7:]])
    assert exit_info.value.code == 2
    assert "does not match" in capsys.readouterr().err


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    return {
        "no command": ([], "required"),
        "unknown command": (["fly"], "invalid choice"),
        "unknown method": (["train", "--method", "fitnet"], "method must be one of"),
        "negative temperature": (["train", "--temperature", "-1"], "temperature must be > 0"),
        "zero epochs": (["train", "--epochs", "0"], "epochs must be a positive int"),
        "not a number": (["train", "--lr", "abc"], "invalid float value"),
        "unknown dataset": (["train", "--dataset", "mnist"], "dataset must be one of"),
        "unknown model": (["train", "--student", "resnet1000"], "student must be one of"),
        "missing checkpoint": (["train", "--teacher-checkpoint", str(tmp_path / "no.pt")], "is not a file"),
        "bad device": (["train", "--device", "gpu"], "device must be"),
        "bad name": (["train", "--name", "../up"], "name must start with"),
        "runs dir is a file": (["train", "--runs-dir", str(a_file), "--max-steps", "1"], "is not a directory"),
        "report missing dir": (["report", str(tmp_path / "nope")], "no such directory"),
        "report foreign dir": (["report", str(foreign)], "config.json is missing"),
        "report corrupt run": (["report", str(corrupt)], "cannot parse JSON"),
        "zero seeds": (["demo", "--seeds", "0"], "--seeds must be >= 1"),
        "demo out is a file": (["demo", "--out", str(a_file)], "is not a directory"),
        "unknown recipe": (
            ["train", "--recipe", "cifar100/res32x4_res9"],
            "--recipe: unknown recipe 'cifar100/res32x4_res9'; the known recipes are: cifar100/res56_res20, ",
        ),
        "method option not key=value": (
            ["train", "--method-option", "masks"],
            "argument --method-option: expected KEY",
        ),
        "method option unknown key": (
            ["train", "--recipe", "cifar100/res32x4_res8x4", "--method-option", "maks=none"],
            "--method-option: method_options of method 'cskd_published': method 'cskd_published' got unknown "
            "parameter(s) ['maks']",
        ),
        "method option bad value": (
            ["train", "--method", "cskd_published", "--method-option", "masks=sideways"],
            "--method-option: method_options of method 'cskd_published': masks must be one of",
        ),
        "method option a field": (["train", "--method-option", "temperature=3"], "--method-option: method_options"),
    }


BAD_CASES = [
    "no command", "unknown command", "unknown method", "negative temperature", "zero epochs", "not a number",
    "unknown dataset", "unknown model", "missing checkpoint", "bad device", "bad name", "runs dir is a file",
    "report missing dir", "report foreign dir", "report corrupt run", "zero seeds", "demo out is a file",
    "unknown recipe", "method option not key=value", "method option unknown key", "method option bad value",
    "method option a field",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_flags_and_paths_exit_2(case, tmp_path, capsys):
    cases = _bad_inputs(tmp_path)
    assert sorted(cases) == sorted(BAD_CASES)
    argv, message = cases[case]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err
    if case in ("runs dir is a file", "demo out is a file"):  # a path error: one line, no usage text
        assert err.strip().splitlines() == [f"cskd-viz: error: {err.strip().split('error: ', 1)[1]}"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_unavailable_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--device", "cuda"])
    assert exit_info.value.code == 2 and "CUDA is not available" in capsys.readouterr().err


# ----------------------------------------------------------------------------- recipes and --method-option


def _run_config(argv: list[str]):
    import argparse

    from cskd_viz._cli_run_flags import add_run_flags, run_config_from_args

    parser = argparse.ArgumentParser(prog="cskd-viz train")
    add_run_flags(parser)
    return run_config_from_args(parser.parse_args(argv), parser)


def test_method_options_go_over_the_recipes():
    from cskd_viz.recipes import get_recipe

    recipe = get_recipe("cifar100/res32x4_res8x4")
    options = ["masks=none", "strong_view=false", "corr_temperature=3.5"]
    config = _run_config(["--recipe", "cifar100/res32x4_res8x4", *(f for o in options for f in ("--method-option", o))])
    assert config.method_options == {
        **recipe["method_options"], "masks": "none", "strong_view": False, "corr_temperature": 3.5
    }  # fmt: skip
    method = config.make_method()
    assert (method.masks, method.strong_view, method.corr_temperature, method.cc) == ("none", False, 3.5, True)
    assert (config.lr, config.epochs, config.student) == (recipe["lr"], 480, "resnet8x4")  # the rest: the recipe's
    again = _run_config(["--recipe", "cifar100/res32x4_res8x4", "--method-option", "masks=per_sample",
                         "--method-option", "masks=none"])  # fmt: skip
    assert again.method_options["masks"] == "none"  # the last one wins
    other = _run_config(["--recipe", "cifar100/res32x4_res8x4", "--method", "kd"])  # another method: not its options
    assert other.method == "kd" and other.method_options == {} and other.lr == recipe["lr"]
    assert _run_config(["--method", "dist", "--method-option", "beta=2"]).make_method().beta == 2.0


def test_method_option_values():
    from cskd_viz._cli_run_flags import _method_option

    parsed = [_method_option(text) for text in ("a=True", "a=FALSE", "a=none", "a=null", "a=3", "a=1e-3", "a=x y")]
    assert parsed == [("a", True), ("a", False), ("a", "none"), ("a", None), ("a", 3), ("a", 1e-3), ("a", "x y")]
    assert isinstance(parsed[4][1], int) and _method_option(" b = 2.5 ") == ("b", 2.5)
    for bad in ("a", "=1", "1a=2", "a=nan", "a=inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            _method_option(bad)


def test_recipe_list_prints_every_recipe_and_exits_0(capsys):
    from cskd_viz.recipes import recipe_names

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--recipe", "list"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in recipe_names()) and "--teacher-checkpoint" in printed


def test_train_with_a_method_option(tmp_path, capsys):
    args = ["train", "--student", "mlp_small", "--teacher", "mlp_large", "--teacher-epochs", "1", "--method", "dist",
            "--method-option", "beta=2", "--max-steps", "2", "--runs-dir", str(tmp_path), "--name", "opt",
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "training time:" in capsys.readouterr().out
    log = load_run(tmp_path / "opt")
    assert log.status == "finished" and log.config["method_options"] == {"beta": 2} and log.config["beta"] == 2.0
