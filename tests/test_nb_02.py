"""Lab 02 (backprop and optimizers): the numbers the lab is about, from its quick-profile run."""

from __future__ import annotations

import math

import pytest

STEM = "02_backprop_and_optimizers"


@pytest.fixture(scope="module")
def m(notebook_metrics):
    return notebook_metrics(STEM)


def test_hand_derived_gradients_are_right(m):
    assert m["metrics"]["autograd_max_abs_diff"] < 1e-12
    rows = m["tables"]["gradient_check"]["rows"]
    assert [r["parameter"] for r in rows] == ["W1", "b1", "W2", "b2"]
    assert [r["shape"] for r in rows] == [[10, 8], [10], [4, 10], [4]]
    assert all(r["relative error"] <= 1e-7 for r in rows)
    assert m["metrics"]["gradcheck_max_rel_error"] <= 1e-7


def test_every_optimizer_learns_and_adaptive_ones_lead(m):
    acc = m["metrics"]["optimizer_val_accuracy"]
    names = list(acc)
    assert len(names) == 4 and names[0].startswith("SGD") and names[1].startswith("momentum")
    assert all(a > 0.3 for a in acc.values())  # chance is 0.1
    sgd = acc[names[0]]
    for name in names[1:]:
        assert acc[name] > sgd, f"{name} should beat plain SGD at the same budget"
    assert all(a > 0.3 for a in m["metrics"]["optimizer_test_accuracy"].values())


def test_gradient_norms_recorded_per_layer_and_epoch(m):
    norms = m["metrics"]["grad_norms_per_epoch"]
    epochs = m["params"]["EPOCHS"]
    assert set(norms) == set(m["metrics"]["optimizer_val_accuracy"])
    for per_layer in norms.values():
        assert set(per_layer) == {"W1", "W2"}
        for values in per_layer.values():
            assert len(values) == epochs and all(math.isfinite(v) and v > 0 for v in values)


def test_schedules_compared(m):
    acc = m["metrics"]["schedule_val_accuracy"]
    assert len(acc) == 5 and {"constant", "cosine"} <= set(acc)
    assert all(a > 0.5 for a in acc.values())
    assert {f["file"] for f in m["figures"]} >= {
        "schedules.png",
        "schedules_curves.png",
        "gradient_norms.png",
        "optimizers_curves.png",
    }
