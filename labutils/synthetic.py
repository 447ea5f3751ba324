"""Procedural stand-ins for image datasets that cannot be had offline.

Used only by the ``quick`` profile when a real dataset is missing, and always labelled
``synthetic`` wherever it appears (dataset name, provenance, metrics, notebook output).

Every image is one of ten shape *primitives* (disk, square, triangle, ...) drawn in a colour
on a noisy background, at a random position, scale and small rotation. The label spaces are
built from the same primitives so that transfer between stand-ins is meaningful:

* 10-class stand-ins (CIFAR-10, Imagenette, MNIST): class = shape; colour is a nuisance.
* 100-class stand-in (CIFAR-100): class = (shape, hue band) -- 10 shapes x 10 hue bands, so
  a network that learned shapes on the 10-class stand-in has half of the answer already.
* 2-class stand-in (Oxford-IIIT Pet, cat vs dog): two of the shapes.

The task is learnable (a small CNN is far above chance after one epoch) but not trivial
(noise, clutter-free but varied pose and colour).
"""

from __future__ import annotations

import numpy as np

SHAPES = ("disk", "square", "triangle", "ring", "plus", "hbars", "vbars", "diamond", "checker", "xcross")
HUES = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "blue", "purple", "magenta")


def _shape_masks(shape_ids: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean masks (N, H, W) of each sample's shape in its own normalised coordinates."""
    ax, ay = np.abs(x), np.abs(y)
    r = np.sqrt(x**2 + y**2)
    inside = (ax < 1) & (ay < 1)
    candidates = [
        r < 0.95,  # disk
        (ax < 0.75) & (ay < 0.75),  # square
        (y < 0.7) & (y > 1.8 * ax - 0.9),  # triangle (apex up)
        (r > 0.55) & (r < 0.95),  # ring
        ((ax < 0.28) & (ay < 0.95)) | ((ay < 0.28) & (ax < 0.95)),  # plus
        inside & (np.sin(y * 2.5 * np.pi) > 0),  # horizontal bars
        inside & (np.sin(x * 2.5 * np.pi) > 0),  # vertical bars
        ax + ay < 0.95,  # diamond
        inside & ((np.floor(2 * x) + np.floor(2 * y)) % 2 == 0),  # checker
        (np.abs(ax - ay) < 0.25) & inside,  # diagonal cross
    ]
    masks = np.zeros(x.shape, dtype=bool)
    for sid, cand in enumerate(candidates):
        sel = shape_ids == sid
        if sel.any():
            masks[sel] = cand[sel]
    return masks


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all inputs in [0, 1], output (..., 3)."""
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ],
        0,
    )
    return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]


def class_names(num_classes: int) -> list[str]:
    """Human-readable class names of a stand-in with ``num_classes`` classes."""
    if num_classes == 100:
        return [f"{hue}-{shape}" for shape in SHAPES for hue in HUES]
    if num_classes == 2:
        return ["cat-like (disk)", "dog-like (square)"]
    if num_classes == 10:
        return list(SHAPES)
    raise ValueError(f"Synthetic stand-ins have 2, 10 or 100 classes, not {num_classes}.")


def make_images(
    n: int, num_classes: int, size: int = 32, channels: int = 3, seed: int = 0, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` labelled stand-in images.

    Returns ``(images, labels)``: images uint8 of shape (n, channels, size, size), labels int64
    of shape (n,), classes balanced up to rounding and shuffled. Deterministic in ``seed``.
    """
    if n < 0 or size < 8 or channels not in (1, 3):
        raise ValueError(
            f"Cannot draw {n} synthetic images of {channels}x{size}x{size}: need n >= 0, size >= 8 and 1 or 3 channels."
        )
    class_names(num_classes)  # validates num_classes
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    images = np.empty((n, channels, size, size), dtype=np.uint8)
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    for start in range(0, n, chunk):
        lab = labels[start : start + chunk]
        m = len(lab)
        if num_classes == 100:
            shape_ids, hue_band = lab // 10, lab % 10
            hue = (hue_band + rng.uniform(0.15, 0.85, m)) / 10
        elif num_classes == 2:
            shape_ids, hue = lab.copy(), rng.uniform(0, 1, m)  # disk vs square
        else:
            shape_ids, hue = lab.copy(), rng.uniform(0, 1, m)
        scale = rng.uniform(0.45, 0.8, m)[:, None, None]
        cx = rng.uniform(-0.25, 0.25, m)[:, None, None]
        cy = rng.uniform(-0.25, 0.25, m)[:, None, None]
        theta = rng.uniform(-0.3, 0.3, m)[:, None, None]
        gx, gy = grid[None, None, :] - cx, grid[None, :, None] - cy
        x = (np.cos(theta) * gx + np.sin(theta) * gy) / scale
        y = (-np.sin(theta) * gx + np.cos(theta) * gy) / scale
        mask = _shape_masks(shape_ids, x, -y)  # -y: image rows grow downwards
        fg = _hsv_to_rgb(hue, rng.uniform(0.6, 1.0, m), rng.uniform(0.65, 1.0, m))  # (m, 3)
        bg = _hsv_to_rgb(rng.uniform(0, 1, m), rng.uniform(0.0, 0.4, m), rng.uniform(0.1, 0.45, m))
        img = np.where(mask[:, None], fg[:, :, None, None], bg[:, :, None, None])
        img = img + rng.normal(0, 0.07, img.shape)
        if channels == 1:
            img = (0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2])[:, None]
        images[start : start + m] = np.clip(img * 255, 0, 255).round().astype(np.uint8)
    return images, labels
