"""Checking and timing the NumPy convolution against torch (lab 03 and ``benchmarks/bench_scratch_conv.py``).

- ``conv_check_cases()``: named convolutions covering square, horizontal and vertical kernels, stride,
  dilation, groups, bias and a depthwise blur filter.
- ``conv_error_table(cases)``: max |ours - torch| of the naive and the vectorised conv2d per case (float64).
- ``median_time(fn)``, ``conv_speed_table(...)``: naive vs vectorised vs torch on one input.
- ``benchmark_conv_layers(shapes)``: scratch ``Conv2d`` forward+backward vs torch's, per shape, with ratios.

torch is imported inside the functions that need it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial

import numpy as np

from . import functional as F
from .layers import Conv2d

__all__ = [
    "conv_check_cases",
    "conv_error_table",
    "error_bucket",
    "thread_limit",
    "median_time",
    "conv_speed_table",
    "benchmark_conv_layers",
    "geometric_mean",
    "LAB_BENCH_SHAPES",
]

# (N, C_in, C_out, H=W) of the lab's convolutions; k=3, padding 1.
LAB_BENCH_SHAPES = ((64, 1, 8, 28), (64, 8, 16, 14), (64, 16, 32, 32), (32, 64, 64, 16))


def _blur_kernel(channels: int) -> np.ndarray:
    """A 3x3 binomial (Gaussian-like) blur, one copy per channel: weight (C, 1, 3, 3) for groups=C."""
    k1 = np.array([1.0, 2.0, 1.0])
    k2 = np.outer(k1, k1) / 16.0
    return np.broadcast_to(k2, (channels, 1, 3, 3)).copy()


def conv_check_cases(seed: int = 0) -> dict[str, dict]:
    """Named test convolutions: each a dict with x, weight, bias and the conv2d keyword arguments.

    All float64. Images are small (2 x C x 9 x 10) so that even the naive loops are quick.
    """
    rng = np.random.default_rng(seed)

    def x(c=3):
        return rng.standard_normal((2, c, 9, 10))

    def w(*shape):
        return rng.standard_normal(shape)

    sobel_x = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    return {
        "square 3x3": dict(x=x(), weight=w(4, 3, 3, 3), bias=None, kwargs={}),
        "square 3x3, padding 1": dict(x=x(), weight=w(4, 3, 3, 3), bias=None, kwargs={"padding": 1}),
        "horizontal 1x5": dict(x=x(), weight=w(4, 3, 1, 5), bias=None, kwargs={"padding": (0, 2)}),
        "vertical 5x1": dict(x=x(), weight=w(4, 3, 5, 1), bias=None, kwargs={"padding": (2, 0)}),
        "Sobel edge (1 channel)": dict(x=x(1), weight=sobel_x[None, None], bias=None, kwargs={}),
        "stride 2": dict(x=x(), weight=w(4, 3, 3, 3), bias=None, kwargs={"stride": 2, "padding": 1}),
        "dilation 2": dict(x=x(), weight=w(4, 3, 3, 3), bias=None, kwargs={"dilation": 2}),
        "groups 2": dict(x=x(4), weight=w(6, 2, 3, 3), bias=None, kwargs={"groups": 2}),
        "bias": dict(x=x(), weight=w(4, 3, 3, 3), bias=w(4), kwargs={}),
        "depthwise blur": dict(x=x(), weight=_blur_kernel(3), bias=None, kwargs={"groups": 3, "padding": 1}),
        "everything": dict(
            x=x(4),
            weight=w(6, 2, 2, 3),
            bias=w(6),
            kwargs={"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 2},
        ),
    }


def error_bucket(error: float) -> str:
    """A coarse, machine-independent label for a float64 max error (for regression-checked output)."""
    for bound in (1e-12, 1e-9, 1e-6, 1e-3):
        if error < bound:
            return f"< {bound:.0e}"
    return ">= 1e-03"


def conv_error_table(cases: dict[str, dict] | None = None) -> list[dict]:
    """For each case: output shape and max |ours - torch.nn.functional.conv2d| for the naive and the
    vectorised NumPy convolution (float64). Rows: {case, weight_shape, out_shape, naive_error, vectorised_error}."""
    import torch
    import torch.nn.functional as TF

    cases = conv_check_cases() if cases is None else cases
    rows = []
    for name, case in cases.items():
        bias = case["bias"]
        reference = TF.conv2d(
            torch.from_numpy(case["x"]),
            torch.from_numpy(case["weight"]),
            None if bias is None else torch.from_numpy(bias),
            **case["kwargs"],
        ).numpy()
        naive = F.conv2d_naive(case["x"], case["weight"], bias, **case["kwargs"])
        fast = F.conv2d(case["x"], case["weight"], bias, **case["kwargs"])
        rows.append(
            {
                "case": name,
                "weight_shape": tuple(case["weight"].shape),
                "out_shape": tuple(fast.shape),
                "naive_error": float(np.abs(naive - reference).max()),
                "vectorised_error": float(np.abs(fast - reference).max()),
            }
        )
    return rows


@contextmanager
def thread_limit(threads: int = 1):
    """Run NumPy's BLAS and torch with the same number of threads inside the block, then restore.

    Comparing a 1-thread BLAS with a multi-threaded torch (or timing on a busy machine, where idle
    threads spin and wait) says more about thread scheduling than about the algorithms.
    """
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def conv_speed_table(
    x_shape=(8, 3, 28, 28),
    out_channels: int = 8,
    kernel: int = 3,
    padding: int = 1,
    repeats: int = 5,
    naive_repeats: int = 1,
    threads: int = 1,
    seed: int = 0,
) -> list[dict]:
    """Forward time of naive loops, vectorised NumPy and torch on one float32 input, all with
    ``threads`` threads. Rows: {implementation, ms, slowdown_vs_torch} (median times); they depend
    on the machine and its load.
    """
    import torch
    import torch.nn.functional as TF

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((out_channels, x_shape[1], kernel, kernel)).astype(np.float32)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    with torch.no_grad(), thread_limit(threads):
        times = {
            "naive loops": median_time(lambda: F.conv2d_naive(x, w, padding=padding), naive_repeats, 0),
            "vectorised NumPy (im2col)": median_time(lambda: F.conv2d(x, w, padding=padding), repeats),
            "torch": median_time(lambda: TF.conv2d(tx, tw, padding=padding), repeats),
        }
    return [{"implementation": k, "ms": 1e3 * t, "slowdown_vs_torch": t / times["torch"]} for k, t in times.items()]


def _scratch_conv_step(layer, x, dout):
    layer.forward(x)
    return layer.backward(dout)


def _torch_conv_step(tx, tw, tb, tdout, padding):
    import torch.nn.functional as TF

    tx.grad = tw.grad = tb.grad = None
    TF.conv2d(tx, tw, tb, padding=padding).backward(tdout)


def geometric_mean(values) -> float:
    values = list(values)
    return float(math.exp(sum(math.log(v) for v in values) / len(values)))


def benchmark_conv_layers(
    shapes=LAB_BENCH_SHAPES, kernel: int = 3, padding: int = 1, repeats: int = 15, warmup: int = 2, seed: int = 0
) -> list[dict]:
    """Scratch ``Conv2d`` forward+backward (dx, dweight, dbias) against torch's conv2d forward+backward
    (input, weight and bias gradients) in float32, interleaving the two so both see the same machine load.

    shapes: (N, C_in, C_out, H=W) tuples. Rows: {N, C_in, C_out, H, W, numpy_ms, torch_ms, ratio,
    ratio_of_minima, grad_rel_diff} with median times; ratio = numpy / torch (medians);
    ratio_of_minima = the same with the fastest runs, less sensitive to a busy machine; grad_rel_diff = the largest
    max|ours - torch| / max|torch| over the input, weight and bias gradients (a sanity check).
    """
    import torch

    rng = np.random.default_rng(seed)
    rows = []
    for n, c_in, c_out, size in shapes:
        layer = Conv2d(c_in, c_out, kernel, padding=padding, rng=rng)
        x = rng.standard_normal((n, c_in, size, size)).astype(np.float32)
        out_hw = F.conv_output_size(size, kernel, 1, padding)
        dout = rng.standard_normal((n, c_out, out_hw, out_hw)).astype(np.float32)
        tx = torch.from_numpy(x.copy()).requires_grad_()
        tw = torch.from_numpy(layer.params["weight"].copy()).requires_grad_()
        tb = torch.from_numpy(layer.params["bias"].copy()).requires_grad_()
        tdout = torch.from_numpy(dout)

        ours = partial(_scratch_conv_step, layer, x, dout)
        theirs = partial(_torch_conv_step, tx, tw, tb, tdout, padding)
        for _ in range(warmup):
            ours()
            theirs()
        t_ours, t_theirs = [], []
        for _ in range(repeats):
            t_ours.append(median_time(ours, 1, 0))
            t_theirs.append(median_time(theirs, 1, 0))
        numpy_s, torch_s = float(np.median(t_ours)), float(np.median(t_theirs))
        # Same work on both sides: the last run's gradients must agree (float32 rounding only).
        dx = ours()
        theirs()
        grad_diff = max(
            float(np.abs(a - b.grad.numpy()).max() / np.abs(b.grad.numpy()).max())
            for a, b in ((dx, tx), (layer.grads["weight"], tw), (layer.grads["bias"], tb))
        )
        rows.append(
            {
                "N": n,
                "C_in": c_in,
                "C_out": c_out,
                "H": size,
                "W": size,
                "numpy_ms": 1e3 * numpy_s,
                "torch_ms": 1e3 * torch_s,
                "ratio": numpy_s / torch_s,
                "ratio_of_minima": min(t_ours) / min(t_theirs),
                "grad_rel_diff": grad_diff,
            }
        )
    return rows
