"""Lab 06's explorers: augmentation on real digits, transform by transform and strength by strength; and the
training curves of the ablation's configurations, overlaid as chosen.

Augmentation. Each transform has one ``strength`` in [0, 1]: 0 changes nothing, 1 is far past what keeps a digit
readable. ``affine`` at strength 0.5 is exactly the lab's ``digits`` preset (rotations up to ±10°, shifts up to 10 %
of the side: :func:`labutils.data.augmentation`).

>>> explore.lab06_augmentation(profile=PROFILE)
>>> explore.lab06_curves(runs)            # runs = experiment.run_all(regularization.ablation_recipes(base), ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from labutils.explore.core import Explorer, View, control_options, drawn, figure

TRANSFORMS = ("affine", "rotation", "shift", "scale", "shear", "elastic", "erasing")
DRAWS = 2  # augmented copies of each digit shown


def transform(name: str, strength: float):
    """The torchvision v2 transform ``name`` at ``strength`` (0: the identity) for uint8 digit tensors (1, H, W)."""
    from torchvision.transforms import v2

    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength={strength!r} is not possible: use a number from 0 to 1.")
    s = float(strength)
    if name == "affine":  # the lab's digits preset at s = 0.5
        return v2.RandomAffine(degrees=20 * s, translate=(0.2 * s, 0.2 * s))
    if name == "rotation":
        return v2.RandomRotation(degrees=90 * s)
    if name == "shift":
        return v2.RandomAffine(degrees=0, translate=(0.4 * s, 0.4 * s))
    if name == "scale":
        return v2.RandomAffine(degrees=0, scale=(1 - 0.6 * s, 1 + 0.6 * s))
    if name == "shear":
        return v2.RandomAffine(degrees=0, shear=(-60 * s, 60 * s))
    if name == "elastic":
        return v2.ElasticTransform(alpha=120.0 * s, sigma=4.0)
    if name == "erasing":
        return v2.RandomErasing(p=1.0 if s > 0 else 0.0, scale=(0.02, 0.02 + 0.4 * s), value=0)
    raise ValueError(f"Unknown transform {name!r}: choose one of {', '.join(TRANSFORMS)}.")


def one_per_class(images: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The first image of every class, in class order: (K, C, H, W)."""
    firsts = [np.flatnonzero(labels == c)[:1] for c in range(num_classes)]
    return images[np.concatenate(firsts)]


def augmented(images: np.ndarray, name: str, strength: float, seed: int = 0, draws: int = DRAWS) -> dict[str, Any]:
    """``draws`` augmented copies of every image (N, C, H, W uint8): ``{"views": (draws, N, C, H, W) uint8,
    "changed": fraction of pixels that differ from the original, "shift": mean |Δ| in grey levels}``. Seeded."""
    import torch

    tf = transform(name, strength)
    torch.manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(images))
    views = np.stack([np.stack([tf(img).numpy() for img in x]) for _ in range(draws)])
    delta = np.abs(views.astype(np.int16) - images[None].astype(np.int16))
    return {"views": views, "changed": float(np.mean(delta > 0)), "shift": float(delta.mean())}


def draw_augmented(images: np.ndarray, views: np.ndarray, title: str):
    """The originals on the first row, each draw of augmented copies on a row below."""
    rows = 1 + len(views)
    fig = figure(0.75 * len(images) + 0.6, 0.8 * rows + 0.4)
    axes = fig.subplots(rows, len(images), squeeze=False)
    for r, row in enumerate([images, *views]):
        for c, img in enumerate(row):
            ax = axes[r, c]
            ax.imshow(img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0)), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel("original" if r == 0 else f"draw {r}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def lab06_augmentation(splits=None, profile: str | None = None) -> Explorer:
    """Transform, strength and random draw → one real digit of every class and its augmented copies.

    ``splits``: :func:`labutils.data.load_arrays` of a digit dataset (default MNIST in ``profile``, whatever dataset
    the lab itself trains on: flips and colour make no sense on digits, so this preview is of real digits)."""
    import ipywidgets as widgets

    from labutils import data, default_profile

    if splits is None:
        splits = data.load_arrays("mnist", profile=profile or default_profile())
    info = splits.info
    digits = one_per_class(splits.x_test, splits.y_test, info.num_classes)
    controls = {
        "name": widgets.Dropdown(options=TRANSFORMS, value="affine", description="transform"),
        "strength": widgets.FloatSlider(
            value=0.5, min=0.0, max=1.0, step=0.05, description="strength", continuous_update=False
        ),
        "seed": widgets.IntSlider(value=0, min=0, max=9, description="draw", continuous_update=False),
    }

    def view(name: str, strength: float, seed: int) -> View:
        result = augmented(digits, name, strength, seed)
        preset = " (the lab's digits preset)" if name == "affine" and strength == 0.5 else ""
        text = (
            f"{name} at strength {strength:.2f}{preset}: {result['changed']:.0%} of the pixels change, "
            f"by {result['shift']:.1f} grey levels on average."
        )
        return drawn(draw_augmented(digits, result["views"], f"{name}, strength {strength:.2f}"), text, result)

    return Explorer("lab06-augmentation", view, controls, title="Augmentation on real digits", note=info.describe())


# -- curves of the ablation --------------------------------------------------------------------------------------------
QUANTITIES = {"accuracy": ("train_acc", "val_acc"), "loss": ("train_loss", "val_loss")}


def curves(runs: Mapping[str, Any], chosen, quantity: str = "accuracy") -> dict[str, dict[str, list[float]]]:
    """``{metric: {configuration: per-epoch values}}`` of the ``chosen`` runs, for the training and validation
    columns of ``quantity`` (accuracy or loss)."""
    if quantity not in QUANTITIES:
        raise ValueError(f"Unknown quantity {quantity!r}: choose one of {', '.join(QUANTITIES)}.")
    chosen = list(chosen)
    if not chosen:
        raise ValueError("No configuration is chosen: pick at least one to draw its curves.")
    unknown = [name for name in chosen if name not in runs]
    if unknown:
        raise ValueError(f"Unknown configuration {unknown[0]!r}: choose from {', '.join(map(str, runs))}.")
    return {metric: {name: list(runs[name].history[metric]) for name in chosen} for metric in QUANTITIES[quantity]}


def lab06_curves(runs: Mapping[str, Any]) -> Explorer:
    """Configurations (several) and quantity → their training and validation curves overlaid, one panel each.
    ``runs``: ``{configuration: RunResult}`` of the ablation (the lab's ``runs``)."""
    import ipywidgets as widgets

    from labutils.plots import plot_histories

    names = control_options("lab06_curves", runs, "runs")
    controls = {
        "chosen": widgets.SelectMultiple(
            options=names, value=tuple(names[:2]), description="configurations", rows=min(6, len(names))
        ),
        "quantity": widgets.ToggleButtons(options=list(QUANTITIES), value="accuracy", description="show"),
    }

    def view(chosen, quantity: str) -> View:
        data = curves(runs, chosen, quantity)
        fig = figure(10, 3.4)
        plot_histories({n: runs[n].history for n in chosen}, metrics=QUANTITIES[quantity], axes=fig.subplots(1, 2))
        val = QUANTITIES[quantity][1]
        text = "last epoch: " + ", ".join(f"{n} {data[val][n][-1]:.3f}" for n in chosen) + f" ({val})."
        return drawn(fig, text, data)

    first = runs[names[0]]
    return Explorer(
        "lab06-curves",
        view,
        controls,
        title="The ablation's curves, overlaid",
        note=f"{first.dataset.get('name')}: {first.dataset.get('source')}",
    )
