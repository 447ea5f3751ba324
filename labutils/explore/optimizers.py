"""Lab 02's explorer: optimizer trajectories on 2-D loss surfaces, stepped by the lab's own NumPy optimizers
(:mod:`labutils.scratch.optim`, whose updates are torch.optim's).

Two surfaces, each a classic test of an optimizer:

- ``quadratic``: ``f(x, y) = (x² + 25 y²) / 2``, a valley 25 times steeper across than along (condition number 25).
  Gradient descent zig-zags across it; momentum and the adaptive methods go along it. Any step beyond
  ``lr = 2/25 = 0.08`` makes plain gradient descent diverge across the valley.
- ``rosenbrock``: ``f(x, y) = (1 - x)² + 100 (y - x²)²``, a curved, flat-bottomed valley with its minimum at (1, 1).

A setting that diverges is a result, shown as a path that leaves the picture and the step where the loss passed
:data:`DIVERGED`, never as an error.

>>> explore.lab02_optimizers()
>>> optimizer_paths("rosenbrock", "adam", lr=0.05, momentum=0.9, beta2=0.999, steps=300)["losses"][-1]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from labutils.explore.core import Explorer, View, drawn, figure

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam")
OPTIMIZER_NAMES = {
    "sgd": "SGD",
    "momentum": "SGD with momentum",
    "nesterov": "SGD with Nesterov momentum",
    "rmsprop": "RMSprop",
    "adam": "Adam",
}
DIVERGED = 1e6  # a loss above this (or not finite) ends the path: the setting diverged


@dataclass(frozen=True)
class Surface:
    """A 2-D loss surface: ``loss(p)`` and ``grad(p)`` for ``p`` of shape (2,), where paths start, its minimum,
    and the box drawn."""

    name: str
    loss: Callable[[np.ndarray], float]
    grad: Callable[[np.ndarray], np.ndarray]
    start: tuple[float, float]
    minimum: tuple[float, float]
    box: tuple[float, float, float, float]  # x min, x max, y min, y max


QUADRATIC_CURVATURE = 25.0

SURFACES = {
    "quadratic": Surface(
        "quadratic",
        loss=lambda p: 0.5 * (p[0] ** 2 + QUADRATIC_CURVATURE * p[1] ** 2),
        grad=lambda p: np.array([p[0], QUADRATIC_CURVATURE * p[1]]),
        start=(-4.0, 1.5),
        minimum=(0.0, 0.0),
        box=(-5.0, 5.0, -2.5, 2.5),
    ),
    "rosenbrock": Surface(
        "rosenbrock",
        loss=lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2,
        grad=lambda p: np.array([-2 * (1 - p[0]) - 400 * p[0] * (p[1] - p[0] ** 2), 200 * (p[1] - p[0] ** 2)]),
        start=(-1.5, 2.0),
        minimum=(1.0, 1.0),
        box=(-2.0, 2.0, -1.0, 3.0),
    ),
}


def make_optimizer(name: str, params: list[np.ndarray], lr: float, momentum: float, beta2: float):
    """The lab's NumPy optimizer ``name`` on ``params``. ``momentum`` is SGD's momentum and Adam's β₁; ``beta2`` is
    Adam's β₂ and RMSprop's α (the decay of the running mean of squared gradients)."""
    from labutils.scratch.optim import SGD, Adam, RMSprop

    if name == "sgd":
        return SGD(params, lr=lr)
    if name == "momentum":
        return SGD(params, lr=lr, momentum=momentum)
    if name == "nesterov":
        return SGD(params, lr=lr, momentum=momentum, nesterov=True)
    if name == "rmsprop":
        return RMSprop(params, lr=lr, alpha=beta2)
    if name == "adam":
        return Adam(params, lr=lr, betas=(momentum, beta2))
    raise ValueError(f"Unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}.")


def optimizer_paths(
    surface: str = "quadratic",
    optimizer: str = "momentum",
    lr: float = 0.02,
    momentum: float = 0.9,
    beta2: float = 0.999,
    steps: int = 200,
) -> dict[str, Any]:
    """Run ``steps`` updates of ``optimizer`` from the surface's start point.

    Returns ``{"path": (k + 1, 2) points, "losses": (k + 1,) losses at them, "diverged_at": the step whose loss
    passed DIVERGED (then k is that step) or None, "distance": distance of the last point from the minimum}``.
    """
    if surface not in SURFACES:
        raise ValueError(f"Unknown surface {surface!r}: choose one of {', '.join(SURFACES)}.")
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps={steps!r} is not possible: use a positive integer.")
    s = SURFACES[surface]
    point = np.array(s.start, dtype=np.float64)
    opt = make_optimizer(optimizer, [point], lr, momentum, beta2)
    path, losses, diverged_at = [point.copy()], [s.loss(point)], None
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging path overflows: that is what is shown
        for step in range(1, steps + 1):
            opt.step([s.grad(point)])
            loss = s.loss(point)
            path.append(point.copy())
            losses.append(loss)
            if not np.isfinite(loss) or loss > DIVERGED:
                diverged_at = step
                break
    path = np.asarray(path)
    return {
        "path": path,
        "losses": np.asarray(losses),
        "diverged_at": diverged_at,
        "distance": float(np.linalg.norm(path[-1] - np.asarray(s.minimum))),
    }


def describe_settings(optimizer: str, lr: float, momentum: float, beta2: float) -> str:
    """The optimizer and every control's value, saying which of them this optimizer does not use."""
    used = {
        "sgd": (),
        "momentum": ("momentum",),
        "nesterov": ("momentum",),
        "rmsprop": ("alpha",),
        "adam": ("beta1", "beta2"),
    }[optimizer]
    parts = [f"lr {lr:.3g}"]
    if "momentum" in used:
        parts.append(f"momentum {momentum:.2f}")
    if "beta1" in used:
        parts += [f"β₁ {momentum:.2f}", f"β₂ {beta2:.3f}"]
    if "alpha" in used:
        parts.append(f"α {beta2:.3f}")
    unused = [
        f"{n} {v:.3g}"
        for n, v, keys in (("momentum/β₁", momentum, ("momentum", "beta1")), ("β₂/α", beta2, ("beta2", "alpha")))
        if not set(keys) & set(used)
    ]
    text = f"{OPTIMIZER_NAMES[optimizer]}, {', '.join(parts)}"
    return text + (f" ({' and '.join(unused)} not used)" if unused else "")


