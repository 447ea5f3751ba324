"""Plots for the convolutional from-scratch lab. Each function draws with matplotlib and returns the
numbers it drew, so tests and metrics can check what a figure shows.

- :func:`feature_maps`: every layer's output for one input (not a plot: what the plots below draw).
- :func:`plot_filters`: convolution kernels as small images (blue negative, red positive).
- :func:`plot_feature_maps`: the channels of one layer's output for one image.
- :func:`confusion_matrix` / :func:`plot_confusion_matrix`: counts of (true class, predicted class).
- :func:`plot_timings`: a bar chart of implementation timings (log scale).

Each takes an optional matplotlib ``ax`` (a new figure when None). Filters and feature maps are drawn as
one mosaic image (much faster than one axes per tile) whose tiles share one colour scale, shown by a colour
bar: a pale tile is a small kernel or a weak response, not a stretched one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from labutils.plots import confusion_matrix

__all__ = [
    "feature_maps",
    "tile_mosaic",
    "plot_filters",
    "plot_feature_maps",
    "confusion_matrix",
    "plot_confusion_matrix",
    "plot_timings",
]


def feature_maps(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``x`` (N, C, H, W) through a ``Sequential`` in eval mode and return every layer's output,
    keyed like ``"0: Conv2d"``. The model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        outputs = {}
        for i, layer in enumerate(model):
            x = layer.forward(x)
            outputs[f"{i}: {type(layer).__name__}"] = x
        return outputs
    finally:
        model.train(was_training)


def tile_mosaic(tiles: np.ndarray, ncols: int, gap: int = 1) -> np.ndarray:
    """Arrange tiles (n, h, w) into one (rows*(h+gap)-gap, cols*(w+gap)-gap) image, NaN in the gaps
    (drawn as background), row by row. One ``imshow`` of a mosaic is far faster than one axes per tile."""
    n, h, w = tiles.shape
    rows = -(-n // ncols)
    mosaic = np.full((rows * (h + gap) - gap, ncols * (w + gap) - gap), np.nan)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, ncols)
        mosaic[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return mosaic


def plot_filters(
    weight: np.ndarray, max_out: int = 32, max_in: int = 8, ncols: int = 8, ax=None, title: str | None = None
) -> tuple[Any, np.ndarray]:
    """Draw convolution kernels, weight (C_out, C_in, kh, kw), on one symmetric colour scale: the largest
    |value| among the drawn kernels (red positive, blue negative, white zero), with a colour bar.

    One input channel (a first layer): the C_out kernels wrap into rows of ``ncols``. Several input
    channels: one row per output channel, one column per input channel. At most ``max_out`` x ``max_in``
    kernels are drawn. Returns ``(fig, kernels)``: the drawn kernels, shape
    (min(C_out, max_out), min(C_in, max_in), kh, kw).
    """
    import matplotlib.pyplot as plt

    weight = np.asarray(weight)
    if weight.ndim != 4:
        raise ValueError(f"plot_filters expects a conv weight (C_out, C_in, kh, kw); got shape {weight.shape}.")
    kernels = weight[:max_out, :max_in]
    n_out, n_in, kh, kw = kernels.shape
    tiles = kernels.reshape(n_out * n_in, kh, kw).astype(np.float64)
    limit = float(np.abs(tiles).max()) or 1.0
    cols = min(ncols, n_out) if n_in == 1 else n_in
    if ax is None:
        rows = -(-len(tiles) // cols)
        _, ax = plt.subplots(figsize=(0.45 * cols * (kw + 1) / 4 + 1.4, 0.45 * rows * (kh + 1) / 4 + 0.6))
    shown = ax.imshow(tile_mosaic(tiles, cols), cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.figure.colorbar(shown, ax=ax, shrink=0.8, label="weight")
    if n_in == 1:
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.set_xticks([i * (kw + 1) + (kw - 1) / 2 for i in range(n_in)], [str(i) for i in range(n_in)], fontsize=7)
        ax.set_yticks([o * (kh + 1) + (kh - 1) / 2 for o in range(n_out)], [str(o) for o in range(n_out)], fontsize=7)
        ax.set_xlabel("input channel")
        ax.set_ylabel("output channel")
    ax.set_frame_on(False)
    if title:
        ax.set_title(title, fontsize=9)
    return ax.figure, kernels


def plot_feature_maps(
    maps: np.ndarray,
    ncols: int = 8,
    max_maps: int = 32,
    ax=None,
    title: str | None = None,
    image: np.ndarray | None = None,
) -> tuple[Any, np.ndarray]:
    """Draw the channels of one image's feature maps, maps (C, H, W) (or (1, C, H, W)), on one colour scale
    from the smallest to the largest value over all drawn channels, with a colour bar: a dark map is a channel
    that barely responds. ``image`` (same H, W; or (1, H, W)), if given, is drawn first, stretched to that
    scale (it is in pixel units, not activations). Returns ``(fig, maps)``, the maps drawn (C', H, W)."""
    import matplotlib.pyplot as plt

    maps = np.asarray(maps)
    if maps.ndim == 4 and maps.shape[0] == 1:
        maps = maps[0]
    if maps.ndim != 3:
        raise ValueError(f"plot_feature_maps expects maps of shape (C, H, W); got {maps.shape}.")
    maps = maps[:max_maps]
    panels = maps.astype(np.float64)
    low, high = float(panels.min()), float(panels.max())
    high = high if high > low else low + 1.0
    if image is not None:
        image = np.squeeze(np.asarray(image)).astype(np.float64)
        if image.shape != maps.shape[1:]:
            raise ValueError(f"image has shape {image.shape}, but the maps are {maps.shape[1:]}.")
        span = image.max() - image.min()
        stretched = low + (image - image.min()) / (span if span > 0 else 1.0) * (high - low)
        panels = np.concatenate([stretched[None], panels])
    cols = min(ncols, len(panels))
    if ax is None:
        rows = -(-len(panels) // cols)
        _, ax = plt.subplots(figsize=(1.3 * cols + 0.8, 1.3 * rows + 0.3))
    shown = ax.imshow(tile_mosaic(panels, cols, gap=2), cmap="viridis", vmin=low, vmax=high)
    ax.figure.colorbar(shown, ax=ax, shrink=0.8, label="activation")
    ax.axis("off")
    if title:
        ax.set_title(title + (" (first panel: the input)" if image is not None else ""), fontsize=9)
    return ax.figure, maps


def plot_confusion_matrix(
    y_true, y_pred, class_names: Sequence[str] | None = None, ax=None, title: str | None = None
) -> tuple[Any, np.ndarray]:
    """Draw the confusion matrix (rows: true class, columns: predicted) with counts in the cells,
    coloured by the row-normalised rate (colour bar: fraction of the true class). Returns ``(fig, counts)``,
    the (K, K) count matrix."""
    import matplotlib.pyplot as plt

    num_classes = None if class_names is None else len(class_names)
    counts = confusion_matrix(y_true, y_pred, num_classes)
    k = len(counts)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.55 * k + 1.5, 0.55 * k + 1.2))
    shown = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.figure.colorbar(shown, ax=ax, shrink=0.8, label="fraction of the true class")
    for t in range(k):
        for p in range(k):
            if counts[t, p]:
                ax.text(
                    p,
                    t,
                    str(counts[t, p]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[t, p] > 0.5 else "black",
                )
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 2 else 0, fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(title or f"confusion matrix (accuracy {accuracy:.2%})", fontsize=9)
    return ax.figure, counts


def plot_timings(
    rows: Sequence[dict], label: str = "implementation", value: str = "ms", ax=None
) -> tuple[Any, dict[str, float]]:
    """Horizontal bars of ``row[value]`` per ``row[label]`` on a log axis. Returns ``(fig, {label: value})``."""
    import matplotlib.pyplot as plt

    drawn = {str(r[label]): float(r[value]) for r in rows}
    if not drawn:
        raise ValueError("plot_timings needs at least one row.")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.5 * len(drawn) + 1))
    ax.barh(list(drawn), list(drawn.values()), color="tab:blue")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel(f"{value} (log scale)")
    for i, v in enumerate(drawn.values()):
        ax.text(v, i, f" {v:.3g}", va="center", fontsize=8)
    return ax.figure, drawn
