"""Gradient flow: per-layer gradient norms and dead ReLUs, recorded while a network trains.

A deep network stops learning when the gradient that reaches its first layers is many orders of magnitude
smaller (vanishing) or larger (exploding) than at its last layers. So, layer by layer, input side first, the
recorder measures the L2 norm of the loss gradient with respect to the weight, ``‖∂L/∂W‖₂ = ‖W.grad‖₂``, and
with respect to the bias, ``‖∂L/∂b‖₂``.

A ReLU unit that outputs 0 for every input passes no gradient to its weights, so it cannot recover: it is
*dead*. A unit is *dead on a batch* when its output is 0 for every example of the batch (for a convolution a
unit is a channel: 0 at every example and position). The recorder stores, per ReLU module, the fraction of its
units that were dead on the training batch of each recorded step.

>>> recorder = GradientRecorder(model, every=20)    # Linear/Conv layers and ReLU modules of the model
>>> with recorder:                                  # forward hooks on the ReLUs; removed on exit
...     history = fit(model, train, val, epochs=3, grad_recorder=recorder)
>>> recorder.history["weight"]                      # (recorded steps, layers) array of ‖∂L/∂W‖₂

A training loop calls ``recorder.record(step)`` after ``loss.backward()`` and before ``optimizer.step()``
(``labutils.train.fit`` does so when given ``grad_recorder=``). Every ``every``-th step is recorded; the others
cost nothing but a check of the step number. The plots of these numbers are in :mod:`labutils.gradflow_plots`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from labutils.util import check_choice, check_int

WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
RELU_LAYERS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
KINDS = ("weight", "bias", "dead_relu")  # what a history holds per recorded step
LOW_PRECISION = (torch.float16, torch.bfloat16)  # gradients whose norms are measured in float32
DEFAULT_EVERY = 20  # a recorded step of a deep, narrow MLP on the CPU takes ~1.6x a plain one: every 20th adds ~3 %


def weight_layers(
    model: nn.Module, layer_types: Sequence[type[nn.Module]] = WEIGHT_LAYERS
) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every layer of the given types with a trainable ``weight``, input side first."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, tuple(layer_types))
        and isinstance(getattr(m, "weight", None), nn.Parameter)
        and m.weight.requires_grad
    ]


def unit_maxima(out: torch.Tensor) -> torch.Tensor:
    """Largest activation of each unit over a batch: ``(N, F) → (F,)``; ``(N, C, ...) → (C,)`` (channels).

    A ReLU unit whose maximum is 0 is dead on that batch.
    """
    out = out.detach()
    if out.dim() <= 1:
        return out.amax().reshape(1)
    return out.amax(dim=(0, *range(2, out.dim())))


def dead_fraction(out: torch.Tensor) -> float:
    """Fraction of a ReLU output's units that are zero for the whole batch (see :func:`unit_maxima`)."""
    return float((unit_maxima(out) <= 0).float().mean())


