"""Lab 01 (a NumPy MLP): the claims the lab makes, checked on its quick-profile run, and on a full run's metrics
where one exists."""

from __future__ import annotations

import pytest
from full_run import full_metrics

STEM = "01_numpy_mlp"


@pytest.fixture(scope="module")
def m(notebook_metrics):
    return notebook_metrics(STEM)


def test_activation_derivative_maxima(m):
    assert m["metrics"]["max_derivative"] == {"sigmoid": 0.25, "tanh": 1.0, "relu": 1.0}


def test_xor_needs_a_hidden_layer(m):
    assert m["metrics"]["xor_accuracy"] >= 0.97
    assert m["metrics"]["xor_linear_accuracy"] <= 0.85  # a straight line gets at most ~3 of 4 corners


def test_sin_mse_falls_with_capacity(m):
    mse = m["metrics"]["sin_mse"]
    assert set(mse) == {"small", "medium", "big"}
    assert mse["big"] < 0.01 and mse["big"] < 0.1 * min(mse["small"], mse["medium"])
    assert mse["small"] < 0.25  # learned something: predicting 0 everywhere gives 0.5
    rows = m["tables"]["sin_mse"]["rows"]
    assert [r["parameters"] for r in rows] == [10, 49, 4353]


def test_activations_on_mnist(m):
    # quick profile, 2 epochs of SGD lr 0.1: sigmoid is the slowest and still near chance (Question 2's answer)
    acc = m["metrics"]["activation_val_accuracy"]
    assert set(acc) == {"sigmoid", "tanh", "relu"}
    assert acc["tanh"] > 0.5 and acc["relu"] > 0.5  # chance is 0.1
    assert acc["sigmoid"] < 0.2 and acc["sigmoid"] < min(acc["tanh"], acc["relu"])


def test_mnist_mlp_learns(m):
    assert m["datasets"]["mnist"]["synthetic"] is False
    assert m["metrics"]["mnist_test_accuracy"] > 0.85
    assert m["metrics"]["mnist_parameters"] == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    figures = {f["file"] for f in m["figures"]}
    assert figures >= {
        "activations.png",
        "xor_decision_boundary.png",
        "sin_fits.png",
        "activations_mnist.png",
        "mnist_mlp_curves.png",
        "mnist_first_layer.png",
    }


def test_weights_of_pixels_that_are_never_lit_keep_their_initial_values(m):
    # section 6: dL/dW = delta^T x, so an input that is always 0 gives its weights no gradient, and Adam no step
    assert m["metrics"]["pixels_never_lit"] > 20  # MNIST's border
    assert m["metrics"]["weights_of_unlit_pixels_unchanged"] is True


def test_takeaways_and_references(m):
    assert 3 <= len(m["metrics"]["takeaways"]) <= 5
    sources = {r["source"] for r in m["references"]}
    assert any("LeCun" in s and "Fig. 9" in s for s in sources) and any(
        "Simard" in s and "Table 1" in s for s in sources
    )


def test_full_profile_reaches_98_percent():
    full = full_metrics(STEM)
    metrics = full["metrics"]
    assert full["params"]["TRAIN_SUBSET"] is None  # all 50,000 training images
    assert metrics["mnist_test_accuracy"] >= 0.98  # section 6's design claim
    assert metrics["xor_accuracy"] >= 0.97 and metrics["xor_linear_accuracy"] <= 0.85
    assert metrics["sin_mse"]["big"] < 0.01
    acc = metrics["activation_val_accuracy"]
    assert acc["sigmoid"] < min(acc["tanh"], acc["relu"])
    assert metrics["weights_of_unlit_pixels_unchanged"] is True
