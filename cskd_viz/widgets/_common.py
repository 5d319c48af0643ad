"""Helpers shared by the widget panels: PNG rendering of Agg figures, figures outside pyplot,
one torch thread for small tensor work, number formatting and the displayable base class.

matplotlib, PIL and IPython are imported inside the functions that need them, so importing this
module stays light.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["figure_png"]


def figure_png(fig: Figure, *, compress_level: int = 1) -> bytes:
    """Render ``fig`` with the Agg canvas and return PNG bytes (fast, low-compression encoding).

    Args:
        fig: a matplotlib figure (attached to any canvas, or none).
        compress_level: zlib level 0-9 of the PNG encoder (1: fast, files a little larger).

    Example:
        >>> from matplotlib.figure import Figure
        >>> figure_png(Figure(figsize=(1, 1), dpi=10))[:4]
        b'\\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return _canvas_png(canvas, compress_level)


def _canvas_png(canvas: Any, compress_level: int = 1) -> bytes:
    """PNG bytes of what an Agg canvas holds now (no redraw)."""
    from PIL import Image

    width, height = canvas.get_width_height(physical=True)
    image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="png", compress_level=compress_level)
    return buffer.getvalue()


@contextmanager
def _single_torch_thread() -> Iterator[None]:
    """Run small tensor work on one intra-op thread (restored after).

    The tuner's tensors are ~1e5 elements: splitting them over threads gains nothing, and on a
    busy machine the OpenMP workers' spin-waits cost far more than the work. The setting is per
    calling thread with OpenMP, so a run training in a background thread is not affected.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _new_figure(figsize: tuple[float, float], dpi: float, **kwargs: Any) -> Figure:
    """A figure outside pyplot (no global registry, never auto-shown by the inline backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cskd_viz._validation import check_figure_size

    check_figure_size(figsize, dpi)  # a clear error naming figsize/dpi, not PIL's
    fig = Figure(figsize=figsize, dpi=dpi, **kwargs)
    FigureCanvasAgg(fig)
    return fig


class _Displayable:
    """Display ``self.widget`` when the panel object is a cell's value."""

    widget: Any

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _fmt(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4g}"
