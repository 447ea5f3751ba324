"""Class activation maps: which parts of an image a CNN's decision rests on, and how faithful such a map is.

**CAM** (Zhou et al., 2016). A network that ends in global average pooling and one linear layer scores class
``c`` as ``y_c = b_c + Σ_k w_ck · mean_ij A_k[i, j]``, where ``A`` (K, h, w) are the last convolutional feature
maps. Swapping the sum and the mean, ``y_c = b_c + mean_ij M_c[i, j]`` with the class activation map

    M_c[i, j] = Σ_k w_ck · A_k[i, j]        (h, w): the class weights times the last feature maps.

So the logit is the map's average: a map location contributes exactly what it adds to the score.

**Grad-CAM** (Selvaraju et al., 2017) needs no such architecture: the channel weights are the average gradients
``α_k = mean_ij ∂y_c/∂A_k[i, j]`` and the map is ``ReLU(Σ_k α_k A_k)``. On a global-average-pooled network
``∂y_c/∂A_k[i, j] = w_ck / (h·w)``, so Grad-CAM is ReLU(CAM) / (h·w): the same picture. **Grad-CAM++**
(Chattopadhay et al., 2018) weighs positive gradients location by location instead.

Grad-CAM, Grad-CAM++, the random baseline and the ROAD metric come from the maintained library ``grad-cam``
(``pytorch_grad_cam``, MIT). Every map is shown as the library shows it: ReLU, scaled to [0, 1] per image
(:func:`to_image_scale`), resized to the input, so maps of different methods share one colour scale.

**ROAD** (Rong et al., 2022) asks whether a map is faithful to the model: remove the pixels the map calls most
relevant (MoRF) or least relevant (LeRF), fill them by noisy linear imputation from their neighbours, and watch the
class score. A faithful map makes MoRF drop the score and LeRF leave it. The library's combined score,
``(LeRF change - MoRF change) / 2`` averaged over several removal percentiles, is higher for a better map; a
random map is the baseline to beat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

METHODS = ("CAM", "Grad-CAM", "Grad-CAM++")
RANDOM = "random"
ROAD_PERCENTILES = (20, 40, 60, 80)


def cam_layer(model: nn.Module) -> nn.Module:
    """The module whose output are the last feature maps (N, K, h, w), the input of global average pooling:
    ``stage3`` of the course's :class:`~labutils.models.ResNet` / ``PlainCNN``, ``body`` of ``SimpleCNN`` and
    ``ResNet18``."""
    for name in ("stage3", "body"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Module) and isinstance(getattr(model, "pool", None), nn.AdaptiveAvgPool2d):
            return layer
    raise ValueError(
        f"{type(model).__name__} has no global-average-pooled last stage that CAM knows (a 'stage3' or 'body' "
        "followed by 'pool'): use labutils.models.ResNet, PlainCNN, SimpleCNN or ResNet18."
    )


def feature_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last feature maps A (N, K, h, w) of ``model`` on images x (N, C, H, W), in evaluation mode, no gradient."""
    captured = []
    handle = cam_layer(model).register_forward_hook(lambda module, inputs, output: captured.append(output))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
        model.train(was_training)
    return captured[0]


