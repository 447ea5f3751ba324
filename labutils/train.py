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
are read back every ``SYNC_EVERY`` steps (for the non-finite-loss check, the progress bar, whose
numbers change at most every ``POSTFIX_EVERY_S`` seconds, and the tracker's running loss, logged at
most every ``LOG_EVERY_S`` seconds within an epoch) and at the end of the epoch, never after every step.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from labutils.plots import confusion_matrix, plot_histories
from labutils.results import to_jsonable
from labutils.util import atomic_write, atomic_write_json, check_int, state_mismatch

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("plateau", "step", "cosine", "onecycle")
SYNC_EVERY = 50  # steps between device -> host reads of the running loss/accuracy
POSTFIX_EVERY_S = 0.5  # least seconds between progress-bar loss/accuracy updates
LOG_EVERY_S = 10.0  # least seconds between the tracker's running-loss points within an epoch
DIVERGENCE_FACTOR = 1e3  # a batch loss above this many times the first one ...
DIVERGENCE_FLOOR = 100.0  # ... and above this value means the run diverged (see LossGuard)
CHECKPOINT_FORMAT = 2  # 2: one schema for last.pt and best.pt, with the architecture and module structure
LAST, BEST = "last.pt", "best.pt"


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
    """``torch.save`` through :func:`labutils.util.atomic_write`: a crash or an interrupt while writing
    leaves the previous file intact, and temporaries of killed writers are removed."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def module_structure(model: nn.Module) -> list[str]:
    """The class name of every module, in ``model.modules()`` order: a cheap fingerprint that tells
    architectures apart whose parameters have the same names and shapes (a plain and a residual MLP).

    A module class may name itself by a ``structure_name`` attribute: a frozen batch norm
    (:mod:`labutils.transfer`) is still a batch norm, so freezing a stage does not change the architecture.
    """
    return [getattr(type(m), "structure_name", type(m).__name__) for m in model.modules()]


def check_architecture(
    ckpt: Mapping[str, Any], model: nn.Module, architecture: Mapping[str, Any] | None, *, source: str
) -> None:
    """Refuse a checkpoint saved from another architecture: one :class:`CheckpointMismatchError`.

    Compared in turn: the ``architecture`` descriptions (when the run gives one or the checkpoint holds
    one), the model's class name, the names and shapes of the weights, and the :func:`module_structure`
    fingerprint.
    """
    saved_arch = ckpt.get("architecture")
    arch = None if architecture is None else to_jsonable(dict(architecture))
    if (saved_arch is not None or arch is not None) and saved_arch != arch:
        raise CheckpointMismatchError(
            f"{source} was saved from the architecture {_describe(saved_arch)}, but this run builds "
            f"{_describe(arch)}; build the same model, or start afresh (resume=False or a new checkpoint_dir)."
        )
    saved_class, saved_structure = ckpt.get("model_class"), ckpt.get("structure")
    if saved_class is not None and saved_class != type(model).__name__:
        raise CheckpointMismatchError(
            f"{source} was saved from a {saved_class}, not from this {type(model).__name__}; build the same "
            "model, or start afresh (resume=False or a new checkpoint_dir)."
        )
    if isinstance(ckpt.get("model"), Mapping):  # names and shapes first: the most telling difference
        _check_state(model, ckpt["model"], source=source, saved_class=saved_class)
    structure = module_structure(model)
    if saved_structure is not None and list(saved_structure) != structure:
        i = next((i for i, (a, b) in enumerate(zip(saved_structure, structure)) if a != b), None)
        i = min(len(saved_structure), len(structure)) if i is None else i
        saved_at = saved_structure[i] if i < len(saved_structure) else "nothing"
        now_at = structure[i] if i < len(structure) else "nothing"
        raise CheckpointMismatchError(
            f"{source} was saved from a {saved_class} built from other modules than this one (module {i} is "
            f"{saved_at} there, {now_at} here): e.g. a plain and a residual network with the same weight "
            "shapes; build the same model, or start afresh (resume=False or a new checkpoint_dir)."
        )


def _describe(architecture: Mapping[str, Any] | None) -> str:
    return "(not recorded)" if architecture is None else json.dumps(architecture, sort_keys=True)


def save_training_state(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    epoch: int,
    val_acc: float | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
    architecture: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint (the one schema of ``last.pt`` and ``best.pt``) atomically; returns the path.

    Always: ``format``, ``model_class``, ``structure`` (:func:`module_structure`), ``architecture``
    (the caller's JSON-able description, or None), ``model`` (``weights``, default the model's own
    state), ``epoch`` and ``val_acc``. ``training`` adds what a resumed run needs (``last.pt`` only):
    optimizer, scheduler, their names, planned epochs, global step, early-stopping state, the
    history, the loss at the first step and every random-number-generator state.
    """
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "model_class": type(model).__name__,
        "structure": module_structure(model),
        "architecture": None if architecture is None else to_jsonable(dict(architecture)),
        "model": model.state_dict() if weights is None else weights,
        "epoch": epoch,
        "val_acc": val_acc,
        "training": None if training is None else dict(training),
    }
    return atomic_save(ckpt, path)


