"""The training loop of every PyTorch lab: ``train_one_epoch``, ``evaluate`` and ``fit`` over them.

>>> history = fit(model, loaders.train, loaders.val, epochs=30, optimizer="sgd", lr=0.1,
...               weight_decay=1e-4, scheduler="cosine", patience=8, checkpoint_dir="runs/05/resnet20")
>>> history.best_val_acc, history["val_acc"]            # per-epoch rows, also history.as_dict()
>>> ev = evaluate(model, loaders.test)                  # loss, top1, top5, confusion, predictions

Read it in this order:

- :func:`train_one_epoch` is the loop lab 04 writes by hand (forward, loss, backward, optimizer step),
  plus the running loss and accuracy, a check that the loss is still finite, and a progress bar.
- :func:`evaluate` is one pass over a loader without gradients: loss, top-1, top-5, confusion matrix.
- :func:`fit` calls the two once per epoch and, around them, remembers the best weights (by validation
  accuracy), steps the learning-rate scheduler, writes checkpoints (:mod:`labutils.checkpoints`), logs
  to the tracker and stops early when validation accuracy has not improved for ``patience`` epochs.
- Under ``torchrun``, :mod:`labutils.distributed` makes the same ``fit`` data-parallel (DistributedDataParallel).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from labutils import distributed, get_device
from labutils.checkpoints import (
    CheckpointMismatchError,
    TrainingCheckpoints,
    atomic_save,
    check_architecture,
    cpu_state,
    load_backbone,
    load_checkpoint,
    load_state_checked,
    load_training_state,
    module_structure,
    save_backbone,
    save_training_state,
)
from labutils.optimizers import DEFAULT_MOMENTUM, OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler
from labutils.plots import confusion_matrix, plot_histories
from labutils.util import check_int

# History columns under the names the tracker has always logged them (epoch and lr keep theirs)
TRACKER_NAMES = {
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "val_loss": "val/loss",
    "val_acc": "val/acc",
    "time_s": "epoch_time_s",
}
DIVERGENCE_FACTOR = 1e3  # a batch loss above this many times the first one ...
DIVERGENCE_FLOOR = 100.0  # ... and above this value means the run diverged (see LossGuard)


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite. ``.epoch``/``.step`` say where; ``.history`` holds the
    epochs completed before it happened."""

    def __init__(self, message: str, *, epoch: int, step: int, global_step: int, history: History | None = None):
        super().__init__(message)
        self.epoch, self.step, self.global_step, self.history = epoch, step, global_step, history

    def with_history(self, history: History) -> NonFiniteLossError:
        """The same error with the history of the finished epochs and a word on the weights the model holds."""
        kept = f" The model holds the best weights (epoch {history.best_epoch})." if history.best_epoch else ""
        return type(self)(
            str(self) + kept, epoch=self.epoch, step=self.step, global_step=self.global_step, history=history
        )


class DivergedLossError(NonFiniteLossError):
    """The training loss exploded far above where it started (see :class:`LossGuard` for the rule)."""


