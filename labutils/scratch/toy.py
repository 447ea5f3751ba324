"""Small synthetic problems for the from-scratch labs: XOR in the plane and sin(x) on an interval."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["xor_dataset", "sine_dataset", "sine_grid"]


def xor_dataset(n: int, noise: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy XOR: points around the four corners (+-1, +-1); label 1 where exactly one coordinate is > 0.

    Not linearly separable, so a network needs a hidden layer. Returns x ``(n, 2)`` float32 and
    y ``(n,)`` int64; labels come from the noisy point's quadrant, so the classes never overlap.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of points, got {n!r}.")
    if noise < 0:
        raise ValueError(f"noise must be >= 0 (the std of the Gaussian jitter), got {noise!r}.")
    rng = np.random.default_rng(seed)
    corners = rng.choice([-1.0, 1.0], size=(n, 2))
    x = corners + rng.normal(scale=noise, size=(n, 2))
    y = ((x[:, 0] > 0) != (x[:, 1] > 0)).astype(np.int64)
    return x.astype(np.float32), y


def sine_dataset(
    n: int, seed: int = 0, low: float = -2 * math.pi, high: float = 2 * math.pi, noise: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points x ~ U(low, high) with targets sin(x) (+ optional Gaussian noise), as ``(n, 1)`` float32 each."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of points, got {n!r}.")
    if not low < high:
        raise ValueError(f"The interval needs low < high, got low={low!r}, high={high!r}.")
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=(n, 1))
    y = np.sin(x) + (rng.normal(scale=noise, size=x.shape) if noise > 0 else 0.0)
    return x.astype(np.float32), y.astype(np.float32)


def sine_grid(n: int = 1000, low: float = -2 * math.pi, high: float = 2 * math.pi) -> tuple[np.ndarray, np.ndarray]:
    """``n`` evenly spaced points on [low, high] and sin there, ``(n, 1)`` float32 each (a test set)."""
    x = np.linspace(low, high, n).reshape(-1, 1)
    return x.astype(np.float32), np.sin(x).astype(np.float32)
