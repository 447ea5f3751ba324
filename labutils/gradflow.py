"""Gradient flow: per-layer gradient norms, dead ReLUs, and the plots that show them.

A deep network stops learning when the gradient that reaches its first layers is many orders of
magnitude smaller (or larger) than at its last layers. These tools measure that, layer by layer:

>>> recorder = GradientRecorder(model)             # Linear/Conv layers and ReLU modules of the model
>>> with recorder:                                  # watch the ReLUs; detached on exit
...     history = fit(model, train, val, epochs=3, grad_recorder=recorder)
>>> recorder.history["weight"]                      # (steps, layers) array of ‖∂L/∂W‖₂
>>> fig, data = plot_norm_heatmap(recorder)

``recorder.record(step)`` is what a training loop calls after ``loss.backward()`` and before
``optimizer.step()`` (``labutils.train.fit`` does so when given ``grad_recorder=``). Recording is
cheap enough to leave on: the norms of a step come from a few device operations however deep the
model is (one fused ``torch._foreach_norm``; on the CPU also one stacked norm per group of small
same-shaped parameters) and stay on the device; they are copied to the host in blocks, and the
per-layer tables are built only when the history is read. ``benchmarks/bench_fit_overhead.py``
measures what the recorder adds to a training step.

Dead ReLUs: a unit is *dead on a batch* when its ReLU output is zero for every example of the batch
(for convolutions a unit is a channel: zero at every example and position). The recorder stores,
per ReLU module, the fraction of dead units on the last training batch before each ``record``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from labutils.util import check_choice, check_int

WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
RELU_LAYERS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
KINDS = ("weight", "bias", "dead_relu")  # what a history holds per recorded step
NONNEGATIVE: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)  # activations whose output is never < 0


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


def _unit_activity(out: torch.Tensor, nonnegative: bool) -> torch.Tensor:
    """Per unit, a number that is <= 0 exactly when the unit is dead on the batch (shapes as :func:`unit_maxima`).

    For activations that are never negative (ReLU, ReLU6) it is the sum over the batch: a sum of
    non-negative floats is 0 only when every term is (rounding cannot reach 0, NaN stays NaN), and on
    the CPU a sum over the batch axis is several times faster than a maximum. Otherwise it is the maximum.
    Positions (dims 2, ...) are reduced before the batch, which is the faster order for convolutions.
    """
    out = out.detach()
    reduce = torch.sum if nonnegative else torch.amax
    if out.dim() <= 1:
        return reduce(out, dim=tuple(range(out.dim()))).reshape(1)
    if out.dim() > 2:
        out = reduce(out, dim=tuple(range(2, out.dim())))
    return reduce(out, dim=0)


def dead_fraction(out: torch.Tensor) -> float:
    """Fraction of a ReLU output's units that are zero for the whole batch (see :func:`unit_maxima`)."""
    return float((unit_maxima(out) <= 0).float().mean())


class ReferenceGradientRecorder:
    """The readable definition of what :class:`GradientRecorder` measures, one layer at a time.

    After every backward pass, ``record(step)`` stores per layer ``‖∂L/∂W‖₂ = p.grad.norm()`` of the
    weight and of the bias (NaN without a bias or without a gradient), and per ReLU module the fraction
    of its units that were zero for the whole last training batch (a forward hook computes it with
    :func:`dead_fraction`). Same arguments, ``history``, ``latest``, ``at``, ``attach``/``detach`` and
    context manager as :class:`GradientRecorder`, which computes the same numbers in batched device
    operations (tests check the two agree); read this one to see what is measured.
    """

    def __init__(
        self,
        model: nn.Module,
        layer_types: Sequence[type[nn.Module]] = WEIGHT_LAYERS,
        relu_types: Sequence[type[nn.Module]] = RELU_LAYERS,
        every: int = 1,
    ):
        self.every = check_int("every", every)
        self.layers = _measured_layers(model, layer_types)
        self.layer_names = [name for name, _ in self.layers]
        self.relus = [(name, m) for name, m in model.named_modules() if isinstance(m, tuple(relu_types))]
        self.relu_names = [name for name, _ in self.relus]
        self.dead_now: dict[str, float] = {}  # ReLU name -> dead fraction on the last training batch
        self.rows: dict[str, list] = {"steps": [], "weight": [], "bias": [], "dead_relu": []}
        self._handles: list[Any] = []

    def attach(self) -> ReferenceGradientRecorder:
        if not self._handles:
            for name, module in self.relus:
                self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if torch.is_grad_enabled():  # training passes only: evaluation runs without gradients
                self.dead_now[name] = dead_fraction(output)

        return hook

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    __enter__ = attach

    def __exit__(self, *exc) -> None:
        self.detach()

    @torch.no_grad()
    def record(self, step: int) -> bool:
        if step % self.every:
            self.dead_now.clear()
            return False

        def norm(p) -> float:
            return math.nan if p is None or p.grad is None else float(p.grad.float().norm())

        self.rows["steps"].append(step)
        self.rows["weight"].append([norm(m.weight) for _, m in self.layers])
        self.rows["bias"].append([norm(_trainable_bias(m)) for _, m in self.layers])
        self.rows["dead_relu"].append([self.dead_now.get(name, math.nan) for name in self.relu_names])
        self.dead_now.clear()
        return True

    def __len__(self) -> int:
        return len(self.rows["steps"])

    @property
    def history(self) -> dict[str, Any]:
        n_s, n_l, n_r = len(self), len(self.layer_names), len(self.relu_names)
        return {
            "steps": np.asarray(self.rows["steps"], dtype=np.int64),
            "layers": list(self.layer_names),
            "weight": np.asarray(self.rows["weight"], dtype=np.float64).reshape(n_s, n_l),
            "bias": np.asarray(self.rows["bias"], dtype=np.float64).reshape(n_s, n_l),
            "relu_layers": list(self.relu_names),
            "dead_relu": np.asarray(self.rows["dead_relu"], dtype=np.float64).reshape(n_s, n_r),
        }

    def latest(self) -> dict[str, dict[str, float]]:
        return _latest(self.history)

    def at(self, step: int | None = None, kind: str = "weight") -> dict[str, float]:
        return history_at(self.history, step, kind)