# ---- Results ---------------------------------------------------------------------------------------------------------
@dataclass
class History:
    """Per-epoch metrics of one ``fit`` call.

    ``rows``: one dict per epoch with ``epoch`` (1-based), ``train_loss``, ``train_acc``, ``val_loss``,
    ``val_acc`` (accuracies in [0, 1]), ``lr`` (learning rate at the start of the epoch) and ``time_s``
    (wall time of training + validation). ``history["val_acc"]`` gives one column as a list
    (``"train_error"``/``"val_error"`` give 1 - accuracy), ``history[-1]`` the last row.
    """

    rows: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_acc: float | None = None
    stopped_early: bool = False
    interrupted: bool = False
    resumed_from: int | None = None  # epochs already done in the checkpoint this run resumed from
    checkpoint: str | None = None  # path of the best checkpoint, if one was written

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, key: int | str):
        if isinstance(key, str):
            if key in ("train_error", "val_error"):  # error = 1 - accuracy, as in He et al.'s plots
                return [1.0 - a for a in self[key.replace("_error", "_acc")]]
            if self.rows and key not in self.rows[0]:
                raise KeyError(
                    f"History has no column {key!r}; columns are {', '.join(self.rows[0])} "
                    "(and train_error, val_error)."
                )
            return [row[key] for row in self.rows]
        return self.rows[key]

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-able form (what checkpoints and metrics.json store), the rows under ``"epochs"``."""
        plain = dataclasses.asdict(self)
        return {"epochs": plain.pop("rows"), **plain}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        fields = {f.name for f in dataclasses.fields(cls)} - {"rows"}
        return cls(rows=[dict(r) for r in d["epochs"]], **{k: d[k] for k in fields if k in d})


@dataclass
class Evaluation:
    """Result of :func:`evaluate` on one data set of N samples and K classes.

    ``loss``: mean loss per sample; ``top1``/``top5``: fraction of samples whose label is the arg-max /
    among the ``min(5, K)`` highest scores; ``confusion``: (K, K) int64 counts, row = true class,
    column = predicted class; ``predictions``/``targets``: (N,) int64 in loader order.
    """

    loss: float
    top1: float
    top5: float
    confusion: np.ndarray
    predictions: np.ndarray
    targets: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.confusion.shape[0])

    def per_class_accuracy(self) -> np.ndarray:
        """(K,) recall of every class (NaN for a class absent from the targets)."""
        support = self.confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(self.confusion) / support

    def as_dict(self) -> dict[str, float]:
        """The scalar results (for metrics.json); the arrays stay on the object."""
        return {"loss": self.loss, "top1": self.top1, "top5": self.top5}


def steps_per_epoch(loader, max_steps: int | None = None) -> int | None:
    """Batches one epoch trains on: ``len(loader)``, capped at ``max_steps`` (None: unknown length)."""
    try:
        n = len(loader)
    except TypeError:  # an iterable without a length
        return max_steps
    return n if max_steps is None else min(n, max_steps)


# ---- Early stopping, the loss guard, progress bars -------------------------------------------------------------------
class EarlyStopping:
    """Remembers the best weights by validation accuracy and says when ``patience`` epochs went by without
    improvement (``patience=None``: never, the best weights are still kept).

    >>> stopper = EarlyStopping(patience=5)
    >>> improved = stopper.update(epoch, val_acc, model)   # True: a new best, its weights copied to the CPU
    >>> stopper.should_stop                                # bad_epochs >= patience
    """

    def __init__(self, patience: int | None):
        self.patience = patience
        self.best_acc: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, val_acc: float, model: nn.Module) -> bool:
        if self.best_acc is None or val_acc > self.best_acc:
            self.best_acc, self.best_epoch, self.bad_epochs = val_acc, epoch, 0
            self.best_state = cpu_state(model)
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def restore_best(self, model: nn.Module) -> None:
        """Put the best weights back into ``model`` (nothing happens before the first epoch)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self, epoch: int) -> dict[str, Any]:
        # when the best epoch is the last one, the best weights are the model's own: not stored twice
        best = None if self.best_epoch == epoch else self.best_state
        return {"best_acc": self.best_acc, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs, "best": best}

    def load_state_dict(self, state: Mapping[str, Any], model: nn.Module) -> None:
        self.best_acc, self.best_epoch, self.bad_epochs = state["best_acc"], state["best_epoch"], state["bad_epochs"]
        self.best_state = state["best"] if state["best"] is not None else cpu_state(model)


