"""Datasets for every lab: splits, normalisation, augmentation and loaders.

Where each dataset's files live and come from (downloads, the offline MNIST copy, synthetic stand-ins)
is :mod:`labutils.datasets`; this module turns them into what the labs use. Two ways in:

>>> splits = load_arrays("mnist", profile="quick")             # NumPy, for the from-scratch labs
>>> x = splits.float32(flatten=True).x_train                   # (50000, 784) float32 in [0, 1]
>>> loaders = make_loaders("cifar10", profile="quick", augment="standard")   # PyTorch DataLoaders
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from labutils import check_profile
from labutils.datasets import (
    DATASETS,
    DatasetInfo,
    DatasetUnavailableError,
    data_dir,  # noqa: F401  (re-exported: callers ask labutils.data where the data lives)
    dataset_spec,
    load_raw,
)

AUGMENTATIONS = ("none", "standard", "strong", "flip_jitter", "digits", "augmix")
# Presets that suit grey handwritten digits: no flips (a mirrored 2 is no digit), no colour (one channel).
DIGIT_DATASETS = ("mnist", "digits")


@dataclass
class ArraySplits:
    """Train/validation/test arrays: images (N, C, H, W) uint8 (or float32 after :meth:`float32`), labels int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: DatasetInfo

    def float32(self, flatten: bool = False, normalize: bool = False) -> ArraySplits:
        """A copy with float32 images in [0, 1] (``normalize``: standardised per channel), optionally (N, C*H*W)."""
        mean = np.asarray(self.info.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.info.std, np.float32).reshape(1, -1, 1, 1)

        def convert(x: np.ndarray) -> np.ndarray:
            x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
            if normalize:
                x = (x - mean) / std
            return x.reshape(len(x), -1) if flatten else x

        return replace(self, x_train=convert(self.x_train), x_val=convert(self.x_val), x_test=convert(self.x_test))


def _check_count(what: str, value: int | None, limit: int) -> None:
    if value is not None and not (isinstance(value, (int, np.integer)) and 0 <= value <= limit):
        raise ValueError(f"{what}={value!r} is not possible here: use an integer from 0 to {limit}.")


def _check_classes(classes, info: DatasetInfo) -> tuple[int, ...]:
    ok = isinstance(classes, (list, tuple)) and len(classes) >= 2
    ok = ok and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in classes)
    ok = ok and len(set(classes)) == len(classes) and all(0 <= c < info.num_classes for c in classes)
    if not ok:
        raise ValueError(
            f"classes={classes!r} is not possible for {info.name}: give at least two distinct labels "
            f"from 0 to {info.num_classes - 1}, e.g. (5, 6, 7, 8, 9)."
        )
    return tuple(int(c) for c in classes)