class GradientRecorder:
    """Records per-layer gradient L2 norms (weights and biases) and dead-ReLU fractions during training.

    Args:
        model: the network; layers are found by type at construction.
        layer_types: modules whose ``weight``/``bias`` gradients are measured (default Linear and Conv).
        relu_types: activation modules watched for dead units (default ReLU, ReLU6); ``()`` watches none.
        every: record only the steps with ``step % every == 0`` (1 = every step).

    Attributes:
        layer_names: the measured layers, input side first (``model.named_modules()`` order).
        relu_names: the watched activation modules.
        history: everything recorded so far as NumPy arrays (see :attr:`history`).

    The gradient norms need no hook: ``record`` reads ``p.grad`` of each layer. The dead fractions come from
    forward hooks on the ReLU modules, which measure only passes with gradients enabled (training, not
    evaluation). While attached, the hooks are in place only for the forward pass of a step that will be
    recorded (a module with a hook runs a slower path of ``Module.__call__`` on every call): after
    ``record(s)`` the recorder expects step ``s + 1`` next, as in a loop that calls it once per step (``fit``
    does). A deep copy of the model copies the hooks in place, but they ignore the copy's modules.
    """

    def __init__(
        self,
        model: nn.Module,
        layer_types: Sequence[type[nn.Module]] = WEIGHT_LAYERS,
        relu_types: Sequence[type[nn.Module]] = RELU_LAYERS,
        every: int = DEFAULT_EVERY,
    ):
        self.every = check_int("every", every)
        self.layers = weight_layers(model, layer_types)
        if not self.layers:
            kinds = ", ".join(t.__name__ for t in layer_types)
            raise ValueError(f"The model has no trainable layers of type {kinds} to record gradients of.")
        self.layer_names = [name for name, _ in self.layers]
        self.relus = [(name, m) for name, m in model.named_modules() if isinstance(m, tuple(relu_types))]
        self.relu_names = [name for name, _ in self.relus]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []  # the hooks now in place
        self.attached = False
        self.reset()

    def attach(self) -> GradientRecorder:
        """Watch the ReLU modules' outputs from now on (attaching again does nothing). Returns self."""
        self.attached = True
        self._place_hooks()
        return self

    def detach(self) -> None:
        """Stop watching and remove the hooks; the recorded history stays."""
        self.attached = False
        self._place_hooks()

    def _place_hooks(self) -> None:
        """Hooks on the ReLUs while attached and the next forward pass is a recorded step's; none otherwise."""
        wanted = self.attached and self._armed
        if wanted and not self._handles:
            self._handles = [m.register_forward_hook(self._dead_unit_hook(name, m)) for name, m in self.relus]
        elif not wanted:
            for handle in self._handles:
                handle.remove()
            self._handles = []

    def _dead_unit_hook(self, name: str, watched: nn.Module):
        def hook(module, inputs, output):
            # `module is watched`: a deep copy of the model carries this hook along, and the copy is another model
            if module is watched and torch.is_grad_enabled() and isinstance(output, torch.Tensor):
                self._dead_now[name] = (unit_maxima(output) <= 0).float().mean()  # kept on the device until record

        return hook

    def __enter__(self) -> GradientRecorder:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    @torch.no_grad()
    def record(self, step: int) -> bool:
        """Measure the gradients now in ``.grad`` (call after ``backward()``, before ``optimizer.step()``).

        Returns True if this step was recorded (``step % every == 0``), False if it was skipped.
        """
        self._armed = (step + 1) % self.every == 0  # whether the next forward pass is a recorded step's
        self._place_hooks()
        if step % self.every:
            self._dead_now.clear()
            return False
        weight = [_grad_norm(m.weight) for _, m in self.layers]
        bias = [_grad_norm(_trainable_bias(m)) for _, m in self.layers]
        dead = [self._dead_now.get(name) for name in self.relu_names]  # None: no training pass seen since
        self._dead_now.clear()
        self._steps.append(int(step))
        self._rows.append(_to_floats(weight + bias + dead))
        return True

    def reset(self) -> None:
        """Forget everything recorded (the hooks stay as they are)."""
        self._steps: list[int] = []
        self._rows: list[list[float]] = []  # per recorded step: L weight norms, L bias norms, R dead fractions
        self._dead_now: dict[str, torch.Tensor] = {}  # ReLU name -> dead fraction on the current training batch
        self._armed = True  # the first forward pass is step 0's, which is recorded
        self._place_hooks()

    def __len__(self) -> int:
        return len(self._steps)

    def state_dict(self) -> dict[str, Any]:
        """The record so far as tensors and names (what a checkpoint keeps; see :meth:`load_state_dict`)."""
        return {
            "layers": list(self.layer_names),
            "relu_layers": list(self.relu_names),
            "steps": torch.tensor(self._steps, dtype=torch.int64),
            "rows": torch.tensor(self._rows, dtype=torch.float64).reshape(
                len(self), 2 * len(self.layer_names) + len(self.relu_names)
            ),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the record with one saved by :meth:`state_dict` of a recorder on the same layers."""
        if list(state["layers"]) != self.layer_names or list(state["relu_layers"]) != self.relu_names:
            raise ValueError(
                f"The saved gradient record is of layers {list(state['layers'])} and ReLUs "
                f"{list(state['relu_layers'])}, not this model's {self.layer_names} and {self.relu_names}."
            )
        self._steps = [int(s) for s in state["steps"].tolist()]
        self._rows = [list(row) for row in state["rows"].tolist()]

    @property
    def history(self) -> dict[str, Any]:
        """Everything recorded, as NumPy arrays:

        - ``"steps"``: ``(S,)`` int — the ``step`` of each record;
        - ``"layers"``: the ``L`` layer names; ``"weight"``, ``"bias"``: ``(S, L)`` gradient L2 norms
          (NaN where a layer has no trainable bias or took no part in the backward pass);
        - ``"relu_layers"``: the ``R`` ReLU names; ``"dead_relu"``: ``(S, R)`` dead-unit fractions
          (NaN where that ReLU saw no training batch since the previous record).
        """
        n_l = len(self.layer_names)
        rows = np.asarray(self._rows, dtype=np.float64).reshape(len(self), 2 * n_l + len(self.relu_names))
        return {
            "steps": np.asarray(self._steps, dtype=np.int64),
            "layers": list(self.layer_names),
            "weight": rows[:, :n_l],
            "bias": rows[:, n_l : 2 * n_l],
            "relu_layers": list(self.relu_names),
            "dead_relu": rows[:, 2 * n_l :],
        }

    def latest(self) -> dict[str, dict[str, float]]:
        """The last record as ``{"weight": {layer: norm}, "bias": {layer: norm}, "dead_relu": {relu: fraction}}``.

        Layers without a bias (and ReLUs without data) are left out. Empty dicts before the first record.
        """
        if not self._rows:
            return {kind: {} for kind in KINDS}
        n_l, row = len(self.layer_names), self._rows[-1]
        names = {"weight": self.layer_names, "bias": self.layer_names, "dead_relu": self.relu_names}
        values = {"weight": row[:n_l], "bias": row[n_l : 2 * n_l], "dead_relu": row[2 * n_l :]}
        return {kind: {n: v for n, v in zip(names[kind], values[kind]) if math.isfinite(v)} for kind in KINDS}

    def at(self, step: int | None = None, kind: str = "weight") -> dict[str, float]:
        """``{layer: value}`` of one recorded step (default the last); ``kind`` = weight, bias or dead_relu."""
        return history_at(self.history, step, kind)


def _trainable_bias(module: nn.Module) -> nn.Parameter | None:
    b = getattr(module, "bias", None)
    return b if isinstance(b, nn.Parameter) and b.requires_grad else None


def _grad_norm(p: nn.Parameter | None) -> torch.Tensor | None:
    """``‖p.grad‖₂`` as a 0-d tensor on the gradient's device (float32 for half-precision gradients), or None
    without a parameter or a gradient."""
    if p is None or p.grad is None:
        return None
    grad = p.grad.float() if p.grad.dtype in LOW_PRECISION else p.grad
    return torch.linalg.vector_norm(grad)


def _to_floats(values: list[torch.Tensor | None]) -> list[float]:
    """0-d tensors as Python floats (None as NaN), copied to the host together: on a GPU each copy waits for
    the device, so one copy per record instead of one per layer."""
    present = [v for v in values if v is not None]  # (stacking float32 with float64 gives float64)
    numbers = iter(torch.stack(present).tolist() if present else [])
    return [math.nan if v is None else next(numbers) for v in values]


def history_at(h: Mapping[str, Any], step: int | None = None, kind: str = "weight") -> dict[str, float]:
    """``{layer: value}`` of one recorded step (default the last) of a recorder's ``history``."""
    check_choice("kind", kind, KINDS)
    if not len(h["steps"]):
        raise ValueError("Nothing recorded yet: call record(step) after a backward pass.")
    if step is None:
        i = -1
    else:
        hits = np.nonzero(np.asarray(h["steps"]) == step)[0]
        if not len(hits):
            raise ValueError(f"Step {step} was not recorded; recorded steps run {h['steps'][0]}…{h['steps'][-1]}.")
        i = int(hits[-1])
    names = h["relu_layers"] if kind == "dead_relu" else h["layers"]
    return {name: float(v) for name, v in zip(names, h[kind][i])}


def layer_grad_norms(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    loss_fn=None,
    layer_types: Sequence[type[nn.Module]] = WEIGHT_LAYERS,
    kind: str = "weight",
) -> dict[str, float]:
    """Per-layer gradient L2 norms from one forward/backward pass on one batch (training mode).

    ``batch = (x, y)``; ``loss_fn`` defaults to cross-entropy. Returns ``{layer name: ‖∂L/∂W‖₂}`` input
    side first (``kind="bias"`` for the biases). The model is left as it was: ``.grad`` fields cleared,
    train/eval mode and buffers (BatchNorm running statistics) restored; no weights change.
    """
    check_choice("kind", kind, KINDS[:2])
    loss_fn = loss_fn or nn.functional.cross_entropy
    device = next(model.parameters()).device
    x, y = batch[0].to(device), batch[1].to(device)
    was_training = model.training
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        loss_fn(model(x), y).backward()
        recorder = GradientRecorder(model, layer_types=layer_types, relu_types=(), every=1)
        recorder.record(0)
        return recorder.at(0, kind)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])


