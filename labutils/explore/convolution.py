"""Lab 03's explorers: convolution arithmetic, and the trained NumPy CNN's feature maps.

**Convolution arithmetic.** Along one axis, an input of ``n`` pixels padded by ``p`` on each side, a kernel of ``k``
taps ``d`` pixels apart (dilation; the kernel spans ``d (k - 1) + 1`` pixels) and a stride ``s`` give

    out = floor((n + 2p - d (k - 1) - 1) / s) + 1

output positions (torch's formula, :func:`labutils.scratch.functional.conv_output_size`). Output position ``i``
reads the padded pixels ``i s + j d`` for ``j = 0 … k - 1``: that is the receptive field drawn on the input. When
the span is wider than the padded input there is no output at all; the explorer says so in one sentence.

**Feature maps.** One forward pass of the lab's trained CNN (:func:`labutils.scratch.cnn.simple_cnn`) on a chosen
test digit, and every channel of a chosen layer's output.

>>> explore.lab03_convolution()
>>> explore.lab03_feature_maps(models["max"], mnist.x_test, mnist.y_test)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labutils.explore.core import Explorer, View, drawn, figure


def conv_arithmetic(size: int = 7, kernel: int = 3, stride: int = 1, padding: int = 0, dilation: int = 1) -> dict:
    """Output size and receptive fields of a square convolution (the same along both axes).

    Returns ``{"output": out, "span": d (k - 1) + 1, "padded": n + 2p, "taps": (out, k) array of the padded
    columns each output position reads, "unread": padded columns that no output position reads}``.
    Raises ValueError with one sentence when no output position fits.
    """
    from labutils.scratch.functional import conv_output_size

    for name, value, low in (
        ("size", size, 1),
        ("kernel", kernel, 1),
        ("stride", stride, 1),
        ("dilation", dilation, 1),
        ("padding", padding, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}={value!r} is not possible: use an integer >= {low}.")
    span, padded = dilation * (kernel - 1) + 1, size + 2 * padding
    if span > padded:
        raise ValueError(
            f"No output: a kernel of {kernel} taps with dilation {dilation} spans {span} pixels, wider than the "
            f"{size}-pixel input padded to {padded} (make the kernel or dilation smaller, or pad more)."
        )
    out = conv_output_size(size, kernel, stride, padding, dilation)
    taps = np.arange(out)[:, None] * stride + np.arange(kernel)[None, :] * dilation
    read = np.zeros(padded, bool)
    read[taps.ravel()] = True
    return {"output": out, "span": span, "padded": padded, "taps": taps, "unread": np.flatnonzero(~read)}


def draw_convolution(result: dict, size: int, padding: int):
    """The padded input with the taps of the first output position (blue) and of its right neighbour (orange),
    and the output grid with those two positions."""
    from matplotlib.colors import ListedColormap

    padded, out, taps = result["padded"], result["output"], result["taps"]
    # cell codes: 0 padding, 1 input, 2 read by output (0, 0), 3 read by output (0, 1), 4 by both
    grid = np.zeros((padded, padded), int)
    grid[padding : padding + size, padding : padding + size] = 1
    first = np.zeros((padded, padded), bool)
    first[np.ix_(taps[0], taps[0])] = True
    second = np.zeros((padded, padded), bool)
    if out > 1:
        second[np.ix_(taps[0], taps[1])] = True
    grid[first], grid[second], grid[first & second] = 2, 3, 4
    colours = ListedColormap(["0.8", "white", "tab:blue", "tab:orange", "tab:purple"])
    fig = figure(9, 4.2)
    ax_in, ax_out = fig.subplots(1, 2, width_ratios=[max(padded, 1), max(out, 1) + 2])
    for ax, image, n in ((ax_in, grid, padded), (ax_out, None, out)):
        if image is None:
            image = np.ones((out, out), int)
            image[0, 0] = 2
            if out > 1:
                image[0, 1] = 3
        ax.imshow(image, cmap=colours, vmin=0, vmax=4)
        ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
        ax.grid(which="minor", color="0.5", lw=0.5)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax_in.set_title(f"input {size}x{size}, padded to {padded}x{padded} (grey: padding)", fontsize=9)
    ax_out.set_title(f"output {out}x{out}", fontsize=9)
    return fig


def lab03_convolution() -> Explorer:
    """Input size, kernel, stride, padding and dilation → output size, with the receptive field of two neighbouring
    output positions drawn on the padded input."""
    import ipywidgets as widgets

    def slider(value, low, high, name):
        return widgets.IntSlider(value=value, min=low, max=high, description=name, continuous_update=False)

    controls = {
        "size": slider(7, 1, 32, "input size"),
        "kernel": slider(3, 1, 7, "kernel"),
        "stride": slider(2, 1, 4, "stride"),
        "padding": slider(1, 0, 3, "padding"),
        "dilation": slider(1, 1, 3, "dilation"),
    }

    def view(size: int, kernel: int, stride: int, padding: int, dilation: int) -> View:
        result = conv_arithmetic(size, kernel, stride, padding, dilation)
        text = (
            f"output = floor(({size} + 2·{padding} − {dilation}·({kernel} − 1) − 1) / {stride}) + 1 = "
            f"{result['output']}; each output reads a {result['span']}x{result['span']} patch "
            f"({kernel}x{kernel} taps), neighbours {stride} pixel(s) apart."
        )
        if len(result["unread"]):
            text += f" {len(result['unread'])} padded column(s) at the edge are never read."
        return drawn(draw_convolution(result, size, padding), text, result)

    return Explorer(
        "lab03-convolution",
        view,
        controls,
        title="Convolution arithmetic",
        note="Blue: what output (0, 0) reads; orange: its right neighbour; purple: both.",
    )


# -- feature maps of the trained NumPy CNN -------------------------------------------------------------------------
def spatial_layers(model) -> list[str]:
    """Names of the layers whose output is a stack of maps (N, C, H, W), as :func:`labutils.scratch.plots.feature_maps`
    keys them (``"1: ReLU"``)."""
    from labutils.scratch.layers import Flatten, Linear

    names = []
    for i, layer in enumerate(model):
        if isinstance(layer, (Flatten, Linear)):
            break
        names.append(f"{i}: {type(layer).__name__}")
    if not names:
        raise ValueError("The model has no convolution or pooling layer before its classifier: nothing to show.")
    return names


def feature_map_view(model, images: np.ndarray, index: int, layer: str) -> dict[str, Any]:
    """One forward pass of ``model`` on ``images[index]`` (C, H, W): the ``layer``'s maps (C', H', W'), the class
    probabilities (K,), the prediction and the fraction of the maps that are exactly zero (ReLU's dead area)."""
    from labutils.scratch.losses import softmax
    from labutils.scratch.plots import feature_maps

    if not 0 <= index < len(images):
        raise ValueError(f"index={index} is not an image: use 0 to {len(images) - 1}.")
    outputs = feature_maps(model, images[index : index + 1])
    if layer not in outputs or layer not in spatial_layers(model):
        raise ValueError(f"Unknown layer {layer!r}: choose one of {', '.join(spatial_layers(model))}.")
    maps = outputs[layer][0]
    probabilities = softmax(list(outputs.values())[-1])[0]
    return {
        "maps": maps,
        "probabilities": probabilities,
        "predicted": int(probabilities.argmax()),
        "zero_fraction": float(np.mean(maps == 0)),
    }


def draw_feature_maps(result: dict[str, Any], image: np.ndarray, title: str):
    """The input digit, the layer's channels on one colour scale, and the class probabilities."""
    from labutils.scratch.plots import plot_feature_maps

    fig = figure(11, 3.6)
    ax_img, ax_maps, ax_prob = fig.subplots(1, 3, width_ratios=[1, 3.2, 1.2])
    ax_img.imshow(np.squeeze(image), cmap="gray")
    ax_img.set_title("input", fontsize=9)
    ax_img.axis("off")
    plot_feature_maps(result["maps"], ncols=8, ax=ax_maps, title=title)
    probabilities = result["probabilities"]
    ax_prob.barh(np.arange(len(probabilities)), probabilities, color="tab:blue")
    ax_prob.barh(result["predicted"], probabilities[result["predicted"]], color="tab:orange")
    ax_prob.set_yticks(np.arange(len(probabilities)))
    ax_prob.invert_yaxis()
    ax_prob.set(xlim=(0, 1), xlabel="probability", title="prediction")
    ax_prob.title.set_fontsize(9)
    return fig


def lab03_feature_maps(model, images: np.ndarray, labels: np.ndarray | None = None, max_images: int = 200) -> Explorer:
    """Digit (an index into ``images``, (N, C, H, W) as the model takes them) and layer → that layer's feature maps
    for that digit, and the model's class probabilities. One forward pass per redraw."""
    import ipywidgets as widgets

    images = np.asarray(images)
    if images.ndim != 4 or not len(images):
        raise ValueError(f"images must be a non-empty batch (N, C, H, W), got shape {images.shape}.")
    layers = spatial_layers(model)
    controls = {
        "index": widgets.IntSlider(
            value=0, min=0, max=min(len(images), max_images) - 1, description="digit", continuous_update=False
        ),
        "layer": widgets.Dropdown(options=layers, value=layers[0], description="layer"),
    }

    def view(index: int, layer: str) -> View:
        result = feature_map_view(model, images, index, layer)
        channels, height, width = result["maps"].shape
        truth = f" (label {int(labels[index])})" if labels is not None else ""
        text = (
            f"digit {index}{truth}: predicted {result['predicted']} with probability "
            f"{result['probabilities'].max():.2f}; layer {layer}: {channels} maps of {height}x{width}, "
            f"{result['zero_fraction']:.0%} of their values are exactly 0."
        )
        return drawn(draw_feature_maps(result, images[index], f"layer {layer}"), text, result)

    return Explorer("lab03-feature-maps", view, controls, title="Inside the trained NumPy CNN")
