"""cskd_viz: Cosine Similarity Knowledge Distillation (CSKD, arXiv:2311.14307), made visible.

``import cskd_viz`` stays light: submodules (``losses``, ``diagnostics``, ``plots``, ...) are
imported on first attribute access, so matplotlib/ipywidgets load only when used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "losses",
    "diagnostics",
    "metrics",
    "monitor",
    "data",
    "models",
    "methods",
    "analysis",
    "experiments",
    "training",
    "train",
    "runs",
    "distributed",
    "integrations",
    "plots",
    "widgets",
    "cli",
)


def __getattr__(name: str):
    if name == "Monitor":  # the one way any training loop records a run
        from cskd_viz.monitor import Monitor

        return Monitor
    if name in _SUBMODULES:
        return importlib.import_module(f"cskd_viz.{name}")
    raise AttributeError(f"module 'cskd_viz' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES) + ["Monitor"])
