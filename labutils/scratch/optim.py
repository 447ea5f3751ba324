"""Optimizers for from-scratch models: SGD (with momentum / Nesterov), RMSprop and Adam in NumPy.

Each optimizer holds a list of parameter arrays and updates them **in place**; ``step(grads)``
takes the gradients as a list aligned with the parameters (``model.parameters()`` and
``model.gradients()`` give such lists). The update rules are exactly those of ``torch.optim``
(default options: no dampening, non-centred RMSprop, Adam without AMSGrad), so the same
hyperparameters and gradients give the same trajectory; the tests check this step by step.

Weight decay is classic L2 regularisation, added to the gradient before the update
(``g <- g + weight_decay * p``), as in ``torch.optim``; it is *not* AdamW's decoupled decay.

``optimizer.lr`` may be changed between steps; learning-rate schedules do exactly that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam"]


def _check_nonnegative(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return value


def _check_unit_interval(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}.")
    return value


class Optimizer:
    """Base class: keeps the parameter list, validates gradients, counts steps.

    Subclasses implement ``_update(i, param, grad)`` for one parameter array, where ``grad``
    already includes the weight-decay term.
    """

    def __init__(self, params: Sequence[np.ndarray], lr: float, weight_decay: float = 0.0):
        params = list(params)
        if not params:
            raise ValueError("The optimizer got an empty parameter list: pass model.parameters().")
        for i, p in enumerate(params):
            if not isinstance(p, np.ndarray):
                raise ValueError(
                    f"Parameter {i} is a {type(p).__name__}, but only NumPy arrays can be updated in place."
                )
            if not np.issubdtype(p.dtype, np.floating):
                raise ValueError(f"Parameter {i} has dtype {p.dtype}; only floating-point arrays can be optimized.")
        self.params = params
        self.lr = lr
        self.weight_decay = _check_nonnegative("weight_decay", weight_decay)
        self.steps = 0

    @property
    def lr(self) -> float:
        """The learning rate used by the next ``step``; schedules assign to it."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _check_nonnegative("lr", value)

    def _check_grads(self, grads: Sequence[np.ndarray]) -> list[np.ndarray]:
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(
                f"step() got {len(grads)} gradients for {len(self.params)} parameters: "
                "pass a list aligned with the parameter list (model.gradients())."
            )
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g is None or np.shape(g) != p.shape:
                shape = None if g is None else np.shape(g)
                raise ValueError(f"Gradient {i} has shape {shape}, but parameter {i} has shape {p.shape}.")
        return grads

    def step(self, grads: Sequence[np.ndarray]) -> None:
        """Update every parameter in place from its gradient (a list aligned with ``params``)."""
        grads = self._check_grads(grads)
        self.steps += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            g = np.asarray(g, dtype=p.dtype)
            if self.weight_decay != 0.0:
                g = g + self.weight_decay * p
            self._update(i, p, g)

    def _update(self, i: int, param: np.ndarray, grad: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._hyperparameters().items())
        return f"{type(self).__name__}({fields})"

    def _hyperparameters(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay}


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

    With ``g = grad + weight_decay * p``:

    * plain:     ``p <- p - lr * g``
    * momentum:  ``b <- momentum * b + g`` (``b = g`` on the first step), ``p <- p - lr * b``
    * Nesterov:  same ``b``, then ``p <- p - lr * (g + momentum * b)``
    """

    def __init__(
        self,
        params: Sequence[np.ndarray],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        super().__init__(params, lr, weight_decay)
        self.momentum = _check_unit_interval("momentum", momentum)
        if nesterov and self.momentum == 0.0:
            raise ValueError("Nesterov momentum needs momentum > 0, got momentum=0.0.")
        self.nesterov = bool(nesterov)
        self.velocity: list[np.ndarray | None] = [None] * len(self.params)

    def _update(self, i: int, param: np.ndarray, grad: np.ndarray) -> None:
        if self.momentum != 0.0:
            buf = self.velocity[i]
            if buf is None:  # torch starts the buffer at the first gradient, not at zero
                buf = self.velocity[i] = grad.copy()
            else:
                buf *= self.momentum
                buf += grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        param -= self.lr * grad

    def _hyperparameters(self) -> dict:
        return {**super()._hyperparameters(), "momentum": self.momentum, "nesterov": self.nesterov}


class RMSprop(Optimizer):
    r"""RMSprop: divide the step by a running root-mean-square of the gradients.

    ``v <- alpha * v + (1 - alpha) * g**2``, ``p <- p - lr * g / (sqrt(v) + eps)``
    (``eps`` outside the square root, as in ``torch.optim.RMSprop``).
    """

    def __init__(
        self,
        params: Sequence[np.ndarray],
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr, weight_decay)
        self.alpha = _check_unit_interval("alpha", alpha)
        self.eps = _check_nonnegative("eps", eps)
        self.square_avg = [np.zeros_like(p) for p in self.params]

    def _update(self, i: int, param: np.ndarray, grad: np.ndarray) -> None:
        v = self.square_avg[i]
        v *= self.alpha
        v += (1.0 - self.alpha) * grad * grad
        denom = np.sqrt(v)
        denom += self.eps
        param -= self.lr * (grad / denom)

    def _hyperparameters(self) -> dict:
        return {**super()._hyperparameters(), "alpha": self.alpha, "eps": self.eps}


class Adam(Optimizer):
    r"""Adam: momentum on the gradient plus RMSprop scaling, both bias-corrected.

    At step ``t``: ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g**2``,
    ``p <- p - lr/(1-b1**t) * m / (sqrt(v)/sqrt(1-b2**t) + eps)``
    (the form used by ``torch.optim.Adam``: ``eps`` is added after the bias correction of ``v``).
    """

    def __init__(
        self,
        params: Sequence[np.ndarray],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr, weight_decay)
        if len(tuple(betas)) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}.")
        self.betas = (_check_unit_interval("betas[0]", betas[0]), _check_unit_interval("betas[1]", betas[1]))
        self.eps = _check_nonnegative("eps", eps)
        self.exp_avg = [np.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [np.zeros_like(p) for p in self.params]

    def _update(self, i: int, param: np.ndarray, grad: np.ndarray) -> None:
        beta1, beta2 = self.betas
        m, v = self.exp_avg[i], self.exp_avg_sq[i]
        m *= beta1
        m += (1.0 - beta1) * grad
        v *= beta2
        v += (1.0 - beta2) * grad * grad
        t = self.steps
        step_size = self.lr / (1.0 - beta1**t)
        # math.sqrt keeps the scalar a Python float: a NumPy float64 scalar would upcast float32 arrays
        denom = np.sqrt(v)
        denom /= math.sqrt(1.0 - beta2**t)
        denom += self.eps
        param -= step_size * (m / denom)

    def _hyperparameters(self) -> dict:
        return {**super()._hyperparameters(), "betas": self.betas, "eps": self.eps}
