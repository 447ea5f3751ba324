"""Lab 09: distillation and class activation maps, as recorded in metrics.json (quick profile, real MNIST).

The lab's claims, on real MNIST: the distilled student makes fewer test errors than the student alone (mean over
the seeds, at the best temperature and at T = 4), and Grad-CAM's ROAD score beats the library's random map.
Measured in the quick profile (seeds 0 and 1, 500 training digits): alone 1312 / 1367 errors, distilled at T = 4
1227 / 1291; ROAD combined Grad-CAM +1.56, random +1.15.
"""

from __future__ import annotations

import math

import pytest

STEM = "09_distillation_and_cam"


@pytest.fixture(scope="module")
def metrics(notebook_metrics):
    return notebook_metrics(STEM)


def test_it_runs_on_real_mnist_with_every_temperature_and_seed(metrics):
    m, params = metrics["metrics"], metrics["params"]
    assert metrics["datasets"]["mnist"]["synthetic"] is False
    assert len(params["SEEDS"]) >= 2 and set(params["TEMPERATURES"]) >= {1, 2, 4, 8}
    seeds = {str(s) for s in params["SEEDS"]}
    assert m["test_images"] == 10000  # errors are counted out of Hinton's 10,000 test digits
    assert set(m["alone_errors"]) == seeds
    assert set(m["distilled_errors"]) == {f"T{t:g}" for t in params["TEMPERATURES"]}
    for per_seed in [m["alone_errors"], *m["distilled_errors"].values()]:
        assert set(per_seed) == seeds and all(0 <= v <= 10000 for v in per_seed.values())
    rows = metrics["tables"]["distillation"]["rows"]
    assert [r["student"] for r in rows] == ["alone"] + [f"T={t:g}" for t in params["TEMPERATURES"]]


def test_the_distilled_student_beats_the_student_alone_on_real_mnist(metrics):
    m = metrics["metrics"]
    alone = m["alone_mean_errors"]
    assert alone == pytest.approx(sum(m["alone_errors"].values()) / len(m["alone_errors"]))
    best = min(m["distilled_mean_errors"].values())
    assert best < alone - 20  # measured: 1259 against 1340
    assert m["distilled_mean_errors"]["T4"] < alone
    assert m["distilled_mean_errors"][f"T{m['best_temperature']:g}"] == best
    # the teacher is the better network, and the student learns something at all (chance: 9,000 errors)
    assert m["teacher_errors"] < best < 3000


def test_cam_equals_grad_cam_and_grad_cam_beats_the_random_map_under_road(metrics):
    m = metrics["metrics"]
    assert m["cam_vs_gradcam_max_difference"] < 1e-4
    road = m["road"]
    assert set(road) == {"CAM", "Grad-CAM", "Grad-CAM++", "random"}
    for method, parts in road.items():
        assert set(parts) == {"morf", "lerf", "combined"}
        assert all(math.isfinite(p["mean"]) and p["sem"] >= 0 for p in parts.values()), method
        combined = (parts["lerf"]["mean"] - parts["morf"]["mean"]) / 2
        assert parts["combined"]["mean"] == pytest.approx(combined, rel=1e-6, abs=1e-9)
    assert road["Grad-CAM"]["combined"]["mean"] > road["random"]["combined"]["mean"]
    assert m["cam_figure"]["right"] >= 1 and m["cam_figure"]["wrong"] >= 1


def test_figures_sizes_and_references(metrics):
    assert {"temperature_sweep.png", "cam_grid.png", "road.png"} <= {f["file"] for f in metrics["figures"]}
    size = metrics["metrics"]["size"]
    assert size["student"]["multiply_adds"] < size["teacher"]["multiply_adds"] / 5  # a cheap student
    refs = {r["metric"]: r for r in metrics["references"]}
    assert refs["alone_mean_errors"]["reference"] == 146 and refs["teacher_errors"]["reference"] == 67
    assert refs["cifar100_top1.resnet20_alone"]["reference"] == 0.6906
    assert refs["cifar100_top1.resnet20_distilled_T4"]["reference"] == 0.7066
    assert "cifar100_top1" not in metrics["metrics"]  # the quick profile skips the CIFAR pair