class LossGuard:
    """Stops training when the loss is NaN/inf or has diverged, naming the epoch and step.

    Diverged means: a batch's training loss is above both ``DIVERGENCE_FACTOR`` (1000) times the loss of
    the run's first batch and ``DIVERGENCE_FLOOR`` (100). Normal training, however noisy, stays far
    below: a cross-entropy starts near ``ln K`` (2.3 for 10 classes) and a loss of 2300 means logits
    thousands apart on the true class; the floor keeps a run that starts near 0 (a fine-tuned model)
    from stopping at a loss that is merely poor. ``initial_loss`` is saved in ``last.pt`` so a resumed
    run uses the same limit.
    """

    def __init__(self, initial_loss: float | None = None):
        self.initial_loss = initial_loss

    @property
    def limit(self) -> float:
        if self.initial_loss is None:
            return math.inf
        return max(DIVERGENCE_FACTOR * abs(self.initial_loss), DIVERGENCE_FLOOR)

    def check(self, loss: float, *, epoch: int, step: int, global_step: int) -> None:
        """Raise if ``loss`` (step ``step`` of ``epoch``, ``global_step`` of the run, both 1-based) is NaN,
        infinite or above :attr:`limit`; the first finite loss becomes the reference."""
        if self.initial_loss is None and math.isfinite(loss):
            self.initial_loss = loss
        if math.isfinite(loss) and loss <= self.limit:
            return
        where = f"at epoch {epoch}, step {step} (global step {global_step})"
        if math.isfinite(loss):
            error, message = (
                DivergedLossError,
                (
                    f"The training loss exploded to {loss:.3g} {where}, above {DIVERGENCE_FACTOR:g} times its first "
                    f"value {self.initial_loss:.3g}; training stopped. Try a learning rate 10-100 times lower, "
                    "gradient clipping, or normalisation layers."
                ),
            )
        else:
            error, message = (
                NonFiniteLossError,
                (
                    f"The training loss became {loss} {where}; training stopped. Try a lower learning rate, check the "
                    "data for NaN/inf, or add normalisation."
                ),
            )
        raise error(message, epoch=epoch, step=step, global_step=global_step)


class TrainingBars:
    """The two progress bars of training, epochs and the batches of the current epoch, made once and reused.

    :func:`fit` makes one for its run; :func:`labutils.experiment.run_all` makes one for all its runs, so a
    lab that trains fifty configurations shows two bars that restart rather than a hundred that come and go
    (in a notebook every bar is about a dozen widgets, and thousands of them flood the kernel's messages).
    ``enabled=False`` shows nothing. Use as a context manager, or call :meth:`close` when done.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = bool(enabled)
        self.epochs_bar = None
        self.steps_bar = None

    def run(self, epochs: int, done: int = 0) -> None:
        """Start the epochs bar at ``done`` of ``epochs``."""
        self.epochs_bar = self._restart(self.epochs_bar, total=epochs, initial=done, desc="epochs", unit="ep")

    def epoch(self, epoch: int, steps: int | None):
        """Start the bar of one epoch's ``steps`` batches (None: unknown); returns it (``None`` when disabled)."""
        self.steps_bar = self._restart(self.steps_bar, total=steps, desc=f"epoch {epoch}", leave=False)
        return self.steps_bar

    def _restart(self, bar, *, total: int | None, desc: str, initial: int = 0, **options):
        """A new tqdm bar, or ``bar`` again from ``initial`` (a notebook keeps showing the same widgets)."""
        if not self.enabled:
            return None
        if bar is None:
            from tqdm.auto import tqdm

            return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, **options)
        bar.set_description_str(desc, refresh=False)
        bar.set_postfix_str("", refresh=False)
        bar.reset(total=total)
        bar.n = bar.initial = initial  # the rate counts from here
        bar.refresh()
        return bar

    def epoch_done(self, row: Mapping[str, float]) -> None:
        """Advance the epochs bar by one and show the epoch's numbers (a :class:`History` row) on it."""
        if self.epochs_bar is not None:
            numbers = {k: f"{row[k]:.3f}" for k in ("train_loss", "train_acc", "val_acc")}
            self.epochs_bar.set_postfix(**numbers, lr=f"{row['lr']:.2g}", refresh=False)
            self.epochs_bar.update(1)

    def close(self) -> None:
        for bar in (self.steps_bar, self.epochs_bar):
            if bar is not None:
                bar.close()
        self.epochs_bar = self.steps_bar = None

    def __enter__(self) -> TrainingBars:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- One epoch of training, one pass of evaluation -------------------------------------------------------------------