def _measured_layers(model: nn.Module, layer_types: Sequence[type[nn.Module]]) -> list[tuple[str, nn.Module]]:
    layers = weight_layers(model, layer_types)
    if not layers:
        kinds = ", ".join(t.__name__ for t in layer_types)
        raise ValueError(f"The model has no trainable layers of type {kinds} to record gradients of.")
    return layers


def _trainable_bias(module: nn.Module) -> nn.Parameter | None:
    b = getattr(module, "bias", None)
    return b if isinstance(b, nn.Parameter) and b.requires_grad else None


def _latest(h: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The last row of a history as ``{kind: {name: value}}``, non-finite values left out."""
    if not len(h["steps"]):
        return {"weight": {}, "bias": {}, "dead_relu": {}}
    out = {}
    for kind in KINDS:
        names = h["relu_layers"] if kind == "dead_relu" else h["layers"]
        out[kind] = {name: float(v) for name, v in zip(names, h[kind][-1]) if np.isfinite(v)}
    return out


def history_at(h: Mapping[str, Any], step: int | None = None, kind: str = "weight") -> dict[str, float]:
    """``{layer: value}`` of one recorded step (default the last) of a recorder's ``history``."""
    check_choice("kind", kind, KINDS)
    if not len(h["steps"]):
        raise ValueError("Nothing recorded yet: call record(step) after a backward pass.")
    if step is None:
        i = -1
    else:
        hits = np.nonzero(h["steps"] == step)[0]
        if not len(hits):
            raise ValueError(f"Step {step} was not recorded; recorded steps run {h['steps'][0]}…{h['steps'][-1]}.")
        i = int(hits[-1])
    names = h["relu_layers"] if kind == "dead_relu" else h["layers"]
    return {name: float(v) for name, v in zip(names, h[kind][i])}


LOW_PRECISION = (torch.bfloat16, torch.float16)  # gradients whose norms are measured in float32
STACK_NUMEL = 1 << 12  # gradients and ReLU outputs up to this size are reduced in stacked groups
#   (about where copying a tensor into a stack costs what one more small operation costs on the CPU)


class _BatchedNorms:
    """The L2 norms of a fixed list of parameters' gradients, as one row, in a few device operations.

    On CUDA one fused ``torch._foreach_norm`` measures them all. On the CPU ``_foreach_norm`` is a loop of
    single norms (~1 µs each), so small parameters of one shape (the 16x16 hidden layers of a deep MLP, their
    biases) are measured as a stacked group instead: one stack and one norm per group. ``params`` below are
    in row order: first the rest, then each group; ``order[i]`` is where the i-th given parameter sits.

    In a training loop these operations run with cold caches (the forward and backward passes came between
    two records), where each distinct operation a record uses costs more than its arithmetic: 10-30 µs for a
    stack of six numbers or entering ``torch.no_grad()``, against 1-3 µs in a tight loop. So a record only
    measures (:meth:`measure`), and the parts of many steps are joined into rows at once (:meth:`rows`). On the
    784-256-256-10 MLP that took a record from ~190 to ~110 µs in a ~3 ms step (timed in a training loop whose
    steps alternate between recording and not), most of the rest being the norm of the 784x256 gradient read
    from memory.
    """

    def __init__(self, params: Sequence[nn.Parameter], stack_numel: int = STACK_NUMEL):
        same: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            if 1 <= p.dim() and p.numel() <= stack_numel:
                same.setdefault((tuple(p.shape), p.dtype), []).append(i)
        grouped = [idx for idx in same.values() if len(idx) >= 4]  # fewer: no faster than separate norms
        in_group = {i for idx in grouped for i in idx}
        rest = [i for i in range(len(params)) if i not in in_group]
        row_order = rest + [i for idx in grouped for i in idx]
        self.params = [params[i] for i in row_order]
        self.order = np.empty(len(params), dtype=np.int64)
        self.order[row_order] = np.arange(len(params))
        self.n_rest = len(rest)
        self.groups: list[tuple[int, int, tuple[int, ...]]] = []  # (start, stop, dims of one gradient) in the row
        start = self.n_rest
        for idx in grouped:
            self.groups.append((start, start + len(idx), tuple(range(1, params[idx[0]].dim() + 1))))
            start += len(idx)

    def __len__(self) -> int:
        return len(self.params)

    def measure(self) -> Sequence[torch.Tensor] | torch.Tensor:
        """The norms of the gradients now in ``.grad`` (float32, float64 for float64 gradients; on their device), as
        :meth:`rows` reads them.

        Usually the parts as they come out of the kernels, not yet one row: on the CPU the 0-d norms of the rest
        then one ``(G,)`` norm per group; on other devices one 0-d norm per parameter. Joining them into a row
        is left to :meth:`rows`, once for many steps: in a training loop each small operation of a record costs
        10-30 µs (its code and data are out of the caches after the backward pass), so a record does as few as it
        can. With a gradient missing (a layer that took no part) it is one ``(P,)`` row with NaN there.
        """
        grads = [p.grad for p in self.params]
        try:  # (a missing gradient fails the first operation: see _measure_present)
            norms = self._measure_all(grads)
            if any(n.dtype in LOW_PRECISION for n in norms):  # (fewer to check than the gradients)
                norms = self._measure_all(grads, dtype=torch.float32)
        except (TypeError, AttributeError):
            if any(g is None for g in grads):  # (not `None in grads`: that compares every tensor with ==)
                return self._measure_present(grads)
            raise
        if norms[0].requires_grad:  # gradients of a create_graph backward: keep the numbers, not a graph
            norms = [n.detach() for n in norms]
        return norms

    def rows(self, measured: Sequence[Sequence[torch.Tensor] | torch.Tensor]) -> torch.Tensor:
        """``(S, P)`` norms in row order from :meth:`measure`'s results of ``S`` steps (on the host if the
        model moved between devices)."""
        first = measured[0]
        if isinstance(first, torch.Tensor) or any(
            isinstance(m, torch.Tensor) or len(m) != len(first) or m[0].device != first[0].device for m in measured
        ):  # a row with a missing gradient, or a model that moved: one row at a time
            return torch.stack([self._row(m).cpu() for m in measured])
        n_scalars = sum(1 for t in first if t.dim() == 0)  # (the scalars come first, then the groups)
        columns = [torch.stack([m[k] for m in measured]) for k in range(n_scalars, len(first))]
        if n_scalars:
            scalars = torch.stack([t for m in measured for t in m[:n_scalars]]).reshape(len(measured), n_scalars)
            columns.insert(0, scalars)
        return columns[0] if len(columns) == 1 else torch.cat(columns, dim=1)

    @staticmethod
    def _row(measured: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """One step's ``(P,)`` row (the parts are in row order)."""
        return measured if isinstance(measured, torch.Tensor) else torch.cat([t.reshape(-1) for t in measured])

    def _measure_all(self, grads: list[torch.Tensor], dtype: torch.dtype | None = None) -> list[torch.Tensor]:
        """On the CPU the rest's 0-d norms, then each group's ``(G,)`` norms; elsewhere one fused kernel's 0-d
        norms. Without ``dtype`` each norm comes out in its gradient's dtype: float32 gradients are measured
        without the argument, which costs a slower kernel on the CPU, and :meth:`measure` measures bfloat16 and
        float16 ones again in float32 (float64 ones stay float64)."""
        kw = {} if dtype is None else {"dtype": dtype}
        if not grads[0].is_cpu:
            return list(torch._foreach_norm(grads, 2, **kw))
        norms = list(torch._foreach_norm(grads[: self.n_rest], 2, **kw)) if self.n_rest else []
        for start, stop, dims in self.groups:
            norms.append(torch.linalg.vector_norm(torch.stack(grads[start:stop]), dim=dims, **kw))
        return norms

    def _measure_present(self, grads: list[torch.Tensor | None]) -> torch.Tensor:
        """Layers that took no part in this backward pass get NaN; the others one fused norm."""
        present = [i for i, g in enumerate(grads) if g is not None]
        if not present:
            return torch.full((len(grads),), math.nan, device=self.params[0].device)
        measured = [grads[i].float() if grads[i].dtype in LOW_PRECISION else grads[i] for i in present]
        with torch.no_grad():
            norms = torch.stack(torch._foreach_norm(measured, 2))
            row = torch.full((len(grads),), math.nan, device=norms.device, dtype=norms.dtype)
            row[present] = norms
        return row


class _Watch:
    """What a watched activation module's ``forward`` becomes while a :class:`GradientRecorder` is attached: it
    calls the module's own ``forward`` and hands the output to :meth:`_DeadUnits.keep`.

    A wrapper on the instance rather than a forward hook because a module with any hook leaves
    ``Module.__call__``'s fast path for its slow one: on the depth-32 residual MLP (32 ReLUs, batch 128, one
    CPU thread) the wrapper's training step took ~64 µs (2 %) less than the hook's, timed by alternating the
    two from step to step. :meth:`_DeadUnits.detach` puts the previous ``forward`` back. A deep
    copy of a watched module gets the ``forward`` it had before, unwatched (a copy is a different model).
    """

    __slots__ = ("module", "inner", "index", "dead", "previous")

    def __init__(self, module: nn.Module, index: int, dead: _DeadUnits):
        self.module, self.index, self.dead = module, index, dead
        self.previous = module.__dict__.get("forward")  # an instance forward set before (restored on detach)
        self.inner = module.forward
        if self.previous is None and type(module) is nn.ReLU and not module.inplace:
            self.inner = torch.relu  # what nn.ReLU.forward calls, without the two Python functions in between

    def __call__(self, *args, **kwargs):
        output = self.inner(*args, **kwargs)
        dead = self.dead
        if dead.armed and torch.is_grad_enabled():  # recorded steps' training passes only
            dead.keep(self.index, output)
        return output

    def __deepcopy__(self, memo):  # the copy's module gets what it had before the wrapping, unwatched
        if self.previous is not None:
            return copy.deepcopy(self.previous, memo)
        module = memo.get(id(self.module), self.module)
        return type(module).forward.__get__(module)


class _DeadUnits:
    """Watches ReLU modules (see :class:`_Watch`) and keeps, per module, what decides which of its units were
    dead on the last training batch; :meth:`take` turns one step's into blocks, :meth:`fractions` many steps'
    into numbers.

    A small ``nn.ReLU`` output is kept as it is, ``(output, version)``, and reduced in :meth:`take` with the
    others of its shape (one stack and one sum for all the hidden layers of a deep MLP): ``torch.relu`` keeps
    its output for the backward pass and autograd refuses to differentiate through it once it has been
    changed in place, so keeping it costs no memory; the version tells whether it changed after backward.
    Other outputs are reduced at once by :func:`_unit_activity`. Nothing is kept while ``armed`` is False
    (steps that will not be recorded) or in passes without gradients (evaluation).

    The stack goes into a buffer kept from step to step (one per shape): on a depth-32, width-16 MLP at batch
    128 that takes ~50 µs (a sixth) off the recorder's cost per step against a fresh 256 kB stack each step,
    measured on the course machine by alternating the two from step to step.
    """

    def __init__(self, relus: Sequence[tuple[str, nn.Module]], stack_numel: int = STACK_NUMEL):
        self.modules = [m for _, m in relus]
        self.stack_numel = stack_numel
        self.activity: list[torch.Tensor | tuple | None] = [None] * len(relus)
        self.none = [None] * len(relus)
        self.stacks: dict[tuple, torch.Tensor] = {}  # reused stack buffers: see take
        self.whole: tuple | None = None  # (indices, buffer, dims) when all outputs went into one stack: _take_whole
        self.armed = True
        self.handles: list[_Watch] = []  # the wrappers now in place
        self.kept = [type(m) is nn.ReLU for m in self.modules]  # kept whole when small (see above)
        self.nonnegative = [isinstance(m, NONNEGATIVE) for m in self.modules]

    def attach(self) -> None:
        if not self.handles:  # (attached already: nothing to do)
            for i, m in enumerate(self.modules):
                m.forward = watch = _Watch(m, i, self)
                self.handles.append(watch)

    def detach(self) -> None:
        for watch in self.handles:
            outer = watch.module.__dict__.get("forward")
            if outer is watch:
                if watch.previous is None:
                    del watch.module.forward
                else:
                    watch.module.forward = watch.previous
                continue
            while isinstance(outer, _Watch) and outer.inner is not watch:  # wrapped since (another recorder)
                outer = outer.inner
            if isinstance(outer, _Watch):  # take this one out of the chain, leave the others watching
                outer.inner, outer.previous = watch.inner, watch.previous
        self.handles = []

    def keep(self, i: int, output) -> None:
        """Keep what the ``i``-th module's output (of a recorded training pass) tells about dead units."""
        if self.kept[i] and output.requires_grad and output.numel() <= self.stack_numel:  # (1-D: see take)
            self.activity[i] = (output, output._version)
        elif isinstance(output, torch.Tensor):
            self.activity[i] = _unit_activity(output, self.nonnegative[i])

    def clear(self) -> None:
        """Forget the kept outputs (a later record without a training forward pass gets NaN)."""
        self.activity[:] = self.none

    def take(self) -> list[tuple[tuple[int, ...], torch.Tensor]]:
        """This step's per-unit statistics as ``(ReLU indices, statistics)`` blocks, then :meth:`clear`:
        ``((i,), (units,))`` for an output reduced in its hook, ``((i, j, ...), (G, units))`` for kept outputs
        of one shape. An output changed in place since its forward pass is left out (its fraction is unknown)."""
        act, whole = self.activity, self.whole
        if whole is not None and all(type(a) is tuple and a[0]._version == a[1] for a in act):
            blocks = self._take_whole(act, *whole)  # (the common case: see _take_whole)
            if blocks is not None:
                return blocks
        blocks, same = [], {}
        for i, a in enumerate(act):
            if a is None:
                continue
            if type(a) is not tuple:
                blocks.append(((i,), a))
            elif a[0]._version == a[1]:
                group = same.get(a[0].shape)
                if a[0].dim() < 2:  # no batch axis to reduce over
                    blocks.append(((i,), _unit_activity(a[0], True)))
                elif group is None:
                    same[a[0].shape] = ([i], [a[0]])
                else:
                    group[0].append(i), group[1].append(a[0])
        for indices, outputs in same.values():
            first = outputs[0]
            key = (len(outputs), first.shape, first.dtype, first.device)
            buffer = self.stacks.get(key)
            if buffer is None:
                if len(self.stacks) >= 4:  # (shapes that keep changing: keep the newest only)
                    self.stacks.clear()
                buffer = self.stacks[key] = first.new_empty((len(outputs), *first.shape))
            dims = 1 if buffer.dim() == 3 else (1, *range(3, buffer.dim()))
            blocks.append((tuple(indices), self._stack_sums(outputs, buffer, dims)))
            if len(indices) == len(act):  # every module's output in one stack: the next step can skip the sorting
                self.whole = (tuple(indices), buffer, dims)
        self.activity[:] = self.none
        return blocks

    def _take_whole(self, act: list, indices: tuple[int, ...], buffer: torch.Tensor, dims) -> list | None:
        """:meth:`take` when every watched module kept its output, unchanged, and they went into one stack last
        time: the same stack and sum, without sorting the outputs by shape one at a time. None (nothing done) if
        the outputs no longer fit that stack (another batch size, dtype or device)."""
        outputs = [a[0] for a in act]
        try:
            sums = self._stack_sums(outputs, buffer, dims) if outputs[0].shape == buffer.shape[1:] else None
        except RuntimeError:  # outputs of different shapes, or another dtype or device than the buffer
            sums = None
        if sums is None:
            self.whole = None
            return None
        self.activity[:] = self.none
        return [(indices, sums)]

    @staticmethod
    def _stack_sums(outputs: list[torch.Tensor], buffer: torch.Tensor, dims) -> torch.Tensor:
        """Per-unit batch sums of same-shaped outputs, stacked into ``buffer`` ``(G, N, units, positions...)``."""
        with torch.no_grad():  # (the outputs are part of the autograd graph)
            return torch.stack(outputs, out=buffer).sum(dim=dims)

    def fractions(self, rows: list[list[tuple[tuple[int, ...], torch.Tensor]]]) -> np.ndarray:
        """``(S, R)`` fraction of units dead on the batch (statistic <= 0, see :func:`_unit_activity`), per step
        and ReLU (NaN where a ReLU saw no training batch), from :meth:`take`'s blocks of ``S`` steps. One stack,
        compare and mean per kind of block for all the steps, one host copy."""
        out = np.full((len(rows), len(self.modules)), np.nan)
        kinds: dict[tuple, tuple[list[int], list[torch.Tensor]]] = {}
        for step, blocks in enumerate(rows):
            for idx, stat in blocks:
                steps, stats = kinds.setdefault((idx, stat.shape), ([], []))
                steps.append(step)
                stats.append(stat)
        if not kinds:
            return out
        fractions = [(torch.stack(stats) <= 0).float().mean(dim=-1).flatten() for _, stats in kinds.values()]
        values = torch.cat(fractions).cpu().numpy()
        start = 0
        for (idx, _), (steps, _) in kinds.items():
            size = len(steps) * len(idx)
            out[np.ix_(steps, idx)] = values[start : start + size].reshape(len(steps), len(idx))
            start += size
        return out


class GradientRecorder:
    """Records per-layer gradient L2 norms (weights and biases) and dead-ReLU fractions during training.

    Args:
        model: the network; layers are found by type at construction.
        layer_types: modules whose ``weight``/``bias`` gradients are measured (default Linear and Conv).
        relu_types: activation modules watched for dead units (default ReLU, ReLU6); ``()`` turns it off
            (then no module is wrapped at all).
        every: record only when ``step % every == 0`` (1 = every step).

    Attributes:
        layer_names: the measured layers, input side first (``model.named_modules()`` order).
        relu_names: the watched activation modules.
        history: everything recorded so far as NumPy arrays (see :attr:`history`).

    It measures what :class:`ReferenceGradientRecorder` measures, at a cost per recorded step that does not
    grow with the depth: a few device operations measure the step's norms into one row (see
    ``_BatchedNorms``), one stack and sum reduce the ReLU outputs of one shape (see ``_DeadUnits``), and
    nothing is copied to the host until a block of ``FLUSH_STEPS`` steps is full or the history is read.
    With ``every > 1`` the hooks measure only the forward passes of recorded steps: after ``record(s)`` the
    recorder expects step ``s + 1`` next (as in a loop that calls it once per step, like ``fit``).
    """

    FLUSH_STEPS = 256  # recorded steps kept on the device before one copy to the host
    FLUSH_UNITS = 1 << 22  # ... or fewer, so that the per-unit ReLU statistics kept stay below ~16 MB

    def __init__(
        self,
        model: nn.Module,
        layer_types: Sequence[type[nn.Module]] = WEIGHT_LAYERS,
        relu_types: Sequence[type[nn.Module]] = RELU_LAYERS,
        every: int = 1,
    ):
        layers = _measured_layers(model, layer_types)
        self.every = check_int("every", every)
        self.layer_names = [name for name, _ in layers]
        biases = [_trainable_bias(m) for _, m in layers]
        self._norms = _BatchedNorms([m.weight for _, m in layers] + [b for b in biases if b is not None])
        # where each layer's weight and bias norm sit in a stored row (the extra last column is the NaN of
        # layers without a bias)
        bias_at = iter(range(len(layers), len(self._norms)))
        self._columns = np.append(self._norms.order, len(self._norms))[
            list(range(len(layers))) + [next(bias_at) if b is not None else -1 for b in biases]
        ]
        relus = [(name, m) for name, m in model.named_modules() if isinstance(m, tuple(relu_types))]
        self.relu_names = [name for name, _ in relus]
        self._dead = _DeadUnits(relus)
        self.reset()

    def attach(self) -> GradientRecorder:
        """Start watching ReLU outputs (their ``forward`` is wrapped, see ``_Watch``). Gradient norms need no
        hook. Returns self."""
        self._dead.attach()
        return self

    def detach(self) -> None:
        """Put the ReLU modules' own ``forward`` back; the recorded history stays."""
        self._dead.detach()

    @property
    def attached(self) -> bool:
        return bool(self._dead.handles)

    def __enter__(self) -> GradientRecorder:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def record(self, step: int) -> bool:
        """Measure the gradients now in ``.grad`` (call after ``backward()``, before ``optimizer.step()``).

        Returns True if this step was recorded (see ``every``). Nothing is copied to the host here.
        """
        self._dead.armed = (step + 1) % self.every == 0
        if step % self.every:
            self._dead.clear()  # a forward pass of a step that is not recorded
            return False
        self._rows.append(self._norms.measure())
        blocks = self._dead.take() if self.relu_names else []
        self._pending.append(blocks)
        if blocks and not self._sized:  # at most FLUSH_UNITS per-unit statistics wait on the device
            units = sum(stat.numel() for _, stat in blocks)
            self._flush_at = max(len(self._pending), min(self.FLUSH_STEPS, self.FLUSH_UNITS // units))
            self._sized = True
        self._steps.append(int(step))
        self._cache = None
        if len(self._pending) >= self._flush_at:
            self._flush()
        return True

    def _flush(self) -> None:
        """Copy the pending steps to the host as one ``(S, 2L + R)`` float64 block: the weight and bias norms in
        layer order, then the dead-ReLU fractions."""
        if not self._pending:
            return
        self._host.append(self._to_host(self._rows, self._pending))
        self._rows, self._pending, self._flush_at, self._sized = [], [], self.FLUSH_STEPS, False

    def _to_host(self, rows: list, pending: list[list[tuple]]) -> np.ndarray:
        """Recorded steps still on the device as one ``(S, 2L + R)`` float64 host block (see :meth:`_flush`)."""
        norms = self._norms.rows(rows).cpu().numpy().astype(np.float64)
        norms = np.concatenate([norms, np.full((len(norms), 1), np.nan)], axis=1)[:, self._columns]
        return np.concatenate([norms, self._dead.fractions(pending)], axis=1)

    def reset(self) -> None:
        """Forget everything recorded (hooks stay as they are)."""
        self._steps: list[int] = []
        self._rows: list = []  # per step waiting on the device: its norms (see _BatchedNorms.measure) ...
        self._pending: list[list[tuple]] = []  # ... and its dead-unit blocks
        self._host: list[np.ndarray] = []  # (S_block, 2L + R) float64 blocks already on the host
        self._flush_at, self._sized, self._cache = self.FLUSH_STEPS, False, None
        self._dead.clear()
        self._dead.armed = True

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def history(self) -> dict[str, Any]:
        """Everything recorded, as NumPy arrays (one host copy per call at most):

        - ``"steps"``: ``(S,)`` int — the ``step`` of each record;
        - ``"layers"``: the ``L`` layer names; ``"weight"``, ``"bias"``: ``(S, L)`` gradient L2 norms
          (NaN where a layer has no bias or took no part);
        - ``"relu_layers"``: the ``R`` ReLU names; ``"dead_relu"``: ``(S, R)`` dead-unit fractions
          (NaN if that ReLU saw no training batch since the previous record, or if its output was
          changed in place between its forward pass and the record).
        """
        if self._cache is None:
            self._flush()
            n_l = len(self.layer_names)
            block = np.concatenate(self._host) if self._host else np.zeros((0, 2 * n_l + len(self.relu_names)))
            self._host = [block] if len(block) else []
            self._cache = {
                "steps": np.asarray(self._steps, dtype=np.int64),
                "layers": list(self.layer_names),
                "weight": block[:, :n_l],
                "bias": block[:, n_l : 2 * n_l],
                "relu_layers": list(self.relu_names),
                "dead_relu": block[:, 2 * n_l :],
            }
        return self._cache

    def latest(self) -> dict[str, dict[str, float]]:
        """The last record as ``{"weight": {layer: norm}, "bias": {layer: norm}, "dead_relu": {relu: fraction}}``.

        Layers without a bias (and ReLUs without data) are left out. Empty dicts before the first record.
        """
        if not self._steps:
            return _latest(self.history)
        # the last step alone: the pending block stays on the device (fit calls this every epoch; moving a
        # block to the host costs ~1 ms however few its steps, so it waits until FLUSH_STEPS are recorded)
        last = self._to_host(self._rows[-1:], self._pending[-1:]) if self._pending else self._host[-1][-1:]
        n_l = len(self.layer_names)
        return _latest(
            {
                "steps": self._steps[-1:],
                "layers": self.layer_names,
                "relu_layers": self.relu_names,
                "weight": last[:, :n_l],
                "bias": last[:, n_l : 2 * n_l],
                "dead_relu": last[:, 2 * n_l :],
            }
        )

    def at(self, step: int | None = None, kind: str = "weight") -> dict[str, float]:
        """``{layer: value}`` of one recorded step (default the last); ``kind`` = weight, bias or dead_relu."""
        return history_at(self.history, step, kind)


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
        recorder = ReferenceGradientRecorder(model, layer_types=layer_types, relu_types=())
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


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
def _as_curves(norms) -> dict[str, tuple[list[str], np.ndarray]]:
    """Normalise the inputs of :func:`plot_layer_norms` to ``{label: (layer names, values)}``."""
    if isinstance(norms, (GradientRecorder, ReferenceGradientRecorder)):
        norms = norms.at()
    if isinstance(norms, Mapping) and norms and all(isinstance(v, Mapping) for v in norms.values()):
        return {str(label): (list(c), np.asarray(list(c.values()), float)) for label, c in norms.items()}
    if isinstance(norms, Mapping):
        return {"": (list(norms), np.asarray(list(norms.values()), float))}
    values = np.asarray(norms, float)
    if values.ndim != 1:
        raise ValueError(f"plot_layer_norms needs one norm per layer, got an array of shape {values.shape}.")
    return {"": ([str(i) for i in range(len(values))], values)}


def plot_layer_norms(
    norms, ax=None, title: str | None = None, ylabel: str = "gradient L2 norm  ‖∂L/∂W‖", logy: bool = True
):
    """Per-layer norms at one step, input layer on the left, log scale.

    ``norms``: ``{layer: value}`` (one curve), ``{label: {layer: value}}`` (one curve per label, e.g.
    plain vs residual, on a relative x-axis when the networks differ in depth), a 1-D array, or a
    :class:`GradientRecorder` (its last record). Returns ``(fig, data)`` with ``data[label]`` the
    array drawn. On the log axis exact zeros cannot be drawn; the legend counts them.
    """
    import matplotlib.pyplot as plt

    curves = _as_curves(norms)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
    else:
        fig = ax.figure
    lengths = {len(v) for _, v in curves.values()}
    relative = len(lengths) > 1
    data = {}
    for label, (_, values) in curves.items():
        x = np.linspace(0, 1, len(values)) if relative else np.arange(len(values))
        shown = np.where(values > 0, values, np.nan) if logy else values
        zeros = int(np.sum(values == 0)) if logy else 0
        if zeros:  # a log axis cannot show 0 (e.g. a gradient that underflowed): say so instead of hiding it
            label = f"{label} ({zeros} layer{'s' if zeros > 1 else ''} at exactly 0, not drawn)".lstrip()
        ax.plot(x, shown, marker="o", ms=3, lw=1.4, label=label or None)
        data[label] = values
    if logy:
        ax.set_yscale("log")
    if relative:
        ax.set_xlabel("relative layer position (0 = input layer, 1 = output layer)")
    else:
        names = next(iter(curves.values()))[0]
        ax.set_xlabel("layer (input → output)")
        if len(names) <= 12:
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if any(curves):
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig, data


def plot_norm_heatmap(
    recorder: GradientRecorder | Mapping[str, Any],
    kind: str = "weight",
    ax=None,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
):
    """Layer × step heatmap of ``log10`` gradient norms (or dead-ReLU fractions for ``kind="dead_relu"``).

    Takes a recorder or its ``history`` dict. Returns ``(fig, data)`` with ``data["values"]`` the
    ``(layers, steps)`` array drawn (log10 of the norms; raw fractions for dead ReLUs), ``data["zero"]``
    the cells whose norm is exactly 0 (drawn black: e.g. a gradient that underflowed), ``data["steps"]``
    and ``data["layers"]``.
    """
    import matplotlib.pyplot as plt

    check_choice("kind", kind, KINDS)
    h = recorder.history if isinstance(recorder, (GradientRecorder, ReferenceGradientRecorder)) else recorder
    steps = np.asarray(h["steps"])
    if not len(steps):
        raise ValueError("Nothing recorded yet: train with the recorder (record(step) after backward) first.")
    layers = h["relu_layers"] if kind == "dead_relu" else h["layers"]
    raw = np.asarray(h[kind], float).T
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    if kind == "dead_relu":
        values, label = raw, "dead-ReLU fraction"
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(raw > 0, np.log10(raw), np.nan)
        label = f"log10 ‖∂L/∂{'W' if kind == 'weight' else 'b'}‖"
        if np.any(raw == 0):  # log10(0) has no colour: those cells are drawn black, and the label says so
            label += "   (black: exactly 0)"
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 0.5 + min(8, 0.12 * len(layers) + 2)))
    else:
        fig = ax.figure
    image = ax.imshow(
        values,
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        extent=(steps[0] - 0.5, steps[-1] + 0.5, len(layers) - 0.5, -0.5),
    )
    if kind != "dead_relu" and np.any(raw == 0):
        from matplotlib.colors import ListedColormap

        ax.imshow(
            np.ma.masked_where(raw != 0, np.ones_like(raw)),
            aspect="auto",
            interpolation="nearest",
            cmap=ListedColormap(["black"]),
            extent=image.get_extent(),
        )
    if colorbar:
        fig.colorbar(image, ax=ax, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("layer (input at top)")
    if len(layers) <= 20:
        ax.set_yticks(range(len(layers)), layers, fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    zero = raw == 0 if kind != "dead_relu" else np.zeros_like(raw, dtype=bool)
    return fig, {"values": values, "zero": zero, "steps": steps, "layers": list(layers), "label": label}


def plot_norm_heatmaps(records: Mapping[str, Any], kind: str = "weight", title: str | None = None):
    """:func:`plot_norm_heatmap` of several runs side by side on ONE colour scale with one colour bar, so equal
    colours mean equal norms across panels (e.g. plain vs residual).

    ``records``: ``{label: recorder or its history}``. Returns ``(fig, data)`` with ``data[label]`` each panel's
    data and ``data["scale"] = (vmin, vmax)``, the common colour range.
    """
    import matplotlib.pyplot as plt

    check_choice("kind", kind, KINDS)
    if not records:
        raise ValueError("plot_norm_heatmaps needs at least one {label: recorder}.")
    histories = {k: (r.history if hasattr(r, "history") else r) for k, r in records.items()}
    finite = []
    for h in histories.values():
        raw = np.asarray(h[kind], float)
        with np.errstate(divide="ignore", invalid="ignore"):
            shown = raw if kind == "dead_relu" else np.where(raw > 0, np.log10(raw), np.nan)
        finite.append(shown[np.isfinite(shown)])
    pooled = np.concatenate(finite) if finite else np.zeros(0)
    vmin, vmax = (float(pooled.min()), float(pooled.max())) if pooled.size else (None, None)
    height = max(3.0, 0.5 + min(8, 0.12 * max(len(h["layers"]) for h in histories.values()) + 2))
    fig, axes = plt.subplots(1, len(histories), figsize=(5.6 * len(histories) + 1.2, height), squeeze=False)
    data: dict[str, Any] = {}
    for ax, (label, h) in zip(axes[0], histories.items()):
        _, data[label] = plot_norm_heatmap(h, kind=kind, ax=ax, title=label, vmin=vmin, vmax=vmax, colorbar=False)
    fig.colorbar(axes[0][0].images[0], ax=list(axes[0]), label=next(iter(data.values()))["label"])
    if title:
        fig.suptitle(title)
    data["scale"] = (vmin, vmax)
    return fig, data


def dead_fraction_by_layer(recorder: GradientRecorder | Mapping[str, Any], last: int = 20) -> dict[str, float]:
    """``{ReLU name: mean dead-unit fraction over the last ``last`` recorded steps}`` (NaN steps ignored)."""
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


def plot_grad_histograms(
    model: nn.Module,
    layer_types: Sequence[type[nn.Module]] = WEIGHT_LAYERS,
    max_layers: int = 8,
    bins: int = 60,
    log_abs: bool = True,
    ax=None,
    title: str | None = None,
    layers: Iterable[str] | None = None,
):
    """Histograms of the weight-gradient entries now in ``.grad``, one curve per layer.

    With ``log_abs`` (default) the histogram is of ``log10|g|`` over the non-zero entries, so layers
    whose gradients differ by orders of magnitude share one axis. At most ``max_layers`` layers,
    evenly spaced from input to output (or the named ``layers``). Returns ``(fig, data)`` with
    ``data[layer] = {"counts", "edges", "zero_fraction"}``.
    """
    import matplotlib.pyplot as plt

    found = [(n, m) for n, m in weight_layers(model, layer_types) if m.weight.grad is not None]
    if not found:
        raise ValueError("No layer has a gradient yet: run a backward pass (or grad_norms_at_init) first.")
    if layers is not None:
        wanted = list(layers)
        by_name = dict(found)
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise ValueError(f"No layer with a gradient named {missing[0]!r}; known: {', '.join(by_name)}.")
        found = [(n, by_name[n]) for n in wanted]
    elif len(found) > max_layers:
        picks = np.unique(np.linspace(0, len(found) - 1, max_layers).round().astype(int))
        found = [found[i] for i in picks]
    grads = {n: m.weight.grad.detach().float().flatten().cpu().numpy() for n, m in found}
    if log_abs:
        with np.errstate(divide="ignore"):
            samples = {n: np.log10(np.abs(g[g != 0])) for n, g in grads.items()}
    else:
        samples = grads
    nonempty = [s for s in samples.values() if len(s)]
    pooled = np.concatenate(nonempty) if nonempty else np.zeros(1)
    edges = np.histogram_bin_edges(pooled, bins=bins)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
    else:
        fig = ax.figure
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(samples)))
    data = {}
    for color, (name, s) in zip(colors, samples.items()):
        counts, _ = np.histogram(s, bins=edges, density=False)
        density = counts / max(1, counts.sum())
        ax.stairs(density, edges, color=color, label=name, lw=1.3)
        data[name] = {"counts": counts, "edges": edges, "zero_fraction": float(np.mean(grads[name] == 0))}
    ax.set_xlabel("log10 |∂L/∂w|" if log_abs else "∂L/∂w")
    ax.set_ylabel("fraction of entries")
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig, data


__all__ = [
    "history_at",
    "GradientRecorder",
    "ReferenceGradientRecorder",
    "layer_grad_norms",
    "grad_norms_at_init",
    "first_last_ratio",
    "weight_layers",
    "unit_maxima",
    "dead_fraction",
    "dead_fractions_on",
    "plot_layer_norms",
    "plot_norm_heatmap",
    "plot_grad_histograms",
    "WEIGHT_LAYERS",
    "RELU_LAYERS",
]
