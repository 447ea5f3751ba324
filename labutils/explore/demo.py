"""Small runs for every explorer at once: what ``notebooks/explorers.ipynb`` and the browser test build on.

Each lab's explorer takes what that lab computed (its runs, its models, its data). :func:`demo_runs` makes the
same kinds of objects in seconds each, on real MNIST, through the same machinery (recipes run and cached by
:func:`labutils.experiment.run_all` under ``runs/explorers/``, the NumPy CNN trained by the lab's own trainer and
cached as ``.npz``). A second call reloads everything from the cache. The numbers are a smoke test of the
explorers, not results of any lab.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LAB = "explorers"
MNIST = dict(dataset="mnist", val_size=256, test_subset=256, seed=0)
# the NumPy CNN of lab 03's explorer
CNN_SETTINGS = dict(channels=(4, 8), hidden=32, train=2000, epochs=1, lr=5e-3, seed=0)
CORRUPTIONS = ("impulse_noise", "motion_blur", "brightness")
SEVERITIES = (1, 3, 5)


@dataclass
class Demo:
    """What each lab's explorer takes, built small: ``mnist`` (ArraySplits), ``cnn`` (a trained NumPy CNN) and its
    normalised test ``cnn_images`` / ``cnn_labels``, and per lab the runs (``lab04`` … ``lab07``) or, for lab 08,
    ``lab08 = {"models", "splits", "corruptions", "severities", "results", "benchmark"}``."""

    mnist: Any
    cnn: Any
    cnn_images: np.ndarray
    cnn_labels: np.ndarray
    lab04: dict
    lab05: dict
    lab06: dict
    lab07: dict
    lab08: dict


def residual_recipes(profile: str) -> tuple[dict, dict]:
    """Lab 04's MLPs and lab 05's CNNs, plain and residual at two depths, tiny, every step recorded."""
    from labutils.experiment import Recipe
    from labutils.models import MLP, PlainCNN, ResNet

    common = dict(**MNIST, train_subset=512, batch_size=64, optimizer="adam", lr=5e-3, epochs=2, record_every=1)
    mlp = Recipe("mlp", model=MLP, model_kwargs=dict(in_features=784, num_classes=10, width=16, depth=2), **common)
    lab04 = {
        (d, v): mlp.replace(name=f"{v}-{d}", model_kwargs={**mlp.model_kwargs, "depth": d, "residual": v == "residual"})
        for d in (2, 16)
        for v in ("plain", "residual")
    }
    lab05 = {
        (v, d): Recipe(
            f"cnn-{v}-{d}",
            model=ResNet if v == "residual" else PlainCNN,
            model_kwargs=dict(depth=d, num_classes=10, in_channels=1, width=4),
            **{**common, "train_subset": 256, "batch_size": 32},
        )
        for v in ("plain", "residual")
        for d in (8, 14)
    }
    return lab04, lab05


def ablation_runs(profile: str) -> dict:
    """Lab 06's five configurations on a tiny ConvPoolNet and 1,024 digits, two epochs each."""
    from labutils import regularization
    from labutils.experiment import Recipe, run_all
    from labutils.models import ConvPoolNet

    kwargs = dict(num_classes=10, in_channels=1, image_size=28, widths=(4, 8), fc_widths=(16,), pooled_size=4)
    base = Recipe(
        "baseline",
        model=ConvPoolNet,
        model_kwargs=kwargs,
        **MNIST,
        train_subset=1024,
        batch_size=64,
        optimizer="adam",
        lr=1e-2,
        epochs=2,
    )
    return run_all(regularization.ablation_recipes(base), lab=LAB, profile=profile, desc="lab 06", progress=False)


