"""Receptive-field calculator: known stacks (the lab's CNN, VGG-16, AlexNet, dilated convs) and a
brute-force check that backpropagates one output unit to the input pixels it depends on."""

from __future__ import annotations

import numpy as np
import pytest

from labutils.scratch import layers as L
from labutils.scratch.receptive import receptive_field, receptive_field_table

LAB_STACK = [("conv", 3, 1, 1), ("pool", 2, 2), ("conv", 3, 1, 1), ("pool", 2, 2)]


def test_lab_cnn_reaches_10x10_with_jump_4():
    rows = receptive_field_table(LAB_STACK, input_size=28)
    assert [r["receptive_field"] for r in rows] == [3, 4, 8, 10]
    assert [r["jump"] for r in rows] == [1, 2, 2, 4]
    assert [r["output_size"] for r in rows] == [28, 14, 14, 7]
    assert rows[-1]["start"] == 1.5  # first unit's field is centred between pixels 1 and 2
    assert set(rows[0]) >= {"layer", "kernel", "stride", "jump", "receptive_field"}


def test_scratch_sequential_gives_the_same_table():
    model = L.Sequential(
        L.Conv2d(1, 8, 3, padding=1),
        L.ReLU(),
        L.MaxPool2d(2),
        L.Conv2d(8, 16, 3, padding=1),
        L.ReLU(),
        L.MaxPool2d(2),
        L.Flatten(),
        L.Linear(16 * 7 * 7, 10),
    )
    rows = receptive_field_table(model, input_size=28)
    assert [r["layer"] for r in rows] == [
        "0: Conv2d",
        "1: ReLU",
        "2: MaxPool2d",
        "3: Conv2d",
        "4: ReLU",
        "5: MaxPool2d",
    ]
    assert [r["receptive_field"] for r in rows] == [3, 3, 4, 8, 8, 10]
    assert receptive_field(model) == (10, 4)


def _vgg16_stack():
    stack = []
    for n_convs in (2, 2, 3, 3, 3):
        stack += [("conv", 3, 1, 1)] * n_convs + [("pool", 2, 2)]
    return stack


def test_vgg16_known_values():
    rows = receptive_field_table(_vgg16_stack(), input_size=224)
    rf = [r["receptive_field"] for r in rows]
    # conv1_1 .. pool5 (the classic numbers: 212 pixels at pool5, effective stride 32)
    assert rf == [3, 5, 6, 10, 14, 16, 24, 32, 40, 44, 60, 76, 92, 100, 132, 164, 196, 212]
    assert rows[-1]["jump"] == 32 and rows[-1]["output_size"] == 7


def test_alexnet_known_values():
    stack = [
        ("conv1", 11, 4, 2),
        ("pool1", 3, 2),
        ("conv2", 5, 1, 2),
        ("pool2", 3, 2),
        ("conv3", 3, 1, 1),
        ("conv4", 3, 1, 1),
        ("conv5", 3, 1, 1),
        ("pool5", 3, 2),
    ]
    rows = receptive_field_table(stack, input_size=224)
    assert [r["receptive_field"] for r in rows] == [11, 19, 51, 67, 99, 131, 163, 195]
    assert [r["jump"] for r in rows] == [4, 8, 8, 16, 16, 16, 16, 32]
    assert [r["output_size"] for r in rows] == [55, 27, 27, 13, 13, 13, 13, 6]


def test_dilated_convolutions_grow_exponentially():
    stack = [("conv", 3, 1, 1, 1), ("conv", 3, 1, 2, 2), ("conv", 3, 1, 4, 4), ("conv", 3, 1, 8, 8)]
    assert [r["receptive_field"] for r in receptive_field_table(stack)] == [3, 7, 15, 31]


def test_rectangular_kernels_give_per_axis_values():
    rows = receptive_field_table(
        [("conv", (1, 5), 1), ("pool", (2, 1), (2, 1)), ("conv", (3, 1), 1)], input_size=(8, 9)
    )
    assert rows[-1]["receptive_field"] == (6, 5)  # vertical: 1 -> 2 (pool) -> 2 + 2 * 2; horizontal: 5
    assert rows[-1]["jump"] == (2, 1)
    assert rows[-1]["output_size"] == (2, 5)
    assert rows[1]["receptive_field"] == (2, 5)


def _brute_force_field(model, input_hw, unit):
    """Rows and columns of input pixels whose value can change output unit (y, x) of channel 0:
    positive weights and average pooling make every dependency show up as a nonzero gradient."""
    for layer in model:
        if "weight" in layer.params:
            layer.params["weight"][...] = 1.0
    out = model(np.zeros((1, 1, *input_hw)))
    dout = np.zeros_like(out)
    dout[0, 0, unit[0], unit[1]] = 1.0
    touched = np.argwhere(model.backward(dout)[0, 0] != 0)
    return touched[:, 0].min(), touched[:, 0].max(), touched[:, 1].min(), touched[:, 1].max()


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.Sequential(
            L.Conv2d(1, 2, 3, padding=1, dtype=np.float64),
            L.AvgPool2d(2),
            L.Conv2d(2, 2, 3, padding=1, dtype=np.float64),
            L.AvgPool2d(2),
        ),
        lambda: L.Sequential(
            L.Conv2d(1, 2, (3, 5), stride=(1, 2), dilation=(2, 1), dtype=np.float64),
            L.Tanh(),
            L.AvgPool2d(3, stride=2, padding=1),
            L.Conv2d(2, 1, 2, dtype=np.float64),
        ),
    ],
    ids=["lab_stack", "rect_dilated_strided"],
)
def test_table_agrees_with_backpropagated_dependencies(make):
    model = make()
    row = receptive_field_table(model, input_size=40)[-1]
    rf, jump, start = (np.broadcast_to(row[k], 2) for k in ("receptive_field", "jump", "start"))
    unit = (2, 2)  # away from the border, so padding does not clip the field
    top, bottom, left, right = _brute_force_field(model, (40, 40), unit)
    assert (bottom - top + 1, right - left + 1) == tuple(rf)
    centre = ((top + bottom) / 2, (left + right) / 2)
    assert centre == tuple(start + jump * np.array(unit))


def test_bad_stacks_raise():
    with pytest.raises(ValueError, match=r"\(kind, kernel, stride\[, padding\[, dilation\]\]\)"):
        receptive_field_table([("conv", 3)])
    with pytest.raises(ValueError, match="Cannot compute a receptive field through"):
        receptive_field_table([L.Conv2d(1, 1, 3), L.Layer()])
    with pytest.raises(ValueError, match="no convolution, pooling"):
        receptive_field_table(L.Sequential(L.Flatten(), L.Linear(4, 2)))
    with pytest.raises(ValueError, match="leaves no output"):
        receptive_field_table([("conv", 5, 1)], input_size=3)