def draw_paths(result: dict[str, Any], surface: str, title: str):
    """The path over the surface's contours (log-spaced levels), and the loss per step (log scale)."""
    s = SURFACES[surface]
    fig = figure(10, 3.8)
    ax_path, ax_loss = fig.subplots(1, 2, width_ratios=[1.25, 1])
    x0, x1, y0, y1 = s.box
    xx, yy = np.meshgrid(np.linspace(x0, x1, 120), np.linspace(y0, y1, 120))
    zz = s.loss(np.stack([xx, yy]))
    ax_path.contour(xx, yy, np.log10(zz + 1e-3), levels=18, cmap="viridis", linewidths=0.7)
    path = result["path"]
    ax_path.plot(path[:, 0], path[:, 1], "-o", color="tab:red", ms=2, lw=1)
    ax_path.plot(*s.start, "ks", ms=5, label="start")
    ax_path.plot(*s.minimum, "k*", ms=10, label="minimum")
    ax_path.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x", ylabel="y", title=title)
    ax_path.title.set_fontsize(9)
    ax_path.legend(fontsize=7, loc="lower right")
    losses = np.where(np.isfinite(result["losses"]), result["losses"], np.nan)
    ax_loss.plot(np.arange(len(losses)), losses + 1e-12)
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="loss (log scale)", title="loss per step")
    if result["diverged_at"] is not None:
        ax_loss.axvline(result["diverged_at"], color="tab:red", ls="--", lw=1)
        ax_loss.set_title(f"diverged at step {result['diverged_at']}", color="tab:red")
    ax_loss.grid(alpha=0.3, which="both")
    return fig


def lab02_optimizers() -> Explorer:
    """Surface, optimizer, learning rate, momentum / β₁, β₂ / α and steps → the path over the surface and its loss
    curve, side by side."""
    import ipywidgets as widgets

    slider = dict(continuous_update=False, style={"description_width": "initial"})
    controls = {
        "surface": widgets.ToggleButtons(options=list(SURFACES), value="quadratic", description="surface"),
        "optimizer": widgets.Dropdown(
            options=[(OPTIMIZER_NAMES[o], o) for o in OPTIMIZERS], value="momentum", description="optimizer"
        ),
        "lr": widgets.FloatLogSlider(value=0.02, base=10, min=-4, max=0, step=0.1, description="lr", **slider),
        "momentum": widgets.FloatSlider(value=0.9, min=0.0, max=0.99, step=0.01, description="momentum / β₁", **slider),
        "beta2": widgets.FloatSlider(
            value=0.999, min=0.9, max=0.999, step=0.001, description="β₂ / α", readout_format=".3f", **slider
        ),
        "steps": widgets.IntSlider(value=200, min=10, max=500, step=10, description="steps", **slider),
    }

    def view(surface: str, optimizer: str, lr: float, momentum: float, beta2: float, steps: int) -> View:
        result = optimizer_paths(surface, optimizer, lr, momentum, beta2, steps)
        settings = describe_settings(optimizer, lr, momentum, beta2)
        if result["diverged_at"] is not None:
            outcome = (
                f"diverged at step {result['diverged_at']} of {steps}: the loss passed {DIVERGED:.0e}, the learning "
                "rate is too large for this surface."
            )
        else:
            outcome = (
                f"loss {result['losses'][0]:.3g} → {result['losses'][-1]:.3g} after {steps} steps, "
                f"{result['distance']:.3g} from the minimum."
            )
        fig = draw_paths(result, surface, f"{surface}: {settings}")
        return drawn(fig, f"{surface}, {settings}: {outcome}", result)

    return Explorer(
        "lab02-optimizers",
        view,
        controls,
        title="Optimizers on 2-D loss surfaces",
        note="Stepped by the lab's NumPy optimizers (labutils.scratch.optim), whose updates are torch.optim's.",
    )
