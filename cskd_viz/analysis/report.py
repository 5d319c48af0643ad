"""The result of :func:`cskd_viz.analysis.compare`: tidy frames, figures, and a parquet round trip.

Frames (one row per ...):

- ``summary`` (student): ``accuracy``, ``teacher_accuracy``, ``agreement``, ``cosine_distance``
  (epoch-level ``d(T)``), ``cosine_distance_batch_mean`` (the mean per-batch ``d(T)``), ``mean_kl``
  (no ``T^2`` factor), ``mean_cswt_temperature``, ``ece``, ``teacher_ece``, ``classes_better`` and
  ``classes_worse`` (classes where the student's accuracy is above / below the teacher's);
- ``per_class`` (student x class): ``support``, ``cosine_epoch``, ``cosine_batch_mean``,
  ``student_accuracy``, ``teacher_accuracy``, ``accuracy_gap``, ``rank`` (1 = worst ``cosine_epoch``);
- ``per_sample`` (student x sample): ``target``, ``teacher_pred``, ``student_pred``, ``agree``,
  ``correct``, ``confidence``, ``kl``, ``cosine_distance`` (``1 - s_i``), ``cswt_temperature`` and
  ``batch`` (NaN and -1 for the samples of the dropped partial batch);
- ``confusion`` (student x differing top-1 pair): ``rank``, teacher and student class and name,
  ``count``, ``fraction`` of all samples;
- ``calibration`` (model x bin, teacher included): the reliability bins behind ``ece``.

``settings`` holds the arguments of :func:`compare` and the sizes. Everything a figure or a page
needs is in the frames and settings, so a report read back with :meth:`DistillationReport.from_parquet`
draws the same figures.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DistillationReport"]

FORMAT = "cskd_viz.analysis.report/1"
SETTINGS_FILE = "settings.json"


@dataclass(eq=False)
class DistillationReport:
    """Frames comparing students with their teacher (see the module docstring for the columns).

    Example:
        >>> import torch
        >>> from cskd_viz.analysis import compare
        >>> g = torch.Generator().manual_seed(0)
        >>> t = torch.randn(24, 3, generator=g)
        >>> report = compare(t, {"a": t + torch.randn(24, 3, generator=g)}, torch.arange(24) % 3, batch_size=6)
        >>> sorted(report.frames)
        ['calibration', 'confusion', 'per_class', 'per_sample', 'summary']
    """

    FRAMES: ClassVar[tuple[str, ...]] = ("summary", "per_class", "per_sample", "confusion", "calibration")

    summary: pd.DataFrame
    per_class: pd.DataFrame
    per_sample: pd.DataFrame
    confusion: pd.DataFrame
    calibration: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> dict[str, pd.DataFrame]:
        """``{name: frame}`` in :attr:`FRAMES` order (what :meth:`to_parquet` writes)."""
        return {name: getattr(self, name) for name in self.FRAMES}

    @property
    def students(self) -> list[str]:
        """Student names, in the order given to :func:`compare`."""
        return list(self.summary["student"])

    def worst_classes(self, k: int = 5) -> pd.DataFrame:
        """The ``k`` classes of lowest ``cosine_epoch`` of every student (``per_class`` rows, rank order)."""
        rows = self.per_class[self.per_class["rank"] <= k]
        return rows.sort_values(["student", "rank"], key=self._student_order).reset_index(drop=True)

    def top_confusions(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` most frequent (teacher top-1, student top-1) disagreements of every student."""
        rows = self.confusion[self.confusion["rank"] <= k]
        return rows.sort_values(["student", "rank"], key=self._student_order).reset_index(drop=True)

    def _student_order(self, column: pd.Series) -> pd.Series:
        if column.name != "student":
            return column
        return column.map({name: i for i, name in enumerate(self.students)})

    def figures(self, *, k: int = 5) -> dict[str, Figure]:
        """matplotlib figures of the report, each titled and labelled (close them when done).

        Keys: ``"class_cosine"`` (sorted per-class cosine, ``k`` worst named), ``"student_scatter"``
        (per-class cosine of the first student against each other one; only with two or more
        students), ``"kl_vs_cosine"`` (per-sample hexbin density), ``"cswt_temperatures"``
        (histogram) and ``"reliability"`` (reliability diagram, teacher included).
        """
        from cskd_viz.analysis import _figures

        return _figures.report_figures(self, k=k)

    def to_html(self, path: str | os.PathLike, *, k: int = 5, title: str | None = None) -> Path:
        """Write one self-contained HTML page (tables, embedded PNG figures, inline style; opens offline).

        It holds the summary, the ``k`` worst classes of each student, the most frequent top-1
        disagreements, every figure of :meth:`figures` with a "What to look at" sentence, and the
        per-class table; the per-sample frame stays in :meth:`to_parquet`'s files. Returns the path.
        """
        from cskd_viz.analysis._html import write_html

        return write_html(self, path, k=k, title=title)

    def to_parquet(self, directory: str | os.PathLike) -> Path:
        """Write every frame as ``<name>.parquet`` and the settings as ``settings.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, frame in self.frames.items():
            frame.to_parquet(directory / f"{name}.parquet", index=False)
        text = json.dumps({"format": FORMAT, "settings": self.settings}, indent=2, sort_keys=True)
        (directory / SETTINGS_FILE).write_text(text + "\n", encoding="utf-8")
        return directory

    @classmethod
    def from_parquet(cls, directory: str | os.PathLike) -> DistillationReport:
        """Read a report written by :meth:`to_parquet`."""
        directory = Path(directory)
        missing = [f for f in [SETTINGS_FILE, *(f"{n}.parquet" for n in cls.FRAMES)] if not (directory / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} is not a DistillationReport directory: missing {missing}")
        meta = json.loads((directory / SETTINGS_FILE).read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{directory / SETTINGS_FILE} is not a {FORMAT} settings file")
        frames = {name: pd.read_parquet(directory / f"{name}.parquet") for name in cls.FRAMES}
        return cls(**frames, settings=meta["settings"])

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"DistillationReport(students={self.students}, N={s.get('n_samples')}, C={s.get('n_classes')}, "
            f"T={s.get('temperature')}, batch_size={s.get('batch_size')})"
        )