def class_activation_map(maps: torch.Tensor, fc_weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """CAM by its definition: ``M[n] = Σ_k fc_weight[classes[n], k] · maps[n, k]``.

    maps: (N, K, h, w) last feature maps; fc_weight: (C, K) the final linear layer's weight; classes: (N,) the
    class explained for each image. Returns (N, h, w), negative values kept (no ReLU, no scaling).
    """
    if maps.ndim != 4 or fc_weight.ndim != 2 or maps.shape[1] != fc_weight.shape[1]:
        raise ValueError(
            f"class_activation_map needs maps (N, K, h, w) and fc_weight (C, K) with the same K, got "
            f"{tuple(maps.shape)} and {tuple(fc_weight.shape)}."
        )
    weights = fc_weight[torch.as_tensor(classes, device=fc_weight.device).long()]  # (N, K): each image's class row
    return torch.einsum("nk,nkhw->nhw", weights.to(maps.dtype), maps)


def to_image_scale(cam: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A map as the library makes its maps: ReLU; per image min-max scaled to [0, 1] and bilinearly resized to
    ``size`` = (H, W); min-max scaled again (the resized map's extremes can fall between pixels).
    cam (N, h, w) -> (N, H, W) float32, with ``pytorch_grad_cam.utils.image.scale_cam_image``."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    cam = cam.detach().cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam)
    height, width = size
    resized = scale_cam_image(np.maximum(cam, 0), (width, height))  # OpenCV takes (width, height)
    return scale_cam_image(resized)


def _library_cam(method: str, model: nn.Module, x: torch.Tensor, classes: Sequence[int]) -> np.ndarray:
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, RandomCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"Grad-CAM": GradCAM, "Grad-CAM++": GradCAMPlusPlus, RANDOM: RandomCAM}[method]
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    with cls(model=model, target_layers=[cam_layer(model)]) as explainer:
        return explainer(input_tensor=x, targets=targets)


def cam_maps(
    model: nn.Module,
    x: torch.Tensor,
    classes: Sequence[int] | torch.Tensor,
    methods: Sequence[str] = METHODS,
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """``{method: (N, H, W) float32 maps in [0, 1]}`` explaining class ``classes[n]`` of image ``x[n]``.

    methods: any of ``"CAM"`` (by definition, :func:`class_activation_map`), ``"Grad-CAM"``, ``"Grad-CAM++"`` and
    ``"random"`` (the library's ``RandomCAM``: random channel weights, drawn from NumPy's generator seeded with
    ``seed``; the global generator is left as it was). The model is put in evaluation mode.
    """
    unknown = [m for m in methods if m not in (*METHODS, RANDOM)]
    if unknown:
        raise ValueError(f"Unknown CAM method {unknown[0]!r}: choose from {', '.join((*METHODS, RANDOM))}.")
    model.eval()
    device = next(model.parameters()).device
    x = x.to(device)
    classes = [int(c) for c in classes]
    out = {}
    for method in methods:
        if method == "CAM":
            raw = class_activation_map(feature_maps(model, x), model.fc.weight.detach(), torch.tensor(classes))
            out[method] = to_image_scale(raw, tuple(x.shape[-2:]))
        elif method == RANDOM:
            state = np.random.get_state()
            try:
                np.random.seed(seed)
                out[method] = _library_cam(method, model, x, classes)
            finally:
                np.random.set_state(state)
        else:
            out[method] = _library_cam(method, model, x, classes)
    return out


def road_scores(
    model: nn.Module,
    x: torch.Tensor,
    classes: Sequence[int] | torch.Tensor,
    maps: Mapping[str, np.ndarray],
    *,
    percentiles: Sequence[int] = ROAD_PERCENTILES,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """The library's ROAD scores of each map, per image: ``{method: {"morf", "lerf", "combined"}}``, each (N,).

    ``morf`` / ``lerf``: the change of the class logit when the most / least relevant pixels are removed and imputed
    (``ROADMostRelevantFirstAverage`` / ``ROADLeastRelevantFirstAverage``), averaged over ``percentiles``;
    ``combined`` = (lerf - morf) / 2, the library's ``ROADCombined``: higher means more faithful. The imputation's
    noise is drawn from torch's generator seeded with ``seed`` (the global generator is left as it was), so
    every method is scored on the same noise.
    """
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    x = x.to(next(model.parameters()).device)
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    out = {}
    for method, cams in maps.items():
        if cams.shape != (x.shape[0], *x.shape[-2:]):
            raise ValueError(f"maps[{method!r}] has shape {cams.shape}, expected {(x.shape[0], *x.shape[-2:])}.")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # LeRF first, then MoRF: ROADCombined's order, so the same seed gives its very numbers
            lerf = ROADLeastRelevantFirstAverage(list(percentiles))(x, cams, targets, model)
            morf = ROADMostRelevantFirstAverage(list(percentiles))(x, cams, targets, model)
        out[method] = {"morf": morf, "lerf": lerf, "combined": (lerf - morf) / 2}
    return out


# ---- figures ------------------------------------------------------------------------------------------------------
def plot_cam_grid(
    images: torch.Tensor | np.ndarray,
    maps: Mapping[str, np.ndarray],
    *,
    row_titles: Sequence[str] | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
):
    """One row per image: the image, then each method's map laid over it, all maps on one colour scale [0, 1]
    with one colour bar.

    images: (N, 1 or 3, H, W) as the model saw them (each is min-max scaled for display); maps: ``{method:
    (N, H, W) in [0, 1]}``; row_titles: one line per row (e.g. "7 → predicted 1"). Returns ``(fig, numbers)``
    with ``vmin``, ``vmax``, the ``methods`` in column order and the ``maps`` drawn (``{method: (N, H, W)}``).
    """
    import matplotlib.pyplot as plt

    images = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    methods = list(maps)
    n = len(images)
    if n == 0 or any(np.shape(maps[m])[0] != n for m in methods):
        raise ValueError(f"plot_cam_grid needs one map per image for every method, for {n} images.")
    vmin, vmax = 0.0, 1.0
    fig, axes = plt.subplots(n, 1 + len(methods), figsize=(1.7 * (1 + len(methods)) + 0.8, 1.7 * n), squeeze=False)
    shown = None
    for row in range(n):
        picture = images[row].transpose(1, 2, 0)
        picture = (picture - picture.min()) / max(float(picture.max() - picture.min()), 1e-12)
        grey = picture.mean(axis=2)
        axes[row, 0].imshow(picture if picture.shape[2] == 3 else grey, cmap="gray")
        axes[row, 0].set_ylabel(row_titles[row] if row_titles else "", fontsize="small")
        for col, method in enumerate(methods, start=1):
            axes[row, col].imshow(grey, cmap="gray")
            shown = axes[row, col].imshow(maps[method][row], cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    for col, title in enumerate(["image", *methods]):
        axes[0, col].set_title(title, fontsize="small")
    fig.colorbar(shown, ax=axes, shrink=0.6, label="relevance (per image, 0 to 1)")
    numbers = {"vmin": vmin, "vmax": vmax, "methods": methods, "maps": {m: np.asarray(maps[m]) for m in methods}}
    return fig, numbers


def plot_road(scores: Mapping[str, Mapping[str, np.ndarray]], *, title: str = "", ax=None):
    """Bars of the mean ROAD scores per method (MoRF change, LeRF change, combined), with the standard error of
    the mean over images as error bars. Returns ``(fig, numbers)``: ``{method: {"morf", "lerf", "combined"}}`` of
    ``(mean, standard error)`` pairs, as drawn."""
    import matplotlib.pyplot as plt

    parts = ("morf", "lerf", "combined")
    numbers = {}
    for method, s in scores.items():
        numbers[method] = {}
        for part in parts:
            v = np.asarray(s[part], dtype=np.float64)
            sem = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
            numbers[method][part] = (float(v.mean()), sem)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.6))
    else:
        fig = ax.figure
    methods, width = list(numbers), 0.8 / len(parts)
    for i, part in enumerate(parts):
        xs = np.arange(len(methods)) + (i - 1) * width
        means = [numbers[m][part][0] for m in methods]
        errors = [numbers[m][part][1] for m in methods]
        label = {"morf": "MoRF: most relevant removed", "lerf": "LeRF: least relevant removed"}.get(part, part)
        ax.bar(xs, means, width, yerr=errors, capsize=3, label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(methods)), methods)
    ax.set(ylabel="change of the class logit", title=title)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return fig, numbers


__all__ = [
    "METHODS",
    "RANDOM",
    "ROAD_PERCENTILES",
    "cam_layer",
    "feature_maps",
    "class_activation_map",
    "to_image_scale",
    "cam_maps",
    "road_scores",
    "plot_cam_grid",
    "plot_road",
]
