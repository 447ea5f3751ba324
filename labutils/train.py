"""One training loop for every PyTorch lab: ``fit`` and ``evaluate``.

>>> history = fit(model, loaders.train, loaders.val, epochs=30, optimizer="sgd", lr=0.1,
...               weight_decay=1e-4, scheduler="cosine", patience=8, checkpoint_dir="runs/05/resnet20")
>>> history.best_val_acc, history["val_acc"]            # per-epoch rows, also history.as_dict()
>>> ev = evaluate(model, loaders.test)                  # loss, top1, top5, confusion, predictions

What ``fit`` does, in order, each epoch: train on every batch (optionally recording gradients),
validate, remember the best weights (by validation accuracy), step the epoch scheduler, write the
checkpoints, log to the tracker, and stop early when validation accuracy has not improved for
``patience`` epochs (then the best weights are put back).

Checkpoints (``checkpoint_dir``): ``last.pt`` after every epoch (model, optimizer, scheduler, epoch,
history, the best weights so far and every random-number-generator state, so that a resumed run
continues exactly where the interrupted one stopped) and ``best.pt`` whenever validation accuracy
improves. Both are written atomically (temporary file + ``os.replace``) and read with
``torch.load(..., weights_only=True)``.

Per-step cost is kept low: the loss and the number of correct predictions stay on the device and
are read back every ``SYNC_EVERY`` steps (for the non-finite-loss check, the tracker's running loss
and the progress bar, whose numbers change at most every ``POSTFIX_EVERY_S`` seconds) and at the
end of the epoch, never after every step.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("plateau", "step", "cosine", "onecycle")
SYNC_EVERY = 50  # steps between device -> host reads of the running loss/accuracy
POSTFIX_EVERY_S = 0.5  # least seconds between progress-bar loss/accuracy updates
CHECKPOINT_FORMAT = 1
LAST, BEST = "last.pt", "best.pt"


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite. ``.epoch``/``.step`` say where; ``.history`` holds the
    epochs completed before it happened."""

    def __init__(self, message: str, *, epoch: int, step: int, global_step: int, history: History):
        super().__init__(message)
        self.epoch, self.step, self.global_step, self.history = epoch, step, global_step, history


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model or the training set-up it is loaded into."""


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
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
        """Plain, JSON-able form (what checkpoints and metrics.json store)."""
        return {
            "epochs": [dict(r) for r in self.rows],
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc,
            "stopped_early": self.stopped_early,
            "interrupted": self.interrupted,
            "resumed_from": self.resumed_from,
            "checkpoint": self.checkpoint,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        return cls(
            rows=[dict(r) for r in d["epochs"]],
            best_epoch=d.get("best_epoch"),
            best_val_acc=d.get("best_val_acc"),
            stopped_early=bool(d.get("stopped_early")),
            interrupted=bool(d.get("interrupted")),
            resumed_from=d.get("resumed_from"),
            checkpoint=d.get("checkpoint"),
        )


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


# --------------------------------------------------------------------------------------------
# Optimizers and schedulers by name
# --------------------------------------------------------------------------------------------
def build_optimizer(
    model: nn.Module,
    name: str | torch.optim.Optimizer = "adam",
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """An optimizer over the model's trainable parameters, by name: ``adam``, ``adamw`` or ``sgd``.

    A ready ``torch.optim.Optimizer`` (e.g. with parameter groups for fine-tuning) is returned as is.
    """
    if isinstance(name, torch.optim.Optimizer):
        if (lr, weight_decay, momentum, nesterov) != (1e-3, 0.0, 0.9, False):
            raise ValueError(
                f"lr/weight_decay/momentum/nesterov were given together with a ready "
                f"{type(name).__name__}: set them on that optimizer (or pass its name instead)."
            )
        return name
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ValueError(
            f"Unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)} (or pass a torch.optim.Optimizer)."
        )
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"Learning rate lr={lr!r} must be a positive number.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("The model has no trainable parameters (all have requires_grad=False).")
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if nesterov:
        raise ValueError(f"nesterov=True applies to optimizer='sgd' only, not {name!r}.")
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, weight_decay=weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, name: str | None, *, epochs: int, steps_per_epoch: int | None = None, **kwargs
):
    """A learning-rate scheduler by name, or None.

    - ``plateau``: ReduceLROnPlateau on validation accuracy (mode "max"), factor 0.5, patience 2.
    - ``step``: divide the learning rate by 10 at 50 % and 75 % of the epochs (the He et al. 2016
      CIFAR recipe; ``milestones=[...]`` and ``gamma`` override; ``step_size=k`` gives StepLR instead).
    - ``cosine``: cosine annealing from ``lr`` to 0 over ``epochs`` (``T_max``, ``eta_min`` override).
    - ``onecycle``: one-cycle policy with peak = the optimizer's ``lr``, stepped after every batch.
    ``kwargs`` go to the torch scheduler and override these defaults.
    """
    if name is None:
        if kwargs:
            raise ValueError(f"scheduler_kwargs {sorted(kwargs)} were given but scheduler is None.")
        return None
    if not isinstance(name, str) or name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)} or None.")
    sched = torch.optim.lr_scheduler
    if name == "plateau":
        cls, args = sched.ReduceLROnPlateau, {"mode": "max", "factor": 0.5, "patience": 2}
    elif name == "step":
        if "step_size" in kwargs:
            cls, args = sched.StepLR, {"gamma": 0.1}
        else:
            cls, args = (
                sched.MultiStepLR,
                {"milestones": sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)}), "gamma": 0.1},
            )
    elif name == "cosine":
        cls, args = sched.CosineAnnealingLR, {"T_max": epochs}
    else:
        if not steps_per_epoch:
            raise ValueError(
                "scheduler='onecycle' needs the number of batches per epoch: give a train loader "
                "with a length or set max_steps_per_epoch."
            )
        cls = sched.OneCycleLR
        args = {"max_lr": [g["lr"] for g in optimizer.param_groups], "total_steps": epochs * steps_per_epoch}
    args.update(kwargs)
    try:
        return cls(optimizer, **args)
    except TypeError as exc:
        raise ValueError(f"scheduler_kwargs {kwargs} are not accepted by {cls.__name__}: {exc}") from None


def _is_per_batch(scheduler) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)


def _scheduler_name(scheduler) -> str | None:
    return None if scheduler is None else type(scheduler).__name__


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename it over ``path``.

    A crash or an interrupt while writing leaves the previous file intact, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, *, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`fit` with ``weights_only=True``.

    With ``model``, its weights are checked against the model (one :class:`CheckpointMismatchError`
    naming the first differences) and loaded into it. Returns the checkpoint dict.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if model is not None:
        state = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
        load_state_checked(model, state, source=str(path), saved_class=ckpt.get("model_class"))
    return ckpt


def load_state_checked(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str = "the checkpoint",
    saved_class: str | None = None,
) -> None:
    """``model.load_state_dict(state)`` with one clear error when the architectures differ."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        (k, tuple(state[k].shape), tuple(v.shape))
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k, saved, now = wrong[0]
            parts.append(f"{len(wrong)} tensor(s) differ in shape (e.g. {k!r}: {saved} saved, {now} in the model)")
        if missing:
            parts.append(f"{len(missing)} are missing from it (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} are not in the model (e.g. {unexpected[0]!r})")
        origin = f" (saved from a {saved_class})" if saved_class else ""
        raise CheckpointMismatchError(
            f"{source}{origin} does not match this {type(model).__name__}: {'; '.join(parts)}. It was saved from "
            "a different architecture, depth or width; build the same model, or start afresh (resume=False or a "
            "new checkpoint_dir)."
        )
    model.load_state_dict(state)


