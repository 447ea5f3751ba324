"""Lab 06: the regularisation ablation and the CIFAR-100 baselines, as recorded in metrics.json.

On a synthetic stand-in (the quick profile) only what holds there is asserted: the runs share one budget and data,
each configuration has its layers and optimizer settings, the tables, dead-unit fractions, references and saved
baselines are complete. On real data (``DATASET="mnist"``) the lab's claims about each technique are asserted too.
"""

from __future__ import annotations

import math

import pytest

from conftest import session_root
from labutils import regularization

STEM = "06_regularization"
ROW_KEYS = {
    "configuration",
    "test_acc",
    "train_acc",
    "best_val_acc",
    "best_epoch",
    "epochs_run",
    "seconds",
    "parameters",
    "train_val_gap",
}


@pytest.fixture(scope="module")
def metrics(notebook_metrics):
    return notebook_metrics(STEM)


@pytest.fixture(scope="module")
def ablation(metrics):
    return metrics["metrics"]["ablation"]


def test_the_five_configurations_are_in_the_table(metrics, ablation):
    assert list(ablation) == list(regularization.CONFIGURATIONS)
    rows = metrics["tables"]["ablation"]["rows"]
    assert [r["configuration"] for r in rows] == list(regularization.CONFIGURATIONS)
    for row in rows:
        assert set(row) == ROW_KEYS
        assert 0.0 <= row["test_acc"] <= 1.0 and 0.0 <= row["best_val_acc"] <= 1.0
        assert 1 <= row["best_epoch"] <= row["epochs_run"] <= metrics["params"]["EPOCHS"]
        assert row["seconds"] >= 0 and row["parameters"] > 0
        assert row["train_val_gap"] == pytest.approx(row["train_acc"] - row["best_val_acc"], abs=1e-12)


def test_the_runs_share_one_budget_and_differ_only_in_the_intended_fields(metrics):
    recipes = metrics["metrics"]["recipes"]
    base = recipes["baseline"]
    regularisers = {"batch_norm", "conv_dropout", "fc_dropout"}
    for name, recipe in recipes.items():
        changes = regularization.configuration_changes(name, base["dataset"])
        expected = {**base, **{k: v for k, v in changes.items() if k != "model_kwargs"}, "name": name}
        expected["model_kwargs"] = {**base["model_kwargs"], **changes["model_kwargs"]}
        assert recipe == expected, name
        assert set(recipe["model_kwargs"]) - set(base["model_kwargs"]) <= regularisers
    assert base["epochs"] == metrics["params"]["EPOCHS"] and base["patience"] == metrics["params"]["PATIENCE"]
    assert base["optimizer"] == "adam" and base["weight_decay"] == 0.0 and base["augment"] == "none"


def test_only_batch_norm_adds_parameters(ablation):
    p = {name: row["parameters"] for name, row in ablation.items()}
    assert p["dropout_wd"] == p["augmentation"] == p["baseline"]
    # BN adds a scale and shift per channel/unit; the convs before it lose their biases (one per channel)
    assert p["batch_norm"] == p["combined"] > p["baseline"]


def test_dead_unit_fractions_and_their_remedies_are_measured(metrics):
    dead = metrics["metrics"]["dead_fraction"]
    assert set(dead) == set(regularization.CONFIGURATIONS)
    for d in dead.values():
        assert len(d["by_layer"]) == 4  # three conv ReLUs and FC1's
        assert all(0.0 <= v <= 1.0 for v in d["by_layer"].values())
        assert d["mean"] == pytest.approx(sum(d["by_layer"].values()) / 4)
    remedies = metrics["metrics"]["dead_unit_remedies"]
    assert set(remedies) == {"baseline", "leaky_relu", "he_init"}
    assert remedies["baseline"]["dead_mean"] == pytest.approx(dead["baseline"]["mean"])
    for row in remedies.values():
        assert 0.0 <= row["dead_mean"] <= 1.0 and 0.0 <= row["test_acc"] <= 1.0
    assert {"curves.png", "confusion.png", "grad_histograms.png", "grad_heatmaps.png", "dead_relu.png"} <= {
        f["file"] for f in metrics["figures"]
    }


def test_references_sit_beside_the_measured_numbers(metrics, ablation):
    refs = {r["metric"]: r["reference"] for r in metrics["references"]}
    expected = dict(zip(regularization.CONFIGURATIONS, (0.620, 0.663, 0.635, 0.650, 0.698)))
    for name, value in expected.items():
        assert refs[f"ablation.{name}.test_acc"] == value
        assert ablation[name]["test_acc"] is not None
    assert refs["cifar100_baselines.deep.top1"] == 0.65 and refs["cifar100_baselines.deep.top5"] == 0.784


def test_baselines_are_saved_with_their_provenance(metrics):
    import json

    baselines = metrics["metrics"]["cifar100_baselines"]
    assert set(baselines) == {"simple", "deep"}
    dataset = metrics["params"]["BASELINE_DATASET"]
    for name, b in baselines.items():
        assert 0.0 <= b["top1"] <= b["top5"] <= 1.0
        assert b["dataset"].startswith(dataset) and b["parameters"] == b["reloaded_parameters"]
        meta = json.loads((session_root() / "runs" / STEM / f"baseline_{name}.json").read_text())
        assert meta["test_acc"] == b["top1"] and meta["test_top5"] == b["top5"]
        assert meta["synthetic"] == b["synthetic"] == meta["dataset"]["synthetic"]
        assert meta["model_kwargs"]["num_classes"] == meta["dataset"]["num_classes"]
    assert baselines["simple"]["augment"] == ("digits" if dataset == "mnist" else "strong")


def test_on_synthetic_data_the_run_says_so(metrics):
    synthetic = metrics["synthetic_data"]
    assert synthetic == any(d["synthetic"] for d in metrics["datasets"].values())
    if metrics["params"]["DATASET"] != "mnist":
        assert synthetic  # CI has no CIFAR or Imagenette: the stand-in must be flagged


def test_on_real_digits_each_technique_does_what_the_lab_says(metrics, ablation):
    """The lab's claims on real MNIST (a few thousand training digits); skipped on a stand-in."""
    if metrics["synthetic_data"] or metrics["params"]["DATASET"] != "mnist":
        pytest.skip("the claims about each technique are made on real data only")
    acc = {name: row["test_acc"] for name, row in ablation.items()}
    gap = {name: row["train_val_gap"] for name, row in ablation.items()}
    assert all(a > 0.9 for a in acc.values())
    # dropout + weight decay and augmentation each narrow the train-validation gap of the baseline
    assert gap["dropout_wd"] < gap["baseline"] and gap["augmentation"] < gap["baseline"]
    # batch norm trains fastest: at the same budget it is clearly ahead of the baseline
    assert acc["batch_norm"] > acc["baseline"] + 0.01
    # the combination generalises at least as well as the baseline (within 0.5 points)
    assert acc["combined"] >= acc["baseline"] - 0.005
    assert not any(math.isnan(v) for v in acc.values())
