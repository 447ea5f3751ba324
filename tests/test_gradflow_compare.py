"""Side-by-side gradient heatmaps on one colour scale, and dead-ReLU fractions per layer."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from labutils import gradflow  # noqa: E402


def history(norms, dead):
    norms, dead = np.asarray(norms, float), np.asarray(dead, float)
    return {
        "steps": np.arange(len(norms)),
        "layers": [f"l{i}" for i in range(norms.shape[1])],
        "weight": norms,
        "bias": norms,
        "relu_layers": [f"r{i}" for i in range(dead.shape[1])],
        "dead_relu": dead,
    }


def test_heatmaps_share_one_colour_scale_spanning_every_panel():
    small = history([[1e-6, 1e-3], [1e-5, 1e-2]], [[0, 0], [0, 0]])
    large = history([[1e-1, 1.0], [10.0, 1.0]], [[0, 0], [0, 0]])
    fig, data = gradflow.plot_norm_heatmaps({"plain": small, "residual": large})
    assert data["scale"] == pytest.approx((-6.0, 1.0))
    clims = [ax.images[0].get_clim() for ax in fig.axes if ax.images]
    assert clims == [pytest.approx((-6.0, 1.0))] * 2  # equal colours mean equal norms in both panels
    assert np.allclose(data["plain"]["values"], np.log10(small["weight"]).T)


def test_dead_fraction_by_layer_averages_the_last_steps_and_ignores_nan():
    h = history(np.ones((4, 1)), [[1.0, 0.0], [0.5, np.nan], [0.25, 0.5], [0.75, 0.5]])
    assert gradflow.dead_fraction_by_layer(h, last=2) == {"r0": 0.5, "r1": 0.5}
    assert gradflow.dead_fraction_by_layer(h, last=3) == pytest.approx({"r0": 0.5, "r1": 0.5})
    assert gradflow.dead_fraction_by_layer(h, last=4)["r0"] == pytest.approx(0.625)
    with pytest.raises(ValueError, match="Nothing recorded"):
        gradflow.dead_fraction_by_layer(history(np.ones((0, 1)), np.ones((0, 1))))
