"""The MNIST-C corruptions (Mu & Gilmer, 2019) and MNIST-C's published parameters.

MNIST-C chose 15 corruptions that keep a handwritten digit legible (:data:`MNIST_C`). Seven come from
CIFAR-10-C (:mod:`~labutils.corruptions.cifar_c` has their algorithms; :data:`PARAMETERS` has MNIST-C's
stronger settings for them); the eight below are MNIST-C's own: affine maps (shear, scale, rotate,
translate), overlays (stripe, dotted_line, zigzag) and an edge map (canny_edges). They follow the contract of
:mod:`~labutils.corruptions.cifar_c`: ``corruption(x, param, rng, benchmark)``.

MNIST-C released one severity per corruption (:data:`MNIST_C_SEVERITY`); its four severity-free corruptions
get a five-step ladder here, with the published form at the level named there.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from labutils.corruptions.ops import affine, filter2d, gaussian_filter, grey

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

# Published parameters, severity 1 first (google-research/mnist-c).
PARAMETERS: dict[str, tuple] = {
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


def _signs(rng, n, k=1) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=(n, k))


def shear(x, angle, rng, benchmark):
    """Horizontal shear by ``angle`` radians (random sign per image) about the centre; zeros outside."""
    n = x.shape[0]
    a = angle * _signs(rng, n)[:, 0]
    mat = np.zeros((n, 2, 2))
    mat[:, 0, 0], mat[:, 0, 1], mat[:, 1, 1] = 1.0, -np.sin(a), np.cos(a)
    return affine(x, mat, np.zeros((n, 2)))


def rotate(x, angle, rng, benchmark):
    """Rotation by ``angle`` radians (random sign per image) about the centre; zeros outside."""
    n = x.shape[0]
    a = angle * _signs(rng, n)[:, 0]
    mat = np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], 1)
    return affine(x, mat, np.zeros((n, 2)))


def scale(x, factor, rng, benchmark):
    """Shrink about the centre: output pixel p samples centre + factor * (p - centre), zeros outside."""
    n = x.shape[0]
    return affine(x, np.broadcast_to(np.eye(2) * factor, (n, 2, 2)), np.zeros((n, 2)))


def translate(x, pixels, rng, benchmark):
    """Shift by ``pixels`` (of a 28-pixel side, scaled to the image) along each axis, random signs, zeros in."""
    n, _, h, w = x.shape
    shift = pixels * _signs(rng, n, 2) * np.array([w / 28, h / 28])
    return affine(x, np.broadcast_to(np.eye(2), (n, 2, 2)), shift)


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
    g = gaussian_filter(grey(x), 1.0)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gx, gy = filter2d(g, sobel, "nearest"), filter2d(g, sobel.T, "nearest")
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


FUNCTIONS = {f.__name__: f for f in (shear, scale, rotate, translate, stripe, dotted_line, zigzag, canny_edges)}