def _keep_classes(x: np.ndarray, y: np.ndarray, class_ids: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The images of ``class_ids`` only, relabelled 0..k-1 in the order given."""
    relabel = np.full(int(max(y.max(), *class_ids)) + 1, -1, np.int64)
    relabel[list(class_ids)] = np.arange(len(class_ids))
    keep = relabel[y] >= 0
    return x[keep], relabel[y[keep]]


def _first_per_class(order: np.ndarray, y: np.ndarray, n: int, info: DatasetInfo) -> np.ndarray:
    """The first ``n`` indices of every class in ``order`` (order kept); one error if a class has fewer."""
    counts = np.bincount(y[order], minlength=info.num_classes)
    short = [c for c in range(info.num_classes) if counts[c] < n]
    if short:
        c = short[0]
        raise ValueError(
            f"train_per_class={n} is not possible: class {info.classes[c]!r} has only {counts[c]} training "
            f"images after the validation split; use at most {int(counts.min())} (or a smaller val_size)."
        )
    labels, keep = y[order], np.zeros(len(order), bool)
    for c in range(info.num_classes):
        keep[np.flatnonzero(labels == c)[:n]] = True
    return order[keep]


def load_arrays(
    name: str,
    *,
    profile: str,
    val_size: int | None = None,
    seed: int = 0,
    train_subset: int | None = None,
    test_subset: int | None = None,
    classes: tuple[int, ...] | list[int] | None = None,
    train_per_class: int | None = None,
) -> ArraySplits:
    """Train/validation/test arrays of a dataset (uint8 images (N, C, H, W), int64 labels).

    ``val_size`` images (default per dataset, at most a fifth of the training set: 10,000 for MNIST,
    5,000 for CIFAR) are held out of the
    training set by a permutation seeded with ``seed``, so the split is reproducible. ``train_subset`` and
    ``test_subset`` keep the first n of the (seeded) shuffled training remainder and test set.

    ``classes=(5, 6, 7, 8, 9)`` keeps only those classes (in every split, before the validation split is
    carved) and relabels them 0..k-1 in the order given; ``info.classes`` names them and
    ``info.class_ids`` records the original labels. ``train_per_class=n`` is a label budget: the first n
    training images of every class in the seeded shuffle (the validation split is not reduced).
    """
    spec = dataset_spec(name)
    (x_all, y_all, x_test, y_test), info = load_raw(name, check_profile(profile))
    if classes is not None:
        class_ids = _check_classes(classes, info)
        x_all, y_all = _keep_classes(x_all, y_all, class_ids)
        x_test, y_test = _keep_classes(x_test, y_test, class_ids)
        info = replace(
            info,
            num_classes=len(class_ids),
            classes=tuple(info.classes[c] for c in class_ids),
            class_ids=class_ids,
        )
    if train_per_class is not None:
        if isinstance(train_per_class, bool) or not isinstance(train_per_class, (int, np.integer)):
            raise ValueError(f"train_per_class={train_per_class!r} is not possible: use a positive integer.")
        if train_per_class < 1:
            raise ValueError(f"train_per_class={train_per_class!r} is not possible: use a positive integer.")
        if train_subset is not None:
            raise ValueError(
                f"train_subset={train_subset!r} and train_per_class={train_per_class!r} were both given: "
                "use one of them."
            )
        info = replace(info, train_per_class=int(train_per_class))
    # Stand-ins are smaller than the real sets: hold out at most a fifth of them by default.
    val_size = min(spec.val_size, len(x_all) // 5) if val_size is None else val_size
    _check_count("val_size", val_size, len(x_all) - 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_all))
    val_idx, train_idx = order[:val_size], order[val_size:]
    _check_count("train_subset", train_subset, len(train_idx))
    _check_count("test_subset", test_subset, len(x_test))
    if train_subset is not None:
        train_idx = train_idx[:train_subset]
    if train_per_class is not None:
        train_idx = _first_per_class(train_idx, y_all, int(train_per_class), info)
    test_idx = np.arange(len(x_test)) if test_subset is None else rng.permutation(len(x_test))[:test_subset]
    info = replace(info, sizes={"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)})
    return ArraySplits(
        x_all[train_idx], y_all[train_idx], x_all[val_idx], y_all[val_idx], x_test[test_idx], y_test[test_idx], info
    )


# -- PyTorch side ------------------------------------------------------------------------------------
def augmentation(preset: str, image_size: int, *, flips: bool = True):
    """The training-time augmentation of a preset, applied to uint8 tensors (C, H, W).

    ``flips=False`` leaves out every horizontal flip: :func:`make_loaders` does so for the digit datasets
    (MNIST, scikit-learn's digits), where a mirrored digit is another symbol or none.

    ``none``: nothing. ``standard``: random crop with 4-pixel padding and horizontal flip.
    ``strong``: standard plus colour jitter and rotation up to ±15°.
    ``flip_jitter``: horizontal flip and colour jitter of ±20 % in brightness, contrast and saturation (no crop).
    ``digits``: for handwritten digits, small shifts (up to 10 % of the side) and rotations (up to ±10°);
    no flips and no colour. :func:`augmentation_for` picks it for digit datasets.
    ``augmix``: standard plus torchvision's ``v2.AugMix(all_ops=False)`` (Hendrycks et al. 2020: severity 3,
    width 3, chains of 1-3 operations, mixed with the image), without the paper's Jensen-Shannon consistency loss.
    ``all_ops=False`` is how the paper ran it for a corruption benchmark: its operations are shear, translate,
    rotate, posterize, solarize, autocontrast and equalize, leaving out brightness, contrast, colour and sharpness,
    which overlap the -C corruptions. It works on 1-channel (greyscale) uint8 images too.

    Some presets do contain a corruption of a test suite: the random crop is a translation (MNIST-C's
    ``translate``), ``strong``'s colour jitter is CIFAR-C's ``brightness`` and ``contrast`` and its rotation
    MNIST-C's ``rotate``; AugMix's affine operations are MNIST-C's ``shear``, ``translate`` and ``rotate``.
    :func:`labutils.challenge.augmentation_overlap` lists them for a set of corruptions.
    """
    from torchvision.transforms import v2

    if preset not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation preset {preset!r}: choose one of {', '.join(AUGMENTATIONS)}.")
    if preset == "none":
        return None
    flip = [v2.RandomHorizontalFlip()] if flips else []
    if preset == "flip_jitter":
        return v2.Compose([*flip, v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)])
    if preset == "digits":
        return v2.RandomAffine(degrees=10, translate=(0.1, 0.1))
    steps = [v2.RandomCrop(image_size, padding=4), *flip]
    if preset == "strong":
        steps += [v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4), v2.RandomRotation(15)]
    if preset == "augmix":
        steps.append(v2.AugMix(all_ops=False))  # the paper's choice for a corruption benchmark
    return v2.Compose(steps)


def augmentation_for(dataset: str, preset: str) -> str:
    """The preset to use for ``preset`` on ``dataset``: digit datasets (MNIST, scikit-learn's digits) get
    ``digits`` for every preset but ``none`` (flips and colour jitter make no sense on grey digits); others keep
    ``preset``. ``augmentation_for("mnist", "flip_jitter") == "digits"``."""
    if preset not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation preset {preset!r}: choose one of {', '.join(AUGMENTATIONS)}.")
    dataset_spec(dataset)  # one clear error for an unknown dataset
    return "digits" if dataset in DIGIT_DATASETS and preset != "none" else preset


class ImageArrayDataset:
    """A map-style dataset over in-memory uint8 images that returns normalised float tensors.

    Without augmentation a whole batch is gathered with one indexing operation (``__getitems__``),
    which keeps the loader far from being the bottleneck on a laptop CPU.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, transform=None):
        import torch

        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, np.int64))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def _normalise(self, x):
        return (x.float().div_(255.0) - self.mean) / self.std

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return self._normalise(x[None])[0], self.labels[i]

    def __getitems__(self, indices: list[int]):
        import torch

        idx = torch.as_tensor(indices)
        x = self.images[idx]
        if self.transform is not None:
            x = torch.stack([self.transform(img) for img in x])
        return list(zip(self._normalise(x), self.labels[idx]))


