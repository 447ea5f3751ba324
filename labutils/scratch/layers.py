"""Layers for from-scratch networks in NumPy, with torch's parameter names, layouts and initialisation.

Every layer follows one contract (the CS231n one, with torch's names):

- ``params`` and ``grads``: dicts with the same keys (``"weight"``, ``"bias"``) and the same shapes as
  the matching ``torch.nn`` layer (``Linear.weight`` is ``(out_features, in_features)``, ``Conv2d.weight``
  is ``(out_channels, in_channels / groups, kh, kw)``); parameter-free layers have empty dicts.
- ``forward(x)`` computes the output and remembers what the backward pass needs;
  ``backward(dout)`` takes dL/d(output) and returns dL/d(input), **overwriting** ``grads``
  (no accumulation across calls, unlike torch).
- Gradient arrays are allocated once and written in place, so the lists returned by
  ``Sequential.parameters()`` / ``gradients()`` stay valid for an optimizer during the whole run.

Initialisation matches torch's defaults: weights ~ U(-b, b) with b = 1/sqrt(fan_in) (that is
``kaiming_uniform_(a=sqrt(5))``) and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), where fan_in is
``in_features`` or ``in_channels / groups * kh * kw``. ``rng`` may be a ``np.random.Generator``, an int
seed, or None (NumPy's global generator, so ``labutils.seed_everything`` makes runs repeatable).

Inputs must have the layer's dtype (float32 by default): as in torch, a float64 batch into a float32
layer is an error, not a silent cast. ``Sequential.astype(np.float64)`` converts a whole model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from labutils.util import check_int, check_probability, state_mismatch

from . import functional as F

__all__ = [
    "Layer",
    "Linear",
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Flatten",
    "Dropout",
    "Sequential",
]


def make_rng(rng):
    """A generator from a Generator, an int seed, or None: NumPy's global functions (``np.random``, seeded by
    ``seed_everything``), which offer the same ``normal``/``uniform``/``choice``/``permutation`` calls."""
    if rng is None or rng is np.random:
        return np.random
    if isinstance(rng, (np.random.Generator, np.random.RandomState)):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy Generator, an int seed or None, got {rng!r}.")


def _check_float_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"Layer dtype must be a floating-point type such as np.float32, got {dtype}.")
    return dtype


class Layer:
    """Base class: empty ``params``/``grads``, a ``training`` flag, ``__call__`` = ``forward``."""

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def train(self, mode: bool = True) -> Layer:
        self.training = bool(mode)
        return self

    def eval(self) -> Layer:
        return self.train(False)

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def astype(self, dtype) -> Layer:
        """Convert parameters and gradients to ``dtype`` (new arrays: build optimizers afterwards)."""
        dtype = _check_float_dtype(dtype)
        self.params = {k: v.astype(dtype) for k, v in self.params.items()}
        self.grads = {k: v.astype(dtype) for k, v in self.grads.items()}
        return self

    def _check_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        weight = self.params.get("weight")
        if weight is not None and x.dtype != weight.dtype:
            raise ValueError(
                f"{type(self).__name__} holds {weight.dtype} parameters but got a {x.dtype} input of shape {x.shape}; "
                f"cast the input (x.astype(np.{weight.dtype})) or the model (model.astype(...))."
            )
        return x

    def _check_dout(self, dout, shape) -> np.ndarray:
        dout = np.asarray(dout)
        if dout.shape != tuple(shape):
            raise ValueError(f"{type(self).__name__}.backward got dout of shape {dout.shape}; expected {tuple(shape)}.")
        return dout

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class _Parametrised(Layer):
    """A layer with a weight and an optional bias, initialised like torch (uniform, bound 1/sqrt(fan_in))."""

    def _init_params(self, weight_shape, fan_in: int, bias: bool, dtype, rng) -> None:
        dtype = _check_float_dtype(dtype)
        rng = make_rng(rng)
        bound = 1.0 / math.sqrt(fan_in)
        self.params["weight"] = rng.uniform(-bound, bound, size=weight_shape).astype(dtype)
        if bias:
            self.params["bias"] = rng.uniform(-bound, bound, size=weight_shape[0]).astype(dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}


class Linear(_Parametrised):
    """Affine map ``y = x @ W.T + b``. x: (..., in_features) -> y: (..., out_features).

    weight: (out_features, in_features); bias: (out_features,).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=np.float32, rng=None):
        super().__init__()
        self.in_features = check_int("in_features", in_features)
        self.out_features = check_int("out_features", out_features)
        self._init_params((self.out_features, self.in_features), self.in_features, bias, dtype, rng)
        self._x = None

    def forward(self, x):
        x = self._check_input(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}) expects input of shape (..., {self.in_features}); "
                f"got {x.shape}."
            )
        self._x = x
        out = x @ self.params["weight"].T
        if "bias" in self.params:
            out += self.params["bias"]
        return out

    def backward(self, dout):
        if self._x is None:
            raise RuntimeError("Linear.backward called before forward.")
        x = self._x
        dout = self._check_dout(dout, (*x.shape[:-1], self.out_features)).astype(x.dtype, copy=False)
        d2, x2 = dout.reshape(-1, self.out_features), x.reshape(-1, self.in_features)
        self.grads["weight"][...] = d2.T @ x2
        if "bias" in self.params:
            self.grads["bias"][...] = d2.sum(axis=0)
        return dout @ self.params["weight"]

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={'bias' in self.params}"


