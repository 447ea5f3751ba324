"""The published CIFAR-10-C / CIFAR-100-C files (labutils.corruptions.published) on tiny fake folders.

Every folder is built under tmp_path with LABS_DATA pointed there: a good release is read row for row, and each
kind of damage (cut short, empty, pickled objects, labels of the wrong shape, length or range) stops the loader
with one sentence that names the file and says to place the published one there again.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from labutils import corruptions as C
from labutils.datasets import DatasetUnavailableError

N = 4  # images per severity in the fake releases


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A fake CIFAR-10-C release with fog.npy (5N images) and labels.npy (5N labels, 3..6 repeated)."""
    monkeypatch.setenv("LABS_DATA", str(tmp_path))
    path = tmp_path / "CIFAR-10-C"
    path.mkdir()
    np.save(path / "fog.npy", IMAGES)
    np.save(path / "labels.npy", LABELS)
    return path


IMAGES = np.random.default_rng(0).integers(0, 256, (5 * N, 32, 32, 3), dtype=np.uint8)
LABELS = np.tile(np.arange(N, dtype=np.uint8) + 3, 5)  # uint8, as the release stores them


def one_sentence(message: str) -> bool:
    """One sentence: a single final full stop, no line break (full stops inside paths and numbers are fine)."""
    return message.endswith(".") and "\n" not in message and ". " not in message.replace("e.g. ", "")


