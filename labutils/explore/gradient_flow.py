"""Labs 04 and 05's explorer: per-layer gradient norms over training, plain vs residual, epoch by epoch.

It reads what the lab's runs recorded (:class:`labutils.gradflow.GradientRecorder`, or the record read back from
the experiment cache, :class:`labutils.experiment.SavedGradients`): the weight-gradient norm of every layer at every
recorded step. For a chosen depth and epoch it draws the mean profile over that epoch's recorded steps, input
layer on the left, for the plain and the residual network on one log axis, and beside it the first layer's norm
at every recorded step. The axes stay fixed while the epoch moves, so what changes is the gradient, not the scale.

>>> explore.lab04_gradient_flow(runs)     # runs[depth, variant] of lab 04 (or runs[variant, depth] of lab 05)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from labutils.explore.core import Explorer, View, drawn, figure

VARIANTS = ("plain", "residual")


def variant_and_depth(key: Any, run) -> tuple[str, int] | None:
    """``(variant, depth)`` of a lab 04 key ``(depth, variant)``, a lab 05 key ``(variant, depth)``, or of the run's
    name (``"plain-32"``); None for a run that is neither plain nor residual of a known depth."""
    parts = list(key) if isinstance(key, tuple) else str(getattr(run, "name", key)).rsplit("-", 1)
    variant = next((p for p in parts if p in VARIANTS), None)
    depth = next((int(p) for p in parts if isinstance(p, (int, np.integer)) or str(p).isdigit()), None)
    return None if variant is None or depth is None else (variant, depth)


def steps_per_epoch(run) -> int:
    """Optimizer steps in one epoch of ``run``: its training images over the batch size (rounded up), capped at the
    recipe's ``max_steps_per_epoch``, as :func:`labutils.train.fit` counts them."""
    recipe = run.recipe
    steps = math.ceil(int(run.dataset["sizes"]["train"]) / recipe.batch_size)
    return min(steps, recipe.max_steps_per_epoch) if recipe.max_steps_per_epoch else steps


