"""Gradient checking: compare backprop gradients with centred finite differences, in float64.

The centred difference (f(x + h) - f(x - h)) / 2h has error O(h^2); with h = 1e-5 in float64 the
truncation error (~1e-10) and the rounding error (~1e-16 / 1e-5 = 1e-11) are both tiny, so a correct
backward pass typically agrees to a relative error of 1e-7 or better. In float32 the rounding error
alone is ~1e-7 / 1e-5 = 1e-2: always check gradients in float64.

Relative error (the CS231n definition, elementwise then the worst element):

    relative_error(a, b) = max_i  |a_i - b_i| / max(1e-8, |a_i| + |b_i|)

The 1e-8 floor keeps entries where both gradients are (near) zero from dividing by zero.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from .layers import Sequential

__all__ = ["numerical_gradient", "relative_error", "check_layer_gradients", "gradient_check_table"]


def relative_error(a, b) -> float:
    """max_i |a_i - b_i| / max(1e-8, |a_i| + |b_i|) over all elements of two same-shape arrays."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"relative_error needs arrays of the same shape; got {a.shape} and {b.shape}.")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5, indices=None) -> np.ndarray:
    """Centred finite-difference gradient of the scalar function ``f`` at ``x``.

    ``f`` is called as ``f(x)`` while single entries of ``x`` are perturbed **in place** by +h and -h
    (so ``f`` may equally ignore its argument and read ``x`` through a model that holds it); each entry
    is restored to its exact original value afterwards. Returns a float64 array of ``x``'s shape.
    ``indices`` (optional): an iterable of index tuples to evaluate; other entries are left at 0.
    """
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise ValueError("numerical_gradient perturbs x in place, so x must be a floating NumPy array.")
    if not h > 0:
        raise ValueError(f"The step h must be > 0, got {h!r}.")
    grad = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(*x.shape) if indices is None else indices:
        index = tuple(index)
        old = x[index].copy()
        try:
            x[index] = old + h
            f_plus = float(f(x))
            x[index] = old - h
            f_minus = float(f(x))
        finally:
            x[index] = old
        grad[index] = (f_plus - f_minus) / (2 * h)
    return grad


def _sample_indices(shape, max_entries, rng) -> list[tuple[int, ...]] | None:
    size = int(np.prod(shape))
    if max_entries is None or size <= max_entries:
        return None
    flat = rng.choice(size, size=max_entries, replace=False)
    return [np.unravel_index(i, shape) for i in np.sort(flat)]


def _subset(a: np.ndarray, indices) -> np.ndarray:
    return a if indices is None else np.array([a[i] for i in indices])


def gradient_check_table(
    model, loss_fn, x, y, h: float = 1e-5, max_entries: int | None = None, seed: int = 0
) -> list[dict]:
    """Backprop vs finite-difference gradients for every parameter of ``model``, in float64.

    model: a ``Sequential`` or a single layer (it is not modified: the check runs on a float64 copy in eval mode, so
    dropout is off); loss_fn(out, y) -> (loss, dout), e.g. ``softmax_cross_entropy``; x: a batch
    (converted to float64); y: labels or targets. ``max_entries``: if set, check at most that many
    randomly chosen entries per parameter (seeded), to keep big layers affordable.
    Returns one row per parameter: ``{"param": "0.weight", "shape": (out, in), "rel_error": float}``.
    """
    checked = copy.deepcopy(model)
    if not isinstance(checked, Sequential):
        checked = Sequential(checked)
    checked.astype(np.float64).eval()
    x64 = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float64)
    _, dout = loss_fn(checked.forward(x64), y)
    checked.backward(dout)
    rng = np.random.default_rng(seed)
    rows = []
    for name, param, grad in checked._named_pairs():
        analytic = grad.copy()
        indices = _sample_indices(param.shape, max_entries, rng)
        numeric = numerical_gradient(lambda _: loss_fn(checked.forward(x64), y)[0], param, h, indices)
        rows.append(
            {
                "param": name,
                "shape": tuple(param.shape),
                "rel_error": relative_error(_subset(analytic, indices), _subset(numeric, indices)),
            }
        )
    return rows


def check_layer_gradients(layer, x, h: float = 1e-5, seed: int = 0) -> dict[str, float]:
    """Finite-difference check of one layer's ``backward`` (input and parameter gradients) in float64.

    Uses the scalar loss L = sum(layer(x) * r) for a fixed random r, whose gradient wrt the output
    is r. Returns ``{"input": rel_error, "weight": rel_error, ...}``. The layer itself is not modified.
    """
    checked = copy.deepcopy(layer).astype(np.float64).eval()
    x64 = np.array(x, dtype=np.float64)
    r = np.random.default_rng(seed).standard_normal(np.shape(checked.forward(x64)))
    dx = checked.backward(r)
    grads = {k: g.copy() for k, g in checked.grads.items()}

    def loss(_):
        return float(np.sum(checked.forward(x64) * r))

    errors = {"input": relative_error(dx, numerical_gradient(loss, x64, h))}
    for name, param in checked.params.items():
        errors[name] = relative_error(grads[name], numerical_gradient(loss, param, h))
    return errors
