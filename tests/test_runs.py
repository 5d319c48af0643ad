"""RunLog: schema, atomic writes, loading (and clear errors), list_runs, compare_runs, stack_runs."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cskd_viz.runs import (
    FRAMES,
    EvalRecord,
    RunLog,
    RunLogError,
    StepRecord,
    compare_runs,
    list_runs,
    load_run,
    stack_runs,
)


def _step(step: int, epoch: int = 0, cswt: bool = True) -> StepRecord:
    metrics = {
        "loss": 2.0 / step,
        "loss_ce": 1.0 / step,
        "loss_cskd": 1.0 / step,
        "train_accuracy": 0.5,
        "agreement": 0.75,
        "mean_temperature": 4.0 if cswt else math.nan,
        "cosine_distance": 0.1,
        "lr": 0.05,
        "elapsed_s": 0.01 * step,
    }
    stats = dict(q05=2.1, q25=3.0, q50=4.0, q75=5.0, q95=5.9, mean=4.0, min=2.0, max=6.0) if cswt else None
    hist = [(2.0, 4.0, 3), (4.0, 6.0, 5)] if cswt else None
    return StepRecord(step, epoch, metrics, [0.9, 0.8, 0.7], stats, hist)


def _eval(epoch: int, step: int, accuracy: float) -> EvalRecord:
    metrics = dict(accuracy=accuracy, agreement=0.9, loss=0.3, cosine_distance=0.05, teacher_accuracy=0.97)
    return EvalRecord(epoch, step, metrics)


def _filled(path=None, name="run-a", method="cskd_cswt", accuracies=(0.8, 0.9)) -> RunLog:
    log = RunLog({"name": name, "method": method, "dataset": "digits", "t_low": 2.0}, path=path)
    for epoch, accuracy in enumerate(accuracies):
        for step in (epoch * 10 + 1, epoch * 10 + 10):
            log.log_step(_step(step, epoch))
        log.log_eval(_eval(epoch, epoch * 10 + 10, accuracy))
    return log


def test_frames_follow_the_schema():
    log = _filled()
    assert list(log.steps.columns) == [
        "step", "epoch", "loss", "loss_ce", "loss_cskd", "train_accuracy", "agreement",
        "mean_temperature", "cosine_distance", "lr", "elapsed_s",
    ]  # fmt: skip
    for name, columns in FRAMES.items():
        frame = getattr(log, name)
        assert set(columns) <= set(frame.columns), name
    assert len(log.class_cosine) == 4 * 3 and log.class_cosine["class"].tolist()[:3] == [0, 1, 2]
    assert len(log.temperatures) == 4 and len(log.temperature_hist) == 8
    assert log.evals["split"].unique().tolist() == ["test"]
    assert log.steps["step"].dtype == "int64" and log.class_cosine["class"].dtype == "int64"


def test_empty_log_has_all_columns(tmp_path):
    log = RunLog({"name": "empty", "method": "ce"}, path=tmp_path / "empty")
    loaded = load_run(tmp_path / "empty")
    for name, columns in FRAMES.items():
        assert list(getattr(log, name).columns) == list(columns)
        assert list(getattr(loaded, name).columns) == list(columns)
        assert len(getattr(loaded, name)) == 0
    assert loaded.status == "running"


def test_roundtrip(tmp_path):
    log = _filled(tmp_path / "r")
    log.finish()
    loaded = load_run(tmp_path / "r")
    assert loaded.status == "finished" and loaded.config == log.config
    assert loaded.progress == {"step": 20, "epoch": 1}
    for name in FRAMES:
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(log, name), check_dtype=False)
    assert not list(tmp_path.glob("r/.*tmp"))  # no temporary files left behind


def test_non_cswt_run_writes_empty_temperature_frames(tmp_path):
    log = RunLog({"name": "kd", "method": "kd"}, path=tmp_path / "kd")
    log.log_step(_step(1, cswt=False))
    log.finish()
    loaded = load_run(tmp_path / "kd")
    assert len(loaded.temperatures) == 0 and list(loaded.temperatures.columns) == list(FRAMES["temperatures"])
    assert math.isnan(loaded.steps["mean_temperature"].iloc[0])


def test_write_failure_keeps_previous_parts(tmp_path, monkeypatch):
    from cskd_viz.runs import store

    log = _filled(tmp_path / "r")
    log.flush()
    before = sorted(str(p) for p in (tmp_path / "r").rglob("*"))
    log.log_step(_step(99, 5))

    def interrupted_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        log.flush()
    monkeypatch.undo()
    assert sorted(str(p) for p in (tmp_path / "r").rglob("*")) == before  # no part, no temporary file
    assert load_run(tmp_path / "r").steps["step"].max() == 20
    log.flush()  # a later flush writes everything that was pending
    assert load_run(tmp_path / "r").steps["step"].max() == 99


def test_flushes_append_parts_and_finish_compacts(tmp_path):
    log = _filled(tmp_path / "r")
    log.flush()
    log.log_step(_step(30, 2))
    log.flush()
    parts = {f"{p.parent.name}/{p.name}" for p in (tmp_path / "r").glob("*/*.parquet")}
    assert {"steps/part-000002.parquet", "steps/part-000003.parquet", "class_cosine/part-000003.parquet"} <= parts
    assert load_run(tmp_path / "r").steps["step"].tolist() == [1, 10, 11, 20, 30]
    log.finish()
    files = {str(p.relative_to(tmp_path / "r")) for p in (tmp_path / "r").rglob("*") if p.is_file()}
    assert files == {"config.json", *(f"{name}/compacted-000003.parquet" for name in FRAMES)}
    loaded = load_run(tmp_path / "r")
    assert loaded.steps["step"].tolist() == [1, 10, 11, 20, 30] and loaded.status == "finished"


def test_every_flush_writes_only_new_rows(tmp_path):
    log = RunLog({"name": "r", "method": "ce"}, path=tmp_path / "r")
    sizes = []
    for k in range(1, 41):
        log.log_step(_step(k))
        log.flush()
        sizes.append(log.bytes_written)
    increments = [b - a for a, b in zip(sizes, sizes[1:], strict=False)]
    assert max(increments) < 3 * min(increments)  # flat: a flush does not rewrite what is on disk


def test_status_validation():
    with pytest.raises(ValueError, match="status must be one of"):
        RunLog({"name": "x"}, status="done")
    with pytest.raises(ValueError, match="status must be one of"):
        RunLog({"name": "x"}).finish("ok")
    with pytest.raises(TypeError, match="config must be a mapping"):
        RunLog(["name"])


# ----------------------------------------------------------------------------- bad directories


@pytest.fixture
def good_run(tmp_path):
    log = _filled(tmp_path / "good")
    log.finish()
    return tmp_path / "good"


def test_missing_directory(tmp_path):
    with pytest.raises(RunLogError, match="no run directory at"):
        load_run(tmp_path / "nope")


def test_foreign_directory(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(RunLogError, match=r"not a cskd_viz run directory: .*config\.json is missing"):
        load_run(tmp_path / "photos")


def test_file_instead_of_directory(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(RunLogError, match="is not a directory"):
        load_run(tmp_path / "f.txt")


def test_corrupt_config(good_run):
    (good_run / "config.json").write_text("{not json")
    with pytest.raises(RunLogError, match=r"config\.json is corrupt: cannot parse JSON"):
        load_run(good_run)


def test_foreign_config(good_run):
    (good_run / "config.json").write_text(json.dumps({"lr": 0.1}))
    with pytest.raises(RunLogError, match="not a cskd_viz run config"):
        load_run(good_run)


def test_wrong_schema_version(good_run):
    meta = json.loads((good_run / "config.json").read_text())
    meta["schema_version"] = 99
    (good_run / "config.json").write_text(json.dumps(meta))
    with pytest.raises(RunLogError, match="schema_version 99"):
        load_run(good_run)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_parquet_names_the_file(good_run, damage):
    (target,) = (good_run / "class_cosine").glob("compacted-*.parquet")
    content = target.read_bytes()
    damaged = {"garbage": b"\x00\xff not parquet", "truncated": content[: len(content) // 2], "empty": b""}
    target.write_bytes(damaged[damage])
    log = load_run(good_run)  # lazy: config.json alone
    with pytest.raises(RunLogError, match=r"class_cosine/compacted-\d+\.parquet is corrupt"):
        _ = log.class_cosine
    assert len(log.steps) == 4  # the other frames still read


def test_load_run_is_lazy_and_downsamples(good_run):
    log = load_run(good_run)
    assert log._cache == {}  # nothing read yet
    assert len(log.evals) == 2 and set(log._cache) == {"evals"}
    window = load_run(good_run, steps=slice(10, 20))
    assert window.steps["step"].tolist() == [10, 11] and window.class_cosine["step"].unique().tolist() == [10, 11]
    assert len(window.evals) == 2  # evals are not step-selected
    every = load_run(good_run, every=2)
    assert every.steps["step"].tolist() == [1, 11] and every.temperatures["step"].tolist() == [1, 11]
    with pytest.raises(ValueError, match="every must be a positive int"):
        load_run(good_run, every=0)


def test_a_live_run_is_read_by_new_parts_only(tmp_path):
    log = _filled(tmp_path / "live")
    log.flush()
    reader = load_run(tmp_path / "live")
    assert len(reader.steps) == 4
    log.log_step(_step(30, 2))
    assert len(log.steps) == 5  # the writer sees its unflushed rows
    log.flush()
    assert reader.steps["step"].tolist() == [1, 10, 11, 20]  # a consistent snapshot until refreshed
    assert reader.refresh().steps["step"].tolist() == [1, 10, 11, 20, 30]  # the new part only


# ----------------------------------------------------------------------------- schema 1 (CSV)

SCHEMA1 = Path(__file__).parent / "fixtures" / "run_schema1"


def test_schema1_runs_still_load_read_only(tmp_path):
    log = load_run(SCHEMA1)
    assert log.schema_version == 1 and log.status == "finished" and log.name == "schema1-run"
    assert log.steps["step"].tolist() == [1, 10, 11, 20] and len(log.class_cosine) == 12
    assert log.summary()["final_accuracy"] == 0.9
    copy = tmp_path / "old"
    shutil.copytree(SCHEMA1, copy)
    with pytest.raises(RunLogError, match="schema-1 run: it is read-only"):
        load_run(copy).flush()
    assert list_runs(tmp_path)["status"].tolist() == ["finished"]


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\xff\xfe garbage \x00", b"step,epoch\n1,0\n", b'step,class,cosine\n1,0,"unterminated\n'],
)
def test_corrupt_schema1_csv_names_the_file(tmp_path, content):
    run = tmp_path / "old"
    shutil.copytree(SCHEMA1, run)
    (run / "class_cosine.csv").write_bytes(content)
    with pytest.raises(RunLogError, match=r"class_cosine\.csv is corrupt"):
        load_run(run)
    (run / "class_cosine.csv").unlink()
    with pytest.raises(RunLogError, match=r"class_cosine\.csv is missing"):
        load_run(run)


# ----------------------------------------------------------------------------- comparing


def test_compare_runs_values_and_inputs(tmp_path):
    a = _filled(tmp_path / "a", name="a", method="ce", accuracies=(0.7, 0.9, 0.85))
    a.finish()
    b = _filled(name="b", method="cskd", accuracies=(0.6,))
    table = compare_runs([tmp_path / "a", b])
    assert list(table.columns[:8]) == [
        "name", "method", "final_accuracy", "final_agreement", "best_accuracy",
        "final_cosine_distance", "steps", "status",
    ]  # fmt: skip
    row_a, row_b = table.iloc[0], table.iloc[1]
    assert (row_a["name"], row_a["final_accuracy"], row_a["best_accuracy"]) == ("a", 0.85, 0.9)
    assert (row_a["steps"], row_a["status"], row_a["teacher_accuracy"]) == (30, "finished", 0.97)
    assert (row_b["name"], row_b["status"], row_b["final_cosine_distance"]) == ("b", "running", 0.05)
    assert len(compare_runs(b)) == 1
    with pytest.raises(TypeError, match="expected a RunLog or a run directory path"):
        compare_runs([42])


def test_compare_run_without_evals_gives_nan():
    row = compare_runs([RunLog({"name": "x", "method": "ce"})]).iloc[0]
    assert math.isnan(row["final_accuracy"]) and row["steps"] == 0


def test_list_runs(tmp_path):
    _filled(tmp_path / "b", name="b").finish()
    _filled(tmp_path / "a", name="a", method="kd").finish("interrupted")
    (tmp_path / "notes").mkdir()  # foreign: skipped
    broken = tmp_path / "c"
    _filled(broken, name="c").finish()
    next((broken / "evals").glob("compacted-*.parquet")).write_text("")
    with pytest.warns(UserWarning, match=r"skipped the run .*c: .*evals/compacted-\d+\.parquet is corrupt"):
        table = list_runs(tmp_path)
    assert table["name"].tolist() == ["a", "b", "c"]
    assert table["status"].tolist() == ["interrupted", "finished", "unreadable"]
    assert re.search(r"evals/compacted-\d+\.parquet is corrupt", table["error"].iloc[2])
    assert len(list_runs(tmp_path / "missing")) == 0


def test_stack_runs():
    a, b, a2 = _filled(name="a"), _filled(name="b", method="kd"), _filled(name="a")
    long = stack_runs([a, b, a2], "evals")
    assert long["run"].unique().tolist() == ["a", "b", "a#2"]
    assert long.groupby("run")["method"].first().to_dict() == {"a": "cskd_cswt", "a#2": "cskd_cswt", "b": "kd"}
    assert list(long.columns[:2]) == ["run", "method"] and len(long) == 6
    assert len(stack_runs([a], "class_cosine")) == 12
    assert list(stack_runs([], "steps").columns[:3]) == ["run", "method", "step"]
    with pytest.raises(ValueError, match="frame must be one of"):
        stack_runs([a], "losses")


def test_background_flush_writes_in_order_and_reports_errors(tmp_path, monkeypatch):
    log = _filled(tmp_path / "bg")
    log.flush(background=True)
    log.log_step(_step(50, 3))
    log.flush(background=True)
    log.wait()
    assert load_run(tmp_path / "bg").steps["step"].max() == 50

    def broken(path, text):
        raise OSError("disk full")

    from cskd_viz.runs import store

    monkeypatch.setattr(store, "atomic_write", lambda path, write: broken(path, ""))
    log.log_step(_step(60, 3))
    log.flush(background=True)
    with pytest.raises(OSError, match="disk full"):
        log.wait()
    monkeypatch.undo()
    log.finish()  # everything is rewritten after the failed background write
    loaded = load_run(tmp_path / "bg")
    assert loaded.status == "finished" and loaded.steps["step"].max() == 60


def test_numpy_and_torch_scalars_are_stored_as_plain_numbers(tmp_path):
    """numpy 2 writes np.float64(0.05) as 'np.float64(0.05)': a user's own metric must still load."""
    import numpy as np
    import torch

    log = RunLog({"name": "r", "method": "ce"}, path=tmp_path / "r")
    metrics = {"loss": np.float64(0.05), "loss_ce": torch.tensor(0.25), "train_accuracy": np.float32(0.5)}
    log.log_step(StepRecord(1, 0, {**metrics, "lr": np.float64(0.1)}, [np.float64(0.9)]))
    log.finish()
    loaded = load_run(tmp_path / "r")
    assert loaded.steps[["loss", "loss_ce", "train_accuracy", "lr"]].values.tolist() == [[0.05, 0.25, 0.5, 0.1]]
    assert loaded.class_cosine["cosine"].tolist() == [pytest.approx(0.9, rel=1e-7)]  # stored as float32


