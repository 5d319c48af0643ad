"""One self-contained HTML page of a :class:`~cskd_viz.analysis.report.DistillationReport`.

The functions take the report as it is (``report: Any``, a ``DistillationReport``): ``report.py`` imports
this module for ``to_html``, so this one does not import it back.

Tables come from the frames, figures are embedded as base64 PNGs, the style sheet is inline: the file
opens offline and can be mailed around alone. Every name a user chose (students, classes) is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["write_html"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
.look { background: #f6f8fa; border-left: 4px solid #4c72b0; padding: 0.4em 0.8em; }
.scroll { overflow-x: auto; }
.settings { color: #555; font-size: 0.9em; }
"""

# What a reader should look for in each figure, keyed like DistillationReport.figures().
LOOK = {
    "class_cosine": "the classes at the left are where the student's batch predictions track the teacher's "
    "least; a long low tail means a few classes carry most of the cosine distance.",
    "student_scatter": "points below the diagonal are classes where the first student tracks the teacher "
    "better than the other one; the named points are the largest gaps.",
    "kl_vs_cosine": "mass far from the lower-left corner is where the student disagrees with the teacher; "
    "samples with a high KL but a small 1 - s_i (or the reverse) are where the two measures part ways.",
    "cswt_temperatures": "CSWT gives samples the student already matches a low temperature and the ones it "
    "misses a high one; a pile-up at one end means the range [T_low, T_high] is barely used.",
    "reliability": "bars below the diagonal are over-confident bins; compare each student's gap to the teacher's.",
}

SUMMARY_COLUMNS = (
    "student",
    "accuracy",
    "teacher_accuracy",
    "agreement",
    "cosine_distance",
    "cosine_distance_batch_mean",
    "mean_kl",
    "mean_cswt_temperature",
    "ece",
    "teacher_ece",
    "classes_better",
    "classes_worse",
)
WORST_COLUMNS = (
    "student",
    "rank",
    "class",
    "class_name",
    "cosine_epoch",
    "cosine_batch_mean",
    "student_accuracy",
    "teacher_accuracy",
    "accuracy_gap",
    "support",
)


def _png(figure) -> str:
    """The figure as a base64 PNG ``data:`` URI (the figure is closed afterwards)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(frame: pd.DataFrame, columns: tuple[str, ...] | list[str] | None = None) -> str:
    frame = frame if columns is None else frame[[c for c in columns if c in frame.columns]]
    table = frame.to_html(index=False, escape=True, float_format=lambda x: f"{x:.4f}", border=0)
    return f'<div class="scroll">{table}</div>'


def _settings_line(report: Any) -> str:
    s = report.settings
    parts = [
        f"N = {s.get('n_samples')} samples",
        f"C = {s.get('n_classes')} classes",
        f"T = {s.get('temperature')}",
        f"CSWT range [{s.get('t_low')}, {s.get('t_high')}]",
        f"random batches of {s.get('batch_size')} (seed {s.get('seed')})",
    ]
    return html.escape(", ".join(parts))


def _figure_sections(report: Any, k: int) -> list[str]:
    sections = []
    for key, figure in report.figures(k=k).items():
        title = figure.get_suptitle() or key.replace("_", " ")
        sections.append(
            f'<h2 id="fig-{key}">{html.escape(title)}</h2>\n'
            f'<p class="look"><b>What to look at:</b> {html.escape(LOOK.get(key, ""))}</p>\n'
            f'<figure><img alt="{html.escape(title)}" src="{_png(figure)}"></figure>'
        )
    return sections


def render_html(report: Any, *, k: int = 5, title: str = "CSKD distillation report") -> str:
    """The page as one string (see :func:`write_html`)."""
    students = ", ".join(report.students)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="settings">Students: {html.escape(students)}. {_settings_line(report)}.</p>',
        "<h2>Summary</h2>",
        '<p class="look"><b>What to look at:</b> agreement and accuracy against the teacher, and where the '
        "epoch-level cosine distance d(T) and the mean KL rank the students differently.</p>",
        _table(report.summary, SUMMARY_COLUMNS),
        f"<h2>The {k} classes each student tracks worst</h2>",
        _table(report.worst_classes(k), WORST_COLUMNS),
        "<h2>Most frequent top-1 disagreements with the teacher</h2>",
        _table(report.top_confusions(10)),
        *_figure_sections(report, k),
        "<h2>Per-class table</h2>",
        "<details><summary>every student and class</summary>",
        _table(report.per_class),
        "</details>",
        '<p class="settings">The per-sample frame is in the Parquet files (<code>report.to_parquet</code>).</p>',
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_html(report: Any, path: str | os.PathLike, *, k: int = 5, title: str | None = None) -> Path:
    """Write the report as one self-contained HTML file at ``path`` (parents created); returns the path.

    The file is written next to its final name and moved into place, so a reader never sees half a page.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_html(report, k=k, title=title or "CSKD distillation report")
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path
