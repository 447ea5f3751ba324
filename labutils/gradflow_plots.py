"""Plots of gradient flow: per-layer norm profiles, layer × step heatmaps, gradient histograms.

They draw what :class:`labutils.gradflow.GradientRecorder` records (or its saved ``history``, or a
``{layer: norm}`` profile from :func:`labutils.gradflow.layer_grad_norms`). Every function returns
``(fig, data)``: ``data`` holds the numbers drawn, so tests and notebooks can check the numbers behind a figure.
Panels meant to be compared share one colour scale (:func:`plot_norm_heatmaps`); a log axis says so in its label;
heatmaps small enough to read print their cell values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from labutils.gradflow import KINDS, WEIGHT_LAYERS, history_at, weight_layers
from labutils.util import check_choice

ANNOTATE_MAX_CELLS = 80  # heatmaps with at most this many cells print each cell's value
MAX_LAYER_TICKS = 24  # beyond this many layers a heatmap names evenly spaced ones, the same in every panel


def _tidy(ax) -> None:
    """Finish a panel: on an axis that shares its y axis with a panel to its left, drop the repeated y label and tick
    labels (they would run into that panel); then ``tight_layout`` unless the figure already has a layout engine
    (e.g. constrained layout)."""
    if len(ax.get_shared_y_axes().get_siblings(ax)) > 1 and ax.get_subplotspec() is not None:
        ax.label_outer()
    if ax.figure.get_layout_engine() is None:
        ax.figure.tight_layout()


def _layer_ticks(n: int) -> np.ndarray:
    """Row indices to label on a heatmap of ``n`` layers: all of them up to MAX_LAYER_TICKS, else evenly spaced
    ones from the first layer to the last (the input and output layers always named)."""
    if n <= MAX_LAYER_TICKS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, 9).round().astype(int))


def _history(recorder) -> Mapping[str, Any]:
    """The ``history`` dict of a recorder (live or read back from disk), or the dict itself."""
    return recorder.history if hasattr(recorder, "history") else recorder


def _as_curves(norms) -> dict[str, tuple[list[str], np.ndarray]]:
    """Normalise the inputs of :func:`plot_layer_norms` to ``{label: (layer names, values)}``."""
    if hasattr(norms, "history"):  # a recorder: its last record
        norms = history_at(norms.history)
    if isinstance(norms, Mapping) and norms and all(isinstance(v, Mapping) for v in norms.values()):
        return {str(label): (list(c), np.asarray(list(c.values()), float)) for label, c in norms.items()}
    if isinstance(norms, Mapping):
        return {"": (list(norms), np.asarray(list(norms.values()), float))}
    values = np.asarray(norms, float)
    if values.ndim != 1:
        raise ValueError(f"plot_layer_norms needs one norm per layer, got an array of shape {values.shape}.")
    return {"": ([str(i) for i in range(len(values))], values)}


def plot_layer_norms(
    norms, ax=None, title: str | None = None, ylabel: str = "gradient L2 norm  ‖∂L/∂W‖", logy: bool = True
):
    """Per-layer norms at one step, input layer on the left, log scale (the y label says so).

    ``norms``: ``{layer: value}`` (one curve), ``{label: {layer: value}}`` (one curve per label, e.g.
    plain vs residual, on a relative x-axis when the networks differ in depth), a 1-D array, or a
    recorder (its last record). Returns ``(fig, data)`` with ``data[label]`` the
    array drawn. On the log axis exact zeros cannot be drawn; the legend counts them.
    """
    import matplotlib.pyplot as plt

    curves = _as_curves(norms)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
    else:
        fig = ax.figure
    lengths = {len(v) for _, v in curves.values()}
    relative = len(lengths) > 1
    data = {}
    for label, (_, values) in curves.items():
        x = np.linspace(0, 1, len(values)) if relative else np.arange(len(values))
        shown = np.where(values > 0, values, np.nan) if logy else values
        zeros = int(np.sum(values == 0)) if logy else 0
        if zeros:  # a log axis cannot show 0 (e.g. a gradient that underflowed): say so instead of hiding it
            label = f"{label} ({zeros} layer{'s' if zeros > 1 else ''} at exactly 0, not drawn)".lstrip()
        ax.plot(x, shown, marker="o", ms=3, lw=1.4, label=label or None)
        data[label] = values
    if logy:
        ax.set_yscale("log")
        ylabel = f"{ylabel} (log scale)"
    if relative:
        ax.set_xlabel("relative layer position (0 = input layer, 1 = output layer)")
    else:
        names = next(iter(curves.values()))[0]
        ax.set_xlabel("layer (input → output)")
        if len(names) <= 12:
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        else:  # layer indices: whole numbers only
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if any(curves):
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    _tidy(ax)
    return fig, data


def plot_norm_heatmap(
    recorder,
    kind: str = "weight",
    ax=None,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
):
    """Layer × step heatmap of ``log10`` gradient norms (or dead-ReLU fractions for ``kind="dead_relu"``).

    Takes a recorder or its ``history`` dict. Returns ``(fig, data)`` with ``data["values"]`` the
    ``(layers, steps)`` array drawn (log10 of the norms; raw fractions for dead ReLUs), ``data["zero"]``
    the cells whose norm is exactly 0 (drawn black: e.g. a gradient that underflowed), ``data["steps"]``
    and ``data["layers"]``. A heatmap of at most ``ANNOTATE_MAX_CELLS`` cells prints each value in its cell
    (``data["annotated"]``); beyond ``MAX_LAYER_TICKS`` layers evenly spaced rows are named.
    """
    import matplotlib.pyplot as plt

    check_choice("kind", kind, KINDS)
    h = _history(recorder)
    steps = np.asarray(h["steps"])
    if not len(steps):
        raise ValueError("Nothing recorded yet: train with the recorder (record(step) after backward) first.")
    layers = h["relu_layers"] if kind == "dead_relu" else h["layers"]
    raw = np.asarray(h[kind], float).T
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    if kind == "dead_relu":
        values, label = raw, "dead-ReLU fraction"
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(raw > 0, np.log10(raw), np.nan)
        label = f"log10 ‖∂L/∂{'W' if kind == 'weight' else 'b'}‖"
        if np.any(raw == 0):  # log10(0) has no colour: those cells are drawn black, and the label says so
            label += "   (black: exactly 0)"
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 0.5 + min(8, 0.12 * len(layers) + 2)))
    else:
        fig = ax.figure
    image = ax.imshow(
        values,
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        extent=(steps[0] - 0.5, steps[-1] + 0.5, len(layers) - 0.5, -0.5),
    )
    if kind != "dead_relu" and np.any(raw == 0):
        from matplotlib.colors import ListedColormap

        ax.imshow(
            np.ma.masked_where(raw != 0, np.ones_like(raw)),
            aspect="auto",
            interpolation="nearest",
            cmap=ListedColormap(["black"]),
            extent=image.get_extent(),
        )
    if colorbar:
        fig.colorbar(image, ax=ax, label=label)
    annotated = values.size <= ANNOTATE_MAX_CELLS
    if annotated:  # few cells: print each value, dark text on light cells and light text on dark ones
        left, right = image.get_extent()[:2]
        width = (right - left) / values.shape[1]
        middle = sum(image.get_clim()) / 2
        for row, col in np.ndindex(values.shape):
            value = values[row, col]
            if np.isfinite(value):
                colour = "black" if value > middle else "white"
                x = left + (col + 0.5) * width
                ax.text(x, row, f"{value:.2g}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xlabel("step")
    ax.set_ylabel("layer (input at top)")
    ticks = _layer_ticks(len(layers))
    ax.set_yticks(ticks, [layers[i] for i in ticks], fontsize=7)
    if title:
        ax.set_title(title)
    _tidy(ax)
    zero = raw == 0 if kind != "dead_relu" else np.zeros_like(raw, dtype=bool)
    return fig, {
        "values": values,
        "zero": zero,
        "steps": steps,
        "layers": list(layers),
        "label": label,
        "annotated": annotated,
    }


def plot_norm_heatmaps(records: Mapping[str, Any], kind: str = "weight", title: str | None = None):
    """:func:`plot_norm_heatmap` of several runs side by side on ONE colour scale with one colour bar, so equal
    colours mean equal norms across panels (e.g. plain vs residual).

    The panels share the step axis, and the layer axis too when every run has the same layers (runs of
    different depths keep their own layer axes). ``records``: ``{label: recorder or its history}``. Returns
    ``(fig, data)`` with ``data[label]`` each panel's data and ``data["scale"] = (vmin, vmax)``, the common
    colour range.
    """
    import matplotlib.pyplot as plt

    check_choice("kind", kind, KINDS)
    if not records:
        raise ValueError("plot_norm_heatmaps needs at least one {label: recorder}.")
    histories = {label: _history(r) for label, r in records.items()}
    finite = []
    for h in histories.values():
        raw = np.asarray(h[kind], float)
        with np.errstate(divide="ignore", invalid="ignore"):
            shown = raw if kind == "dead_relu" else np.where(raw > 0, np.log10(raw), np.nan)
        finite.append(shown[np.isfinite(shown)])
    pooled = np.concatenate(finite) if finite else np.zeros(0)
    vmin, vmax = (float(pooled.min()), float(pooled.max())) if pooled.size else (None, None)
    names = "relu_layers" if kind == "dead_relu" else "layers"
    layer_lists = [list(h[names]) for h in histories.values()]
    same_layers = all(layers == layer_lists[0] for layers in layer_lists)
    height = max(3.0, 0.5 + min(8, 0.12 * max(map(len, layer_lists)) + 2))
    # constrained layout keeps the figure title above the panel titles and leaves room for the one colour bar
    fig, axes = plt.subplots(
        1,
        len(histories),
        figsize=(5.6 * len(histories) + 1.2, height),
        squeeze=False,
        sharex=True,
        sharey=same_layers,
        layout="constrained",
    )
    data: dict[str, Any] = {}
    for ax, (label, h) in zip(axes[0], histories.items()):
        _, data[label] = plot_norm_heatmap(h, kind=kind, ax=ax, title=label, vmin=vmin, vmax=vmax, colorbar=False)
    labels = [panel["label"] for panel in data.values()]
    label = max(labels, key=len)  # the one that says "black: exactly 0" if any panel has such cells
    fig.colorbar(axes[0][0].images[0], ax=list(axes[0]), label=label)
    if title:
        fig.suptitle(title)
    data["scale"] = (vmin, vmax)
    return fig, data


def plot_grad_histograms(
    model: nn.Module,
    layer_types: Sequence[type[nn.Module]] = WEIGHT_LAYERS,
    max_layers: int = 8,
    bins: int = 60,
    log_abs: bool = True,
    ax=None,
    title: str | None = None,
    layers: Iterable[str] | None = None,
):
    """Histograms of the weight-gradient entries now in ``.grad``, one curve per layer.

    With ``log_abs`` (default) the histogram is of ``log10|g|`` over the non-zero entries, so layers
    whose gradients differ by orders of magnitude share one axis. At most ``max_layers`` layers,
    evenly spaced from input to output (or the named ``layers``). Returns ``(fig, data)`` with
    ``data[layer] = {"counts", "edges", "zero_fraction"}``.
    """
    import matplotlib.pyplot as plt

    found = [(n, m) for n, m in weight_layers(model, layer_types) if m.weight.grad is not None]
    if not found:
        raise ValueError("No layer has a gradient yet: run a backward pass (or grad_norms_at_init) first.")
    if layers is not None:
        wanted = list(layers)
        by_name = dict(found)
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise ValueError(f"No layer with a gradient named {missing[0]!r}; known: {', '.join(by_name)}.")
        found = [(n, by_name[n]) for n in wanted]
    elif len(found) > max_layers:
        picks = np.unique(np.linspace(0, len(found) - 1, max_layers).round().astype(int))
        found = [found[i] for i in picks]
    grads = {n: m.weight.grad.detach().float().flatten().cpu().numpy() for n, m in found}
    if log_abs:
        with np.errstate(divide="ignore"):
            samples = {n: np.log10(np.abs(g[g != 0])) for n, g in grads.items()}
    else:
        samples = grads
    nonempty = [s for s in samples.values() if len(s)]
    pooled = np.concatenate(nonempty) if nonempty else np.zeros(1)
    edges = np.histogram_bin_edges(pooled, bins=bins)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
    else:
        fig = ax.figure
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(samples)))
    data = {}
    for color, (name, s) in zip(colors, samples.items()):
        counts, _ = np.histogram(s, bins=edges, density=False)
        density = counts / max(1, counts.sum())
        ax.stairs(density, edges, color=color, label=name, lw=1.3)
        data[name] = {"counts": counts, "edges": edges, "zero_fraction": float(np.mean(grads[name] == 0))}
    ax.set_xlabel("log10 |∂L/∂w|" if log_abs else "∂L/∂w")
    ax.set_ylabel("fraction of entries")
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title)
    _tidy(ax)
    return fig, data


__all__ = ["plot_layer_norms", "plot_norm_heatmap", "plot_norm_heatmaps", "plot_grad_histograms"]
