"""labutils.corruptions on small synthetic batches (3x32x32 colour, 1x28x28 greyscale): determinism per seed,
shape/dtype/range, damage growing with severity, published parameters, independent references (colorsys,
PIL, scipy, and the published generators' formulas re-computed with scipy on the same random numbers), errors,
the whole-test-set helpers and mCE by hand. The published .npy loader: test_corruptions_published.py."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from labutils import corruptions as C
from labutils import synthetic
from labutils.corruptions import cifar_c, core, mnist_c, ops

torch.set_num_threads(1)

COLOUR = C.to_float(synthetic.make_images(6, 10, 32, 3, seed=0)[0])
GREY = C.to_float(synthetic.make_images(6, 10, 28, 1, seed=0)[0])
# No random draw at all: every seed gives the same image.
DETERMINISTIC = {
    "defocus_blur",
    "zoom_blur",
    "brightness",
    "contrast",
    "pixelate",
    "jpeg_compression",
    "gaussian_blur",
    "saturate",
    "scale",
    "stripe",
    "canny_edges",
}
# Published ladders that are not ordered by mean pixel change (checked below to be what the tables say):
NOT_MONOTONE = {
    # blur sigma goes 0.05, 0.25, 0.4, 0.25, 0.4: more blur smooths the shuffled pixels back towards the original
    "glass_blur",
    # image weight falls 1 -> 0.75 while frost weight rises: on bright images the two changes cancel
    "frost",
    # affine jitter falls (2.6 -> 1.0 px) while the elastic field grows: severity trades one for the other
    "elastic_transform",
    # levels 1-3 are water over the whole image, levels 4-5 sparse mud
    "spatter",
    # saturation x0.3, x0.1 (strong desaturation) then x1.5, x2, x2.5: level 3 is the mildest
    "saturate",
}
NOT_MONOTONE_MNIST = {"spatter", "fog"}  # MNIST-C's spatter blobs and fog rescaling are not ordered either


def damage(x: torch.Tensor, name: str, seed: int = 0, benchmark=None) -> np.ndarray:
    """Mean absolute pixel change at severities 1..5."""
    return np.array([float((C.corrupt(x, name, s, seed, benchmark=benchmark) - x).abs().mean()) for s in C.SEVERITIES])


# -- names ---------------------------------------------------------------------------------------------
def test_name_sets():
    assert len(C.CORRUPTIONS) == 15 and len(C.MNIST_C) == 15 and len(C.EXTRAS) == 4
    assert set(C.FAMILIES) == set(C.ALL_CORRUPTIONS)
    assert [C.FAMILIES[n] for n in C.CORRUPTIONS] == ["noise"] * 3 + ["blur"] * 4 + ["weather"] * 3 + ["digital"] * 5
    assert C.corruption_names("mnist") == C.MNIST_C
    assert C.corruption_names("cifar100") == C.CORRUPTIONS
    assert C.corruption_names("cifar10", extras=True) == C.CORRUPTIONS + C.EXTRAS
    assert set(C.MNIST_C_SEVERITY) == set(C.MNIST_C)
    assert C.APPROXIMATIONS <= set(C.ALL_CORRUPTIONS)
    for name in C.ALL_CORRUPTIONS:
        doc = core.FUNCTIONS[name].__doc__
        assert ("APPROXIMATION" in doc) == C.is_approximation(name), name


def test_published_parameters():
    table = {
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
        "jpeg_compression": (80, 65, 58, 50, 40),
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
        "shot_noise": (500, 250, 100, 75, 50),
        "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    }
    for name, values in table.items():
        assert tuple(C.parameters(name, s) for s in C.SEVERITIES) == values, name
    assert C.parameters("shot_noise", 5, benchmark="mnist") == 3
    assert C.parameters("rotate", 2) == 0.4  # MNIST-C's own table by default
    assert [len(C.parameters("zoom_blur", s)) for s in C.SEVERITIES] == [7, 12, 16, 21, 26]  # np.arange as published
    assert C.parameters("zoom_blur", 1)[0] == 1.0


# -- every corruption --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", C.ALL_CORRUPTIONS)
def test_deterministic_per_seed(name):
    a = C.corrupt(COLOUR, name, 3, seed=7)
    b = C.corrupt(COLOUR, name, 3, seed=7)
    assert torch.equal(a, b)
    other = C.corrupt(COLOUR, name, 3, seed=8)
    if name in DETERMINISTIC:
        assert torch.equal(a, other)
    else:
        assert (a - other).abs().max() > 1e-3
    # no hidden dependence on the global generators
    torch.manual_seed(123)
    np.random.seed(123)
    assert torch.equal(C.corrupt(COLOUR, name, 3, seed=7), a)


@pytest.mark.parametrize("name", C.ALL_CORRUPTIONS)
@pytest.mark.parametrize("images", [COLOUR, GREY.double()], ids=["rgb32-float32", "grey28-float64"])
def test_shape_dtype_range_kept(name, images):
    for s in (1, 5):
        out = C.corrupt(images, name, s, seed=1)
        assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert torch.isfinite(out).all()
    assert torch.equal(images, images.clone())  # the input is not modified in place
    assert C.corrupt(images[:0], name, 2).shape == images[:0].shape


@pytest.mark.parametrize("name", C.ALL_CORRUPTIONS)
def test_damage_grows_with_severity(name):
    for images in (COLOUR, GREY):
        d = damage(images, name)
        assert d.min() > 0.0 or (name == "saturate" and images.shape[1] == 1), (name, d)
        if name in NOT_MONOTONE:
            assert d[4] > 1e-3, (name, d)
            continue
        # non-strict step by step (some published steps barely differ: motion blur (6, 2) -> (8, 2), glass
        # blur sigma 0.05 -> 0.25, rotation of a round shape), strict from severity 1 to 5
        assert np.all(d[1:] >= 0.97 * d[:-1]), (name, images.shape[1], np.round(d, 4))
        assert d[4] > 1.2 * d[0], (name, images.shape[1], np.round(d, 4))


@pytest.mark.parametrize("name", [n for n in C.MNIST_C if n in cifar_c.PARAMETERS])
def test_mnist_c_table_on_digits(name):
    d = damage(GREY, name, benchmark="mnist")
    assert d.min() > 0
    if name not in NOT_MONOTONE_MNIST:
        assert np.all(d[1:] >= 0.97 * d[:-1]) and d[4] > 1.2 * d[0], (name, np.round(d, 4))
    # MNIST-C's noise is far stronger than CIFAR-C's at the same level
    if name in ("shot_noise", "impulse_noise"):
        assert d[4] > 2 * damage(GREY, name)[4]


def test_severities_share_their_random_draws():
    # the same seed gives the same noise field at every severity: noise scales with sigma
    x = torch.full((2, 3, 8, 8), 0.5)
    n1 = C.corrupt(x, "gaussian_noise", 1, seed=3) - x
    n5 = C.corrupt(x, "gaussian_noise", 5, seed=3) - x
    mask = (n5.abs() < 0.45) & (n1.abs() < 0.45)  # away from clipping
    torch.testing.assert_close(n5[mask], n1[mask] * (0.10 / 0.04), atol=1e-5, rtol=1e-5)
    # impulse noise: the pixels hit at severity 1 are hit at severity 5 too
    hit1 = C.corrupt(x, "impulse_noise", 1, seed=3) != x
    hit5 = C.corrupt(x, "impulse_noise", 5, seed=3) != x
    assert bool((hit5 | ~hit1).all())


# -- against independent references --------------------------------------------------------------------
def test_noise_statistics():
    x = torch.full((4, 3, 32, 32), 0.5)
    hit = (C.corrupt(x, "impulse_noise", 5) != x).float().mean()
    assert abs(float(hit) - 0.07) < 0.01  # 12,288 values: binomial std 0.0023
    shot = C.corrupt(x, "shot_noise", 5)  # Poisson(25) / 50: mean 0.5, std 0.1
    assert abs(float(shot.mean()) - 0.5) < 0.01 and abs(float(shot.std()) - 0.1) < 0.01
    noise = C.corrupt(x, "gaussian_noise", 5) - x
    assert abs(float(noise.std()) - 0.10) < 0.005


def test_brightness_and_saturate_match_colorsys():
    x = COLOUR[:1, :, :4, :4]
    for name, s in (("brightness", 4), ("saturate", 2), ("saturate", 5)):
        out = C.corrupt(x, name, s)
        p = C.parameters(name, s)
        for i in range(4):
            for j in range(4):
                h, sat, v = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
                if name == "brightness":
                    v = min(max(v + p, 0), 1)
                else:
                    sat = min(max(sat * p[0] + p[1], 0), 1)
                ref = colorsys.hsv_to_rgb(h, sat, v)
                np.testing.assert_allclose(out[0, :, i, j].numpy(), ref, atol=1e-5, err_msg=f"{name} {s}")


def test_contrast_keeps_channel_means():
    x = 0.25 + 0.5 * COLOUR  # stays inside [0, 1] after contrast changes: no clipping
    out = C.corrupt(x, "contrast", 5)
    torch.testing.assert_close(out.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1e-6, rtol=0)
    torch.testing.assert_close(out - out.mean(dim=(2, 3), keepdim=True), 0.15 * (x - x.mean(dim=(2, 3), keepdim=True)))


def test_pixelate_matches_pil_box_resize():
    from PIL import Image

    u8 = C.to_uint8(COLOUR[:2])
    for s in (1, 5):
        ours = C.to_uint8(C.corrupt(C.to_float(u8), "pixelate", s)).astype(int)
        k = int(32 * C.parameters("pixelate", s))
        for i in range(2):
            im = Image.fromarray(u8[i].transpose(1, 2, 0))
            ref = np.asarray(im.resize((k, k), Image.BOX).resize((32, 32), Image.BOX)).transpose(2, 0, 1)
            assert np.abs(ours[i] - ref.astype(int)).max() <= 1  # PIL rounds to uint8 after each resize


def test_blurs_match_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = COLOUR[:2]
    ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 0.8, 0.8), mode="nearest")
    np.testing.assert_allclose(C.corrupt(x, "gaussian_blur", 4).numpy(), np.clip(ref, 0, 1), atol=1e-5)
    ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 2.5, 2.5), mode="reflect", truncate=3.0)
    np.testing.assert_allclose(ops.gaussian_filter(x, 2.5, "reflect", 3.0).numpy(), ref, atol=1e-5)
    # the centre zoom of zoom blur: crop, scipy zoom (order 1), trim
    img = x[0].numpy()
    for z in (1.05, 1.25):
        ch = int(np.ceil(32 / z))
        top = (32 - ch) // 2
        big = ndimage.zoom(img[:, top : top + ch, top : top + ch], (1, z, z), order=1)
        t = (big.shape[1] - 32) // 2
        np.testing.assert_allclose(ops.clipped_zoom(x[:1], z)[0].numpy(), big[:, t : t + 32, t : t + 32], atol=1e-5)


def test_geometric_corruptions_move_pixels_as_stated():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10, 12] = 1.0
    out = C.corrupt(x, "translate", 3, seed=0)  # 3 pixels per axis, random signs
    r, c = np.unravel_index(int(out.argmax()), (28, 28))
    assert abs(r - 10) == 3 and abs(c - 12) == 3 and float(out.max()) == pytest.approx(1.0)
    stripe = C.corrupt(GREY, "stripe", 5)
    torch.testing.assert_close(stripe[..., :7], 1 - GREY[..., :7])
    torch.testing.assert_close(stripe[..., 7:21], GREY[..., 7:21])
    # scale 1/0.5 halves the digit about the centre: the pixel at the centre stays, mass shrinks ~4x
    blob = torch.zeros(1, 1, 28, 28)
    blob[..., 4:24, 4:24] = 1.0
    small = C.corrupt(blob, "scale", 5)
    assert float(small.sum()) == pytest.approx(float(blob.sum()) / 4, rel=0.1)


# -- against the published generators (their formulas in scipy, the same random numbers) ---------------------
def test_remap_border_modes_match_scipy_map_coordinates():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = COLOUR[:1, :1, :8, :8]
    rng = np.random.default_rng(0)
    rows = torch.from_numpy(rng.uniform(-3, 10, (1, 8, 8))).float()
    cols = torch.from_numpy(rng.uniform(-3, 10, (1, 8, 8))).float()
    for mode in ("nearest", "mirror", "reflect"):
        ref = ndimage.map_coordinates(x[0, 0].double().numpy(), [rows[0].numpy(), cols[0].numpy()], order=1, mode=mode)
        np.testing.assert_allclose(ops.remap(x, rows, cols, mode)[0, 0].numpy(), ref, atol=1e-5, err_msg=mode)


def reference_elastic(x: np.ndarray, param, jitter_draws, noise) -> np.ndarray:
    """CIFAR-C's elastic transform with scipy, image by image: an affine warp through three reference points
    (OpenCV's warpAffine, bilinear, REFLECT_101 border = scipy's 'mirror'), then displacements dx, dy
    (uniform noise blurred with sigma, reflect borders, truncate 3, times alpha) sampled with
    map_coordinates(order=1, mode='reflect'), clipped to [0, 1]. x (N, C, H, W) float64."""
    from scipy import ndimage

    n, c, h, w = x.shape
    alpha, sigma, jitter = (p * h for p in param)
    centre, third = np.array([w // 2, h // 2], float), min(h, w) // 3
    pts1 = np.array([centre + third, [centre[0] + third, centre[1] - third], centre - third])  # (x, y) points
    out = np.empty_like(x)
    for i in range(n):
        m = np.linalg.solve(np.c_[pts1, np.ones(3)], pts1 + jitter_draws[i]).T  # dst = m @ (x, y, 1)
        inv = np.linalg.inv(m[:, :2])  # warpAffine samples the source at m^-1 (dst - b); scipy wants (row, col)
        swap = np.array([[0, 1], [1, 0]])
        warped = [
            ndimage.affine_transform(ch, swap @ inv @ swap, offset=-(swap @ inv @ m[:, 2]), order=1, mode="mirror")
            for ch in x[i]
        ]
        dx, dy = (ndimage.gaussian_filter(noise[i, k], sigma, mode="reflect", truncate=3) * alpha for k in (0, 1))
        rr, cc = np.mgrid[0:h, 0:w]
        out[i] = [ndimage.map_coordinates(ch, [rr + dy, cc + dx], order=1, mode="reflect") for ch in warped]
    return np.clip(out, 0, 1)


@pytest.mark.parametrize("severity", [2, 3, 5])
def test_elastic_transform_matches_the_published_formula(severity):
    pytest.importorskip("scipy.ndimage")
    x = COLOUR[:3]
    param = cifar_c.PARAMETERS["elastic_transform"][severity - 1]
    out = cifar_c.elastic_transform(x, param, np.random.default_rng(7), "cifar").clamp(0, 1).numpy()
    rng = np.random.default_rng(7)  # the same draws, in the implementation's order: jitter, then noise
    jitter = rng.uniform(-param[2] * 32, param[2] * 32, (3, 3, 2))
    noise = rng.uniform(-1, 1, (3, 2, 32, 32))
    ref = reference_elastic(x.double().numpy(), param, jitter, noise)
    np.testing.assert_allclose(out, ref, atol=1e-4)  # float32 torch against float64 scipy
    # the edge repeated matters: sampling the displacement with the mirror border instead moves border pixels
    border = np.zeros((32, 32), bool)
    border[[0, -1]] = border[:, [0, -1]] = True
    assert np.abs(out - ref)[..., border].max() < 1e-4


def reference_mnist_glass_blur(x: np.ndarray, param, shifts, move) -> np.ndarray:
    """MNIST-C's glass blur with scipy on (N, 1, 28, 28) float64: a Gaussian blur along each column only
    (skimage's multichannel blur of a 2-D image takes the columns for channels), then from the bottom-right
    pixel to the top-left, for each pass: with probability 1/2 swap the pixel with the one (dy, dx) away,
    then the same vertical blur again, clipped to [0, 1]."""
    from scipy import ndimage

    sigma, delta, passes = param
    n, _, h, w = x.shape
    out = np.empty_like(x)
    for i in range(n):
        img = ndimage.gaussian_filter1d(x[i, 0], sigma, axis=0, mode="nearest", truncate=4.0)
        step = 0
        for _ in range(passes):
            for r in range(h - delta, delta, -1):
                for c in range(w - delta, delta, -1):
                    if move[step, i]:
                        dx, dy = shifts[step, :, i]
                        img[r, c], img[r + dy, c + dx] = img[r + dy, c + dx], img[r, c]
                    step += 1
        out[i, 0] = ndimage.gaussian_filter1d(img, sigma, axis=0, mode="nearest", truncate=4.0)
    return np.clip(out, 0, 1)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_mnist_c_glass_blur_matches_the_published_formula(severity):
    pytest.importorskip("scipy.ndimage")
    x = GREY[:2]
    param = mnist_c.PARAMETERS["glass_blur"][severity - 1]
    out = cifar_c.glass_blur(x, param, np.random.default_rng(3), "mnist").clamp(0, 1).numpy()
    sigma, delta, passes = param
    rng = np.random.default_rng(3)  # the same draws, in the implementation's order: shifts, then the coin
    steps = passes * len(range(28 - delta, delta, -1)) ** 2
    shifts = rng.integers(-delta, delta, size=(steps, 2, 2))
    move = rng.random((steps, 2)) < 0.5
    ref = reference_mnist_glass_blur(x.double().numpy(), param, shifts, move)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    # vertical only: a single bright pixel, without shuffling (sigma only), spreads along its column alone
    dot = torch.zeros(1, 1, 28, 28)
    dot[0, 0, 14, 14] = 1.0
    blurred = ops.gaussian_filter(dot, sigma, vertical_only=True)
    assert float(blurred[0, 0, :, 14].sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(blurred[0, 0, 14, 13]) == 0.0 and float(blurred[0, 0, 13, 14]) > 0.05


def test_corrupt_arrays_truncates_like_the_published_files():
    # contrast draws nothing: the published formula in float64, then np.uint8 of clip(x, 0, 1) * 255
    u8 = C.to_uint8(COLOUR)
    x = u8.astype(np.float64) / 255.0
    mean = x.mean(axis=(2, 3), keepdims=True)
    levels = np.clip((x - mean) * C.parameters("contrast", 3) + mean, 0, 1) * 255
    out = C.corrupt_arrays(u8, "contrast", 3)
    # float32 against float64: leave out values a hair off a whole level (not the clipped 0 and 255)
    clear = (np.abs(levels - np.rint(levels)) > 1e-3) | (levels == 0) | (levels == 255)
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(out[clear], np.uint8(levels[clear]))
    assert np.abs(out.astype(int) - np.uint8(levels).astype(int)).max() <= 1
    assert np.mean(out != np.rint(levels)) > 0.3  # rounding would differ in about half of the pixels
    # an untouched pixel keeps its level exactly: every level k / 255 comes back as k
    every_level = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    np.testing.assert_array_equal(C.to_uint8(C.to_float(every_level)), every_level)
    assert C.to_uint8(torch.tensor([[[[254.9 / 255]]]])).item() == 254


def test_spatter_is_an_approximation_only_with_the_cifar_table():
    assert C.is_approximation("spatter") and C.is_approximation("spatter", "cifar")
    assert not C.is_approximation("spatter", "mnist")
    assert C.is_approximation("canny_edges") and C.is_approximation("motion_blur", "mnist")
    assert not C.is_approximation("fog", "mnist") and not C.is_approximation("elastic_transform")


def test_mnist_c_spatter_matches_the_published_formula():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = GREY[:2]
    for severity in (1, 4):
        mean, std, sigma, threshold, mud_sigma = param = mnist_c.PARAMETERS["spatter"][severity - 1]
        out = cifar_c.spatter(x, param, np.random.default_rng(5), "mnist").clamp(0, 1).numpy()
        layer = np.random.default_rng(5).normal(mean, std, (2, 1, 28, 28))
        ref = np.empty_like(out)
        for i in range(2):
            liquid = ndimage.gaussian_filter(layer[i, 0], sigma, mode="nearest", truncate=4.0)
            liquid[liquid < threshold] = 0
            m = ndimage.gaussian_filter((liquid > threshold).astype(float), mud_sigma, mode="nearest", truncate=4.0)
            m[m < 0.8] = 0
            ref[i, 0] = np.clip(x[i, 0].double().numpy() * (1 - m) + 63 / 255 * m, 0, 1)
        np.testing.assert_allclose(out, ref, atol=1e-5)


# -- errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("severity", [0, 6, 2.5, True, "3"])
def test_bad_severity(severity):
    with pytest.raises(ValueError, match=r"severity=.* use an integer from 1 to 5"):
        C.corrupt(COLOUR, "fog", severity)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"Unknown corruption 'fgo'.*gaussian_noise"):
        C.corrupt(COLOUR, "fgo", 1)
    with pytest.raises(ValueError, match=r"corrupt before normalising"):
        C.corrupt((COLOUR - 0.5) / 0.25, "fog", 1)
    with pytest.raises(ValueError, match=r"float tensor .*to_float"):
        C.corrupt(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "fog", 1)
    with pytest.raises(ValueError, match=r"C = 1 or 3"):
        C.corrupt(torch.zeros(1, 2, 8, 8), "fog", 1)
    with pytest.raises(ValueError, match=r"'shear' has no CIFAR-C parameters"):
        C.corrupt(COLOUR, "shear", 1, benchmark="cifar")
    with pytest.raises(ValueError, match=r"Unknown benchmark 'imagenet'"):
        C.corrupt(COLOUR, "fog", 1, benchmark="imagenet")
    with pytest.raises(ValueError, match=r"seed=-1"):
        C.corrupt(COLOUR, "fog", 1, seed=-1)


# -- whole test sets -------------------------------------------------------------------------------------
def test_uint8_round_trip_and_corrupt_arrays():
    u8 = C.to_uint8(COLOUR)
    assert u8.dtype == np.uint8 and np.array_equal(C.to_uint8(C.to_float(u8)), u8)
    out = C.corrupt_arrays(u8, "gaussian_noise", 2, seed=4, batch_size=4)
    assert out.dtype == np.uint8 and out.shape == u8.shape
    first = C.to_uint8(C.corrupt(C.to_float(u8[:4]), "gaussian_noise", 2, seed=4))
    assert np.array_equal(out[:4], first)  # batch 0 draws what corrupt() draws
    assert not np.array_equal(out[4:], C.to_uint8(C.corrupt(C.to_float(u8[4:]), "gaussian_noise", 2, seed=4)))
    assert np.array_equal(out, C.corrupt_arrays(u8, "gaussian_noise", 2, seed=4, batch_size=4))


def test_corrupted_test_sets():
    u8, labels = C.to_uint8(GREY), np.arange(6)
    sets = list(C.corrupted_test_sets(u8, labels, ["fog", "stripe"], (1, 5), seed=2, progress=False))
    assert [(s.corruption, s.severity, s.family) for s in sets] == [
        ("fog", 1, "weather"),
        ("fog", 5, "weather"),
        ("stripe", 1, "overlay"),
        ("stripe", 5, "overlay"),
    ]
    assert all(s.images.shape == u8.shape and s.labels.dtype == np.int64 for s in sets)
    assert np.array_equal(sets[1].images, C.corrupt_arrays(u8, "fog", 5, seed=2))
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        next(C.corrupted_test_sets(u8, labels[:5], ["fog"], progress=False))


def test_corruption_grid_returns_what_it_draws():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, data = C.corruption_grid(GREY, ["fog", "zigzag"], severities=(1, 3))
    assert set(data) == {"fog", "zigzag"} and data["fog"].shape == (2, 1, 28, 28)
    np.testing.assert_array_equal(data["fog"][1], C.corrupt(GREY[:1], "fog", 3)[0].numpy())
    plt.close(fig)


# -- mCE ---------------------------------------------------------------------------------------------------
def test_mce_by_hand():
    errors = {"fog": [0.1, 0.2, 0.3], "snow": [0.4, 0.5]}
    base = {"fog": [0.2, 0.3, 0.5], "snow": [0.2, 0.3]}
    # CE_fog = 0.6 / 1.0, CE_snow = 0.9 / 0.5
    assert C.corruption_errors(errors, base) == pytest.approx({"fog": 0.6, "snow": 1.8}, abs=1e-12)
    assert C.mean_corruption_error(errors, base) == pytest.approx(1.2, abs=1e-12)
    # relative: (0.6 - 3 * 0.05) / (1.0 - 3 * 0.1) and (0.9 - 2 * 0.05) / (0.5 - 2 * 0.1)
    rel = (0.45 / 0.7 + 0.8 / 0.3) / 2
    assert C.relative_mce(errors, 0.05, base, 0.1) == pytest.approx(rel, abs=1e-12)
    assert C.mean_corruption_accuracy({"fog": [0.9, 0.8, 0.7], "snow": [0.6, 0.5]}) == pytest.approx(0.7, abs=1e-12)
    assert C.mean_corruption_error(base, base) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="baseline_errors has no entry for snow"):
        C.mean_corruption_error(errors, {"fog": base["fog"]})
    with pytest.raises(ValueError, match="3 severities in errors but 2"):
        C.mean_corruption_error(errors, {"fog": [0.1, 0.2], "snow": base["snow"]})
    with pytest.raises(ValueError, match="loses no accuracy on 'fog'"):
        C.relative_mce(errors, 0.05, base, 0.5)
