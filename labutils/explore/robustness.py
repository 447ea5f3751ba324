"""Lab 08's explorer: corruption × severity on real test images, the model's prediction under each image, and its
accuracy at that cell.

The images shown are corrupted as the lab corrupts its test set (:func:`labutils.corruptions.corrupt_arrays`, same
seed and parameter table) and classified with :func:`labutils.corruptions.predict_uint8`, the one place where a
model meets uint8 images. The accuracy at the cell is read from the lab's :class:`~labutils.corruptions
.CorruptionResults` (the whole corrupted test set), or measured on the given images when no results are passed.

>>> explore.lab08_robustness(models, splits, NAMES, SEVERITIES, results=results, benchmark=BENCHMARK)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from labutils.explore.core import Explorer, View, control_options, drawn, figure

SHOWN = 8  # images drawn per cell


def cell_accuracy(results, model: str, corruption: str, severity: int) -> float | None:
    """Accuracy of ``model`` at (corruption, severity) in ``results``' frame, or None if that cell was not run."""
    frame = results.frame
    rows = frame[(frame.model == model) & (frame.corruption == corruption) & (frame.severity == severity)]
    return float(rows.accuracy.iloc[0]) if len(rows) else None


def corruption_view(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    info,
    corruption: str,
    severity: int,
    *,
    seed: int = 0,
    benchmark: str | None = None,
    shown: int = SHOWN,
) -> dict[str, Any]:
    """The first ``shown`` images (uint8 (N, C, H, W)) clean and corrupted, with the model's predictions on both.

    Returns ``{"clean", "corrupted": (n, C, H, W) uint8, "clean_predictions", "predictions", "labels": (n,)}``.
    """
    from labutils.corruptions import corrupt_arrays, predict_uint8

    clean = np.asarray(images[:shown])
    corrupted = corrupt_arrays(clean, corruption, severity, seed, benchmark=benchmark)
    return {
        "clean": clean,
        "corrupted": corrupted,
        "clean_predictions": predict_uint8(model, clean, info),
        "predictions": predict_uint8(model, corrupted, info),
        "labels": np.asarray(labels[:shown]),
    }


def measured_accuracy(model, images, labels, info, corruption, severity, *, seed=0, benchmark=None) -> float:
    """Top-1 accuracy of ``model`` on all of ``images`` corrupted at (corruption, severity)."""
    from labutils.corruptions import corrupt_arrays, predict_uint8

    corrupted = corrupt_arrays(np.asarray(images), corruption, severity, seed, benchmark=benchmark)
    return float(np.mean(predict_uint8(model, corrupted, info) == np.asarray(labels)))


def draw_corruption(result: dict[str, Any], classes: Sequence[str], title: str):
    """Two rows: the clean images and the corrupted ones, each titled with the prediction (green right, red wrong)."""
    n = len(result["labels"])
    fig = figure(1.25 * n + 0.6, 3.4)
    axes = fig.subplots(2, n, squeeze=False)
    rows = (
        ("clean", result["clean"], result["clean_predictions"]),
        ("corrupted", result["corrupted"], result["predictions"]),
    )
    for r, (name, images, predictions) in enumerate(rows):
        for c in range(n):
            ax, img = axes[r, c], images[c]
            grey = img.shape[0] == 1
            ax.imshow(img[0] if grey else np.transpose(img, (1, 2, 0)), cmap="gray" if grey else None, vmin=0, vmax=255)
            right = predictions[c] == result["labels"][c]
            ax.set_title(str(classes[predictions[c]])[:10], fontsize=8, color="tab:green" if right else "tab:red")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def lab08_robustness(
    models: Mapping[str, Any],
    splits,
    corruptions: Sequence[str],
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    *,
    results=None,
    benchmark: str | None = None,
    seed: int = 0,
) -> Explorer:
    """Model, corruption and severity → the first test images clean and corrupted with the model's prediction under
    each, and the model's accuracy at that cell (from ``results``, else measured on ``splits``' test images)."""
    import ipywidgets as widgets

    from labutils.corruptions import is_approximation

    names = control_options("lab08_robustness", models, "models")
    corruptions = control_options("lab08_robustness", corruptions, "corruptions")
    severities = control_options("lab08_robustness", severities, "severities")
    info = splits.info
    controls = {
        "model": widgets.Dropdown(options=names, value=names[0], description="model"),
        "corruption": widgets.Dropdown(options=corruptions, value=corruptions[0], description="corruption"),
        "severity": widgets.SelectionSlider(
            options=severities, value=severities[len(severities) // 2], description="severity", continuous_update=False
        ),
    }
    measured: dict[tuple, float] = {}

    def view(model: str, corruption: str, severity: int) -> View:
        net = models[model]
        result = corruption_view(
            net, splits.x_test, splits.y_test, info, corruption, severity, seed=seed, benchmark=benchmark
        )
        accuracy = cell_accuracy(results, model, corruption, severity) if results is not None else None
        where = "the lab's evaluation"
        if accuracy is None:
            key = (model, corruption, severity)
            if key not in measured:
                measured[key] = measured_accuracy(
                    net, splits.x_test, splits.y_test, info, corruption, severity, seed=seed, benchmark=benchmark
                )
            accuracy, where = measured[key], "measured here"
        result["accuracy"] = accuracy
        right = int(np.sum(result["predictions"] == result["labels"]))
        star = " (an approximation of the published corruption)" if is_approximation(corruption, benchmark) else ""
        text = (
            f"{model} under {corruption}{star}, severity {severity}: accuracy {accuracy:.3f} on "
            f"{len(splits.y_test):,} test images ({where}); {right} of the {len(result['labels'])} shown are right."
        )
        fig = draw_corruption(result, info.classes, f"{model}: {corruption}, severity {severity}")
        return drawn(fig, text, result)

    return Explorer(
        "lab08-robustness", view, controls, title="Corruptions and what the model sees", note=info.describe()
    )