def load_training_state(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    epochs: int,
    loader,
    architecture: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Restore a ``last.pt`` written by :func:`fit`: weights, optimizer, scheduler and RNG states.

    Refuses (``CheckpointMismatchError``) another architecture, optimizer, scheduler, or a schedule
    planned for another number of epochs. Returns the checkpoint's ``training`` dict.
    """
    path = Path(path)
    ckpt = load_checkpoint(path, model, architecture=architecture)  # on CPU: RNG states must stay CPU tensors
    state = ckpt.get("training")
    if state is None:
        raise CheckpointMismatchError(f"{path} is not a training checkpoint (last.pt) written by labutils.train.fit.")
    opt_name, sched_name = type(optimizer).__name__, _scheduler_name(scheduler)
    if state["optimizer_name"] != opt_name or state["scheduler_name"] != sched_name:
        raise CheckpointMismatchError(
            f"{path} was written by a run with optimizer {state['optimizer_name']} and scheduler "
            f"{state['scheduler_name']}, but this run uses {opt_name} and {sched_name}; use the same set-up "
            "to resume, or start afresh (resume=False or a new checkpoint_dir)."
        )
    if sched_name in ("CosineAnnealingLR", "OneCycleLR") and state["epochs"] != epochs:
        raise CheckpointMismatchError(
            f"{path} was written by a run planned for {state['epochs']} epochs with the {sched_name} schedule, "
            f"whose shape depends on that number; resume with epochs={state['epochs']} or start afresh."
        )
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"], loader)
    return state


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    architecture: Mapping[str, Any] | None = None,
    map_location="cpu",
) -> dict:
    """Read a checkpoint written by :func:`fit` with ``weights_only=True``; returns the checkpoint dict.

    With ``model``, the checkpoint is checked against it (:func:`check_architecture`, then names and
    shapes of the weights: one :class:`CheckpointMismatchError` naming the first differences) and its
    weights are loaded into it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"{path} is not a checkpoint of format {CHECKPOINT_FORMAT} written by labutils.train.fit (an older "
            "version or another program wrote it); start afresh (resume=False or a new checkpoint_dir)."
        )
    if model is not None:
        check_architecture(ckpt, model, architecture, source=str(path))
        model.load_state_dict(ckpt["model"])
    return ckpt


def load_state_checked(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str = "the checkpoint",
    saved_class: str | None = None,
) -> None:
    """``model.load_state_dict(state)`` with one clear error when the names or shapes differ."""
    _check_state(model, state, source=source, saved_class=saved_class)
    model.load_state_dict(state)


