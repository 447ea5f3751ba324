"""Convolution and pooling in NumPy, with the semantics of ``torch.nn.functional``.

Layout is NCHW throughout: ``x`` has shape ``(N, C, H, W)`` (or ``(C, H, W)`` for a single
unbatched image, as torch allows), a convolution weight has shape ``(C_out, C_in / groups, kh, kw)``.
``stride``, ``padding`` and ``dilation`` take an int or an ``(h, w)`` pair; ``padding`` also takes
``"valid"`` (no padding) and ``"same"`` (output as large as the input; stride 1 only; an odd total
padding puts the extra row/column at the bottom/right, like torch). The output has the input's dtype.

Output size along one axis (torch's formula, floor division):

    out = (in + pad_before + pad_after - dilation * (k - 1) - 1) // stride + 1

How the vectorised convolution works (im2col): every receptive-field patch of the padded input is
copied into one column of a matrix ``cols`` of shape ``(groups, C_in/groups * kh * kw, H_out * W_out)``
per image; the convolution is then a matrix product ``weight @ cols``. The backward pass uses ``cols``
for the weight gradient (``dout @ cols.T``) and scatters ``weight.T @ dout`` back onto the input
positions (col2im) with one strided addition per kernel tap, so overlapping windows add up. Images go
through in chunks whose columns fit in the CPU cache (``COLS_BUDGET_BYTES``); the backward pass
rebuilds each chunk's columns instead of keeping a batch-sized copy alive.

Every ``*_forward`` returns ``(out, cache)`` and the matching ``*_backward(dout, cache)`` returns the
gradients; the plain ``conv2d`` / ``max_pool2d`` / ``avg_pool2d`` return only the output.
``conv2d_naive`` is the same convolution as four plain loops, to read (and to time), not to use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "conv2d",
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_naive",
    "conv_output_size",
    "max_pool2d",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
]


# -- argument parsing ----------------------------------------------------------------------------
def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    """Turn an int or an (h, w) pair into a validated pair of ints >= ``minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints (h, w), got {value!r}.")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum} in both directions, got {value!r}.")
    return pair


