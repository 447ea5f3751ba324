"""Lab 01 (a NumPy MLP): the numbers the lab is about, from its quick-profile run."""

from __future__ import annotations

import pytest

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
    acc = m["metrics"]["activation_val_accuracy"]
    assert set(acc) == {"sigmoid", "tanh", "relu"}
    assert acc["tanh"] > 0.5 and acc["relu"] > 0.5  # chance is 0.1
    assert all(0.0 <= a <= 1.0 for a in acc.values())


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
