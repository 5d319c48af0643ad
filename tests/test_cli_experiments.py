"""``cskd-viz sweep`` / ``cskd-viz search``: flags, summary table, resume, user errors (exit 2)."""

from __future__ import annotations

import pytest

from cskd_viz.cli import main

pytestmark = pytest.mark.slow
RUN = ["--student", "mlp_small", "--teacher", "mlp_large", "--teacher-epochs", "1", "--max-steps", "3", "--no-progress"]


def test_sweep_prints_the_summary_and_resumes(tmp_path, capsys):
    args = ["sweep", *RUN, "--grid", "method=kd,cskd", "--grid", "batch_size=32", "--seeds", "2",
            "--study-name", "cli", "--runs-dir", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 complete" in out and "final_accuracy" in out and "cskd" in out
    assert main(args) == 0  # resumed: nothing left to run
    assert "4 complete" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob("cli-*")) == [f"cli-{i:04d}" for i in range(4)]


def test_search_prints_the_best_trial(tmp_path, capsys):
    args = ["search", *RUN, "--method", "kd", "--space", "temperature=1:8", "--trials", "2", "--study-name", "s",
            "--runs-dir", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 complete" in out and "best trial" in out and "temperature" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--grid", "bogus=1,2"], "unknown RunConfig field 'bogus'"),
        (["--grid", "batch_size=a,b"], "batch_size takes numbers"),
        (["--grid", "method=kd", "--grid", "method=cskd"], "names method twice"),
        (["--grid", "method=kd", "--seeds", "0"], "seeds must be >= 1"),
        (["--grid", "method=kd", "--storage", "nosuchdb://x"], "cannot be opened"),
        (["--grid", "method=kd", "--name", "x"], "--name is set per trial"),
        (["--grid", "method=kd", "--n-jobs", "0"], "n_jobs must be an int >= 1"),
        (["--grid", "method=kd", "--nproc-per-run", "0"], "nproc_per_run must be an int >= 1"),
    ],
)
def test_sweep_user_errors_exit_2(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", *RUN, "--study-name", "e", "--runs-dir", str(tmp_path), *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("cskd-viz: error: ") and message in err


def test_reused_study_name_with_another_grid_exits_2(tmp_path, capsys):
    common = ["sweep", *RUN, "--seeds", "1", "--study-name", "same", "--runs-dir", str(tmp_path)]
    assert main([*common, "--grid", "method=kd"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--grid", "method=cskd"])
    assert exit_info.value.code == 2
    assert "give a new study_name (--study-name)" in capsys.readouterr().err


def test_search_space_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["search", *RUN, "--space", "t_low=1:9", "--trials", "1", "--study-name", "x", "--runs-dir", str(tmp_path)]
        )
    assert exit_info.value.code == 2
    assert "t_low must be <= t_high" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["search", *RUN, "--space", "method=1:2", "--trials", "1", "--study-name", "x"])
    assert exit_info.value.code == 2
