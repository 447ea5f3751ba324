"""corruptions.evaluate_under_corruption on a tiny model and tiny data: every accuracy equals one computed by
hand from corrupt_arrays, the summary's mCE equals mean_corruption_error, the heatmaps share one scale, the
published files are used when present, and a model with the wrong number of outputs gets one clear error."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from labutils import corruptions as C
from labutils import synthetic
from labutils.data import DatasetInfo

torch.set_num_threads(1)
GREY, GREY_Y = synthetic.make_images(8, 10, 28, 1, seed=1)
COLOUR, COLOUR_Y = synthetic.make_images(8, 10, 32, 3, seed=2)
MNIST_INFO = DatasetInfo(
    "mnist", "mnist", "MNIST", "test", False, 10, tuple("0123456789"), (1, 28, 28), (0.13,), (0.31,)
)
CIFAR_INFO = DatasetInfo(
    "cifar10", "cifar10", "CIFAR-10", "test", False, 10, tuple("abcdefghij"), (3, 32, 32), (0.5,) * 3, (0.25,) * 3
)


def linear(in_features: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_features, 10))


def by_hand(model, images, labels, info) -> float:
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    x = (torch.from_numpy(images).float() / 255 - mean) / std
    with torch.no_grad():
        return float((model(x).argmax(1).numpy() == labels).mean())


@pytest.fixture(scope="module")
def mnist_results():
    models = {"a": linear(784, 0), "b": linear(784, 1)}
    res = C.evaluate_under_corruption(
        models, GREY, GREY_Y, MNIST_INFO, ["rotate", "impulse_noise", "canny_edges"], [1, 4], seed=5, progress=False
    )
    return models, res


def test_every_accuracy_is_the_models_accuracy_on_that_corrupted_copy(mnist_results):
    models, res = mnist_results
    assert len(res.frame) == 2 * 3 * 2 and set(res.frame.model) == {"a", "b"}
    for row in res.frame.itertuples():
        # MNIST is corrupted with MNIST-C's table (benchmark_for("mnist")), normalised after corrupting
        x = C.corrupt_arrays(GREY, row.corruption, row.severity, 5, benchmark="mnist")
        assert row.accuracy == pytest.approx(by_hand(models[row.model], x, GREY_Y, MNIST_INFO), abs=1e-12)
        assert row.error == pytest.approx(1 - row.accuracy, abs=1e-12) and row.n == len(GREY)
        assert row.family == C.FAMILIES[row.corruption] and row.source == "generated"
        assert row.approximation == (row.corruption == "canny_edges")
    for name, model in models.items():
        assert res.clean[name] == pytest.approx(by_hand(model, GREY, GREY_Y, MNIST_INFO), abs=1e-12)


def test_spatter_is_starred_with_cifar_c_water_only():
    model = linear(784, 0)
    on_mnist = C.evaluate_under_corruption(model, GREY, GREY_Y, MNIST_INFO, ["spatter"], [1], progress=False)
    assert not on_mnist.frame.approximation.any() and list(on_mnist.table("model").index) == ["spatter"]
    on_cifar = C.evaluate_under_corruption(
        model, GREY, GREY_Y, MNIST_INFO, ["spatter"], [1], benchmark="cifar", progress=False
    )
    assert on_cifar.frame.approximation.all() and list(on_cifar.table("model").index) == ["spatter *"]


def test_tables_summary_and_heatmaps_read_the_same_numbers(mnist_results):
    _, res = mnist_results
    table = res.table("a")
    assert list(table.index) == ["rotate", "impulse_noise", "canny_edges *"]  # * marks the approximation
    assert list(table.columns) == ["severity 1", "severity 4", "mean"]
    acc = res.accuracies("a")
    np.testing.assert_allclose(table.iloc[:, :2].to_numpy(), np.array(list(acc.values())), atol=1e-12)
    summary = res.summary("a")
    assert summary.loc["a", "mCE"] == pytest.approx(1.0, abs=1e-12)
    expected = C.mean_corruption_error(res.errors("b"), res.errors("a"))
    assert summary.loc["b", "mCE"] == pytest.approx(expected, abs=1e-12)
    assert summary.loc["b", "mean_corruption_acc"] == pytest.approx(res.frame[res.frame.model == "b"].accuracy.mean())
    assert summary.loc["b", "clean_acc"] == res.clean["b"]
    fig, data = C.plot_corruption_heatmaps(res)
    assert len(fig.axes) == 3  # two panels and one shared colour bar
    assert [im.get_clim() for ax in fig.axes[:2] for im in ax.images] == [(data["vmin"], data["vmax"])] * 2
    assert (data["vmin"], data["vmax"]) == (0.0, 1.0)  # the whole accuracy range, comparable across figures
    np.testing.assert_allclose(data["b"], res.table("b").iloc[:, :2].to_numpy())


def test_a_model_with_the_wrong_number_of_classes_gets_one_clear_error():
    with pytest.raises(ValueError, match=r"Model 'wide' outputs \(7,\) scores per image but mnist has 10 classes"):
        C.evaluate_under_corruption(
            {"ok": linear(784, 0), "wide": torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 7))},
            GREY,
            GREY_Y,
            MNIST_INFO,
            ["rotate"],
            [1],
            progress=False,
        )
    with pytest.raises(ValueError, match="cannot take mnist images of shape"):
        C.evaluate_under_corruption(linear(3 * 32 * 32, 0), GREY, GREY_Y, MNIST_INFO, ["rotate"], [1], progress=False)


def test_bad_arguments_are_refused():
    model = linear(784, 0)
    with pytest.raises(ValueError, match="Unknown corruption 'smog'"):
        C.evaluate_under_corruption(model, GREY, GREY_Y, MNIST_INFO, ["smog"], [1], progress=False)
    with pytest.raises(ValueError, match="severity=6"):
        C.evaluate_under_corruption(model, GREY, GREY_Y, MNIST_INFO, ["rotate"], [6], progress=False)
    with pytest.raises(ValueError, match="images must be uint8"):
        C.evaluate_under_corruption(model, GREY / 255.0, GREY_Y, MNIST_INFO, ["rotate"], [1], progress=False)
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        C.evaluate_under_corruption(model, GREY, GREY_Y + 10, MNIST_INFO, ["rotate"], [1], progress=False)


def test_published_files_are_used_when_present_and_generated_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_DATA", str(tmp_path))
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    rng = np.random.default_rng(0)
    published = rng.integers(0, 256, (5 * 6, 32, 32, 3), dtype=np.uint8)  # 5 severities of 6 images
    labels = rng.integers(0, 10, 6)
    np.save(folder / "fog.npy", published)
    np.save(folder / "labels.npy", labels)
    model = linear(3 * 32 * 32, 0)
    res = C.evaluate_under_corruption(model, COLOUR, COLOUR_Y, CIFAR_INFO, ["fog", "contrast"], [2], progress=False)
    fog, contrast = (res.frame[res.frame.corruption == n].iloc[0] for n in ("fog", "contrast"))
    assert fog.source == "published cifar10" and fog.n == 6 and contrast.source == "generated" and contrast.n == 8
    x2 = np.ascontiguousarray(published[6:12].transpose(0, 3, 1, 2))
    assert fog.accuracy == pytest.approx(by_hand(model, x2, labels, CIFAR_INFO), abs=1e-12)
    forced = C.evaluate_under_corruption(
        model, COLOUR, COLOUR_Y, CIFAR_INFO, ["fog"], [2], published=False, progress=False
    )
    assert forced.frame.source.tolist() == ["generated"] and forced.frame.n.tolist() == [8]
    with pytest.raises(ValueError, match="contrast.npy is missing"):
        C.evaluate_under_corruption(
            model, COLOUR, COLOUR_Y, CIFAR_INFO, ["contrast"], [1], published=True, progress=False
        )
    synthetic_info = dataclasses.replace(CIFAR_INFO, name="cifar10-synthetic", synthetic=True)
    res = C.evaluate_under_corruption(model, COLOUR, COLOUR_Y, synthetic_info, ["fog"], [2], progress=False)
    assert res.frame.source.tolist() == ["generated"]  # a stand-in is never scored on the real files


def test_saved_models_loads_backbones_of_the_same_dataset_and_skips_others(tmp_path):
    from labutils.models import SimpleCNN
    from labutils.train import save_backbone

    torch.manual_seed(0)
    net = SimpleCNN(10, 1, 4)
    meta = {"model_kwargs": {"num_classes": 10, "in_channels": 1, "width": 4}, "dataset": MNIST_INFO.as_dict()}
    save_backbone(net, tmp_path / "mine.pt", meta)
    other = dict(meta, dataset=CIFAR_INFO.as_dict())
    save_backbone(SimpleCNN(10, 1, 4), tmp_path / "cifar.pt", other)
    found, skipped = C.saved_models([tmp_path / "mine.pt", tmp_path / "cifar.pt", tmp_path / "none.pt"], MNIST_INFO)
    assert list(found) == ["mine"] and set(skipped) == {"cifar", "none"}
    assert "trained on cifar10 (10 classes), not mnist" in skipped["cifar"] and "does not exist" in skipped["none"]
    x = torch.rand(2, 1, 28, 28)
    net.eval(), found["mine"].eval()
    torch.testing.assert_close(found["mine"](x), net(x))


# -- predict_uint8: the one path from uint8 images to predicted classes --------------------------------------------
def evaluate_predictions(model, images, labels, info) -> np.ndarray:
    """The readable reference: the training loop's evaluate() over ImageArrayDataset, which normalises the same way."""
    from torch.utils.data import DataLoader

    from labutils.data import ImageArrayDataset
    from labutils.train import evaluate

    loader = DataLoader(ImageArrayDataset(images, labels, info.mean, info.std), batch_size=3)
    return evaluate(model, loader, device="cpu").predictions