def test_a_finished_run_reads_with_plain_pyarrow_as_documented(good_run):
    import pyarrow.parquet as pq

    log = load_run(good_run)
    steps = pq.read_table(good_run / "steps").to_pandas()
    pd.testing.assert_frame_equal(steps[list(log.steps.columns)], log.steps, check_dtype=False)
    cosine = pq.read_table(good_run / "class_cosine").to_pydict()
    assert cosine["step"] == [1, 10, 11, 20]
    flat = [value for row in cosine["cosine"] for value in row]
    assert flat == pytest.approx(log.class_cosine["cosine"].tolist())
    assert 'pq.read_table("runs/my_run/steps")' in (Path(__file__).parents[1] / "docs" / "run_format.md").read_text()


# ----------------------------------------------------------------------------- found by an adversarial review


@pytest.mark.parametrize(
    "record, error, match",
    [
        (StepRecord(1, 0, {"loss": 1.0}, class_cosine=[]), ValueError, r"record\.class_cosine is empty"),
        (StepRecord(1, 0, {"loss": 1.0}, [0.5], temperature_hist=[]), ValueError, r"temperature_hist is empty"),
        (StepRecord(1, 0, {"loss": 1.0}, [0.5], {"q05": "x"}), TypeError, r"temperature_stats\['q05'\]"),
        (StepRecord(3, 0, {"step": 7.0, "loss": 1.0}), ValueError, "has the key 'step'"),
        (StepRecord(1, 0, {"loss": "high"}), TypeError, r"record\.metrics\['loss'\] must be a number"),
    ],
)
def test_a_refused_record_leaves_no_trace(tmp_path, record, error, match):
    log = RunLog({"name": "r", "method": "ce"}, path=tmp_path / "r")
    with pytest.raises(error, match=match):
        log.log_step(record)
    log.log_step(_step(2))
    log.finish()
    loaded = load_run(tmp_path / "r")
    assert loaded.steps["step"].tolist() == [2] and loaded.class_cosine["step"].unique().tolist() == [2]


