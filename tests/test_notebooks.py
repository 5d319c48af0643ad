"""Every notebook runs top to bottom (fast budgets), is committed without outputs, and explains its figures."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = [
    "01_cskd_in_five_minutes",
    "02_short_run_diagnostics",
    "03_temperature_tuning",
    "04_kl_vs_cosine",
    "05_batch_size_and_scale",
    "06_exercises",
    "07_analyze_checkpoints",
    "08_open_questions",
]
PLOT_CALL = re.compile(r"\bplots\.plot_\w+\(|\bplot_\w+\(")


def test_every_expected_notebook_exists():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has outputs; strip them before committing"
            assert cell.execution_count is None, f"{path.name}: a code cell has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_says_what_to_look_at(path):
    """Each cell that draws a figure is preceded by a markdown cell with a 'What to look at' sentence."""
    cells = nbformat.read(path, as_version=4).cells
    for index, cell in enumerate(cells):
        if cell.cell_type == "code" and PLOT_CALL.search(cell.source):
            previous = next((c for c in reversed(cells[:index]) if c.cell_type == "markdown"), None)
            assert previous is not None and "What to look at" in previous.source, (
                f"{path.name}, cell {index}: figure without a 'What to look at' sentence before it"
            )


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("CSKD_VIZ_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    work = tmp_path / path.name
    shutil.copy(path, work)
    notebook = nbformat.read(work, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        allow_errors=False,
    )
    client.execute(env=dict(os.environ))
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
