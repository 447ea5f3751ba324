"""Checkpoints of :func:`labutils.train.fit` and backbones saved for later labs.

One schema for ``last.pt`` and ``best.pt`` (:func:`save_training_state`): the weights, the model's class
name, its module structure and the caller's architecture description, so that a checkpoint is never
loaded into another network without one clear :class:`CheckpointMismatchError`. ``last.pt`` also holds
what a resumed run needs to continue exactly: optimizer, scheduler, history, early-stopping state and
every random-number-generator state (Python, NumPy, torch, CUDA, the loader's shuffling).

Files are written atomically (temporary file + ``os.replace``: an interrupt while writing leaves the
previous file intact) and read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from labutils import distributed
from labutils.results import to_jsonable
from labutils.util import atomic_write, atomic_write_json, state_mismatch

CHECKPOINT_FORMAT = 2  # 2: one schema for last.pt and best.pt, with the architecture and module structure
LAST, BEST = "last.pt", "best.pt"
START_AFRESH = "build the same model, or start afresh (resume=False or a new checkpoint_dir)"


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model or the training set-up it is loaded into."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through a temporary file, so a crash never leaves half a file.

    The checkpoint is serialised in memory first and written with one plain file write, so a full disk is the
    operating system's "no space left" (:class:`~labutils.util.DiskFullError`, the previous file kept), not
    an error from deep inside torch's zip writer.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda fh: fh.write(buffer.getbuffer()))


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights and buffers on the CPU (unaffected by further training)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------
# Is this checkpoint from this architecture?
# --------------------------------------------------------------------------------------------
def module_structure(model: nn.Module) -> list[str]:
    """The class name of every module, in ``model.modules()`` order: a fingerprint that tells apart
    architectures whose parameters have the same names and shapes (a plain and a residual MLP).

    A module class may name itself by a ``structure_name`` attribute: a frozen batch norm
    (:mod:`labutils.transfer`) is still a batch norm, so freezing a stage does not change the architecture.
    """
    return [getattr(type(m), "structure_name", type(m).__name__) for m in model.modules()]


def check_architecture(
    ckpt: Mapping[str, Any], model: nn.Module, architecture: Mapping[str, Any] | None, *, source: str
) -> None:
    """Refuse a checkpoint saved from another architecture with one :class:`CheckpointMismatchError`.

    Compared in turn: the ``architecture`` descriptions (when the run gives one or the checkpoint holds
    one), the model's class name, the names and shapes of the weights, and :func:`module_structure`.
    """
    saved_arch = ckpt.get("architecture")
    arch = None if architecture is None else to_jsonable(dict(architecture))
    if saved_arch != arch:
        raise CheckpointMismatchError(
            f"{source} was saved from the architecture {_describe(saved_arch)}, but this run builds "
            f"{_describe(arch)}; {START_AFRESH}."
        )
    saved_class = ckpt.get("model_class")
    if saved_class is not None and saved_class != type(model).__name__:
        raise CheckpointMismatchError(
            f"{source} was saved from a {saved_class}, not from this {type(model).__name__}; {START_AFRESH}."
        )
    if isinstance(ckpt.get("model"), Mapping):  # names and shapes first: the most telling difference
        _check_state(model, ckpt["model"], source=source, saved_class=saved_class)
    saved, now = ckpt.get("structure"), module_structure(model)
    if saved is not None and list(saved) != now:
        i = next((i for i, (a, b) in enumerate(zip(saved, now)) if a != b), min(len(saved), len(now)))
        there = saved[i] if i < len(saved) else "nothing"
        here = now[i] if i < len(now) else "nothing"
        raise CheckpointMismatchError(
            f"{source} was saved from a {saved_class} built from other modules than this one (module {i} is "
            f"{there} there, {here} here): e.g. a plain and a residual network with the same weight shapes; "
            f"{START_AFRESH}."
        )


def _describe(architecture: Mapping[str, Any] | None) -> str:
    return "(not recorded)" if architecture is None else json.dumps(architecture, sort_keys=True)


def _check_state(model: nn.Module, state: Mapping[str, Any], *, source: str, saved_class: str | None) -> None:
    problem = state_mismatch({k: tuple(v.shape) for k, v in model.state_dict().items()}, state)
    if problem:
        origin = f" (saved from a {saved_class})" if saved_class else ""
        raise CheckpointMismatchError(
            f"{source}{origin} does not match this {type(model).__name__}: {problem}. It was saved from a "
            f"different architecture, depth or width; {START_AFRESH}."
        )


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


# --------------------------------------------------------------------------------------------
# last.pt and best.pt
# --------------------------------------------------------------------------------------------
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
    state), ``epoch`` and ``val_acc``. ``training`` is what a resumed run needs (``last.pt`` only; see
    :func:`labutils.train.fit`).
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


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    architecture: Mapping[str, Any] | None = None,
    map_location="cpu",
) -> dict:
    """Read a checkpoint written by :func:`labutils.train.fit` (``weights_only=True``); returns its dict.

    With ``model``, the checkpoint is checked against it (:func:`check_architecture`) and its weights
    are loaded into it.
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


def scheduler_name(scheduler) -> str | None:
    """The scheduler's class name (what ``last.pt`` records), or None without one."""
    return None if scheduler is None else type(scheduler).__name__


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
    """Restore a ``last.pt``: weights, optimizer, scheduler and random-number-generator states.

    Refuses (``CheckpointMismatchError``) another architecture, optimizer or scheduler, and a cosine or
    one-cycle schedule planned for another number of epochs. Returns the checkpoint's ``training`` dict.
    """
    path = Path(path)
    ckpt = load_checkpoint(path, model, architecture=architecture)  # on the CPU: RNG states must be CPU tensors
    state = ckpt.get("training")
    if state is None:
        raise CheckpointMismatchError(f"{path} is not a training checkpoint (last.pt) written by labutils.train.fit.")
    opt_name, sched_name = type(optimizer).__name__, scheduler_name(scheduler)
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
    set_rng_state(state["rng"], loader)
    return state


