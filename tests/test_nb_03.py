"""Lab 03 (NumPy CNN), executed once in the quick profile: its metrics.json holds the lab's numbers; a full run's
claims are checked where one exists."""

from __future__ import annotations

import pytest
from full_run import full_metrics

STEM = "03_numpy_cnn"


@pytest.fixture(scope="module")
def metrics(notebook_metrics):
    return notebook_metrics(STEM)


def test_run_is_recorded(metrics):
    assert metrics["notebook"] == STEM and metrics["profile"] == "quick"
    assert metrics["datasets"]["mnist"]["synthetic"] is False
    assert metrics["params"]["EPOCHS"] >= 1


def test_convolutions_match_torch(metrics):
    m = metrics["metrics"]
    assert m["conv_cases"] >= 10  # square, horizontal, vertical, stride, dilation, groups, bias, depthwise, ...
    # float64 against torch: only summation order differs
    assert m["conv_max_error_naive"] < 1e-10
    assert m["conv_max_error_vectorised"] < 1e-10
    cases = [row["case"] for row in metrics["tables"]["conv_vs_torch"]["rows"]]
    for needed in ("horizontal", "vertical", "stride", "dilation", "groups", "bias", "depthwise"):
        assert any(needed in c for c in cases), needed


def test_conv_speed_is_timed_three_ways(metrics):
    # The speed-up itself depends on the machine and its load: benchmarks/bench_scratch_conv.py measures it.
    rows = metrics["tables"]["conv_speed"]["rows"]
    assert [r["implementation"] for r in rows] == ["naive loops", "vectorised NumPy (im2col)", "torch"]
    assert all(r["ms"] > 0 for r in rows) and metrics["metrics"]["conv_speedup_vectorised_over_naive"] > 0


def test_backprop_agrees_with_finite_differences(metrics):
    assert metrics["metrics"]["gradcheck_max_rel_error"] < 1e-6
    assert len(metrics["tables"]["gradient_check"]["rows"]) == 8  # weight and bias of 4 layers


def test_receptive_field_of_the_lab_design(metrics):
    # The lab's claim: after the second pooling every unit sees a 10x10 patch, neighbours 4 pixels apart.
    m = metrics["metrics"]
    assert m["receptive_field_final"] == 10 and m["jump_final"] == 4
    rows = metrics["tables"]["receptive_field"]["rows"]
    assert rows[-1]["receptive_field"] == 10 and rows[-1]["jump"] == 4


def test_both_poolings_learn_well_above_chance(metrics):
    m = metrics["metrics"]
    # quick profile: 3,000 images, 2 epochs; chance is 10 %, a broken network stays near it
    assert m["test_accuracy_max"] > 0.7
    assert m["test_accuracy_avg"] > 0.7
    rows = {r["pooling"]: r for r in metrics["tables"]["pooling"]["rows"]}
    assert set(rows) == {"max", "avg"}
    assert rows["max"]["parameters"] == rows["avg"]["parameters"] == m["parameters"]  # equal budget
    assert rows["max"]["epochs"] == rows["avg"]["epochs"]


def test_confusion_matrix_is_consistent_with_accuracy(metrics):
    m = metrics["metrics"]
    counts = m["confusion_matrix"]
    total = sum(map(sum, counts))
    assert len(counts) == 10 and total == metrics["datasets"]["mnist"]["sizes"]["test"]
    assert sum(counts[i][i] for i in range(10)) / total == pytest.approx(m["test_accuracy_max"])
    confused = m["most_confused"]
    assert confused["true"] != confused["predicted"] and confused["count"] >= 1


def test_checkpoint_reload_gives_the_same_accuracy(metrics):
    m = metrics["metrics"]
    assert m["reload_same_predictions"] is True
    assert m["reload_test_accuracy"] == m["test_accuracy_max"]


def test_figures_are_saved(metrics):
    files = {f["file"] for f in metrics["figures"]}
    assert {
        "hand_filters.png",
        "conv_speed.png",
        "pooling_curves.png",
        "filters.png",
        "feature_maps.png",
        "confusion_matrix.png",
    } <= files


def test_pooling_printout_and_takeaways(metrics):
    m = metrics["metrics"]
    first = m["first_epoch_val_accuracy"]
    assert set(first) == {"max", "avg"} and all(0.1 < v <= 1 for v in first.values())
    assert 3 <= len(m["takeaways"]) <= 5
    sources = [r["source"] for r in metrics["references"]]
    assert sources == ["LeCun, Bottou, Bengio & Haffner 1998, Proc. IEEE 86(11), Section III-B and Fig. 9"]


def test_full_profile_reaches_about_99_percent():
    full = full_metrics(STEM)
    m = full["metrics"]
    assert full["params"]["TRAIN_SUBSET"] is None and full["params"]["EPOCHS"] >= 8
    assert m["test_accuracy_max"] >= 0.985 and m["test_accuracy_avg"] >= 0.985  # the Results section's claim
    assert m["reload_same_predictions"] is True and m["reload_test_accuracy"] == m["test_accuracy_max"]
    assert m["receptive_field_final"] == 10 and m["gradcheck_max_rel_error"] < 1e-6