def test_a_failed_finish_leaves_no_compacted_file_and_loses_nothing(tmp_path, monkeypatch):
    from cskd_viz.runs import store

    log = _filled(tmp_path / "r")
    log.flush()
    log.log_step(_step(30, 2))
    log.log_eval(_eval(2, 30, 0.95))
    real = store.atomic_write

    def failing_for_evals(path, write):
        if path.parent.name == "evals" and path.name.startswith("compacted"):
            raise OSError("disk full")
        return real(path, write)

    monkeypatch.setattr(store, "atomic_write", failing_for_evals)
    with pytest.raises(OSError, match="disk full"):
        log.finish()
    monkeypatch.undo()
    assert not list((tmp_path / "r").glob("*/compacted-*.parquet"))
    log.log_step(_step(40, 3))
    log.log_eval(_eval(3, 40, 0.96))
    log.flush()
    log.finish()
    loaded = load_run(tmp_path / "r")
    assert loaded.steps["step"].tolist() == [1, 10, 11, 20, 30, 40]
    assert loaded.evals["step"].tolist() == [10, 20, 30, 40] and loaded.status == "finished"


def test_every_uses_one_grid_for_all_frames(tmp_path):
    log = RunLog({"name": "r", "method": "ce"}, path=tmp_path / "r")
    for step in range(1, 11):
        log.log_step(StepRecord(step, 0, {"loss": 1.0}, [0.5, 0.6] if step % 2 == 0 else None))
    log.finish()
    picked = load_run(tmp_path / "r", every=2)
    assert picked.steps["step"].tolist() == [1, 3, 5, 7, 9]
    assert picked.class_cosine["step"].unique().tolist() == []  # the even steps are not on the grid
    assert load_run(tmp_path / "r", every=3).class_cosine["step"].unique().tolist() == [4, 10]


