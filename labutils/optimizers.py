"""Optimizers and learning-rate schedules by name, for every PyTorch lab.

>>> opt = build_optimizer(model, "sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
>>> opt = build_optimizer([{"params": head, "lr": 1e-2}, {"params": body}], "adam", lr=1e-3)
>>> sched = build_scheduler(opt, "cosine", epochs=30)

:func:`labutils.train.fit` calls both; a recipe's ``lr_groups`` become parameter groups
(:func:`labutils.experiment.optimizer_for`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from labutils.util import check_positive

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("plateau", "step", "cosine", "onecycle")
DEFAULT_MOMENTUM = 0.9  # SGD's momentum unless told otherwise


def build_optimizer(
    params: nn.Module | Iterable,
    name: str | torch.optim.Optimizer = "adam",
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = DEFAULT_MOMENTUM,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """An optimizer by name: ``adam``, ``adamw`` or ``sgd`` (with ``momentum`` and ``nesterov``).

    ``params``: a model (its trainable parameters), an iterable of parameters, or parameter groups
    (dicts with ``"params"`` and options of their own, e.g. ``{"params": head, "lr": 1e-2}``; options a
    group leaves out come from the arguments). ``momentum`` and ``nesterov`` belong to SGD: a momentum
    other than the default or ``nesterov=True`` with Adam or AdamW is a ValueError, not a silent no-op.
    A ready ``torch.optim.Optimizer`` as ``name`` is returned as is.
    """
    if isinstance(name, torch.optim.Optimizer):
        if (lr, weight_decay, momentum, nesterov) != (1e-3, 0.0, DEFAULT_MOMENTUM, False):
            raise ValueError(
                f"lr/weight_decay/momentum/nesterov were given together with a ready "
                f"{type(name).__name__}: set them on that optimizer (or pass its name instead)."
            )
        return name
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ValueError(
            f"Unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)} (or pass a torch.optim.Optimizer)."
        )
    check_positive("lr", lr)
    name = name.lower()
    if name != "sgd" and (nesterov or momentum != DEFAULT_MOMENTUM):  # torch's Adam would silently ignore them
        given = "nesterov=True" if nesterov else f"momentum={momentum!r}"
        raise ValueError(f"{given} applies to optimizer='sgd' only, not {name!r} (Adam's betas do momentum's job).")
    if nesterov and momentum <= 0:
        raise ValueError(f"nesterov=True needs a momentum > 0, got momentum={momentum!r}.")
    groups = _parameter_groups(params)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, weight_decay=weight_decay)


def _parameter_groups(params: nn.Module | Iterable) -> list[dict[str, Any]]:
    """``params`` as a list of parameter groups (one for a model or a plain iterable), frozen parameters left out."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    params = list(params)
    groups = [dict(p) for p in params] if params and isinstance(params[0], Mapping) else [{"params": params}]
    for group in groups:
        group["params"] = [p for p in group["params"] if p.requires_grad]
    if not any(group["params"] for group in groups):
        raise ValueError("There are no trainable parameters to optimize (all have requires_grad=False).")
    return groups


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
    elif name == "step" and "step_size" in kwargs:
        cls, args = sched.StepLR, {"gamma": 0.1}
    elif name == "step":
        milestones = sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)})
        cls, args = sched.MultiStepLR, {"milestones": milestones, "gamma": 0.1}
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


__all__ = ["OPTIMIZERS", "SCHEDULERS", "DEFAULT_MOMENTUM", "build_optimizer", "build_scheduler"]
