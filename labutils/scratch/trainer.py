"""A small training loop for the from-scratch (NumPy) models, with evaluation and ``.npz`` checkpoints.

The model contract is the one :class:`labutils.scratch.layers.Sequential` provides:
``forward(x)`` -> outputs, ``backward(dout)`` (fills the gradients), ``parameters()`` and
``gradients()`` (aligned lists of arrays), ``train()`` / ``eval()``, and for checkpoints
``state_dict()`` / ``load_state_dict(state)`` (keys such as ``"0.weight"``).
A loss function maps ``(outputs, targets)`` to ``(mean loss, d loss / d outputs)``.

>>> model = mlp([784, 128, 10])
>>> history = train(model, Adam(model.parameters()), x_tr, y_tr, x_val, y_val, epochs=5, batch_size=128)
>>> history["val_acc"][-1], history["best_epoch"]

Classification (integer labels) tracks accuracy and keeps the weights with the best validation
accuracy; regression (float targets, e.g. with ``losses.mse``) reports accuracy as NaN and keeps
the weights with the lowest validation loss.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from labutils.util import atomic_write, check_choice, check_int, state_mismatch

__all__ = ["train", "evaluate", "predict", "save_npz", "load_npz", "parameter_names"]

LossFn = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]
MONITORS = ("val_acc", "val_loss")


def _default_loss() -> LossFn:
    from labutils.scratch.losses import softmax_cross_entropy

    return softmax_cross_entropy


def _is_classification(y: np.ndarray) -> bool:
    return y.ndim == 1 and np.issubdtype(y.dtype, np.integer)


def _check_pair(name: str, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"{name}: the inputs are empty (shape {x.shape}); pass at least one example.")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} inputs but {len(y)} targets; they must pair up one to one.")
    return x, y


def _accuracy(outputs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(outputs, axis=1) == y))


def _set_mode(model, training: bool | None) -> None:
    if training is True:
        model.train()
    elif training is False:
        model.eval()


def parameter_names(model) -> list[str]:
    """Names for ``model.parameters()``, in order: the ``state_dict()`` keys ("0.weight", ...) when
    they line up with the parameter list, else ``param0``, ``param1``, ..."""
    params = model.parameters()
    if hasattr(model, "named_parameters"):
        return [name for name, _ in model.named_parameters()]
    if hasattr(model, "state_dict"):
        state = model.state_dict()
        if len(state) == len(params) and all(np.shape(v) == p.shape for v, p in zip(state.values(), params)):
            return list(state)
    return [f"param{i}" for i in range(len(params))]


def _copy_state(model) -> list[np.ndarray]:
    return [p.copy() for p in model.parameters()]


def _restore_state(model, state: list[np.ndarray]) -> None:
    for p, saved in zip(model.parameters(), state):
        p[...] = saved  # in place: the optimizer keeps references to these arrays


def predict(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The model's outputs (logits for a classifier) for ``x``, in eval mode, batch by batch.

    Shape ``(N, ...)`` -> ``(N, out)``. The model's train/eval mode is restored afterwards
    when it exposes a ``training`` flag.
    """
    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"predict: the inputs are empty (shape {x.shape}).")
    batch_size = check_int("batch_size", batch_size)
    was_training = getattr(model, "training", None)
    model.eval()
    try:
        return np.concatenate([model.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        _set_mode(model, was_training)


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1024, loss_fn: LossFn | None = None):
    """Mean loss and accuracy of ``model`` on ``(x, y)`` in eval mode -> ``(loss, acc)``.

    ``acc`` is the fraction of argmax predictions equal to the integer labels ``y``; NaN for
    regression targets.
    """
    x, y = _check_pair("evaluate", x, y)
    loss_fn = loss_fn or _default_loss()
    outputs = predict(model, x, batch_size=batch_size)
    loss, _ = loss_fn(outputs, y)
    acc = _accuracy(outputs, y) if _is_classification(y) else float("nan")
    return float(loss), acc


def train(
    model,
    optimizer,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    loss_fn: LossFn | None = None,
    schedule: Callable[[int], float] | None = None,
    seed: int = 0,
    progress: bool = True,
    record_grad_norms: bool = False,
    monitor: str | None = None,
) -> dict[str, Any]:
    """Mini-batch training; returns the history and leaves the best-on-validation weights in ``model``
    (which is left in eval mode).

    Args:
        model: a from-scratch model (see the module docstring).
        optimizer: an optimizer from :mod:`labutils.scratch.optim` built on ``model.parameters()``.
        x_train, y_train: ``(N, ...)`` inputs and ``(N,)`` integer labels (or ``(N, k)`` float targets).
        x_val, y_val: the validation set, evaluated after every epoch.
        epochs: passes over the training set. batch_size: examples per update (the last batch may be smaller).
        loss_fn: ``(outputs, targets) -> (mean loss, d outputs)``; default softmax cross-entropy.
        schedule: a learning-rate schedule (:mod:`labutils.scratch.schedules`) or any ``t -> lr``
            callable; ``schedule.unit == "step"`` sets the rate before every update, otherwise at the
            start of every epoch (``t`` counts from 0).
        seed: seeds the shuffling of the training set (one permutation per epoch).
        progress: show a tqdm progress bar.
        record_grad_norms: also record every parameter's gradient L2 norm at every update.
        monitor: "val_acc" (default for integer labels) or "val_loss" (default otherwise): what
            decides the best epoch.

    Returns:
        dict with per-epoch lists ``epoch`` (1-based), ``train_loss``, ``train_acc`` (running means
        over the epoch's mini-batches, in train mode), ``val_loss``, ``val_acc``, ``lr`` (the mean
        rate used in the epoch), ``time_s``; and ``best_epoch``, ``best_val_loss``, ``best_val_acc``,
        ``monitor``, ``steps``, ``interrupted``. With ``record_grad_norms``: ``grad_norms``
        ``{parameter name: [norm per update]}`` and ``steps_per_epoch``.

    A non-finite training loss raises ``ValueError`` naming the epoch and step (the best weights
    so far are restored first). Ctrl-C (KeyboardInterrupt) stops training, restores the best weights
    and returns the history of the completed epochs with ``interrupted=True``.
    """
    x_train, y_train = _check_pair("training set", x_train, y_train)
    x_val, y_val = _check_pair("validation set", x_val, y_val)
    epochs = check_int("epochs", epochs)
    batch_size = check_int("batch_size", batch_size)
    loss_fn = loss_fn or _default_loss()
    classification = _is_classification(y_train)
    if monitor is None:
        monitor = "val_acc" if classification else "val_loss"
    check_choice("monitor", monitor, MONITORS)
    if monitor == "val_acc" and not _is_classification(y_val):
        raise ValueError("monitor='val_acc' needs integer class labels; use monitor='val_loss' for regression.")
    if schedule is not None and not callable(schedule):
        raise ValueError(f"schedule must be callable (t -> learning rate), got {type(schedule).__name__}.")
    per_step = schedule is not None and getattr(schedule, "unit", "epoch") == "step"

    n = len(x_train)
    steps_per_epoch = -(-n // batch_size)
    rng = np.random.default_rng(seed)
    names = parameter_names(model)
    history: dict[str, Any] = {
        key: [] for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s")
    }
    history.update(monitor=monitor, best_epoch=None, best_val_loss=None, best_val_acc=None, steps=0, interrupted=False)
    if record_grad_norms:
        history["grad_norms"] = {name: [] for name in names}
        history["steps_per_epoch"] = steps_per_epoch

    best_state, best_score = None, None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="epochs", unit="epoch")
    try:
        for epoch in range(epochs):
            start = time.perf_counter()
            if schedule is not None and not per_step:
                optimizer.lr = schedule(epoch)
            model.train()
            order = rng.permutation(n)
            loss_sum, correct, lr_sum = 0.0, 0, 0.0
            for step in range(steps_per_epoch):
                idx = order[step * batch_size : (step + 1) * batch_size]
                xb, yb = x_train[idx], y_train[idx]
                if per_step:
                    optimizer.lr = schedule(history["steps"])
                outputs = model.forward(xb)
                loss, dout = loss_fn(outputs, yb)
                if not np.isfinite(loss):
                    if best_state is not None:
                        _restore_state(model, best_state)
                    raise ValueError(
                        f"The training loss became {float(loss)} at epoch {epoch + 1}, step {step + 1} "
                        f"(of {steps_per_epoch}; learning rate {optimizer.lr:g}): lower the learning rate "
                        "or check the inputs for NaN/inf."
                    )
                model.backward(dout)
                grads = model.gradients()
                if record_grad_norms:
                    for name, g in zip(names, grads):
                        history["grad_norms"][name].append(float(np.linalg.norm(g)))
                optimizer.step(grads)
                history["steps"] += 1
                loss_sum += float(loss) * len(idx)
                lr_sum += optimizer.lr
                if classification:
                    correct += int(np.sum(np.argmax(outputs, axis=1) == yb))
            val_loss, val_acc = evaluate(model, x_val, y_val, batch_size=max(batch_size, 1024), loss_fn=loss_fn)
            history["epoch"].append(epoch + 1)
            history["train_loss"].append(loss_sum / n)
            history["train_acc"].append(correct / n if classification else float("nan"))
            history["val_loss"].append(val_loss)
            history["val_acc"].append(val_acc)
            history["lr"].append(lr_sum / steps_per_epoch if per_step else optimizer.lr)
            history["time_s"].append(time.perf_counter() - start)
            score = val_acc if monitor == "val_acc" else -val_loss
            if best_score is None or score > best_score:
                best_score, best_state = score, _copy_state(model)
                history.update(best_epoch=epoch + 1, best_val_loss=val_loss, best_val_acc=val_acc)
            if bar is not None:
                bar.set_postfix(loss=f"{loss_sum / n:.4f}", val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.4f}")
                bar.update(1)
    except KeyboardInterrupt:
        history["interrupted"] = True
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None:
        _restore_state(model, best_state)
    model.eval()
    return history


# -- checkpoints ---------------------------------------------------------------------------------
def save_npz(model, path: str | os.PathLike) -> Path:
    """Write ``model.state_dict()`` to ``path`` (``.npz``) atomically: a temp file, then a rename.

    A crash mid-write never leaves a truncated checkpoint behind. Returns the path.
    """
    state = {k: np.asarray(v) for k, v in model.state_dict().items()}
    return atomic_write(path, lambda fh: np.savez(fh, **state))  # a file object: numpy adds no ".npz"


def load_npz(model, path: str | os.PathLike):
    """Load a checkpoint written by :func:`save_npz` into ``model`` (in place); returns the model.

    The file must hold exactly the model's parameter names with the same shapes; otherwise one
    ``ValueError`` lists the differences (a checkpoint of another architecture).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    with np.load(path, allow_pickle=False) as f:
        state = {k: f[k] for k in f.files}
    problem = state_mismatch({k: np.shape(v) for k, v in model.state_dict().items()}, state)
    if problem:
        raise ValueError(f"Checkpoint {path} does not match the model's architecture: {problem}.")
    model.load_state_dict(state)
    return model