def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    *,
    loss_fn: Callable,
    device: torch.device | str,
    epoch: int = 1,
    global_step: int = 0,
    scheduler=None,
    max_steps: int | None = None,
    amp: bool = False,
    recorder=None,
    progress: bool | TrainingBars = False,
    guard: LossGuard | None = None,
) -> tuple[float, float, int]:
    """Train a classifier for one pass over ``loader``'s ``(x, y)`` batches: forward, loss, backward, step.

    ``loss_fn(scores, y)`` must return the batch mean (e.g. ``nn.CrossEntropyLoss()``); ``scores`` are
    (N, K) and ``y`` (N,) class indices. Optional: ``scheduler`` is stepped after every batch (one-cycle);
    ``recorder.record(global_step)`` sees the gradients before the step; ``max_steps`` caps the batches;
    ``amp`` runs the forward pass in bfloat16 autocast; ``progress`` shows a bar (``True``) or uses these
    :class:`TrainingBars`; ``guard`` (default a fresh :class:`LossGuard`) stops on a NaN or diverged loss.

    Returns ``(mean loss per sample, accuracy in [0, 1], global_step + batches trained)``.
    """
    device = torch.device(device)
    guard = guard if guard is not None else LossGuard()
    bars = progress if isinstance(progress, TrainingBars) else TrainingBars(progress)
    bar = bars.epoch(epoch, steps_per_epoch(loader, max_steps))
    batches = loader if max_steps is None else itertools.islice(loader, max_steps)
    loss_sum, correct, seen = 0.0, 0, 0
    model.train()
    try:
        for step, (x, y) in enumerate(batches, start=1):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                scores = model(x)
                loss = loss_fn(scores, y)
            loss_value = loss.item()
            # checked before the backward pass, so that a NaN never reaches the weights; under torchrun on the
            # mean over all processes, so that they all stop together
            guard.check(distributed.mean_across_ranks(loss_value), epoch=epoch, step=step, global_step=global_step + 1)

            optimizer.zero_grad()
            loss.backward()
            if recorder is not None:
                recorder.record(global_step)  # the gradients of this step, before the weights change
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            global_step += 1

            loss_sum += loss_value * len(y)
            correct += (scores.argmax(dim=1) == y).sum().item()
            seen += len(y)
            if bar is not None:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", refresh=False)
                bar.update()
    finally:
        if bars is not progress:  # made here, so closed here
            bars.close()
    if seen == 0:
        raise ValueError(f"The training loader yielded no batches in epoch {epoch}.")
    loss_sum, correct, seen = distributed.sum_across_ranks(loss_sum, correct, seen)  # the whole epoch's, under torchrun
    return loss_sum / seen, correct / seen, global_step


