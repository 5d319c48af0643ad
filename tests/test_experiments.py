"""cskd_viz.experiments: grid expansion, resume, parallel trials, failures, CI maths, plots, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from cskd_viz.experiments import _runner, load_sweep, mean_ci, search, sweep
from cskd_viz.runs import load_run
from cskd_viz.training import RunConfig

pytestmark = pytest.mark.slow
BASE = RunConfig(student="mlp_small", teacher="mlp_large", teacher_epochs=1, epochs=None, max_steps=3)


def test_mean_ci_matches_scipy():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 17):
        x = rng.normal(0.9, 0.05, n)
        out = mean_ci(x.tolist())
        low, high = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
        assert out["n"] == n
        assert out["mean"] == pytest.approx(x.mean(), rel=1e-12)
        assert out["std"] == pytest.approx(x.std(ddof=1), rel=1e-12)
        assert out["sem"] == pytest.approx(stats.sem(x), rel=1e-12)
        assert (out["ci_low"], out["ci_high"]) == (pytest.approx(low, rel=1e-10), pytest.approx(high, rel=1e-10))
    assert np.isnan(mean_ci([0.5])["ci_low"]) and mean_ci([0.5])["mean"] == 0.5
    low, high = stats.t.interval(0.9, 3, loc=np.mean([1, 2, 3, 5]), scale=stats.sem([1, 2, 3, 5]))
    assert mean_ci([1, 2, 3, 5], 0.9)["ci_high"] == pytest.approx(high)


def test_grid_expansion_runs_every_point_once_per_seed(tmp_path):
    result = sweep(BASE, {"method": ["kd", "cskd"], "batch_size": [32, 64]}, seeds=2, study_name="g", runs_dir=tmp_path)
    frame = result.frame()
    assert len(frame) == 8 and set(frame["state"]) == {"COMPLETE"}
    points = set(zip(frame["method"], frame["batch_size"], frame["seed"], strict=True))
    assert points == {(m, b, s) for m in ("kd", "cskd") for b in (32, 64) for s in (0, 1)}
    for row in frame.itertuples():  # each trial is a normal run directory, linked from its user attributes
        log = load_run(row.run_dir)
        assert log.status == "finished"
        assert (log.config["method"], log.config["batch_size"], log.config["seed"]) == (row.method, row.batch_size,
                                                                                        row.seed)  # fmt: skip
    summary = result.summary(metrics=["final_accuracy"])
    assert len(summary) == 4 and set(summary["n"]) == {2}
    part = frame[(frame.method == "kd") & (frame.batch_size == 32)]["final_accuracy"]
    row = summary[(summary.method == "kd") & (summary.batch_size == 32)].iloc[0]
    low, high = stats.t.interval(0.95, 1, loc=part.mean(), scale=stats.sem(part))
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    by_method = result.summary(by=["method"], metrics=["final_accuracy"])
    assert list(by_method["n"]) == [4, 4]
    assert len(load_sweep("g", runs_dir=tmp_path).frame()) == 8


def test_failed_trial_is_stored_counted_and_retried(tmp_path):
    base = RunConfig(student="mlp_small", teacher="mlp_large", teacher_epochs=1, epochs=None, max_steps=20,
                     log_every=1)  # fmt: skip
    result = sweep(base, {"lr": [0.05, 1e6]}, seeds=2, study_name="f", runs_dir=tmp_path)  # lr 1e6 diverges
    frame = result.frame()
    bad = frame[frame["lr"] == 1e6]
    assert set(bad["state"]) == {"FAIL"} and bad["error"].str.startswith("TrainingDiverged").all()
    assert set(frame.loc[frame["lr"] == 0.05, "state"]) == {"COMPLETE"}
    summary = result.summary(metrics=["final_accuracy"]).set_index("lr")
    assert summary.loc[1e6, "n_failed"] == 2 and summary.loc[1e6, "n"] == 0
    assert summary.loc[0.05, "n_failed"] == 0 and summary.loc[0.05, "n"] == 2
    again = sweep(base, {"lr": [0.05, 1e6]}, seeds=2, study_name="f", runs_dir=tmp_path).frame()
    assert len(again) == 6  # only the two failed points ran again
    assert sorted(again.loc[again["retry_of"].notna(), "retry_of"]) == sorted(bad["trial"])


def test_interrupt_inside_a_trial_then_resume_runs_only_missing(tmp_path, monkeypatch):
    grid = {"method": ["kd", "cskd", "ce"]}
    real, calls = _runner._one_run, []

    def interrupt_third(config, runs_dir, *rest):
        calls.append(config.run_name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(config, runs_dir, *rest)

    monkeypatch.setattr(_runner, "_one_run", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        sweep(BASE, grid, seeds=2, study_name="r", runs_dir=tmp_path)
    first = load_sweep("r", runs_dir=tmp_path).frame()
    assert list(first["state"]) == ["COMPLETE", "COMPLETE", "FAIL"]
    finished = {p: os.stat(Path(p) / "config.json").st_mtime_ns for p in first["run_dir"][:2]}
    monkeypatch.setattr(_runner, "_one_run", real)
    calls.clear()
    spy = []
    monkeypatch.setattr(_runner, "_one_run", lambda c, d, *rest: spy.append(c) or real(c, d, *rest))
    frame = sweep(BASE, grid, seeds=2, study_name="r", runs_dir=tmp_path).frame()
    assert len(spy) == 4  # the interrupted point and the three never started
    done = frame[frame["state"] == "COMPLETE"]
    assert len(done) == 6 and not done.duplicated(["method", "seed"]).any()
    assert {p: os.stat(Path(p) / "config.json").st_mtime_ns for p in finished} == finished


def _count(storage: str, name: str, state: str) -> int:
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception:  # noqa: BLE001 - not created yet
        return 0
    return sum(t.state.name == state for t in study.trials)


def test_killed_sweep_resumes_with_only_the_missing_trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'sweeps.db'}"
    args = ["--student", "mlp_small", "--teacher", "mlp_large", "--teacher-epochs", "1", "--max-steps", "400",
            "--grid", "method=kd,cskd", "--seeds", "2", "--study-name", "k", "--runs-dir", str(tmp_path),
            "--no-progress"]  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "cskd_viz.cli", "sweep", *args], stderr=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None:  # kill it with 2 or 3 done and one running
            if _count(storage, "k", "COMPLETE") >= 2 and _count(storage, "k", "RUNNING") >= 1:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    before = load_sweep("k", runs_dir=tmp_path).frame()
    n_done = int((before["state"] == "COMPLETE").sum())
    assert 2 <= n_done < 4 and (before["state"] == "RUNNING").any()
    base = RunConfig(student="mlp_small", teacher="mlp_large", teacher_epochs=1, epochs=None, max_steps=400)
    after = sweep(base, {"method": ["kd", "cskd"]}, seeds=2, study_name="k", runs_dir=tmp_path).frame()
    new = after[after["trial"] >= len(before)]
    assert len(new) + int((after["trial"] < len(before)).sum()) == len(after)
    done = after[after["state"] == "COMPLETE"]
    assert len(done) == 4 and not done.duplicated(["method", "seed"]).any()
    assert len(done) - n_done == len(new[new["state"] == "COMPLETE"]) + (
        (before["state"] == "WAITING").sum())  # fmt: skip
    killed = after[after["trial"].isin(before.loc[before["state"] == "RUNNING", "trial"])]
    assert set(killed["state"]) == {"FAIL"} and killed["error"].str.contains("died").all()


def test_parallel_trials_in_processes(tmp_path):
    result = sweep(BASE, {"method": ["kd", "cskd"]}, seeds=2, study_name="p", runs_dir=tmp_path, n_jobs=2)
    frame = result.frame()
    done = frame[frame["state"] == "COMPLETE"]
    assert len(done) == 4 and not done.duplicated(["method", "seed"]).any()
    # Both workers may start the last point at once: the later trial is then not run (PRUNED).
    assert set(frame["state"]) <= {"COMPLETE", "PRUNED"}
    assert frame.loc[frame["state"] == "PRUNED", "run_dir"].isna().all()
    assert all(not w.endswith(f":{os.getpid()}") for w in frame["worker"])  # ran in worker processes
    assert len({p.name for p in tmp_path.iterdir() if p.name.startswith("p-")}) == 4  # one run directory per point
    if sys.platform.startswith("linux"):  # workers fork from a server that imported torch once
        assert _runner.worker_context().get_start_method() == "forkserver"


def test_a_worker_process_takes_the_environment_of_its_sweep(tmp_path, monkeypatch):
    plan = _plan(tmp_path, {"method": ["kd"]})
    plan.open(create=True)
    seen = {}
    monkeypatch.setattr(_runner, "work", lambda plan, worker, study=None: seen.update(os.environ, study=study))
    monkeypatch.setenv("CSKD_TEST_SERVER_ONLY", "1")  # what a forkserver started earlier would still have
    saved = dict(os.environ)
    try:
        _runner._worker_main(plan, 0, {**os.environ, "CSKD_DATA": str(tmp_path), "CSKD_TEST_SERVER_ONLY": ""})
    finally:  # this process stands in for the worker: give it its own environment back
        os.environ.clear()
        os.environ.update(saved)
    assert seen["CSKD_DATA"] == str(tmp_path) and seen["CSKD_TEST_SERVER_ONLY"] == ""
    assert seen["study"].study_name == "u"


def _plan(tmp_path, grid, seeds=1):
    from cskd_viz.experiments._study import Plan, default_storage

    space = {**grid, "seed": list(range(seeds))}
    return Plan("sweep", "u", default_storage(tmp_path), BASE, space, seeds, "best_accuracy", "maximize", str(tmp_path))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # study.ask outside optimize
def test_work_left_counts_a_trial_another_worker_is_setting_up(tmp_path):
    from cskd_viz.experiments._study import work_left

    plan = _plan(tmp_path, {"method": ["kd", "cskd"]}, seeds=2)
    study = plan.open(create=True)
    assert work_left(study, plan) == 4
    study.ask()  # trial 0: GridSampler stores its point at once
    assert work_left(study, plan) == 3
    study._storage.create_new_trial(study._study_id)  # trial 1, created by another worker, point not yet stored
    assert work_left(study, plan) == 2  # it takes point 1: not free any more
    study.ask(), study.ask()
    assert work_left(study, plan) == 0
    study._storage.create_new_trial(study._study_id)  # trial 4 > the grid: it would take some point
    assert work_left(study, plan) <= 0


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # study.ask outside optimize
def test_a_trial_that_finds_its_grid_point_taken_is_not_run(tmp_path, monkeypatch):
    import functools

    import optuna

    plan = _plan(tmp_path, {"method": ["kd"]})
    study = plan.open(create=True)
    first = study.ask()  # trial 0 runs (kd, seed 0) in another worker
    monkeypatch.setattr(_runner, "_one_run", lambda *args: pytest.fail("a duplicate trial must not run"))
    study.optimize(functools.partial(_runner.objective, plan=plan), n_trials=1)  # trial 1: GridSampler repeats point 0
    second = study.trials[1]
    assert second.state == optuna.trial.TrialState.PRUNED and second.user_attrs["duplicate_of"] == first.number
    assert second.system_attrs["grid_id"] == study.trials[0].system_attrs["grid_id"]  # its params not stored yet
    assert second.params == {"method": "kd", "seed": 0} and "error" not in second.user_attrs
    result = load_sweep("u", runs_dir=tmp_path)
    assert list(result.frame()["state"]) == ["RUNNING", "PRUNED"] and result.failures().empty


def test_a_search_trial_links_every_seed_run(tmp_path):
    import sqlite3

    result = search(BASE, {"temperature": (2.0, 6.0)}, n_trials=1, seeds=2, study_name="m", runs_dir=tmp_path)
    trial = result.study.trials[0]
    runs = trial.user_attrs["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and trial.user_attrs["run_dir"] == runs[0]["path"]
    assert all(load_run(r["path"]).status == "finished" for r in runs)
    with sqlite3.connect(tmp_path / "sweeps.db") as db:  # write-ahead log: cheap commits, readers never block
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_search_tpe_and_plots(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cskd_viz import plots

    base = RunConfig(student="mlp_small", teacher="mlp_large", teacher_epochs=1, epochs=None, max_steps=3,
                     method="cskd_cswt", teacher_checkpoint=None)  # fmt: skip
    result = search(base, {"t_low": (1.0, 3.0), "t_high": (4.0, 8.0)}, n_trials=3, study_name="s", runs_dir=tmp_path)
    frame = result.frame()
    assert (frame["state"] == "COMPLETE").sum() == 3 and (frame["t_low"] <= frame["t_high"]).all()
    assert list(result.best_so_far()["trial"]) == [0, 1, 2]
    fig = plots.plot_sweep(result, x="t_high")
    assert [ax.get_title() for ax in fig.axes][:2] == [
        "search: best test accuracy (best epoch) so far",
        "parameter importance (Optuna)",
    ]
    plt.close(fig)
    summary = sweep(BASE, {"batch_size": [16, 64], "method": ["kd"]}, seeds=2, study_name="pl",
                    runs_dir=tmp_path).summary()  # fmt: skip
    fig = plots.plot_sweep(summary, x="batch_size", hue="method", metric="final_accuracy")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "batch size" and ax.get_ylabel() == "test accuracy (final)" and "95% CI" in ax.get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="several metrics"):
        plots.plot_sweep(summary, x="batch_size")


def test_bad_input_is_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown RunConfig field 'bogus'.*valid fields: dataset"):
        sweep(BASE, {"bogus": [1]}, study_name="b", runs_dir=tmp_path)
    with pytest.raises(ValueError, match="grid is empty"):
        sweep(BASE, {}, study_name="b", runs_dir=tmp_path)
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        sweep(BASE, {"method": ["kd"]}, seeds=0, study_name="b", runs_dir=tmp_path)
    with pytest.raises(ValueError, match="cannot be opened"):
        sweep(BASE, {"method": ["kd"]}, study_name="b", runs_dir=tmp_path, storage="nosuchdb://x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot be opened"):
        sweep(BASE, {"method": ["kd"]}, study_name="b", storage=f"sqlite:///{tmp_path / 'file' / 'x.db'}")
    with pytest.raises(ValueError, match="t_low must be <= t_high"):
        sweep(BASE, {"t_low": [1.0, 8.0]}, study_name="b", runs_dir=tmp_path)
    with pytest.raises(ValueError, match="space corner .*t_low must be <= t_high"):
        search(BASE, {"t_low": (1, 8)}, n_trials=1, study_name="b", runs_dir=tmp_path)
    with pytest.raises(TypeError, match="batch_size takes integers"):
        sweep(BASE, {"batch_size": [16.5]}, study_name="b", runs_dir=tmp_path)
    sweep(BASE, {"method": ["kd"]}, seeds=1, study_name="same", runs_dir=tmp_path)
    with pytest.raises(ValueError, match="different space.*give a new study_name"):
        sweep(BASE, {"method": ["cskd"]}, seeds=1, study_name="same", runs_dir=tmp_path)


def test_import_stays_light():
    code = "import sys, cskd_viz.experiments; print('matplotlib' in sys.modules, 'optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_a_temperature_sweep_shares_one_auto_teacher():
    """The CE teacher run ignores the distillation settings, so sweeping them never retrains the teacher."""
    swept = RunConfig(method="kd", temperature=2.0, t_low=1.0, t_high=3.0, w_kd=0.5).teacher_config()
    assert swept == RunConfig().teacher_config()
