"""The panel every explorer shares: controls above, the view they choose below, and a static fallback.

An explorer is two parts. A plain function computes what is shown from the controls' values and returns the
numbers; a draw function turns those numbers into a matplotlib figure. :class:`Explorer` is the thin ipywidgets
wrapper around them: when a control moves it calls ``view(**values)`` and puts the result in its output area.
No callback trains a network: they read finished runs or do cheap work (a forward pass, a few hundred NumPy steps
on a 2-D problem).

What the output area shows, :class:`View`:

- a figure (PNG) with one line of text above it that states the numbers behind it;
- or, for a setting that cannot work (a stride that leaves no output), one sentence instead of the figure: the
  plain functions raise ``ValueError`` with that sentence, and the panel shows its message, never a traceback;
- any other exception is a bug: the panel shows it as an error output, with its traceback, so it is seen.

Without a live front end (papermill, nbval, a static page of the course website) no widget can be drawn. So an
explorer displays itself as one output holding both the widget and a PNG of its current view: JupyterLab draws
the widget, and whatever cannot draw widgets shows the PNG, an ordinary figure.
"""

from __future__ import annotations

import base64
import io
import math
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DPI = 72  # pixels per inch of the PNG: sharp enough on a screen, and fast to encode on every redraw


@dataclass
class View:
    """What one setting of the controls shows: ``png`` (a figure) and ``text`` (one line of numbers above it),
    or ``message`` alone (why the setting cannot work); ``data`` holds the numbers drawn, for tests."""

    text: str = ""
    png: bytes | None = None
    message: str | None = None
    error: list[str] | None = None  # traceback lines of an unexpected exception
    data: Any = None

    def outputs(self) -> tuple[dict[str, Any], ...]:
        """The view as Jupyter output dicts, the form an ``ipywidgets.Output`` holds."""
        if self.error is not None:
            name, _, value = self.error[-1].partition(": ")
            return ({"output_type": "error", "ename": name, "evalue": value, "traceback": self.error},)
        if self.message is not None:
            return ({"output_type": "stream", "name": "stdout", "text": self.message + "\n"},)
        out = []
        if self.text:
            out.append({"output_type": "stream", "name": "stdout", "text": self.text + "\n"})
        if self.png is not None:
            data = {"image/png": base64.b64encode(self.png).decode("ascii"), "text/plain": self.text or "<figure>"}
            out.append({"output_type": "display_data", "data": data, "metadata": {}})
        return tuple(out)


def figure(width: float, height: float, **kwargs):
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches with constrained layout, made without pyplot: no
    figure manager keeps it alive, and Jupyter's inline backend never shows it a second time."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained", **kwargs)


def figure_png(fig, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def drawn(fig, text: str = "", data: Any = None) -> View:
    """A :class:`View` of a figure and its line of numbers."""
    return View(text=text, png=figure_png(fig), data=data)


def run_view(view: Callable[..., View], values: Mapping[str, Any]) -> View:
    """``view(**values)``, with a bad setting (``ValueError``) as its one sentence and any other exception as an
    error view with its traceback."""
    try:
        return view(**values)
    except ValueError as exc:
        return View(message=str(exc))
    except Exception as exc:  # a bug, not a setting: show it whole
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return View(error=[*lines[:-1], f"{type(exc).__name__}: {exc}"])


@dataclass
class Explorer:
    """Controls (``{keyword: ipywidgets control}``) that call ``view(**values)`` whenever one of them moves.

    ``widget`` is the whole panel (a ``VBox``: title, note, controls, output); ``output`` the ``ipywidgets.Output``
    that holds the current :class:`View`, ``last``. ``title`` names what the explorer shows, ``note`` (optional)
    says where its data come from. The panel carries the CSS classes ``labs-explorer`` and ``labs-explorer-<name>``,
    by which a browser test finds it. Shown in a notebook, the explorer is its widget plus a PNG of the current
    view for front ends without widgets.
    """

    name: str
    view: Callable[..., View]
    controls: Mapping[str, Any]
    title: str = ""
    note: str = ""
    last: View = field(init=False)

    def __post_init__(self):
        import ipywidgets as widgets

        self.output = widgets.Output(layout=widgets.Layout(min_height="120px"))
        header = [widgets.HTML(f"<b>{self.title}</b>")] if self.title else []
        if self.note:
            header.append(widgets.HTML(f"<small>{self.note}</small>"))
        row = widgets.HBox(list(self.controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
        self.widget = widgets.VBox([*header, row, self.output])
        self.widget.add_class("labs-explorer")
        self.widget.add_class(f"labs-explorer-{self.name}")
        for control in self.controls.values():
            control.observe(self.refresh, names="value")
        self.refresh()

    def values(self) -> dict[str, Any]:
        """The controls' current values, by keyword."""
        return {key: control.value for key, control in self.controls.items()}

    def refresh(self, change=None) -> View:
        """Recompute the view for the current values and show it (every control calls this when it moves)."""
        self.last = run_view(self.view, self.values())
        self.output.outputs = self.last.outputs()
        return self.last

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = dict(self.widget._repr_mimebundle_())
        if self.last.png is not None:
            bundle["image/png"] = base64.b64encode(self.last.png).decode("ascii")
        bundle["text/plain"] = self.last.message or self.last.text or self.title
        return bundle


def control_options(name: str, values, what: str) -> list:
    """``list(values)``, or one ValueError when there is nothing to choose from."""
    values = list(values)
    if not values:
        raise ValueError(f"{name} has no {what} to show: pass at least one.")
    return values


def another_value(control):
    """The value a user would move an ipywidgets ``control`` to next: the next option (after the last, the first),
    one step further along a slider (at its end, back to its start), or another choice of a multiple selection.
    Used by tests and benchmarks to move every control once."""
    value = control.value
    if hasattr(control, "rows"):  # SelectMultiple
        options = tuple(control.options)
        return options[-1:] if options[-1:] != tuple(value) else options[:1]
    if hasattr(control, "options"):  # Dropdown, ToggleButtons, SelectionSlider
        values = [o[1] if isinstance(o, tuple) else o for o in control.options]
        return values[(values.index(value) + 1) % len(values)]
    if hasattr(control, "base"):  # FloatLogSlider: one step along the exponent
        exponent = math.log(value, control.base) + control.step
        return control.base ** (exponent if exponent <= control.max + 1e-9 else control.min)
    step = control.step or 1
    return value + step if value + step <= control.max else control.min
