"""Lab 07: transfer learning — what metrics.json holds after the quick profile.

The CIFAR part runs on CIFAR where its files are present and on the synthetic stand-ins otherwise (only its structure
is asserted, and that its provenance is stated truly); the MNIST pair (digits 0-4 -> 5-9) is real, and the lab's claim
is asserted on it: with 10 labelled images per class, a frozen backbone beats the same network trained from scratch on
the same images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from labutils import datasets, transfer

STEM = "07_transfer_learning"
CIFAR_STRATEGIES = {
    "linear_probe", "ft0", "ft1", "ft2", "full", "full_sgd", "full_bn_trainable", "full_augmented", "two_phase",
    "scratch", "svm", "knn",
}  # fmt: skip


# A full-profile run of the lab (``make labs PROFILE=full``) leaves its metrics here; its claims test skips without.
FULL_METRICS = (
    Path(os.environ.get("LABS_FULL_RUNS", Path(__file__).resolve().parents[1] / "runs")) / STEM / "metrics.json"
)


@pytest.fixture(scope="module")
def metrics(notebook_metrics):
    return notebook_metrics(STEM)


def test_the_pair_runs_on_real_mnist_with_a_trained_source(metrics):
    assert metrics["datasets"]["mnist"]["synthetic"] is False
    assert metrics["params"]["TRANSFER_PAIR"] == "mnist_0-4_to_5-9"
    # ResNet-8 on digits 0-4 after one short epoch; chance is 0.2 (measured 0.90-0.93 over seeds 0-4)
    assert metrics["metrics"]["pair_source_test_acc"] > 0.8


def test_transfer_beats_training_from_scratch_at_the_smallest_budget(metrics):
    """Measured at 10 images per class over seeds 0-4 (quick profile): linear probe - scratch = +0.085, +0.130,
    +0.083, +0.117, ...; SVM on frozen features - scratch = +0.176 to +0.237. The bounds leave about half of the
    smallest margin seen."""
    acc = metrics["metrics"]["pair_accuracy"]
    smallest = str(min(metrics["params"]["BUDGETS"]))
    assert smallest == "10"
    assert acc["linear_probe"][smallest] > acc["scratch"][smallest] + 0.04
    assert acc["svm"][smallest] > acc["scratch"][smallest] + 0.1
    for strategy in acc:  # every method learns something: chance is 0.2
        assert all(a > 0.4 for a in acc[strategy].values()), strategy


def test_pair_table_has_every_strategy_at_every_budget(metrics):
    rows = metrics["tables"]["pair_budgets"]["rows"]
    budgets, strategies = metrics["params"]["BUDGETS"], metrics["params"]["PAIR_STRATEGIES"]
    assert {(r["per_class"], r["strategy"]) for r in rows} == {
        (n, s) for n in budgets for s in [*strategies, "svm", "knn"]
    }
    assert len(rows) == len(budgets) * (len(strategies) + 2)
    for r in rows:
        assert 0.0 <= r["top1"] <= 1.0 and r["epochs"] >= 0
    by = {(r["per_class"], r["strategy"]): r for r in rows}
    # the same number of optimiser steps at every budget: fewer images, more epochs
    assert by[budgets[0], "scratch"]["epochs"] > by[budgets[-1], "scratch"]["epochs"]


def test_cifar_table_has_every_strategy_with_top1_and_top5(metrics):
    rows = {r["strategy"]: r for r in metrics["tables"]["cifar100_strategies"]["rows"]}
    assert CIFAR_STRATEGIES <= set(rows)
    for r in rows.values():
        assert 0.0 <= r["top1"] <= r["top5"] <= 1.0
    assert rows["linear_probe"]["trains"] == "head" and rows["ft0"]["trains"] == "stage3, head"
    assert rows["two_phase"]["trains"] == "stage2, stage3, head"  # phase 2
    assert rows["full_sgd"]["optimizer"] == "sgd" and rows["full"]["optimizer"] == "adam"
    (cifar,) = [d for d in metrics["datasets"].values() if d["base"] == "cifar100"]
    assert cifar["num_classes"] == 100


def test_each_dataset_is_flagged_synthetic_exactly_when_its_real_files_are_missing(metrics):
    """A stand-in is used, and flagged, only where this machine lacks the real files (also after ``make data``)."""
    for name, recorded in metrics["datasets"].items():
        here = datasets.load_raw(recorded["base"], metrics["profile"])[1]
        assert recorded["synthetic"] == here.synthetic and name == here.name, name
    assert metrics["synthetic_data"] == any(d["synthetic"] for d in metrics["datasets"].values())


def test_imagenet_backbones_ran_exactly_where_their_weights_and_real_data_are(metrics):
    """Section 2 fine-tunes torchvision's ImageNet ResNets on real CIFAR-100 and Pets only: with no weights file (the
    CI machine) it is skipped, and a stand-in is never used for it."""
    imagenet = metrics["metrics"]["imagenet"]
    archs = metrics["params"]["IMAGENET_ARCHS"]
    with_weights = [a for a in archs if transfer.imagenet_weights_file(a).is_file()]
    real_targets = []
    if with_weights:  # which targets are real matters only when a backbone could run
        real_targets = [t for t in ("cifar100", "pets") if not datasets.load_raw(t, metrics["profile"])[1].synthetic]
    ran = {(target, arch) for target, by_arch in imagenet.items() for arch in by_arch}
    assert ran == {(t, a) for t in real_targets for a in with_weights}
    for by_arch in imagenet.values():
        for by_strategy in by_arch.values():
            assert set(by_strategy) == {"linear_probe", "full"}
            assert all(0.0 <= r["top1"] <= r["top5"] <= 1.0 for r in by_strategy.values())


def test_references_sit_beside_measured_numbers_and_figures_are_saved(metrics):
    refs = {r["metric"]: r for r in metrics["references"]}
    for metric in ("linear_probe", "full", "svm", "ft0", "ft1", "ft2", "full_augmented"):
        assert f"cifar100.{metric}.top1" in refs and metric in metrics["metrics"]["cifar100"]
    files = {f["file"] for f in metrics["figures"]}
    assert {"cifar100_curves.png", "pair_accuracy_vs_budget.png"} <= files


def test_what_trains_is_stated_exactly_batch_norm_included(metrics):
    """'full' trains every weight but keeps the pretrained backbone's batch norms frozen; with freeze_bn=False and
    from scratch every batch norm trains."""
    rows = {r["strategy"]: r for r in metrics["tables"]["cifar100_strategies"]["rows"]}
    trained, total = map(int, rows["full"]["batch norm trained"].split("/"))
    assert total > 0 and trained == 0
    for strategy in ("full_bn_trainable", "scratch"):
        trained, total = map(int, rows[strategy]["batch norm trained"].split("/"))
        assert trained == total > 0, strategy
    assert rows["full"]["trains"] == rows["scratch"]["trains"] == "stem, stage1, stage2, stage3, head"


def test_the_backbone_states_its_provenance(metrics):
    backbone = metrics["metrics"]["cifar_backbone"]
    line = backbone["provenance"]
    assert "trained by lab 05" in line and ("SYNTHETIC" in line) == backbone["synthetic"]
    (cifar,) = [d for d in metrics["datasets"].values() if d["base"] == "cifar100"]
    assert not (backbone["synthetic"] and not cifar["synthetic"])  # a synthetic backbone is never used on real data


def test_takeaways_are_printed_from_this_runs_numbers(metrics):
    takeaways = metrics["metrics"]["takeaways"]
    acc = metrics["metrics"]["pair_accuracy"]
    smallest = str(min(metrics["params"]["BUDGETS"]))
    assert 3 <= len(takeaways) <= 5
    assert f"{acc['linear_probe'][smallest]:.3f} against {acc['scratch'][smallest]:.3f}" in takeaways[0]


def test_full_profile_claims():
    """Runs only where a full-profile run left its metrics.json (budgets 10, 100, 1000 per class, every strategy).
    What the lab says there: with 10 labels a frozen backbone beats training from scratch, and the gap shrinks as
    labels grow."""
    if not FULL_METRICS.is_file():
        pytest.skip(f"no full-profile run at {FULL_METRICS}")
    metrics = json.loads(FULL_METRICS.read_text())
    if metrics["profile"] != "full":
        pytest.skip(f"{FULL_METRICS} is a {metrics['profile']!r} run")
    acc = metrics["metrics"]["pair_accuracy"]
    budgets = [str(n) for n in sorted(metrics["params"]["BUDGETS"])]
    gap = [acc["linear_probe"][n] - acc["scratch"][n] for n in budgets]
    assert gap[0] > 0.04 and gap[-1] < gap[0]