class Conv2d(_Parametrised):
    """2-D convolution layer like ``torch.nn.Conv2d`` (see ``functional.conv2d`` for the arguments).

    x: (N, C_in, H, W) -> (N, C_out, H_out, W_out); weight: (C_out, C_in/groups, kh, kw); bias: (C_out,).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        dtype=np.float32,
        rng=None,
    ):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        self.groups = check_int("groups", groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}.")
        self.kernel_size = F._pair(kernel_size, "kernel_size", 1)
        self.stride = F._pair(stride, "stride", 1)
        self.dilation = F._pair(dilation, "dilation", 1)
        F._padding4(padding, self.kernel_size, self.stride, self.dilation)  # validate now, not at first forward
        self.padding = padding if isinstance(padding, str) else F._pair(padding, "padding", 0)
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self._init_params(shape, fan_in, bias, dtype, rng)
        self._cache = None

    def forward(self, x):
        x = self._check_input(x)
        out, self._cache = F.conv2d_forward(
            x, self.params["weight"], self.params.get("bias"), self.stride, self.padding, self.dilation, self.groups
        )
        return out

    def backward(self, dout):
        if self._cache is None:
            raise RuntimeError("Conv2d.backward called before forward.")
        dx, dweight, dbias = F.conv2d_backward(dout, self._cache)
        self.grads["weight"][...] = dweight
        if dbias is not None:
            self.grads["bias"][...] = dbias
        return dx

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding not in ((0, 0), "valid"):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + ("" if "bias" in self.params else ", bias=False")


class _Pool2d(Layer):
    _forward = None
    _backward = None

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = F._pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else F._pair(stride, "stride", 1)
        self.padding = F._pair(padding, "padding", 0)
        self._cache = None

    def forward(self, x):
        out, self._cache = type(self)._forward(x, self.kernel_size, self.stride, self.padding)
        return out

    def backward(self, dout):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward.")
        return type(self)._backward(dout, self._cache)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max pooling like ``torch.nn.MaxPool2d`` (stride defaults to kernel_size). (N, C, H, W) -> (N, C, H', W')."""

    _forward = staticmethod(F.max_pool2d_forward)
    _backward = staticmethod(F.max_pool2d_backward)


class AvgPool2d(_Pool2d):
    """Average pooling like ``torch.nn.AvgPool2d`` (stride defaults to kernel_size; padded zeros count)."""

    _forward = staticmethod(F.avg_pool2d_forward)
    _backward = staticmethod(F.avg_pool2d_backward)


class ReLU(Layer):
    """max(x, 0), elementwise. The gradient at exactly 0 is taken as 0, as in torch."""

    def forward(self, x):
        self._out = np.maximum(np.asarray(x), 0)
        return self._out

    def backward(self, dout):
        dout = self._check_dout(dout, self._out.shape)
        return dout * (self._out > 0)


class Sigmoid(Layer):
    """1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2 so large |x| cannot overflow."""

    def forward(self, x):
        x = np.asarray(x)
        self._out = (0.5 * (1.0 + np.tanh(0.5 * x))).astype(x.dtype, copy=False)
        return self._out

    def backward(self, dout):
        dout = self._check_dout(dout, self._out.shape)
        return dout * self._out * (1 - self._out)


