"""The lab's small convolutional network, built from scratch layers.

    conv 3x3 (pad 1) - ReLU - pool 2 - conv 3x3 (pad 1) - ReLU - pool 2 - flatten - [linear - ReLU] - linear

With 28x28 inputs the two pools leave 7x7 maps; after the second pool every unit sees a 10x10 patch
of the image (receptive field 10, effective stride 4; see ``receptive.receptive_field_table``).
"""

from __future__ import annotations

import numpy as np

from .layers import AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, make_rng

__all__ = ["simple_cnn", "POOLS"]

POOLS = {"max": MaxPool2d, "avg": AvgPool2d}


def simple_cnn(
    in_channels: int = 1,
    num_classes: int = 10,
    channels: tuple[int, int] = (8, 16),
    hidden: int | None = 64,
    image_size: int = 28,
    pool: str = "max",
    dropout: float = 0.0,
    dtype=np.float32,
    rng=None,
) -> Sequential:
    """conv-pool-conv-pool-FC classifier for (N, in_channels, image_size, image_size) inputs.

    channels: output channels of the two convolutions; hidden: width of the hidden fully connected
    layer (None: the flattened maps feed the classifier directly); pool: "max" or "avg" (2x2, stride 2);
    dropout: probability before each fully connected layer (0: none). Returns logits (N, num_classes).
    """
    if pool not in POOLS:
        raise ValueError(f"Unknown pool {pool!r}: choose 'max' or 'avg'.")
    if image_size < 4:
        raise ValueError(f"image_size must be >= 4 for two 2x2 poolings, got {image_size}.")
    rng = make_rng(rng)
    c1, c2 = channels
    side = image_size // 2 // 2
    layers = [
        Conv2d(in_channels, c1, 3, padding=1, dtype=dtype, rng=rng),
        ReLU(),
        POOLS[pool](2),
        Conv2d(c1, c2, 3, padding=1, dtype=dtype, rng=rng),
        ReLU(),
        POOLS[pool](2),
        Flatten(),
    ]
    features = c2 * side * side
    if hidden:
        layers += [Dropout(dropout, rng=rng)] if dropout else []
        layers += [Linear(features, hidden, dtype=dtype, rng=rng), ReLU()]
        features = hidden
    layers += [Dropout(dropout, rng=rng)] if dropout else []
    layers += [Linear(features, num_classes, dtype=dtype, rng=rng)]
    return Sequential(*layers)
