"""Build multilayer perceptrons from the scratch layers: ``mlp([784, 256, 10], activation="relu")``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .layers import Dropout, Linear, ReLU, Sequential, Sigmoid, Tanh

__all__ = ["ACTIVATIONS", "INITS", "mlp"]

ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}
INITS = ("torch", "he", "xavier")


def mlp(
    sizes: Sequence[int],
    activation: str = "relu",
    seed: int = 0,
    dtype=np.float32,
    init: str = "torch",
    dropout: float = 0.0,
) -> Sequential:
    """A fully connected network ``Linear -> act -> ... -> Linear`` (no activation after the last layer).

    Args:
        sizes: layer widths from input to output, e.g. ``[784, 128, 10]`` (at least two entries).
        activation: ``"relu"``, ``"sigmoid"`` or ``"tanh"`` between the linear layers.
        seed: seeds the weight initialisation (and the dropout masks).
        dtype: parameter dtype; inputs must have the same dtype.
        init: ``"torch"`` (torch's default, uniform with bound 1/sqrt(fan_in)), ``"he"`` (normal with
            std sqrt(2/fan_in), for ReLU) or ``"xavier"`` (uniform with bound sqrt(6/(fan_in+fan_out)),
            for tanh/sigmoid). Biases start at zero for "he"/"xavier".
        dropout: if > 0, a ``Dropout(dropout)`` after every hidden activation.

    Input ``(N, sizes[0])`` -> output ``(N, sizes[-1])`` (logits for a classifier).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}.")
    if init not in INITS:
        raise ValueError(f"Unknown init {init!r}: choose one of {', '.join(INITS)}.")
    sizes = list(sizes)
    if len(sizes) < 2 or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in sizes
    ):
        raise ValueError(f"sizes must list at least two positive integer widths (input ... output), got {sizes!r}.")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}.")
    rng = np.random.default_rng(seed)
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = Linear(int(fan_in), int(fan_out), dtype=dtype, rng=rng)
        if init == "he":
            linear.params["weight"][...] = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=(fan_out, fan_in))
            linear.params["bias"][...] = 0.0
        elif init == "xavier":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            linear.params["weight"][...] = rng.uniform(-bound, bound, size=(fan_out, fan_in))
            linear.params["bias"][...] = 0.0
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(Dropout(dropout, rng=rng))
    return Sequential(*layers)
