"""Figure rules of labutils.gradflow_plots: compared panels share their colour scale and axes and name the same
layers alike, a figure title never sits on a panel title, log axes say so, legends leave the axis labels free, and
heatmaps small enough to read print their values."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from labutils import gradflow_plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def history(norms, layers=None, steps=None):
    """A recorder's saved ``history`` with weight norms ``norms`` of shape (steps, layers)."""
    norms = np.asarray(norms, float)
    return {
        "steps": np.arange(len(norms)) if steps is None else np.asarray(steps),
        "layers": layers or [f"blocks.{i}.linear" for i in range(norms.shape[1])],
        "weight": norms,
        "bias": norms,
        "relu_layers": ["r0"],
        "dead_relu": np.zeros((len(norms), 1)),
    }


def deep_pair(layers=33, steps=40):
    """Two runs of the same deep network: one whose norms span 1e-14 … 1e-2, one near 1e-2 everywhere."""
    rng = np.random.default_rng(0)
    names = ["stem", *[f"blocks.{i}.linear" for i in range(layers - 2)], "fc"]
    plain = 10.0 ** (np.linspace(-14, -2, layers)[None, :] + 0.1 * rng.standard_normal((steps, layers)))
    residual = 10.0 ** (-2 + 0.1 * rng.standard_normal((steps, layers)))
    return history(plain, names), history(residual, names)


def bbox(artist, fig):
    return artist.get_window_extent(fig.canvas.get_renderer())


def test_heatmap_panels_share_colour_scale_axes_and_layer_names():
    plain, residual = deep_pair()
    fig, data = gradflow_plots.plot_norm_heatmaps({"plain": plain, "residual": residual}, title="one scale")
    left, right = fig.axes[0], fig.axes[1]
    # one colour scale: both images map the same value to the same colour, over the pooled range of both runs
    assert left.images[0].get_clim() == right.images[0].get_clim() == data["scale"]
    assert data["scale"] == pytest.approx((np.log10(plain["weight"]).min(), np.log10(residual["weight"]).max()))
    assert len(fig.axes) == 3  # two panels and ONE colour bar
    assert left.get_xlim() == right.get_xlim() and left.get_ylim() == right.get_ylim()
    # 33 layers: evenly spaced rows are named, the same names in both panels, input and output layers among them
    fig.canvas.draw()
    assert left.get_shared_y_axes().joined(left, right)  # one layer axis: the right panel's rows are the left's
    assert list(left.get_yticks()) == list(right.get_yticks())
    names = [t.get_text() for t in left.get_yticklabels()]
    assert names[0] == "stem" and names[-1] == "fc" and 5 <= len(names) <= 20
    assert not data["plain"]["annotated"]  # 33 x 40 cells: too many to print


def test_the_figure_title_sits_above_every_panel_title():
    plain, residual = deep_pair()
    fig, _ = gradflow_plots.plot_norm_heatmaps({"plain, depth 32": plain, "residual, depth 32": residual}, title="t")
    fig.canvas.draw()
    top = bbox(fig._suptitle, fig)
    for ax in fig.axes[:2]:
        panel = bbox(ax.title, fig)
        assert top.y0 >= panel.y1 - 0.5, f"figure title {top} overlaps panel title {panel}"


def test_small_heatmaps_print_their_values():
    h = history([[1e-3, 1e-1], [1e-2, 1.0], [0.0, 10.0]], layers=["stem", "fc"])
    fig, data = gradflow_plots.plot_norm_heatmap(h)
    assert data["annotated"]
    texts = {(round(t.get_position()[0], 6), t.get_position()[1]): t.get_text() for t in fig.axes[0].texts}
    # every finite cell (5 of 6: one norm is exactly 0 and drawn black) carries its log10 value, at its own cell
    assert len(texts) == 5
    assert texts[(0.0, 0)] == "-3" and texts[(1.0, 1)] == "0" and texts[(2.0, 1)] == "1"
    assert (2.0, 0) not in texts


def test_annotations_sit_in_their_cells_when_steps_are_strided():
    h = history([[1e-3, 1e-1], [1e-2, 1.0]], layers=["stem", "fc"], steps=[0, 10])
    fig, _ = gradflow_plots.plot_norm_heatmap(h)
    left, right = fig.axes[0].images[0].get_extent()[:2]
    xs = sorted({t.get_position()[0] for t in fig.axes[0].texts})
    width = (right - left) / 2
    assert xs == pytest.approx([left + 0.5 * width, left + 1.5 * width], abs=1e-9)


def test_log_axes_say_so_and_linear_ones_do_not():
    norms = {"plain": {"stem": 1e-12, "blocks.0.linear": 1e-6, "fc": 1e-2}, "residual": {"a": 1.0, "b": 0.5}}
    fig, _ = gradflow_plots.plot_layer_norms(norms)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel().endswith("(log scale)")
    fig, _ = gradflow_plots.plot_layer_norms({"stem": 0.1, "fc": 0.3}, logy=False, ylabel="dead-ReLU fraction")
    assert fig.axes[0].get_yscale() == "linear" and fig.axes[0].get_ylabel() == "dead-ReLU fraction"


def test_the_legend_leaves_the_axis_labels_free():
    labels = {f"depth {d}": {f"l{i}": 10.0 ** (-i * d / 8) for i in range(d + 1)} for d in (2, 8, 16, 32, 64)}
    fig, _ = gradflow_plots.plot_layer_norms(labels)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = bbox(ax.get_legend(), fig)
    for label in (ax.xaxis.label, ax.yaxis.label):
        assert not legend.overlaps(bbox(label, fig))


def test_panels_drawn_on_given_axes_keep_the_callers_layout():
    """On a figure with a layout engine (constrained layout) the plots do not switch it to tight_layout."""
    fig, axes = plt.subplots(1, 2, layout="constrained")
    gradflow_plots.plot_layer_norms({"a": 1.0, "b": 0.1}, ax=axes[0])
    gradflow_plots.plot_norm_heatmap(history([[1.0, 0.1]], layers=["a", "b"]), ax=axes[1])
    assert type(fig.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"


def test_panels_sharing_a_y_axis_label_it_once():
    """Side by side on one y axis, only the left panel carries the y label, so the right one's never runs into it."""
    import torch

    from labutils.models import MLP

    fig, axes = plt.subplots(1, 2, sharex=True, sharey=True)
    for ax, residual in zip(axes, (False, True)):
        torch.manual_seed(0)
        model = MLP(20, 3, width=8, depth=4, residual=residual)
        torch.nn.functional.cross_entropy(model(torch.randn(16, 20)), torch.randint(0, 3, (16,))).backward()
        gradflow_plots.plot_grad_histograms(model, ax=ax, title="residual" if residual else "plain")
    assert axes[0].get_ylabel() == "fraction of entries" and axes[1].get_ylabel() == ""
    assert axes[0].get_xlabel() == axes[1].get_xlabel() == "log10 |∂L/∂w|"
    assert axes[0].get_xlim() == axes[1].get_xlim()
    fig, axes = plt.subplots(1, 2)  # not shared: each panel keeps its own label
    gradflow_plots.plot_layer_norms({"a": 1.0, "b": 0.1}, ax=axes[0])
    gradflow_plots.plot_layer_norms({"a": 1.0, "b": 0.1}, ax=axes[1])
    assert axes[1].get_ylabel().endswith("(log scale)")


def test_a_long_profile_counts_its_layers_in_whole_numbers():
    fig, _ = gradflow_plots.plot_layer_norms({f"l{i}": 10.0**-i for i in range(20)})
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if 0 <= t <= 19]
    assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks)
