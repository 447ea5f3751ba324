"""Lab 00: the environment check and the dataset survey."""

from __future__ import annotations


def test_setup_notebook_surveys_every_dataset(notebook_metrics):
    m = notebook_metrics("00_setup_and_data")
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
    changed = m["metrics"]["augmentation_changed_pixels"]
    assert changed["none"] == 0 and changed["standard"] > 0.2 and changed["strong"] > 0.2
    assert {f["file"] for f in m["figures"]} >= {"samples_mnist.png", "augmentation_presets.png"}
