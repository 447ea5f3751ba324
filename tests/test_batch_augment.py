"""Batched augmentation: the same presets as the per-image torchvision pipeline, one random draw per image, seeded.

Three kinds of check:
- equality: for the same random draws, a batch equals torchvision's functional transforms applied image by image;
- distributions: the draws, and what comes out, follow the per-image presets' distributions (crop corners uniform,
  flips at rate 0.5, factors and angles uniform over the preset's ranges), with bounds stated from the sample size;
- per-image randomness and seeding: a batch does not share one crop, and a seed gives the same batch.

Statistical bounds are set so that a correct pipeline fails with probability about 1e-6 or less (chi-square and
Kolmogorov-Smirnov critical values at p = 1e-6, binomial counts within 5 standard deviations), and every test
uses fixed seeds, so a run is repeatable.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from labutils import data
from labutils.batch_augment import PRESETS, BatchAugment, BatchPreset, DeviceLoader, Draws, fits_on_device
from labutils.checkpoints import loader_generators

CHI2_CRITICAL = {5: 35.89, 6: 38.26, 8: 42.70}  # chi-square with these degrees of freedom exceeds them w.p. 1e-6
KS_C = math.sqrt(-math.log(1e-6 / 2) / 2)  # two-sample KS: D > KS_C * sqrt((n + m) / (n m)) w.p. about 1e-6


def chi_square(counts: torch.Tensor, probabilities: torch.Tensor) -> float:
    expected = probabilities * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def binomial_bound(n: int, p: float) -> float:
    """Five standard deviations of a Binomial(n, p) count."""
    return 5 * math.sqrt(n * p * (1 - p))


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest gap between the empirical distribution functions of samples ``a`` and ``b``."""
    points = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a.sort().values, points, right=True) / len(a)
    cdf_b = torch.searchsorted(b.sort().values, points, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


def coordinate_image() -> torch.Tensor:
    """3 x 32 x 32 uint8: channel 0 holds row + 1, channel 1 column + 1 (0 is left for the crop's padding)."""
    rows = torch.arange(1, 33, dtype=torch.uint8)
    return torch.stack(
        [rows[:, None].expand(32, 32), rows[None, :].expand(32, 32), torch.zeros(32, 32, dtype=torch.uint8)]
    )


def decode_crop(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crop corner (top, left) in the padded image and the flip that turned coordinate images into ``batch``.

    Output pixel (16, 16) always lies inside the image for a 4-pixel padding: it shows source row 12 + top and
    source column 12 + left, or 11 + left when mirrored (the flip reads crop column 15 there).
    """
    row, col = batch[:, 0, 16, 16].long() - 1, batch[:, 1, 16, 16].long() - 1
    flip = batch[:, 1, 16, 17].long() - 1 < col  # columns run backwards
    return row - 12, col - torch.where(flip, 11, 12), flip


def sample_image(channels: int, size: int) -> torch.Tensor:
    """A colourful, lopsided test image (C, size, size) uint8: gradients and a bright blob off the centre."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    blob = 200 * torch.exp(-((x - size * 0.7) ** 2 + (y - size * 0.3) ** 2) / (size / 5) ** 2)
    planes = [blob + 40 * x / size, 255 * y / size * 0.6 + blob * 0.2, 120 - blob * 0.5]
    return torch.stack(planes[:channels]).clamp(0, 255).to(torch.uint8)


def summaries(batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image statistics a preset moves: brightness, colourfulness, and the brightness-weighted column and row
    (which crops, flips, shifts and rotations move)."""
    x = batch.float()
    weights = x.mean(dim=1)  # (B, H, W)
    total = weights.sum(dim=(1, 2)).clamp_min(1e-6)
    positions = torch.arange(x.shape[-1], dtype=torch.float32)  # square images: rows and columns alike
    found = {
        "mean": x.mean(dim=(1, 2, 3)),
        "centroid_x": (weights.sum(dim=1) * positions).sum(dim=1) / total,
        "centroid_y": (weights.sum(dim=2) * positions).sum(dim=1) / total,
    }
    if x.shape[1] == 3:
        found["colourfulness"] = (x - x.mean(dim=1, keepdim=True)).abs().mean(dim=(1, 2, 3))
    return found


def per_image(preset: str, image: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n augmentations of ``image`` by the per-image torchvision preset of labutils.data."""
    transform = data.augmentation(preset, image.shape[-1])
    torch.manual_seed(seed)
    return torch.stack([transform(image) for _ in range(n)])


# ---- The presets are the per-image ones ---------------------------------------------------------------------------
def described(transform) -> BatchPreset:
    """The BatchPreset a torchvision v2 preset of labutils.data.augmentation amounts to, read off its transforms."""
    found: dict = {}
    for t in transform.transforms if isinstance(transform, v2.Compose) else [] if transform is None else [transform]:
        if isinstance(t, v2.RandomCrop):
            assert len(set(t.padding)) == 1
            found["padding"] = t.padding[0]
        elif isinstance(t, v2.RandomHorizontalFlip):
            assert t.p == 0.5
            found["flip"] = True
        elif isinstance(t, v2.ColorJitter):
            assert t.hue is None and t.brightness == t.contrast == t.saturation
            low, high = t.brightness
            assert low == pytest.approx(2 - high)
            found["jitter"] = pytest.approx(high - 1)
        elif isinstance(t, v2.RandomRotation):
            assert t.degrees[0] == -t.degrees[1]
            found["degrees"] = t.degrees[1]
        elif isinstance(t, v2.RandomAffine):
            assert t.degrees[0] == -t.degrees[1] and t.translate[0] == t.translate[1]
            assert t.scale is None and t.shear is None
            found["degrees"], found["translate"] = t.degrees[1], pytest.approx(t.translate[0])
        elif isinstance(t, v2.AugMix):
            assert not t.all_ops
            found["augmix"] = True
        else:
            raise AssertionError(f"the batched presets know no {type(t).__name__}")
    return BatchPreset(**found)


@pytest.mark.parametrize("flips", [True, False])
def test_each_batched_preset_has_the_per_image_presets_steps_and_ranges(flips):
    assert tuple(PRESETS) == data.AUGMENTATIONS
    for name in data.AUGMENTATIONS:
        assert BatchAugment(name, flips=flips).preset == described(data.augmentation(name, 32, flips=flips)), name


def test_unknown_presets_and_wrong_batches_are_refused_in_one_sentence():
    with pytest.raises(ValueError, match=r"Unknown augmentation preset 'strongest': choose one of none, standard"):
        BatchAugment("strongest")
    with pytest.raises(
        ValueError, match=r"uint8 batch of shape \(B, C, H, W\), not torch.float32 of shape \(3, 8, 8\)"
    ):
        BatchAugment("standard")(torch.zeros(3, 8, 8))


# ---- Equal to torchvision for the same draws ----------------------------------------------------------------------
def reference(images: torch.Tensor, draws: Draws, preset: BatchPreset) -> torch.Tensor:
    """What torchvision's functional transforms make of each image with the same draws, one image at a time."""
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    out = []
    for i, image in enumerate(images):
        if preset.padding:
            image = TF.crop(
                TF.pad(image, [preset.padding] * 4), int(draws.top[i]), int(draws.left[i]), *image.shape[-2:]
            )
        if draws.flip[i]:
            image = TF.horizontal_flip(image)
        if preset.jitter:
            for index in draws.order[i].tolist():
                image = adjust[index](image, float(draws.factors[i, index]))
        if preset.translate:  # RandomAffine: its angles turn clockwise
            shift = [int(draws.shift[i, 0]), int(draws.shift[i, 1])]
            image = TF.affine(image, angle=-float(draws.angle[i]), translate=shift, scale=1.0, shear=[0.0, 0.0])
        elif preset.degrees:
            image = TF.rotate(image, float(draws.angle[i]))
        out.append(image)
    return torch.stack(out)


@pytest.mark.parametrize(
    ("preset", "channels", "size"),
    [("standard", 3, 32), ("flip_jitter", 3, 32), ("strong", 3, 32), ("strong", 1, 28), ("digits", 1, 28)],
)
def test_a_batch_equals_torchvision_image_by_image_for_the_same_draws(preset, channels, size):
    """Crops and flips move whole pixels: every value equal. Colour jitter rounds down after each step as
    torchvision's uint8 images do, with its sums written in torchvision's order; rotations and shifts read the
    nearest pixel. Both compute positions and colours in floating point, where another CPU or library version may
    round one operation the other way: a colour one grey level off, or a position that falls within a rounding
    error of the boundary between two pixels taking the other one. Hence at most one value in 10,000 may differ
    for those presets (on this machine none does, over many seeds). Random noise, plus black and white images for
    the clipping."""
    gen = torch.Generator().manual_seed(11)
    images = torch.randint(0, 256, (96, channels, size, size), dtype=torch.uint8, generator=gen)
    images[0], images[1] = 0, 255
    images[2:32] = sample_image(channels, size)
    augment = BatchAugment(preset)
    draws = augment.draw(len(images), size, size, gen)
    expected = reference(images, draws, augment.preset)
    got = augment.apply(images, draws)
    assert got.dtype == torch.uint8 and got.shape == images.shape
    p = augment.preset
    allowed = got.numel() // 10_000 if p.jitter or p.degrees or p.translate else 0
    differing = int((got != expected).sum())
    assert differing <= allowed, f"{differing} of {got.numel()} values differ from torchvision's ({allowed} allowed)"


# ---- The draws follow the per-image distributions ------------------------------------------------------------------
def test_crop_corners_are_uniform_and_flips_happen_half_the_time_per_image_like_torchvision():
    """Decoded from coordinate images, torchvision's per-image preset and the batched one: every crop corner from
    0 to 8 equally likely on both axes (chi-square, 8 degrees of freedom), flips at rate 0.5 (binomial, 5 sigma)."""
    n = 4000
    image = coordinate_image()
    batched = BatchAugment("standard")(image.expand(n, 3, 32, 32).contiguous(), torch.Generator().manual_seed(1))
    for name, batch in (("per-image", per_image("standard", image, n, seed=1)), ("batched", batched)):
        top, left, flip = decode_crop(batch)
        for corner in (top, left):
            assert corner.min() == 0 and corner.max() == 8, name
            assert chi_square(torch.bincount(corner, minlength=9).float(), torch.full((9,), 1 / 9)) < CHI2_CRITICAL[8]
        assert abs(int(flip.sum()) - n / 2) < binomial_bound(n, 0.5), name


def test_factors_angles_orders_and_shifts_are_drawn_from_the_presets_ranges():
    n = 6000
    gen = torch.Generator().manual_seed(2)
    strong = BatchAugment("strong").draw(n, 32, 32, gen)
    for values, low, high in [(strong.factors.flatten(), 0.6, 1.4), (strong.angle, -15.0, 15.0)]:
        width = high - low
        assert values.min() >= low and values.max() <= high
        # the extremes are reached: P(min > low + 20 * width / n) = (1 - 20 / n)^n < e^-20
        assert values.min() < low + 20 * width / n and values.max() > high - 20 * width / n
        uniform = torch.linspace(low, high, 10_000)
        assert ks_statistic(values, uniform) < KS_C * math.sqrt(1 / len(values) + 1 / len(uniform))
    flip_jitter = BatchAugment("flip_jitter").draw(n, 32, 32, gen).factors
    assert flip_jitter.min() >= 0.8 and flip_jitter.max() <= 1.2 and flip_jitter.min() < 0.8 + 20 * 0.4 / n
    # the six orders of brightness, contrast and saturation equally likely (chi-square, 5 degrees of freedom)
    codes = strong.order[:, 0] * 9 + strong.order[:, 1] * 3 + strong.order[:, 2]
    counts = torch.bincount(codes, minlength=27)[[5, 7, 11, 15, 19, 21]].float()  # the codes of permutations
    assert counts.sum() == n and chi_square(counts, torch.full((6,), 1 / 6)) < CHI2_CRITICAL[5]
    # digits: shifts round(uniform(-2.8, 2.8)) pixels on a 28-pixel side, as RandomAffine(translate=0.1) draws them
    shifts = BatchAugment("digits").draw(n, 28, 28, gen).shift.long().flatten() + 3
    edge = (2.8 - 2.5) / 5.6
    expected = torch.tensor([edge] + [1 / 5.6] * 5 + [edge])
    assert chi_square(torch.bincount(shifts, minlength=7).float(), expected) < CHI2_CRITICAL[6]


@pytest.mark.parametrize(
    ("preset", "channels", "size", "n"),
    [("strong", 3, 32, 1000), ("flip_jitter", 3, 32, 1000), ("digits", 1, 28, 1000), ("augmix", 3, 32, 300)],
)
def test_what_comes_out_is_distributed_as_the_per_image_pipelines_output(preset, channels, size, n):
    """Two-sample Kolmogorov-Smirnov on per-image brightness, colourfulness and centroid: batched against
    torchvision's per-image preset on the same image, at the p = 1e-6 critical value."""
    image = sample_image(channels, size)
    expected = summaries(per_image(preset, image, n, seed=3))
    batch = image.expand(n, *image.shape).contiguous()
    got = summaries(BatchAugment(preset)(batch, torch.Generator().manual_seed(3)))
    for key in expected:
        assert ks_statistic(got[key], expected[key]) < KS_C * math.sqrt(2 / n), key
    # and a real difference is seen: the same check tells strong from standard on brightness and colour
    if preset == "strong":
        standard = summaries(BatchAugment("standard")(batch, torch.Generator().manual_seed(3)))
        assert ks_statistic(standard["colourfulness"], expected["colourfulness"]) > KS_C * math.sqrt(2 / n)


# ---- One draw per image, not per batch -----------------------------------------------------------------------------
def one_draw_for_the_batch(draws: Draws) -> Draws:
    """The mistake these tests must catch: the first image's draw used for the whole batch."""
    first = {k: v[:1].expand_as(v) if isinstance(v, torch.Tensor) else v for k, v in vars(draws).items()}
    return Draws(**first)


def check_crops_vary_within_a_batch(batch: torch.Tensor) -> None:
    """Within one batch, as many images share image 0's crop corner as 81 equally likely corners allow."""
    top, left, _ = decode_crop(batch)
    same = int(((top[1:] == top[0]) & (left[1:] == left[0])).sum())
    n = len(batch) - 1
    assert same < n / 81 + binomial_bound(n, 1 / 81), f"{same} of {n} images share the first image's crop"


def check_crops_uniform_over_an_epoch(batches: list[torch.Tensor]) -> None:
    top, left, _ = decode_crop(torch.cat(batches))
    counts = torch.bincount(top * 9 + left, minlength=81).float()
    chi2 = chi_square(counts, torch.full((81,), 1 / 81))
    assert chi2 < 155.08, f"crop corners over the epoch: chi-square {chi2:.0f} with 80 degrees of freedom"


def test_every_image_of_a_batch_draws_its_own_crop_and_the_checks_catch_one_crop_per_batch():
    augment = BatchAugment("standard")
    gen = torch.Generator().manual_seed(4)
    images = coordinate_image().expand(256, 3, 32, 32).contiguous()
    batches = [augment(images, gen) for _ in range(16)]
    check_crops_vary_within_a_batch(batches[0])
    check_crops_uniform_over_an_epoch(batches)
    shared = [augment.apply(images, one_draw_for_the_batch(augment.draw(256, 32, 32, gen))) for _ in range(16)]
    with pytest.raises(AssertionError, match="share the first image's crop"):
        check_crops_vary_within_a_batch(shared[0])
    with pytest.raises(AssertionError, match="crop corners over the epoch"):
        check_crops_uniform_over_an_epoch(shared)


def test_colour_factors_and_angles_differ_within_a_batch():
    draws = BatchAugment("strong").draw(512, 32, 32, torch.Generator().manual_seed(5))
    for values in (draws.factors[:, 0], draws.factors[:, 1], draws.factors[:, 2], draws.angle):
        assert len(values.unique()) == 512
    assert len(draws.order.unique(dim=0)) == 6


@pytest.mark.parametrize("size", [1, 2])
def test_a_last_batch_of_one_or_two_images_is_augmented_too(size):
    """Most of the six colour orders then have no image: each preset still hands back the batch it was given."""
    images = sample_image(3, 32).expand(size, 3, 32, 32).contiguous()
    for preset in data.AUGMENTATIONS:
        out = BatchAugment(preset)(images, torch.Generator().manual_seed(9))
        assert out.shape == images.shape and out.dtype == torch.uint8, preset
    assert not torch.equal(BatchAugment("strong")(images, torch.Generator().manual_seed(9)), images)


# ---- Seeds --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", data.AUGMENTATIONS)
def test_the_same_seed_gives_the_same_batch_and_another_seed_another(preset):
    images = sample_image(3, 32).expand(32, 3, 32, 32).contiguous()
    augment = BatchAugment(preset)
    global_state = torch.get_rng_state()
    first = augment(images, torch.Generator().manual_seed(6))
    again = augment(images, torch.Generator().manual_seed(6))
    assert torch.equal(first, again)
    assert torch.equal(torch.get_rng_state(), global_state)  # AugMix's draws leave torch's global generator be
    if preset != "none":
        assert not torch.equal(first, augment(images, torch.Generator().manual_seed(7)))


# ---- The loader -----------------------------------------------------------------------------------------------------
def small_set(n: int = 100):
    gen = torch.Generator().manual_seed(8)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen).numpy(), np.arange(n)


def test_the_device_loader_without_augmentation_gives_the_data_loaders_values_each_image_once_a_epoch():
    images, labels = small_set()
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    loader = DeviceLoader(images, labels, mean, std, None, batch_size=32, device="cpu", seed=0)
    reference_set = data.ImageArrayDataset(images, labels, mean, std)
    assert len(loader) == 4 and loader_generators(loader) == [loader.generator]
    for _ in range(2):
        batches = list(loader)
        assert [len(y) for _, y in batches] == [32, 32, 32, 4]
        seen = torch.cat([y for _, y in batches])
        assert sorted(seen.tolist()) == list(range(100)) and not torch.equal(seen, torch.arange(100))
        x = torch.cat([x for x, _ in batches])
        expected = torch.stack([image for image, _ in reference_set.__getitems__(seen.tolist())])
        assert x.dtype == torch.float32 and torch.equal(x, expected)


def test_the_device_loader_is_repeatable_from_its_seed_and_augments_every_batch():
    images, labels = small_set()

    def make(seed):
        augment = BatchAugment("strong")
        return DeviceLoader(images, labels, (0.5,) * 3, (0.25,) * 3, augment, batch_size=40, device="cpu", seed=seed)

    a, b, c = make(1), make(1), make(2)
    from_tensors = DeviceLoader(torch.from_numpy(images), torch.from_numpy(labels), (0.5,) * 3, (0.25,) * 3,
                                BatchAugment("strong"), batch_size=40, device="cpu", seed=1)  # fmt: skip
    assert all(torch.equal(xa, xt) for (xa, _), (xt, _) in zip(make(1), from_tensors))
    for _ in range(2):  # two epochs
        for (xa, ya), (xb, yb), (xc, _) in zip(a, b, c):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and not torch.equal(xa, xc)
    plain = torch.from_numpy(images).float().div(255).sub(0.5).div(0.25)
    x, y = next(iter(make(3)))
    assert not torch.equal(x, plain[y])


def test_the_device_loader_refuses_what_it_cannot_use():
    images, labels = small_set(10)
    with pytest.raises(ValueError, match=r"uint8 images of shape \(N, C, H, W\), not torch.float32"):
        DeviceLoader(images.astype(np.float32), labels, (0.5,) * 3, (0.5,) * 3, None, batch_size=4, device="cpu")
    with pytest.raises(ValueError, match="batch_size=0 is not possible"):
        DeviceLoader(images, labels, (0.5,) * 3, (0.5,) * 3, None, batch_size=0, device="cpu")
    assert fits_on_device(10**12, torch.device("cpu"))


def test_make_loaders_offers_the_batched_pipeline_on_a_device_and_keeps_the_per_image_one_by_default(monkeypatch):
    """Wiring only (a small stand-in split): the train loader, its preset, the digit rule, the default."""
    images, labels = small_set(60)
    info = data.DatasetInfo("cifar10", "cifar10", "CIFAR-10", "test", False, 10, tuple("abcdefghij"), (3, 32, 32),
                            (0.5,) * 3, (0.25,) * 3)  # fmt: skip
    splits = data.ArraySplits(images[:40], labels[:40] % 10, images[40:50], labels[40:50] % 10, images[50:],
                              labels[50:] % 10, info)  # fmt: skip
    monkeypatch.setattr(data, "load_arrays", lambda *args, **kwargs: splits)
    loaders = data.make_loaders("cifar10", profile="quick", batch_size=16, augment="strong", augment_on="device",
                                device="cpu")  # fmt: skip
    assert isinstance(loaders.train, DeviceLoader) and loaders.train.augment.preset == PRESETS["strong"]
    x, y = next(iter(loaders.train))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert not isinstance(loaders.val, DeviceLoader)
    digits = data.make_loaders("mnist", profile="quick", augment="standard", augment_on="device", device="cpu")
    assert digits.train.augment.preset.flip is False  # a mirrored digit is another symbol
    assert data.make_loaders("mnist", profile="quick", augment="none", augment_on="device").train.augment is None
    assert not isinstance(data.make_loaders("cifar10", profile="quick", augment="strong").train, DeviceLoader)
    with pytest.raises(ValueError, match="augment_on='gpu' is not possible: use 'loader' or 'device'"):
        data.make_loaders("cifar10", profile="quick", augment_on="gpu")
