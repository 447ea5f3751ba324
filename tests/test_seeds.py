"""The seed helper: one cached run per seed, the spread across seeds, and its figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from test_experiment import tiny

from labutils import seeds


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def test_run_seeds_caches_one_run_per_seed_and_the_spread_is_their_statistics(runs):
    recipe = tiny(epochs=1, train_subset=512)
    first = seeds.run_seeds(recipe, [0, 1, 2], lab="lab", profile="quick", progress=False)
    assert [r.recipe.seed for r in first] == [0, 1, 2] and [r.recipe.name for r in first] == [
        "tiny-seed0",
        "tiny-seed1",
        "tiny-seed2",
    ]
    assert len({r.key for r in first}) == 3 and not any(r.loaded for r in first)
    again = seeds.run_seeds(recipe, [2, 0], lab="lab", profile="quick", progress=False)
    assert all(r.loaded for r in again) and [r.test.top1 for r in again] == [first[2].test.top1, first[0].test.top1]

    values = np.array([r.test.top1 for r in first])
    (row,) = seeds.seed_spread({"tiny": first})
    assert row["values"] == values.tolist() and row["seeds"] == [0, 1, 2]
    assert row["mean"] == pytest.approx(values.mean()) and row["std"] == pytest.approx(values.std(ddof=1))
    assert (row["min"], row["max"]) == (values.min(), values.max())
    with pytest.raises(ValueError, match="each once"):
        seeds.run_seeds(recipe, [1, 1], lab="lab", profile="quick")


def rows(**configs):
    return [
        {"config": c, "values": v, "mean": float(np.mean(v)), "std": float(np.std(v, ddof=1))}
        for c, v in configs.items()
    ]


def test_a_gap_is_within_the_spread_only_when_seeds_alone_could_make_it():
    table = rows(a=[0.90, 0.92, 0.91], b=[0.905, 0.925, 0.915], c=[0.80, 0.81, 0.79])
    assert seeds.gap_within_spread(table, "a", "b")
    assert not seeds.gap_within_spread(table, "a", "c")


def test_the_figure_shows_every_seed_and_the_mean_on_one_axis():
    table = rows(a=[0.90, 0.92, 0.91], b=[0.80, 0.81, 0.79])
    fig, drawn = seeds.plot_seed_spread(table)
    ax = fig.axes[0]
    dots = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if c.get_offsets().shape[0] == 3])
    assert sorted(dots.tolist()) == sorted([0.90, 0.92, 0.91, 0.80, 0.81, 0.79])
    assert drawn["a"][0] == pytest.approx(0.91) and drawn["b"][1] == pytest.approx(0.01)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
