"""Loss functions for from-scratch networks: each returns ``(mean loss, gradient wrt its first argument)``.

Both reduce with the mean over the batch, like torch's defaults, so the gradients carry the 1/N factor.
"""

from __future__ import annotations

import numpy as np

__all__ = ["log_softmax", "softmax", "softmax_cross_entropy", "mse"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis via the log-sum-exp trick: z - max(z) - log(sum(exp(z - max(z)))).

    Subtracting the row maximum makes every exponent <= 0, so nothing overflows even at logits of 1e4.
    """
    logits = np.asarray(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (numerically stable)."""
    return np.exp(log_softmax(logits))


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer class labels, and its gradient.

    logits: (N, C) floating; labels: (N,) integers in [0, C).
    Returns ``(loss, dlogits)`` with loss = -mean_i log softmax(logits_i)[labels_i] (a Python float) and
    dlogits = (softmax(logits) - onehot(labels)) / N, same shape and dtype as logits. Matches
    ``torch.nn.functional.cross_entropy(logits, labels)`` and its gradient.
    """
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or not np.issubdtype(logits.dtype, np.floating):
        raise ValueError(f"logits must be a floating (N, C) array; got shape {logits.shape} and dtype {logits.dtype}.")
    n, c = logits.shape
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be an integer array of shape ({n},) to match logits {logits.shape}; "
            f"got shape {labels.shape} and dtype {labels.dtype}."
        )
    if n == 0:
        raise ValueError("softmax_cross_entropy got an empty batch (N = 0).")
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(
            f"labels must lie in [0, {c - 1}] for {c} classes; got values in [{labels.min()}, {labels.max()}]."
        )
    logp = log_softmax(logits)
    rows = np.arange(n)
    loss = -float(logp[rows, labels].astype(np.float64).mean())
    dlogits = np.exp(logp)
    dlogits[rows, labels] -= 1
    dlogits /= n
    return loss, dlogits


def mse(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error over all elements, and its gradient wrt ``pred``.

    pred and target: same shape. Returns ``(loss, dpred)`` with loss = mean((pred - target)^2) and
    dpred = 2 (pred - target) / pred.size, like ``torch.nn.functional.mse_loss`` (reduction "mean").
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"mse needs pred and target of the same shape; got {pred.shape} and {target.shape}.")
    if pred.size == 0:
        raise ValueError("mse got empty arrays.")
    diff = pred - target.astype(pred.dtype, copy=False)
    loss = float(np.mean(np.square(diff, dtype=np.float64)))
    return loss, (2.0 / pred.size) * diff
