"""The published corruption benchmarks on disk: CIFAR-10-C and CIFAR-100-C's ``.npy`` files.

>>> corruption_benchmark_available("cifar10", "fog")       # <data>/CIFAR-10-C/fog.npy and labels.npy in place?
>>> x, y = load_corruption_benchmark("cifar10", "fog", 3)   # uint8 (N, 3, 32, 32), int64 (N,)

Each release is one folder of files: ``<corruption>.npy`` holds the five severities one after the other
(severity 1 first), each N images uint8 (N, 32, 32, 3), and ``labels.npy`` the labels of all 5N rows. The
folder lives in the dataset cache (:func:`labutils.datasets.data_dir`: ``data/`` or ``$LABS_DATA``).

A file that is there but cannot be what the release holds (cut short by an interrupted download, empty,
pickled Python objects, images or labels of the wrong shape, labels outside the dataset's classes) stops the
loader with one :class:`BenchmarkFileError` naming the file and saying to place the published one there.
Files are opened with ``allow_pickle=False``: a ``.npy`` never runs code when it is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labutils.corruptions.core import ALL_CORRUPTIONS, CORRUPTIONS, check_severity
from labutils.datasets import DatasetUnavailableError, data_dir
from labutils.util import check_choice

# dataset -> (folder and title, where it is published, number of classes)
_CORRUPTION_BENCHMARKS = {
    "cifar10": ("CIFAR-10-C", "https://zenodo.org/record/2535967", 10),
    "cifar100": ("CIFAR-100-C", "https://zenodo.org/record/3555552", 100),
}


class BenchmarkFileError(ValueError):
    """A published corruption benchmark file is in place but damaged, or not what the release holds."""


def corruption_benchmark_dir(name: str) -> Path:
    """Where the published ``.npy`` files of ``name``'s corruption benchmark live: ``<data>/CIFAR-10-C/``."""
    if name not in _CORRUPTION_BENCHMARKS:
        raise ValueError(
            f"No published corruption benchmark for {name!r}: choose one of {', '.join(_CORRUPTION_BENCHMARKS)} "
            "(other datasets are corrupted on the fly with labutils.corruptions)."
        )
    return data_dir() / _CORRUPTION_BENCHMARKS[name][0]


def corruption_benchmark_available(name: str, corruption: str | None = None) -> bool:
    """True if ``labels.npy`` and the ``.npy`` of ``corruption`` (default: all 15 of CIFAR-C) are in place.

    Only checks that the files exist; :func:`load_corruption_benchmark` checks what they hold.
    """
    folder = corruption_benchmark_dir(name)
    wanted = CORRUPTIONS if corruption is None else (corruption,)
    return all((folder / f"{c}.npy").is_file() for c in (*wanted, "labels"))


def load_corruption_benchmark(name: str, corruption: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """One severity of a published corruption file: uint8 images (N, 3, 32, 32) and int64 labels (N,).

    ``<data>/CIFAR-10-C/<corruption>.npy`` holds the 5 severities one after the other (severity 1 first),
    each N images (N, 32, 32, 3) uint8 (N = 10,000 in the release; any multiple of 5 rows is accepted);
    ``labels.npy`` holds one integer label per row (5N), or one copy of the N labels. Only the image rows
    asked for are read. Raises :class:`~labutils.datasets.DatasetUnavailableError` when a file is missing and
    :class:`BenchmarkFileError` when one is damaged, each in one sentence that names the file.
    """
    folder = corruption_benchmark_dir(name)
    check_choice("corruption", corruption, ALL_CORRUPTIONS)
    severity = check_severity(severity)
    title, url, num_classes = _CORRUPTION_BENCHMARKS[name]
    missing = [f for f in (f"{corruption}.npy", "labels.npy") if not (folder / f).is_file()]
    if missing:
        raise DatasetUnavailableError(
            f"{title} is not in {folder}: place {' and '.join(missing)} from the published {title} archive "
            f"({url}) in that folder."
        )
    place_again = f"place {{file}} from the published {title} archive ({url}) there again"
    images_path, labels_path = folder / f"{corruption}.npy", folder / "labels.npy"
    images = _open_npy(images_path, place_again)
    labels = _open_npy(labels_path, place_again)
    if images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8 or not len(images) or len(images) % 5:
        raise BenchmarkFileError(
            f"{images_path} holds {images.dtype} {images.shape}, not uint8 (5N, 32, 32, 3) (five severities "
            f"of N images): {place_again.format(file=images_path.name)}."
        )
    n = len(images) // 5
    if labels.ndim != 1 or len(labels) not in (n, 5 * n) or labels.dtype.kind not in "iu":
        raise BenchmarkFileError(
            f"{labels_path} holds {labels.dtype} {labels.shape}, not integer labels ({5 * n},) or ({n},) for the "
            f"{5 * n} images of {images_path.name}: {place_again.format(file=labels_path.name)}."
        )
    labels = np.asarray(labels, dtype=np.int64)  # every label is checked: the whole file is small (5N bytes)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise BenchmarkFileError(
            f"{labels_path} holds label {labels[bad[0]]} at row {bad[0]}, outside the {num_classes} classes "
            f"(0-{num_classes - 1}) of {title}: {place_again.format(file=labels_path.name)}."
        )
    rows = slice((severity - 1) * n, severity * n)
    x = np.ascontiguousarray(images[rows].transpose(0, 3, 1, 2))
    y = labels[rows] if len(labels) == 5 * n else labels
    return x, y


def _open_npy(path: Path, place_again: str) -> np.ndarray:
    """``path`` memory-mapped read-only, or one :class:`BenchmarkFileError` if it is no readable .npy array."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except EOFError:
        why = "is empty"
    except ValueError as exc:
        message = str(exc)
        if "mmap length" in message or "EOF" in message:
            why = "is cut short (shorter than its header says: an interrupted download?)"
        elif "object" in message.lower() or "pickle" in message.lower():
            why = "holds pickled Python objects, not a NumPy array of numbers"
        else:
            why = f"is not a readable .npy array ({message})"
    raise BenchmarkFileError(f"{path} {why}: {place_again.format(file=path.name)}.")
