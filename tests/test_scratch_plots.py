"""Plot helpers of the CNN lab return exactly the numbers they draw."""

from __future__ import annotations

import matplotlib.pyplot as plt  # tests/conftest.py selects the Agg backend
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from labutils.scratch import plots
from labutils.scratch.cnn import simple_cnn


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_confusion_matrix_matches_sklearn_and_plot_returns_it():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 10, 300), rng.integers(0, 10, 300)
    expected = sk_confusion_matrix(y_true, y_pred, labels=range(10))
    np.testing.assert_array_equal(plots.confusion_matrix(y_true, y_pred, 10), expected)
    _, ax = plt.subplots()
    fig, drawn = plots.plot_confusion_matrix(y_true, y_pred, class_names=[str(i) for i in range(10)], ax=ax)
    assert fig is ax.figure
    np.testing.assert_array_equal(drawn, expected)
    assert drawn.sum() == 300
    assert "accuracy" in ax.get_title()


def test_confusion_matrix_rejects_bad_labels():
    with pytest.raises(ValueError, match="same length"):
        plots.confusion_matrix(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, 2\] for 3 classes"):
        plots.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="must be integers"):
        plots.confusion_matrix(np.zeros(2), np.zeros(2))


def test_tile_mosaic_layout():
    tiles = np.arange(3 * 2 * 2, dtype=float).reshape(3, 2, 2)
    mosaic = plots.tile_mosaic(tiles, ncols=2, gap=1)
    assert mosaic.shape == (5, 5)
    np.testing.assert_array_equal(mosaic[:2, :2], tiles[0])
    np.testing.assert_array_equal(mosaic[:2, 3:], tiles[1])
    np.testing.assert_array_equal(mosaic[3:, :2], tiles[2])
    assert np.isnan(mosaic[2]).all() and np.isnan(mosaic[3:, 3:]).all()


def test_filters_and_feature_maps_return_what_they_draw():
    model = simple_cnn(rng=0)
    _, ax = plt.subplots()
    fig, drawn = plots.plot_filters(model[3].params["weight"], max_out=5, max_in=3, ax=ax)
    assert fig is ax.figure
    np.testing.assert_array_equal(drawn, model[3].params["weight"][:5, :3])
    image = ax.get_images()[0].get_array()
    assert image.shape == (5 * 4 - 1, 3 * 4 - 1)  # 3x3 kernels with 1-pixel gaps
    np.testing.assert_array_equal(image[:3, :3], drawn[0, 0])  # the weights themselves, on one shared scale

    x = np.random.default_rng(1).standard_normal((1, 1, 28, 28)).astype(np.float32)
    maps = plots.feature_maps(model, x)
    assert list(maps)[:3] == ["0: Conv2d", "1: ReLU", "2: MaxPool2d"]
    assert maps["4: ReLU"].shape == (1, 16, 14, 14) and maps[list(maps)[-1]].shape == (1, 10)
    assert model.training  # mode restored
    fig, drawn = plots.plot_feature_maps(maps["1: ReLU"], ncols=3, max_maps=4, image=x[0])
    np.testing.assert_array_equal(drawn, maps["1: ReLU"][0, :4])
    assert fig.axes[0].get_images()[0].get_array().shape == (2 * 28 + 2, 3 * 28 + 4)  # input + 4 maps, 3 columns
    with pytest.raises(ValueError, match=r"image has shape \(28, 28\), but the maps are \(14, 14\)"):
        plots.plot_feature_maps(maps["4: ReLU"], image=x[0])


def test_plot_timings_returns_values():
    rows = [{"implementation": "a", "ms": 100.0}, {"implementation": "b", "ms": 0.5}]
    fig, drawn = plots.plot_timings(rows)
    assert drawn == {"a": 100.0, "b": 0.5}
    assert [p.get_width() for p in fig.axes[0].patches] == [100.0, 0.5]
