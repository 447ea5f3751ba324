"""Plot helpers return the numbers they draw; toy datasets have the stated shapes and labels."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from labutils.scratch import toy, viz
from labutils.scratch.mlp import mlp
from labutils.scratch.optim import Adam
from labutils.scratch.trainer import train

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_activation_derivatives_come_from_the_layers():
    fig, drawn = viz.plot_activations()
    assert len(fig.axes) == 3
    x = drawn["sigmoid"]["x"]
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(drawn["sigmoid"]["f"], s, rtol=1e-12)
    np.testing.assert_allclose(drawn["sigmoid"]["df"], s * (1 - s), rtol=1e-10)
    np.testing.assert_allclose(drawn["tanh"]["df"], 1 - np.tanh(x) ** 2, rtol=1e-10)
    np.testing.assert_array_equal(drawn["relu"]["df"], (x > 0).astype(float))
    with pytest.raises(ValueError, match="Unknown activation"):
        viz.plot_activations(["swish"])


def test_xor_dataset():
    x, y = toy.xor_dataset(500, noise=0.2, seed=3)
    assert x.shape == (500, 2) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64))
    assert 0.4 < y.mean() < 0.6
    with pytest.raises(ValueError, match="positive integer"):
        toy.xor_dataset(0)


def test_decision_boundary_of_a_trained_xor_net():
    x, y = toy.xor_dataset(400, seed=0)
    model = mlp([2, 8, 2], activation="tanh", seed=0)
    train(model, Adam(model.parameters(), lr=0.05), x, y, x, y, epochs=40, batch_size=32, progress=False)
    fig, drawn = viz.plot_decision_boundary(model, x, y, resolution=50)
    assert f"{drawn['accuracy']:.1%}" in fig.axes[0].get_title()
    assert drawn["classes"].shape == (50, 50) and drawn["accuracy"] >= 0.97
    # grid corners (far out in each quadrant) get the XOR class of their quadrant
    assert drawn["classes"][0, 0] == 0 and drawn["classes"][-1, -1] == 0
    assert drawn["classes"][0, -1] == 1 and drawn["classes"][-1, 0] == 1
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        viz.plot_decision_boundary(model, np.zeros((3, 3)), np.zeros(3))


def test_sine_data_and_fit_errors():
    x, y = toy.sine_dataset(100, seed=0)
    assert x.shape == y.shape == (100, 1) and np.all(np.abs(x) <= 2 * np.pi)
    np.testing.assert_allclose(y, np.sin(x), atol=1e-6)
    xg, yg = toy.sine_grid(11)
    assert xg[0, 0] == pytest.approx(-2 * np.pi) and xg[-1, 0] == pytest.approx(2 * np.pi)
    fig, errors = viz.plot_fits(xg, yg, {"zero": np.zeros_like(yg), "exact": yg})
    assert len(fig.axes[0].get_lines()) == 3  # target + two fits
    assert errors["exact"] == 0.0 and errors["zero"] == pytest.approx(float(np.mean(yg.astype(np.float64) ** 2)))


def _fake_history(values, steps_per_epoch=None, norms=None):
    h = {"epoch": list(range(1, len(values) + 1)), "train_loss": values, "val_acc": [1 - v for v in values]}
    if norms is not None:
        h.update(grad_norms=norms, steps_per_epoch=steps_per_epoch)
    return h


def test_histories_plot_returns_its_series():
    fig, drawn = viz.plot_histories({"a": _fake_history([1.0, 0.5]), "b": _fake_history([0.8, 0.2])})
    assert drawn == {
        "train_loss": {"a": [1.0, 0.5], "b": [0.8, 0.2]},
        "val_acc": {"a": [0.0, 0.5], "b": [0.19999999999999996, 0.8]},
    }
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="has no 'lr'"):
        viz.plot_histories({"a": _fake_history([1.0])}, metrics=["lr"])


def test_grad_norm_plot_averages_per_epoch():
    norms = {"0.weight": [1.0, 3.0, 2.0, 2.0, 5.0], "0.bias": [1.0] * 5, "2.weight": [4.0, 4.0, 1.0, 1.0, 1.0]}
    fig, drawn = viz.plot_grad_norms({"run": _fake_history([1.0, 0.5, 0.4], 2, norms)})
    np.testing.assert_allclose(fig.axes[0].get_lines()[1].get_ydata(), drawn["run"]["2.weight"])
    assert list(drawn["run"]) == ["0.weight", "2.weight"]  # weights only by default
    np.testing.assert_allclose(drawn["run"]["0.weight"], [2.0, 2.0, 5.0])
    np.testing.assert_allclose(viz.epoch_means(norms["2.weight"], 2), [4.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="record_grad_norms=True"):
        viz.plot_grad_norms({"run": _fake_history([1.0])})


def test_first_layer_weights_images():
    w = np.arange(3 * 784, dtype=np.float32).reshape(3, 784)
    fig, images = viz.plot_first_layer_weights(w, n=16)
    np.testing.assert_array_equal(fig.axes[1].get_images()[0].get_array(), images[1])
    assert images.shape == (3, 28, 28) and images[1, 0, 0] == 784
    with pytest.raises(ValueError, match="does not hold rows"):
        viz.plot_first_layer_weights(np.zeros((3, 10)))
