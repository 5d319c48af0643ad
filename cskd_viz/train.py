"""The trainer under its first name: ``from cskd_viz import train`` keeps working.

Everything lives in :mod:`cskd_viz.training` now (``train.run_experiment``, ``train.RunConfig``,
``train.distill``, ``train.train_teacher`` and the rest are the same objects).
"""

from cskd_viz.training import *  # noqa: F403 - a re-export
from cskd_viz.training import __all__  # noqa: F401
