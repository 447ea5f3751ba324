"""Seeded image corruptions: the CIFAR-10-C / CIFAR-100-C set and the MNIST-C set, on batches of tensors.

Hendrycks & Dietterich (2019) measure robustness on 15 corruptions in four families at five severities
(:data:`CORRUPTIONS`, plus four held-out :data:`EXTRAS`); Mu & Gilmer (2019) chose 15 corruptions that
keep a handwritten digit legible (:data:`MNIST_C`). Here every one of them is a function of a batch:

>>> x = to_float(splits.x_test[:256])                   # uint8 (N, C, H, W) -> float32 in [0, 1]
>>> y = corrupt(x, "fog", severity=3, seed=0)            # same shape, dtype and range

Images are float tensors in [0, 1], shape (N, C, H, W), C = 1 (greyscale) or 3 (RGB), *before*
normalisation: corrupt first, then standardise with the dataset's mean and std (as
:class:`labutils.data.ImageArrayDataset` does with the uint8 arrays :func:`to_uint8` gives back).

Parameters. Each severity 1..5 uses the published parameters of the benchmark the corruption comes from:
CIFAR-10-C's for the CIFAR set and the extras, MNIST-C's for the MNIST-C-only corruptions (shear, scale,
rotate, translate, stripe, dotted_line, zigzag, canny_edges). ``benchmark="mnist"`` selects MNIST-C's table
for the names both sets share (its noise and fog are much stronger); :func:`parameters` shows any entry.
MNIST-C itself released one severity per corruption: :data:`MNIST_C_SEVERITY` says which. Its four
severity-free corruptions get a five-step ladder here, with the published form at the level named there.

Randomness. ``seed`` fixes every random draw; the draws depend on the seed and the corruption's name,
not on the severity, so the five severities of one seed share their noise fields, angles and positions and
differ only by the parameters. Nothing touches the global NumPy or torch generators.

Approximations. Where the original needs ImageMagick (motion blur, snow), photographs (frost), OpenCV's
Canny and distance transform (spatter's water drops) or skimage's full Canny detector, a procedural
version of the same name stands in: :data:`APPROXIMATIONS`, and each says so in its docstring. Other
corruptions follow the published algorithm with torch resampling (bilinear), so pixel values can differ
slightly from the published ``.npy`` files, which were also rounded to uint8 between steps.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from labutils.util import check_choice, check_int

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRAS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
MNIST_C = (
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "brightness",
    "translate",
    "stripe",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
    "canny_edges",
)
ALL_CORRUPTIONS = tuple(dict.fromkeys(CORRUPTIONS + EXTRAS + MNIST_C))
FAMILIES = {
    **dict.fromkeys(("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"), "noise"),
    **dict.fromkeys(("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"), "blur"),
    **dict.fromkeys(("snow", "frost", "fog", "spatter"), "weather"),
    **dict.fromkeys(
        ("brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"), "digital"
    ),
    **dict.fromkeys(("shear", "scale", "rotate", "translate"), "affine"),
    **dict.fromkeys(("stripe", "dotted_line", "zigzag", "canny_edges"), "overlay"),
}
APPROXIMATIONS = frozenset({"motion_blur", "snow", "frost", "spatter", "canny_edges"})
BENCHMARKS = ("cifar", "mnist")
SEVERITIES = (1, 2, 3, 4, 5)
# The severity each MNIST-C corruption was released at (the defaults of google-research/mnist-c's functions;
# the severity-free four sit where their ladder below reproduces the published form).
MNIST_C_SEVERITY = {
    "shot_noise": 5,
    "impulse_noise": 4,
    "glass_blur": 1,
    "motion_blur": 1,
    "shear": 2,
    "scale": 3,
    "rotate": 2,
    "brightness": 5,
    "translate": 3,
    "stripe": 5,
    "fog": 5,
    "spatter": 4,
    "dotted_line": 1,
    "zigzag": 1,
    "canny_edges": 5,
}

# Published parameters, severity 1 first: hendrycks/robustness make_cifar_c.py and google-research/mnist-c.
_CIFAR_PARAMS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise std
    "shot_noise": (500, 250, 100, 75, 50),  # photons at full intensity
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of values set to 0 or 1
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),  # multiplicative noise std
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma, pixels
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # sigma, max shift, passes
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # disk radius, anti-alias sigma
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # kernel radius, sigma (pixels)
    "zoom_blur": tuple(tuple(np.arange(1, stop, 0.01).tolist()) for stop in (1.06, 1.11, 1.16, 1.21, 1.26)),
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),  # flake mean, std, zoom, threshold, blur radius, blur sigma, blend
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),  # image weight, frost weight
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # fog strength, fractal roughness decay
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),  # mean, std, sigma, threshold, strength, mud?
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to HSV value
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the deviation from the channel mean
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),  # HSV saturation * a + b
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # downscale factor
    # alpha, sigma, affine jitter as fractions of the image side (CIFAR: times 32 pixels)
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
}
_MNIST_PARAMS: dict[str, tuple] = {
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    "spatter": (
        (0.65, 0.3, 4, 0.69, 0.6),  # mean, std, sigma, threshold, mud-edge sigma (always mud)
        (0.65, 0.3, 3, 0.68, 0.6),
        (0.65, 0.3, 2, 0.68, 0.5),
        (0.65, 0.3, 1, 0.65, 1.5),
        (0.67, 0.4, 1, 0.65, 1.5),
    ),
    "shear": (0.2, 0.4, 0.6, 0.8, 1.0),  # shear angle, radians, random sign
    "rotate": (0.2, 0.4, 0.6, 0.8, 1.0),  # rotation, radians, random sign
    "scale": (1 / 0.9, 1 / 0.8, 1 / 0.7, 1 / 0.6, 1 / 0.5),  # inverse zoom: the digit shrinks by 1/c
    "translate": (1, 2, 3, 4, 5),  # shift per axis in pixels of a 28-pixel image, random signs
    # MNIST-C's severity-free corruptions, as ladders (the published form at MNIST_C_SEVERITY's level):
    "stripe": (3, 4, 5, 6, 7),  # inverted columns on each side, of 28
    "dotted_line": (1, 2, 3, 4, 5),  # number of dotted lines
    "zigzag": (1, 2, 3, 4, 5),  # number of zigzag lines
    "canny_edges": (0.2, 0.4, 0.6, 0.8, 1.0),  # weight of the edge map blended over the image
}
_MNIST_ONLY = tuple(n for n in MNIST_C if n not in _CIFAR_PARAMS)


# -- names, parameters, conversions ------------------------------------------------------------------
def corruption_names(dataset: str = "cifar10", extras: bool = False) -> tuple[str, ...]:
    """The benchmark's corruptions for a ``labutils.data`` dataset: MNIST-C's for ``"mnist"``, else CIFAR-C's.

    ``extras`` adds the four held-out corruptions of Hendrycks & Dietterich (not for MNIST).
    """
    if benchmark_for(dataset) == "mnist":
        return MNIST_C
    return CORRUPTIONS + (EXTRAS if extras else ())


def benchmark_for(dataset: str) -> str:
    """``"mnist"`` for MNIST (and its stand-ins), ``"cifar"`` for every other dataset."""
    return "mnist" if str(dataset).split("-")[0] == "mnist" else "cifar"


def is_approximation(name: str) -> bool:
    """True if ``name`` is a procedural stand-in for an original that needs tools this project does not use."""
    check_choice("corruption", name, ALL_CORRUPTIONS)
    return name in APPROXIMATIONS


def parameters(name: str, severity: int, benchmark: str | None = None):
    """The published parameter(s) of ``name`` at ``severity`` (1-5) in ``benchmark`` (see :func:`corrupt`)."""
    return _table(name, benchmark)[_check_severity(severity) - 1]


def _table(name: str, benchmark: str | None) -> tuple:
    check_choice("corruption", name, ALL_CORRUPTIONS)
    if benchmark is None:
        benchmark = "mnist" if name in _MNIST_ONLY else "cifar"
    check_choice("benchmark", benchmark, BENCHMARKS)
    table = _CIFAR_PARAMS if benchmark == "cifar" else _MNIST_PARAMS
    if name not in table:
        other = "MNIST-C" if benchmark == "cifar" else "CIFAR-10-C"
        raise ValueError(
            f"{name!r} has no {benchmark.upper()}-C parameters (it comes from {other}): "
            f"use benchmark=None or {'mnist' if benchmark == 'cifar' else 'cifar'!r}."
        )
    return table[name]


def _check_severity(severity) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"severity={severity!r} is not possible: use an integer from 1 to 5.")
    return int(severity)


def to_float(images) -> torch.Tensor:
    """uint8 images (N, C, H, W), NumPy or torch, as float32 in [0, 1] (divided by 255, not normalised)."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dtype != torch.uint8:
        raise ValueError(f"to_float expects uint8 images (0-255), got dtype {x.dtype}.")
    return x.float().div_(255.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [0, 1] back to uint8 (N, C, H, W), rounded to the nearest level."""
    return images.detach().float().clamp(0, 1).mul(255).round_().to(torch.uint8).cpu().numpy()


def _check_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        what = type(images).__name__ if not isinstance(images, torch.Tensor) else f"a {images.dtype} tensor"
        raise ValueError(f"images must be a float tensor in [0, 1] (got {what}): convert uint8 with to_float().")
    if images.ndim != 4 or images.shape[1] not in (1, 3) or min(images.shape[2:]) < 4:
        raise ValueError(
            f"images must have shape (N, C, H, W) with C = 1 or 3 and H, W >= 4, got {tuple(images.shape)}."
        )
    if images.numel():
        lo, hi = float(images.min()), float(images.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"images must lie in [0, 1] (got min {lo:.3g}, max {hi:.3g}): corrupt before normalising.")
    return images


# -- the entry point -------------------------------------------------------------------------------
def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0, *, benchmark: str | None = None):
    """Corrupt a batch: float images (N, C, H, W) in [0, 1], C = 1 or 3 -> same shape, dtype, device and range.

    ``severity`` 1-5; ``seed`` (int >= 0) fixes all randomness. ``benchmark`` picks the parameter table:
    ``None`` (the corruption's own benchmark), ``"cifar"`` (CIFAR-10-C) or ``"mnist"`` (MNIST-C).
    """
    check_choice("corruption", name, ALL_CORRUPTIONS)
    severity = _check_severity(severity)
    seed = check_int("seed", seed, 0)
    images = _check_images(images)
    return _corrupt(images, name, severity, _rng(seed, name), benchmark)


def _rng(seed: int, name: str, chunk: int = 0) -> np.random.Generator:
    # One stream per (seed, corruption): crc32 is stable across runs (hash() of a str is not).
    entropy = [seed, zlib.crc32(name.encode())] + ([chunk] if chunk else [])
    return np.random.default_rng(entropy)


def _corrupt(images, name, severity, rng, benchmark) -> torch.Tensor:
    param = _table(name, benchmark)[severity - 1]
    if benchmark is None:
        benchmark = "mnist" if name in _MNIST_ONLY else "cifar"
    if images.shape[0] == 0:
        return images.clone()
    x = images.to(torch.float32)
    out = _FUNCTIONS[name](x, param, rng, benchmark)
    return out.clamp_(0, 1).to(images.dtype)


# -- shared pieces ---------------------------------------------------------------------------------
def _tensor(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(like.device)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luminance (N, 1, H, W) with ITU-R 601 weights (OpenCV's RGB2GRAY); greyscale passes through."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _colour(rgb: tuple[float, float, float], x: torch.Tensor) -> torch.Tensor:
    """A colour (0-255 RGB) as (1, C, 1, 1) in [0, 1]; greyscale images get its luminance."""
    c = torch.tensor(rgb, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) / 255.0
    return c if x.shape[1] == 3 else _grey(c)


def _pad_index(n: int, pad: int, mode: str, device) -> torch.Tensor:
    """Source indices of a padded axis: 'reflect' = scipy's (edge repeated), 'mirror' = edge not repeated."""
    i = torch.arange(-pad, n + pad, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if mode == "reflect":
        i = i % (2 * n)
        return torch.where(i < n, i, 2 * n - 1 - i)
    period = max(2 * n - 2, 1)  # mirror
    i = i % period
    return torch.where(i < n, i, period - i)


def _filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of (N, C, H, W) with one 2-D kernel (kh, kw odd), borders padded by ``mode``."""
    h, w = x.shape[2:]
    kh, kw = kernel.shape
    rows = _pad_index(h, kh // 2, mode, x.device)
    cols = _pad_index(w, kw // 2, mode, x.device)
    padded = x[:, :, rows][:, :, :, cols]
    # a sum of shifted copies: for these small kernels faster on CPU than conv2d with one input channel
    out = torch.zeros_like(x)
    for i, j in zip(*torch.nonzero(kernel, as_tuple=True)):
        out += float(kernel[i, j]) * padded[:, :, i : i + h, j : j + w]
    return out


def _gaussian_kernel(sigma: float, truncate: float) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)  # scipy's rule
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def _gaussian_blur(x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian over H and W only (its defaults: 'nearest' borders, truncate 4 sigma)."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel(sigma, truncate)
    return _filter2d(_filter2d(x, k.view(1, -1), mode), k.view(-1, 1), mode)


def _remap(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Bilinear sampling of x (N, C, H, W) at pixel coordinates rows, cols (N, H, W), pixel centres at integers."""
    _, _, h, w = x.shape
    grid = torch.stack([cols * (2.0 / max(w - 1, 1)) - 1, rows * (2.0 / max(h - 1, 1)) - 1], dim=-1)
    return F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode=padding, align_corners=True)


def _pixel_grid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, h, w = x.shape
    r = torch.arange(h, dtype=torch.float32, device=x.device)
    c = torch.arange(w, dtype=torch.float32, device=x.device)
    return torch.meshgrid(r, c, indexing="ij")


def _affine(x: torch.Tensor, a: np.ndarray, shift: np.ndarray, padding: str = "zeros") -> torch.Tensor:
    """Output pixel p (col, row) samples input at a @ (p - centre) + centre + shift; a (N, 2, 2), shift (N, 2)."""
    n, _, h, w = x.shape
    rows, cols = _pixel_grid(x)
    centre = ((w - 1) / 2, (h - 1) / 2)
    a, shift = _tensor(a, x), _tensor(shift, x)
    dc, dr = cols - centre[0], rows - centre[1]
    src_c = a[:, 0, 0, None, None] * dc + a[:, 0, 1, None, None] * dr + centre[0] + shift[:, 0, None, None]
    src_r = a[:, 1, 0, None, None] * dc + a[:, 1, 1, None, None] * dr + centre[1] + shift[:, 1, None, None]
    return _remap(x, src_r, src_c, padding)


def _clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """Zoom into the centre by ``zoom`` keeping the size: the original's crop + scipy zoom (order 1) + trim."""
    _, _, h, w = x.shape

    def axis(n: int) -> torch.Tensor:
        crop = int(np.ceil(n / zoom))
        top = (n - crop) // 2
        out = int(round(crop * zoom))
        trim = (out - n) // 2
        step = (crop - 1) / (out - 1) if out > 1 else 0.0  # scipy maps corner pixel to corner pixel
        return top + (torch.arange(n, dtype=torch.float32, device=x.device) + trim) * step

    rows, cols = torch.meshgrid(axis(h), axis(w), indexing="ij")
    n = x.shape[0]
    return _remap(x, rows.expand(n, h, w), cols.expand(n, h, w), "border")


def _plasma(rng: np.random.Generator, n: int, size: int, decay: float) -> np.ndarray:
    """Diamond-square fractal heightmaps (n, size, size) in [0, 1]; ``size`` a power of two.

    ``decay`` divides the random perturbation at every halving: small decay = rough, large = smooth.
    """
    m = np.zeros((n, size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = m[:, ::step, ::step]
        square = corners + np.roll(corners, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        m[:, half::step, half::step] = square / 4 + wibble * rng.uniform(-wibble, wibble, square.shape)
        centres, corners = m[:, half::step, half::step], m[:, ::step, ::step]
        left = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        m[:, ::step, half::step] = left / 4 + wibble * rng.uniform(-wibble, wibble, left.shape)
        top = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        m[:, half::step, ::step] = top / 4 + wibble * rng.uniform(-wibble, wibble, top.shape)
        step //= 2
        wibble /= decay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def _motion_blur(x: torch.Tensor, radius: float, sigma: float, angles_deg: np.ndarray) -> torch.Tensor:
    """One-sided Gaussian streak like ImageMagick's -motion-blur: taps i = 0..2r at round(i*(cos a, sin a)).

    Weights exp(-i^2 / 2 sigma^2), normalised; pixels beyond the border repeat the edge. ``angles_deg`` (N,).
    """
    n, c, h, w = x.shape
    taps = np.arange(2 * math.ceil(radius) + 1)
    weights = np.exp(-(taps**2) / (2.0 * sigma**2))
    weights /= weights.sum()
    rad = np.deg2rad(angles_deg)
    dc = np.rint(taps[None] * np.cos(rad)[:, None]).astype(np.int64)  # (N, taps)
    dr = np.rint(taps[None] * np.sin(rad)[:, None]).astype(np.int64)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    dc_t, dr_t = torch.from_numpy(dc).to(x.device), torch.from_numpy(dr).to(x.device)
    for i, wi in enumerate(weights):
        src = (rows + dr_t[:, i, None, None]).clamp(0, h - 1) * w + (cols + dc_t[:, i, None, None]).clamp(0, w - 1)
        out += float(wi) * flat.gather(2, src.view(n, 1, h * w).expand(n, c, h * w))
    return out.view(n, c, h, w)


def _hsv_value_saturation(x: torch.Tensor):
    """(V, S, k) of RGB images: x_c = V (1 - S k_c); k = (0, 1, 1) where S = 0 (skimage's hue 0)."""
    v = x.amax(1, keepdim=True)
    mn = x.amin(1, keepdim=True)
    delta = v - mn
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    k_grey = torch.tensor([0.0, 1.0, 1.0], device=x.device).view(1, 3, 1, 1)
    k = torch.where(delta > 0, (v - x) / delta.clamp_min(1e-12), k_grey)
    return v, s, k


# -- noise -----------------------------------------------------------------------------------------
def gaussian_noise(x, sigma, rng, benchmark):
    """Additive Gaussian noise of standard deviation ``sigma`` (intensity units), clipped to [0, 1]."""
    return x + sigma * _tensor(rng.standard_normal(x.shape), x)


def shot_noise(x, photons, rng, benchmark):
    """Poisson (photon) noise: a pixel of intensity v counts Poisson(v * photons) photons, divided back."""
    counts = rng.poisson(x.cpu().double().numpy() * photons)
    return _tensor(counts / photons, x)


def impulse_noise(x, amount, rng, benchmark):
    """Salt and pepper: each value (per channel) is replaced with probability ``amount``, by 0 or 1 equally."""
    flipped = _tensor(rng.random(x.shape) < amount, x).bool()
    salt = _tensor(rng.random(x.shape) < 0.5, x)
    return torch.where(flipped, salt, x)


def speckle_noise(x, sigma, rng, benchmark):
    """Multiplicative noise x + x * N(0, sigma^2): bright pixels get noisier."""
    return x + x * sigma * _tensor(rng.standard_normal(x.shape), x)


# -- blur ------------------------------------------------------------------------------------------
def gaussian_blur(x, sigma, rng, benchmark):
    """Gaussian blur of ``sigma`` pixels (edges repeated), as skimage.filters.gaussian."""
    return _gaussian_blur(x, sigma)


def glass_blur(x, param, rng, benchmark):
    """Blur, shuffle pixels locally (frosted glass), blur again: (sigma, max shift, passes).

    The shuffle walks the image from bottom-right to top-left and exchanges each pixel with a random
    neighbour up to ``max shift`` away. As in the published code, CIFAR-C's colour version only copies the
    neighbour onto the pixel (a NumPy view makes its swap one-sided) and shifts by -d..d-1; MNIST-C's
    greyscale version truly swaps, and each pixel only with probability 1/2.
    """
    sigma, delta, passes = param
    n, c, h, w = x.shape
    arr = _gaussian_blur(x, sigma).permute(0, 2, 3, 1).cpu().numpy().copy()  # (N, H, W, C)
    rows, cols = range(h - delta, delta, -1), range(w - delta, delta, -1)
    steps = passes * len(rows) * len(cols)
    shifts = rng.integers(-delta, delta, size=(steps, 2, n))
    move = rng.random((steps, n)) < (0.5 if benchmark == "mnist" else 1.0)
    idx = np.arange(n)
    step = 0
    for _ in range(passes):
        for r in rows:
            for col in cols:
                r2, c2 = r + shifts[step, 1], col + shifts[step, 0]
                here, there = arr[idx, r, col], arr[idx, r2, c2]
                m = move[step][:, None]
                arr[idx, r, col] = np.where(m, there, here)
                if benchmark == "mnist":
                    arr[idx, r2, c2] = np.where(m, here, there)
                step += 1
    return _gaussian_blur(torch.from_numpy(arr).permute(0, 3, 1, 2).to(x), sigma)


def defocus_blur(x, param, rng, benchmark):
    """Out-of-focus lens: convolution with an anti-aliased disk of ``radius`` pixels (radius, alias sigma)."""
    radius, alias = param
    half = 8 if radius <= 8 else int(math.ceil(radius))
    t = np.arange(-half, half + 1)
    disk = ((t[:, None] ** 2 + t[None] ** 2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    ksize = 3 if radius <= 8 else 5
    g = np.exp(-0.5 * ((np.arange(ksize) - ksize // 2) / alias) ** 2)
    g /= g.sum()
    pad = ksize // 2
    # OpenCV's GaussianBlur on the disk (reflect-101 border, which never reaches the disk for radius <= 7)
    rows = np.pad(disk, ((pad, pad), (0, 0)), mode="reflect")
    disk = sum(g[i] * rows[i : i + disk.shape[0]] for i in range(ksize))
    cols = np.pad(disk, ((0, 0), (pad, pad)), mode="reflect")
    kernel = sum(g[i] * cols[:, i : i + disk.shape[1]] for i in range(ksize))
    keep = np.nonzero(kernel.sum(1) > 1e-12)[0]  # crop the all-zero margin: same result, smaller convolution
    lo, hi = keep.min(), keep.max()
    lo, hi = min(lo, 2 * half - hi), max(hi, 2 * half - lo)
    kernel = kernel[lo : hi + 1, lo : hi + 1]
    return _filter2d(x, torch.from_numpy(kernel).float(), "mirror")


def motion_blur(x, param, rng, benchmark):
    """Camera shake: a streak of (radius, sigma) pixels at a random angle in [-45, 45] degrees per image.

    APPROXIMATION: the original calls ImageMagick's MagickMotionBlurImage; this re-implements its kernel
    (one-sided Gaussian along the angle, taps at rounded pixel offsets) with torch, without ImageMagick.
    """
    radius, sigma = param
    return _motion_blur(x, radius, sigma, rng.uniform(-45, 45, x.shape[0]))


def zoom_blur(x, zooms, rng, benchmark):
    """Zooming during the exposure: the mean of the image and its centre zooms by each factor in ``zooms``."""
    out = x.clone()
    for z in zooms:
        out += _clipped_zoom(x, z)
    return out / (len(zooms) + 1)


# -- weather ---------------------------------------------------------------------------------------
def snow(x, param, rng, benchmark):
    """Falling snow: thresholded Gaussian flakes, zoomed, streaked by motion blur, added twice (turned 180°).

    (flake mean, std, zoom, threshold, streak radius, streak sigma, blend); the image is also whitened,
    blend * x + (1 - blend) * max(x, 1.5 grey + 0.5). APPROXIMATION: the streak uses this module's
    ImageMagick-style motion blur instead of ImageMagick itself.
    """
    mean, std, zoom, threshold, radius, sigma, blend = param
    n, _, h, w = x.shape
    flakes = _tensor(rng.normal(mean, std, (n, 1, h, w)), x)
    flakes = _clipped_zoom(flakes, zoom)
    flakes = torch.where(flakes < threshold, torch.zeros_like(flakes), flakes).clamp(0, 1)
    flakes = _motion_blur(flakes, radius, sigma, rng.uniform(-135, -45, n))
    x = blend * x + (1 - blend) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return x + flakes + torch.flip(flakes, dims=(2, 3))


def frost(x, param, rng, benchmark):
    """Frosted window: c_image * x + c_frost * frost texture.

    APPROXIMATION: the original crops one of six frost photographs; here the texture is procedural
    (a rough diamond-square fractal sharpened into bright crystal ridges, tinted ice blue), with the
    published weights.
    """
    a, b = param
    n, _, h, w = x.shape
    size = 1 << max(h, w, 2).bit_length()  # a power of two larger than the image: crop at a random offset
    field = _plasma(rng, n, size, 1.4)
    ridges = 1 - np.abs(2 * field - 1)  # bright where the fractal crosses its middle: vein-like crystal lines
    texture = np.clip(0.15 + 0.45 * field + 0.6 * ridges**3, 0, 1)
    dr, dc = rng.integers(0, size - h + 1, n), rng.integers(0, size - w + 1, n)
    crops = np.stack([texture[i, dr[i] : dr[i] + h, dc[i] : dc[i] + w] for i in range(n)])
    ice = _colour((215, 235, 255), x)
    return a * x + b * _tensor(crops[:, None], x) * ice / ice.amax()


def fog(x, param, rng, benchmark):
    """Fog: a diamond-square fractal added with weight ``strength``, rescaled by max / (max + strength).

    (strength, roughness decay). The fractal is as large as the original's map (32 px for CIFAR-C, 256 px
    cropped to the image for MNIST-C, whose fog therefore varies more slowly across a digit).
    """
    strength, decay = param
    n, _, h, w = x.shape
    size = 256 if benchmark == "mnist" else 1 << (max(h, w) - 1).bit_length()
    size = max(size, 1 << (max(h, w) - 1).bit_length())
    layer = _tensor(_plasma(rng, n, size, decay)[:, None, :h, :w], x)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * layer) * peak / (peak + strength)


def spatter(x, param, rng, benchmark):
    """Water drops (CIFAR-C levels 1-3) or mud (CIFAR-C levels 4-5, and every MNIST-C level).

    A Gaussian field blurred with ``sigma`` and thresholded marks the spatter. Mud: the mask is smoothed,
    kept where >= 0.8 and painted brown (MNIST-C: grey 63/255). Water: pale turquoise added in proportion to
    the field. APPROXIMATION for water: the original shades the drops with OpenCV's Canny edges, a distance
    transform and an emboss filter; here the drop intensity is the thresholded field itself.
    """
    n, _, h, w = x.shape
    mean, std, sigma, threshold = param[:4]
    liquid = _gaussian_blur(_tensor(rng.normal(mean, std, (n, 1, h, w)), x), sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if benchmark == "cifar" and param[5] == 0:
        peak = liquid.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        return x + liquid / peak * param[4] * _colour((175, 238, 238), x)
    mud_sigma = param[4]
    mask = _gaussian_blur((liquid > threshold).float(), mud_sigma)
    mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask)
    colour = _colour((63, 63, 63) if benchmark == "mnist" else (63, 42, 20), x)
    return x * (1 - mask) + colour * mask


# -- digital ---------------------------------------------------------------------------------------
def brightness(x, shift, rng, benchmark):
    """Add ``shift`` to the HSV value (brightest channel), keeping hue and saturation; greyscale: x + shift."""
    if x.shape[1] == 1:
        return x + shift
    v = x.amax(1, keepdim=True)
    v_new = (v + shift).clamp(0, 1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x))


def contrast(x, factor, rng, benchmark):
    """Shrink each channel's deviation from its mean (per image) by ``factor``."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * factor + mean


def saturate(x, param, rng, benchmark):
    """HSV saturation S -> clip(S * a + b), hue and value kept: (a, b).

    Greyscale images are treated as RGB with S = 0 and hue 0 (skimage's convention) and converted back
    with skimage's luminance weights, so only the ``+ b`` of levels 4-5 changes them (it darkens them).
    """
    a, b = param
    grey = x.shape[1] == 1
    rgb = x.expand(-1, 3, -1, -1) if grey else x
    v, s, k = _hsv_value_saturation(rgb)
    out = v - (s * a + b).clamp(0, 1) * v * k
    if grey:
        out = (out * torch.tensor([0.2125, 0.7154, 0.0721], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return out


def jpeg_compression(x, quality, rng, benchmark):
    """JPEG encode + decode at ``quality`` with Pillow, as the original; the result is on the uint8 grid."""
    import io

    from PIL import Image

    out = []
    for img in to_uint8(x):  # Pillow codes one image at a time; a 32x32 image takes tens of microseconds
        buffer = io.BytesIO()
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(
            buffer, "JPEG", quality=int(quality)
        )
        decoded = np.asarray(Image.open(buffer))
        out.append(decoded[None] if decoded.ndim == 2 else decoded.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out)).to(x).div_(255.0)


def _pil_box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """PIL's BOX resampling along one axis as an (n_out, n_in) matrix (its support and pixel-centre rule)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
        for j in range(lo, hi):
            t = (j - centre + 0.5) / filterscale
            m[i, j] = 1.0 if -0.5 <= t < 0.5 else 0.0
        m[i] /= max(m[i].sum(), 1e-12)
    return torch.from_numpy(m).float()


def pixelate(x, factor, rng, benchmark):
    """Downscale to ``factor`` of the side with a box filter and back up (PIL BOX both ways), as matrices."""
    _, _, h, w = x.shape
    sh, sw = int(h * factor), int(w * factor)
    rows = (_pil_box_matrix(sh, h) @ _pil_box_matrix(h, sh)).to(x)
    cols = (_pil_box_matrix(sw, w) @ _pil_box_matrix(w, sw)).to(x)
    return torch.einsum("ij,ncjk,lk->ncil", rows, x, cols)


def elastic_transform(x, param, rng, benchmark):
    """A random affine warp, then a smooth random displacement field: (alpha, sigma, affine jitter).

    All three are fractions of the image side (CIFAR-C: times 32). The affine moves three reference
    points by up to ``jitter`` (reflected borders); each pixel is then displaced by a uniform noise field
    blurred with ``sigma`` and scaled by ``alpha``.
    """
    alpha, sigma, jitter = (p * min(x.shape[2:]) for p in param)
    n, _, h, w = x.shape
    centre = np.array([w // 2, h // 2], np.float64)
    square = min(h, w) // 3
    pts1 = np.array([centre + square, [centre[0] + square, centre[1] - square], centre - square])  # (x, y)
    pts2 = pts1[None] + rng.uniform(-jitter, jitter, (n, 3, 2))
    # M maps source to destination (OpenCV's getAffineTransform); sample the source at M^-1 of each pixel
    lhs = np.concatenate([pts1, np.ones((3, 1))], axis=1)
    m = np.linalg.solve(lhs[None], pts2).transpose(0, 2, 1)  # (N, 2, 3)
    inv = np.linalg.inv(m[:, :, :2])
    shift = -np.einsum("nij,nj->ni", inv, m[:, :, 2])
    # express as a @ (p - c) + c + s for _affine: s = inv @ c + shift - c
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    s = np.einsum("nij,j->ni", inv, c) + shift - c
    warped = _affine(x, inv, s, padding="reflection")
    noise = _tensor(rng.uniform(-1, 1, (n, 2, h, w)), x)
    field = _gaussian_blur(noise, sigma, mode="reflect", truncate=3.0) * alpha
    rows, cols = _pixel_grid(x)
    return _remap(warped, rows + field[:, 1], cols + field[:, 0], "reflection")


# -- MNIST-C: affine, overlays, edges ----------------------------------------------------------------
def _signs(rng, n, k=1) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=(n, k))


def shear(x, angle, rng, benchmark):
    """Horizontal shear by ``angle`` radians (random sign per image) about the centre; zeros outside."""
    n = x.shape[0]
    a = angle * _signs(rng, n)[:, 0]
    mat = np.zeros((n, 2, 2))
    mat[:, 0, 0], mat[:, 0, 1], mat[:, 1, 1] = 1.0, -np.sin(a), np.cos(a)
    return _affine(x, mat, np.zeros((n, 2)))


def rotate(x, angle, rng, benchmark):
    """Rotation by ``angle`` radians (random sign per image) about the centre; zeros outside."""
    n = x.shape[0]
    a = angle * _signs(rng, n)[:, 0]
    mat = np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], 1)
    return _affine(x, mat, np.zeros((n, 2)))


def scale(x, factor, rng, benchmark):
    """Shrink about the centre: output pixel p samples centre + factor * (p - centre), zeros outside."""
    n = x.shape[0]
    return _affine(x, np.broadcast_to(np.eye(2) * factor, (n, 2, 2)), np.zeros((n, 2)))


def translate(x, pixels, rng, benchmark):
    """Shift by ``pixels`` (of a 28-pixel side, scaled to the image) along each axis, random signs, zeros in."""
    n, _, h, w = x.shape
    shift = pixels * _signs(rng, n, 2) * np.array([w / 28, h / 28])
    return _affine(x, np.broadcast_to(np.eye(2), (n, 2, 2)), shift)


def stripe(x, width, rng, benchmark):
    """Invert ``width`` columns (of 28, scaled) at each side; MNIST-C inverts 7 (level 5)."""
    w = x.shape[3]
    k = int(round(width * w / 28))
    out = x.clone()
    out[..., :k] = 1 - x[..., :k]
    out[..., w - k :] = 1 - x[..., w - k :]
    return out


def _line_field(c0, r0, c1, r1, h: int, w: int) -> torch.Tensor:
    """MNIST-C's soft line through (c0, r0)-(c1, r1), columns floor(c0)..ceil(c1), in 28-pixel coordinates.

    Arrays of segment endpoints of any shape S -> float32 (S..., h, w); intensity log(1 - d / 2.3) + 1 at
    vertical distance d, clipped to [0, 1]. Vertical segments (c0 == c1) draw nothing, as in the original.
    """
    shape = np.broadcast_shapes(*(np.shape(v) for v in (c0, r0, c1, r1)))
    c0, r0, c1, r1 = (
        torch.from_numpy(np.broadcast_to(v, shape).astype(np.float64))[..., None, None] for v in (c0, r0, c1, r1)
    )
    cc = torch.arange(w, dtype=torch.float64) * (27 / max(w - 1, 1))
    rr = (torch.arange(h, dtype=torch.float64) * (27 / max(h - 1, 1)))[:, None]
    flat = c1 == c0
    slope = torch.where(flat, 0.0, (r1 - r0) / torch.where(flat, 1.0, c1 - c0))
    dist = (rr - (slope * (cc - c0) + r0)).float().abs_().clamp_(0, 2.3 - 1e-6)
    field = dist.div_(-2.3).log1p_().add_(1).clamp_(0, 1)
    inside = (cc >= c0.floor()) & (cc < c1.ceil()) & ~flat
    return field * inside


def dotted_line(x, count, rng, benchmark):
    """``count`` random dotted lines across the image (2-pixel dashes); MNIST-C draws one (level 1)."""
    n, _, h, w = x.shape
    ends = rng.integers(0, 27, size=(n, 5, 2))[:, :count]
    lines = _line_field(0, ends[..., 0], 27, ends[..., 1], h, w)  # (N, count, h, w)
    dashes = (np.floor(np.arange(w) * (27 / max(w - 1, 1))) // 2) % 2 == 1
    return x + (lines * torch.from_numpy(dashes)).sum(1, keepdim=True).to(x)


def _zigzag_segments(r0: int, r1: int) -> np.ndarray:
    """Segment endpoints (S, 4) of MNIST-C's zigzag from column 2, row r0 towards column 25, row r1."""
    a = b = 2.0
    c_start, c_end = 2, 25
    theta = np.arctan((r1 - r0) / (c_end - c_start))
    d = (c_end - c_start) / np.cos(theta)
    points = [(0.0, 0.0)]
    r_i = 0.0
    for i in range(int((d - a) // (2 * a)) + 1):
        r_i = (-1) ** i * b
        points.append(((2 * i + 1) * a, r_i))
    max_c = (2 * a) * (d // (2 * a))
    if d != max_c:
        points.append((d, r_i / (2 * (d - max_c))))
    p = np.array(points).T
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cs, rs = rot @ p
    cs, rs = cs + c_start, rs + r0
    return np.stack([cs[:-1], rs[:-1], cs[1:], rs[1:]], axis=1)


def zigzag(x, count, rng, benchmark):
    """``count`` random zigzag lines (2-pixel teeth) across the image; MNIST-C draws one (level 1)."""
    n, _, h, w = x.shape
    starts = rng.integers(0, 27, size=(n, 5))
    ends = starts + rng.integers(-5, 5, size=(n, 5))
    segments = [_zigzag_segments(int(s), int(e)) for s, e in zip(starts[:, :count].ravel(), ends[:, :count].ravel())]
    longest = max(len(s) for s in segments)
    padded = np.zeros((len(segments), longest, 4))  # zero-length padding segments draw nothing
    for i, s in enumerate(segments):
        padded[i, : len(s)] = s
    fields = _line_field(padded[..., 0], padded[..., 1], padded[..., 2], padded[..., 3], h, w)
    return x + fields.sum(1).reshape(n, count, h, w).sum(1, keepdim=True).to(x)


def _edges(x: torch.Tensor) -> torch.Tensor:
    """Binary edge map (N, 1, H, W) of the luminance: blur (sigma 1), Sobel, non-maximum suppression,
    hysteresis thresholds 0.1 / 0.2 (skimage.feature.canny's defaults) with one step of growth."""
    g = _gaussian_blur(_grey(x), 1.0)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gx, gy = _filter2d(g, sobel, "nearest"), _filter2d(g, sobel.T, "nearest")
    mag = torch.hypot(gx, gy)
    # quantise the gradient direction to 0, 45, 90, 135 degrees and compare with both neighbours along it
    sector = torch.remainder(torch.round(torch.atan2(gy, gx) / (math.pi / 4)), 4).long()
    padded = F.pad(mag, (1, 1, 1, 1))
    h, w = mag.shape[2:]

    def shifted(dr: int, dc: int) -> torch.Tensor:
        return padded[:, :, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    offsets = [(0, 1), (1, 1), (1, 0), (1, -1)]  # (row, col) per sector, gradient along +x, +x+y, +y, -x+y
    peak = torch.zeros_like(mag, dtype=torch.bool)
    for s, (dr, dc) in enumerate(offsets):
        peak |= (sector == s) & (mag >= shifted(dr, dc)) & (mag >= shifted(-dr, -dc))
    strong = peak & (mag > 0.2)
    weak = peak & (mag > 0.1)
    grown = F.max_pool2d(strong.float(), 3, stride=1, padding=1) > 0
    return (strong | (weak & grown)).float()


def canny_edges(x, weight, rng, benchmark):
    """The image fades into its edge map with ``weight`` (MNIST-C shows the edge map alone: weight 1, level 5).

    APPROXIMATION of skimage.feature.canny: Gaussian blur, Sobel gradients, non-maximum suppression over
    four directions and the same thresholds, but hysteresis grows strong edges by one pixel only.
    """
    return (1 - weight) * x + weight * _edges(x)


_FUNCTIONS = {name: globals()[name] for name in ALL_CORRUPTIONS}


# -- whole test sets -------------------------------------------------------------------------------
def corrupt_arrays(
    images: np.ndarray,
    name: str,
    severity: int,
    seed: int = 0,
    *,
    benchmark: str | None = None,
    batch_size: int = 500,
) -> np.ndarray:
    """Corrupt uint8 images (N, C, H, W) batch by batch; returns uint8 (N, C, H, W), like the published files.

    The first batch draws exactly what :func:`corrupt` draws for the same seed; later batches use their own
    streams, so the result depends on ``seed`` and ``batch_size`` only.
    """
    check_choice("corruption", name, ALL_CORRUPTIONS)
    severity = _check_severity(severity)
    seed = check_int("seed", seed, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    _table(name, benchmark)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}.")
    out = np.empty_like(images)
    for k, start in enumerate(range(0, len(images), batch_size)):
        chunk = to_float(images[start : start + batch_size])
        out[start : start + batch_size] = to_uint8(_corrupt(chunk, name, severity, _rng(seed, name, k), benchmark))
    return out


@dataclass(frozen=True)
class CorruptedSet:
    """One corrupted copy of a test set: uint8 images (N, C, H, W) and int64 labels (N,)."""

    corruption: str
    severity: int
    family: str
    images: np.ndarray
    labels: np.ndarray


def corrupted_test_sets(
    images: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    *,
    benchmark: str | None = None,
    batch_size: int = 500,
    progress: bool = True,
) -> Iterator[CorruptedSet]:
    """Yield a corrupted copy of (images, labels) for every (corruption, severity), with a progress bar.

    ``images`` uint8 (N, C, H, W), e.g. ``load_arrays(...).x_test``; ``names`` defaults to CIFAR-C's 15.
    One copy is made at a time (all 75 of CIFAR-10's test set would take 2.3 GB); evaluate each with
    :class:`labutils.data.ImageArrayDataset`, which normalises after the corruption.
    """
    from tqdm.auto import tqdm

    names = tuple(CORRUPTIONS if names is None else names)
    for name in names:
        check_choice("corruption", name, ALL_CORRUPTIONS)
        _table(name, benchmark)
    severities = tuple(_check_severity(s) for s in severities)
    labels = np.asarray(labels, np.int64)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels: they must match.")
    bar = tqdm(total=len(names) * len(severities), desc="corrupting", disable=not progress, dynamic_ncols=True)
    try:
        for name in names:
            for s in severities:
                bar.set_postfix_str(f"{name} {s}")
                out = corrupt_arrays(images, name, s, seed, benchmark=benchmark, batch_size=batch_size)
                bar.update(1)
                yield CorruptedSet(name, s, FAMILIES[name], out, labels)
    finally:
        bar.close()


# -- summary metrics -------------------------------------------------------------------------------
def _per_corruption(errors: Mapping[str, Sequence[float]], what: str) -> dict[str, np.ndarray]:
    out = {}
    for name, values in errors.items():
        v = np.asarray(values, np.float64)
        if v.ndim != 1 or len(v) == 0 or not np.all(np.isfinite(v)):
            raise ValueError(
                f"{what}[{name!r}] must be a non-empty list of finite numbers per severity, got {values!r}."
            )
        out[name] = v
    if not out:
        raise ValueError(f"{what} is empty: give one list of per-severity numbers per corruption.")
    return out


def _matched(errors, baseline_errors):
    e = _per_corruption(errors, "errors")
    b = _per_corruption(baseline_errors, "baseline_errors")
    missing = sorted(set(e) - set(b))
    if missing:
        raise ValueError(
            f"baseline_errors has no entry for {', '.join(missing)}: give the baseline on every corruption."
        )
    for name in e:
        if len(e[name]) != len(b[name]):
            raise ValueError(
                f"{name!r}: {len(e[name])} severities in errors but {len(b[name])} in baseline_errors: they must match."
            )
    return e, b


def corruption_errors(errors, baseline_errors) -> dict[str, float]:
    """CE_c = sum_s E_{s,c} / sum_s E^baseline_{s,c} per corruption (Hendrycks & Dietterich 2019).

    ``errors`` and ``baseline_errors`` map corruption name -> top-1 error rates per severity (same units).
    """
    e, b = _matched(errors, baseline_errors)
    out = {}
    for name in e:
        denom = b[name].sum()
        if denom <= 0:
            raise ValueError(f"The baseline's errors on {name!r} sum to {denom}: CE needs a positive baseline error.")
        out[name] = float(e[name].sum() / denom)
    return out


def mean_corruption_error(errors, baseline_errors) -> float:
    """mCE: the mean over corruptions of CE_c (1.0 = as robust as the baseline; x100 for the paper's %)."""
    return float(np.mean(list(corruption_errors(errors, baseline_errors).values())))


def relative_mce(errors, clean_error: float, baseline_errors, baseline_clean_error: float) -> float:
    """Relative mCE: mean over c of sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} - E^base_clean).

    It measures how much accuracy a model loses under corruption, relative to the baseline's loss.
    """
    e, b = _matched(errors, baseline_errors)
    ratios = []
    for name in e:
        denom = float((b[name] - baseline_clean_error).sum())
        if denom <= 0:
            raise ValueError(
                f"The baseline loses no accuracy on {name!r} (sum of E - E_clean = {denom:.4g}): "
                "relative CE is undefined."
            )
        ratios.append(float((e[name] - clean_error).sum()) / denom)
    return float(np.mean(ratios))


def mean_corruption_accuracy(accuracies: Mapping[str, Sequence[float]]) -> float:
    """The mean of the accuracies over every corruption and severity given."""
    acc = _per_corruption(accuracies, "accuracies")
    return float(np.mean(np.concatenate(list(acc.values()))))


# -- a picture -------------------------------------------------------------------------------------
def corruption_grid(
    images: torch.Tensor,
    names: Sequence[str] | None = None,
    severities=SEVERITIES,
    seed: int = 0,
    *,
    benchmark: str | None = None,
):
    """One row per corruption, one column per severity (plus the clean image), of the first image.

    ``images`` float (N, C, H, W) in [0, 1]; ``benchmark`` as in :func:`corrupt`.
    Returns ``(fig, data)``: data[name] is the float array
    (S, C, H, W) drawn in that row.
    """
    import matplotlib.pyplot as plt

    images = _check_images(images)[:1]
    names = tuple(CORRUPTIONS if names is None else names)
    fig, axes = plt.subplots(len(names), len(severities) + 1, figsize=(1.3 * (len(severities) + 1), 1.3 * len(names)))
    axes = np.atleast_2d(axes)
    grey = images.shape[1] == 1
    data = {}
    for row, name in enumerate(names):
        pics = torch.cat([corrupt(images, name, s, seed, benchmark=benchmark) for s in severities]).cpu().numpy()
        data[name] = pics
        for col, img in enumerate([images[0].cpu().numpy(), *pics]):
            ax = axes[row, col]
            ax.imshow(img[0] if grey else img.transpose(1, 2, 0), cmap="gray" if grey else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("clean" if col == 0 else f"severity {severities[col - 1]}", fontsize=7)
        axes[row, 0].set_ylabel(name + (" *" if name in APPROXIMATIONS else ""), fontsize=6)
    fig.tight_layout()
    return fig, data


# -- evaluating models on corrupted test sets ---------------------------------------------------------
@dataclass
class CorruptionResults:
    """What :func:`evaluate_under_corruption` measured.

    ``frame``: one row per (model, corruption, severity) with columns model, corruption, family, severity,
    accuracy, error, n (images), source ("generated" or the published file's benchmark) and approximation
    (True where :data:`APPROXIMATIONS` stands in for the original). ``clean``: {model: clean top-1 accuracy}.
    """

    frame: Any
    clean: dict[str, float]

    @property
    def models(self) -> list[str]:
        return list(self.clean)

    def accuracies(self, model: str) -> dict[str, list[float]]:
        """{corruption: [accuracy at each severity, in increasing order]} of one model."""
        check_choice("model", model, self.models)
        rows = self.frame[self.frame.model == model].sort_values("severity")
        return {name: rows[rows.corruption == name].accuracy.tolist() for name in dict.fromkeys(rows.corruption)}

    def errors(self, model: str) -> dict[str, list[float]]:
        """{corruption: [top-1 error at each severity]} of one model (1 - accuracy)."""
        return {name: [1.0 - a for a in acc] for name, acc in self.accuracies(model).items()}

    def table(self, model: str):
        """Accuracy of one model as a DataFrame: one row per corruption (``*`` marks an approximation),
        one column per severity, plus the mean over severities."""
        check_choice("model", model, self.models)
        rows = self.frame[self.frame.model == model]
        order = list(dict.fromkeys(rows.corruption))
        pivot = rows.pivot(index="corruption", columns="severity", values="accuracy").loc[order]
        pivot.columns = [f"severity {s}" for s in pivot.columns]
        pivot["mean"] = pivot.mean(axis=1)
        pivot.index = [n + (" *" if n in APPROXIMATIONS else "") for n in order]
        return pivot

    def summary(self, baseline: str):
        """One row per model: clean accuracy, mean corruption accuracy, mCE and relative mCE against
        ``baseline`` (both 1.0 for the baseline itself), as a DataFrame indexed by model."""
        import pandas as pd

        check_choice("baseline model", baseline, self.models)
        base_err, base_clean = self.errors(baseline), 1.0 - self.clean[baseline]
        rows = []
        for model in self.models:
            err = self.errors(model)
            rows.append(
                {
                    "model": model,
                    "clean_acc": self.clean[model],
                    "mean_corruption_acc": mean_corruption_accuracy(self.accuracies(model)),
                    "mCE": mean_corruption_error(err, base_err),
                    "relative_mCE": _relative_or_nan(err, 1.0 - self.clean[model], base_err, base_clean),
                }
            )
        return pd.DataFrame(rows).set_index("model")


def _relative_or_nan(errors, clean_error, baseline_errors, baseline_clean_error) -> float:
    # Relative mCE is undefined when the baseline loses nothing on some corruption (tiny test subsets).
    try:
        return relative_mce(errors, clean_error, baseline_errors, baseline_clean_error)
    except ValueError:
        return float("nan")


def _published_source(info, name: str, published: bool | None) -> str | None:
    """The published benchmark to read ``name`` from, or None to generate it."""
    from labutils import data

    base = getattr(info, "base", info.name)
    usable = base in ("cifar10", "cifar100") and not info.synthetic
    if published is False or not usable:
        if published:
            raise ValueError(f"published=True, but {info.name} has no published corruption benchmark (CIFAR-10/100).")
        return None
    available = name in CORRUPTIONS and data.corruption_benchmark_available(base, name)
    if published and not available:
        where = data.corruption_benchmark_dir(base)
        raise ValueError(f"published=True, but {where / (name + '.npy')} is missing: place the published file there.")
    return base if available else None


def _table_for(name: str, benchmark: str) -> str | None:
    """``benchmark`` if it has parameters for ``name``, else None (the corruption's own benchmark)."""
    return benchmark if name in (_CIFAR_PARAMS if benchmark == "cifar" else _MNIST_PARAMS) else None


def _check_outputs(model, name: str, info, images: np.ndarray, device) -> None:
    """One clear sentence when a model's class scores do not match the dataset's classes."""
    x = (torch.from_numpy(np.ascontiguousarray(images[:1])).float() / 255.0 - _stat(info.mean)) / _stat(info.std)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model.to(device)(x.to(device))
    except RuntimeError as exc:
        raise ValueError(
            f"Model {name!r} cannot take {info.name} images of shape {tuple(images.shape[1:])}: {exc}"
        ) from None
    finally:
        model.train(was_training)
    if out.ndim != 2 or out.shape[1] != info.num_classes:
        raise ValueError(
            f"Model {name!r} outputs {tuple(out.shape[1:])} scores per image but {info.name} has "
            f"{info.num_classes} classes: evaluate a model trained on this dataset."
        )


def _stat(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def _accuracy(model, images: np.ndarray, labels: np.ndarray, info, batch_size: int, device) -> float:
    from torch.utils.data import DataLoader

    from labutils.data import ImageArrayDataset
    from labutils.train import evaluate

    loader = DataLoader(ImageArrayDataset(images, labels, info.mean, info.std), batch_size=batch_size)
    return float(evaluate(model, loader, device=device).top1)


def evaluate_under_corruption(
    models,
    images: np.ndarray,
    labels: np.ndarray,
    info,
    names: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    *,
    benchmark: str | None = None,
    batch_size: int = 256,
    device=None,
    published: bool | None = None,
    progress: bool = True,
) -> CorruptionResults:
    """Top-1 accuracy of one or more models on every (corruption, severity) of a test set, and on the clean set.

    ``models``: an ``nn.Module`` or {name: module}, each returning (N, info.num_classes) scores for normalised
    images. ``images`` uint8 (N, C, H, W) and ``labels`` (N,), e.g. ``load_arrays(...).x_test / .y_test``;
    ``info`` the dataset's :class:`labutils.data.DatasetInfo` (mean/std normalise *after* corrupting).
    ``names`` default to the dataset's benchmark (:func:`corruption_names`), ``benchmark`` to
    :func:`benchmark_for`. Each corrupted copy is made once and every model evaluated on it
    (:func:`labutils.train.evaluate`), under one progress bar.

    ``published``: None uses the published CIFAR-10-C / CIFAR-100-C file of a corruption where
    :func:`labutils.data.corruption_benchmark_available` finds it (all its 10,000 images; the row's ``source``
    says so) and generates the others; True requires the files; False always generates.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from labutils import get_device
    from labutils.data import load_corruption_benchmark

    models = {"model": models} if isinstance(models, torch.nn.Module) else dict(models)
    if not models or not all(isinstance(m, torch.nn.Module) for m in models.values()):
        raise ValueError("models must be an nn.Module or a non-empty {name: nn.Module} mapping.")
    names = tuple(corruption_names(info.base if hasattr(info, "base") else info.name) if names is None else names)
    benchmark = benchmark_for(info.name) if benchmark is None else check_choice("benchmark", benchmark, BENCHMARKS)
    for name in names:
        check_choice("corruption", name, ALL_CORRUPTIONS)
        _table(name, _table_for(name, benchmark))
    severities = tuple(_check_severity(s) for s in severities)
    batch_size = check_int("batch_size", batch_size, 1)
    images, labels = np.asarray(images), np.asarray(labels, np.int64)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels) or not len(images):
        raise ValueError(
            f"images must be uint8 (N, C, H, W) with one label each, got {images.dtype} {images.shape} "
            f"and {len(labels)} labels."
        )
    if labels.min() < 0 or labels.max() >= info.num_classes:
        raise ValueError(f"labels must lie in 0..{info.num_classes - 1}, got {labels.min()}..{labels.max()}.")
    device = torch.device(device) if device is not None else get_device()
    for model_name, model in models.items():
        _check_outputs(model, model_name, info, images, device)
    clean = {m: _accuracy(model, images, labels, info, batch_size, device) for m, model in models.items()}
    rows = []
    bar = tqdm(total=len(names) * len(severities), desc="corruptions", disable=not progress, dynamic_ncols=True)
    try:
        for name in names:
            source = _published_source(info, name, published)
            table = _table_for(name, benchmark)
            for s in severities:
                bar.set_postfix_str(f"{name} {s}")
                if source is not None:
                    x, y = load_corruption_benchmark(source, name, s)
                    y = np.array(y, np.int64)  # a writable copy of the memory-mapped labels
                else:
                    x, y = corrupt_arrays(images, name, s, seed, benchmark=table, batch_size=500), labels
                for model_name, model in models.items():
                    acc = _accuracy(model, x, y, info, batch_size, device)
                    rows.append(
                        {
                            "model": model_name,
                            "corruption": name,
                            "family": FAMILIES[name],
                            "severity": s,
                            "accuracy": acc,
                            "error": 1.0 - acc,
                            "n": len(y),
                            "source": "generated" if source is None else f"published {source}",
                            "approximation": source is None and name in APPROXIMATIONS,
                        }
                    )
                bar.update(1)
    finally:
        bar.close()
    return CorruptionResults(pd.DataFrame(rows), clean)


def saved_models(paths: Sequence, info) -> tuple[dict[str, torch.nn.Module], dict[str, str]]:
    """Networks that earlier labs saved with :func:`labutils.train.save_backbone`, for evaluation on ``info``.

    Returns ``(models, skipped)``: {file stem: model} for every file that exists and was trained on the same
    data (same dataset, real or stand-in, and class count), and {file stem: reason} for the others.
    The model class is the one named in the file's JSON sidecar (a class of :mod:`labutils.models`).
    """
    import json
    from pathlib import Path

    from labutils import models as zoo
    from labutils.train import load_backbone

    found, skipped = {}, {}
    for path in map(Path, paths):
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            skipped[path.stem] = f"{path} does not exist (run its lab first)"
            continue
        meta = json.loads(meta_path.read_text())
        dataset = meta.get("dataset") or {}
        trained_on = (dataset.get("name"), meta.get("num_classes", dataset.get("num_classes")))
        if trained_on != (info.name, info.num_classes):
            skipped[path.stem] = f"trained on {trained_on[0]} ({trained_on[1]} classes), not {info.name}"
            continue
        factory = getattr(zoo, str(meta.get("model_class")), None)
        if not isinstance(factory, type):
            skipped[path.stem] = f"its class {meta.get('model_class')!r} is not in labutils.models"
            continue
        found[path.stem], _ = load_backbone(path, factory)
    return found, skipped


def plot_corruption_heatmaps(results: CorruptionResults, models: Sequence[str] | None = None, *, title: str = ""):
    """Accuracy per corruption (rows) and severity (columns), one panel per model, all on ONE colour scale.

    Returns ``(fig, data)``: data[model] is the (corruptions, severities) accuracy array drawn, with
    data["corruptions"], data["severities"] and data["vmin"]/data["vmax"] (the shared scale).
    """
    import matplotlib.pyplot as plt

    models = list(results.models if models is None else models)
    tables = {m: results.table(m).drop(columns="mean") for m in models}
    arrays = {m: t.to_numpy(dtype=float) for m, t in tables.items()}
    vmin = min(float(a.min()) for a in arrays.values())
    vmax = max(float(a.max()) for a in arrays.values())
    first = tables[models[0]]
    fig, axes = plt.subplots(
        1, len(models), figsize=(1.2 + 0.55 * first.shape[1] * len(models), 0.8 + 0.3 * len(first)), squeeze=False
    )
    image = None
    for ax, m in zip(axes[0], models):
        image = ax.imshow(arrays[m], cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_xticks(range(first.shape[1]), [c.split()[-1] for c in first.columns])
        ax.set_yticks(range(len(first)), first.index if ax is axes[0, 0] else [""] * len(first), fontsize=7)
        ax.set(xlabel="severity", title=m)
    fig.colorbar(image, ax=list(axes[0]), label="top-1 accuracy", shrink=0.9)
    if title:
        fig.suptitle(title)
    data = {m: arrays[m] for m in models}
    data.update(corruptions=list(first.index), severities=list(first.columns), vmin=vmin, vmax=vmax)
    return fig, data


__all__ = [
    "CORRUPTIONS",
    "EXTRAS",
    "MNIST_C",
    "ALL_CORRUPTIONS",
    "FAMILIES",
    "APPROXIMATIONS",
    "BENCHMARKS",
    "SEVERITIES",
    "MNIST_C_SEVERITY",
    "corrupt",
    "corrupt_arrays",
    "corrupted_test_sets",
    "CorruptedSet",
    "corruption_names",
    "benchmark_for",
    "is_approximation",
    "parameters",
    "to_float",
    "to_uint8",
    "corruption_errors",
    "mean_corruption_error",
    "relative_mce",
    "mean_corruption_accuracy",
    "corruption_grid",
    "CorruptionResults",
    "evaluate_under_corruption",
    "plot_corruption_heatmaps",
    "saved_models",
]