@pytest.mark.parametrize("batch_size", [1, 3, 5, 256])
def test_predict_uint8_equals_evaluate_on_the_normalised_images(batch_size):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    torch.manual_seed(3)
    model(torch.zeros(1, 3, 32, 32))  # materialise the lazy layer, then draw every weight from the seed
    for p in model.parameters():
        torch.nn.init.normal_(p)
    model.train()
    got = C.predict_uint8(model, COLOUR, CIFAR_INFO, batch_size=batch_size, device="cpu")
    assert got.dtype == np.int64 and got.shape == (len(COLOUR),)
    np.testing.assert_array_equal(got, evaluate_predictions(model, COLOUR, COLOUR_Y, CIFAR_INFO))
    assert len(set(got.tolist())) > 1  # not a constant answer, which any normalisation would reproduce
    assert model.training  # its mode is given back
    empty = C.predict_uint8(model, COLOUR[:0], CIFAR_INFO, device="cpu")
    assert empty.dtype == np.int64 and empty.shape == (0,)


def test_predict_uint8_refuses_what_it_cannot_classify():
    model = linear(784, 0)
    with pytest.raises(ValueError, match=r"images must be uint8 \(M, C, H, W\), got float64"):
        C.predict_uint8(model, GREY / 255.0, MNIST_INFO, device="cpu")
    with pytest.raises(ValueError, match=r"^The model cannot take cifar10 images of shape \(3, 32, 32\)"):
        C.predict_uint8(model, COLOUR, CIFAR_INFO, device="cpu")
    narrow = dataclasses.replace(MNIST_INFO, num_classes=7)
    with pytest.raises(ValueError, match=r"^Model 'a' outputs \(10,\) scores per image but mnist has 7 classes"):
        C.predict_uint8(model, GREY, narrow, device="cpu", name="a")
    with pytest.raises(ValueError, match="batch_size=0"):
        C.predict_uint8(model, GREY, MNIST_INFO, batch_size=0, device="cpu")


def test_saved_models_skips_a_file_that_does_not_say_what_it_was_trained_on(tmp_path):
    from labutils.models import SimpleCNN
    from labutils.train import save_backbone

    save_backbone(SimpleCNN(10, 1, 4), tmp_path / "bare.pt", {"model_kwargs": {"num_classes": 10, "in_channels": 1}})
    found, skipped = C.saved_models([tmp_path / "bare.pt"], MNIST_INFO)
    assert found == {} and "bare.json does not say what the network is and what it was trained on" in skipped["bare"]
