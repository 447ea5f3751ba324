"""Lab 08's exercise check (check_contrast), the augmix preset and what the presets share with the corruptions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labutils import checks, data
from labutils import corruptions as C

torch.set_num_threads(1)


def reference_contrast(x, severity):
    """The lab's solution: per-image, per-channel mean kept, deviation scaled by CIFAR-10-C's factor."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * C.parameters("contrast", severity) + mean).clamp(0, 1)


def test_check_contrast_passes_a_correct_implementation_on_several_seeds(capsys):
    for seed in (0, 1, 2):
        assert checks.check_contrast(reference_contrast, seed=seed) < 1e-6
    assert "check_contrast: 3 cases x 5 severities" in capsys.readouterr().out


def test_check_contrast_passes_the_package_itself():
    assert checks.check_contrast(lambda x, s: C.corrupt(x, "contrast", s, seed=123)) == 0.0


@pytest.mark.parametrize(
    "wrong, needle",
    [
        (lambda x, s: (x - x.mean()) * C.parameters("contrast", s) + x.mean(), "Largest difference"),  # global mean
        (lambda x, s: reference_contrast(x, 6 - s), "severity 1"),  # the severity ladder reversed
        (lambda x, s: reference_contrast(x, s)[:, :1], "expected shape (4, 3, 8, 8)"),
    ],
    ids=["global-mean", "reversed-severity", "shape"],
)
def test_check_contrast_fails_plausible_wrong_answers_with_a_hint(wrong, needle):
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_contrast(wrong)
    assert needle in str(info.value) and "Hint:" in str(info.value)


def test_check_contrast_fails_the_stub_clearly():
    def stub(x, severity):
        raise NotImplementedError()

    with pytest.raises(checks.CheckFailed, match="NotImplementedError: replace the '# YOUR CODE HERE' stub"):
        checks.check_contrast(stub)


def test_check_contrast_catches_a_missing_clip():
    unclipped = lambda x, s: (x - x.mean(dim=(2, 3), keepdim=True)) * 1.5 + x.mean(dim=(2, 3), keepdim=True)  # noqa: E731
    with pytest.raises(checks.CheckFailed):
        checks.check_contrast(unclipped)


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_augmix_preset_works_on_uint8_greyscale_and_colour(channels, size):
    assert "augmix" in data.AUGMENTATIONS and data.AUGMENTATIONS[:3] == ("none", "standard", "strong")
    torch.manual_seed(0)
    img = torch.randint(0, 256, (channels, size, size), dtype=torch.uint8)
    tf = data.augmentation("augmix", size)
    outs = [tf(img) for _ in range(4)]
    assert all(o.shape == img.shape and o.dtype == torch.uint8 for o in outs)
    assert any(not torch.equal(o, img) for o in outs)  # it does change the image
    assert type(tf.transforms[-1]).__name__ == "AugMix"  # torchvision's own
    # as the paper ran it for a corruption benchmark: no brightness, contrast, colour or sharpness operation
    assert tf.transforms[-1].all_ops is False


def test_strong_preset_names_its_overlap_with_the_cifar_c_corruptions():
    """The strong preset's colour jitter changes brightness and contrast, two CIFAR-C corruptions; the overlap
    is named by labutils.challenge.augmentation_overlap, and the preset's jitter is what that table says."""
    from labutils import challenge

    jitter = [t for t in data.augmentation("strong", 32).transforms if type(t).__name__ == "ColorJitter"]
    assert len(jitter) == 1 and jitter[0].brightness is not None and jitter[0].contrast is not None
    assert challenge.augmentation_overlap("strong", C.corruption_names("cifar10")) == ["brightness", "contrast"]


def test_augmix_loader_trains_on_real_mnist():
    loaders = data.make_loaders("mnist", profile="quick", batch_size=16, train_subset=32, augment="augmix", seed=0)
    x, y = next(iter(loaders.train))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and torch.isfinite(x).all()


def fake_results():
    """A CorruptionResults of two models, three corruptions, two severities, with known accuracies."""
    import pandas as pd

    from labutils.corruptions.evaluation import CorruptionResults

    rows = []
    for m, model in enumerate(("baseline", "augmix")):
        for c, name in enumerate(("impulse_noise", "glass_blur", "brightness")):
            for severity in (1, 5):
                acc = 0.9 - 0.1 * c - 0.05 * severity + 0.02 * m
                rows.append(
                    {"model": model, "corruption": name, "severity": severity, "accuracy": acc, "approximation": False}
                )
    return CorruptionResults(pd.DataFrame(rows), {"baseline": 0.95, "augmix": 0.96})


def test_corruption_heatmaps_share_one_fixed_scale_axes_and_print_every_cell():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = fake_results()
    fig, data = C.plot_corruption_heatmaps(results, ["baseline", "augmix"], title="two models")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 and len(fig.axes) == 3  # two panels and one colour bar
    assert {im.get_clim() for ax in panels for im in ax.images} == {(0.0, 1.0)}  # one scale, 0 to 1, in any figure
    assert (data["vmin"], data["vmax"]) == (0.0, 1.0)
    np.testing.assert_allclose(data["baseline"], [[0.85, 0.65], [0.75, 0.55], [0.65, 0.45]], atol=1e-12)
    for ax, model in zip(panels, ("baseline", "augmix")):
        assert ax.get_title() == model
        assert [t.get_text() for t in ax.get_yticklabels()] == ["impulse_noise", "glass_blur", "brightness"]
        texts = sorted(t.get_text() for t in ax.texts)
        assert texts == sorted(f"{v:.2f}" for v in data[model].ravel())  # every cell's value printed
    assert panels[0].get_shared_y_axes().joined(panels[0], panels[1])
    # the figure title sits above the panel titles, not on them
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (suptitle,) = [
        t.get_window_extent(renderer) for t in fig.findobj(matplotlib.text.Text) if t.get_text() == "two models"
    ]
    assert all(suptitle.y0 >= ax.title.get_window_extent(renderer).y1 - 1 for ax in panels)
    plt.close(fig)
    with pytest.raises(ValueError, match="vmin=1.0 must be below vmax=0.5"):
        C.plot_corruption_heatmaps(results, vmin=1.0, vmax=0.5)
