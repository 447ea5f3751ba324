"""Plots and counts shared by the PyTorch and the from-scratch labs (NumPy and matplotlib only).

- :func:`plot_histories`: training curves of several runs side by side, one panel per metric; takes
  ``labutils.train.History`` objects and the scratch trainer's history dicts alike.
- :func:`confusion_matrix`: ``(K, K)`` counts of true class against predicted class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

METRIC_LABELS = {
    "train_loss": "training loss",
    "val_loss": "validation loss",
    "train_acc": "training accuracy",
    "val_acc": "validation accuracy",
    "train_error": "training error",
    "val_error": "validation error",
    "lr": "learning rate",
}


def _column(history: Any, name: str, metric: str) -> list[float]:
    """One per-epoch column of a History (``history[metric]``) or of a dict of lists."""
    try:
        return [float(v) for v in history[metric]]
    except KeyError:
        has = sorted(history) if isinstance(history, Mapping) else list(history[0]) if len(history) else []
        raise ValueError(f"History {name!r} has no {metric!r}; it has {', '.join(map(str, has))}.") from None


def plot_histories(
    histories: Mapping[str, Any],
    metrics: Sequence[str] = ("train_loss", "val_acc"),
    *,
    axes=None,
    title: str | None = None,
    logy: Iterable[str] = (),
    log_loss: bool = False,
):
    """Curves of several runs side by side, one panel per metric, one line per run (x = epoch).

    ``histories``: ``{run name: history}``, each a ``labutils.train.History`` or a dict of per-epoch lists
    (what ``labutils.scratch.trainer.train`` returns). ``logy``: metrics drawn on a log axis
    (``log_loss=True``: every metric with "loss" in its name); a log axis's label says "(log scale)".
    ``axes``: one matplotlib axis per metric.
    Returns ``(fig, data)`` with ``data[metric][run]`` the list of values drawn.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not histories:
        raise ValueError("plot_histories needs at least one history, got an empty dict.")
    metrics, logy = list(metrics), set(logy) | ({m for m in metrics if "loss" in m} if log_loss else set())
    if axes is None:  # constrained layout: one panel's y label never runs into its neighbour's tick labels
        fig, axes = plt.subplots(
            1, len(metrics), figsize=(4.2 * len(metrics), 3.3), squeeze=False, layout="constrained"
        )
        axes = axes[0]
    axes = np.atleast_1d(axes)
    if len(axes) < len(metrics):
        raise ValueError(f"plot_histories needs {len(metrics)} axes (one per metric), got {len(axes)}.")
    fig = axes[0].figure
    data: dict[str, dict[str, list[float]]] = {m: {} for m in metrics}
    for ax, metric in zip(axes, metrics):
        for name, history in histories.items():
            values = _column(history, name, metric)
            try:
                epochs = [int(e) for e in history["epoch"]]
            except KeyError:
                epochs = list(range(1, len(values) + 1))
            ax.plot(epochs, values, marker="o" if len(values) <= 30 else None, ms=3, label=name)
            data[metric][name] = values
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        label = METRIC_LABELS.get(metric, metric.replace("_", " "))
        if metric in logy:
            ax.set_yscale("log")
            label += " (log scale)"
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig, data


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """``(K, K)`` int64 counts: entry ``[t, p]`` = how many examples of class ``t`` were predicted ``p``.

    ``y_true``, ``y_pred``: ``(N,)`` integer labels in ``[0, K)``; ``K`` defaults to the largest label + 1.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and the same length; got {y_true.shape} and {y_pred.shape}.")
    if not (np.issubdtype(y_true.dtype, np.integer) and np.issubdtype(y_pred.dtype, np.integer)):
        raise ValueError(f"Class labels must be integers; got dtypes {y_true.dtype} and {y_pred.dtype}.")
    if num_classes is None:
        num_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    if y_true.size and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes):
        raise ValueError(f"Labels must lie in [0, {num_classes - 1}] for {num_classes} classes.")
    counts = np.bincount(y_true.astype(np.int64) * num_classes + y_pred, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


__all__ = ["plot_histories", "confusion_matrix", "METRIC_LABELS"]
