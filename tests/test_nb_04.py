"""Lab 04: plain vs residual MLPs on MNIST — the claims the lab prints, checked on its metrics.json.

The quick-profile claims run on the notebook executed in this test session. The full-profile claims run on a full
run's ``runs/04_residual_mlp/metrics.json`` (``LABS_FULL_RUNS`` names another runs folder) and skip without one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

STEM = "04_residual_mlp"
REPO = Path(__file__).resolve().parents[1]
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
    magnitude below its last layer's; the residual net's stays within two orders of magnitude (the input layer
    sees the 784-pixel image and the output layer the softmax error itself, so their norms need not be equal)."""
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
        "seed_spread.png",
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


def test_the_output_layer_gradient_is_larger_because_of_where_it_comes_from_not_its_size(metrics):
    """Section 2: fc (160 weights) has a larger weight gradient than a hidden layer (256) at initialisation; the
    gradient arriving at fc's output is the softmax error (norm near sqrt(0.9) while p is near uniform), many times
    what arrives at the last hidden layer, while the two layers' inputs are of the same order; the stem's input
    (the image) is far larger than a hidden layer's."""
    f = metrics["metrics"]["grad_factors_init"]
    rows = {(r["variant"], r["layer"]): r for r in metrics["tables"]["grad_factors_init"]["rows"]}
    assert rows["residual", "fc"]["weights"] == 160 < 256
    assert f["fc_over_last_hidden_grad"] > 3
    assert f["fc_output_grad"] == pytest.approx(math.sqrt(0.9), abs=0.05)
    assert f["fc_output_grad"] > 5 * f["last_hidden_output_grad"]
    assert 0.2 < f["fc_input"] / f["last_hidden_input"] < 5
    assert f["stem_input"] > 5 * f["last_hidden_input"]
    # the plain network's fc too receives the softmax error directly
    assert rows["plain", "fc"]["mean_output_grad_norm"] == pytest.approx(math.sqrt(0.9), abs=0.05)


def test_plain_profile_shrinks_by_a_steady_factor_and_the_residual_one_is_flat(metrics):
    """Section 2's printed reading: each plain hidden layer multiplies the gradient by about 1/sqrt(6) (nn.Linear's
    init, 16x16 layers, ReLU); the residual hidden layers lie within a small factor of each other."""
    profile = metrics["metrics"]["init_profile"]
    assert 0.3 < profile["plain_factor_per_layer"] < 0.6
    assert profile["residual_hidden_max_over_min"] < 5


def test_every_seed_is_shown_and_the_deep_gap_is_outside_the_seed_spread(metrics, sweep):
    """Section 6: N_SEEDS >= 3 runs per configuration at SEED_DEPTHS (the deepest among them), the first being the
    depth sweep's own run; at the deepest depth the residual lead is far outside the seed-to-seed spread."""
    params = metrics["params"]
    deepest = max(params["DEPTHS"])
    assert params["N_SEEDS"] >= 3 and deepest in params["SEED_DEPTHS"]
    seeds = [params["SEED"] + k for k in range(params["N_SEEDS"])]
    spread = {row["config"]: row for row in metrics["metrics"]["seed_spread"]}
    assert set(spread) == {f"{v}-{d}" for d in params["SEED_DEPTHS"] for v in ("plain", "residual")}
    for d in params["SEED_DEPTHS"]:
        for v in ("plain", "residual"):
            row = spread[f"{v}-{d}"]
            assert row["seeds"] == seeds and len(row["values"]) == len(seeds)
            assert row["values"][0] == sweep[d, v]["test_acc"]  # the first point is the depth sweep's run
    gap = metrics["metrics"]["seed_gaps"][str(deepest)]
    assert gap["within_spread"] is False and gap["residual_minus_plain"] > 0.3
    assert min(spread[f"residual-{deepest}"]["values"]) > max(spread[f"plain-{deepest}"]["values"]) + 0.3
    assert "seed_spread.png" in {f["file"] for f in metrics["figures"]}


def test_the_deep_plain_network_ends_at_a_constant_answer(metrics, sweep):
    """Sections 7 and 11: the deep plain network's test accuracy is one class's share of MNIST's test set (8.9 % to
    11.4 %), the accuracy of a constant answer."""
    deepest = max(metrics["params"]["DEPTHS"])
    assert 0.089 <= sweep[deepest, "plain"]["test_acc"] <= 0.1135


def test_take_aways_are_three_to_five_and_printed_from_the_numbers(metrics, sweep):
    takeaways = metrics["metrics"]["takeaways"]
    assert 3 <= len(takeaways) <= 5
    deepest = max(metrics["params"]["DEPTHS"])
    assert f"{sweep[deepest, 'plain']['test_acc']:.1%}" in takeaways[0]
    assert "trains at every depth" in takeaways[2]


# -- full profile: the lab's headline on real MNIST, checked when a full run's metrics.json exists ------------------
@pytest.fixture(scope="module")
def full():
    path = Path(os.environ.get("LABS_FULL_RUNS", REPO / "runs")) / STEM / "metrics.json"
    if not path.exists():
        pytest.skip(f"no full-profile run of {STEM} at {path}")
    m = json.loads(path.read_text())
    if m["profile"] != "full":
        pytest.skip(f"{path} is a {m['profile']!r} run, not a full one")
    return m


def test_full_profile_depth_sweep_on_all_of_mnist(full):
    """The headline: all 50,000 training digits, 12 epochs, depths 2 ... 64; the residual MLP trains at every depth,
    the plain one is at a constant answer from depth 32 on, and the numbers are the course report's (within 0.01)."""
    assert full["datasets"]["mnist"]["synthetic"] is False
    assert full["params"]["DEPTHS"] == [2, 8, 16, 32, 64] and full["params"]["EPOCHS"] == 12
    acc = full["metrics"]["accuracy_by_depth"]
    assert all(acc["residual"][str(d)] > 0.95 for d in full["params"]["DEPTHS"])
    assert acc["plain"]["32"] < 0.12 and acc["plain"]["64"] < 0.12
    for ref in full["references"]:
        variant, depth = ref["metric"].split(".")[1:]
        assert acc[variant][depth] == pytest.approx(ref["reference"], abs=0.01), ref["what"]


def test_full_profile_seed_spread(full):
    params = full["params"]
    assert params["N_SEEDS"] >= 5 and 64 in params["SEED_DEPTHS"]
    spread = {row["config"]: row for row in full["metrics"]["seed_spread"]}
    assert all(len(row["values"]) == params["N_SEEDS"] for row in spread.values())
    assert full["metrics"]["seed_gaps"]["64"]["within_spread"] is False
    assert 3 <= len(full["metrics"]["takeaways"]) <= 5