def evaluate(
    model: nn.Module, loader: Iterable, device=None, *, loss_fn: Callable | None = None, amp: bool | None = None
) -> Evaluation:
    """Loss, top-1, top-5, confusion matrix and predictions of a classifier on a loader of (x, y) batches.

    ``loss_fn`` (default cross-entropy) must return the batch mean. The model is moved to ``device``
    (default :func:`labutils.get_device`); ``amp`` (bfloat16 autocast) defaults to on for CUDA. The
    model's train/eval mode is put back afterwards.
    """
    device, amp = _to_device(model, device, amp)
    loss_fn = loss_fn or nn.functional.cross_entropy
    was_training = model.training
    model.eval()
    loss_sum, top5_hits, seen = 0.0, 0, 0
    predictions, targets = [], []
    try:
        with torch.inference_mode():
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    scores = model(x).float()
                if scores.ndim != 2 or y.ndim != 1:
                    raise ValueError(
                        f"evaluate() needs class scores of shape (N, K) and integer labels of shape (N,), "
                        f"got scores {tuple(scores.shape)} and labels {tuple(y.shape)}."
                    )
                loss_sum += loss_fn(scores, y).item() * len(y)
                top5 = scores.topk(min(5, scores.shape[1]), dim=1).indices
                top5_hits += (top5 == y[:, None]).any(dim=1).sum().item()
                predictions.append(scores.argmax(dim=1).cpu())
                targets.append(y.cpu())
                seen += len(y)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("The evaluation loader yielded no samples.")
    predictions = torch.cat(predictions).numpy().astype(np.int64)
    targets = torch.cat(targets).numpy().astype(np.int64)
    return Evaluation(
        loss=loss_sum / seen,
        top1=int((predictions == targets).sum()) / seen,
        top5=top5_hits / seen,
        confusion=confusion_matrix(targets, predictions, scores.shape[1]),
        predictions=predictions,
        targets=targets,
    )


