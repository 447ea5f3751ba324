"""Lab 09's explorer: image, target class and CAM method → the heat map, with its ROAD score.

The maps and scores are :mod:`labutils.cam`'s: CAM by its definition, Grad-CAM and Grad-CAM++ from the ``grad-cam``
library, and a random map as the baseline; ROAD removes the pixels the map calls most (MoRF) or least (LeRF)
relevant, imputes them, and measures how the class logit moves. One image per redraw: a few forward passes.

>>> explore.lab09_cam(model, x_road, targets[:ROAD_IMAGES])      # model: the lab's teacher
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labutils.explore.core import Explorer, View, drawn, figure

PREDICTED = -1  # the target-class option that explains the model's own prediction


def cam_view(model, images, index: int, target: int = PREDICTED, method: str = "Grad-CAM", seed: int = 0) -> dict:
    """The ``method``'s map of ``images[index]`` (C, H, W, normalised as the model takes it) for class ``target``
    (:data:`PREDICTED`: the model's prediction), and its ROAD scores.

    Returns ``{"map": (H, W) in [0, 1], "target", "predicted", "probabilities": (K,), "road": {"morf", "lerf",
    "combined"}}`` (floats: the change of the class logit, and (lerf - morf) / 2, higher = more faithful).
    """
    import torch

    from labutils import cam

    if not 0 <= index < len(images):
        raise ValueError(f"index={index} is not an image: use 0 to {len(images) - 1}.")
    x = (
        torch.as_tensor(np.asarray(images[index : index + 1]))
        if not torch.is_tensor(images)
        else images[index : index + 1]
    )
    model.eval()
    with torch.no_grad():
        probabilities = torch.softmax(model(x.to(next(model.parameters()).device)), dim=1)[0].cpu().numpy()
    predicted = int(probabilities.argmax())
    target = predicted if target == PREDICTED else int(target)
    if not 0 <= target < len(probabilities):
        raise ValueError(f"target={target} is not a class of this model: use 0 to {len(probabilities) - 1}.")
    maps = cam.cam_maps(model, x, [target], methods=(method,), seed=seed)
    road = cam.road_scores(model, x, [target], maps, seed=seed)[method]
    return {
        "map": maps[method][0],
        "target": target,
        "predicted": predicted,
        "probabilities": probabilities,
        "road": {part: float(values[0]) for part, values in road.items()},
    }


def draw_cam(result: dict[str, Any], image: np.ndarray, title: str):
    """The image, and the map laid over it (one [0, 1] colour scale for every method)."""
    fig = figure(7.5, 3.4)
    ax_img, ax_map = fig.subplots(1, 2)
    picture = np.asarray(image)
    picture = picture[0] if picture.shape[0] == 1 else np.transpose(picture, (1, 2, 0))
    picture = (picture - picture.min()) / max(float(picture.max() - picture.min()), 1e-12)
    for ax in (ax_img, ax_map):
        ax.imshow(picture, cmap="gray")
        ax.axis("off")
    shown = ax_map.imshow(result["map"], cmap="jet", alpha=0.5, vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax_map, shrink=0.8, label="relevance")
    ax_img.set_title(f"predicted {result['predicted']} (p = {result['probabilities'].max():.2f})", fontsize=9)
    ax_map.set_title(title, fontsize=9)
    return fig


def lab09_cam(model, images, labels=None, max_images: int = 200, seed: int = 0) -> Explorer:
    """Image (an index into ``images``, (N, C, H, W) normalised as the model takes them), target class and method →
    the map over the image and its ROAD scores. ``model``: a global-average-pooled CNN
    (:func:`labutils.cam.cam_layer`)."""
    import ipywidgets as widgets

    from labutils import cam

    cam.cam_layer(model)  # one clear error for a model CAM cannot explain
    classes = int(model.fc.out_features)
    controls = {
        "index": widgets.IntSlider(
            value=0, min=0, max=min(len(images), max_images) - 1, description="image", continuous_update=False
        ),
        "target": widgets.Dropdown(
            options=[("predicted", PREDICTED), *[(str(c), c) for c in range(classes)]],
            value=PREDICTED,
            description="class",
        ),
        "method": widgets.ToggleButtons(options=[*cam.METHODS, cam.RANDOM], value="Grad-CAM", description="method"),
    }

    def view(index: int, target: int, method: str) -> View:
        result = cam_view(model, images, index, target, method, seed)
        truth = f" (label {int(labels[index])})" if labels is not None else ""
        road = result["road"]
        text = (
            f"image {index}{truth}, {method} map of class {result['target']}: ROAD combined {road['combined']:+.3f} "
            f"(imputing the most relevant pixels moves the logit by {road['morf']:+.2f}, the least relevant by "
            f"{road['lerf']:+.2f}; higher combined = more faithful)."
        )
        return drawn(draw_cam(result, np.asarray(images[index]), f"{method}, class {result['target']}"), text, result)

    return Explorer("lab09-cam", view, controls, title="Class activation maps and their ROAD score")