@dataclass
class Loaders:
    train: Any
    val: Any
    test: Any
    info: DatasetInfo


def default_num_workers() -> int:
    """In-memory datasets need no worker processes; with augmentation one helper per spare core."""
    return 0 if (os.cpu_count() or 1) <= 2 else min(4, (os.cpu_count() or 1) - 1)


def make_loaders(
    name: str,
    *,
    profile: str,
    batch_size: int = 128,
    augment: str = "none",
    val_size: int | None = None,
    seed: int = 0,
    train_subset: int | None = None,
    test_subset: int | None = None,
    num_workers: int | None = None,
    eval_batch_size: int | None = None,
    classes: tuple[int, ...] | list[int] | None = None,
    train_per_class: int | None = None,
    augment_on: str = "loader",
    device=None,
) -> Loaders:
    """PyTorch DataLoaders (train shuffled and augmented; val/test in order) of normalised images.

    Images are float32 (N, C, H, W), standardised with the dataset's per-channel mean and std.
    Arguments as in :func:`load_arrays`; ``augment`` is a preset of :func:`augmentation`.
    ``augment_on="loader"`` (the default) augments image by image in the DataLoader with torchvision;
    ``augment_on="device"`` keeps the training images on ``device`` (default :func:`labutils.get_device`) and
    augments each whole batch there at once (:class:`labutils.batch_augment.DeviceLoader`, the same preset).
    """
    import torch
    from torch.utils.data import DataLoader

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not possible: use a positive integer.")
    if augment_on not in ("loader", "device"):
        raise ValueError(f"augment_on={augment_on!r} is not possible: use 'loader' or 'device'.")
    splits = load_arrays(
        name,
        profile=profile,
        val_size=val_size,
        seed=seed,
        train_subset=train_subset,
        test_subset=test_subset,
        classes=classes,
        train_per_class=train_per_class,
    )
    info = splits.info
    transform = augmentation(augment, info.image_shape[-1], flips=name not in DIGIT_DATASETS)
    augmenting_in_loader = transform is not None and augment_on == "loader"
    workers = (default_num_workers() if augmenting_in_loader else 0) if num_workers is None else num_workers
    pin = torch.cuda.is_available()
    generator = torch.Generator().manual_seed(seed)

    def loader(x, y, tf, shuffle, bs):
        return DataLoader(
            ImageArrayDataset(x, y, info.mean, info.std, tf),
            batch_size=bs,
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=pin,
            generator=generator if shuffle else None,
            persistent_workers=workers > 0,
        )

    eval_bs = eval_batch_size or max(batch_size, 256)
    if augment_on == "device":
        from labutils import get_device
        from labutils.batch_augment import BatchAugment, DeviceLoader

        train = DeviceLoader(
            splits.x_train,
            splits.y_train,
            info.mean,
            info.std,
            BatchAugment(augment, flips=name not in DIGIT_DATASETS) if augment != "none" else None,
            batch_size=batch_size,
            device=get_device() if device is None else device,
            seed=seed,
        )
    else:
        train = loader(splits.x_train, splits.y_train, transform, True, batch_size)
    return Loaders(
        train,
        loader(splits.x_val, splits.y_val, None, False, eval_bs),
        loader(splits.x_test, splits.y_test, None, False, eval_bs),
        info,
    )


def fetch(names: list[str] | tuple[str, ...] = DATASETS) -> dict[str, str]:
    """Fetch datasets ahead of time (``make data``); returns a one-line status per dataset.

    Never raises for a dataset that cannot be had: the status line says what to place where.
    """
    status = {}
    for name in names:
        dataset_spec(name)
        try:
            _, info = load_raw(name, "full")
            status[name] = f"ok — {info.source}"
        except DatasetUnavailableError as exc:
            status[name] = f"missing — {exc}"
    return status
