"""Plots for the from-scratch labs. Every function returns ``(fig, data)``: the figure and the numbers it drew.

- :func:`plot_activations`: sigmoid / tanh / ReLU and their derivatives (from the layers' own backward).
- :func:`plot_decision_boundary`: a 2-D classifier's predicted class over a grid, with the data on top.
- :func:`plot_fits`: a 1-D function and several models' predictions, with each model's MSE.
- :func:`plot_histories`: training curves of several runs side by side (``labutils.plots``).
- :func:`plot_grad_norms`: per-layer gradient norms over training, one panel per run.
- :func:`plot_first_layer_weights`: the first linear layer's rows as images (what an MNIST MLP looks for).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from labutils.plots import plot_histories

from .trainer import predict

__all__ = [
    "plot_activations",
    "plot_decision_boundary",
    "plot_fits",
    "plot_histories",
    "plot_grad_norms",
    "epoch_means",
    "plot_first_layer_weights",
]


def _axes(n: int, axes=None, size=(4.2, 3.3)):
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, n, figsize=(size[0] * n, size[1]), squeeze=False)
        axes = axes[0]
    axes = np.atleast_1d(axes)
    if len(axes) < n:
        raise ValueError(f"Need {n} axes for this plot, got {len(axes)}.")
    return axes


def plot_activations(
    names: Sequence[str] = ("sigmoid", "tanh", "relu"), x: np.ndarray | None = None, axes=None
) -> tuple[Any, dict[str, dict[str, np.ndarray]]]:
    """Each activation f and its derivative f' on ``x`` (default [-5, 5]), one panel each.

    The derivative comes from the layer's ``backward(ones)``, so the plot checks the code it shows.
    Returns ``(fig, {name: {"x": x, "f": f(x), "df": f'(x)}})``.
    """
    from .mlp import ACTIVATIONS

    unknown = [n for n in names if n not in ACTIVATIONS]
    if unknown:
        raise ValueError(f"Unknown activation(s) {unknown}: choose from {', '.join(ACTIVATIONS)}.")
    x = np.linspace(-5, 5, 401) if x is None else np.asarray(x, dtype=np.float64)
    axes = _axes(len(names), axes, size=(3.4, 2.8))
    drawn = {}
    for ax, name in zip(axes, names):
        layer = ACTIVATIONS[name]()
        f = layer.forward(x.copy())
        df = layer.backward(np.ones_like(x))
        ax.plot(x, f, label=f"{name}(x)")
        ax.plot(x, df, "--", label=f"{name}'(x)")
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("x")
        ax.legend(fontsize=8)
        drawn[name] = {"x": x, "f": f, "df": df}
    return axes[0].figure, drawn


def plot_decision_boundary(
    model, x: np.ndarray, y: np.ndarray, ax=None, resolution: int = 200, margin: float = 0.5
) -> tuple[Any, dict[str, np.ndarray | float]]:
    """Shade the plane by the class ``model`` predicts and scatter the points ``x`` (N, 2) coloured by ``y``.

    ``model`` is a scratch model (its ``forward`` is used in eval mode) or any callable mapping
    ``(M, 2)`` inputs to ``(M, classes)`` scores. Returns ``(fig, data)`` with ``data["xx"], ["yy"], ["classes"]``
    (the grid and the predicted class per grid point, ``(resolution, resolution)``) and ``data["accuracy"]``
    on ``(x, y)``.
    """
    import matplotlib.pyplot as plt

    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"plot_decision_boundary needs 2-D points of shape (N, 2), got {x.shape}.")
    scores: Callable[[np.ndarray], np.ndarray] = (
        model if not hasattr(model, "forward") else (lambda pts: predict(model, pts))
    )
    lo, hi = x.min(axis=0) - margin, x.max(axis=0) + margin
    xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = np.c_[xx.ravel(), yy.ravel()].astype(x.dtype)
    classes = np.argmax(scores(grid), axis=1).reshape(xx.shape)
    accuracy = float(np.mean(np.argmax(scores(x), axis=1) == y))
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    ax.contourf(xx, yy, classes, alpha=0.3, cmap="coolwarm", levels=np.arange(classes.max() + 2) - 0.5)
    ax.scatter(x[:, 0], x[:, 1], c=y, cmap="coolwarm", s=12, edgecolors="k", linewidths=0.3)
    ax.set_title(f"decision boundary (accuracy {accuracy:.1%})")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    return ax.figure, {"xx": xx, "yy": yy, "classes": classes, "accuracy": accuracy}


def plot_fits(x: np.ndarray, target: np.ndarray, fits: dict[str, np.ndarray], ax=None) -> tuple[Any, dict[str, float]]:
    """Plot a 1-D target curve and each model's prediction on the same points; returns ``(fig, {name: MSE})``."""
    import matplotlib.pyplot as plt

    x, target = np.ravel(x), np.ravel(target)
    order = np.argsort(x)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(x[order], target[order], color="k", lw=2.5, alpha=0.35, label="target")
    errors = {}
    for name, pred in fits.items():
        pred = np.ravel(pred)
        if pred.shape != x.shape:
            raise ValueError(f"Prediction {name!r} has {pred.size} values for {x.size} points.")
        errors[name] = float(np.mean((pred.astype(np.float64) - target) ** 2))
        ax.plot(x[order], pred[order], label=f"{name} (MSE {errors[name]:.2g})")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize=8)
    return ax.figure, errors


def epoch_means(series: Sequence[float], steps_per_epoch: int) -> np.ndarray:
    """Average a per-update series over each epoch (the last epoch may be partial)."""
    series = np.asarray(series, dtype=np.float64)
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch!r}.")
    chunks = np.array_split(series, range(steps_per_epoch, len(series), steps_per_epoch))
    return np.array([chunk.mean() for chunk in chunks if chunk.size])


def plot_grad_norms(
    histories: dict[str, dict], params: Sequence[str] | None = None, per_epoch: bool = True, axes=None
) -> tuple[Any, dict[str, dict[str, np.ndarray]]]:
    """Per-layer gradient L2 norms over training, one panel per run (log scale, shared y axis).

    ``histories``: ``{run: history}`` from ``trainer.train(..., record_grad_norms=True)``.
    ``params``: which parameters to draw (default: every ``*.weight``, i.e. one line per layer).
    ``per_epoch``: average the per-update norms within each epoch (else draw every update).
    Returns ``(fig, {run: {param: values}})``.
    """
    if not histories:
        raise ValueError("plot_grad_norms needs at least one history, got an empty dict.")
    missing = [name for name, h in histories.items() if "grad_norms" not in h]
    if missing:
        raise ValueError(f"Histories {missing} have no gradient norms: train with record_grad_norms=True.")
    from matplotlib.ticker import MaxNLocator

    axes = _axes(len(histories), axes, size=(3.8, 3.2))
    drawn: dict[str, dict[str, np.ndarray]] = {}
    for ax, (run, history) in zip(axes, histories.items()):
        norms = history["grad_norms"]
        chosen = list(params) if params is not None else [p for p in norms if p.endswith("weight")]
        unknown = [p for p in chosen if p not in norms]
        if unknown:
            raise ValueError(f"Run {run!r} has no parameters {unknown}; it has {list(norms)}.")
        drawn[run] = {}
        for p in chosen:
            values = epoch_means(norms[p], history["steps_per_epoch"]) if per_epoch else np.asarray(norms[p])
            x = np.arange(1, len(values) + 1)
            ax.plot(x, values, marker="." if len(values) <= 30 else None, label=p)
            drawn[run][p] = values
        ax.set_yscale("log")
        ax.set_title(run)
        ax.set_xlabel("epoch" if per_epoch else "update")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and updates are whole numbers
        ax.set_ylabel("gradient norm ||dL/dW|| (log scale)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    if len(axes) > 1:
        lows = [v.min() for run in drawn.values() for v in run.values() if v.size and v.min() > 0]
        highs = [v.max() for run in drawn.values() for v in run.values() if v.size]
        if lows and highs:
            for ax in axes[: len(histories)]:
                ax.set_ylim(min(lows) / 1.5, max(highs) * 1.5)
    return axes[0].figure, drawn


def plot_first_layer_weights(
    weight: np.ndarray, image_shape=(28, 28), n: int = 16, axes=None, label: str = "weight"
) -> tuple[Any, np.ndarray]:
    """Show the first ``n`` rows of a first-layer weight ``(hidden, H*W)`` as ``H x W`` images.

    All images share one symmetric colour scale (red positive, blue negative, white zero) with a colour bar
    labelled ``label``, so a pale unit really has small weights. Pass ``weight - initial_weight`` to see what
    training changed. Returns ``(fig, images)``, the images drawn, ``(n, H, W)``.
    """
    import matplotlib.pyplot as plt

    weight = np.asarray(weight)
    if weight.ndim != 2 or weight.shape[1] != int(np.prod(image_shape)):
        raise ValueError(f"Weight of shape {weight.shape} does not hold rows of images of shape {tuple(image_shape)}.")
    n = min(n, weight.shape[0])
    images = weight[:n].reshape(n, *image_shape)
    if axes is None:
        cols = min(n, 8)
        _, axes = plt.subplots(-(-n // cols), cols, figsize=(1.3 * cols, 1.3 * -(-n // cols)), squeeze=False)
    axes = np.ravel(axes)
    for ax in axes:
        ax.axis("off")
    limit = float(np.abs(images).max()) or 1.0
    for ax, image in zip(axes, images):
        shown = ax.imshow(image, cmap="seismic", vmin=-limit, vmax=limit)
    axes[0].figure.colorbar(shown, ax=list(axes), shrink=0.8, label=label)
    return axes[0].figure, images