def _check_state(model: nn.Module, state: Mapping[str, Any], *, source: str, saved_class: str | None) -> None:
    problem = state_mismatch({k: tuple(v.shape) for k, v in model.state_dict().items()}, state)
    if problem:
        origin = f" (saved from a {saved_class})" if saved_class else ""
        raise CheckpointMismatchError(
            f"{source}{origin} does not match this {type(model).__name__}: {problem}. It was saved from "
            "a different architecture, depth or width; build the same model, or start afresh (resume=False or a "
            "new checkpoint_dir)."
        )


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
    atomic_write_json(path.with_suffix(".json"), meta)
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
        self.on_cpu = device.type == "cpu" and not channels_last  # nothing to do for CPU batches

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.on_cpu and x.device.type == "cpu":  # already there: no call into torch
            return x
        if self.channels_last and x.ndim == 4:
            return x.to(self.device, non_blocking=self.non_blocking, memory_format=torch.channels_last)
        return x.to(self.device, non_blocking=self.non_blocking)


def _autocast(device: torch.device, amp: bool):
    """bf16 autocast when asked for (default on CUDA); no context at all otherwise (not every device has one)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()


def _counts_correct(out: torch.Tensor, y: torch.Tensor) -> bool:
    return out.ndim == 2 and y.ndim == 1 and not y.is_floating_point()


def _eval_pass(model, loader, *, loss_fn, device, amp, full: bool):
    """One pass without gradients; returns (loss, top1, topk, num_classes, preds, targets) (lists empty unless full).

    Losses and correct predictions are counted as in training (:class:`_RunningMetrics`, read every ``SYNC_EVERY``
    batches): no reduction a batch beyond the loss, unless ``full`` (top-5 and predictions, for :func:`evaluate`)."""
    mover = _Mover(device, channels_last=device.type == "cuda" and _has_conv(model))
    was_training = model.training
    model.eval()
    metrics = _RunningMetrics()
    correctk = torch.zeros((), device=device, dtype=torch.int64)
    preds, targets = [], []
    try:
        with torch.inference_mode():
            for x, y in loader:
                x, y = mover(x), mover(y)
                with _autocast(device, amp):
                    out = model(x)
                out = out.float()
                metrics.add(loss_fn(out, y), out, y)
                if full and metrics.counts_acc:
                    k = min(5, out.shape[1])
                    correctk += (out.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum()
                    preds.append(out.argmax(dim=1).cpu())
                    targets.append(y.cpu())
                if len(metrics.losses) >= SYNC_EVERY:
                    metrics.read_back()
            metrics.read_back()
    finally:
        model.train(was_training)
    if metrics.seen == 0:
        raise ValueError("The evaluation loader yielded no samples.")
    num_classes = out.shape[1] if metrics.counts_acc else None
    topk = correctk.item() / metrics.seen if metrics.counts_acc else math.nan
    return metrics.mean_loss, metrics.accuracy, topk, num_classes, preds, targets


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
    loss, top1, top5, k, preds, targets = _eval_pass(
        model, loader, loss_fn=loss_fn or nn.functional.cross_entropy, device=device, amp=amp, full=True
    )
    if k is None:
        raise ValueError("evaluate() needs class scores of shape (N, K) and integer labels of shape (N,).")
    preds_np = torch.cat(preds).numpy().astype(np.int64)
    targets_np = torch.cat(targets).numpy().astype(np.int64)
    confusion = confusion_matrix(targets_np, preds_np, k)
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


# --------------------------------------------------------------------------------------------
# Early stopping and the loss guard
# --------------------------------------------------------------------------------------------
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
            self.best_state = _cpu_state(model)
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
        # the best weights are the model's own when the best epoch is the last one: not stored twice
        best = None if self.best_epoch == epoch else self.best_state
        return {"best_acc": self.best_acc, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs, "best": best}

    def load_state_dict(self, state: Mapping[str, Any], model: nn.Module) -> None:
        self.best_acc, self.best_epoch, self.bad_epochs = state["best_acc"], state["best_epoch"], state["bad_epochs"]
        self.best_state = state["best"] if state["best"] is not None else _cpu_state(model)


class LossGuard:
    """Stops training when the loss is NaN/inf or has diverged, naming the epoch and step.

    Diverged means: a batch's training loss is above both ``DIVERGENCE_FACTOR`` (1000) times the loss of
    the run's first batch and ``DIVERGENCE_FLOOR`` (100). Normal training, however noisy, stays far
    below: a cross-entropy starts near ``ln K`` (2.3 for 10 classes) and a loss of 2300 means logits
    thousands apart on the true class; the floor keeps a run that starts near 0 (a fine-tuned model)
    from stopping at a loss that is merely poor. Checked on the host at every read-back, so it costs
    nothing per step. ``initial_loss`` is saved in ``last.pt`` so a resumed run uses the same limit.
    """

    def __init__(self, initial_loss: float | None = None):
        self.initial_loss = initial_loss

    @property
    def limit(self) -> float:
        if self.initial_loss is None:
            return math.inf
        return max(DIVERGENCE_FACTOR * abs(self.initial_loss), DIVERGENCE_FLOOR)

    def check(self, losses, *, epoch: int, first_step: int, first_global_step: int) -> None:
        """``losses``: host losses (floats, or a 1-D tensor) of consecutive steps, the first being ``first_step``
        of ``epoch``."""
        losses = losses.tolist() if isinstance(losses, torch.Tensor) else list(losses)
        if self.initial_loss is None and losses and math.isfinite(losses[0]):
            self.initial_loss = losses[0]
        limit = self.limit
        i = next((i for i, v in enumerate(losses) if not math.isfinite(v) or v > limit), None)
        if i is None:
            return
        value, step, global_step = losses[i], first_step + i, first_global_step + i
        where = f"at epoch {epoch}, step {step} (global step {global_step})"
        if math.isfinite(value):
            raise DivergedLossError(
                f"The training loss exploded to {value:.3g} {where}, above {DIVERGENCE_FACTOR:g} times its first "
                f"value {self.initial_loss:.3g}; training stopped. Try a learning rate 10-100 times lower, "
                "gradient clipping, or normalisation layers.",
                epoch=epoch,
                step=step,
                global_step=global_step,
            )
        raise NonFiniteLossError(
            f"The training loss became {value} {where}; training stopped. Try a lower learning rate, check the "
            "data for NaN/inf, or add normalisation.",
            epoch=epoch,
            step=step,
            global_step=global_step,
        )


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
class _RunningMetrics:
    """Loss and correct predictions of one epoch. :meth:`add` only keeps references to a batch's loss, class scores
    and labels; :meth:`read_back` reduces the batches added since the last read in a few operations and copies the
    result to the host in one transfer.

    Nothing is computed per batch because in a training loop each small operation costs 10-30 µs on the CPU (its
    code and data are out of the caches after the backward pass), against a few µs for the same operations on
    ``SYNC_EVERY`` batches at once. The losses and scores are kept detached, so that each step's autograd graph
    goes when the step ends, as in a plain loop (kept with their graphs, the nodes of ``SYNC_EVERY`` graphs were
    freed at once in the read: ~2 ms a read on the depth-32 MLP). Class scores up to ``KEEP_SCORES`` numbers a
    batch are kept whole, larger ones are reduced to their ``argmax`` at once, so that at most ``SYNC_EVERY`` small
    batches' scores wait. The same bookkeeping counts the validation pass after each epoch.
    """

    KEEP_SCORES = 1 << 16

    def __init__(self):
        self.losses: list[torch.Tensor] = []
        self.scores: list[torch.Tensor] = []  # (N, K) class scores, or (N,) argmax if large (see keep_scores)
        self.targets: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.loss_sum, self.correct, self.seen, self.steps_read = 0.0, 0.0, 0, 0
        self.counts_acc: bool | None = None  # (N, K) scores and (N,) integer labels: accuracy makes sense
        self.keep_scores = True  # small class scores are kept whole until the read (decided on the first batch)
        self.shown_at = -math.inf  # when the progress bar's numbers were last updated (perf_counter)
        self.logged_at = time.perf_counter()  # when the running loss was last sent to the tracker

    def add(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        if self.counts_acc is None:
            self.counts_acc = _counts_correct(out, y)
            self.keep_scores = out.numel() <= self.KEEP_SCORES
        self.losses.append(loss.detach())  # (not the graph's nodes: they are freed now, as in a plain loop)
        if self.counts_acc:
            self.scores.append(out.detach() if self.keep_scores else out.argmax(dim=1))
            self.targets.append(y)
        self.sizes.append(y.shape[0])

    def read_back(self) -> tuple[list[float], int]:
        """``(host losses of the batches since the last read, epoch step of the first)``: one transfer, and the
        sums on the host in Python (each operation on a tensor would cost more than the arithmetic)."""
        n, first_step = len(self.losses), self.steps_read + 1
        if not n:
            return [], first_step
        with torch.no_grad():
            values = torch.stack(self.losses).float()
            if self.counts_acc:  # the correct predictions of all these batches, counted at once
                predictions = torch.cat(self.scores)
                if self.keep_scores:
                    predictions = predictions.argmax(dim=1)
                correct = (predictions == torch.cat(self.targets)).sum()
                values = torch.cat([values, correct.float().reshape(1)])  # (float32: exact counts below 2^24)
            values = values.tolist()
        losses = values[:n]
        self.loss_sum += math.fsum(loss * size for loss, size in zip(losses, self.sizes))
        self.correct += sum(values[n:])
        self.seen += sum(self.sizes)
        self.steps_read += n
        self.losses.clear(), self.scores.clear(), self.targets.clear(), self.sizes.clear()
        return losses, first_step

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.seen

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen if self.counts_acc else math.nan


class TrainingBars:
    """The two progress bars of training, epochs and the batches of the current epoch, made once and reused.

    :func:`fit` makes one for its run; :func:`labutils.experiment.run_all` makes one for all its runs, so a
    lab that trains fifty configurations shows two bars that restart rather than a hundred that come and go.
    In a notebook every new bar is about a dozen widgets; a cell that makes thousands of them floods the
    kernel's message channel (messages beyond its buffer are dropped) and bloats the saved notebook.
    ``enabled=False`` shows nothing. Use as a context manager, or call :meth:`close` when done.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = bool(enabled)
        self._epochs = None
        self._steps = None

    def run(self, epochs: int, done: int = 0):
        """The epochs bar, at ``done`` of ``epochs`` (``None`` when disabled)."""
        if not self.enabled:
            return None
        if self._epochs is None:
            from tqdm.auto import tqdm

            self._epochs = tqdm(total=epochs, initial=done, desc="epochs", unit="ep", dynamic_ncols=True)
        else:
            self._epochs.reset(total=epochs)
            self._epochs.set_postfix_str("", refresh=False)
            self._epochs.n = self._epochs.initial = done  # (the rate counts from here)
            self._epochs.refresh()
        return self._epochs

    def epoch(self, epoch: int, steps: int | None):
        """The bar of one epoch's ``steps`` batches (``None``: unknown), at zero (``None`` when disabled)."""
        if not self.enabled:
            return None
        if self._steps is None:
            from tqdm.auto import tqdm

            self._steps = tqdm(total=steps, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)
        else:
            self._steps.set_description_str(f"epoch {epoch}", refresh=False)
            self._steps.set_postfix_str("", refresh=False)
            self._steps.reset(total=steps)
        return self._steps

    def close(self) -> None:
        for bar in (self._steps, self._epochs):
            if bar is not None:
                bar.close()
        self._epochs = self._steps = None

    def __enter__(self) -> TrainingBars:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _bars(progress: bool | TrainingBars) -> tuple[TrainingBars, bool]:
    """``(bars to use, whether the caller made them and so closes them)``."""
    if isinstance(progress, TrainingBars):
        return progress, False
    return TrainingBars(progress), True