class TrainingCheckpoints:
    """The checkpoint folder of one :func:`labutils.train.fit` run: ``best.pt`` when validation accuracy
    improves, ``last.pt`` after every epoch, and resuming from ``last.pt``.

    Made once per run with what stays the same during it: the model, optimizer and scheduler, the number of
    epochs planned, the training loader (whose shuffling generator is saved) and the architecture description.
    """

    def __init__(self, folder, model, optimizer, scheduler, epochs: int, loader, architecture=None, recorder=None):
        self.folder = Path(folder)
        self.last, self.best = self.folder / LAST, self.folder / BEST
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.epochs, self.loader, self.architecture = epochs, loader, architecture
        self.recorder = recorder  # a GradientRecorder: its record so far is part of the run's state

    def save_best(self, stopper) -> Path:
        """``best.pt`` with the best weights an :class:`~labutils.train.EarlyStopping` holds (written by the main
        process alone under torchrun; every process gets its path)."""
        if not distributed.is_main():
            return self.best
        return save_training_state(
            self.best,
            self.model,
            epoch=stopper.best_epoch,
            val_acc=stopper.best_acc,
            weights=stopper.best_state,
            architecture=self.architecture,
        )

    def save_last(self, history, stopper, guard, global_step: int) -> Path:
        """``last.pt``: the model now and all a resumed run needs to continue exactly from here (the
        :class:`~labutils.train.History`, early-stopping state, the loss guard's reference, global step, and the
        gradient recorder's record so far). Under torchrun the main process writes it and the others wait until it is
        on disk, so that a run stopped at any moment resumes from the same epoch in every process."""
        epoch, val_acc = history[-1]["epoch"], history[-1]["val_acc"]
        training = {
            "optimizer": self.optimizer.state_dict(),
            "optimizer_name": type(self.optimizer).__name__,
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scheduler_name": scheduler_name(self.scheduler),
            "epochs": self.epochs,
            "global_step": global_step,
            "early_stopping": stopper.state_dict(epoch),
            "initial_loss": guard.initial_loss,
            "history": history.as_dict(),
            "rng": rng_state(self.loader),
            "gradients": None if self.recorder is None else self.recorder.state_dict(),
        }
        if distributed.is_main():
            save_training_state(
                self.last, self.model, epoch=epoch, val_acc=val_acc, architecture=self.architecture, training=training
            )
        distributed.barrier()
        return self.last

    def resume(self, stopper, guard) -> dict[str, Any]:
        """Load ``last.pt`` into the model, optimizer, scheduler, random-number generators, ``stopper`` and
        ``guard``; returns its training dict (``history``, ``global_step``, ...)."""
        state = load_training_state(
            self.last,
            self.model,
            self.optimizer,
            self.scheduler,
            epochs=self.epochs,
            loader=self.loader,
            architecture=self.architecture,
        )
        stopper.load_state_dict(state["early_stopping"], self.model)
        guard.initial_loss = state["initial_loss"]
        if self.recorder is not None and state.get("gradients") is not None:
            self.recorder.load_state_dict(state["gradients"])  # the record of the epochs before the interruption
        done = len(state["history"]["epochs"])
        left = "nothing left to train" if done >= self.epochs else f"resuming for epochs {done + 1}-{self.epochs}"
        if distributed.is_main():
            print(f"Loaded {self.last} after epoch {done} of {self.epochs}: {left}.")
        return state


# --------------------------------------------------------------------------------------------
# Random-number-generator states: a resumed run draws the same numbers as an uninterrupted one
# --------------------------------------------------------------------------------------------
def loader_generators(loader) -> list[torch.Generator]:
    """The ``torch.Generator`` objects a DataLoader draws its shuffling and worker seeds from (no duplicates)."""
    found: list[torch.Generator] = []
    sampler = getattr(loader, "sampler", None)
    batch_sampler_sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    for obj in (loader, sampler, batch_sampler_sampler):
        gen = getattr(obj, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def rng_state(loader) -> dict[str, Any]:
    """Every random-number-generator state a training epoch draws from, as tensors and plain numbers
    (what ``torch.load(weights_only=True)`` accepts)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": [g.get_state() for g in loader_generators(loader)],
    }


def set_rng_state(state: Mapping[str, Any], loader) -> None:
    """Put back the states :func:`rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generators = loader_generators(loader)
    if len(generators) == len(state["loader"]):
        for gen, saved in zip(generators, state["loader"]):
            gen.set_state(saved)


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
    ckpt = {
        "format": "labutils-backbone",
        "version": CHECKPOINT_FORMAT,
        "model_class": type(model).__name__,
        "model": cpu_state(model),
        "meta": meta,
    }
    path = atomic_save(ckpt, path)
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


__all__ = [
    "CHECKPOINT_FORMAT",
    "LAST",
    "BEST",
    "CheckpointMismatchError",
    "atomic_save",
    "cpu_state",
    "module_structure",
    "check_architecture",
    "load_state_checked",
    "save_training_state",
    "load_checkpoint",
    "load_training_state",
    "TrainingCheckpoints",
    "scheduler_name",
    "loader_generators",
    "rng_state",
    "set_rng_state",
    "save_backbone",
    "load_backbone",
]
