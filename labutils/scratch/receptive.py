"""Receptive fields of a stack of convolution and pooling layers.

For each layer, along each spatial axis, with kernel k, stride s, padding p, dilation d and
effective kernel k_eff = d (k - 1) + 1, the standard recurrences are

    jump_out  = jump_in * s                              (effective stride: input pixels between
                                                          neighbouring output units)
    rf_out    = rf_in + (k_eff - 1) * jump_in            (receptive field, in input pixels)
    start_out = start_in + ((k_eff - 1) / 2 - p) * jump_in   (centre of the first unit's field)
    size_out  = (size_in + 2 p - k_eff) // s + 1

starting from jump = 1, rf = 1, start = 0 (pixel centres at 0, 1, 2, ...) for the input image.

A stack is either scratch layers (a ``Sequential`` or a list) or a list of specs
``(kind, kernel, stride, padding, dilation)`` (padding and dilation optional, default 0 and 1), where
kind is a label such as ``"conv"`` or ``"pool"``. Elementwise layers (ReLU, Sigmoid, Tanh, Dropout)
appear with kernel 1 and stride 1; the table stops at the first ``Flatten`` or ``Linear``, whose units
see the whole input.
"""

from __future__ import annotations

from . import functional as F
from .layers import AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, Sigmoid, Tanh

__all__ = ["layer_geometry", "receptive_field_table", "receptive_field"]

_ELEMENTWISE = (ReLU, Sigmoid, Tanh, Dropout)


def _flatten_layers(stack, prefix=""):
    for i, layer in enumerate(stack):
        if isinstance(layer, Sequential):
            yield from _flatten_layers(layer, f"{prefix}{i}.")
        else:
            yield f"{prefix}{i}", layer


def layer_geometry(stack) -> list[dict]:
    """Normalise a stack into dicts {layer, kernel, stride, pads (top, bottom, left, right), dilation}."""
    if isinstance(stack, (Conv2d, MaxPool2d, AvgPool2d)):
        stack = [stack]
    out = []
    for index, item in _flatten_layers(stack) if not _is_spec_list(stack) else enumerate(stack):
        if isinstance(item, (tuple, list)):
            out.append(_spec_geometry(index, item))
        elif isinstance(item, (Flatten, Linear)):
            break
        elif isinstance(item, Conv2d):
            pads = F._padding4(item.padding, item.kernel_size, item.stride, item.dilation)
            out.append(
                dict(
                    layer=f"{index}: Conv2d",
                    kernel=item.kernel_size,
                    stride=item.stride,
                    pads=pads,
                    dilation=item.dilation,
                    padding=item.padding,
                )
            )
        elif isinstance(item, (MaxPool2d, AvgPool2d)):
            ph, pw = item.padding
            out.append(
                dict(
                    layer=f"{index}: {type(item).__name__}",
                    kernel=item.kernel_size,
                    stride=item.stride,
                    pads=(ph, ph, pw, pw),
                    dilation=(1, 1),
                    padding=item.padding,
                )
            )
        elif isinstance(item, _ELEMENTWISE):
            out.append(
                dict(
                    layer=f"{index}: {type(item).__name__}",
                    kernel=(1, 1),
                    stride=(1, 1),
                    pads=(0, 0, 0, 0),
                    dilation=(1, 1),
                    padding=(0, 0),
                )
            )
        else:
            raise ValueError(
                f"Cannot compute a receptive field through {item!r}: use Conv2d, MaxPool2d, AvgPool2d, elementwise "
                "layers, or specs (kind, kernel, stride, padding, dilation)."
            )
    return out


def _is_spec_list(stack) -> bool:
    return isinstance(stack, (list, tuple)) and all(isinstance(s, (list, tuple)) for s in stack) and len(stack) > 0


def _spec_geometry(index, spec) -> dict:
    if not 3 <= len(spec) <= 5 or not isinstance(spec[0], str):
        raise ValueError(
            f"A layer spec is (kind, kernel, stride[, padding[, dilation]]) with kind a string; got {spec!r}."
        )
    kind, kernel, stride = spec[:3]
    padding = spec[3] if len(spec) > 3 else 0
    dilation = spec[4] if len(spec) > 4 else 1
    kernel = F._pair(kernel, "kernel", 1)
    stride = F._pair(stride, "stride", 1)
    dilation = F._pair(dilation, "dilation", 1)
    pads = F._padding4(padding, kernel, stride, dilation)
    return dict(layer=f"{index}: {kind}", kernel=kernel, stride=stride, pads=pads, dilation=dilation, padding=padding)


def _compact(pair):
    """Show (a, a) as a and keep (a, b) as a tuple; floats that are whole become ints."""
    pair = tuple(int(v) if float(v).is_integer() else float(v) for v in pair)
    return pair[0] if pair[0] == pair[1] else pair


def receptive_field_table(stack, input_size=None) -> list[dict]:
    """One row per layer: ``{layer, kernel, stride, padding, dilation, jump, receptive_field, start,
    output_size}`` with values after that layer (ints when equal along both axes, else (h, w) pairs).

    input_size: optional int or (H, W) of the input image, to also report each layer's output size
    (None otherwise). See the module docstring for the recurrences.
    """
    geometry = layer_geometry(stack)
    if not geometry:
        raise ValueError("The stack has no convolution, pooling or elementwise layers before Flatten/Linear.")
    size = None if input_size is None else list(F._pair(input_size, "input_size", 1))
    jump, rf, start = [1, 1], [1, 1], [0.0, 0.0]
    rows = []
    for g in geometry:
        for axis in range(2):
            k_eff = g["dilation"][axis] * (g["kernel"][axis] - 1) + 1
            pad_before, pad_after = g["pads"][2 * axis], g["pads"][2 * axis + 1]
            start[axis] += ((k_eff - 1) / 2 - pad_before) * jump[axis]
            rf[axis] += (k_eff - 1) * jump[axis]
            jump[axis] *= g["stride"][axis]
            if size is not None:
                size[axis] = (size[axis] + pad_before + pad_after - k_eff) // g["stride"][axis] + 1
                if size[axis] < 1:
                    raise ValueError(f"Layer {g['layer']} leaves no output for an input of size {input_size}.")
        padding = g["padding"] if isinstance(g["padding"], str) else _compact(F._pair(g["padding"], "padding", 0))
        rows.append(
            {
                "layer": g["layer"],
                "kernel": _compact(g["kernel"]),
                "stride": _compact(g["stride"]),
                "padding": padding,
                "dilation": _compact(g["dilation"]),
                "jump": _compact(jump),
                "receptive_field": _compact(rf),
                "start": _compact(start),
                "output_size": None if size is None else _compact(size),
            }
        )
    return rows


def receptive_field(stack) -> tuple:
    """(receptive_field, jump) after the last spatial layer of the stack."""
    last = receptive_field_table(stack)[-1]
    return last["receptive_field"], last["jump"]