def _read_back(
    metrics: _RunningMetrics, guard: LossGuard, bar, tracker, *, epoch: int, global_step: int, last: bool = False
) -> None:
    """Every SYNC_EVERY steps and at the ``last`` step: check the new losses, then show the running numbers
    and, within an epoch at most every LOG_EVERY_S seconds, log the running loss (each log call costs wandb
    ~0.5 ms; the epoch's own row already has the loss of the whole epoch)."""
    losses, first_step = metrics.read_back()
    guard.check(losses, epoch=epoch, first_step=first_step, first_global_step=global_step - len(losses) + 1)
    if not len(losses):
        return
    if bar is not None and time.perf_counter() - metrics.shown_at >= POSTFIX_EVERY_S:
        metrics.shown_at = time.perf_counter()  # no forced redraw: the bar shows them at its next refresh
        acc = f"{metrics.accuracy:.3f}" if metrics.counts_acc else "n/a"
        bar.set_postfix(loss=f"{metrics.mean_loss:.4f}", acc=acc, refresh=False)
    if tracker is not None and not last and time.perf_counter() - metrics.logged_at >= LOG_EVERY_S:
        metrics.logged_at = time.perf_counter()
        tracker.log({"train/loss_running": metrics.mean_loss}, step=global_step)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    *,
    loss_fn: Callable,
    device: torch.device,
    epoch: int = 1,
    global_step: int = 0,
    scheduler=None,
    max_steps: int | None = None,
    amp: bool = False,
    recorder=None,
    tracker=None,
    progress: bool | TrainingBars = False,
    guard: LossGuard | None = None,
) -> tuple[float, float, int]:
    """One pass over ``loader``: forward, loss, backward, (record gradients), optimizer step, (scheduler step).

    ``scheduler`` is stepped after every batch (one-cycle); ``recorder.record(global_step)`` is called
    between backward and step. Losses and correct counts stay on the device and are read back every
    ``SYNC_EVERY`` steps and at the end, where ``guard`` raises on a NaN/inf or diverged loss.
    Returns ``(mean training loss per sample, training accuracy, global step after the epoch)``.
    ``progress``: show a bar (``True``), or use these :class:`TrainingBars`.
    """
    guard = guard if guard is not None else LossGuard()
    mover = _Mover(device, channels_last=device.type == "cuda" and _has_conv(model))
    steps = _steps_per_epoch(loader, max_steps)
    batches = loader if steps is None else itertools.islice(loader, steps)
    bars, own_bars = _bars(progress)
    bar = bars.epoch(epoch, steps)
    metrics = _RunningMetrics()
    autocast = _autocast(device, amp)  # one context, entered every step (made once: it is on the step's path)
    model.train()
    try:
        for step, (x, y) in enumerate(batches, start=1):
            x, y = mover(x), mover(y)
            optimizer.zero_grad(set_to_none=True)  # before the forward pass: the old gradients' memory is reused
            with autocast:
                out = model(x)
                loss = loss_fn(out, y)
            loss.backward()
            if recorder is not None:
                recorder.record(global_step)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            global_step += 1
            metrics.add(loss, out, y)
            if bar is not None:
                bar.update()
            if step % SYNC_EVERY == 0:
                _read_back(metrics, guard, bar, tracker, epoch=epoch, global_step=global_step, last=step == steps)
        _read_back(metrics, guard, bar, tracker, epoch=epoch, global_step=global_step, last=True)
    finally:
        if own_bars:
            bars.close()
    if metrics.seen == 0:
        raise ValueError(f"The training loader yielded no batches in epoch {epoch}.")
    return metrics.mean_loss, metrics.accuracy, global_step


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
    progress: bool | TrainingBars = True,
    max_steps_per_epoch: int | None = None,
    amp: bool | None = None,
    architecture: Mapping[str, Any] | None = None,
) -> History:
    """Train a classifier for ``epochs`` epochs on ``(x, y)`` batches and validate after each epoch.

    - ``optimizer``: ``"adam"``, ``"adamw"``, ``"sgd"`` (with ``momentum``, ``nesterov``), or a ready
      ``torch.optim.Optimizer``; ``lr``, ``weight_decay`` as usual.
    - ``scheduler``: None, ``"plateau"``, ``"step"``, ``"cosine"``, ``"onecycle"`` (see
      :func:`build_scheduler`); ``scheduler_kwargs`` override its defaults.
    - ``patience``: stop when validation accuracy has not improved for this many epochs and put the
      best weights back into ``model``. Without it the model keeps its final weights.
    - ``checkpoint_dir``: write ``last.pt`` each epoch and ``best.pt`` on improvement; with ``resume``
      an existing ``last.pt`` is continued exactly (same architecture, optimizer and scheduler required;
      for exact equality use loaders without persistent workers).
    - ``architecture``: a JSON-able description of the model (e.g. ``{"factory": "MLP", "kwargs": {...}}``),
      stored in the checkpoints; resuming with another description is refused. Without it the model's
      class name and module structure (:func:`module_structure`) are still compared.
    - ``grad_recorder``: e.g. ``labutils.gradflow.GradientRecorder(model)``; ``record(step)`` is called
      after every backward pass, before the optimizer step (``step`` = optimizer steps done so far).
    - ``tracker``: a ``labutils.tracking.Tracker``; gets loss, accuracy, learning rate, gradient norms
      (``gradflow/...`` from ``grad_recorder.latest()`` when it has one, once per epoch) and the best
      checkpoint as an artifact.
    - ``device``: default ``labutils.get_device()``. On CUDA: bf16 autocast (``amp``), channels-last
      convnets and non-blocking copies (use loaders with ``pin_memory=True`` for the copies to overlap).
    - ``loss_fn``: default cross-entropy (batch mean). ``max_steps_per_epoch`` caps batches per epoch.
    - ``progress``: show an epochs bar and a batches bar (``True``), nothing, or reuse these :class:`TrainingBars`.

    Returns a :class:`History`. A NaN/inf training loss raises :class:`NonFiniteLossError`, a diverged
    one (see :class:`LossGuard`) :class:`DivergedLossError`, both naming the epoch and step, with the
    best weights put back. An interrupt (Ctrl-C, Jupyter's stop button) ends training cleanly: the best
    weights are put back, checkpoints stay, and the history so far is returned with ``interrupted=True``.
    """
    from labutils import get_device

    check_int("epochs", epochs)
    check_int("patience", patience, allow_none=True)
    check_int("max_steps_per_epoch", max_steps_per_epoch, allow_none=True)
    device = torch.device(device) if device is not None else get_device()
    amp = device.type == "cuda" if amp is None else bool(amp)
    if any(t.device != device for t in itertools.chain(model.parameters(), model.buffers())):
        model.to(device)  # (a no-op .to still walks every module: milliseconds for a deep model)
    if device.type == "cuda" and _has_conv(model):
        model.to(memory_format=torch.channels_last)
    loss_fn = loss_fn or nn.functional.cross_entropy  # (the function: one Python module call fewer a step)
    opt = build_optimizer(model, optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov)
    sched = build_scheduler(
        opt,
        scheduler,
        epochs=epochs,
        steps_per_epoch=_steps_per_epoch(train_loader, max_steps_per_epoch),
        **dict(scheduler_kwargs or {}),
    )
    per_batch = _is_per_batch(sched)
    history, stopper, guard, global_step = History(), EarlyStopping(patience), LossGuard(), 0
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None and resume and (ckpt_dir / LAST).exists():
        state = load_training_state(
            ckpt_dir / LAST, model, opt, sched, epochs=epochs, loader=train_loader, architecture=architecture
        )
        history = History.from_dict(state["history"])
        history.resumed_from, history.interrupted = len(history), False
        stopper.load_state_dict(state["early_stopping"], model)
        guard.initial_loss, global_step = state["initial_loss"], state["global_step"]
        done = "nothing left to train" if len(history) >= epochs else f"resuming for epochs {len(history) + 1}-{epochs}"
        print(f"Loaded {ckpt_dir / LAST} after epoch {len(history)} of {epochs}: {done}.")

    bars, own_bars = _bars(progress)
    epoch_bar = bars.run(epochs, done=len(history))
    try:
        for epoch in range(len(history) + 1, epochs + 1):
            if stopper.should_stop:  # a resumed run that had already stopped early
                history.stopped_early = True
                break
            lr_now, t0 = opt.param_groups[0]["lr"], time.perf_counter()
            train_loss, train_acc, global_step = train_one_epoch(
                model,
                train_loader,
                opt,
                loss_fn=loss_fn,
                device=device,
                epoch=epoch,
                global_step=global_step,
                scheduler=sched if per_batch else None,
                max_steps=max_steps_per_epoch,
                amp=amp,
                recorder=grad_recorder,
                tracker=tracker,
                progress=bars,
                guard=guard,
            )
            val_loss, val_acc, *_ = _eval_pass(model, val_loader, loss_fn=loss_fn, device=device, amp=amp, full=False)
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss}
            row.update(val_acc=val_acc, lr=lr_now, time_s=time.perf_counter() - t0)
            history.rows.append(row)
            if stopper.update(epoch, val_acc, model):
                history.best_epoch, history.best_val_acc = epoch, val_acc
                if ckpt_dir is not None:
                    best = stopper.best_state
                    path = save_training_state(
                        ckpt_dir / BEST, model, epoch=epoch, val_acc=val_acc, weights=best, architecture=architecture
                    )
                    history.checkpoint = str(path)
            if sched is not None and not per_batch:
                sched.step(val_acc) if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) else sched.step()
            if ckpt_dir is not None:
                training = {
                    "optimizer": opt.state_dict(),
                    "optimizer_name": type(opt).__name__,
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "scheduler_name": _scheduler_name(sched),
                    "epochs": epochs,
                    "global_step": global_step,
                    "early_stopping": stopper.state_dict(epoch),
                    "initial_loss": guard.initial_loss,
                    "history": history.as_dict(),
                    "rng": _rng_state(train_loader),
                }
                save_training_state(
                    ckpt_dir / LAST, model, epoch=epoch, val_acc=val_acc, architecture=architecture, training=training
                )
            if tracker is not None:
                _log_epoch(tracker, row, grad_recorder, global_step)
            if epoch_bar is not None:
                epoch_bar.set_postfix(
                    loss=f"{train_loss:.3f}",
                    acc=f"{train_acc:.3f}",
                    val_acc=f"{val_acc:.3f}",
                    lr=f"{lr_now:.2g}",
                    refresh=False,
                )
                epoch_bar.update(1)
            if stopper.should_stop:
                history.stopped_early = True
                break
    except NonFiniteLossError as err:
        stopper.restore_best(model)
        raise err.with_history(history) from None
    except KeyboardInterrupt:
        history.interrupted = True
        kept = "the best weights are back in the model." if stopper.best_state is not None else "no epoch finished."
        print(f"Interrupted after {len(history)} complete epoch(s); {kept}")
    finally:
        if own_bars:
            bars.close()
    if history.stopped_early or history.interrupted:
        stopper.restore_best(model)
    if tracker is not None:
        _finish_tracking(tracker, history, ckpt_dir)
    return history


def _finish_tracking(tracker, history: History, ckpt_dir: Path | None) -> None:
    tracker.summary(
        best_val_acc=history.best_val_acc,
        best_epoch=history.best_epoch,
        stopped_early=history.stopped_early,
        interrupted=history.interrupted,
    )
    if history.checkpoint is not None and Path(history.checkpoint).exists():
        tracker.log_artifact(history.checkpoint, name=_artifact_name(ckpt_dir), type="model")


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


__all__ = [
    "fit",
    "evaluate",
    "History",
    "Evaluation",
    "train_one_epoch",
    "EarlyStopping",
    "LossGuard",
    "NonFiniteLossError",
    "DivergedLossError",
    "CheckpointMismatchError",
    "save_training_state",
    "load_training_state",
    "check_architecture",
    "module_structure",
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
