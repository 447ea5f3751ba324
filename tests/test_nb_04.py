"""Lab 04: plain vs residual MLPs on MNIST — the depth sweep recorded in metrics.json (quick profile)."""

from __future__ import annotations

import math

import pytest

STEM = "04_residual_mlp"
ROW_KEYS = {"depth", "variant", "test_acc", "grad_norm_first", "grad_norm_last"}


@pytest.fixture(scope="module")
def metrics(notebook_metrics):
    return notebook_metrics(STEM)


@pytest.fixture(scope="module")
def sweep(metrics):
    rows = metrics["metrics"]["depth_sweep"]
    return {(r["depth"], r["variant"]): r for r in rows}


def test_depth_sweep_rows_have_the_documented_schema(metrics, sweep):
    rows = metrics["metrics"]["depth_sweep"]
    depths = metrics["params"]["DEPTHS"]
    assert len(depths) >= 2 and rows == metrics["tables"]["depth_sweep"]["rows"]
    assert all(set(r) == ROW_KEYS for r in rows)
    assert set(sweep) == {(d, v) for d in depths for v in ("plain", "residual")}
    for r in rows:
        assert isinstance(r["depth"], int) and r["depth"] >= 1
        assert 0.0 <= r["test_acc"] <= 1.0
        assert math.isfinite(r["grad_norm_first"]) and r["grad_norm_first"] >= 0
        assert math.isfinite(r["grad_norm_last"]) and r["grad_norm_last"] > 0
    assert metrics["datasets"]["mnist"]["synthetic"] is False  # the lab runs on real MNIST, also in CI


def test_residual_network_learns_at_the_deepest_depth_and_plain_does_not(metrics, sweep):
    deepest = max(metrics["params"]["DEPTHS"])
    assert deepest >= 16
    # chance is 0.10; even two short epochs on a subset take the residual net far above it
    assert sweep[deepest, "residual"]["test_acc"] > 0.6
    assert sweep[deepest, "residual"]["test_acc"] > sweep[deepest, "plain"]["test_acc"] + 0.3
    shallow = min(metrics["params"]["DEPTHS"])
    assert sweep[shallow, "plain"]["test_acc"] > 0.6 and sweep[shallow, "residual"]["test_acc"] > 0.6


def test_gradient_reaches_the_first_layer_only_with_skips(metrics, sweep):
    """At initialisation (nn.Linear's init), the deep plain net's first-layer gradient is many orders of
    magnitude below its last layer's; the residual net's stays within two orders of magnitude (the input
    layer has 784x16 weights, the output layer 16x10, so their norms need not be equal)."""
    assert metrics["params"]["INIT"] == "pytorch"
    deepest = max(metrics["params"]["DEPTHS"])

    def ratio(depth, variant):
        r = sweep[depth, variant]
        return r["grad_norm_first"] / r["grad_norm_last"]

    assert ratio(deepest, "plain") < 1e-6
    assert 1e-2 < ratio(deepest, "residual") < 1e2
    shallow = min(metrics["params"]["DEPTHS"])
    assert ratio(deepest, "plain") < ratio(shallow, "plain")  # vanishing gets worse with depth


def test_lab_saves_its_figures_and_extra_tables(metrics):
    files = {f["file"] for f in metrics["figures"]}
    assert {
        "grad_profile_init.png",
        "accuracy_vs_depth.png",
        "loss_curves.png",
        "grad_profile_trained.png",
        "grad_heatmap.png",
        "grad_histograms.png",
        "dead_relu.png",
    } <= files
    ratios = metrics["tables"]["gradient_ratios"]["rows"]
    assert len(ratios) == 2 * len(metrics["params"]["DEPTHS"])
    dead = metrics["metrics"]["dead_relu_fraction_end"]
    deepest = max(metrics["params"]["DEPTHS"])
    assert 0.0 <= dead[f"residual_{deepest}"] <= dead[f"plain_{deepest}"] <= 1.0


def test_references_sit_beside_the_measured_numbers(metrics):
    refs = {r["metric"]: r for r in metrics["references"]}
    deepest = max(metrics["params"]["DEPTHS"])
    assert f"accuracy_by_depth.plain.{deepest}" in refs and f"accuracy_by_depth.residual.{deepest}" in refs
    assert all(r["source"] and r["what"] for r in refs.values())
    # the measured value a reference points at exists in this run's metrics
    assert metrics["metrics"]["accuracy_by_depth"]["residual"][str(deepest)] > 0.6
