"""Figures of CSKD at work: matplotlib (+ seaborn's colour-blind palette), each returning a ``Figure``.

Every function takes plain pandas frames (the :mod:`cskd_viz.runs` schema: ``class_cosine``,
``temperatures``, ``temperature_hist``, ``evals``) or tensors, draws on ``ax`` when given
(else on a new ``pyplot`` figure), titles and labels every axis, and returns the figure. The
library never calls ``plt.show()``; in a notebook, end the cell with ``fig = ...;`` or let the
inline backend show it.

Colour: sequential data uses ``viridis``, categorical data seaborn's ``"colorblind"`` palette;
both are readable with the common forms of colour-vision deficiency.

Modules: :mod:`~cskd_viz.plots.heatmaps`, :mod:`~cskd_viz.plots.temperatures`,
:mod:`~cskd_viz.plots.kl_cosine`, :mod:`~cskd_viz.plots.curves`, :mod:`~cskd_viz.plots.batch_size`.

Example:
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"step": [1, 1, 2, 2], "class": [0, 1, 0, 1], "cosine": [0.9, 0.8, 0.95, 0.85]})
    >>> fig = plot_class_cosine_heatmap(frame)
    >>> fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()
    ('step', 'class')
    >>> import matplotlib.pyplot as plt; plt.close(fig)
"""

from __future__ import annotations

from cskd_viz.plots._common import palette
from cskd_viz.plots.batch_size import batch_size_effect_frame, plot_batch_size_effect, plot_batch_size_frame
from cskd_viz.plots.curves import plot_agreement, plot_learning_curves
from cskd_viz.plots.heatmaps import plot_class_cosine_heatmap, plot_class_cosine_heatmaps
from cskd_viz.plots.kl_cosine import plot_kl_vs_cosine_scatter, plot_kl_vs_cosine_transforms
from cskd_viz.plots.sweep import plot_sweep
from cskd_viz.plots.temperatures import plot_cswt_mapping, plot_temperature_histogram, plot_temperature_trace

__all__ = [
    "palette",
    "plot_class_cosine_heatmap",
    "plot_class_cosine_heatmaps",
    "plot_temperature_trace",
    "plot_temperature_histogram",
    "plot_cswt_mapping",
    "plot_kl_vs_cosine_scatter",
    "plot_kl_vs_cosine_transforms",
    "plot_learning_curves",
    "plot_agreement",
    "batch_size_effect_frame",
    "plot_batch_size_frame",
    "plot_batch_size_effect",
    "plot_sweep",
]
