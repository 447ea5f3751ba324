"""labutils.gradflow_plots: the plots return the numbers they draw, and compared panels share one colour scale
and their axes; labutils.gradflow.dead_fraction_by_layer averages recorded dead fractions."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from labutils import gradflow, gradflow_plots  # noqa: E402
from labutils.models import MLP  # noqa: E402


def history(norms, dead, layers=None):
    norms, dead = np.asarray(norms, float), np.asarray(dead, float)
    return {
        "steps": np.arange(len(norms)),
        "layers": layers or [f"l{i}" for i in range(norms.shape[1])],
        "weight": norms,
        "bias": norms,
        "relu_layers": [f"r{i}" for i in range(dead.shape[1])],
        "dead_relu": dead,
    }


class Saved:
    """A run read back from disk: only ``history`` (as labutils.experiment.SavedGradients)."""

    def __init__(self, h):
        self.history = h


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _recorded(depth=4, steps=5):
    torch.manual_seed(0)
    model = MLP(20, 3, width=8, depth=depth)
    recorder = gradflow.GradientRecorder(model, every=1)
    g = torch.Generator().manual_seed(0)
    with recorder:
        for step in range(steps):
            model.zero_grad(set_to_none=True)
            x, y = torch.randn(32, 20, generator=g), torch.randint(0, 3, (32,), generator=g)
            nn.functional.cross_entropy(model(x), y).backward()
            recorder.record(step)
    return model, recorder


def test_heatmaps_share_one_colour_scale_and_one_colour_bar():
    small = history([[1e-6, 1e-3], [1e-5, 1e-2]], [[0, 0], [0, 0]])
    large = history([[1e-1, 1.0], [10.0, 1.0]], [[0, 0], [0, 0]])
    fig, data = gradflow_plots.plot_norm_heatmaps({"plain": small, "residual": Saved(large)})
    assert data["scale"] == pytest.approx((-6.0, 1.0))  # log10 of the smallest and largest norm of both runs
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 and len(fig.axes) == 3  # two heatmaps and ONE colour bar
    assert [ax.images[0].get_clim() for ax in panels] == [pytest.approx((-6.0, 1.0))] * 2
    colour_bar = next(ax for ax in fig.axes if not ax.images)
    assert colour_bar.get_ylim() == pytest.approx((-6.0, 1.0))  # the bar spans the common scale
    np.testing.assert_allclose(data["plain"]["values"], np.log10(small["weight"]).T)
    np.testing.assert_allclose(data["residual"]["values"], np.log10(large["weight"]).T)


def test_heatmaps_share_axes_when_the_runs_have_the_same_layers():
    a = history([[1.0, 2.0]] * 3, [[0, 0]] * 3)
    b = history([[3.0, 4.0]] * 5, [[0, 0]] * 5)
    fig, _ = gradflow_plots.plot_norm_heatmaps({"a": a, "b": b})
    left, right = (ax for ax in fig.axes if ax.images)
    assert left.get_shared_x_axes().joined(left, right) and left.get_shared_y_axes().joined(left, right)
    assert left.get_xlim() == right.get_xlim() == pytest.approx((-0.5, 4.5))  # one step axis for both runs
    deeper = history([[1.0, 2.0, 3.0]] * 3, [[0, 0]] * 3)
    fig, _ = gradflow_plots.plot_norm_heatmaps({"a": a, "deeper": deeper})
    left, right = (ax for ax in fig.axes if ax.images)
    assert left.get_shared_x_axes().joined(left, right) and not left.get_shared_y_axes().joined(left, right)
    assert left.get_ylim() == pytest.approx((1.5, -0.5)) and right.get_ylim() == pytest.approx((2.5, -0.5))


def test_heatmaps_of_dead_fractions_and_a_colour_bar_that_names_exact_zeros():
    a = history([[1.0, 2.0]], [[0.1, 0.5]])
    b = history([[0.0, 2.0]], [[0.0, 0.8]])
    fig, data = gradflow_plots.plot_norm_heatmaps({"a": a, "b": b}, kind="dead_relu")
    assert data["scale"] == pytest.approx((0.0, 0.8))
    fig, data = gradflow_plots.plot_norm_heatmaps({"a": a, "b": b})
    assert "exactly 0" in fig.axes[-1].get_ylabel() and data["b"]["zero"].tolist() == [[True], [False]]
    with pytest.raises(ValueError, match="at least one"):
        gradflow_plots.plot_norm_heatmaps({})
    with pytest.raises(ValueError, match="kind"):
        gradflow_plots.plot_norm_heatmaps({"a": a}, kind="norms")


def test_plots_return_the_numbers_they_draw():
    model, recorder = _recorded()
    norms = recorder.at(4)
    fig, data = gradflow_plots.plot_layer_norms(norms, title="one")
    np.testing.assert_allclose(data[""], list(norms.values()))
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), list(norms.values()))
    fig, data = gradflow_plots.plot_layer_norms(recorder)  # a recorder: its last record
    np.testing.assert_allclose(data[""], list(norms.values()))
    fig, data = gradflow_plots.plot_layer_norms({"plain": norms, "residual": {"a": 1.0, "b": 0.1}})
    assert set(data) == {"plain", "residual"} and data["residual"].tolist() == [1.0, 0.1]
    assert fig.axes[0].lines[1].get_xdata().tolist() == [0.0, 1.0]  # different depths: relative positions
    fig, data = gradflow_plots.plot_norm_heatmap(recorder)
    assert data["values"].shape == (5, 5) and data["layers"] == recorder.layer_names
    np.testing.assert_allclose(data["values"], np.log10(recorder.history["weight"]).T)
    fig, data = gradflow_plots.plot_norm_heatmap(Saved(recorder.history), kind="dead_relu")
    assert data["values"].shape == (4, 5)
    np.testing.assert_array_equal(data["values"], recorder.history["dead_relu"].T)
    fig, data = gradflow_plots.plot_grad_histograms(model, max_layers=3)
    assert list(data) == ["stem", "blocks.1.linear", "fc"]
    for name, layer in (("stem", model.stem), ("fc", model.fc)):
        g = layer.weight.grad
        assert data[name]["counts"].sum() == int(torch.count_nonzero(g))
        assert data[name]["zero_fraction"] == pytest.approx(1 - torch.count_nonzero(g).item() / g.numel())
    with pytest.raises(ValueError, match="kind"):
        gradflow_plots.plot_norm_heatmap(recorder, kind="norms")
    with pytest.raises(ValueError, match="one norm per layer"):
        gradflow_plots.plot_layer_norms(np.ones((2, 2)))
    with pytest.raises(ValueError, match="No layer with a gradient named 'nope'"):
        gradflow_plots.plot_grad_histograms(model, layers=["nope"])


def test_plots_account_for_exact_zeros():
    """A gradient that underflowed to 0 has no place on a log axis: counted in the legend, drawn black."""
    fig, data = gradflow_plots.plot_layer_norms(
        {"plain": {"a": 0.0, "b": 0.0, "c": 1e-3}, "residual": {"a": 1.0, "b": 0.5}}
    )
    assert set(data) == {"plain (2 layers at exactly 0, not drawn)", "residual"}
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == list(data)
    h = {"steps": np.array([0, 1]), "layers": ["a", "b"], "weight": np.array([[0.0, 1.0], [1e-3, 10.0]])}
    fig, data = gradflow_plots.plot_norm_heatmap(h)
    assert data["zero"].tolist() == [[True, False], [False, False]]
    np.testing.assert_allclose(data["values"], [[np.nan, -3.0], [0.0, 1.0]])
    assert "exactly 0" in fig.axes[-1].get_ylabel()  # the colour bar says what black means


def test_dead_fraction_by_layer_averages_the_last_steps_and_ignores_nan():
    h = history(np.ones((4, 1)), [[1.0, 0.0], [0.5, np.nan], [0.25, 0.5], [0.75, 0.5]])
    assert gradflow.dead_fraction_by_layer(h, last=2) == {"r0": 0.5, "r1": 0.5}
    assert gradflow.dead_fraction_by_layer(Saved(h), last=3) == pytest.approx({"r0": 0.5, "r1": 0.5})
    assert gradflow.dead_fraction_by_layer(h, last=4)["r0"] == pytest.approx(0.625)
    with pytest.raises(ValueError, match="Nothing recorded"):
        gradflow.dead_fraction_by_layer(history(np.ones((0, 1)), np.ones((0, 1))))
