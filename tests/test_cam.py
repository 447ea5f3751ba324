"""labutils.cam: CAM by definition against the logits and the library's Grad-CAM, the ROAD wiring, the figures'
numbers; and lab 09's exercise check (checks.check_class_activation_map) on the solution, the stub and common
mistakes."""

from __future__ import annotations

import nbformat
import numpy as np
import pytest
import torch
from torch import nn

from labutils import cam, checks
from labutils.models import MLP, ResNet, SimpleCNN
from labutils.student import BEGIN_SOLUTION
from labutils.util import REPO_ROOT


def small_models():
    torch.manual_seed(0)
    return {
        "ResNet-8": ResNet(8, num_classes=5, in_channels=1, width=4).eval(),
        "SimpleCNN": SimpleCNN(num_classes=5, in_channels=1, width=4).eval(),
    }


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["ResNet-8", "SimpleCNN"])
def test_the_cams_mean_plus_the_bias_is_the_class_logit(name, images):
    model = small_models()[name]
    with torch.no_grad():
        logits = model(images)
    classes = torch.tensor([0, 4, 2, 2])
    maps = cam.feature_maps(model, images)
    assert maps.shape[:2] == (4, model.fc.in_features)
    m = cam.class_activation_map(maps, model.fc.weight.detach(), classes)
    assert m.shape == (4, *maps.shape[-2:])
    np.testing.assert_allclose(
        (m.mean(dim=(1, 2)) + model.fc.bias[classes]).detach().numpy(),
        logits[torch.arange(4), classes].numpy(),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("name", ["ResNet-8", "SimpleCNN"])
def test_on_a_global_average_pooled_network_cam_is_the_librarys_grad_cam(name, images):
    model = small_models()[name]
    classes = [1, 3, 0, 4]
    maps = cam.cam_maps(model, images, classes, methods=("CAM", "Grad-CAM", "Grad-CAM++"))
    for method, m in maps.items():
        assert m.shape == (4, 16, 16) and m.dtype == np.float32, method
        assert m.min() >= 0.0 and m.max() <= 1.0 + 1e-6, method
    assert np.abs(maps["CAM"] - maps["Grad-CAM"]).max() < 1e-4
    assert np.abs(maps["Grad-CAM++"] - maps["Grad-CAM"]).max() > 1e-3  # a different method, a different map


def test_the_random_baseline_is_seeded_and_leaves_numpys_generator_alone(images):
    model = small_models()["ResNet-8"]
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a = cam.cam_maps(model, images, [0, 1, 2, 3], methods=("random",), seed=5)["random"]
    b = cam.cam_maps(model, images, [0, 1, 2, 3], methods=("random",), seed=5)["random"]
    c = cam.cam_maps(model, images, [0, 1, 2, 3], methods=("random",), seed=6)["random"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(np.random.get_state()[1], state)


def test_unknown_methods_and_networks_without_pooling_are_one_sentence(images):
    with pytest.raises(ValueError, match="Unknown CAM method 'Score-CAM'"):
        cam.cam_maps(small_models()["ResNet-8"], images, [0] * 4, methods=("Score-CAM",))
    with pytest.raises(ValueError, match="MLP has no global-average-pooled last stage"):
        cam.cam_layer(MLP(256, 5, 8, 2))


class LeftHalfEnergy(nn.Module):
    """A 'network' whose class-0 score is the energy of the image's left half (class 1 scores 0)."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # the library looks up the device of the parameters

    def forward(self, x):
        left = (x[..., : x.shape[-1] // 2] ** 2).flatten(1).sum(dim=1)
        return torch.stack([left, torch.zeros_like(left)], dim=1)


def test_road_rewards_the_map_that_points_where_the_score_comes_from():
    """Removing (imputing) the left half smooths it and lowers the score; removing the right half changes nothing.
    So the map of the left half must score higher than the map of the right half."""
    x = torch.randn(6, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    left = np.zeros((6, 12, 12), np.float32)
    left[..., :6] = 1.0
    left += np.linspace(0, 0.01, 144, dtype=np.float32).reshape(12, 12)  # no ties at the percentile thresholds
    right = left[..., ::-1].copy()
    # MoRF at percentile p removes the (100 - p) % highest-ranked pixels: at 50 and 75 the right map removes only
    # pixels of the right half
    scores = cam.road_scores(LeftHalfEnergy(), x, [0] * 6, {"left": left, "right": right}, percentiles=(50, 75))
    assert set(scores["left"]) == {"morf", "lerf", "combined"} and scores["left"]["combined"].shape == (6,)
    np.testing.assert_allclose(scores["left"]["combined"], (scores["left"]["lerf"] - scores["left"]["morf"]) / 2)
    assert scores["left"]["morf"].mean() < 0  # the relevant pixels removed: the score drops
    assert np.abs(scores["right"]["morf"]).max() < 1e-4  # irrelevant pixels removed first: nothing happens
    assert (scores["right"]["lerf"] < 0).all()  # ... and what it calls least relevant is what the score needs
    assert (scores["left"]["combined"] > scores["right"]["combined"]).all()


def test_road_combined_is_the_librarys_road_combined(images):
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = small_models()["ResNet-8"]
    classes = [0, 1, 2, 3]
    maps = cam.cam_maps(model, images, classes, methods=("Grad-CAM",))
    ours = cam.road_scores(model, images, classes, maps, percentiles=(20, 60), seed=3)["Grad-CAM"]["combined"]
    torch.manual_seed(3)
    theirs = ROADCombined(percentiles=[20, 60])(
        images, maps["Grad-CAM"], [ClassifierOutputTarget(c) for c in classes], model
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)  # same seed, same imputation noise


def test_plot_cam_grid_draws_every_map_on_one_colour_scale(images):
    import matplotlib.pyplot as plt

    maps = {"A": np.random.default_rng(0).uniform(0, 1, (2, 16, 16)), "B": np.zeros((2, 16, 16))}
    fig, numbers = cam.plot_cam_grid(images[:2], maps, row_titles=["7 -> 7", "3 -> 5"])
    assert numbers["vmin"] == 0.0 and numbers["vmax"] == 1.0 and numbers["methods"] == ["A", "B"]
    assert np.array_equal(numbers["maps"]["A"], maps["A"])
    overlays = [im for ax in fig.axes for im in ax.images if im.get_alpha() is not None]
    assert len(overlays) == 4 and all(im.get_clim() == (0.0, 1.0) for im in overlays)
    assert len(fig.axes) == 2 * 3 + 1  # a grid of 2 x (image + 2 methods), and one colour bar
    plt.close(fig)


def test_plot_road_returns_the_means_and_standard_errors_it_draws():
    import matplotlib.pyplot as plt

    scores = {"m": {"morf": np.array([-2.0, -4.0]), "lerf": np.array([0.0, 0.0]), "combined": np.array([1.0, 2.0])}}
    fig, numbers = cam.plot_road(scores)
    assert numbers["m"]["morf"] == (-3.0, pytest.approx(1.0))
    assert numbers["m"]["combined"] == (1.5, pytest.approx(0.5))
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == [-3.0, 0.0, 1.5]
    plt.close(fig)


# ---- the exercise's check ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab09():
    """What the exercise cell of lab 09's solution notebook defines (only that cell runs)."""
    nb = nbformat.read(REPO_ROOT / "notebooks" / "09_distillation_and_cam.ipynb", as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and BEGIN_SOLUTION in c.source]
    assert len(cells) == 1
    namespace = {"torch": torch}
    exec(compile(cells[0].source, "09_distillation_and_cam:exercise", "exec"), namespace)
    return namespace


def test_the_solution_and_the_reference_pass(lab09, capsys):
    assert checks.check_class_activation_map(lab09["my_class_activation_map"]) < 1e-12
    assert checks.check_class_activation_map(lab09["my_class_activation_map"], seed=1) < 1e-12
    assert checks.check_class_activation_map(cam.class_activation_map, seed=2) < 1e-12
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("check_class_activation_map: 3 cases") for line in lines)


def fails(candidate, *needles: str) -> str:
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_class_activation_map(candidate)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    return message


def test_the_stub_and_common_mistakes_fail_with_their_hint():
    def stub(maps, fc_weight, classes):
        raise NotImplementedError()

    fails(stub, "NotImplementedError", "YOUR CODE HERE")
    fails(lambda a, w, c: cam.class_activation_map(a, w, c) / (a.shape[2] * a.shape[3]), "Grad-CAM's scale")
    fails(lambda a, w, c: cam.class_activation_map(a, w, c) / a.shape[1], "do not average")
    fails(lambda a, w, c: torch.relu(cam.class_activation_map(a, w, c)), "no ReLU here")
    fails(lambda a, w, c: cam.class_activation_map(a, w, torch.zeros_like(c)), "class 0's weights")
    fails(lambda a, w, c: torch.einsum("ck,nkhw->nchw", w, a), "one map per image", "expected shape (4, 5, 5)")
    fails(lambda a, w, c: None, "got NoneType")
    message = fails(lambda a, w, c: cam.class_activation_map(a, w, c) + 0.1, "relative error")
    assert "Hint: M[n, i, j]" in message