class Tanh(Layer):
    """tanh(x), elementwise; its derivative is 1 - tanh(x)^2."""

    def forward(self, x):
        self._out = np.tanh(np.asarray(x))
        return self._out

    def backward(self, dout):
        dout = self._check_dout(dout, self._out.shape)
        return dout * (1 - self._out**2)


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...), like ``torch.nn.Flatten()`` (start_dim=1)."""

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim < 1:
            raise ValueError(f"Flatten needs an input with a batch axis; got a scalar of shape {x.shape}.")
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        dout = np.asarray(dout)
        expected = (self._shape[0], int(np.prod(self._shape[1:])))
        return self._check_dout(dout, expected).reshape(self._shape)


class Dropout(Layer):
    """Inverted dropout: in training, zero each element with probability p and scale the rest by
    1/(1-p) so the expected activation is unchanged; in eval mode it is the identity."""

    def __init__(self, p: float = 0.5, rng=None):
        super().__init__()
        self.p = check_probability("p", p, include_one=True)  # p = 1 drops everything: allowed, if useless
        self.rng = make_rng(rng)
        self._mask = None

    def forward(self, x):
        x = np.asarray(x)
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        keep = self.rng.uniform(size=x.shape) >= self.p
        scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        self._mask = (keep * scale).astype(x.dtype)
        return x * self._mask

    def backward(self, dout):
        dout = np.asarray(dout)
        return dout if self._mask is None else self._check_dout(dout, self._mask.shape) * self._mask

    def extra_repr(self):
        return f"p={self.p}"


class Sequential(Layer):
    """Layers applied in order; backward runs them in reverse.

    Parameters are named like torch's ``nn.Sequential``: ``"0.weight"``, ``"0.bias"``, ``"3.weight"``...
    ``parameters()`` and ``gradients()`` return aligned lists of the live arrays (update them in place);
    ``state_dict()`` returns copies (a snapshot) and ``load_state_dict`` copies values back in place.
    """

    def __init__(self, *layers: Layer):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ValueError(f"Sequential item {i} is a {type(layer).__name__}, not a labutils.scratch layer.")
        self.layers = list(layers)

    # container protocol
    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, index):
        return Sequential(*self.layers[index]) if isinstance(index, slice) else self.layers[index]

    def __repr__(self) -> str:
        lines = [f"  ({i}): {layer!r}".replace("\n", "\n  ") for i, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)"

    # computation
    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    # parameters
    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        return [(name, p) for name, p, _ in self._named_pairs()]

    def named_gradients(self) -> list[tuple[str, np.ndarray]]:
        return [(name, g) for name, _, g in self._named_pairs()]

    def _named_pairs(self):
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Sequential):
                for name, p, g in layer._named_pairs():
                    yield f"{i}.{name}", p, g
            else:
                for key, p in layer.params.items():
                    yield f"{i}.{key}", p, layer.grads[key]

    def parameters(self) -> list[np.ndarray]:
        return [p for _, p, _ in self._named_pairs()]

    def gradients(self) -> list[np.ndarray]:
        return [g for _, _, g in self._named_pairs()]

    def num_parameters(self) -> int:
        """Total number of scalar parameters."""
        return int(sum(p.size for p in self.parameters()))

    def zero_grad(self) -> None:
        for g in self.gradients():
            g.fill(0)

    def train(self, mode: bool = True) -> Sequential:
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def astype(self, dtype) -> Sequential:
        for layer in self.layers:
            layer.astype(dtype)
        return self

    # checkpoints
    def state_dict(self) -> dict[str, np.ndarray]:
        """A snapshot ``{"0.weight": array, ...}`` (copies, so later training does not change it)."""
        return {name: p.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays from ``state`` into the parameters in place (dtype converted to the model's).

        Raises ValueError on missing or unexpected keys and on any shape mismatch, before changing anything.
        """
        own = dict(self.named_parameters())
        problem = state_mismatch({name: p.shape for name, p in own.items()}, state)
        if problem:
            raise ValueError(f"The state does not match this {type(self).__name__}: {problem}.")
        for name, p in own.items():
            p[...] = state[name]
