"""Lab 00's explorer: browse the real digits by class and index, with the image's pixel histogram beside the
class's, and where the data came from.

>>> explore.lab00_data(mnist)          # mnist = data.load_arrays("mnist", profile=PROFILE, seed=SEED)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labutils.explore.core import Explorer, View, drawn, figure

SPLITS = ("train", "val", "test")
BINS = np.linspace(0, 256, 17)  # 16 bins of 16 grey levels each


def split_arrays(splits, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of one split (train, val or test) of an :class:`~labutils.data.ArraySplits`."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: choose one of {', '.join(SPLITS)}.")
    return getattr(splits, f"x_{split}"), getattr(splits, f"y_{split}")


def class_summary(images: np.ndarray, labels: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean image (C, H, W) and pixel histogram (fraction of pixels per bin of :data:`BINS`) of one class."""
    members = images[labels == label]
    counts, _ = np.histogram(members, bins=BINS)
    return members.mean(axis=0), counts / max(1, counts.sum())


def digit_view(
    splits, split: str = "train", label: int = 0, index: int = 0, cache: dict | None = None
) -> dict[str, Any]:
    """The ``index``-th image of class ``label`` in ``split`` and the numbers shown beside it.

    Returns ``{"position", "image" (C, H, W) uint8, "label", "class_name", "class_size", "histogram",
    "class_histogram" (fractions of pixels per bin of :data:`BINS`), "class_mean" (C, H, W) float, "ink"}``:
    ``position`` is the image's index in the split; ``ink`` the fraction of its pixels above half intensity.
    ``cache`` (a dict) keeps each class's mean and histogram between calls.
    """
    images, labels = split_arrays(splits, split)
    classes = splits.info.classes
    if not 0 <= label < len(classes):
        raise ValueError(f"label={label!r} is not a class of {splits.info.name}: use 0 to {len(classes) - 1}.")
    members = np.flatnonzero(labels == label)
    if not 0 <= index < len(members):
        raise ValueError(
            f"index={index} is past the {len(members)} images of class {classes[label]!r} in the {split} split: "
            f"use 0 to {len(members) - 1}."
        )
    position = int(members[index])
    image = images[position]
    counts, _ = np.histogram(image, bins=BINS)
    cache = {} if cache is None else cache
    if (split, label) not in cache:
        cache[split, label] = class_summary(images, labels, label)
    mean, class_hist = cache[split, label]
    return {
        "position": position,
        "image": image,
        "label": int(label),
        "class_name": str(classes[label]),
        "class_size": len(members),
        "histogram": counts / counts.sum(),
        "class_histogram": class_hist,
        "class_mean": mean,
        "ink": float(np.mean(image > 127)),
    }


def _show(ax, image: np.ndarray, **kwargs) -> None:
    image = np.asarray(image)
    ax.imshow(image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0)), **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_digit(view: dict[str, Any], split: str, dataset: str):
    """The digit, its class's mean image, and both pixel histograms (log scale: most pixels are background)."""
    fig = figure(10, 3.0)
    ax_img, ax_mean, ax_hist = fig.subplots(1, 3, width_ratios=[1, 1, 2])
    _show(ax_img, view["image"], cmap="gray", vmin=0, vmax=255)
    ax_img.set_title(f"{dataset} {split}[{view['position']}]: {view['class_name']}", fontsize=9)
    _show(ax_mean, view["class_mean"], cmap="gray", vmin=0, vmax=255)
    ax_mean.set_title(f"mean of the {view['class_size']:,} {view['class_name']}s", fontsize=9)
    ax_hist.stairs(view["histogram"], BINS, label="this image", lw=1.6)
    ax_hist.stairs(view["class_histogram"], BINS, label="its class", lw=1.2, ls="--")
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("pixel value (0 = black, 255 = white)")
    ax_hist.set_ylabel("fraction of pixels (log scale)")
    ax_hist.legend(fontsize=8)
    return fig


def lab00_data(splits) -> Explorer:
    """Browse ``splits`` (:func:`labutils.data.load_arrays`) by split, class and index: the image, its class's mean
    image and the pixel histograms of both; the dataset's provenance above the controls."""
    import ipywidgets as widgets

    info = splits.info
    smallest = min(int(np.bincount(split_arrays(splits, s)[1], minlength=info.num_classes).min()) for s in SPLITS)
    if smallest < 1:
        raise ValueError(f"{info.name} has a class with no image in some split: nothing to browse there.")
    controls = {
        "split": widgets.ToggleButtons(options=SPLITS, value="train", description="split"),
        "label": widgets.Dropdown(
            options=[(str(c), i) for i, c in enumerate(info.classes)], value=0, description="class"
        ),
        "index": widgets.IntSlider(value=0, min=0, max=smallest - 1, description="index", continuous_update=False),
    }

    cache: dict = {}

    def view(split: str, label: int, index: int) -> View:
        shown = digit_view(splits, split, label, index, cache)
        text = (
            f"{info.name} {split}[{shown['position']}], class {shown['class_name']} (image {index + 1} of "
            f"{shown['class_size']:,}): {shown['ink']:.0%} of its pixels are ink (> 127), "
            f"{shown['histogram'][0]:.0%} are (nearly) black."
        )
        return drawn(draw_digit(shown, split, info.name), text, shown)

    return Explorer("lab00-data", view, controls, title="The digits, one by one", note=info.describe())
