r"""A two-layer softmax network with its backward pass written out by hand, equation by equation.

Forward, for a batch ``x`` of shape ``(N, D)`` and integer labels ``y``:

.. math::
    z_1 = x W_1^\top + b_1,\quad h = \mathrm{ReLU}(z_1),\quad z_2 = h W_2^\top + b_2,\quad
    \hat y = \mathrm{softmax}(z_2),\quad L = -\tfrac1N \textstyle\sum_i \log \hat y_{i, y_i}

Backward (``Y`` is the one-hot matrix of the labels):

.. math::
    \frac{\partial L}{\partial z_2} = \frac{\hat y - Y}{N},\quad
    \frac{\partial L}{\partial W_2} = \Big(\frac{\partial L}{\partial z_2}\Big)^{\!\top} h,\quad
    \frac{\partial L}{\partial b_2} = \textstyle\sum_i \frac{\partial L}{\partial z_{2,i}},\quad
    \frac{\partial L}{\partial h} = \frac{\partial L}{\partial z_2} W_2,\quad
    \frac{\partial L}{\partial z_1} = \frac{\partial L}{\partial h} \odot \mathbb 1[z_1 > 0],\quad
    \frac{\partial L}{\partial W_1} = \Big(\frac{\partial L}{\partial z_1}\Big)^{\!\top} x

Shapes follow torch's ``nn.Linear``: ``W1 (H, D)``, ``b1 (H,)``, ``W2 (C, H)``, ``b2 (C,)``. The class
also satisfies the scratch-model contract (``forward``/``backward``/``parameters``/``gradients``/
``state_dict``...), so :func:`labutils.scratch.trainer.train` and the gradient checker accept it.
"""

from __future__ import annotations

import math

import numpy as np

from labutils.util import check_int, state_mismatch

from .layers import Layer
from .losses import softmax

__all__ = ["TwoLayerNet"]


class TwoLayerNet(Layer):
    """``Linear(D, H) -> ReLU -> Linear(H, C)`` with explicit gradients; parameters ``W1, b1, W2, b2``.

    Initialised like torch's ``nn.Linear`` (uniform, bound 1/sqrt(fan_in)) from ``seed``.
    """

    PARAM_NAMES = ("W1", "b1", "W2", "b2")

    def __init__(self, input_size: int, hidden_size: int, num_classes: int, seed: int = 0, dtype=np.float32):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_classes", num_classes)):
            check_int(name, value)
        rng = np.random.default_rng(seed)
        b1, b2 = 1 / math.sqrt(input_size), 1 / math.sqrt(hidden_size)
        self.params = {
            "W1": rng.uniform(-b1, b1, size=(hidden_size, input_size)),
            "b1": rng.uniform(-b1, b1, size=hidden_size),
            "W2": rng.uniform(-b2, b2, size=(num_classes, hidden_size)),
            "b2": rng.uniform(-b2, b2, size=num_classes),
        }
        self.astype(dtype)
        self._cache = None

    # -- the network ----------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits ``z2`` of shape ``(N, C)`` for inputs ``(N, D)``."""
        x = self._check_input(x)
        if x.ndim != 2 or x.shape[1] != self.params["W1"].shape[1]:
            raise ValueError(f"TwoLayerNet expects inputs of shape (N, {self.params['W1'].shape[1]}), got {x.shape}.")
        z1 = x @ self.params["W1"].T + self.params["b1"]
        h = np.maximum(z1, 0)
        self._cache = (x, z1, h)
        return h @ self.params["W2"].T + self.params["b2"]

    def backward(self, dz2: np.ndarray) -> np.ndarray:
        """From ``dL/dz2`` (N, C) fill ``grads`` and return ``dL/dx`` (N, D)."""
        if self._cache is None:
            raise RuntimeError("TwoLayerNet.backward called before forward.")
        x, z1, h = self._cache
        dz2 = self._check_dout(dz2, (len(x), self.params["W2"].shape[0]))
        self.grads["W2"][...] = dz2.T @ h
        self.grads["b2"][...] = dz2.sum(axis=0)
        dh = dz2 @ self.params["W2"]
        dz1 = dh * (z1 > 0)
        self.grads["W1"][...] = dz1.T @ x
        self.grads["b1"][...] = dz1.sum(axis=0)
        return dz1 @ self.params["W1"]

    def loss_and_gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """The whole derivation in one call: mean cross-entropy and ``{name: dL/dparam}``.

        Starts the backward pass from :math:`\\partial L/\\partial z_2 = (\\hat y - Y)/N`.
        """
        z2 = self.forward(x)
        y = np.asarray(y)
        if y.shape != (len(z2),) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must be integer labels of shape ({len(z2)},), got {y.shape} {y.dtype}.")
        n = len(y)
        y_hat = softmax(z2)
        loss = -float(np.mean(np.log(np.maximum(y_hat[np.arange(n), y], 1e-300))))
        onehot = np.zeros_like(y_hat)
        onehot[np.arange(n), y] = 1
        self.backward((y_hat - onehot) / n)
        return loss, {k: g.copy() for k, g in self.grads.items()}

    # -- the scratch-model contract (what the trainer and the checkpoints use) -------------------
    def astype(self, dtype) -> TwoLayerNet:
        self.params = {k: np.asarray(v).astype(dtype) for k, v in self.params.items()}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        return self

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        return [(k, self.params[k]) for k in self.PARAM_NAMES]

    def parameters(self) -> list[np.ndarray]:
        return [self.params[k] for k in self.PARAM_NAMES]

    def gradients(self) -> list[np.ndarray]:
        return [self.grads[k] for k in self.PARAM_NAMES]

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: self.params[k].copy() for k in self.PARAM_NAMES}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        problem = state_mismatch({k: self.params[k].shape for k in self.PARAM_NAMES}, state)
        if problem:
            raise ValueError(f"The state does not match this TwoLayerNet: {problem}.")
        for k in self.PARAM_NAMES:
            self.params[k][...] = state[k]

    def extra_repr(self) -> str:
        (h, d), c = self.params["W1"].shape, self.params["W2"].shape[0]
        return f"input_size={d}, hidden_size={h}, num_classes={c}"
