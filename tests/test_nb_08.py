"""Lab 08: accuracy under corruption, the challenge CSV and training for robustness, on real MNIST (quick profile)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import session_root
from labutils import challenge
from labutils import corruptions as C

STEM = "08_robustness_challenge"


@pytest.fixture(scope="module")
def metrics(notebook_metrics):
    return notebook_metrics(STEM)


def test_the_lab_runs_on_real_mnist_with_mnist_c_corruptions(metrics):
    assert metrics["params"]["DATASET"] == "mnist"
    assert metrics["datasets"]["mnist"]["synthetic"] is False
    evaluation = metrics["metrics"]["evaluation"]
    assert evaluation["published"] is False  # no published MNIST-C files: generated, and the notebook says so
    assert len(evaluation["corruptions"]) >= 3 and evaluation["n"] >= 200


def test_clean_accuracy_is_above_mean_corruption_accuracy(metrics):
    m = metrics["metrics"]
    clean, corrupted = m["clean_accuracy"], m["mean_corruption_accuracy"]
    assert clean["baseline"] > 0.5  # the baseline learned digits (chance is 0.1)
    for model in ("baseline", "resnet", "residual-mlp"):
        assert clean[model] > corrupted[model], model
    assert np.mean([clean[k] - corrupted[k] for k in clean]) > 0.05


def test_severity_5_hurts_more_than_severity_1_averaged_over_corruptions(metrics):
    by_sev = metrics["metrics"]["accuracy_by_severity"]
    for model, acc in by_sev.items():
        assert acc["5"] < acc["1"], model
    assert by_sev["baseline"]["1"] - by_sev["baseline"]["5"] > 0.05


def test_mce_is_one_for_the_baseline_and_finite_for_the_others(metrics):
    mce = metrics["metrics"]["mce"]
    assert mce["baseline"] == pytest.approx(1.0, abs=1e-12)
    assert all(0.0 < v < 10.0 for v in mce.values())
    rows = metrics["metrics"]["robustness_training"]
    assert [r["augmentation"] for r in rows] == ["none", "standard", "strong", "augmix"]
    assert rows[0]["mCE"] == pytest.approx(1.0, abs=1e-12)
    for r in rows:
        assert 0.0 <= r["mean_corruption_acc"] <= 1.0 and r["clean_acc"] > 0.2
        assert (
            r["mean_corruption_acc"]
            == metrics["metrics"]["mean_corruption_accuracy"][
                "baseline" if r["augmentation"] == "none" else r["augmentation"]
            ]
        )


def test_submission_csv_exists_validates_and_scores_what_the_lab_recorded(metrics):
    path = session_root() / "runs" / STEM / "submission.csv"
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["id", "label"]
    ids = [r[0] for r in rows[1:]]
    params = metrics["params"]
    n = min(params["CHALLENGE_IMAGES"], metrics["metrics"]["evaluation"]["n"])
    assert (
        len(ids)
        == len(set(ids))
        == n * len(params["SEVERITIES"]) * len(metrics["metrics"]["evaluation"]["corruptions"])
    )
    assert len(challenge.validate_submission(path, ids, 10)) == len(ids)
    score = metrics["metrics"]["challenge"]
    assert score["n"] == len(ids) and 0.3 < score["accuracy"] <= 1.0
    assert metrics["metrics"]["challenge_accuracy"] == score["accuracy"]


def test_figures_and_the_per_corruption_table(metrics):
    files = {f["file"] for f in metrics["figures"]}
    assert {"corruption_grid.png", "heatmap_models.png", "heatmap_augmentation.png"} <= files
    table = metrics["tables"]["baseline_by_corruption"]["rows"]
    corruptions = metrics["metrics"]["evaluation"]["corruptions"]
    assert [r["corruption"].rstrip(" *") for r in table] == corruptions
    benchmark = C.benchmark_for(metrics["params"]["DATASET"])
    assert [r["corruption"].endswith(" *") for r in table] == [C.is_approximation(c, benchmark) for c in corruptions]