# ---- fit: epochs of train_one_epoch + evaluate, with checkpoints, early stopping and tracking ------------------------
def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable,
    *,
    epochs: int,
    optimizer: str | torch.optim.Optimizer = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = DEFAULT_MOMENTUM,
    nesterov: bool = False,
    scheduler: str | None = None,
    scheduler_kwargs: Mapping[str, Any] | None = None,
    patience: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    grad_recorder=None,
    tracker=None,
    device=None,
    loss_fn: Callable | None = None,
    progress: bool | TrainingBars = True,
    max_steps_per_epoch: int | None = None,
    amp: bool | None = None,
    architecture: Mapping[str, Any] | None = None,
) -> History:
    """Train a classifier for ``epochs`` epochs on ``(x, y)`` batches and validate after each epoch.

    - ``optimizer``: ``"adam"``, ``"adamw"``, ``"sgd"`` (with ``momentum``, ``nesterov``), or a ready
      ``torch.optim.Optimizer`` (see :func:`build_optimizer`); ``lr``, ``weight_decay`` as usual.
    - ``scheduler``: None, ``"plateau"``, ``"step"``, ``"cosine"``, ``"onecycle"`` (see
      :func:`build_scheduler`); ``scheduler_kwargs`` override its defaults.
    - ``patience``: stop when validation accuracy has not improved for this many epochs and put the
      best weights back into ``model``. Without it the model keeps its final weights.
    - ``checkpoint_dir``: write ``last.pt`` each epoch and ``best.pt`` on improvement; with ``resume``
      an existing ``last.pt`` is continued exactly, bit for bit as if never interrupted (same
      architecture, optimizer and scheduler required; loaders without persistent workers).
    - ``architecture``: a JSON-able description of the model (e.g. ``{"factory": "MLP", "kwargs": {...}}``),
      stored in the checkpoints; resuming with another description is refused. Without it the model's
      class name and module structure are still compared (:func:`labutils.checkpoints.check_architecture`).
    - ``grad_recorder``: e.g. ``labutils.gradflow.GradientRecorder(model)``; ``record(step)`` is called
      after every backward pass, before the optimizer step (``step`` = optimizer steps done so far).
    - ``tracker``: a ``labutils.tracking.Tracker``; gets one log per epoch (loss, accuracy, learning rate,
      and ``gradflow/...`` from ``grad_recorder.latest()`` when it has one), a summary and the best
      checkpoint as an artifact.
    - ``device``: default ``labutils.get_device()``. ``amp`` (default: on for CUDA) runs forward passes in
      bfloat16 autocast; on CUDA convolution weights are also stored channels-last (faster with bf16).
    - ``loss_fn``: default cross-entropy (batch mean). ``max_steps_per_epoch`` caps batches per epoch.
    - ``progress``: show an epochs bar and a batches bar (``True``), nothing, or reuse these :class:`TrainingBars`.
    - Under ``torchrun`` the same call trains on several processes with DistributedDataParallel
      (:mod:`labutils.distributed`): ``train_loader``'s batch size is the global batch, split over the processes;
      process 0 alone writes checkpoints, logs and shows progress; the history holds the whole run's numbers.

    Returns a :class:`History`. A NaN/inf training loss raises :class:`NonFiniteLossError`, a diverged
    one (see :class:`LossGuard`) :class:`DivergedLossError`, both naming the epoch and step, with the
    best weights put back. An interrupt (Ctrl-C, Jupyter's stop button) ends training cleanly: the best
    weights are put back, checkpoints stay, and the history so far is returned with ``interrupted=True``.
    """
    check_int("epochs", epochs)
    check_int("patience", patience, allow_none=True)
    check_int("max_steps_per_epoch", max_steps_per_epoch, allow_none=True)
    device, amp = _to_device(model, distributed.init(device), amp)  # under torchrun: this process's device
    ddp = distributed.setup(model, train_loader)  # under torchrun: DistributedDataParallel, this process's shard
    loss_fn = loss_fn or nn.functional.cross_entropy
    opt = build_optimizer(model, optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov)
    steps = steps_per_epoch(ddp.loader, max_steps_per_epoch)
    sched = build_scheduler(opt, scheduler, epochs=epochs, steps_per_epoch=steps, **dict(scheduler_kwargs or {}))

    history, stopper, guard, global_step = History(), EarlyStopping(patience), LossGuard(), 0
    checkpoints = None
    if checkpoint_dir is not None:
        checkpoints = TrainingCheckpoints(
            checkpoint_dir, model, opt, sched, epochs, ddp.loader, architecture, grad_recorder
        )
    if checkpoints is not None and resume and checkpoints.last.exists():
        history, global_step = _resume(checkpoints, stopper, guard)
    bars = progress if isinstance(progress, TrainingBars) else TrainingBars(progress and distributed.is_main())
    tracker = tracker if distributed.is_main() else None  # one process alone logs (and writes checkpoints)
    bars.run(epochs, done=len(history))
    epoch_options = dict(loss_fn=loss_fn, device=device, amp=amp, max_steps=max_steps_per_epoch, guard=guard)
    epoch_options.update(scheduler=sched if _steps_per_batch(sched) else None, recorder=grad_recorder, progress=bars)
    try:
        for epoch in range(len(history) + 1, epochs + 1):
            if stopper.should_stop:  # a resumed run that had already stopped early
                break
            lr_now, start = opt.param_groups[0]["lr"], time.perf_counter()
            ddp.set_epoch(epoch)  # under torchrun: a new shuffle of the shards each epoch
            train_loss, train_acc, global_step = train_one_epoch(
                ddp.model, ddp.loader, opt, epoch=epoch, global_step=global_step, **epoch_options
            )
            val = evaluate(model, val_loader, device, loss_fn=loss_fn, amp=amp)
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val.loss}
            row.update(val_acc=val.top1, lr=lr_now, time_s=time.perf_counter() - start)
            history.rows.append(row)
            if stopper.update(epoch, val.top1, model):
                history.best_epoch, history.best_val_acc = epoch, val.top1
                if checkpoints is not None:
                    history.checkpoint = str(checkpoints.save_best(stopper))
            _step_after_epoch(sched, val.top1)
            if checkpoints is not None:
                checkpoints.save_last(history, stopper, guard, global_step)
            _log_epoch(tracker, row, grad_recorder, global_step)
            bars.epoch_done(row)
    except NonFiniteLossError as err:
        stopper.restore_best(model)
        raise err.with_history(history) from None
    except KeyboardInterrupt:
        history.interrupted = True
        kept = "the best weights are back in the model." if stopper.best_state is not None else "no epoch finished."
        print(f"Interrupted after {len(history)} complete epoch(s); {kept}")
    finally:
        if bars is not progress:  # made here, so closed here
            bars.close()
    history.stopped_early = stopper.should_stop
    if history.stopped_early or history.interrupted:
        stopper.restore_best(model)
    _finish_tracking(tracker, history)
    return history


