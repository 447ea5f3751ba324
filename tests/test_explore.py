"""labutils.explore: the numbers behind every lab's explorer, against independent computations, and the panel itself.

References: convolution output sizes and receptive fields against ``torch.nn.functional.conv2d`` and autograd;
optimizer paths against ``torch.optim`` on the same surface; gradient-flow profiles against the recorded history
(and the recorder of a real run); accuracies and confusion matrices against the runs they come from; corrupted
predictions against ``corrupt_arrays`` + ``predict_uint8``. Every explorer is then driven as a user would: each
control moved once, the view must change and show no error.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from labutils import explore
from labutils.data import ArraySplits
from labutils.datasets import DatasetInfo
from labutils.experiment import SavedGradients
from labutils.explore import (
    boundary,
    convolution,
    core,
    digits,
    gradient_flow,
    optimizers,
    regularization,
    robustness,
    transfer,
)
from labutils.train import Evaluation, History

torch.set_num_threads(1)
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explorers.ipynb"
INFO = DatasetInfo("toy", "toy", "Toy digits", "drawn in the test", False, 10, tuple("0123456789"), (1, 28, 28),
                   (0.13,), (0.31,))  # fmt: skip


@pytest.fixture(scope="module")
def splits() -> ArraySplits:
    """40 train, 20 val and 30 test 'digits' of 10 classes: noise with a class-dependent bright square."""
    rng = np.random.default_rng(0)

    def make(n):
        y = np.arange(n) % 10
        x = rng.integers(0, 60, size=(n, 1, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 0, 2 * c : 2 * c + 6, 4:10] = 250
        return x, y.astype(np.int64)

    (xt, yt), (xv, yv), (xs, ys) = make(40), make(20), make(30)
    return ArraySplits(xt, yt, xv, yv, xs, ys, INFO)


def move_every_control(explorer) -> list[str]:
    """Move each control once; the shown view must change and be no error. Returns the texts shown."""
    texts = [explorer.last.text]
    for name, control in explorer.controls.items():
        before = explorer.output.outputs
        control.value = core.another_value(control)
        assert explorer.last.error is None, f"{name}: {explorer.last.error[-1]}"
        assert explorer.output.outputs != before, f"moving {name} left the view unchanged"
        texts.append(explorer.last.text or explorer.last.message)
    return texts


# -- the panel ---------------------------------------------------------------------------------------------------------
def test_a_bad_setting_is_one_sentence_and_a_bug_is_a_traceback():
    def view(x):
        if x == 0:
            raise ValueError("x=0 is not possible: use a positive number.")
        if x == 1:
            return View(text="one")
        return {}["missing"]

    View = core.View
    assert core.run_view(view, {"x": 0}).outputs() == (
        {"output_type": "stream", "name": "stdout", "text": "x=0 is not possible: use a positive number.\n"},
    )
    error = core.run_view(view, {"x": 2}).outputs()[0]
    assert error["output_type"] == "error" and error["ename"] == "KeyError"
    assert any("Traceback" in line for line in error["traceback"])


def test_explorer_redraws_on_change_and_offers_a_png_to_static_front_ends():
    import ipywidgets as widgets

    def view(k):
        fig = core.figure(2, 2)
        fig.subplots().plot([0, k])
        return core.drawn(fig, f"k = {k}")

    explorer = core.Explorer("toy", view, {"k": widgets.IntSlider(value=1, min=0, max=3)}, title="toy")
    assert explorer.output.outputs[0]["text"] == "k = 1\n"
    first_png = explorer.output.outputs[1]["data"]["image/png"]
    explorer.controls["k"].value = 3
    assert explorer.output.outputs[0]["text"] == "k = 3\n"
    assert explorer.output.outputs[1]["data"]["image/png"] != first_png
    bundle = explorer._repr_mimebundle_()
    assert set(bundle) == {"application/vnd.jupyter.widget-view+json", "image/png", "text/plain"}
    assert bundle["image/png"] == explorer.output.outputs[1]["data"]["image/png"]
    assert "labs-explorer-toy" in explorer.widget._dom_classes


# -- lab 00 ------------------------------------------------------------------------------------------------------------
def test_digit_view_finds_the_indexed_member_of_a_class(splits):
    shown = digits.digit_view(splits, "test", label=3, index=2)
    assert shown["position"] == np.flatnonzero(splits.y_test == 3)[2] == 23
    assert np.array_equal(shown["image"], splits.x_test[23])
    counts, _ = np.histogram(splits.x_test[23], bins=digits.BINS)
    np.testing.assert_allclose(shown["histogram"], counts / 784, atol=1e-15)
    np.testing.assert_allclose(shown["class_mean"], splits.x_test[splits.y_test == 3].mean(axis=0), atol=1e-12)
    assert shown["ink"] == pytest.approx(36 / 784)  # the 6x6 square at 250, the noise below 60
    with pytest.raises(ValueError, match="index=3 is past the 3 images of class '3' in the test split"):
        digits.digit_view(splits, "test", label=3, index=3)


def test_lab00_explorer_moves_and_states_provenance(splits):
    explorer = explore.lab00_data(splits)
    assert explorer.note == INFO.describe()
    texts = move_every_control(explorer)
    assert "toy val[" in texts[1] and "class 1" in texts[2] and "image 2 of" in texts[3]


# -- lab 01 ------------------------------------------------------------------------------------------------------------
def test_two_spirals_are_balanced_and_seeded():
    x, y = boundary.two_spirals(200, seed=3)
    assert x.shape == (200, 2) and x.dtype == np.float32 and np.bincount(y).tolist() == [100, 100]
    assert np.array_equal(x, boundary.two_spirals(200, seed=3)[0])


def test_a_hidden_layer_is_what_solves_xor():
    one = boundary.train_boundary("xor", hidden=1, activation="tanh")
    eight = boundary.train_boundary("xor", hidden=8, activation="tanh")
    # one tanh unit draws a single straight boundary: at most 3 of XOR's 4 quadrants right
    assert one["accuracy"] < 0.85
    assert eight["accuracy"] > 0.97
    assert eight["losses"][-1] < 0.2 * eight["losses"][0] and len(eight["losses"]) == boundary.STEPS + 1


# -- lab 02 ------------------------------------------------------------------------------------------------------------
def torch_loss(surface: str, p: torch.Tensor) -> torch.Tensor:
    if surface == "quadratic":
        return 0.5 * (p[0] ** 2 + optimizers.QUADRATIC_CURVATURE * p[1] ** 2)
    return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


def torch_path(surface, optimizer, lr, momentum, beta2, steps):
    p = torch.tensor(optimizers.SURFACES[surface].start, dtype=torch.float64, requires_grad=True)
    opt = {
        "sgd": lambda: torch.optim.SGD([p], lr=lr),
        "momentum": lambda: torch.optim.SGD([p], lr=lr, momentum=momentum),
        "nesterov": lambda: torch.optim.SGD([p], lr=lr, momentum=momentum, nesterov=True),
        "rmsprop": lambda: torch.optim.RMSprop([p], lr=lr, alpha=beta2),
        "adam": lambda: torch.optim.Adam([p], lr=lr, betas=(momentum, beta2)),
    }[optimizer]()
    path = [p.detach().clone().numpy()]
    for _ in range(steps):
        opt.zero_grad()
        torch_loss(surface, p).backward()
        opt.step()
        path.append(p.detach().clone().numpy())
    return np.asarray(path)


@pytest.mark.parametrize("surface", list(optimizers.SURFACES))
@pytest.mark.parametrize("optimizer", optimizers.OPTIMIZERS)
def test_optimizer_paths_match_torch_optim(surface, optimizer):
    lr = {"quadratic": 0.03, "rosenbrock": 1e-3}[surface] * (10 if optimizer in ("rmsprop", "adam") else 1)
    ours = optimizers.optimizer_paths(surface, optimizer, lr, momentum=0.8, beta2=0.99, steps=60)
    assert ours["diverged_at"] is None
    np.testing.assert_allclose(ours["path"], torch_path(surface, optimizer, lr, 0.8, 0.99, 60), rtol=1e-10, atol=1e-12)
    losses = [torch_loss(surface, torch.tensor(p)).item() for p in ours["path"]]
    np.testing.assert_allclose(ours["losses"], losses, rtol=1e-12)


def test_surface_gradients_are_autograd_gradients():
    for surface in optimizers.SURFACES.values():
        for point in np.random.default_rng(0).normal(size=(5, 2)):
            p = torch.tensor(point, requires_grad=True)
            torch_loss(surface.name, p).backward()
            np.testing.assert_allclose(surface.grad(point), p.grad.numpy(), rtol=1e-12)


def test_gradient_descent_diverges_beyond_two_over_the_curvature():
    limit = 2 / optimizers.QUADRATIC_CURVATURE  # 0.08: the largest stable step across the valley
    stable = optimizers.optimizer_paths("quadratic", "sgd", lr=0.95 * limit, steps=300)
    unstable = optimizers.optimizer_paths("quadratic", "sgd", lr=1.05 * limit, steps=300)
    assert stable["diverged_at"] is None and stable["losses"][-1] < 1e-3
    assert unstable["diverged_at"] is not None and len(unstable["path"]) == unstable["diverged_at"] + 1
    assert unstable["losses"][-1] > optimizers.DIVERGED


def test_lab02_explorer_shows_divergence_as_a_result_and_a_bad_setting_as_a_sentence():
    explorer = explore.lab02_optimizers()
    move_every_control(explorer)
    explorer.controls["optimizer"].value = "sgd"
    explorer.controls["surface"].value = "quadratic"
    explorer.controls["lr"].value = 0.5
    assert explorer.last.png is not None and "diverged at step" in explorer.last.text
    explorer.controls["optimizer"].value = "nesterov"
    explorer.controls["momentum"].value = 0.0
    assert (
        explorer.last.png is None and explorer.last.message == "Nesterov momentum needs momentum > 0, got momentum=0.0."
    )


# -- lab 03 ------------------------------------------------------------------------------------------------------------
def test_conv_output_sizes_are_torch_conv2ds():
    checked = impossible = 0
    for size in range(1, 10):
        for kernel in range(1, 5):
            for stride in (1, 2, 3):
                for padding in (0, 1, 2):
                    for dilation in (1, 2, 3):
                        x, w = torch.zeros(1, 1, size, size), torch.zeros(1, 1, kernel, kernel)
                        try:
                            out = nn.functional.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
                        except RuntimeError:
                            with pytest.raises(ValueError, match="No output: a kernel of"):
                                convolution.conv_arithmetic(size, kernel, stride, padding, dilation)
                            impossible += 1
                            continue
                        ours = convolution.conv_arithmetic(size, kernel, stride, padding, dilation)
                        assert ours["output"] == out.shape[-1], (size, kernel, stride, padding, dilation)
                        checked += 1
    assert checked > 500 and impossible > 50


@pytest.mark.parametrize("setting", [(7, 3, 2, 1, 1), (9, 3, 1, 0, 3), (8, 4, 3, 2, 2), (5, 1, 2, 0, 1)])
def test_receptive_fields_are_what_autograd_says_each_output_reads(setting):
    size, kernel, stride, padding, dilation = setting
    ours = convolution.conv_arithmetic(*setting)
    x = torch.zeros(1, 1, size + 2 * padding, size + 2 * padding, requires_grad=True)  # padded by hand
    out = nn.functional.conv2d(x, torch.ones(1, 1, kernel, kernel), stride=stride, dilation=dilation)
    for j in range(out.shape[-1]):
        (grad,) = torch.autograd.grad(out[0, 0, 0, j], x, retain_graph=True)
        assert np.flatnonzero(grad[0, 0].sum(0).numpy()).tolist() == ours["taps"][j].tolist()
    read = np.zeros(size + 2 * padding, bool)
    read[ours["taps"].ravel()] = True
    assert ours["unread"].tolist() == np.flatnonzero(~read).tolist()


def test_lab03_explorer_says_why_a_setting_has_no_output():
    explorer = explore.lab03_convolution()
    move_every_control(explorer)
    explorer.controls["size"].value = 3
    explorer.controls["padding"].value = 0
    explorer.controls["kernel"].value = 5
    assert explorer.last.png is None
    assert explorer.last.message.startswith("No output: a kernel of 5 taps with dilation")


def test_feature_maps_are_the_forward_pass(splits):
    from labutils.scratch.cnn import simple_cnn
    from labutils.scratch.losses import softmax
    from labutils.scratch.plots import feature_maps

    model = simple_cnn(channels=(2, 3), hidden=8, rng=0)
    images = splits.float32(normalize=True).x_test
    shown = convolution.feature_map_view(model, images, 4, "4: ReLU")
    outputs = feature_maps(model, images[4:5])
    np.testing.assert_array_equal(shown["maps"], outputs["4: ReLU"][0])
    np.testing.assert_allclose(shown["probabilities"], softmax(outputs[list(outputs)[-1]])[0], rtol=1e-6)
    assert shown["zero_fraction"] == np.mean(outputs["4: ReLU"][0] == 0)
    assert convolution.spatial_layers(model) == ["0: Conv2d", "1: ReLU", "2: MaxPool2d", "3: Conv2d", "4: ReLU",
                                               "5: MaxPool2d"]  # fmt: skip
    explorer = explore.lab03_feature_maps(model, images, splits.y_test)
    move_every_control(explorer)


# -- labs 04 and 05 ----------------------------------------------------------------------------------------------------
def fake_run(name, variant_depth, weight, steps, *, train=100, batch=25, epochs=2):
    """A finished run as the explorers see it: recipe, dataset, history and a saved gradient record."""
    history = SavedGradients({"steps": np.asarray(steps), "layers": ["stem", "blocks.0", "fc"], "weight": weight,
                              "bias": weight, "relu_layers": [], "dead_relu": np.zeros((len(steps), 0))})  # fmt: skip
    recipe = SimpleNamespace(batch_size=batch, max_steps_per_epoch=None, record_every=1)
    rows = [
        {"epoch": e + 1, "train_acc": 0.5, "val_acc": 0.5, "train_loss": 1.0, "val_loss": 1.0} for e in range(epochs)
    ]
    return SimpleNamespace(name=name, recipe=recipe, dataset={"sizes": {"train": train}, "name": "toy"},
                           history=History(rows=rows), recorder=history)  # fmt: skip


@pytest.fixture
def gradient_runs():
    rng = np.random.default_rng(0)
    steps = np.arange(8)  # 100 images in batches of 25: 4 steps per epoch, two epochs
    return {
        (4, "plain"): fake_run("plain-4", None, rng.uniform(1e-6, 1e-3, (8, 3)), steps),
        (4, "residual"): fake_run("residual-4", None, rng.uniform(0.1, 1.0, (8, 3)), steps),
        (2, "plain"): fake_run("plain-2", None, rng.uniform(0.1, 1.0, (8, 3)), steps),
        (2, "residual"): fake_run("residual-2", None, rng.uniform(0.1, 1.0, (8, 3)), steps),
        (8, "plain"): SimpleNamespace(name="plain-8", recorder=None),  # no record: not offered
    }


def test_epoch_profiles_are_means_of_the_recorded_steps(gradient_runs):
    run = gradient_runs[4, "plain"]
    assert gradient_flow.steps_per_epoch(run) == 4
    weight = run.recorder.history["weight"]
    profile = gradient_flow.epoch_profile(run.recorder, 4, epoch=2)
    np.testing.assert_allclose(list(profile.values()), weight[4:8].mean(axis=0), rtol=1e-15)
    assert list(profile) == ["stem", "blocks.0", "fc"]
    pairs = gradient_flow.gradient_pairs(gradient_runs)
    assert list(pairs) == [2, 4] and set(pairs[4]) == {"plain", "residual"}
    assert gradient_flow.variant_and_depth(("residual", 20), None) == ("residual", 20)  # lab 05's keys
    with pytest.raises(ValueError, match="epoch=3 is not possible: these runs trained for 2 epoch"):
        gradient_flow.gradient_flow_view(pairs[4], 3)


def test_lab04_explorer_moves(gradient_runs):
    explorer = explore.lab04_gradient_flow(gradient_runs)
    assert explorer.controls["depth"].value == 4
    texts = move_every_control(explorer)
    assert texts[1].startswith("depth 2, epoch 1") and texts[2].startswith("depth 2, epoch 2")


def test_epochs_of_a_real_run_are_the_steps_its_recorder_saw(tmp_path, monkeypatch):
    from labutils.experiment import Recipe, run
    from labutils.models import MLP

    monkeypatch.setenv("LABS_RUNS", str(tmp_path))
    recipe = Recipe("plain-3", model=MLP, model_kwargs=dict(in_features=784, num_classes=10, width=8, depth=3),
                    dataset="mnist", train_subset=200, val_size=100, test_subset=100, batch_size=64, epochs=2,
                    record_every=1)  # fmt: skip
    result = run(recipe, lab="test-explore", profile="quick", progress=False)
    per_epoch = gradient_flow.steps_per_epoch(result)
    assert per_epoch == 4 and len(result.recorder) == 2 * per_epoch  # 200 images, batches of 64: 4 steps
    weight = result.recorder.history["weight"]
    profile = gradient_flow.epoch_profile(result.recorder, per_epoch, 2)
    np.testing.assert_allclose(list(profile.values()), weight[4:].mean(axis=0), rtol=1e-12)


# -- lab 06 ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", regularization.TRANSFORMS)
def test_strength_zero_is_the_identity_and_draws_are_seeded(splits, name):
    digits = regularization.one_per_class(splits.x_test, splits.y_test, 10)
    assert digits.shape == (10, 1, 28, 28) and np.array_equal(digits[3], splits.x_test[3])
    unchanged = regularization.augmented(digits, name, 0.0, seed=1)
    assert np.array_equal(unchanged["views"][0], digits) and unchanged["changed"] == 0
    strong = regularization.augmented(digits, name, 1.0, seed=1)
    assert np.array_equal(strong["views"], regularization.augmented(digits, name, 1.0, seed=1)["views"])
    assert strong["changed"] > 0.02


def test_affine_at_half_strength_is_the_labs_digits_preset():
    from labutils.data import augmentation

    ours, preset = regularization.transform("affine", 0.5), augmentation("digits", 28, flips=False)
    assert (ours.degrees, ours.translate) == (preset.degrees, preset.translate) == ([-10.0, 10.0], (0.1, 0.1))


def test_rotation_moves_more_pixels_the_stronger_it_is(splits):
    digits = regularization.one_per_class(splits.x_test, splits.y_test, 10)
    shifts = [regularization.augmented(digits, "rotation", s, seed=0)["shift"] for s in (0.1, 0.5, 1.0)]
    assert shifts[0] < shifts[1] < shifts[2]


def test_lab06_explorers_move(splits):
    move_every_control(explore.lab06_augmentation(splits))
    runs = {
        name: fake_run(name, None, np.ones((1, 3)), [0], epochs=3) for name in ("baseline", "batch_norm", "combined")
    }
    runs["combined"].history.rows[-1]["val_acc"] = 0.75
    data = regularization.curves(runs, ["baseline", "combined"], "accuracy")
    assert data["val_acc"] == {"baseline": [0.5, 0.5, 0.5], "combined": [0.5, 0.5, 0.75]}
    with pytest.raises(ValueError, match="No configuration is chosen"):
        regularization.curves(runs, [], "loss")
    explorer = explore.lab06_curves(runs)
    move_every_control(explorer)
    explorer.controls["chosen"].value = ()
    assert explorer.last.message.startswith("No configuration is chosen")


# -- lab 07 ------------------------------------------------------------------------------------------------------------
def transfer_run(name, confusion):
    confusion = np.asarray(confusion)
    test = Evaluation(loss=1.0, top1=np.trace(confusion) / confusion.sum(), top5=1.0, confusion=confusion,
                      predictions=np.zeros(0), targets=np.zeros(0))  # fmt: skip
    dataset = {"name": "mnist", "num_classes": 2, "class_ids": [5, 6], "synthetic": False, "source": "test"}
    return SimpleNamespace(name=name, test=test, dataset=dataset)


def test_transfer_grid_and_cell_are_the_runs_numbers():
    runs = {
        (10, "linear_probe"): transfer_run("a", [[8, 2], [1, 9]]),
        (10, "full"): transfer_run("b", [[10, 0], [3, 7]]),
        (50, "full"): transfer_run("c", [[9, 1], [0, 10]]),
    }
    grid = transfer.accuracy_grid(runs)
    assert grid["budgets"] == [10, 50] and grid["strategies"] == ["linear_probe", "full"]
    np.testing.assert_array_equal(grid["top1"], [[0.85, np.nan], [0.85, 0.95]])
    cell = transfer.cell_view(runs, "full", 10)
    np.testing.assert_allclose(cell["row_normalised"], [[1.0, 0.0], [0.3, 0.7]])
    assert cell["names"] == ["5", "6"] and cell["top1"] == np.trace(cell["confusion"]) / 20
    explorer = explore.lab07_transfer(runs)
    assert "real data" in explorer.note and "classes 5, 6" in explorer.note
    move_every_control(explorer)
    explorer.controls["strategy"].value = "linear_probe"
    explorer.controls["per_class"].value = 50
    assert explorer.last.message == "linear_probe with 50 labelled images per class was not run in this lab."


# -- lab 08 ------------------------------------------------------------------------------------------------------------
def test_corrupted_predictions_and_the_cell_accuracy(splits):
    from labutils.corruptions import corrupt_arrays, predict_uint8

    torch.manual_seed(0)
    models = {"linear": nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), "other": nn.Sequential(nn.Flatten(),
              nn.Linear(784, 10))}  # fmt: skip
    shown = robustness.corruption_view(models["linear"], splits.x_test, splits.y_test, INFO, "impulse_noise", 3)
    expected = corrupt_arrays(splits.x_test[:8], "impulse_noise", 3, 0)
    np.testing.assert_array_equal(shown["corrupted"], expected)
    np.testing.assert_array_equal(shown["predictions"], predict_uint8(models["linear"], expected, INFO))
    accuracy = robustness.measured_accuracy(models["linear"], splits.x_test, splits.y_test, INFO, "fog", 2)
    everything = predict_uint8(models["linear"], corrupt_arrays(splits.x_test, "fog", 2, 0), INFO)
    assert accuracy == np.mean(everything == splits.y_test)
    frame = pd.DataFrame([{"model": "linear", "corruption": "fog", "severity": 2, "accuracy": 0.25}])
    results = SimpleNamespace(frame=frame)
    assert robustness.cell_accuracy(results, "linear", "fog", 2) == 0.25
    assert robustness.cell_accuracy(results, "linear", "fog", 3) is None
    explorer = explore.lab08_robustness(models, splits, ["fog", "brightness"], [1, 2, 3], results=results)
    assert "accuracy 0.250 on 30 test images (the lab's evaluation)" in explorer.last.text
    texts = move_every_control(explorer)
    assert texts[-1].startswith("other under brightness, severity 3: accuracy") and "(measured here)" in texts[-1]


# -- lab 09 ------------------------------------------------------------------------------------------------------------
def test_cam_view_is_labutils_cam_and_road_on_one_image(splits):
    from labutils import cam
    from labutils.explore import cam as explore_cam
    from labutils.models import ResNet

    torch.manual_seed(0)
    model = ResNet(8, num_classes=10, in_channels=1, width=4).eval()
    images = splits.float32(normalize=True).x_test
    shown = explore_cam.cam_view(model, images, 2, target=3, method="Grad-CAM")
    x = torch.as_tensor(images[2:3])
    maps = cam.cam_maps(model, x, [3], methods=("Grad-CAM",))
    np.testing.assert_allclose(shown["map"], maps["Grad-CAM"][0], atol=1e-6)
    road = cam.road_scores(model, x, [3], maps)["Grad-CAM"]
    assert shown["road"] == pytest.approx({part: float(v[0]) for part, v in road.items()}, abs=1e-6)
    assert shown["road"]["combined"] == pytest.approx((shown["road"]["lerf"] - shown["road"]["morf"]) / 2)
    with torch.no_grad():
        predicted = int(model(x).argmax())
    assert explore_cam.cam_view(model, images, 2, method="CAM")["target"] == predicted
    explorer = explore.lab09_cam(model, images, splits.y_test)
    texts = move_every_control(explorer)
    assert "Grad-CAM++ map of class" in texts[-1]


# -- the notebook that shows them all ----------------------------------------------------------------------------------
def test_the_explorers_notebook_builds_every_explorer_and_is_stored_clean():
    from labutils import nbtools

    nb = json.loads(NOTEBOOK.read_text())
    assert nbtools.stored_output_problems(nb) == []
    source = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    missing = [name for name in explore.__all__ if name.startswith("lab") and f"explore.{name}(" not in source]
    assert missing == []
