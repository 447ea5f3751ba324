"""Lab 07: transfer learning — what metrics.json holds after the quick profile.

The CIFAR part runs on the synthetic stand-ins here (only its structure is asserted); the MNIST pair (digits
0-4 -> 5-9) is real, and the lab's claim is asserted on it: with 10 labelled images per class, a frozen backbone
beats the same network trained from scratch on the same images.
"""

from __future__ import annotations

import pytest

STEM = "07_transfer_learning"
CIFAR_STRATEGIES = {
    "linear_probe", "ft0", "ft1", "ft2", "full", "full_sgd", "full_bn_trainable", "full_augmented", "two_phase",
    "scratch", "svm", "knn",
}  # fmt: skip


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
    assert metrics["metrics"]["pair_probe_minus_scratch_smallest"] == pytest.approx(
        acc["linear_probe"][smallest] - acc["scratch"][smallest], abs=1e-12
    )
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
    cifar = metrics["datasets"]["cifar100-synthetic"]  # no CIFAR here: the stand-in, and it says so
    assert cifar["synthetic"] is True and cifar["num_classes"] == 100
    assert metrics["metrics"]["imagenet"] == {}  # no ImageNet weights on the CI machine: the section is skipped


def test_references_and_figures(metrics):
    refs = {r["metric"]: r for r in metrics["references"]}
    assert refs["cifar100.linear_probe.top1"]["reference"] == [0.35, 0.45]
    assert refs["cifar100.full.top1"]["reference"] == [0.45, 0.6]
    assert refs["cifar100.svm.top1"]["reference"] == pytest.approx(0.4197)
    assert [refs[f"cifar100.ft{i}.top1"]["reference"] for i in range(3)] == pytest.approx([0.418, 0.453, 0.473])
    assert refs["imagenet.cifar100.resnet18.full.top5"]["reference"] == pytest.approx(0.784)
    assert refs["imagenet.pets.resnet18.linear_probe.top1"]["reference"] == pytest.approx(0.81)
    assert all(r["what"] and r["source"] for r in refs.values())
    for metric in ("linear_probe", "full", "svm", "ft0", "ft1", "ft2", "full_augmented"):
        assert f"cifar100.{metric}.top1" in refs and metric in metrics["metrics"]["cifar100"]
    files = {f["file"] for f in metrics["figures"]}
    assert {"cifar100_curves.png", "pair_accuracy_vs_budget.png"} <= files
