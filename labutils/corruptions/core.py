"""The corruptions as one set: their names, families and parameter tables, and the calls that apply them.

>>> x = to_float(splits.x_test[:256])                   # uint8 (N, C, H, W) -> float32 in [0, 1]
>>> y = corrupt(x, "fog", severity=3, seed=0)            # same shape, dtype and range
>>> z = corrupt_arrays(splits.x_test, "fog", 3, seed=0)  # uint8 in, uint8 out, batch by batch

The algorithms live in :mod:`~labutils.corruptions.cifar_c` and :mod:`~labutils.corruptions.mnist_c`; this
module picks the parameters of a (corruption, severity, benchmark), draws the seeded random stream and
checks what callers pass. ``benchmark`` chooses a parameter table: ``None`` (the corruption's own: MNIST-C's
for its eight own corruptions, CIFAR-10-C's for the others), ``"cifar"`` or ``"mnist"`` (MNIST-C's table for
the names both sets share, much stronger for noise and fog).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from labutils.corruptions import cifar_c, mnist_c
from labutils.corruptions.cifar_c import CORRUPTIONS, EXTRAS
from labutils.corruptions.mnist_c import MNIST_C
from labutils.corruptions.ops import to_float, to_uint8
from labutils.util import check_choice, check_int

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
# Procedural stand-ins for originals that need tools this project does not use. Spatter is one only with
# CIFAR-10-C's table (its water drops); MNIST-C's spatter is mud at every level and follows the published code.
APPROXIMATIONS = frozenset({"motion_blur", "snow", "frost", "spatter", "canny_edges"})
_EXACT_WITH_MNIST_TABLE = frozenset({"spatter"})
BENCHMARKS = ("cifar", "mnist")
SEVERITIES = (1, 2, 3, 4, 5)
# MNIST-C's own corruptions: their own benchmark is "mnist"; every other corruption's is "cifar".
_MNIST_ONLY = tuple(n for n in MNIST_C if n not in cifar_c.PARAMETERS)
# corruption name -> function(x, param, rng, benchmark), in the order of ALL_CORRUPTIONS
FUNCTIONS = {name: {**cifar_c.FUNCTIONS, **mnist_c.FUNCTIONS}[name] for name in ALL_CORRUPTIONS}


# -- names and parameters ----------------------------------------------------------------------------
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


def is_approximation(name: str, benchmark: str | None = None) -> bool:
    """True if ``name`` with ``benchmark``'s table (as in :func:`corrupt`) is a procedural stand-in for an
    original that needs tools this project does not use: :data:`APPROXIMATIONS`, except spatter with MNIST-C's
    table (``benchmark="mnist"``), which follows the published code."""
    check_choice("corruption", name, ALL_CORRUPTIONS)
    if benchmark is None:
        benchmark = "mnist" if name in _MNIST_ONLY else "cifar"
    check_choice("benchmark", benchmark, BENCHMARKS)
    return name in APPROXIMATIONS and not (benchmark == "mnist" and name in _EXACT_WITH_MNIST_TABLE)


def parameters(name: str, severity: int, benchmark: str | None = None):
    """The published parameter(s) of ``name`` at ``severity`` (1-5) in ``benchmark`` (see :func:`corrupt`)."""
    return parameter_table(name, benchmark)[check_severity(severity) - 1]


def parameter_table(name: str, benchmark: str | None = None) -> tuple:
    """The five parameter entries (severity 1 first) of ``name`` in ``benchmark``'s table (see :func:`corrupt`).

    Raises one ValueError for an unknown name or benchmark, or a benchmark with no parameters for ``name``.
    """
    check_choice("corruption", name, ALL_CORRUPTIONS)
    if benchmark is None:
        benchmark = "mnist" if name in _MNIST_ONLY else "cifar"
    check_choice("benchmark", benchmark, BENCHMARKS)
    table = cifar_c.PARAMETERS if benchmark == "cifar" else mnist_c.PARAMETERS
    if name not in table:
        other = "MNIST-C" if benchmark == "cifar" else "CIFAR-10-C"
        raise ValueError(
            f"{name!r} has no {benchmark.upper()}-C parameters (it comes from {other}): "
            f"use benchmark=None or {'mnist' if benchmark == 'cifar' else 'cifar'!r}."
        )
    return table[name]


def usable_benchmark(name: str, benchmark: str) -> str | None:
    """``benchmark`` if its table has parameters for ``name``, else None (the corruption's own table).

    A run over a whole benchmark passes this to :func:`corrupt`: on MNIST (``"mnist"``) a CIFAR-only corruption
    such as ``contrast`` then keeps CIFAR-10-C's parameters instead of raising.
    """
    check_choice("benchmark", benchmark, BENCHMARKS)
    return benchmark if name in (cifar_c.PARAMETERS if benchmark == "cifar" else mnist_c.PARAMETERS) else None


def check_severity(severity) -> int:
    """``severity`` as an int if it is an integer from 1 to 5, else one ValueError."""
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"severity={severity!r} is not possible: use an integer from 1 to 5.")
    return int(severity)


def check_images(images) -> torch.Tensor:
    """``images`` unchanged if it is a float tensor (N, C, H, W) in [0, 1] with C = 1 or 3, else one ValueError."""
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
    severity = check_severity(severity)
    seed = check_int("seed", seed, 0)
    images = check_images(images)
    return _corrupt(images, name, severity, _rng(seed, name), benchmark)


def _rng(seed: int, name: str, chunk: int = 0) -> np.random.Generator:
    # One stream per (seed, corruption): crc32 is stable across runs (hash() of a str is not).
    entropy = [seed, zlib.crc32(name.encode())] + ([chunk] if chunk else [])
    return np.random.default_rng(entropy)


def _corrupt(images, name, severity, rng, benchmark) -> torch.Tensor:
    param = parameter_table(name, benchmark)[severity - 1]
    if benchmark is None:
        benchmark = "mnist" if name in _MNIST_ONLY else "cifar"
    if images.shape[0] == 0:
        return images.clone()
    x = images.to(torch.float32)
    out = FUNCTIONS[name](x, param, rng, benchmark)
    return out.clamp_(0, 1).to(images.dtype)


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
    severity = check_severity(severity)
    seed = check_int("seed", seed, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    parameter_table(name, benchmark)
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
        parameter_table(name, benchmark)
    severities = tuple(check_severity(s) for s in severities)
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
