"""Notebook panels made of plain ipywidgets: a temperature tuner, a run browser and a run launcher.

Figures are matplotlib ``Figure`` objects that never touch ``pyplot``: each panel builds its
figure once, updates the artists in place (``set_data``, ``set_offsets``, ``set_ydata``) and
renders it to PNG into an ``ipywidgets.Image``. That works with JupyterLab's plain inline
backend (no ipympl, no custom JavaScript), and headless in tests.

Every panel exposes ``.widget`` (the root box) and displays itself when it is a cell's value.

Parts: :mod:`~cskd_viz.widgets.tuner` (``TemperatureTuner``), :mod:`~cskd_viz.widgets.browser`
(``RunBrowser``), :mod:`~cskd_viz.widgets.launcher` (``RunLauncher``) and
:mod:`~cskd_viz.widgets._common` (``figure_png`` and the helpers the panels share).
"""

from cskd_viz.widgets._common import figure_png
from cskd_viz.widgets.browser import RunBrowser
from cskd_viz.widgets.launcher import RunLauncher
from cskd_viz.widgets.tuner import TemperatureTuner

__all__ = ["figure_png", "TemperatureTuner", "RunBrowser", "RunLauncher"]
