"""The figures of the NumPy labs (00-03) compare fairly: panels that are compared share one colour scale with a
colour bar, or one y axis; log axes say so in their label; a legend sits beside the bars, not over them."""

from __future__ import annotations

import matplotlib.pyplot as plt  # conftest.py selects the Agg backend
import numpy as np
import pytest

from labutils import viz as data_viz
from labutils.plots import plot_histories
from labutils.scratch import plots, viz
from labutils.scratch.cnn import simple_cnn


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _colorbars(fig) -> list:
    """The colour-bar axes of a figure (matplotlib labels them '<colorbar>')."""
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_first_layer_weights_share_one_symmetric_scale_with_a_colour_bar():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 784)) * np.array([[0.1], [1.0], [3.0], [0.5]])  # units of very different size
    fig, images = viz.plot_first_layer_weights(weight, n=4, label="change from init")
    shown = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert len(shown) == 4
    limit = np.abs(weight).max()
    for image in shown:
        assert image.get_clim() == pytest.approx((-limit, limit), rel=1e-12)
    bars = _colorbars(fig)
    assert len(bars) == 1 and bars[0].get_ylabel() == "change from init"


def test_filters_share_one_scale_across_kernels():
    weight = simple_cnn(rng=0)[3].params["weight"]  # (16, 8, 3, 3)
    fig, drawn = plots.plot_filters(weight, max_out=4, max_in=2)
    image = fig.axes[0].get_images()[0]
    limit = np.abs(drawn).max()
    assert image.get_clim() == pytest.approx((-limit, limit), rel=1e-6)
    mosaic = image.get_array()
    np.testing.assert_allclose(mosaic[4:7, 4:7], drawn[1, 1], rtol=1e-6)  # not rescaled per kernel
    assert len(_colorbars(fig)) == 1


def test_feature_maps_share_one_scale_so_a_weak_channel_looks_weak():
    maps = np.stack([np.full((6, 6), 0.1), np.linspace(0, 4, 36).reshape(6, 6)])
    fig, drawn = plots.plot_feature_maps(maps, ncols=3, image=np.eye(6))
    image = fig.axes[0].get_images()[0]
    assert image.get_clim() == (0.0, 4.0)
    mosaic = image.get_array()
    np.testing.assert_allclose(mosaic[:6, 8:14], 0.1)  # the weak channel keeps its value: dark, not stretched
    np.testing.assert_allclose(mosaic[:6, :6], np.eye(6) * 4.0)  # the input, stretched to the maps' scale
    assert len(_colorbars(fig)) == 1


def test_confusion_matrix_has_a_colour_bar_and_a_count_in_every_nonzero_cell():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 2])
    fig, counts = plots.plot_confusion_matrix(y_true, y_pred)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sorted(texts) == sorted(str(c) for c in counts.ravel() if c)
    assert fig.axes[0].get_images()[0].get_clim() == (0, 1)
    assert _colorbars(fig)[0].get_ylabel() == "fraction of the true class"


def test_gradient_norm_panels_share_a_log_y_axis_that_says_so():
    histories = {
        run: {"grad_norms": {"W1": list(values), "W2": [1.0] * 4}, "steps_per_epoch": 2}
        for run, values in {"small": [0.01, 0.02, 0.01, 0.02], "large": [10.0, 20.0, 5.0, 5.0]}.items()
    }
    fig, _ = viz.plot_grad_norms(histories, params=["W1", "W2"])
    assert fig.axes[0].get_ylim() == fig.axes[1].get_ylim()
    assert fig.axes[0].get_ylim()[0] < 0.015 and fig.axes[0].get_ylim()[1] > 15
    assert all(ax.get_yscale() == "log" and "log scale" in ax.get_ylabel() for ax in fig.axes)


def test_log_axes_say_so():
    history = {"train_loss": [2.0, 1.0], "val_acc": [0.5, 0.7]}
    fig, _ = plot_histories({"run": history}, log_loss=True)
    assert fig.axes[0].get_ylabel() == "training loss (log scale)"
    assert fig.axes[1].get_ylabel() == "validation accuracy"  # linear: no note
    fig, _ = plots.plot_timings([{"implementation": "a", "ms": 10.0}, {"implementation": "b", "ms": 0.1}])
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_xlabel() == "ms (log scale)"


def test_class_balance_legend_sits_beside_the_bars():
    labels = np.repeat(np.arange(10), np.arange(10) * 10 + 10)  # the last classes have the tallest bars
    fig, counts = data_viz.class_balance({"train": labels, "test": labels[::2]}, [str(i) for i in range(10)])
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the axes: covers no bar and no axis label
    assert counts["train"].tolist() == (np.arange(10) * 10 + 10).tolist()
