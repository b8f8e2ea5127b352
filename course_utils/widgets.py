"""Interactive figures with a static fallback.

Taught in: 00_setup_and_tour (used by every widget explorer later on).

:func:`interactive_figure` shows ipywidgets controls that redraw a matplotlib
figure. Its output carries three renderings of the same thing, and each
front-end picks the richest one it understands:

* JupyterLab / Notebook 7 / VS Code with a live kernel: the live controls;
* GitHub, nbviewer, a static HTML export: a PNG of the figure at the default
  settings;
* a plain terminal: a one-line text note saying what the controls would do.

With the environment variable ``COURSE_STATIC_WIDGETS=1`` no live controls are made at all: the
output is the PNG and the note only. ``make grade`` sets it, because a notebook that is executed
without a browser (nbclient, as nbgrader's autograder uses it) can stall forever on an ipywidgets
``interact`` output -- an intermittent race between the widget's output capture and the kernel's
reply (jupyter/nbclient#312) that the static output avoids. The training and data-loading progress
bars (``course_utils.data.progress_bar``) are plain text in that mode, for the same reason.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["interactive_figure", "figure_to_png"]


def figure_to_png(fig: Figure, dpi: int = 80) -> bytes:
    """Render a matplotlib figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


class _Static:
    """Display object of the static mode: the PNG and the text note, no widget."""

    def __init__(self, png: bytes, note: str) -> None:
        self.widget, self.png, self.note = None, png, note

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return {"image/png": base64.b64encode(self.png).decode("ascii"), "text/plain": self.note}


class _LiveWithFallback:
    """Display wrapper: the widget's own mime bundle, plus PNG and text fallbacks."""

    def __init__(self, widget: Any, png: bytes, note: str) -> None:
        self.widget, self.png, self.note = widget, png, note

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
        bundle["text/plain"] = self.note
        return bundle


def interactive_figure(make_figure: Callable[..., Figure], description: str = "", **controls: Any) -> Any:
    """Live controls that redraw ``make_figure(**values)``; see the module docstring.

    Args:
        make_figure: returns a new matplotlib ``Figure`` for the given control values.
        description: what the controls do (shown in the text fallback).
        **controls: ipywidgets controls (or ``interact`` abbreviations) by argument name.

    Returns the display object (the last expression of a cell shows it). Its
    ``.widget`` is the underlying ``ipywidgets.interactive``, so tests can move a
    control: ``obj.widget.children[0].value = 3`` (``None`` when ``COURSE_STATIC_WIDGETS=1``).
    """
    import ipywidgets as W
    from IPython.display import display

    if os.environ.get("COURSE_STATIC_WIDGETS") == "1":
        defaults = {name: (c if isinstance(c, W.ValueWidget) else W.interactive.widget_from_abbrev(c)).value
                    for name, c in controls.items()}
        fig = make_figure(**defaults)
        png = figure_to_png(fig)
        plt.close(fig)
        return _Static(png, _note(defaults, description))

    first_png: list[bytes] = []  # the figure at the defaults, kept for the fallback

    def draw(**values: Any) -> None:
        fig = make_figure(**values)
        if not first_png:
            first_png.append(figure_to_png(fig))
        display(fig)
        plt.close(fig)

    ui = W.interactive(draw, **controls)  # draws once at the defaults
    defaults = {c._kwarg: c.value for c in ui.kwargs_widgets}
    if not first_png:  # the first draw failed inside the widget: raise its error here
        draw(**defaults)
    png = first_png[0]
    return _LiveWithFallback(ui, png, _note(defaults, description))


def _note(defaults: dict[str, Any], description: str) -> str:
    """The text fallback: which controls there would be, and at which values the picture was drawn."""
    return (f"[Interactive controls ({', '.join(defaults)}) -- they need a live Jupyter kernel with ipywidgets. "
            f"Static result at the defaults {defaults}.] {description}").strip()
