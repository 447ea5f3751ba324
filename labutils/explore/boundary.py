"""Lab 01's explorer: the decision boundary of a small NumPy MLP on a 2-D problem (XOR, two spirals) as its hidden
units, depth and activation change.

Each setting trains the lab's own from-scratch MLP (:func:`labutils.scratch.mlp.mlp`) for a few hundred full-batch
Adam steps on 200 points: a fraction of a second, remembered, so moving back to a setting redraws at once.

>>> explore.lab01_decision_boundary()
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from labutils.explore.core import Explorer, View, drawn, figure

PROBLEMS = ("xor", "spirals")
ACTIVATIONS = ("relu", "tanh", "sigmoid")
HIDDEN_UNITS = (1, 2, 3, 4, 8, 16, 32, 64)
STEPS, LR, POINTS = 400, 0.03, 200


def two_spirals(n: int, noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals in the plane, ``n`` points in all: x ``(n, 2)`` float32, y ``(n,)`` int64 (0 or 1).

    Each arm turns 1.5 times around the origin; class 1 is class 0 rotated by half a turn. No straight line and no
    single bend separates them, so they show what depth and width buy.
    """
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer number of points >= 2, got {n!r}.")
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = rng.uniform(0.25, 1.0, size=n) * 3 * math.pi  # angle along the arm
    x = np.stack([t * np.cos(t + math.pi * y), t * np.sin(t + math.pi * y)], axis=1) / (3 * math.pi) * 2
    x += rng.normal(scale=noise, size=x.shape)
    return x.astype(np.float32), y.astype(np.int64)


def problem(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The points of one problem: ``xor`` (the lab's noisy XOR) or ``spirals``; :data:`POINTS` of them."""
    from labutils.scratch import toy

    if name == "xor":
        return toy.xor_dataset(POINTS, seed=seed)
    if name == "spirals":
        return two_spirals(POINTS, seed=seed)
    raise ValueError(f"Unknown problem {name!r}: choose one of {', '.join(PROBLEMS)}.")


def train_boundary(
    name: str = "xor", hidden: int = 8, layers: int = 1, activation: str = "tanh", steps: int = STEPS, seed: int = 0
) -> dict[str, Any]:
    """Train ``mlp([2, hidden × layers, 2], activation)`` on problem ``name`` with full-batch Adam (lr :data:`LR`).

    Returns ``{"model", "x", "y", "losses" (steps + 1,) training loss before each step and after the last,
    "accuracy" (training accuracy at the end)}``.
    """
    from labutils.scratch.losses import softmax_cross_entropy
    from labutils.scratch.mlp import mlp
    from labutils.scratch.optim import Adam

    if not isinstance(layers, (int, np.integer)) or not 1 <= layers <= 3:
        raise ValueError(f"layers={layers!r} is not possible here: use 1, 2 or 3 hidden layers.")
    x, y = problem(name, seed)
    model = mlp([2, *[hidden] * layers, 2], activation=activation, seed=seed, dtype=np.float64)
    optimizer = Adam(model.parameters(), lr=LR)
    x = x.astype(np.float64)
    losses = []
    for _ in range(steps):
        loss, dscores = softmax_cross_entropy(model.forward(x), y)
        losses.append(loss)
        model.backward(dscores)
        optimizer.step(model.gradients())
    scores = model.forward(x)
    losses.append(softmax_cross_entropy(scores, y)[0])
    return {
        "model": model,
        "x": x,
        "y": y,
        "losses": np.asarray(losses),
        "accuracy": float(np.mean(scores.argmax(1) == y)),
    }


def draw_boundary(result: dict[str, Any], title: str):
    """The predicted class over the plane with the points on top, and the training loss per step."""
    from labutils.scratch.viz import plot_decision_boundary

    fig = figure(9.5, 3.8)
    ax_plane, ax_loss = fig.subplots(1, 2, width_ratios=[1.1, 1])
    _, grid = plot_decision_boundary(result["model"], result["x"], result["y"], ax=ax_plane, resolution=120)
    ax_plane.set_title(title, fontsize=9)
    ax_loss.plot(result["losses"])
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="full-batch Adam step", ylabel="training loss (log scale)", title="training loss")
    ax_loss.grid(alpha=0.3, which="both")
    return fig, grid


def lab01_decision_boundary(seed: int = 0) -> Explorer:
    """Problem, hidden units, hidden layers and activation → the decision boundary of the trained MLP and its
    training loss."""
    import ipywidgets as widgets

    controls = {
        "name": widgets.ToggleButtons(options=PROBLEMS, value="xor", description="problem"),
        "hidden": widgets.SelectionSlider(
            options=HIDDEN_UNITS, value=4, description="hidden units", continuous_update=False
        ),
        "layers": widgets.Dropdown(options=[1, 2, 3], value=1, description="layers"),
        "activation": widgets.ToggleButtons(options=ACTIVATIONS, value="tanh", description="activation"),
    }
    trained: dict[tuple, dict[str, Any]] = {}  # a setting seen once redraws without training again

    def view(name: str, hidden: int, layers: int, activation: str) -> View:
        key = (name, hidden, layers, activation)
        if key not in trained:
            trained[key] = train_boundary(name, hidden, layers, activation, seed=seed)
        result = trained[key]
        sizes = "-".join(map(str, [2, *[hidden] * layers, 2]))
        fig, _ = draw_boundary(result, f"{name}: MLP {sizes} ({activation})")
        text = (
            f"{name}, MLP {sizes} with {activation}: training accuracy {result['accuracy']:.1%}, "
            f"loss {result['losses'][0]:.3f} → {result['losses'][-1]:.4f} after {STEPS} Adam steps (lr {LR})."
        )
        return drawn(fig, text, result)

    return Explorer(
        "lab01-mlp",
        view,
        controls,
        title="Decision boundary of a small NumPy MLP",
        note=f"{POINTS} points; each setting trains the lab's own MLP for {STEPS} full-batch Adam steps.",
    )
