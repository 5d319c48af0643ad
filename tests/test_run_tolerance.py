"""Malformed run directories, as a user meets them: every one gives a ``RunLogError`` naming the file
and the field (never a raw TypeError, ValueError, OverflowError, ArrowInvalid, ...), and
``list_runs``, ``RunBrowser(root)`` and ``cskd-viz report ROOT`` skip each such run with one line
naming it and the reason, and show the other runs all the same."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from cskd_viz.runs import EvalRecord, RunLog, RunLogError, StepRecord, list_runs, load_run

SCHEMA1 = Path(__file__).parent / "fixtures" / "run_schema1"


def _good(path: Path, name: str | None = None, method: str = "cskd_cswt") -> Path:
    log = RunLog({"name": name or path.name, "method": method, "t_low": 2.0, "t_high": 6.0}, path=path)
    stats = dict(q05=2.1, q25=3.0, q50=4.0, q75=5.0, q95=5.9, mean=4.0, min=2.0, max=6.0)
    hist = [(2.0, 4.0, 3), (4.0, 6.0, 5)]
    for step in (1, 2, 3):
        log.log_step(StepRecord(step, 0, {"loss": 1.0 / step, "agreement": 0.5}, [0.9, 0.8, 0.7], stats, hist))
        log.flush()
    log.log_eval(EvalRecord(0, 3, {"accuracy": 0.8, "agreement": 0.9, "loss": 0.3, "cosine_distance": 0.1}))
    log.finish()
    return path


def _edit(path: Path, change) -> None:
    meta = json.loads((path / "config.json").read_text())
    change(meta)
    (path / "config.json").write_text(json.dumps(meta))  # NaN is written as the bare NaN Python's json reads


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(meta):
        target = meta
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def _frame_file(path: Path, frame: str) -> Path:
    return next((path / frame).glob("compacted-*.parquet"))


def _rewrite_evals(path: Path, **columns) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = _frame_file(path, "evals")
    table = pq.read_table(target)
    for name, array in columns.items():
        table = table.set_column(table.column_names.index(name), name, pa.array(array))
    pq.write_table(table, target)


def _schema1(path: Path, frame: str, text: str) -> None:
    shutil.copytree(SCHEMA1, path)
    (path / f"{frame}.csv").write_text(text)


def _huge_accuracy_csv() -> str:
    """An evals.csv whose one row has an accuracy of 10**400 (pandas reads it as a Python int)."""
    lines = (SCHEMA1 / "evals.csv").read_text().splitlines()
    cells = lines[-1].split(",")
    cells[3] = "1" + "0" * 400
    return "\n".join([lines[0], ",".join(cells)]) + "\n"


# case -> (what to do to a good run, the error's message, whether list_runs sees it)
# list_runs reads config.json and evals (the summary's files); report reads every frame.
CASES = {
    "step-null": (lambda p: _edit(p, _set("progress", "step", None)), r"config\.json has a malformed progress\.step"),
    "step-nan": (lambda p: _edit(p, _set("progress", "step", float("nan"))), r"malformed progress\.step: nan"),
    "step-string": (lambda p: _edit(p, _set("progress", "step", "12")), r"malformed progress\.step: '12'"),
    "step-negative": (lambda p: _edit(p, _set("progress", "step", -3)), r"malformed progress\.step: -3"),
    "step-huge": (lambda p: _edit(p, _set("progress", "step", 10**30)), r"malformed progress\.step: 1000"),
    "progress-list": (lambda p: _edit(p, _set("progress", [1])), r"config\.json has a malformed progress: \[1\]"),
    "status-unknown": (lambda p: _edit(p, _set("status", "paused")), r"config\.json has an unknown status 'paused'"),
    "config-not-dict": (lambda p: _edit(p, _set("config", ["x"])), r'config\.json has no "config" object'),
    "json-not-dict": (lambda p: (p / "config.json").write_text("[1, 2]"), r"config\.json is not a cskd_viz run config"),
    "flushed-string": (lambda p: _edit(p, _set("flushed", "3")), r"config\.json has a malformed flushed: '3'"),
    "method-list": (lambda p: _edit(p, _set("config", "method", ["kd"])), r"malformed config\.method: \['kd'\]"),
    "t-low-string": (lambda p: _edit(p, _set("config", "t_low", "low")), r"malformed config\.t_low: 'low'"),
    "reason-number": (lambda p: _edit(p, _set("reason", 7)), r"config\.json has a malformed reason: 7"),
    "config-truncated": (
        lambda p: (p / "config.json").write_text((p / "config.json").read_text()[:40]),
        r"config\.json is corrupt: cannot parse JSON",
    ),
    "eval-step-huge": (
        lambda p: _rewrite_evals(p, step=__import__("numpy").array([2**64 - 1], dtype="uint64")),
        r"evals/compacted-\d+\.parquet is corrupt: the field 'step' does not fit int64",
    ),
    "eval-value-string": (
        lambda p: _rewrite_evals(p, accuracy=["high"]),
        r"evals/compacted-\d+\.parquet is corrupt: the field 'accuracy' holds string, not float",
    ),
    "eval-part-corrupt": (
        lambda p: _frame_file(p, "evals").write_bytes(b"PAR1 not really parquet"),
        r"evals/compacted-\d+\.parquet is corrupt: cannot read it as Parquet",
    ),
    "schema1-eval-huge-int": (
        lambda p: _schema1(p, "evals", _huge_accuracy_csv()),
        r"evals\.csv is corrupt: the field 'accuracy' holds a value that is not float64",
    ),
    "schema1-steps-garbage": (
        lambda p: _schema1(p, "steps", "step,epoch,loss\n\x00\x01\x02\n"),
        r"steps\.csv is corrupt",
    ),
    "schema1-steps-bad-step": (
        lambda p: _schema1(p, "steps", (SCHEMA1 / "steps.csv").read_text().replace("\n10,", "\nten,", 1)),
        r"steps\.csv is corrupt: the field 'step' holds a value that is not int64",
    ),
    # Only what reads every frame (report, the browser's heatmap) meets these.
    "cosine-part-corrupt": (
        lambda p: _frame_file(p, "class_cosine").write_bytes(b"\x00" * 64),
        r"class_cosine/compacted-\d+\.parquet is corrupt: cannot read it as Parquet",
    ),
    "temperatures-part-corrupt": (
        lambda p: _frame_file(p, "temperatures").write_bytes(b"garbage"),
        r"temperatures/compacted-\d+\.parquet is corrupt: cannot read it as Parquet",
    ),
    "hist-lengths-differ": (
        lambda p: _rewrite_hist_counts(p),
        r"temperature_hist is corrupt: ValueError: the fields bin_left, bin_right, count differ in length",
    ),
}
LAZY = {"cosine-part-corrupt", "temperatures-part-corrupt", "hist-lengths-differ"}  # frames list_runs does not read


def _rewrite_hist_counts(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = _frame_file(path, "temperature_hist")
    table = pq.read_table(target)
    counts = pa.array([[1]] * table.num_rows, type=pa.list_(pa.int64()))
    pq.write_table(table.set_column(table.column_names.index("count"), "count", counts), target)


def _make(root: Path, case: str) -> Path:
    path = root / case
    corrupt, _ = CASES[case]
    if not case.startswith("schema1"):
        _good(path)
    corrupt(path)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_run_is_a_run_log_error_naming_file_and_field(tmp_path, case):
    path = _make(tmp_path, case)
    _, message = CASES[case]
    with pytest.raises(RunLogError, match=message):
        load_run(path).frames()


@pytest.fixture
def mixed_root(tmp_path) -> Path:
    """Two good runs and one malformed run per case."""
    root = tmp_path / "runs"
    _good(root / "good-a", method="kd")
    _good(root / "good-b")
    for case in CASES:
        _make(root, case)
    return root


def test_list_runs_skips_each_malformed_run_with_one_warning(mixed_root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = list_runs(mixed_root).set_index("name")
    bad = sorted(set(CASES) - LAZY)
    messages = [str(w.message) for w in caught]
    assert len(messages) == len(bad), messages
    for case, message in zip(bad, sorted(messages), strict=True):
        assert message.startswith(f"skipped the run {mixed_root / case}: ") and "\n" not in message
    assert table.loc[bad, "status"].eq("unreadable").all()
    assert table.loc[["good-a", "good-b", *LAZY], "status"].eq("finished").all()
    assert table.loc["good-a", "final_accuracy"] == 0.8


def test_run_browser_shows_good_runs_and_one_line_per_bad_run(mixed_root):
    pytest.importorskip("ipywidgets")
    from cskd_viz import widgets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        browser = widgets.RunBrowser(mixed_root)
    names = {Path(value).name for _, value in browser.run_select.options}
    assert names == {"good-a", "good-b", *LAZY}
    lines = browser.message.value.split("<br>")
    for case in set(CASES) - LAZY:
        assert sum(line.startswith(f"skipped {case}:") for line in lines) == 1, (case, lines)
    assert browser.curves_image.value[:4] == b"\x89PNG" and "good-a" in browser.table.value
    bad = str(mixed_root / "cosine-part-corrupt")
    browser.run_select.value = (str(mixed_root / "good-a"), bad)
    browser.heatmap_dropdown.value = bad
    assert browser.heatmap_image.value == b"" and browser.curves_image.value[:4] == b"\x89PNG"
    assert "skipped cosine-part-corrupt: " in browser.message.value and "class_cosine" in browser.message.value


def test_report_of_a_root_skips_each_malformed_run_with_one_warning_line(mixed_root, capsys):
    from cskd_viz.cli import main

    assert main(["report", str(mixed_root), "--no-figures"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line]
    assert len(lines) == len(CASES), lines
    for case in CASES:
        [line] = [line for line in lines if f"skipped the run {mixed_root / case}: " in line]
        assert line.startswith("cskd-viz report: warning: ") and "Traceback" not in line
    rows = [line.split()[0] for line in captured.out.splitlines()[1:]]
    assert rows == ["good-a", "good-b"]


def test_report_tells_runs_of_the_same_name_apart_and_counts_its_figures(tmp_path, capsys):
    from cskd_viz.cli import main

    a, b = _good(tmp_path / "one" / "dup"), _good(tmp_path / "two" / "dup")
    out = tmp_path / "figures"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert [line.split()[0] for line in printed.splitlines()[1:3]] == ["dup", "dup#2"]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"temperatures-dup.png", "temperatures-dup#2.png"} <= set(pngs)
    assert f"figures: {len(pngs)} PNG in {out}" in printed


def test_report_of_only_unreadable_runs_is_an_error(tmp_path, capsys):
    from cskd_viz.cli import main

    for case in ("step-null", "status-unknown"):
        _make(tmp_path, case)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path), "--no-figures"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "unknown status 'paused'" in err and "and 1 more unreadable run" in err
