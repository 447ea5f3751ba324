"""Lab 00: the environment check and the dataset survey (quick profile; a full run's claims where one exists)."""

from __future__ import annotations

import pytest
from full_run import full_metrics

STEM = "00_setup_and_data"
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # MNIST's fixed test set


def test_setup_notebook_surveys_every_dataset(notebook_metrics):
    m = notebook_metrics(STEM)
    assert m["metrics"]["environment"]["torch"] == m["versions"]["torch"]
    assert m["metrics"]["environment"]["wandb_mode"] == "offline"
    surveyed = set(m["metrics"]["datasets_real"]) | set(m["metrics"]["datasets_synthetic"])
    assert surveyed == {"mnist", "cifar10", "cifar100", "imagenette", "pets", "digits"}
    assert "digits" in m["metrics"]["datasets_real"]  # bundled with scikit-learn: always real
    assert "mnist" in m["metrics"]["datasets_real"]  # MNIST is real whenever a package index is reachable
    rows = {r["dataset"]: r for r in m["tables"]["datasets"]["rows"]}
    assert rows["mnist"]["test"] == 10_000 and rows["mnist"]["train"] + rows["mnist"]["val"] == 60_000
    balance = [r for r in m["tables"]["class_balance"]["rows"] if r["dataset"] == "mnist" and r["split"] == "test"]
    assert balance == [
        {"dataset": "mnist", "split": "test", "min": 892, "max": 1135, "imbalance (max/min)": round(1135 / 892, 3)}
    ]
    assert {f["file"] for f in m["figures"]} >= {
        "samples_mnist.png",
        "augmentation_presets.png",
        "augmentation_digits.png",
    }


def test_augmentation_claims(notebook_metrics):
    # Take-away 4 and the section's prediction: a 4-pixel crop changes most pixel values, the digits preset fewer
    # (a black background shifted stays black), none changes nothing.
    changed = notebook_metrics(STEM)["metrics"]["augmentation_changed_pixels"]
    assert changed["none"] == 0
    assert changed["standard"] > 0.5 and changed["strong"] > 0.5
    assert 0 < changed["digits"] < changed["standard"]


def test_takeaways_are_printed_from_the_run(notebook_metrics):
    m = notebook_metrics(STEM)
    takeaways = m["metrics"]["takeaways"]
    assert 3 <= len(takeaways) <= 5
    # Question 2's model answer: always answering the most frequent digit (1) beats 11 %
    assert max(MNIST_TEST_COUNTS) / sum(MNIST_TEST_COUNTS) == pytest.approx(0.1135)
    assert any("1,135" in line and "11.3%" in line for line in takeaways)


def test_full_profile_uses_no_stand_ins():
    m = full_metrics(STEM)
    assert m["metrics"]["datasets_synthetic"] == []  # the full profile stops instead of drawing a stand-in
    assert {"mnist", "digits"} <= set(m["metrics"]["datasets_real"])
    assert set(m["metrics"]["datasets_real"]) | set(m["metrics"]["datasets_missing"]) == {
        "mnist",
        "cifar10",
        "cifar100",
        "imagenette",
        "pets",
        "digits",
    }
