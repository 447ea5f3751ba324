"""Pictures of data: labelled sample grids, class balance, augmentation previews.

Every function returns the figure *and* the numbers it draws, so tests can check what a plot shows.
Images are uint8 arrays (N, C, H, W) as :func:`labutils.data.load_arrays` returns them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _to_hwc(img: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8/float → (H, W) for grey or (H, W, 3) for colour, ready for imshow."""
    img = np.asarray(img)
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))


def image_grid(
    images: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    n: int = 24,
    ncols: int = 8,
    title: str | None = None,
    seed: int = 0,
):
    """A grid of ``n`` randomly chosen images titled with their class names.

    Returns ``(fig, indices)``: the indices into ``images`` that were drawn, in reading order.
    """
    import matplotlib.pyplot as plt

    if images.ndim != 4:
        raise ValueError(f"image_grid expects images of shape (N, C, H, W), got {images.shape}.")
    n = min(n, len(images))
    idx = np.random.default_rng(seed).choice(len(images), size=n, replace=False) if n else np.array([], int)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.4 * ncols, 1.55 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), idx):
        ax.imshow(_to_hwc(images[i]), cmap="gray" if images.shape[1] == 1 else None)
        ax.set_title(str(classes[int(labels[i])])[:14], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig, idx


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """How many examples of each class: int array of shape (num_classes,)."""
    return np.bincount(np.asarray(labels, np.int64), minlength=num_classes)


def class_balance(splits: dict[str, np.ndarray], classes: Sequence[str], title: str | None = None):
    """Bar chart of examples per class for each split (e.g. ``{"train": y_train, "test": y_test}``).

    Returns ``(fig, counts)`` with ``counts[split]`` an int array of shape (num_classes,).
    """
    import matplotlib.pyplot as plt

    k = len(classes)
    counts = {name: class_counts(y, k) for name, y in splits.items()}
    width = 0.8 / max(1, len(counts))
    fig, ax = plt.subplots(figsize=(min(14, 2 + 0.45 * k), 3))
    for j, (name, c) in enumerate(counts.items()):
        ax.bar(np.arange(k) + j * width, c, width=width, label=f"{name} ({c.sum():,})")
    if k <= 20:
        ax.set_xticks(
            np.arange(k) + width * (len(counts) - 1) / 2,
            [str(c)[:12] for c in classes],
            rotation=45,
            ha="right",
            fontsize=8,
        )
    ax.set_ylabel("examples")
    # beside the axes, not over the bars: the tallest bars are often the last classes'
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig, counts


def augmentation_preview(
    image: np.ndarray,
    presets: Sequence[str] = ("none", "standard", "strong"),
    n: int = 6,
    seed: int = 0,
    flips: bool = True,
):
    """One image (C, H, W uint8) through each augmentation preset ``n`` times, one row per preset
    (``flips=False`` as :func:`labutils.data.make_loaders` uses for digits).

    Returns ``(fig, views)`` with ``views[preset]`` a uint8 array (n, C, H, W) of what was drawn.
    """
    import matplotlib.pyplot as plt
    import torch

    from labutils.data import augmentation

    torch.manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(image))
    views = {}
    for preset in presets:
        tf = augmentation(preset, image.shape[-1], flips=flips)
        views[preset] = np.stack([(tf(x) if tf is not None else x).numpy() for _ in range(n)])
    fig, axes = plt.subplots(len(presets), n, figsize=(1.5 * n, 1.6 * len(presets)), squeeze=False)
    for r, preset in enumerate(presets):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(_to_hwc(views[preset][c]), cmap="gray" if image.shape[0] == 1 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(preset, fontsize=9)
    fig.tight_layout()
    return fig, views
