"""Lab 08's exercise check (check_contrast) and the augmix augmentation preset."""

from __future__ import annotations

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


def test_augmix_loader_trains_on_real_mnist():
    loaders = data.make_loaders("mnist", profile="quick", batch_size=16, train_subset=32, augment="augmix", seed=0)
    x, y = next(iter(loaders.train))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and torch.isfinite(x).all()
