"""Pictures of corruptions and of models under them: one image at every severity, accuracy heatmaps.

Both return ``(fig, data)``: the matplotlib figure and the numbers it draws, so a test can check the numbers
behind a figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from labutils.corruptions.core import CORRUPTIONS, SEVERITIES, check_images, corrupt, is_approximation


def corruption_grid(
    images: torch.Tensor,
    names: Sequence[str] | None = None,
    severities=SEVERITIES,
    seed: int = 0,
    *,
    benchmark: str | None = None,
):
    """One row per corruption, one column per severity (plus the clean image), of the first image.

    ``images`` float (N, C, H, W) in [0, 1]; ``benchmark`` as in :func:`corrupt`.
    Returns ``(fig, data)``: data[name] is the float array
    (S, C, H, W) drawn in that row.
    """
    import matplotlib.pyplot as plt

    images = check_images(images)[:1]
    names = tuple(CORRUPTIONS if names is None else names)
    fig, axes = plt.subplots(len(names), len(severities) + 1, figsize=(1.3 * (len(severities) + 1), 1.3 * len(names)))
    axes = np.atleast_2d(axes)
    grey = images.shape[1] == 1
    data = {}
    for row, name in enumerate(names):
        pics = torch.cat([corrupt(images, name, s, seed, benchmark=benchmark) for s in severities]).cpu().numpy()
        data[name] = pics
        for col, img in enumerate([images[0].cpu().numpy(), *pics]):
            ax = axes[row, col]
            ax.imshow(img[0] if grey else img.transpose(1, 2, 0), cmap="gray" if grey else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("clean" if col == 0 else f"severity {severities[col - 1]}", fontsize=7)
        axes[row, 0].set_ylabel(name + (" *" if is_approximation(name, benchmark) else ""), fontsize=6)
    fig.tight_layout()
    return fig, data


def plot_corruption_heatmaps(
    results,
    models: Sequence[str] | None = None,
    *,
    title: str = "",
    vmin: float = 0.0,
    vmax: float = 1.0,
    annotate: bool = True,
):
    """Accuracy per corruption (rows) and severity (columns), one panel per model, all on ONE colour scale.

    ``results`` is the :class:`~labutils.corruptions.evaluation.CorruptionResults` of
    :func:`~labutils.corruptions.evaluate_under_corruption`; ``models`` (default: all) its models to draw.
    The colour scale is ``vmin``..``vmax`` (default the whole accuracy range 0..1, so that two figures of the
    same lab can be compared too), with one colour bar; every cell prints its accuracy (``annotate``). Every
    panel names the corruptions on its own y axis, and the figure's title sits above the panel titles.

    Returns ``(fig, data)``: data[model] is the (corruptions, severities) accuracy array drawn, with
    data["corruptions"], data["severities"] and data["vmin"]/data["vmax"] (the shared scale).
    """
    import matplotlib.pyplot as plt

    models = list(results.models if models is None else models)
    if not models:
        raise ValueError("plot_corruption_heatmaps needs at least one model to draw.")
    if not vmin < vmax:
        raise ValueError(f"vmin={vmin!r} must be below vmax={vmax!r}.")
    tables = {m: results.table(m).drop(columns="mean") for m in models}
    arrays = {m: t.to_numpy(dtype=float) for m, t in tables.items()}
    first = tables[models[0]]
    rows, cols = first.shape
    fig, axes = plt.subplots(
        1,
        len(models),
        figsize=(2.2 + (1.0 + 0.5 * cols) * len(models), 1.2 + 0.32 * rows),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    image = None
    for ax, m in zip(axes[0], models):
        image = ax.imshow(arrays[m], cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_xticks(range(cols), [c.split()[-1] for c in first.columns])
        ax.set_yticks(range(rows), first.index, fontsize=7)
        ax.tick_params(axis="y", labelleft=True)
        ax.set(xlabel="severity", title=m)
        if annotate:
            for (r, c), value in np.ndenumerate(arrays[m]):
                dark = (value - vmin) / (vmax - vmin) < 0.55  # viridis is dark below about the middle
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=6, color="white" if dark else "black")
    fig.colorbar(image, ax=list(axes[0]), label="top-1 accuracy", shrink=0.9)
    if title:
        fig.suptitle(title)
    data = {m: arrays[m] for m in models}
    data.update(corruptions=list(first.index), severities=list(first.columns), vmin=vmin, vmax=vmax)
    return fig, data