def _resume(checkpoints: TrainingCheckpoints, stopper: EarlyStopping, guard: LossGuard) -> tuple[History, int]:
    """Load the interrupted run in ``checkpoints.last`` (weights, optimizer, scheduler, data order, ``stopper`` and
    ``guard``); return its history so far and the optimizer steps it had taken."""
    state = checkpoints.resume(stopper, guard)
    history = History.from_dict(state["history"])
    history.resumed_from, history.interrupted = len(history), False
    return history, state["global_step"]


def _to_device(model: nn.Module, device, amp: bool | None) -> tuple[torch.device, bool]:
    """Move ``model`` to ``device`` (default :func:`labutils.get_device`); returns that device and whether to
    use bfloat16 autocast (``amp``; default: on CUDA). On CUDA the convolution weights are also stored
    channels-last, the memory layout of the fastest bf16 convolutions (other weights are left as they are)."""
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return device, (device.type == "cuda" if amp is None else bool(amp))


def _steps_per_batch(scheduler) -> bool:
    """Whether ``scheduler`` is stepped after every batch (OneCycleLR) rather than after every epoch."""
    return isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)


def _step_after_epoch(scheduler, val_acc: float) -> None:
    """An epoch scheduler's step; ReduceLROnPlateau watches validation accuracy. No scheduler, or OneCycleLR
    (stepped after every batch instead), does nothing here."""
    if scheduler is None or _steps_per_batch(scheduler):
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_acc)
    else:
        scheduler.step()


def _log_epoch(tracker, row: Mapping[str, float], recorder, global_step: int) -> None:
    """One tracker log per epoch (none without a tracker): the History row, and the recorder's latest gradient
    numbers."""
    if tracker is None:
        return
    metrics = {TRACKER_NAMES.get(column, column): value for column, value in row.items()}
    if hasattr(recorder, "latest"):  # GradientRecorder: {"weight": {layer: norm}, "bias": {...}, "dead_relu": {...}}
        for kind, values in recorder.latest().items():
            metrics.update({f"gradflow/{kind}/{layer}": float(value) for layer, value in values.items()})
    tracker.log(metrics, step=global_step)


def _finish_tracking(tracker, history: History) -> None:
    """The run's summary, and the best checkpoint as a model artifact named after its folder (without a tracker,
    nothing)."""
    if tracker is None:
        return
    tracker.summary(
        best_val_acc=history.best_val_acc,
        best_epoch=history.best_epoch,
        stopped_early=history.stopped_early,
        interrupted=history.interrupted,
    )
    if history.checkpoint is not None and Path(history.checkpoint).exists():
        folder = Path(history.checkpoint).parent.name or "run"
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{folder}-best").strip("-")
        tracker.log_artifact(history.checkpoint, name=name, type="model")


__all__ = [
    "fit",
    "train_one_epoch",
    "evaluate",
    "History",
    "Evaluation",
    "EarlyStopping",
    "LossGuard",
    "TrainingBars",
    "NonFiniteLossError",
    "DivergedLossError",
    "build_optimizer",
    "build_scheduler",
    "steps_per_epoch",
    "plot_histories",
    "OPTIMIZERS",
    "SCHEDULERS",
    # from labutils.checkpoints, importable from here as before
    "CheckpointMismatchError",
    "atomic_save",
    "check_architecture",
    "module_structure",
    "save_training_state",
    "load_training_state",
    "load_checkpoint",
    "load_state_checked",
    "save_backbone",
    "load_backbone",
]
