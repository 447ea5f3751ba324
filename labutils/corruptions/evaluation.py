"""Models under corruption: predictions on uint8 images, accuracy per (corruption, severity), saved networks.

>>> results = evaluate_under_corruption({"baseline": a, "resnet": b}, splits.x_test, splits.y_test, info)
>>> results.summary(baseline="baseline")         # clean accuracy, mean corruption accuracy, mCE, relative mCE
>>> labels = predict_uint8(model, images, info)   # (M,) int64 arg-max classes of uint8 (M, C, H, W) images

:func:`predict_uint8` is the one place where a model meets uint8 images: the clean and corrupted accuracies
here and the robustness challenge's predictions (:func:`labutils.challenge.predict`) all go through it.
The published CIFAR-10-C / CIFAR-100-C files are read by :mod:`~labutils.corruptions.published`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labutils.corruptions.core import (
    ALL_CORRUPTIONS,
    BENCHMARKS,
    CORRUPTIONS,
    FAMILIES,
    SEVERITIES,
    benchmark_for,
    check_severity,
    corrupt_arrays,
    corruption_names,
    is_approximation,
    parameter_table,
    usable_benchmark,
)
from labutils.corruptions.published import (
    corruption_benchmark_available,
    corruption_benchmark_dir,
    load_corruption_benchmark,
)
from labutils.corruptions.scores import mean_corruption_accuracy, mean_corruption_error, relative_mce
from labutils.util import check_choice, check_int


def predict_uint8(model, images: np.ndarray, info, *, batch_size: int = 256, device=None, name: str | None = None):
    """Arg-max class (M,) int64 of ``model`` on uint8 images (M, C, H, W), normalised as in training.

    Each batch of ``batch_size`` images is divided by 255 and standardised per channel with ``info.mean`` and
    ``info.std`` (as :class:`labutils.data.ImageArrayDataset` does), then classified in evaluation mode without
    gradients on ``device`` (default :func:`labutils.get_device`); the model's train/eval mode is restored.
    ``info`` is the dataset's :class:`labutils.data.DatasetInfo` (``mean``, ``std``, ``num_classes``, ``name``).
    Raises one ValueError, naming the model ``name`` if given, when the images are not uint8 (M, C, H, W), when
    the model cannot take them, or when its scores are not (batch, info.num_classes).
    """
    from labutils import get_device

    who = "The model" if name is None else f"Model {name!r}"
    batch_size = check_int("batch_size", batch_size, 1)
    device = torch.device(device) if device is not None else get_device()
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (M, C, H, W), got {images.dtype} {images.shape}.")
    mean = torch.tensor(info.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).view(1, -1, 1, 1)
    was_training = model.training
    model.to(device).eval()
    predictions = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = np.ascontiguousarray(images[start : start + batch_size])
                x = (torch.from_numpy(batch).float() / 255.0 - mean) / std
                try:
                    scores = model(x.to(device))
                except RuntimeError as exc:
                    if start > 0:  # the first batch went through: this is not a shape mismatch
                        raise
                    raise ValueError(
                        f"{who} cannot take {info.name} images of shape {tuple(images.shape[1:])}: {exc}"
                    ) from None
                if scores.ndim != 2 or scores.shape[1] != info.num_classes:
                    raise ValueError(
                        f"{who} outputs {tuple(scores.shape[1:])} scores per image but {info.name} has "
                        f"{info.num_classes} classes: evaluate a model trained on this dataset."
                    )
                predictions.append(scores.argmax(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(predictions).numpy().astype(np.int64) if predictions else np.zeros(0, np.int64)


def _accuracy(model, images: np.ndarray, labels: np.ndarray, info, batch_size: int, device, name: str) -> float:
    """Top-1 accuracy: the fraction of images whose :func:`predict_uint8` class is the label."""
    predicted = predict_uint8(model, images, info, batch_size=batch_size, device=device, name=name)
    return int(np.count_nonzero(predicted == labels)) / len(labels)


@dataclass
class CorruptionResults:
    """What :func:`evaluate_under_corruption` measured.

    ``frame``: one row per (model, corruption, severity) with columns model, corruption, family, severity,
    accuracy, error, n (images), source ("generated" or the published file's benchmark) and approximation
    (True where a procedural stand-in replaced the original: :func:`is_approximation`). ``clean``: {model: clean
    top-1 accuracy}.
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
        starred = set(rows.corruption[rows.approximation])
        pivot.index = [n + (" *" if n in starred else "") for n in order]
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
    base = getattr(info, "base", info.name)
    usable = base in ("cifar10", "cifar100") and not info.synthetic
    if published is False or not usable:
        if published:
            raise ValueError(f"published=True, but {info.name} has no published corruption benchmark (CIFAR-10/100).")
        return None
    available = name in CORRUPTIONS and corruption_benchmark_available(base, name)
    if published and not available:
        where = corruption_benchmark_dir(base)
        raise ValueError(f"published=True, but {where / (name + '.npy')} is missing: place the published file there.")
    return base if available else None


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
    (:func:`predict_uint8`), under one progress bar.

    ``published``: None uses the published CIFAR-10-C / CIFAR-100-C file of a corruption where
    :func:`~labutils.corruptions.published.corruption_benchmark_available` finds it (all its 10,000 images; the
    row's ``source`` says so) and generates the others; True requires the files; False always generates.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from labutils import get_device

    models = {"model": models} if isinstance(models, torch.nn.Module) else dict(models)
    if not models or not all(isinstance(m, torch.nn.Module) for m in models.values()):
        raise ValueError("models must be an nn.Module or a non-empty {name: nn.Module} mapping.")
    names = tuple(corruption_names(info.base if hasattr(info, "base") else info.name) if names is None else names)
    benchmark = benchmark_for(info.name) if benchmark is None else check_choice("benchmark", benchmark, BENCHMARKS)
    for name in names:
        check_choice("corruption", name, ALL_CORRUPTIONS)
        parameter_table(name, usable_benchmark(name, benchmark))
    severities = tuple(check_severity(s) for s in severities)
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
    clean = {m: _accuracy(model, images, labels, info, batch_size, device, m) for m, model in models.items()}
    rows = []
    bar = tqdm(total=len(names) * len(severities), desc="corruptions", disable=not progress, dynamic_ncols=True)
    try:
        for name in names:
            source = _published_source(info, name, published)
            table = usable_benchmark(name, benchmark)
            for s in severities:
                bar.set_postfix_str(f"{name} {s}")
                if source is not None:
                    x, y = load_corruption_benchmark(source, name, s)
                else:
                    x, y = corrupt_arrays(images, name, s, seed, benchmark=table, batch_size=500), labels
                for model_name, model in models.items():
                    acc = _accuracy(model, x, y, info, batch_size, device, model_name)
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
                            "approximation": source is None and is_approximation(name, table),
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
    Each file's JSON sidecar holds :func:`labutils.backbones.backbone_meta`'s keys: ``dataset`` says what it
    was trained on, ``model_class`` (a class of :mod:`labutils.models`) and ``model_kwargs`` rebuild it.
    """
    from labutils import models as zoo
    from labutils.train import load_backbone

    found, skipped = {}, {}
    for path in map(Path, paths):
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            skipped[path.stem] = f"{path} does not exist (run its lab first)"
            continue
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta.get("dataset"), dict) or "model_class" not in meta:
            skipped[path.stem] = f"{meta_path.name} does not say what the network is and what it was trained on"
            continue
        trained_on = (meta["dataset"]["name"], meta["dataset"]["num_classes"])
        if trained_on != (info.name, info.num_classes):
            skipped[path.stem] = f"trained on {trained_on[0]} ({trained_on[1]} classes), not {info.name}"
            continue
        factory = getattr(zoo, str(meta["model_class"]), None)
        if not isinstance(factory, type):
            skipped[path.stem] = f"its class {meta['model_class']!r} is not in labutils.models"
            continue
        found[path.stem], _ = load_backbone(path, factory)
    return found, skipped