def grad_norms_at_init(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    loss_fn=None,
    layer_types: Sequence[type[nn.Module]] = WEIGHT_LAYERS,
    kind: str = "weight",
) -> dict[str, float]:
    """The gradient profile of a freshly built network: :func:`layer_grad_norms` under its usual name.

    Call it before training; the same measurement after training is ``layer_grad_norms``.
    """
    return layer_grad_norms(model, batch, loss_fn, layer_types, kind)


def first_last_ratio(norms: Mapping[str, float]) -> float:
    """``‖∂L/∂W_first‖ / ‖∂L/∂W_last‖`` of a ``{layer: norm}`` profile (≪ 1: the gradient vanishes on the way
    down to the input layer; ≫ 1: it explodes)."""
    values = list(norms.values())
    if len(values) < 2:
        raise ValueError(f"A first/last ratio needs at least two layers, got {len(values)}.")
    return float(values[0] / values[-1]) if values[-1] else math.inf


def dead_fraction_by_layer(recorder: GradientRecorder | Mapping[str, Any], last: int = 20) -> dict[str, float]:
    """``{ReLU name: mean dead-unit fraction over the last ``last`` recorded steps}`` (NaN steps ignored).

    Takes a recorder or its ``history`` dict.
    """
    h = recorder.history if hasattr(recorder, "history") else recorder
    dead = np.asarray(h["dead_relu"], float)
    if not len(dead):
        raise ValueError("Nothing recorded yet: dead-ReLU fractions come from a recorder that saw training steps.")
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a ReLU never seen in the window: NaN, not a warning
        means = np.nanmean(dead[-last:], axis=0)
    return {name: float(v) for name, v in zip(h["relu_layers"], means)}


