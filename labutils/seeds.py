"""Seed-to-seed variability: a recipe run over several seeds, and the spread of a result across them.

A gap between two configurations means something only when it is larger than what changing the seed alone
does. Each seed is its own cached run (``<name>-seed<k>``), so adding a seed later trains only that one:

>>> runs = {name: run_seeds(recipe, [0, 1, 2], lab="06_regularization") for name, recipe in recipes.items()}
>>> table = seed_spread(runs)                      # one row per configuration: mean, std, every seed's value
>>> fig, numbers = plot_seed_spread(table, ylabel="test accuracy")
>>> gap_within_spread(table, "baseline", "dropout_wd")   # True when the means differ by less than 2 std
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from labutils.experiment import Recipe, RunResult, run_all


def run_seeds(
    recipe: Recipe, seeds: Sequence[int], *, lab: str, profile: str | None = None, device=None, progress: bool = True
) -> list[RunResult]:
    """``recipe`` once per seed, through the experiment cache; returns the runs in the order of ``seeds``."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds!r}: give at least one seed, each once.")
    variants = [recipe.replace(name=f"{recipe.name}-seed{s}", seed=s) for s in seeds]
    return run_all(variants, lab=lab, profile=profile, device=device, desc=f"{recipe.name}: seeds", progress=progress)


def top1(result: RunResult) -> float:
    """A run's top-1 test accuracy, the default metric of :func:`seed_spread`."""
    return result.test.top1


def seed_spread(
    runs: Mapping[str, Sequence[RunResult]], metric: Callable[[RunResult], float] = top1
) -> list[dict[str, Any]]:
    """One row per configuration: ``config``, ``seeds``, ``values`` (one per seed), ``mean``, ``std`` (sample
    standard deviation, ddof=1; 0 for a single seed), ``min``, ``max``."""
    rows = []
    for config, results in runs.items():
        values = np.array([float(metric(r)) for r in results])
        if values.size == 0:
            raise ValueError(f"Configuration {config!r} has no runs.")
        rows.append(
            {
                "config": config,
                "seeds": [r.recipe.seed for r in results],
                "values": values.tolist(),
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                "min": float(values.min()),
                "max": float(values.max()),
            }
        )
    return rows


def gap_within_spread(rows: Sequence[Mapping[str, Any]], a: str, b: str, k: float = 2.0) -> bool:
    """True when configurations ``a`` and ``b``'s means differ by less than ``k`` times the larger of their
    seed-to-seed standard deviations: a gap the seeds alone could make."""
    by_name = {row["config"]: row for row in rows}
    gap = abs(by_name[a]["mean"] - by_name[b]["mean"])
    return gap < k * max(by_name[a]["std"], by_name[b]["std"])


def plot_seed_spread(rows: Sequence[Mapping[str, Any]], *, ylabel: str = "test accuracy", title: str = "", ax=None):
    """Every seed's value as a dot and the mean ± one std as a bar, one column per configuration (one shared
    y axis). Returns ``(figure, {config: (mean, std, values)})``."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) + 1), 3.4))
    else:
        fig = ax.figure
    drawn = {}
    for i, row in enumerate(rows):
        values = np.asarray(row["values"], float)
        offsets = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(i + offsets, values, s=18, color="0.45", zorder=3, label="one seed" if i == 0 else None)
        ax.errorbar(
            i,
            row["mean"],
            yerr=row["std"],
            fmt="o",
            color="C0",
            capsize=6,
            zorder=4,
            label="mean ± std" if i == 0 else None,
        )
        drawn[row["config"]] = (row["mean"], row["std"], values.tolist())
    ax.set_xticks(range(len(rows)), [row["config"] for row in rows], rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    seeds = max((len(row["values"]) for row in rows), default=0)
    ax.set_title(title or f"{seeds} seeds per configuration: each dot one run, bars mean ± std")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig, drawn


__all__ = ["run_seeds", "seed_spread", "gap_within_spread", "plot_seed_spread", "top1"]
