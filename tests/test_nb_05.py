"""Lab 05: plain vs residual CNNs — what metrics.json holds after the quick profile (CIFAR-10, or its synthetic
stand-in where CIFAR-10 is absent), and the full profile's claims when a full run's metrics.json exists."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import execute_notebook, session_root
from labutils.models import ResNet
from labutils.train import load_backbone

STEM = "05_residual_cnn"
CHANCE = 0.1
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def metrics(notebook_metrics):
    return notebook_metrics(STEM)


def test_cifar_provenance_is_recorded_and_synthetic_is_flagged(metrics):
    (ds,) = metrics["datasets"].values()
    assert ds["base"] == "cifar10" and ds["num_classes"] == 10 and ds["image_shape"] == [3, 32, 32]
    # CIFAR-10 is not on the CI machine: the quick profile must say it ran on the stand-in
    assert metrics["synthetic_data"] == ds["synthetic"] == ds["name"].endswith("-synthetic")
    assert metrics["metrics"]["backbone"]["synthetic"] == ds["synthetic"]


def test_depth_comparison_has_plain_and_residual_at_every_depth(metrics):
    depths = metrics["params"]["DEPTHS"]
    rows = metrics["tables"]["depth_comparison"]["rows"]
    assert len(depths) >= 2 and all((d - 2) % 6 == 0 for d in depths)
    assert {(r["variant"], r["depth"]) for r in rows} == {(v, d) for v in ("plain", "residual") for d in depths}
    for r in rows:
        assert 0.0 <= r["train_error"] <= 1.0 and 0.0 <= r["test_acc"] <= r["test_top5"] <= 1.0
        assert r["epochs"] == metrics["params"]["EPOCHS"]
    by = {(r["variant"], r["depth"]): r for r in rows}
    for d in depths:  # the residual net is the plain one plus projection shortcuts: a few parameters more
        extra = by["residual", d]["params"] - by["plain", d]["params"]
        assert 0 < extra < 0.05 * by["plain", d]["params"]
    assert set(metrics["metrics"]["degradation"]) == {
        "plain_deeper_has_higher_train_error",
        "residual_deeper_has_lower_train_error",
        "residual_beats_plain_at_deepest",
    }
    # one epoch on a small subset: well above chance on average, even if not for every network
    mean_acc = sum(r["test_acc"] for r in rows) / len(rows)
    assert mean_acc > CHANCE + 0.03


def test_gradient_flow_numbers(metrics):
    rows = metrics["tables"]["grad_flow_init"]["rows"]
    assert len(rows) == 2 * len(metrics["params"]["DEPTHS"])
    for r in rows:
        assert r["grad_norm_first"] > 0 and r["grad_norm_last"] > 0
        # the lab's claim: with batch norm after every convolution the plain network's gradient does not vanish
        # on its way to the stem the way the plain MLP's did in lab 04 (there: below 1e-6 at depth 32)
        assert 1e-2 < r["first_over_last"] < 1e2
    trained = metrics["metrics"]["grad_first_over_last_trained"]
    assert set(trained) == {"plain", "residual"} and all(math.isfinite(v) and v > 0 for v in trained.values())
    assert {"grad_norms_init.png", "grad_heatmaps.png", "degradation.png"} <= {f["file"] for f in metrics["figures"]}


def test_vgg_schedules_and_dropout_studies(metrics):
    (vgg,) = [r for r in metrics["tables"]["vgg_baseline"]["rows"] if r["network"] == "vgg11"]
    assert vgg["params"] > 0 and 0.0 <= vgg["test_acc"] <= 1.0
    schedules = metrics["tables"]["schedules"]["rows"]
    assert [r["scheduler"] for r in schedules] == ["plateau", "cosine", "onecycle"]
    assert all(0.0 <= r["final_val_acc"] <= r["best_val_acc"] <= 1.0 for r in schedules)
    dropout = metrics["tables"]["dropout"]["rows"]
    assert [r["dropout"] for r in dropout] == [0.0, *metrics["params"]["DROPOUTS"]]
    # "the row with dropout 0 is the cosine run of section 7"
    cosine = next(r for r in schedules if r["scheduler"] == "cosine")
    assert dropout[0]["test_acc"] == cosine["test_acc"] and dropout[0]["val_acc"] == cosine["final_val_acc"]
    assert all(-1.0 <= r["gap"] <= 1.0 for r in dropout)


def test_backbone_checkpoint_exists_reloads_and_beats_chance(metrics):
    backbone = metrics["metrics"]["backbone"]
    path = session_root() / "runs" / STEM / backbone["file"]  # where the papermill run wrote it
    assert path.name == "backbone_resnet.pt" and path.exists()
    meta_file = json.loads(path.with_suffix(".json").read_text())
    assert meta_file["synthetic"] == backbone["synthetic"] and meta_file["dataset"]["base"] == "cifar10"
    assert meta_file["model_kwargs"]["depth"] == backbone["depth"] and meta_file["num_classes"] == 10

    model, meta = load_backbone(path, ResNet)
    assert isinstance(model, ResNet) and model.depth == backbone["depth"]
    assert meta["architecture"] == f"ResNet-{model.depth}"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    # reloading gives the same network: the notebook tested it again after load_backbone
    assert backbone["reload_test_acc"] == pytest.approx(backbone["test_acc"], abs=1e-12)
    assert backbone["test_acc"] > CHANCE + 0.05
    # it is the residual network with the best final validation accuracy among all residual runs
    t = metrics["tables"]
    candidates = (
        [r["val_acc"] for r in t["depth_comparison"]["rows"] if r["variant"] == "residual"]
        + [r["final_val_acc"] for r in t["schedules"]["rows"]]
        + [r["val_acc"] for r in t["dropout"]["rows"] if r["dropout"] > 0]
    )
    assert backbone["val_acc"] == max(candidates)


def test_a_rerun_reloads_every_run_and_a_changed_learning_rate_trains_anew(metrics, tmp_path):
    """The harness's cache as a student meets it: the same notebook again reloads (no run is trained), and
    ``-p LR ...`` trains every run again instead of showing the old runs under the new parameters."""
    assert metrics["metrics"]["cache"]["loaded"] == []  # the first execution trained everything
    trained = metrics["metrics"]["cache"]["trained"]
    runs = tmp_path / "runs"
    shutil.copytree(session_root() / "runs" / STEM / "checkpoints", runs / STEM / "checkpoints")

    execute_notebook(STEM, runs=runs)
    again = json.loads((runs / STEM / "metrics.json").read_text())
    assert again["metrics"]["cache"] == {"trained": [], "loaded": trained}
    assert again["tables"]["depth_comparison"] == metrics["tables"]["depth_comparison"]

    execute_notebook(STEM, parameters={"LR": metrics["params"]["LR"] / 2}, runs=runs)
    changed = json.loads((runs / STEM / "metrics.json").read_text())
    assert changed["params"]["LR"] == metrics["params"]["LR"] / 2
    assert changed["metrics"]["cache"] == {"trained": trained, "loaded": []}


def test_take_aways_are_three_to_five_and_name_their_data(metrics):
    takeaways = metrics["metrics"]["takeaways"]
    assert 3 <= len(takeaways) <= 5
    rows = {(r["variant"], r["depth"]): r for r in metrics["tables"]["depth_comparison"]["rows"]}
    deepest = max(metrics["params"]["DEPTHS"])
    # printed from the numbers: the training errors it compares, and the words chosen by them
    assert f"{rows['plain', deepest]['train_error']:.3f}" in takeaways[0]
    higher = metrics["metrics"]["degradation"]["plain_deeper_has_higher_train_error"]
    assert ("(higher)" in takeaways[0]) is higher and ("(not higher)" in takeaways[0]) is not higher
    # what the paper reports is said to be the paper's
    assert "He et al. report" in takeaways[0]


def test_schedule_and_vgg_numbers_behind_the_printed_lines(metrics):
    losses = metrics["metrics"]["schedule_final_train_loss"]
    assert set(losses) == {"plateau", "cosine", "onecycle"} and all(math.isfinite(v) for v in losses.values())
    vgg = {r["network"]: r for r in metrics["tables"]["vgg_baseline"]["rows"]}
    deepest = max(metrics["params"]["DEPTHS"])
    # VGG-11 has more parameters than the deepest residual network at the widths of both profiles
    assert vgg["vgg11"]["params"] > vgg[f"residual-{deepest}"]["params"]


# -- full profile: checked when a full run's metrics.json exists (CIFAR-10 must be on the machine) -------------------
@pytest.fixture(scope="module")
def full():
    path = Path(os.environ.get("LABS_FULL_RUNS", REPO / "runs")) / STEM / "metrics.json"
    if not path.exists():
        pytest.skip(f"no full-profile run of {STEM} at {path}")
    m = json.loads(path.read_text())
    if m["profile"] != "full":
        pytest.skip(f"{path} is a {m['profile']!r} run, not a full one")
    return m


def test_full_profile_runs_the_papers_networks_on_real_cifar10(full):
    (ds,) = full["datasets"].values()
    assert ds["synthetic"] is False and ds["base"] == "cifar10"  # the full profile never runs on the stand-in
    assert full["params"]["DEPTHS"] == [20, 56] and full["params"]["WIDTH"] == 16
    rows = {(r["variant"], r["depth"]): r for r in full["tables"]["depth_comparison"]["rows"]}
    # 100 epochs of the paper's recipe: the residual networks far above chance, within reach of the paper's errors
    assert rows["residual", 20]["test_acc"] > 0.88 and rows["residual", 56]["test_acc"] > 0.88
    assert 3 <= len(full["metrics"]["takeaways"]) <= 5
    assert full["metrics"]["backbone"]["synthetic"] is False