def transfer_runs(profile: str) -> dict:
    """Lab 07's pair (digits 0-4 → 5-9): a ResNet-8 source, then three strategies at two label budgets."""
    from labutils import transfer
    from labutils.experiment import run_all

    source, target = transfer.TRANSFER_PAIRS["mnist_0-4_to_5-9"]
    recipe = transfer.course_backbone_recipe(
        **source,
        depth=8,
        width=4,
        epochs=2,
        train_subset=2000,
        val_size=250,
        test_subset=500,
        optimizer="adam",
        lr=1e-2,
        scheduler="onecycle",
        weight_decay=0.0,
        seed=0,
        name="explorers-pair-source",
    )
    backbone, _ = transfer.source_backbone(recipe, lab=LAB, profile=profile, progress=False)
    settings = {"linear_probe": dict(lr=1e-2), "full": dict(lr=1e-3), "scratch": dict(lr=1e-3, pretrained=False)}
    recipes = {
        (n, s): transfer.transfer_recipe(
            f"pair-{s}-{n}",
            backbone,
            strategy="linear_probe" if s == "linear_probe" else "full",
            **target,
            train_per_class=n,
            val_size=250,
            test_subset=500,
            batch_size=16,
            epochs=math.ceil(20 / math.ceil(5 * n / 16)),
            optimizer="adam",
            seed=0,
            **settings[s],
        )
        for n in (5, 20)
        for s in settings
    }
    return run_all(recipes, lab=LAB, profile=profile, desc="lab 07", progress=False)


def numpy_cnn(mnist_normalised, profile: str):
    """Lab 03's NumPy CNN, small, trained one epoch on 2,000 digits (or reloaded from ``runs/explorers/``)."""
    from labutils.results import runs_dir
    from labutils.scratch.cnn import simple_cnn
    from labutils.scratch.optim import Adam
    from labutils.scratch.trainer import load_npz, save_npz, train

    s = CNN_SETTINGS
    model = simple_cnn(channels=s["channels"], hidden=s["hidden"], rng=s["seed"])
    name = "-".join(str(v).replace(" ", "") for v in s.values())
    path = Path(runs_dir()) / LAB / f"numpy-cnn-{name}-{mnist_normalised.info.name}.npz"
    if path.is_file():
        return load_npz(model, path)
    x, y = mnist_normalised.x_train[: s["train"]], mnist_normalised.y_train[: s["train"]]
    train(
        model,
        Adam(model.parameters(), lr=s["lr"]),
        x,
        y,
        mnist_normalised.x_val,
        mnist_normalised.y_val,
        epochs=s["epochs"],
        batch_size=64,
        seed=s["seed"],
        progress=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(model, path)
    return model


def demo_runs(profile: str | None = None) -> Demo:
    """Build (or reload) every explorer's small runs; see the module docstring."""
    from labutils import corruptions, data, default_profile
    from labutils.experiment import run_all

    profile = profile or default_profile()
    mnist = data.load_arrays("mnist", profile=profile, seed=0)
    small = data.load_arrays("mnist", profile=profile, **{k: MNIST[k] for k in ("val_size", "test_subset", "seed")})
    normalised = small.float32(normalize=True)
    cnn = numpy_cnn(normalised, profile)
    lab04_recipes, lab05_recipes = residual_recipes(profile)
    lab04 = run_all(lab04_recipes, lab=LAB, profile=profile, desc="lab 04", progress=False)
    lab05 = run_all(lab05_recipes, lab=LAB, profile=profile, desc="lab 05", progress=False)
    lab06 = ablation_runs(profile)
    lab07 = transfer_runs(profile)
    models = {name: lab06[name].model for name in ("baseline", "combined")}
    results = corruptions.evaluate_under_corruption(
        models,
        small.x_test,
        small.y_test,
        small.info,
        CORRUPTIONS,
        SEVERITIES,
        seed=0,
        benchmark="mnist",
        progress=False,
    )
    lab08 = dict(
        models=models, splits=small, corruptions=CORRUPTIONS, severities=SEVERITIES, results=results, benchmark="mnist"
    )
    return Demo(mnist, cnn, normalised.x_test, normalised.y_test, lab04, lab05, lab06, lab07, lab08)
