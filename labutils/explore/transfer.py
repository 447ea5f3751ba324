"""Lab 07's explorer: transfer strategy × labelled examples per class → test accuracy, with the confusion matrix
of the chosen cell.

It reads the lab's finished runs of the transfer pair (``pair_runs[per_class, strategy]``): their test accuracy and
the confusion matrix each run saved with its result in the experiment cache. The dataset's provenance is shown
above the controls, so a synthetic stand-in is never mistaken for real data.

>>> explore.lab07_transfer(pair_runs)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from labutils.explore.core import Explorer, View, drawn, figure


def accuracy_grid(runs: Mapping[tuple[int, str], Any]) -> dict[str, Any]:
    """``{"budgets": sorted per-class budgets, "strategies": in the order first met, "top1": (S, B) test accuracy,
    NaN where a cell was not run}`` of ``runs[per_class, strategy]``."""
    if not runs:
        raise ValueError("lab07_transfer needs the lab's runs {(per_class, strategy): RunResult}, got none.")
    bad = [k for k in runs if not (isinstance(k, tuple) and len(k) == 2)]
    if bad:
        raise ValueError(f"Run key {bad[0]!r} is not (labelled images per class, strategy).")
    budgets = sorted({int(n) for n, _ in runs})
    strategies = list(dict.fromkeys(s for _, s in runs))
    top1 = np.full((len(strategies), len(budgets)), np.nan)
    for (n, s), run in runs.items():
        top1[strategies.index(s), budgets.index(int(n))] = run.test.top1
    return {"budgets": budgets, "strategies": strategies, "top1": top1}


def class_names(dataset: Mapping[str, Any]) -> list[str]:
    """Names of a run's classes: the original labels of a class subset (digits 5–9 keep their names)."""
    ids = dataset.get("class_ids")
    return [str(c) for c in ids] if ids else [str(c) for c in range(int(dataset["num_classes"]))]


def cell_view(runs: Mapping[tuple[int, str], Any], strategy: str, per_class: int) -> dict[str, Any]:
    """The chosen run's ``top1``, its test ``confusion`` counts (K, K; rows: true class), the ``row_normalised``
    matrix, the class ``names`` and ``per_class_accuracy``."""
    if (per_class, strategy) not in runs:
        raise ValueError(f"{strategy} with {per_class} labelled images per class was not run in this lab.")
    run = runs[per_class, strategy]
    confusion = np.asarray(run.test.confusion)
    totals = confusion.sum(axis=1, keepdims=True)
    normalised = confusion / np.maximum(totals, 1)
    return {
        "top1": float(run.test.top1),
        "confusion": confusion,
        "row_normalised": normalised,
        "names": class_names(run.dataset),
        "per_class_accuracy": np.diag(normalised),
        "run": run.name,
    }


def draw_transfer(grid: dict[str, Any], cell: dict[str, Any], strategy: str, per_class: int):
    """Accuracy of every (strategy, budget) cell with the chosen one framed, and the chosen run's confusion matrix."""
    from matplotlib.patches import Rectangle

    fig = figure(11, 3.9)
    ax_grid, ax_conf = fig.subplots(1, 2, width_ratios=[1.1, 1])
    top1 = grid["top1"]
    image = ax_grid.imshow(top1, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(top1):
        if np.isfinite(value):
            ax_grid.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="w" if value < 0.6 else "k")
    i, j = grid["strategies"].index(strategy), grid["budgets"].index(per_class)
    ax_grid.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="tab:red", lw=2.5))
    ax_grid.set_xticks(range(len(grid["budgets"])), [str(b) for b in grid["budgets"]])
    ax_grid.set_yticks(range(len(grid["strategies"])), grid["strategies"])
    ax_grid.set(xlabel="labelled images per class", title="test accuracy")
    fig.colorbar(image, ax=ax_grid, shrink=0.8)
    shown = ax_conf.imshow(cell["row_normalised"], cmap="Blues", vmin=0, vmax=1)
    counts = cell["confusion"]
    if len(counts) <= 10:
        for (r, c), value in np.ndenumerate(counts):
            ax_conf.text(
                c,
                r,
                str(value),
                ha="center",
                va="center",
                fontsize=7,
                color="w" if cell["row_normalised"][r, c] > 0.5 else "k",
            )
    ax_conf.set_xticks(range(len(cell["names"])), cell["names"])
    ax_conf.set_yticks(range(len(cell["names"])), cell["names"])
    ax_conf.set(xlabel="predicted", ylabel="true", title=f"{strategy}, {per_class} per class: test confusion")
    fig.colorbar(shown, ax=ax_conf, shrink=0.8, label="fraction of the true class")
    return fig


def lab07_transfer(runs: Mapping[tuple[int, str], Any]) -> Explorer:
    """Strategy and labelled images per class → the accuracy grid with that cell framed, and its confusion matrix.
    ``runs``: ``{(per_class, strategy): RunResult}`` (the lab's ``pair_runs``)."""
    import ipywidgets as widgets

    grid = accuracy_grid(runs)
    controls = {
        "strategy": widgets.Dropdown(options=grid["strategies"], value=grid["strategies"][0], description="strategy"),
        "per_class": widgets.SelectionSlider(
            options=grid["budgets"], value=grid["budgets"][0], description="per class", continuous_update=False
        ),
    }

    def view(strategy: str, per_class: int) -> View:
        cell = cell_view(runs, strategy, per_class)
        worst = int(np.argmin(cell["per_class_accuracy"]))
        text = (
            f"{strategy} with {per_class} labelled images per class: test accuracy {cell['top1']:.3f} "
            f"({int(cell['confusion'].sum()):,} test images); hardest class {cell['names'][worst]} "
            f"({cell['per_class_accuracy'][worst]:.2f})."
        )
        return drawn(draw_transfer(grid, cell, strategy, per_class), text, cell)

    dataset = next(iter(runs.values())).dataset
    kind = "SYNTHETIC stand-in, not real data" if dataset.get("synthetic") else "real data"
    classes = ", ".join(class_names(dataset))
    note = f"Target: {dataset.get('name')}, classes {classes} ({kind}; {dataset.get('source')})."
    return Explorer("lab07-transfer", view, controls, title="Transfer: strategy × label budget", note=note)