@torch.no_grad()
def dead_fractions_on(
    model: nn.Module, x: torch.Tensor, activation_types: Sequence[type[nn.Module]] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU)
) -> dict[str, float]:
    """``{activation name: fraction of its units that are <= 0 for every example of x}``, in evaluation mode.

    ``x`` is a batch ``(N, ...)`` (a fixed held-out batch compares trained networks fairly). A unit is a feature of
    a fully connected layer or a channel of a convolution (over every example and position), as in
    :func:`dead_fraction`. For a leaky ReLU such a unit is in its 0.01-slope region for the whole batch: not dead,
    but nearly so; for a ReLU it passes neither signal nor gradient. The model's train/eval mode is restored.
    """
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, tuple(activation_types))]
    if not found:
        kinds = ", ".join(t.__name__ for t in activation_types)
        raise ValueError(f"The model has no activation modules of type {kinds} to count dead units in.")
    out: dict[str, float] = {}

    def hook(name):
        return lambda module, inputs, output: out.__setitem__(name, dead_fraction(output))

    handles = [m.register_forward_hook(hook(name)) for name, m in found]
    was_training = model.training
    try:
        model.eval()
        model(x.to(next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {name: out[name] for name, _ in found if name in out}


__all__ = [
    "GradientRecorder",
    "history_at",
    "layer_grad_norms",
    "grad_norms_at_init",
    "first_last_ratio",
    "dead_fraction_by_layer",
    "dead_fractions_on",
    "weight_layers",
    "unit_maxima",
    "dead_fraction",
    "WEIGHT_LAYERS",
    "RELU_LAYERS",
    "KINDS",
    "DEFAULT_EVERY",
]
