"""Smoke test of the benchmark harness (benchmarks measure; tests never assert times)."""

from __future__ import annotations

from benchmarks import __main__ as bench
from benchmarks import loss_cost
from benchmarks._harness import Comparison, alternate


def test_alternate_runs_both_sides_and_reports_ratios():
    calls = []
    ours, base = alternate(lambda: calls.append("a"), lambda: calls.append("b"), repeats=4, warmup=1)
    assert len(ours) == len(base) == 4 and calls.count("a") == calls.count("b") == 5
    # The order alternates so that neither side always runs on a warm cache.
    assert calls[2:6] == ["a", "b", "b", "a"]
    row = Comparison("x", "ours", "base", [2.0, 4.0], [1.0, 2.0], "<= 3x").row()
    assert row["ratio (median)"] == "2.000" and row["ratio min-max"] == "2.000-2.000"


def test_loss_cost_runs_on_a_tiny_shape_and_renders_a_table():
    rows = [r.row() for r in loss_cost.run(shapes=((32, 100),), repeats=1)]
    assert len(rows) == 3 and all(float(r["ratio (median)"]) > 0 for r in rows)
    table = bench._table(rows)
    assert table.count("\n") == len(rows) + 1 and "kd_loss" in table
