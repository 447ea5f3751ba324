"""Learning-rate schedules for the from-scratch optimizers: t -> learning rate.

A schedule is a callable mapping a counter ``t`` (0, 1, 2, ...) to a learning rate. Its
``unit`` says what ``t`` counts: ``"epoch"`` (the trainer sets ``optimizer.lr = schedule(epoch)``
once at the start of every epoch) or ``"step"`` (``schedule(global_step)`` before every update).
The curves are those of ``torch.optim.lr_scheduler`` (closed forms of ``StepLR``,
``ExponentialLR``, ``CosineAnnealingLR`` and ``OneCycleLR``); the tests compare them value by value.

>>> sched = CosineAnnealing(0.1, t_max=10)
>>> [round(sched(t), 4) for t in (0, 5, 10)]
[0.1, 0.05, 0.0]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from labutils.util import check_choice, check_int, check_positive

__all__ = [
    "Schedule",
    "Constant",
    "StepDecay",
    "ExponentialDecay",
    "CosineAnnealing",
    "OneCycle",
    "SCHEDULES",
    "make_schedule",
    "plot_schedules",
]

UNITS = ("epoch", "step")


class Schedule:
    """Base class: ``schedule(t)`` is the learning rate at epoch/step ``t``; ``values(n)`` the first ``n``."""

    unit = "epoch"

    def __init__(self, unit: str | None = None):
        if unit is not None:
            self.unit = check_choice("schedule unit", unit, UNITS)

    def __call__(self, t: int) -> float:
        check_int(self.unit, t, 0)  # a schedule is evaluated at an integer epoch or step >= 0
        return float(self.lr_at(int(t)))

    def lr_at(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def values(self, n: int) -> np.ndarray:
        """The learning rates at ``t = 0 .. n-1`` as a float64 array."""
        return np.array([self(t) for t in range(check_int("n", n))])

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Constant(Schedule):
    """The same learning rate throughout (the baseline)."""

    def __init__(self, lr: float, unit: str | None = None):
        super().__init__(unit)
        self.lr = check_positive("lr", lr)

    def lr_at(self, t: int) -> float:
        return self.lr


class StepDecay(Schedule):
    r"""Multiply the rate by ``gamma`` every ``step_size`` epochs: ``lr * gamma ** (t // step_size)`` (StepLR)."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1, unit: str | None = None):
        super().__init__(unit)
        self.lr = check_positive("lr", lr)
        self.step_size = check_int("step_size", step_size)
        self.gamma = check_positive("gamma", gamma)

    def lr_at(self, t: int) -> float:
        return self.lr * self.gamma ** (t // self.step_size)


class ExponentialDecay(Schedule):
    r"""Multiply the rate by ``gamma`` every epoch: ``lr * gamma ** t`` (ExponentialLR)."""

    def __init__(self, lr: float, gamma: float, unit: str | None = None):
        super().__init__(unit)
        self.lr = check_positive("lr", lr)
        self.gamma = check_positive("gamma", gamma)

    def lr_at(self, t: int) -> float:
        return self.lr * self.gamma**t


class CosineAnnealing(Schedule):
    r"""Half a cosine from ``lr`` down to ``eta_min`` over ``t_max`` epochs (CosineAnnealingLR).

    :math:`\eta_t = \eta_{min} + \tfrac12(\eta_0 - \eta_{min})(1 + \cos(\pi t / T_{max}))`;
    past ``t_max`` the curve continues as torch's does (rising again, period ``2 t_max``).
    """

    def __init__(self, lr: float, t_max: int, eta_min: float = 0.0, unit: str | None = None):
        super().__init__(unit)
        self.lr = check_positive("lr", lr)
        self.t_max = check_int("t_max", t_max)
        self.eta_min = float(eta_min)
        if not 0.0 <= self.eta_min <= self.lr:
            raise ValueError(f"eta_min must lie in [0, lr={self.lr}], got {eta_min!r}.")

    def lr_at(self, t: int) -> float:
        return self.eta_min + (self.lr - self.eta_min) * (1 + math.cos(math.pi * t / self.t_max)) / 2


class OneCycle(Schedule):
    r"""The one-cycle policy (Smith & Topin): warm up to ``max_lr``, then anneal far below the start.

    Starts at ``max_lr / div_factor``, reaches ``max_lr`` after ``pct_start`` of ``total_steps``, then
    anneals to ``max_lr / (div_factor * final_div_factor)`` at step ``total_steps - 1``
    (``three_phase=True``: back down to the start, then to the minimum). Same curve as torch's
    ``OneCycleLR``, learning rate only (torch also cycles momentum by default). Counted in steps.
    """

    unit = "step"

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        unit: str | None = None,
    ):
        super().__init__(unit)
        self.max_lr = check_positive("max_lr", max_lr)
        self.total_steps = check_int("total_steps", total_steps)
        self.pct_start = float(pct_start)
        if not 0.0 <= self.pct_start <= 1.0:
            raise ValueError(f"pct_start must lie in [0, 1], got {pct_start!r}.")
        self.anneal_strategy = check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
        self.div_factor = check_positive("div_factor", div_factor)
        self.final_div_factor = check_positive("final_div_factor", final_div_factor)
        self.three_phase = bool(three_phase)
        self.initial_lr = self.max_lr / self.div_factor
        self.min_lr = self.initial_lr / self.final_div_factor
        warmup_end = self.pct_start * self.total_steps - 1
        # (end_step, start_lr, end_lr) per phase, with torch's step boundaries
        if self.three_phase:
            self._phases = [
                (warmup_end, self.initial_lr, self.max_lr),
                (2 * self.pct_start * self.total_steps - 2, self.max_lr, self.initial_lr),
                (self.total_steps - 1, self.initial_lr, self.min_lr),
            ]
        else:
            self._phases = [
                (warmup_end, self.initial_lr, self.max_lr),
                (self.total_steps - 1, self.max_lr, self.min_lr),
            ]

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def lr_at(self, t: int) -> float:
        if t > self.total_steps:
            raise ValueError(f"OneCycle was asked for step {t}, beyond its total_steps={self.total_steps}.")
        start_step = 0.0
        for i, (end_step, start_lr, end_lr) in enumerate(self._phases):
            if t <= end_step or i == len(self._phases) - 1:
                return self._anneal(start_lr, end_lr, (t - start_step) / (end_step - start_step))
            start_step = end_step
        raise AssertionError("unreachable")  # pragma: no cover


SCHEDULES = {
    "constant": Constant,
    "step": StepDecay,
    "exponential": ExponentialDecay,
    "cosine": CosineAnnealing,
    "one-cycle": OneCycle,
}


def make_schedule(name: str, **kwargs) -> Schedule:
    """Build a schedule by name: ``make_schedule("cosine", lr=0.1, t_max=12)``."""
    return SCHEDULES[check_choice("schedule", name, list(SCHEDULES))](**kwargs)


def plot_schedules(
    schedules: dict[str, Schedule], n: int, ax=None, log: bool = False
) -> tuple[Any, dict[str, np.ndarray]]:
    """Draw each schedule's learning rate over ``t = 0 .. n-1`` on one axis; returns ``(fig, {name: values})``."""
    import matplotlib.pyplot as plt

    if not schedules:
        raise ValueError("plot_schedules needs at least one schedule, got an empty dict.")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    curves = {name: sched.values(n) for name, sched in schedules.items()}
    for name, values in curves.items():
        ax.plot(np.arange(n), values, label=name, marker="." if n <= 60 else None)
    units = {s.unit for s in schedules.values()}
    ax.set_xlabel(units.pop() if len(units) == 1 else "epoch / step")
    ax.set_ylabel("learning rate")
    if log:
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax.figure, curves