def test_the_writer_sees_every_row_while_background_flushes_run(tmp_path):
    log = RunLog({"name": "r", "method": "ce"}, path=tmp_path / "r")
    for step in range(1, 201):
        log.log_step(StepRecord(step, 0, {"loss": 1.0}))
        log.flush(background=True)
        assert len(log.steps) == step
    log.finish()


def test_refresh_notices_a_new_run_at_the_same_path(tmp_path):
    first = RunLog({"name": "first", "method": "ce"}, path=tmp_path / "r")
    first.log_step(_step(1))
    first.finish()
    reader = load_run(tmp_path / "r")
    assert reader.steps["step"].tolist() == [1]
    shutil.rmtree(tmp_path / "r")
    second = RunLog({"name": "second", "method": "ce"}, path=tmp_path / "r")  # within the same second
    second.log_step(_step(10))
    second.flush()
    reader.refresh()
    assert reader.name == "second" and reader.steps["step"].tolist() == [10]


def test_malformed_flushed_and_steps_selections_are_clear_errors(good_run):
    meta = json.loads((good_run / "config.json").read_text())
    with pytest.raises(ValueError, match=r"steps must be slice\(start, stop\)"):
        load_run(good_run, steps=slice(1, 10, 3))
    with pytest.raises(ValueError, match=r"steps must be slice\(start, stop\)"):
        load_run(good_run, steps=slice("a", None))
    meta["flushed"] = "1"
    (good_run / "config.json").write_text(json.dumps(meta))
    with pytest.raises(RunLogError, match="malformed flushed"):
        load_run(good_run)