def _padding4(padding, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]):
    """Padding as (top, bottom, left, right), accepting an int, a pair, "valid" or "same"."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1 (as in torch), got stride={stride}.")
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}.")
    ph, pw = _pair(padding, "padding", 0)
    return (ph, ph, pw, pw)


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length along one axis of a convolution or pooling (torch's floor formula; symmetric padding)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _as_batch(x, op: str, ndim_name: str = "x") -> tuple[np.ndarray, bool]:
    """Accept (N, C, H, W) or unbatched (C, H, W) floating arrays; return 4-D view and unbatched flag."""
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"{op} expects {ndim_name} of shape (N, C, H, W) or (C, H, W); got shape {x.shape}.")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{op} expects a floating-point {ndim_name}; got dtype {x.dtype}.")
    return (x[None], True) if x.ndim == 3 else (x, False)


def _pad(x: np.ndarray, pads: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    """Pad the two spatial axes of an NCHW array (faster than np.pad for this one case)."""
    top, bottom, left, right = pads
    if not any(pads):
        return x
    n, c, h, w = x.shape
    xp = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    xp[:, :, top : top + h, left : left + w] = x
    return xp


def _unpad(xp: np.ndarray, pads: tuple[int, int, int, int], h: int, w: int) -> np.ndarray:
    top, _, left, _ = pads
    if not any(pads):
        return xp
    return np.ascontiguousarray(xp[:, :, top : top + h, left : left + w])


def _window_view(xp, kernel, stride, dilation, out_hw) -> np.ndarray:
    """Read-only view (N, C, kh, kw, H_out, W_out): element [n, c, i, j, y, x] is the input pixel
    under kernel tap (i, j) of the window that produces output pixel (y, x). No copy."""
    n, c = xp.shape[:2]
    s_n, s_c, s_h, s_w = xp.strides
    return as_strided(
        xp,
        shape=(n, c, kernel[0], kernel[1], out_hw[0], out_hw[1]),
        strides=(s_n, s_c, dilation[0] * s_h, dilation[1] * s_w, stride[0] * s_h, stride[1] * s_w),
        writeable=False,
    )


def _tap_slice(i: int, j: int, stride, dilation, out_hw) -> tuple[slice, slice]:
    """Spatial slices of the padded input touched by kernel tap (i, j) over all output positions."""
    top, left = i * dilation[0], j * dilation[1]
    return (
        slice(top, top + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
        slice(left, left + stride[1] * (out_hw[1] - 1) + 1, stride[1]),
    )


@dataclass(frozen=True)
class _Geometry:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, bottom, left, right
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]


def _geometry(op, x_shape, kernel, stride, padding, dilation) -> _Geometry:
    """Validate the sliding-window arguments against the input and compute the output size."""
    kernel = _pair(kernel, "kernel_size", 1)
    stride = _pair(stride, "stride", 1)
    dilation = _pair(dilation, "dilation", 1)
    pads = _padding4(padding, kernel, stride, dilation)
    h, w = x_shape[-2:]
    padded = (h + pads[0] + pads[1], w + pads[2] + pads[3])
    effective = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    if effective[0] > padded[0] or effective[1] > padded[1]:
        raise ValueError(
            f"{op}: the kernel {kernel} (dilation {dilation}, effective size {effective}) is larger than the "
            f"padded input {padded} (input {tuple(x_shape)}, padding {padding!r})."
        )
    out_hw = tuple((p - e) // s + 1 for p, e, s in zip(padded, effective, stride))
    return _Geometry(kernel, stride, dilation, pads, (h, w), out_hw)


# -- convolution ---------------------------------------------------------------------------------
def _check_conv_args(x: np.ndarray, weight, bias, groups) -> tuple[np.ndarray, np.ndarray | None, int]:
    weight = np.asarray(weight)
    if weight.ndim != 4:
        raise ValueError(f"conv2d expects weight of shape (C_out, C_in/groups, kh, kw); got shape {weight.shape}.")
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}.")
    groups = int(groups)
    c_in, c_out = x.shape[1], weight.shape[0]
    if c_in % groups or c_out % groups:
        raise ValueError(
            f"groups={groups} must divide both the input channels ({c_in}, x shape {x.shape}) and the output "
            f"channels ({c_out}, weight shape {weight.shape})."
        )
    if weight.shape[1] * groups != c_in:
        raise ValueError(
            f"Channel mismatch: x of shape {x.shape} has {c_in} channels, but weight of shape {weight.shape} "
            f"with groups={groups} expects {weight.shape[1] * groups}."
        )
    if weight.dtype != x.dtype:
        raise ValueError(f"x has dtype {x.dtype} but weight has dtype {weight.dtype}; use the same dtype for both.")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (c_out,):
            raise ValueError(f"bias must have shape ({c_out},) for weight of shape {weight.shape}; got {bias.shape}.")
        if bias.dtype != x.dtype:
            raise ValueError(f"x has dtype {x.dtype} but bias has dtype {bias.dtype}; use the same dtype for both.")
    return weight, bias, groups


# Images are processed in chunks whose im2col matrix stays within this many bytes: small enough to
# stay in the CPU cache between the copy and the matrix product (about 2x faster on the lab's layers
# than one batch-sized matrix), large enough that the Python loop over chunks costs nothing.
COLS_BUDGET_BYTES = 2**21


def _chunk_size(n: int, c_in: int, geo: _Geometry, itemsize: int) -> int:
    per_image = c_in * geo.kernel[0] * geo.kernel[1] * geo.out_hw[0] * geo.out_hw[1] * itemsize
    return max(1, min(n, COLS_BUDGET_BYTES // max(per_image, 1)))


def _im2col(xp, geo: _Geometry, buffer: np.ndarray, start: int, stop: int, groups: int) -> np.ndarray:
    """Copy the windows of images start..stop-1 into ``buffer``; return them as (n, G, C_in/G*kh*kw, P)."""
    cols = buffer[: stop - start]
    np.copyto(cols, _window_view(xp[start:stop], geo.kernel, geo.stride, geo.dilation, geo.out_hw))
    return cols.reshape(stop - start, groups, -1, geo.out_hw[0] * geo.out_hw[1])


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation like ``torch.nn.functional.conv2d``, returning ``(out, cache)``.

    x: (N, C_in, H, W) or (C_in, H, W); weight: (C_out, C_in/groups, kh, kw); bias: (C_out,) or None.
    Returns out: (N, C_out, H_out, W_out) (or unbatched), same dtype as x; cache for ``conv2d_backward``
    (it keeps references to x and weight: do not modify them in place before the backward pass).
    """
    x, unbatched = _as_batch(x, "conv2d")
    weight, bias, groups = _check_conv_args(x, weight, bias, groups)
    geo = _geometry("conv2d", x.shape, weight.shape[2:], stride, padding, dilation)
    n, c_in = x.shape[:2]
    c_out = weight.shape[0]
    xp = _pad(x, geo.pads)
    w = weight.reshape(groups, c_out // groups, -1)  # (G, C_out/G, C_in/G * kh * kw)
    out = np.empty((n, groups, c_out // groups, geo.out_hw[0] * geo.out_hw[1]), dtype=x.dtype)
    chunk = _chunk_size(n, c_in, geo, x.itemsize)
    buffer = np.empty((chunk, c_in, *geo.kernel, *geo.out_hw), dtype=x.dtype)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        cols = _im2col(xp, geo, buffer, start, stop, groups)  # (n, G, C_in/G * kh * kw, H_out * W_out)
        np.matmul(w, cols, out=out[start:stop])  # one matrix product per image and group
    out = out.reshape(n, c_out, *geo.out_hw)
    if bias is not None:
        out += bias[:, None, None]
    cache = (xp, weight, bias is not None, groups, geo, x.shape, unbatched)
    return (out[0] if unbatched else out), cache


def conv2d_backward(dout, cache):
    """Gradients of ``conv2d_forward``: returns ``(dx, dweight, dbias)`` (dbias is None without bias).

    dout has the forward output's shape; dx, dweight and dbias have the shapes of x, weight and bias.
    The im2col columns are rebuilt chunk by chunk (cheaper than keeping a batch-sized copy in memory).
    """
    xp, weight, has_bias, groups, geo, x_shape, unbatched = cache
    dout = np.asarray(dout)
    if unbatched:
        dout = dout[None]
    n, c_in, h, w = x_shape
    c_out = weight.shape[0]
    expected = (n, c_out, *geo.out_hw)
    if dout.shape != expected:
        raise ValueError(f"conv2d_backward: dout has shape {dout.shape}, expected the output shape {expected}.")
    dout = dout.astype(xp.dtype, copy=False)
    d = dout.reshape(n, groups, c_out // groups, geo.out_hw[0] * geo.out_hw[1])  # (N, G, C_out/G, P)
    w_t = weight.reshape(groups, c_out // groups, -1).transpose(0, 2, 1)  # (G, K, C_out/G)
    dweight = np.zeros((groups, c_out // groups, w_t.shape[1]), dtype=xp.dtype)  # (G, C_out/G, K)
    dxp = np.zeros(xp.shape, dtype=xp.dtype)
    chunk = _chunk_size(n, c_in, geo, xp.itemsize)
    buffer = np.empty((chunk, c_in, *geo.kernel, *geo.out_hw), dtype=xp.dtype)
    dbuffer = np.empty_like(buffer)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        cols = _im2col(xp, geo, buffer, start, stop, groups)
        # Weight gradient: dout @ cols^T, summed over the images.
        dweight += np.matmul(d[start:stop], cols.transpose(0, 1, 3, 2)).sum(axis=0)
        # Input gradient: weight^T @ dout gives every window's gradient; col2im adds the windows back
        # onto the input, one strided addition per kernel tap, so overlapping windows accumulate.
        dcols = dbuffer[: stop - start]
        np.matmul(w_t, d[start:stop], out=dcols.reshape(cols.shape))
        for i in range(geo.kernel[0]):
            for j in range(geo.kernel[1]):
                rows, columns = _tap_slice(i, j, geo.stride, geo.dilation, geo.out_hw)
                dxp[start:stop, :, rows, columns] += dcols[:, :, i, j]
    dbias = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dx = _unpad(dxp, geo.pads, h, w)
    return (dx[0] if unbatched else dx), dweight.reshape(weight.shape), dbias


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """``torch.nn.functional.conv2d`` in NumPy (vectorised im2col + matmul); see the module docstring."""
    return conv2d_forward(x, weight, bias, stride, padding, dilation, groups)[0]


def conv2d_naive(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """The same convolution as ``conv2d``, written as plain loops over images, output channels and
    output pixels. Each output pixel is the sum of one window of the (padded) input times the kernel:

        out[n, o, y, x] = bias[o] + sum_{c, i, j} x_pad[n, g*C_g + c, y*s_h + i*d_h, x*s_w + j*d_w] * w[o, c, i, j]

    where g = o // (C_out / groups) is the group of output channel o and C_g = C_in / groups.
    About a thousand times slower than ``conv2d``: use it only on tiny inputs.
    """
    x, unbatched = _as_batch(x, "conv2d_naive")
    weight, bias, groups = _check_conv_args(x, weight, bias, groups)
    geo = _geometry("conv2d_naive", x.shape, weight.shape[2:], stride, padding, dilation)
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.stride, geo.dilation
    n_images, c_out = x.shape[0], weight.shape[0]
    c_group, out_per_group = weight.shape[1], c_out // groups
    xp = _pad(x, geo.pads)
    out = np.zeros((n_images, c_out, *geo.out_hw), dtype=x.dtype)
    for n in range(n_images):
        for o in range(c_out):
            first = (o // out_per_group) * c_group  # first input channel of this output channel's group
            for y in range(geo.out_hw[0]):
                for x_ in range(geo.out_hw[1]):
                    top, left = y * sh, x_ * sw
                    window = xp[
                        n,
                        first : first + c_group,
                        top : top + dh * (kh - 1) + 1 : dh,
                        left : left + dw * (kw - 1) + 1 : dw,
                    ]
                    out[n, o, y, x_] = np.sum(window * weight[o])
            if bias is not None:
                out[n, o] += bias[o]
    return out[0] if unbatched else out


# -- pooling -------------------------------------------------------------------------------------
def _pool_geometry(op, x, kernel_size, stride, padding) -> _Geometry:
    stride = kernel_size if stride is None else stride
    kernel = _pair(kernel_size, "kernel_size", 1)
    pad = _pair(padding, "padding", 0)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {padding!r} must be at most half the kernel size {kernel} (as in torch).")
    return _geometry(op, x.shape, kernel, stride, pad, 1)


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """Max pooling like ``torch.nn.functional.max_pool2d`` (stride defaults to kernel_size; padding
    counts as -inf), returning ``(out, cache)``. x: (N, C, H, W) or (C, H, W)."""
    x, unbatched = _as_batch(x, "max_pool2d")
    geo = _pool_geometry("max_pool2d", x, kernel_size, stride, padding)
    xp = _pad(x, geo.pads, value=-np.inf)
    windows = _window_view(xp, geo.kernel, geo.stride, geo.dilation, geo.out_hw)
    # One elementwise maximum per kernel tap: kh*kw fast passes instead of a reduction over a tiny axis.
    out = windows[:, :, 0, 0].copy()
    for i in range(geo.kernel[0]):
        for j in range(geo.kernel[1]):
            np.maximum(out, windows[:, :, i, j], out=out)
    cache = (windows, out, geo, x.shape, x.dtype, unbatched)
    return (out[0] if unbatched else out), cache


def max_pool2d_backward(dout, cache) -> np.ndarray:
    """Gradient of ``max_pool2d_forward``: each output's gradient goes to the input that was its max;
    when several inputs tie, to the first in row-major order within the window, as torch does."""
    windows, out, geo, x_shape, dtype, unbatched = cache
    dout = _check_pool_dout(dout, unbatched, x_shape, geo, dtype, "max_pool2d_backward")
    n, c, h, w = x_shape
    dxp = np.zeros((n, c, h + geo.pads[0] + geo.pads[1], w + geo.pads[2] + geo.pads[3]), dtype=dtype)
    unclaimed = np.ones(out.shape, dtype=bool)  # windows whose max has not been routed yet
    for i in range(geo.kernel[0]):
        for j in range(geo.kernel[1]):
            is_max = (windows[:, :, i, j] == out) & unclaimed
            unclaimed ^= is_max
            rows, columns = _tap_slice(i, j, geo.stride, geo.dilation, geo.out_hw)
            dxp[:, :, rows, columns] += dout * is_max
    dx = _unpad(dxp, geo.pads, h, w)
    return dx[0] if unbatched else dx


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Average pooling like ``torch.nn.functional.avg_pool2d`` (stride defaults to kernel_size; by
    default padded zeros count in the average, as in torch), returning ``(out, cache)``."""
    x, unbatched = _as_batch(x, "avg_pool2d")
    geo = _pool_geometry("avg_pool2d", x, kernel_size, stride, padding)
    xp = _pad(x, geo.pads)
    windows = _window_view(xp, geo.kernel, geo.stride, geo.dilation, geo.out_hw)
    # One addition per kernel tap: much faster than a reduction over two tiny strided axes.
    out = windows[:, :, 0, 0].copy()
    for i in range(geo.kernel[0]):
        for j in range(geo.kernel[1]):
            if i or j:
                out += windows[:, :, i, j]
    divisor = _avg_divisor(geo, count_include_pad, x.dtype)
    out /= divisor
    cache = (divisor, geo, x.shape, x.dtype, unbatched)
    return (out[0] if unbatched else out), cache


def _avg_divisor(geo: _Geometry, count_include_pad: bool, dtype) -> np.ndarray:
    """Number of elements each output averages: kh*kw, or only the real (unpadded) ones."""
    if count_include_pad or not any(geo.pads):
        return np.asarray(geo.kernel[0] * geo.kernel[1], dtype=dtype)
    ones = _pad(np.ones((1, 1, *geo.in_hw), dtype=dtype), geo.pads)
    return _window_view(ones, geo.kernel, geo.stride, geo.dilation, geo.out_hw).sum(axis=(2, 3))[0, 0]


def avg_pool2d_backward(dout, cache) -> np.ndarray:
    """Gradient of ``avg_pool2d_forward``: each output's gradient is shared equally by its window."""
    divisor, geo, x_shape, dtype, unbatched = cache
    dout = _check_pool_dout(dout, unbatched, x_shape, geo, dtype, "avg_pool2d_backward")
    n, c, h, w = x_shape
    share = dout / divisor
    dxp = np.zeros((n, c, h + geo.pads[0] + geo.pads[1], w + geo.pads[2] + geo.pads[3]), dtype=dtype)
    for i in range(geo.kernel[0]):
        for j in range(geo.kernel[1]):
            rows, columns = _tap_slice(i, j, geo.stride, geo.dilation, geo.out_hw)
            dxp[:, :, rows, columns] += share
    dx = _unpad(dxp, geo.pads, h, w)
    return dx[0] if unbatched else dx


def _check_pool_dout(dout, unbatched, x_shape, geo, dtype, op) -> np.ndarray:
    dout = np.asarray(dout)
    if unbatched:
        dout = dout[None]
    expected = (*x_shape[:2], *geo.out_hw)
    if dout.shape != expected:
        raise ValueError(f"{op}: dout has shape {dout.shape}, expected the output shape {expected}.")
    return dout.astype(dtype, copy=False)


def max_pool2d(x, kernel_size, stride=None, padding=0) -> np.ndarray:
    """``torch.nn.functional.max_pool2d`` in NumPy (no dilation, floor mode)."""
    return max_pool2d_forward(x, kernel_size, stride, padding)[0]


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True) -> np.ndarray:
    """``torch.nn.functional.avg_pool2d`` in NumPy (floor mode)."""
    return avg_pool2d_forward(x, kernel_size, stride, padding, count_include_pad)[0]