# -- a good release ----------------------------------------------------------------------------------------
def test_a_good_release_is_read_row_for_row(folder):
    assert C.corruption_benchmark_available("cifar10", "fog")
    assert not C.corruption_benchmark_available("cifar10")  # the other 14 are missing
    for severity in (1, 3, 5):
        x, y = C.load_corruption_benchmark("cifar10", "fog", severity)
        assert x.shape == (N, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
        rows = IMAGES[(severity - 1) * N : severity * N]
        np.testing.assert_array_equal(x, rows.transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(y, np.arange(N) + 3)
    y[0] = 9  # the labels returned are a copy, writable, not the memory-mapped file
    assert np.load(folder / "labels.npy")[0] == 3


def test_one_copy_of_the_labels_is_accepted(folder):
    np.save(folder / "labels.npy", LABELS[:N].astype(np.int64))
    x, y = C.load_corruption_benchmark("cifar10", "fog", 5)
    np.testing.assert_array_equal(y, np.arange(N) + 3)
    np.testing.assert_array_equal(x, IMAGES[4 * N :].transpose(0, 3, 1, 2))


def test_the_location_follows_labs_data_and_the_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_DATA", str(tmp_path))
    assert C.corruption_benchmark_dir("cifar10") == tmp_path / "CIFAR-10-C"
    assert C.corruption_benchmark_dir("cifar100") == tmp_path / "CIFAR-100-C"
    with pytest.raises(ValueError, match="No published corruption benchmark for 'mnist'"):
        C.corruption_benchmark_dir("mnist")


# -- missing files and bad arguments -----------------------------------------------------------------------
def test_missing_files_say_what_to_place_where(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_DATA", str(tmp_path))
    assert not C.corruption_benchmark_available("cifar10")
    with pytest.raises(DatasetUnavailableError, match=r"CIFAR-10-C is not in .*CIFAR-10-C: place fog.npy and labels"):
        C.load_corruption_benchmark("cifar10", "fog", 1)


def test_bad_arguments(folder):
    with pytest.raises(DatasetUnavailableError, match=r"CIFAR-10-C is not in .* place snow.npy from"):
        C.load_corruption_benchmark("cifar10", "snow", 1)
    with pytest.raises(ValueError, match="severity=6"):
        C.load_corruption_benchmark("cifar10", "fog", 6)
    with pytest.raises(ValueError, match="Unknown corruption 'fgo'"):
        C.load_corruption_benchmark("cifar10", "fgo", 1)
    with pytest.raises(ValueError, match="No published corruption benchmark for 'mnist'"):
        C.load_corruption_benchmark("mnist", "fog", 1)


# -- damaged files -------------------------------------------------------------------------------------------
def cut_short(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_empty(path):
    path.write_bytes(b"")


def write_objects(path):
    np.save(path, np.array([{"label": 1}, None], dtype=object), allow_pickle=True)


def write_pickle(path):
    path.write_bytes(pickle.dumps(list(range(5 * N))))


DAMAGE = {
    "cut short": (cut_short, "is cut short"),
    "empty": (write_empty, "is empty"),
    "object array": (write_objects, "holds pickled Python objects"),
    "pickle": (write_pickle, "holds pickled Python objects"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
@pytest.mark.parametrize("file", ["fog.npy", "labels.npy"])
def test_a_damaged_file_gives_one_sentence_naming_it(folder, damage, file):
    write, why = DAMAGE[damage]
    write(folder / file)
    with pytest.raises(C.BenchmarkFileError) as err:
        C.load_corruption_benchmark("cifar10", "fog", 2)
    message = str(err.value)
    assert message.startswith(f"{folder / file} {why}"), message
    assert f"place {file} from the published CIFAR-10-C archive (https://zenodo.org/record/2535967) there again" in (
        message
    )
    assert one_sentence(message), message
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (LABELS[:, None], r"holds uint8 \(20, 1\), not integer labels \(20,\) or \(4,\) for the 20 images of fog.npy"),
        (LABELS[:7], r"holds uint8 \(7,\), not integer labels \(20,\) or \(4,\)"),
        (LABELS.astype(np.float32), r"holds float32 \(20,\), not integer labels"),
        (np.where(np.arange(5 * N) == 13, 12, LABELS), r"holds label 12 at row 13, outside the 10 classes \(0-9\)"),
        (LABELS.astype(np.int64) - 4, r"holds label -1 at row 0, outside the 10 classes \(0-9\) of CIFAR-10-C"),
    ],
    ids=["(5N, 1)", "wrong length", "float", "label 12", "negative"],
)
def test_labels_of_the_wrong_shape_or_range_are_refused(folder, labels, expected):
    np.save(folder / "labels.npy", labels)
    with pytest.raises(C.BenchmarkFileError, match=expected) as err:
        C.load_corruption_benchmark("cifar10", "fog", 1)
    assert str(err.value).startswith(str(folder / "labels.npy")) and one_sentence(str(err.value))


def test_labels_up_to_the_last_class_are_accepted_on_cifar100(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_DATA", str(tmp_path))
    path = tmp_path / "CIFAR-100-C"
    path.mkdir()
    np.save(path / "fog.npy", IMAGES)
    np.save(path / "labels.npy", np.full(5 * N, 99, np.uint8))
    assert C.load_corruption_benchmark("cifar100", "fog", 1)[1].tolist() == [99] * N
    np.save(path / "labels.npy", np.full(5 * N, 100, np.uint8))
    with pytest.raises(C.BenchmarkFileError, match=r"label 100 at row 0, outside the 100 classes \(0-99\)"):
        C.load_corruption_benchmark("cifar100", "fog", 1)


@pytest.mark.parametrize(
    "images",
    [IMAGES[:7], IMAGES.astype(np.float32), IMAGES.transpose(0, 3, 1, 2), IMAGES[:0], IMAGES[..., 0]],
    ids=["7 rows", "float32", "(5N, 3, 32, 32)", "no rows", "no channels"],
)
def test_images_of_the_wrong_shape_or_type_are_refused(folder, images):
    np.save(folder / "fog.npy", images)
    with pytest.raises(C.BenchmarkFileError, match=r"not uint8 \(5N, 32, 32, 3\) \(five severities of N images\)"):
        C.load_corruption_benchmark("cifar10", "fog", 1)


def test_a_damaged_file_stops_the_evaluation_instead_of_a_silent_fallback(folder):
    import torch

    from labutils.datasets import DatasetInfo

    write_empty(folder / "fog.npy")
    info = DatasetInfo(
        "cifar10", "cifar10", "CIFAR-10", "test", False, 10, tuple("abcdefghij"), (3, 32, 32), (0.5,) * 3, (0.25,) * 3
    )
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    images, labels = IMAGES[:N].transpose(0, 3, 1, 2).copy(), np.arange(N)
    with pytest.raises(C.BenchmarkFileError, match="fog.npy is empty"):
        C.evaluate_under_corruption(model, images, labels, info, ["fog"], [1], progress=False, device="cpu")