def _loader_generators(loader) -> list[torch.Generator]:
    """The torch.Generators a DataLoader draws its shuffling and worker seeds from (deduplicated)."""
    found: list[torch.Generator] = []
    for obj in (
        loader,
        getattr(loader, "sampler", None),
        getattr(getattr(loader, "batch_sampler", None), "sampler", None),
    ):
        gen = getattr(obj, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def _rng_state(loader) -> dict[str, Any]:
    np_state = np.random.get_state()  # noqa: NPY002 -- the global state seed_everything seeds
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": [g.get_state() for g in _loader_generators(loader)],
    }


def _set_rng_state(state: Mapping[str, Any], loader) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(
        (
            name,  # noqa: NPY002
            keys.numpy().astype(np.uint32),
            int(pos),
            int(has_gauss),
            float(cached),
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    gens = _loader_generators(loader)
    if len(gens) == len(state["loader"]):
        for gen, s in zip(gens, state["loader"]):
            gen.set_state(s)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------
# Backbones for transfer learning
# --------------------------------------------------------------------------------------------
def save_backbone(model: nn.Module, path: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Save a trained network for later labs: ``path`` (weights + meta) and ``path`` with ``.json`` (meta).

    ``meta`` is JSON-able and should say what the network is and what it was trained on, e.g.
    ``{"architecture": "ResNet", "model_kwargs": {"depth": 20, "num_classes": 10},
    "dataset": info.as_dict(), "synthetic": info.synthetic, "test_acc": 0.91}``;
    ``model_kwargs`` is what :func:`load_backbone` passes to the model factory.
    """
    from labutils.results import to_jsonable

    meta = to_jsonable(dict(meta))
    meta.setdefault("model_class", type(model).__name__)
    meta.setdefault("num_parameters", sum(p.numel() for p in model.parameters()))
    path = atomic_save(
        {
            "format": "labutils-backbone",
            "version": CHECKPOINT_FORMAT,
            "model_class": type(model).__name__,
            "model": _cpu_state(model),
            "meta": meta,
        },
        path,
    )
    side = path.with_suffix(".json")
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, side)
    return path


def load_backbone(
    path: str | os.PathLike, model_factory: Callable[..., nn.Module] | nn.Module, *, map_location="cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a network saved by :func:`save_backbone`; returns ``(model, meta)``.

    ``model_factory`` is a model class or function, called with ``meta["model_kwargs"]``
    (e.g. ``labutils.models.ResNet``), or a model instance to load the weights into.
    """
    ckpt = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "labutils-backbone":
        raise ValueError(f"{path} is not a backbone checkpoint written by labutils.train.save_backbone.")
    meta = dict(ckpt["meta"])
    model = model_factory if isinstance(model_factory, nn.Module) else model_factory(**meta.get("model_kwargs", {}))
    load_state_checked(model, ckpt["model"], source=str(path), saved_class=ckpt.get("model_class"))
    return model, meta


# --------------------------------------------------------------------------------------------
# The loops
# --------------------------------------------------------------------------------------------
def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


class _Mover:
    """Moves batches to the device: non-blocking copies and channels-last images on CUDA."""

    def __init__(self, device: torch.device, channels_last: bool):
        self.device, self.channels_last = device, channels_last
        self.non_blocking = device.type == "cuda"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            return x.to(self.device, non_blocking=self.non_blocking, memory_format=torch.channels_last)
        return x.to(self.device, non_blocking=self.non_blocking)


def _autocast(device: torch.device, amp: bool):
    """bf16 autocast when asked for (default on CUDA); no context at all otherwise (not every device has one)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()


def _counts_correct(out: torch.Tensor, y: torch.Tensor) -> bool:
    return out.ndim == 2 and y.ndim == 1 and not y.is_floating_point()


def _eval_pass(model, loader, *, loss_fn, device, amp, mover, full: bool):
    """One pass without gradients; returns (loss, top1, topk, num_classes, preds, targets) (lists empty unless full)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct1 = torch.zeros((), device=device, dtype=torch.int64)
    correctk = torch.zeros((), device=device, dtype=torch.int64)
    n, num_classes, preds, targets = 0, None, [], []
    try:
        with torch.inference_mode():
            for x, y in loader:
                x, y = mover(x), mover(y)
                with _autocast(device, amp):
                    out = model(x)
                out = out.float()
                loss_sum += loss_fn(out, y).double() * y.shape[0]
                n += y.shape[0]
                if not _counts_correct(out, y):
                    continue
                num_classes = out.shape[1]
                pred = out.argmax(dim=1)
                correct1 += (pred == y).sum()
                if full:
                    k = min(5, num_classes)
                    correctk += (out.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum()
                    preds.append(pred.cpu())
                    targets.append(y.cpu())
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("The evaluation loader yielded no samples.")
    loss, c1, ck = torch.stack([loss_sum, correct1.double(), correctk.double()]).tolist()
    acc = c1 / n if num_classes is not None else math.nan
    return loss / n, acc, (ck / n if num_classes is not None else math.nan), num_classes, preds, targets


def evaluate(
    model: nn.Module, loader: Iterable, device=None, *, loss_fn: Callable | None = None, amp: bool | None = None
) -> Evaluation:
    """Loss, top-1, top-5, confusion matrix and predictions of a classifier on a loader of (x, y) batches.

    ``loss_fn`` (default cross-entropy) must return the batch mean. The model's train/eval mode is restored.
    """
    from labutils import get_device

    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    amp = device.type == "cuda" if amp is None else bool(amp)
    mover = _Mover(device, channels_last=device.type == "cuda" and _has_conv(model))
    loss, top1, top5, k, preds, targets = _eval_pass(
        model, loader, loss_fn=loss_fn or nn.CrossEntropyLoss(), device=device, amp=amp, mover=mover, full=True
    )
    if k is None:
        raise ValueError("evaluate() needs class scores of shape (N, K) and integer labels of shape (N,).")
    preds_np = torch.cat(preds).numpy().astype(np.int64)
    targets_np = torch.cat(targets).numpy().astype(np.int64)
    confusion = np.bincount(targets_np * k + preds_np, minlength=k * k).reshape(k, k).astype(np.int64)
    return Evaluation(loss=loss, top1=top1, top5=top5, confusion=confusion, predictions=preds_np, targets=targets_np)


def _steps_per_epoch(loader, max_steps: int | None) -> int | None:
    try:
        n = len(loader)
    except TypeError:
        n = None
    if max_steps is None:
        return n
    return max_steps if n is None else min(n, max_steps)


def _flat_numbers(prefix: str, value: Any, out: dict[str, float]) -> dict[str, float]:
    """Flatten nested mappings of numbers into ``{"prefix/a/b": x}`` (for the tracker)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flat_numbers(f"{prefix}/{k}", v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)
    elif isinstance(value, torch.Tensor) and value.numel() == 1:
        out[prefix] = float(value)
    return out


def _artifact_name(checkpoint_dir: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{checkpoint_dir.name or 'run'}-best").strip("-")


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable,
    *,
    epochs: int,
    optimizer: str | torch.optim.Optimizer = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
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
    progress: bool = True,
    max_steps_per_epoch: int | None = None,
    amp: bool | None = None,
) -> History:
    """Train a classifier for ``epochs`` epochs on ``(x, y)`` batches and validate after each epoch.

    - ``optimizer``: ``"adam"``, ``"adamw"``, ``"sgd"`` (with ``momentum``, ``nesterov``), or a ready
      ``torch.optim.Optimizer``; ``lr``, ``weight_decay`` as usual.
    - ``scheduler``: None, ``"plateau"``, ``"step"``, ``"cosine"``, ``"onecycle"`` (see
      :func:`build_scheduler`); ``scheduler_kwargs`` override its defaults.
    - ``patience``: stop when validation accuracy has not improved for this many epochs and put the
      best weights back into ``model``. Without it the model keeps its final weights.
    - ``checkpoint_dir``: write ``last.pt`` each epoch and ``best.pt`` on improvement; with ``resume``
      an existing ``last.pt`` is continued exactly (same optimizer/scheduler required; for exact
      equality use loaders without persistent workers).
    - ``grad_recorder``: e.g. ``labutils.gradflow.GradientRecorder(model)``; ``record(step)`` is called
      after every backward pass, before the optimizer step (``step`` = optimizer steps done so far).
    - ``tracker``: a ``labutils.tracking.Tracker``; gets loss, accuracy, learning rate, gradient norms
      (``gradflow/...`` from ``grad_recorder.latest()`` when it has one, once per epoch) and the best
      checkpoint as an artifact.
    - ``device``: default ``labutils.get_device()``. On CUDA: bf16 autocast (``amp``), channels-last
      convnets and non-blocking copies (use loaders with ``pin_memory=True`` for the copies to overlap).
    - ``loss_fn``: default cross-entropy (batch mean). ``max_steps_per_epoch`` caps batches per epoch.

    Returns a :class:`History`. A NaN/inf training loss raises :class:`NonFiniteLossError` naming the
    epoch and step. An interrupt (Ctrl-C, Jupyter's stop button) ends training cleanly: the best
    weights are put back, checkpoints stay, and the history so far is returned with ``interrupted=True``.
    """
    from labutils import get_device

    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} must be a positive integer.")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience={patience!r} must be a positive integer or None (no early stopping).")
    if max_steps_per_epoch is not None and (not isinstance(max_steps_per_epoch, int) or max_steps_per_epoch < 1):
        raise ValueError(f"max_steps_per_epoch={max_steps_per_epoch!r} must be a positive integer or None.")
    device = torch.device(device) if device is not None else get_device()
    amp = device.type == "cuda" if amp is None else bool(amp)
    channels_last = device.type == "cuda" and _has_conv(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    mover = _Mover(device, channels_last)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    steps_per_epoch = _steps_per_epoch(train_loader, max_steps_per_epoch)
    opt = build_optimizer(model, optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov)
    sched = build_scheduler(
        opt, scheduler, epochs=epochs, steps_per_epoch=steps_per_epoch, **dict(scheduler_kwargs or {})
    )
    opt_name = type(opt).__name__

    history = History()
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs, global_step = 0, 0
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None and resume and (ckpt_dir / LAST).exists():
        ckpt = load_checkpoint(ckpt_dir / LAST, model)  # on CPU: RNG states must stay CPU tensors
        _check_resumable(ckpt, ckpt_dir / LAST, opt_name, _scheduler_name(sched), epochs)
        opt.load_state_dict(ckpt["optimizer"])
        if sched is not None:
            sched.load_state_dict(ckpt["scheduler"])
        history = History.from_dict(ckpt["history"])
        history.resumed_from, history.interrupted = len(history), False
        best_state = ckpt["best_model"] if ckpt["best_model"] is not None else _cpu_state(model)
        bad_epochs, global_step = ckpt["bad_epochs"], ckpt["global_step"]
        _set_rng_state(ckpt["rng"], train_loader)
        if len(history) >= epochs:
            print(f"Loaded the finished run in {ckpt_dir / LAST} ({len(history)} epochs); nothing left to train.")
        else:
            print(f"Resuming from {ckpt_dir / LAST} after epoch {len(history)} of {epochs}.")

    from tqdm.auto import tqdm

    per_batch = _is_per_batch(sched)
    epoch_bar = tqdm(
        total=epochs, initial=len(history), desc="epochs", unit="ep", disable=not progress, dynamic_ncols=True
    )
    try:
        for epoch in range(len(history) + 1, epochs + 1):
            if patience is not None and bad_epochs >= patience:
                history.stopped_early = True  # already stopped before the checkpoint was written
                break
            lr_now = opt.param_groups[0]["lr"]
            t0 = time.perf_counter()
            train_loss, train_acc, global_step = _train_epoch(
                model,
                train_loader,
                opt,
                sched if per_batch else None,
                loss_fn=loss_fn,
                device=device,
                amp=amp,
                mover=mover,
                epoch=epoch,
                global_step=global_step,
                steps=steps_per_epoch,
                recorder=grad_recorder,
                tracker=tracker,
                progress=progress,
                history=history,
                best_state=best_state,
            )
            val_loss, val_acc, *_ = _eval_pass(
                model, val_loader, loss_fn=loss_fn, device=device, amp=amp, mover=mover, full=False
            )
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": lr_now,
                "time_s": time.perf_counter() - t0,
            }
            history.rows.append(row)
            if history.best_val_acc is None or val_acc > history.best_val_acc:
                history.best_epoch, history.best_val_acc, bad_epochs = epoch, val_acc, 0
                best_state = _cpu_state(model)
                if ckpt_dir is not None:
                    history.checkpoint = str(
                        atomic_save(
                            {
                                "format": CHECKPOINT_FORMAT,
                                "model_class": type(model).__name__,
                                "model": best_state,
                                "epoch": epoch,
                                "val_acc": val_acc,
                            },
                            ckpt_dir / BEST,
                        )
                    )
            else:
                bad_epochs += 1
            if sched is not None and not per_batch:
                sched.step(val_acc) if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) else sched.step()
            if ckpt_dir is not None:
                atomic_save(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "model_class": type(model).__name__,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict() if sched is not None else None,
                        "optimizer_name": opt_name,
                        "scheduler_name": _scheduler_name(sched),
                        "epochs": epochs,
                        "epoch": epoch,
                        "global_step": global_step,
                        "bad_epochs": bad_epochs,
                        "best_model": None if history.best_epoch == epoch else best_state,
                        "history": history.as_dict(),
                        "rng": _rng_state(train_loader),
                    },
                    ckpt_dir / LAST,
                )
            if tracker is not None:
                _log_epoch(tracker, row, grad_recorder, global_step)
            epoch_bar.update(1)
            epoch_bar.set_postfix(
                loss=f"{train_loss:.3f}", acc=f"{train_acc:.3f}", val_acc=f"{val_acc:.3f}", lr=f"{lr_now:.2g}"
            )
            if patience is not None and bad_epochs >= patience:
                history.stopped_early = True
                break
    except KeyboardInterrupt:
        history.interrupted = True
        print(
            f"Interrupted after {len(history)} complete epoch(s); "
            + ("the best weights are back in the model." if best_state is not None else "no epoch finished.")
        )
    finally:
        epoch_bar.close()
    if best_state is not None and (history.stopped_early or history.interrupted):
        model.load_state_dict(best_state)
    if tracker is not None:
        tracker.summary(
            best_val_acc=history.best_val_acc,
            best_epoch=history.best_epoch,
            stopped_early=history.stopped_early,
            interrupted=history.interrupted,
        )
        if history.checkpoint is not None and Path(history.checkpoint).exists():
            tracker.log_artifact(history.checkpoint, name=_artifact_name(ckpt_dir), type="model")
    return history


def _check_resumable(ckpt: Mapping[str, Any], path: Path, opt_name: str, sched_name: str | None, epochs: int) -> None:
    if ckpt.get("format") != CHECKPOINT_FORMAT or "optimizer" not in ckpt:
        raise CheckpointMismatchError(f"{path} is not a training checkpoint written by labutils.train.fit.")
    if ckpt["optimizer_name"] != opt_name or ckpt["scheduler_name"] != sched_name:
        raise CheckpointMismatchError(
            f"{path} was written by a run with optimizer {ckpt['optimizer_name']} and scheduler "
            f"{ckpt['scheduler_name']}, but this run uses {opt_name} and {sched_name}; use the same set-up "
            "to resume, or start afresh (resume=False or a new checkpoint_dir)."
        )
    if sched_name in ("CosineAnnealingLR", "OneCycleLR") and ckpt["epochs"] != epochs:
        raise CheckpointMismatchError(
            f"{path} was written by a run planned for {ckpt['epochs']} epochs with the {sched_name} schedule, "
            f"whose shape depends on that number; resume with epochs={ckpt['epochs']} or start afresh."
        )


def _train_epoch(
    model,
    loader,
    opt,
    batch_sched,
    *,
    loss_fn,
    device,
    amp,
    mover,
    epoch,
    global_step,
    steps,
    recorder,
    tracker,
    progress,
    history,
    best_state,
):
    """Train one epoch; returns (mean train loss, train accuracy, global step)."""
    from tqdm.auto import tqdm

    model.train()
    losses: list[torch.Tensor] = []
    corrects: list[torch.Tensor] = []
    sizes: list[int] = []
    loss_sum, correct, seen, first_step = 0.0, 0.0, 0, 1
    shown = -math.inf  # when the progress bar's loss/accuracy were last updated (perf_counter)
    counts_acc = None
    batches = loader if steps is None else itertools.islice(loader, steps)
    bar = tqdm(batches, total=steps, desc=f"epoch {epoch}", leave=False, disable=not progress, dynamic_ncols=True)

    def sync(step: int) -> None:
        nonlocal loss_sum, correct, seen, first_step, shown
        if not losses:
            return
        values = torch.cat([torch.stack(losses).float(), torch.stack(corrects).float()]).cpu()
        batch_losses, batch_correct = values[: len(losses)], values[len(losses) :]
        bad = (~torch.isfinite(batch_losses)).nonzero()
        if len(bad):
            i = int(bad[0])
            where_step = first_step + i
            gstep = global_step - len(losses) + i + 1
            if best_state is not None:
                model.load_state_dict(best_state)
            kept = f" The model holds the best weights (epoch {history.best_epoch})." if best_state is not None else ""
            raise NonFiniteLossError(
                f"The training loss became {float(batch_losses[i])} at epoch {epoch}, step {where_step} "
                f"(global step {gstep}); training stopped. Try a lower learning rate, check the data for NaN/inf, "
                f"or add normalisation.{kept}",
                epoch=epoch,
                step=where_step,
                global_step=gstep,
                history=history,
            )
        loss_sum += float((batch_losses * torch.tensor(sizes, dtype=torch.float32)).sum())
        correct += float(batch_correct.sum())
        seen += sum(sizes)
        losses.clear(), corrects.clear(), sizes.clear()
        first_step = step + 1
        if progress and time.perf_counter() - shown >= POSTFIX_EVERY_S:
            # no forced redraw: the bar shows the new numbers at its own next refresh
            shown = time.perf_counter()
            bar.set_postfix(
                loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}" if counts_acc else "n/a", refresh=False
            )
        if tracker is not None:
            tracker.log({"train/loss_running": loss_sum / seen}, step=global_step)

    step = 0
    try:
        for step, (x, y) in enumerate(bar, start=1):
            x, y = mover(x), mover(y)
            with _autocast(device, amp):
                out = model(x)
                loss = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recorder is not None:
                recorder.record(global_step)
            opt.step()
            if batch_sched is not None:
                batch_sched.step()
            global_step += 1
            if counts_acc is None:
                counts_acc = _counts_correct(out, y)
            losses.append(loss.detach())
            corrects.append((out.detach().argmax(dim=1) == y).sum() if counts_acc else loss.new_zeros(()))
            sizes.append(y.shape[0])
            if step % SYNC_EVERY == 0:
                sync(step)
        sync(step)
    finally:
        bar.close()
    if seen == 0:
        raise ValueError(f"The training loader yielded no batches in epoch {epoch}.")
    return loss_sum / seen, (correct / seen if counts_acc else math.nan), global_step


def _log_epoch(tracker, row: Mapping[str, float], recorder, global_step: int) -> None:
    metrics = {
        "epoch": row["epoch"],
        "train/loss": row["train_loss"],
        "train/acc": row["train_acc"],
        "val/loss": row["val_loss"],
        "val/acc": row["val_acc"],
        "lr": row["lr"],
        "epoch_time_s": row["time_s"],
    }
    latest = getattr(recorder, "latest", None)
    if callable(latest):  # GradientRecorder: {"weight": {layer: norm}, "bias": {...}, "dead_relu": {...}}
        _flat_numbers("gradflow", latest(), metrics)
    tracker.log(metrics, step=global_step)


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------
def plot_histories(
    histories: Mapping[str, History],
    metrics: Iterable[str] = ("train_loss", "val_acc"),
    *,
    title: str | None = None,
    logy: Iterable[str] = (),
):
    """Curves of several runs side by side, one panel per metric (x = epoch).

    Returns ``(fig, data)`` with ``data[metric][label]`` = the list of values drawn.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metrics, logy = list(metrics), set(logy)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.3), squeeze=False)
    data: dict[str, dict[str, list[float]]] = {m: {} for m in metrics}
    for ax, metric in zip(axes[0], metrics):
        for label, hist in histories.items():
            values = hist[metric]
            data[metric][label] = values
            ax.plot(hist["epoch"], values, marker="o", ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric.replace("_", " "))
        if metric in logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, data


__all__ = [
    "fit",
    "evaluate",
    "History",
    "Evaluation",
    "NonFiniteLossError",
    "CheckpointMismatchError",
    "build_optimizer",
    "build_scheduler",
    "load_checkpoint",
    "load_state_checked",
    "atomic_save",
    "save_backbone",
    "load_backbone",
    "plot_histories",
    "OPTIMIZERS",
    "SCHEDULERS",
]
