"""Deep learning from scratch in NumPy: the machinery of labs 01-03.

Modules (each readable in one sitting):

- ``functional``: conv2d (naive loops and vectorised im2col), max/avg pooling, with backward passes
- ``layers``: Linear, Conv2d, pooling, activations, Flatten, Dropout, Sequential (torch's names/layouts)
- ``losses``: softmax cross-entropy and MSE, each returning (loss, gradient)
- ``gradcheck``: finite differences, relative error, per-parameter gradient-check tables
- ``receptive``: receptive field and effective stride of a layer stack
- ``optim``: SGD (momentum, Nesterov), RMSprop, Adam with torch.optim's update rules
- ``schedules``: learning-rate schedules
- ``trainer``: mini-batch training loop, evaluation, .npz checkpoints
- ``cnn``: the lab's conv-pool-conv-pool-FC network; ``conv_checks``: conv checks and timings vs torch
- ``plots``: filters, feature maps, confusion matrices (imports matplotlib, so loaded on first use)
- ``mlp``: an MLP builder; ``twolayer``: the hand-derived two-layer net of lab 02; ``toy``: XOR and sin(x)
  data; ``viz``: decision boundaries, fits, training curves, gradient norms

Submodules not imported here are loaded on first attribute access (``scratch.plots``).
"""

from __future__ import annotations

import importlib

from . import functional, gradcheck, layers, losses, receptive
from .layers import (
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from .losses import mse, softmax_cross_entropy


def __getattr__(name: str):
    """Load any other submodule (optim, schedules, trainer, plots, ...) on first attribute access."""
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise  # the submodule exists but one of its own imports failed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "functional",
    "layers",
    "losses",
    "gradcheck",
    "receptive",
    "Layer",
    "Linear",
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Flatten",
    "Dropout",
    "Sequential",
    "softmax_cross_entropy",
    "mse",
]
