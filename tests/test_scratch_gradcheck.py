"""Gradient checking helpers, and a whole small network checked two ways: finite differences and torch.autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labutils.scratch import layers as L
from labutils.scratch.gradcheck import (
    check_layer_gradients,
    gradient_check_table,
    numerical_gradient,
    relative_error,
)
from labutils.scratch.losses import mse, softmax_cross_entropy


def test_relative_error_definition():
    # elementwise |a-b| / max(1e-8, |a|+|b|), then the worst element
    assert relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert relative_error([1.0, 2.0], [1.0, 3.0]) == pytest.approx(1 / 5)
    assert relative_error([1.0], [-1.0]) == pytest.approx(1.0)  # opposite signs: the maximum possible
    assert relative_error([0.0], [1e-12]) == pytest.approx(1e-4)  # the 1e-8 floor, not a division by ~0
    assert relative_error(np.zeros((2, 2)), np.zeros((2, 2))) == 0.0
    with pytest.raises(ValueError, match=r"same shape; got \(2,\) and \(3,\)"):
        relative_error(np.zeros(2), np.zeros(3))


def test_numerical_gradient_of_known_function_restores_x():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    original = x.copy()
    a = rng.standard_normal((3, 4))
    grad = numerical_gradient(lambda v: float(np.sum(a * v**3)), x)
    np.testing.assert_allclose(grad, 3 * a * original**2, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(x, original)  # every perturbation undone exactly
    assert grad.dtype == np.float64


def test_numerical_gradient_subset_and_errors():
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    grad = numerical_gradient(lambda v: float(np.sum(v**2)), x, indices=[(0, 1), (1, 2)])
    np.testing.assert_allclose(grad, [[0, 2, 0], [0, 0, 10]], atol=1e-8)
    with pytest.raises(ValueError, match="floating NumPy array"):
        numerical_gradient(lambda v: 0.0, np.arange(3))
    with pytest.raises(ValueError, match="step h must be > 0"):
        numerical_gradient(lambda v: 0.0, np.zeros(3), h=0)


def test_numerical_gradient_restores_x_even_if_f_raises():
    x = np.ones(3)

    def f(_):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        numerical_gradient(f, x)
    np.testing.assert_array_equal(x, np.ones(3))


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: L.Linear(5, 3, rng=0), (4, 5)),
        (lambda: L.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2, rng=0), (2, 4, 7, 7)),
        (lambda: L.MaxPool2d(3, stride=2), (2, 2, 7, 7)),
        (lambda: L.AvgPool2d(2), (2, 2, 6, 6)),
        (lambda: L.Sigmoid(), (3, 4)),
        (lambda: L.Tanh(), (3, 4)),
    ],
    ids=["linear", "conv", "maxpool", "avgpool", "sigmoid", "tanh"],
)
def test_check_layer_gradients(make, shape):
    layer = make()
    dtype_before = {k: v.dtype for k, v in layer.params.items()}
    errors = check_layer_gradients(layer, np.random.default_rng(1).standard_normal(shape))
    assert set(errors) == {"input", *layer.params}
    assert max(errors.values()) < 1e-6, errors
    assert {k: v.dtype for k, v in layer.params.items()} == dtype_before  # the layer itself is untouched


def test_check_layer_gradients_catches_a_wrong_backward():
    class BrokenTanh(L.Tanh):
        def backward(self, dout):
            return dout * (1 - self._out)  # forgot the square

    errors = check_layer_gradients(BrokenTanh(), np.random.default_rng(2).standard_normal((3, 4)))
    assert errors["input"] > 1e-2


def _network(dtype=np.float32):
    rng = np.random.default_rng(0)
    return L.Sequential(
        L.Conv2d(2, 3, 3, padding=1, dtype=dtype, rng=rng),
        L.Tanh(),
        L.MaxPool2d(2),
        L.Conv2d(3, 4, (2, 3), dtype=dtype, rng=rng),
        L.Sigmoid(),
        L.Flatten(),
        L.Dropout(0.5, rng=rng),  # off during the check (eval mode)
        L.Linear(4 * 2 * 1, 6, dtype=dtype, rng=rng),
        L.Tanh(),
        L.Linear(6, 3, dtype=dtype, rng=rng),
    )


def test_gradient_check_table_of_a_small_network():
    model = _network()
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((4, 2, 6, 6)).astype(np.float32), np.array([0, 2, 1, 2])
    rows = gradient_check_table(model, softmax_cross_entropy, x, y)
    assert [r["param"] for r in rows] == [n for n, _ in model.named_parameters()]
    assert [r["shape"] for r in rows] == [p.shape for p in model.parameters()]
    # float64 centred differences with h=1e-5 agree with backprop to ~1e-8 or better
    assert max(r["rel_error"] for r in rows) < 1e-6, rows
    assert all(p.dtype == np.float32 for p in model.parameters())  # the model was not converted


def test_gradient_check_table_subset_and_mse():
    model = L.Sequential(L.Linear(20, 30, rng=0), L.Tanh(), L.Linear(30, 2, rng=1))
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((5, 20)), rng.standard_normal((5, 2))
    rows = gradient_check_table(model, mse, x, y, max_entries=25)
    assert max(r["rel_error"] for r in rows) < 1e-6, rows


def test_whole_network_gradients_match_torch_autograd():
    """The same float64 network in torch: loss and every parameter gradient agree to 1e-10."""
    model = _network(np.float64).eval()
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((4, 2, 6, 6)), np.array([1, 0, 2, 2])
    loss, dlogits = softmax_cross_entropy(model(x), y)
    model.backward(dlogits)

    nn = torch.nn
    theirs = (
        nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Conv2d(3, 4, (2, 3)),
            nn.Sigmoid(),
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(8, 6),
            nn.Tanh(),
            nn.Linear(6, 3),
        )
        .double()
        .eval()
    )
    theirs.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    ref_loss = torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))
    ref_loss.backward()
    assert loss == pytest.approx(ref_loss.item(), abs=1e-12)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(dict(model.named_gradients())[name], p.grad.numpy(), atol=1e-10, err_msg=name)
