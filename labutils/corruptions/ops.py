"""Image operations the corruptions share: conversions, filters, resampling, fractal noise, colour.

Every function takes float images ``x`` (N, C, H, W) in [0, 1] on any device (C = 1 or 3) unless it says
otherwise, and works per image and channel. They re-implement with torch the pieces of SciPy, skimage,
OpenCV and ImageMagick that the published corruption code calls, with the same border rules and kernels,
so the corruptions in :mod:`~labutils.corruptions.cifar_c` and :mod:`~labutils.corruptions.mnist_c` read
like the originals.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F


def to_float(images) -> torch.Tensor:
    """uint8 images (N, C, H, W), NumPy or torch, as float32 in [0, 1] (divided by 255, not normalised)."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dtype != torch.uint8:
        raise ValueError(f"to_float expects uint8 images (0-255), got dtype {x.dtype}.")
    return x.float().div_(255.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [0, 1] back to uint8 (N, C, H, W): 255 x truncated to a whole grey level.

    Truncated, not rounded, because the published CIFAR-10-C files were made so (``np.uint8`` of a float
    in [0, 255]): a pixel at 254.9 is stored as 254. Untouched pixels k / 255 come back as k exactly.
    """
    return images.detach().float().clamp(0, 1).mul(255).floor_().to(torch.uint8).cpu().numpy()


def float_tensor(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A NumPy array (random draws, masks) as a float32 tensor on the device of ``like``."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(like.device)


def grey(x: torch.Tensor) -> torch.Tensor:
    """Luminance (N, 1, H, W) with ITU-R 601 weights (OpenCV's RGB2GRAY); greyscale passes through."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def colour(rgb: tuple[float, float, float], x: torch.Tensor) -> torch.Tensor:
    """A colour (0-255 RGB) as (1, C, 1, 1) in [0, 1]; greyscale images get its luminance."""
    c = torch.tensor(rgb, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) / 255.0
    return c if x.shape[1] == 3 else grey(c)


def pad_index(n: int, pad: int, mode: str, device) -> torch.Tensor:
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


def filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of (N, C, H, W) with one 2-D kernel (kh, kw odd), borders padded by ``mode``."""
    h, w = x.shape[2:]
    kh, kw = kernel.shape
    rows = pad_index(h, kh // 2, mode, x.device)
    cols = pad_index(w, kw // 2, mode, x.device)
    padded = x[:, :, rows][:, :, :, cols]
    # a sum of shifted copies: for these small kernels faster on CPU than conv2d with one input channel
    out = torch.zeros_like(x)
    for i, j in zip(*torch.nonzero(kernel, as_tuple=True)):
        out += float(kernel[i, j]) * padded[:, :, i : i + h, j : j + w]
    return out


def gaussian_kernel(sigma: float, truncate: float) -> torch.Tensor:
    """A normalised 1-D Gaussian (2r + 1,) of ``sigma`` pixels, r = int(truncate * sigma + 0.5) as in scipy."""
    radius = int(truncate * sigma + 0.5)  # scipy's rule
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def gaussian_filter(
    x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0, *, vertical_only: bool = False
) -> torch.Tensor:
    """skimage.filters.gaussian over H and W only (its defaults: 'nearest' borders, truncate 4 sigma).

    ``vertical_only`` blurs along H alone (each column of pixels on its own): what skimage does to a
    single-channel (H, W) image passed with ``multichannel=True``, which takes W for the colour axis.
    """
    if sigma <= 0:
        return x
    k = gaussian_kernel(sigma, truncate)
    if not vertical_only:
        x = filter2d(x, k.view(1, -1), mode)
    return filter2d(x, k.view(-1, 1), mode)


# remap's border modes -> (grid_sample's padding_mode, align_corners); the last three are scipy.ndimage's names
_REMAP_MODES = {
    "zeros": ("zeros", True),  # zeros outside the image, blended bilinearly with the edge pixels
    "nearest": ("border", True),  # the edge pixel repeated
    "mirror": ("reflection", True),  # reflected about the edge pixel's centre: c b | a b c (OpenCV's REFLECT_101)
    "reflect": ("reflection", False),  # reflected about the image's edge: b a | a b c, the edge pixel repeated
}


def remap(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mode: str = "zeros") -> torch.Tensor:
    """Bilinear sampling of x (N, C, H, W) at pixel coordinates rows, cols (N, H, W), pixel centres at integers.

    ``mode`` says what lies beyond the border: "zeros", or as scipy's ``map_coordinates(order=1, mode=...)``
    "nearest" (the edge pixel repeated), "mirror" (c b | a b c) or "reflect" (b a | a b c).
    """
    _, _, h, w = x.shape
    padding, corners = _REMAP_MODES[mode]
    if corners:  # -1 and +1 are the centres of the first and last pixels
        grid = torch.stack([cols * (2.0 / max(w - 1, 1)) - 1, rows * (2.0 / max(h - 1, 1)) - 1], dim=-1)
    else:  # -1 and +1 are the outer edges of the first and last pixels
        grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], dim=-1)
    return F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode=padding, align_corners=corners)


def pixel_grid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates (H, W) of every pixel of ``x`` (N, C, H, W), float32 on its device."""
    _, _, h, w = x.shape
    r = torch.arange(h, dtype=torch.float32, device=x.device)
    c = torch.arange(w, dtype=torch.float32, device=x.device)
    return torch.meshgrid(r, c, indexing="ij")


def affine(x: torch.Tensor, a: np.ndarray, shift: np.ndarray, mode: str = "zeros") -> torch.Tensor:
    """Output pixel p (col, row) samples input at a @ (p - centre) + centre + shift; a (N, 2, 2), shift (N, 2).

    ``mode``: the border, as in :func:`remap`.
    """
    n, _, h, w = x.shape
    rows, cols = pixel_grid(x)
    centre = ((w - 1) / 2, (h - 1) / 2)
    a, shift = float_tensor(a, x), float_tensor(shift, x)
    dc, dr = cols - centre[0], rows - centre[1]
    src_c = a[:, 0, 0, None, None] * dc + a[:, 0, 1, None, None] * dr + centre[0] + shift[:, 0, None, None]
    src_r = a[:, 1, 0, None, None] * dc + a[:, 1, 1, None, None] * dr + centre[1] + shift[:, 1, None, None]
    return remap(x, src_r, src_c, mode)


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
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
    return remap(x, rows.expand(n, h, w), cols.expand(n, h, w), "nearest")


def plasma_fractal(rng: np.random.Generator, n: int, size: int, decay: float) -> np.ndarray:
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


def motion_streak(x: torch.Tensor, radius: float, sigma: float, angles_deg: np.ndarray) -> torch.Tensor:
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


def hsv_value_saturation(x: torch.Tensor):
    """(V, S, k) of RGB images: x_c = V (1 - S k_c); k = (0, 1, 1) where S = 0 (skimage's hue 0)."""
    v = x.amax(1, keepdim=True)
    mn = x.amin(1, keepdim=True)
    delta = v - mn
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    k_grey = torch.tensor([0.0, 1.0, 1.0], device=x.device).view(1, 3, 1, 1)
    k = torch.where(delta > 0, (v - x) / delta.clamp_min(1e-12), k_grey)
    return v, s, k