def epoch_profile(recorder, steps_in_epoch: int, epoch: int, kind: str = "weight") -> dict[str, float]:
    """``{layer: mean gradient norm over the recorded steps of epoch ``epoch`` (1-based)}``, input layer first.

    ``recorder`` is a :class:`~labutils.gradflow.GradientRecorder` or its saved form (anything with ``.history``);
    step ``t`` (0-based, as :func:`labutils.train.fit` numbers them) belongs to epoch ``t // steps_in_epoch + 1``.
    """
    h = recorder.history
    steps = np.asarray(h["steps"])
    chosen = (steps // steps_in_epoch) + 1 == epoch
    if not chosen.any():
        raise ValueError(f"No gradient was recorded in epoch {epoch}: recorded steps run {steps.min()}…{steps.max()}.")
    values = np.asarray(h[kind], float)[chosen]
    return {name: float(v) for name, v in zip(h["layers"], np.nanmean(values, axis=0))}


def gradient_pairs(runs: Mapping[Any, Any]) -> dict[int, dict[str, Any]]:
    """``{depth: {"plain": run, "residual": run}}`` for every depth whose two runs both recorded gradients."""
    pairs: dict[int, dict[str, Any]] = {}
    for key, run in runs.items():
        found = variant_and_depth(key, run)
        if found is not None and getattr(run, "recorder", None) is not None and len(run.recorder):
            pairs.setdefault(found[1], {})[found[0]] = run
    both = {d: p for d, p in sorted(pairs.items()) if set(p) == set(VARIANTS)}
    if not both:
        raise ValueError(
            "No depth has both a plain and a residual run with a gradient record: train them with record_every set."
        )
    return both


def gradient_flow_view(pair: Mapping[str, Any], epoch: int) -> dict[str, Any]:
    """For a plain/residual pair at one depth: each variant's profile at ``epoch`` (:func:`epoch_profile`), its
    first-layer norm at every recorded step, and the number of epochs the pair ran."""
    epochs = min(len(run.history) for run in pair.values())
    if not 1 <= epoch <= epochs:
        raise ValueError(f"epoch={epoch} is not possible: these runs trained for {epochs} epoch(s).")
    out: dict[str, Any] = {"epochs": epochs, "profile": {}, "first_layer": {}, "steps_per_epoch": {}}
    for variant, run in pair.items():
        per_epoch = steps_per_epoch(run)
        out["steps_per_epoch"][variant] = per_epoch
        out["profile"][variant] = epoch_profile(run.recorder, per_epoch, epoch)
        h = run.recorder.history
        out["first_layer"][variant] = (np.asarray(h["steps"]), np.asarray(h["weight"], float)[:, 0])
    return out


def draw_gradient_flow(result: dict[str, Any], depth: int, epoch: int, limits: tuple[float, float]):
    """Profile at ``epoch`` (left) and the first layer's norm over all steps with that epoch shaded (right), on fixed
    log y limits."""
    from labutils.gradflow_plots import plot_layer_norms

    fig = figure(11, 3.6)
    ax_profile, ax_first = fig.subplots(1, 2, width_ratios=[1.3, 1])
    plot_layer_norms(result["profile"], ax=ax_profile, title=f"depth {depth}, epoch {epoch}: mean over its steps")
    ax_profile.set_ylim(*limits)
    for variant, (steps, norms) in result["first_layer"].items():
        ax_first.plot(steps, np.where(norms > 0, norms, np.nan), lw=1, label=variant)
    per_epoch = result["steps_per_epoch"]["plain"]
    ax_first.axvspan((epoch - 1) * per_epoch, epoch * per_epoch, color="0.85")
    ax_first.set_yscale("log")
    ax_first.set_ylim(*limits)
    ax_first.set(xlabel="step (shaded: this epoch)", ylabel="first layer ‖∂L/∂W‖ (log scale)", title="first layer")
    ax_first.legend(fontsize=8)
    ax_first.grid(alpha=0.3, which="both")
    return fig


def _log_limits(pairs: Mapping[int, Mapping[str, Any]]) -> dict[int, tuple[float, float]]:
    """Fixed y limits per depth: the smallest and largest positive norm either run recorded, with a margin."""
    limits = {}
    for depth, pair in pairs.items():
        values = np.concatenate([np.asarray(r.recorder.history["weight"], float).ravel() for r in pair.values()])
        positive = values[np.isfinite(values) & (values > 0)]
        low, high = (positive.min(), positive.max()) if positive.size else (1e-8, 1.0)
        limits[depth] = (low / 2, high * 2)
    return limits


def lab04_gradient_flow(runs: Mapping[Any, Any], name: str = "lab04-gradient-flow") -> Explorer:
    """Depth and epoch → per-layer weight-gradient norms of the plain and the residual network in that epoch, and the
    first layer's norm over training. ``runs``: the lab's ``{key: RunResult}`` (see :func:`variant_and_depth`)."""
    import ipywidgets as widgets

    pairs = gradient_pairs(runs)
    limits = _log_limits(pairs)
    deepest = max(pairs)
    controls = {
        "depth": widgets.Dropdown(options=list(pairs), value=deepest, description="depth"),
        "epoch": widgets.IntSlider(
            value=1,
            min=1,
            max=max(min(len(r.history) for r in p.values()) for p in pairs.values()),
            description="epoch",
            continuous_update=False,
        ),
    }

    def view(depth: int, epoch: int) -> View:
        result = gradient_flow_view(pairs[depth], epoch)
        ratios = {v: list(p.values())[0] / list(p.values())[-1] for v, p in result["profile"].items()}
        text = f"depth {depth}, epoch {epoch} of {result['epochs']}: first/last layer gradient norm " + ", ".join(
            f"{v} {r:.1e}" for v, r in ratios.items()
        )
        return drawn(draw_gradient_flow(result, depth, epoch, limits[depth]), text + ".", result)

    first = next(iter(pairs[deepest].values()))
    return Explorer(
        name,
        view,
        controls,
        title="Gradient flow during training: plain vs residual",
        note=f"Recorded every {first.recipe.record_every} step(s) while training on {first.dataset.get('name')}.",
    )


def lab05_gradient_flow(runs: Mapping[Any, Any]) -> Explorer:
    """Lab 05's runs (``runs[variant, depth]``, the deepest pair recorded): the same explorer as lab 04's."""
    return lab04_gradient_flow(runs, name="lab05-gradient-flow")
