"""NumPy conv2d / max_pool2d / avg_pool2d against torch.nn.functional and torch.autograd (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from labutils.scratch import functional as F

# float64 on both sides: differences come only from summation order (~1e-15 relative).
ATOL = 1e-10

CONV_CASES = {
    # name: (x shape, weight shape, kwargs)
    "square": ((2, 3, 9, 9), (4, 3, 3, 3), {}),
    "padding": ((2, 3, 8, 8), (4, 3, 3, 3), {"padding": 1}),
    "horizontal_1x5": ((2, 2, 7, 9), (3, 2, 1, 5), {"padding": (0, 2)}),
    "vertical_5x1": ((2, 2, 9, 7), (3, 2, 5, 1), {"padding": (2, 0)}),
    "rectangular_3x2": ((2, 3, 8, 7), (5, 3, 3, 2), {"stride": (2, 1), "padding": (1, 0)}),
    "stride2": ((3, 2, 11, 10), (4, 2, 3, 3), {"stride": 2, "padding": 1}),
    "stride3_no_pad": ((2, 2, 10, 10), (2, 2, 2, 2), {"stride": 3}),
    "dilation2": ((2, 2, 12, 12), (3, 2, 3, 3), {"dilation": 2, "padding": 2}),
    "dilation_pair": ((2, 2, 12, 12), (3, 2, 3, 3), {"dilation": (1, 3), "stride": (2, 1)}),
    "groups2": ((2, 4, 8, 8), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
    "depthwise": ((2, 5, 8, 8), (5, 1, 3, 3), {"groups": 5, "padding": 1}),
    "depthwise_multiplier": ((2, 3, 8, 8), (6, 1, 3, 3), {"groups": 3, "stride": 2}),
    "pointwise_1x1": ((2, 6, 5, 5), (4, 6, 1, 1), {}),
    "same_odd": ((2, 3, 7, 8), (4, 3, 3, 5), {"padding": "same"}),
    "same_even_dilated": ((2, 3, 7, 8), (4, 3, 4, 2), {"padding": "same", "dilation": (1, 2)}),
    "valid": ((2, 3, 7, 8), (4, 3, 3, 3), {"padding": "valid"}),
    "kernel_equals_input": ((2, 3, 5, 4), (2, 3, 5, 4), {}),
    "all_at_once": (
        (2, 6, 13, 11),
        (4, 3, 3, 2),
        {"stride": (2, 3), "padding": (2, 1), "dilation": (2, 1), "groups": 2},
    ),
}


def _torch_conv(x, w, b, kwargs, dout):
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    out = TF.conv2d(tx, tw, tb, **kwargs)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), None if b is None else tb.grad.numpy()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_conv2d_forward_backward_match_torch(case, bias):
    x_shape, w_shape, kwargs = CONV_CASES[case]
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if bias else None
    out, cache = F.conv2d_forward(x, w, b, **kwargs)
    dout = rng.standard_normal(out.shape)
    ref_out, ref_dx, ref_dw, ref_db = _torch_conv(x, w, b, kwargs, dout)
    assert out.shape == ref_out.shape
    np.testing.assert_allclose(out, ref_out, atol=ATOL, rtol=0)
    dx, dw, db = F.conv2d_backward(dout, cache)
    np.testing.assert_allclose(dx, ref_dx, atol=ATOL, rtol=0)
    np.testing.assert_allclose(dw, ref_dw, atol=ATOL, rtol=0)
    if bias:
        np.testing.assert_allclose(db, ref_db, atol=ATOL, rtol=0)
    else:
        assert db is None


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("case", ["square", "rectangular_3x2", "dilation_pair", "depthwise", "same_even_dilated"])
def test_conv2d_naive_matches_torch(case):
    x_shape, w_shape, kwargs = CONV_CASES[case]
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    expected = TF.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), **kwargs).numpy()
    np.testing.assert_allclose(F.conv2d_naive(x, w, b, **kwargs), expected, atol=ATOL, rtol=0)


def test_conv2d_unbatched_input_like_torch():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((3, 6, 7)), rng.standard_normal((2, 3, 3, 3))
    out, cache = F.conv2d_forward(x, w, None, padding=1)
    dout = rng.standard_normal(out.shape)
    ref_out, ref_dx, ref_dw, _ = _torch_conv(x, w, None, {"padding": 1}, dout)
    assert out.shape == (2, 6, 7)
    np.testing.assert_allclose(out, ref_out, atol=ATOL, rtol=0)
    dx, dw, _ = F.conv2d_backward(dout, cache)
    np.testing.assert_allclose(dx, ref_dx, atol=ATOL, rtol=0)
    np.testing.assert_allclose(dw, ref_dw, atol=ATOL, rtol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_preserves_dtype_and_float32_is_accurate(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 10, 10)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    out, cache = F.conv2d_forward(x, w, b, stride=1, padding=1)
    dx, dw, db = F.conv2d_backward(np.ones_like(out), cache)
    assert out.dtype == dx.dtype == dw.dtype == db.dtype == dtype
    assert F.conv2d_naive(x, w, b, padding=1).dtype == dtype
    expected = TF.conv2d(
        torch.tensor(x, dtype=torch.float64),
        torch.tensor(w, dtype=torch.float64),
        torch.tensor(b, dtype=torch.float64),
        padding=1,
    ).numpy()
    # float32 products of ~N(0,1) values summed over 27 terms: errors ~1e-6 absolute.
    np.testing.assert_allclose(out, expected, atol=1e-5 if dtype == np.float32 else ATOL, rtol=0)


POOL_CASES = {
    "k2": (2, None, 0),
    "k3_s2_p1": (3, 2, 1),
    "k3_s1": (3, 1, 0),
    "rect": ((3, 2), (1, 2), (1, 0)),
    "overlap_pad": (4, 3, 2),
}


@pytest.mark.parametrize("case", list(POOL_CASES), ids=list(POOL_CASES))
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_forward_backward_match_torch(kind, case):
    kernel, stride, padding = POOL_CASES[case]
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 10))
    ours_fwd, ours_bwd = {
        "max": (F.max_pool2d_forward, F.max_pool2d_backward),
        "avg": (F.avg_pool2d_forward, F.avg_pool2d_backward),
    }[kind]
    out, cache = ours_fwd(x, kernel, stride, padding)
    tx = torch.tensor(x, requires_grad=True)
    ref = (TF.max_pool2d if kind == "max" else TF.avg_pool2d)(tx, kernel, stride, padding)
    dout = rng.standard_normal(ref.shape)
    ref.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, ref.detach().numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(ours_bwd(dout, cache), tx.grad.numpy(), atol=ATOL, rtol=0)


def test_avg_pool_count_include_pad_false_matches_torch():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 7, 7))
    tx = torch.tensor(x, requires_grad=True)
    ref = TF.avg_pool2d(tx, 3, 2, 1, count_include_pad=False)
    dout = rng.standard_normal(ref.shape)
    ref.backward(torch.tensor(dout))
    out, cache = F.avg_pool2d_forward(x, 3, 2, 1, count_include_pad=False)
    np.testing.assert_allclose(out, ref.detach().numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(F.avg_pool2d_backward(dout, cache), tx.grad.numpy(), atol=ATOL, rtol=0)


def test_max_pool_ties_route_gradient_to_first_max_like_torch():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = 1.0  # a tie inside the first window
    tx = torch.tensor(x, requires_grad=True)
    TF.max_pool2d(tx, 2).sum().backward()
    out, cache = F.max_pool2d_forward(x, 2)
    dx = F.max_pool2d_backward(np.ones_like(out), cache)
    np.testing.assert_array_equal(dx, tx.grad.numpy())
    assert dx.sum() == 4.0  # one unit of gradient per window, never duplicated over ties


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_preserves_dtype(dtype):
    x = np.random.default_rng(6).standard_normal((2, 3, 8, 8)).astype(dtype)
    for fwd, bwd in ((F.max_pool2d_forward, F.max_pool2d_backward), (F.avg_pool2d_forward, F.avg_pool2d_backward)):
        out, cache = fwd(x, 2)
        assert out.dtype == dtype and out.shape == (2, 3, 4, 4)
        assert bwd(np.ones_like(out), cache).dtype == dtype


def test_stride_defaults_to_kernel_size():
    x = np.arange(2 * 36, dtype=np.float64).reshape(1, 2, 6, 6)
    assert F.max_pool2d(x, 3).shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(F.max_pool2d(x, 3)[0, 0], [[14, 17], [32, 35]])
    np.testing.assert_array_equal(F.avg_pool2d(x, 2)[0, 0, 0], [3.5, 5.5, 7.5])


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, message",
    [
        ((3, 8, 8, 1, 1), (4, 3, 3, 3), {}, r"\(N, C, H, W\) or \(C, H, W\); got shape \(3, 8, 8, 1, 1\)"),
        ((8, 8), (4, 3, 3, 3), {}, r"got shape \(8, 8\)"),
        ((2, 3, 8, 8), (4, 3, 3), {}, r"weight of shape .*got shape \(4, 3, 3\)"),
        ((2, 3, 8, 8), (4, 2, 3, 3), {}, r"Channel mismatch: x of shape \(2, 3, 8, 8\) has 3 channels.*\(4, 2, 3, 3\)"),
        ((2, 4, 8, 8), (4, 2, 3, 3), {"groups": 3}, r"groups=3 must divide.*\(2, 4, 8, 8\).*\(4, 2, 3, 3\)"),
        ((2, 4, 8, 8), (5, 2, 3, 3), {"groups": 2}, r"groups=2 must divide.*output channels \(5"),
        ((2, 3, 4, 4), (2, 3, 5, 5), {}, r"kernel \(5, 5\).*larger than the padded input \(4, 4\)"),
        ((2, 3, 4, 4), (2, 3, 3, 3), {"dilation": 2}, r"effective size \(5, 5\).*padded input \(4, 4\)"),
        ((2, 3, 8, 8), (2, 3, 3, 3), {"stride": 0}, r"stride must be >= 1"),
        ((2, 3, 8, 8), (2, 3, 3, 3), {"padding": -1}, r"padding must be >= 0"),
        ((2, 3, 8, 8), (2, 3, 3, 3), {"padding": "same", "stride": 2}, r"padding='same' needs stride 1"),
        ((2, 3, 8, 8), (2, 3, 3, 3), {"padding": "full"}, r"'valid' or 'same'"),
        ((2, 3, 8, 8), (2, 3, 3, 3), {"stride": (1, 2, 3)}, r"stride must be an int or a pair"),
    ],
)
def test_conv2d_rejects_bad_shapes_and_arguments(x_shape, w_shape, kwargs, message):
    x, w = np.zeros(x_shape), np.zeros(w_shape)
    with pytest.raises(ValueError, match=message):
        F.conv2d(x, w, **kwargs)


def test_conv2d_rejects_bad_bias_and_dtypes():
    x, w = np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\).*got \(2,\)"):
        F.conv2d(x, w, np.zeros(2))
    with pytest.raises(ValueError, match="x has dtype float32 but weight has dtype float64"):
        F.conv2d(x.astype(np.float32), w)
    with pytest.raises(ValueError, match="floating-point x; got dtype int64"):
        F.conv2d(np.zeros((1, 2, 5, 5), dtype=np.int64), w)
    _, cache = F.conv2d_forward(x, w)
    with pytest.raises(ValueError, match=r"dout has shape \(1, 3, 2, 2\), expected the output shape \(1, 3, 3, 3\)"):
        F.conv2d_backward(np.zeros((1, 3, 2, 2)), cache)


def test_pooling_rejects_bad_input():
    with pytest.raises(ValueError, match=r"max_pool2d expects x of shape .*got shape \(4, 4\)"):
        F.max_pool2d(np.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match=r"kernel \(5, 5\).*larger than the padded input \(4, 4\)"):
        F.avg_pool2d(np.zeros((1, 1, 4, 4)), 5)
    with pytest.raises(ValueError, match="at most half the kernel size"):
        F.max_pool2d(np.zeros((1, 1, 8, 8)), 2, padding=2)


def test_conv_output_size_formula():
    assert F.conv_output_size(28, 3, 1, 1) == 28
    assert F.conv_output_size(28, 2, 2) == 14
    assert F.conv_output_size(11, 3, 2, 1, 2) == 5
    out = F.conv2d(np.zeros((1, 1, 11, 11)), np.zeros((1, 1, 3, 3)), stride=2, padding=1, dilation=2)
    assert out.shape[-1] == F.conv_output_size(11, 3, 2, 1, 2)


@pytest.mark.parametrize("images_per_chunk", [1, 2, 3])
def test_conv2d_in_chunks_matches_torch(monkeypatch, images_per_chunk):
    """Batches larger than the cache budget go through in chunks (the last one partial)."""
    x_shape, w_shape, kwargs = CONV_CASES["all_at_once"]
    x_shape = (5, *x_shape[1:])
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    per_image = F.conv2d(x[:1], w, b, **kwargs).shape[-2:]
    per_image_bytes = x_shape[1] * w_shape[2] * w_shape[3] * per_image[0] * per_image[1] * x.itemsize
    monkeypatch.setattr(F, "COLS_BUDGET_BYTES", images_per_chunk * per_image_bytes)
    out, cache = F.conv2d_forward(x, w, b, **kwargs)
    dout = rng.standard_normal(out.shape)
    ref_out, ref_dx, ref_dw, ref_db = _torch_conv(x, w, b, kwargs, dout)
    np.testing.assert_allclose(out, ref_out, atol=ATOL, rtol=0)
    for ours, ref in zip(F.conv2d_backward(dout, cache), (ref_dx, ref_dw, ref_db)):
        np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)


def test_conv2d_empty_batch():
    out, cache = F.conv2d_forward(np.zeros((0, 2, 5, 5)), np.ones((3, 2, 3, 3)), np.ones(3))
    assert out.shape == (0, 3, 3, 3)
    dx, dw, db = F.conv2d_backward(np.zeros(out.shape), cache)
    assert dx.shape == (0, 2, 5, 5) and not dw.any() and not db.any()
