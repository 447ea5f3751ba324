"""Scratch layers against torch.nn: same weights -> same outputs and gradients (float64), plus the
Sequential contract (aligned parameter/gradient lists, train/eval, state dicts) and torch-like init."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from labutils import seed_everything
from labutils.scratch import layers as L

ATOL = 1e-10  # float64 on both sides


def _torch_layer_pair(ours, theirs, x):
    """Copy our parameters into the torch module, run both forward and backward with the same dout.

    Returns (our out, torch out, our dx, torch dx, {name: (our grad, torch grad)})."""
    with torch.no_grad():
        for name, value in ours.params.items():
            getattr(theirs, name).copy_(torch.tensor(value))
    out = ours.forward(x)
    dout = np.random.default_rng(99).standard_normal(out.shape)
    dx = ours.backward(dout)
    tx = torch.tensor(x, requires_grad=True)
    tout = theirs(tx)
    tout.backward(torch.tensor(dout))
    grads = {name: (ours.grads[name], getattr(theirs, name).grad.numpy()) for name in ours.params}
    return out, tout.detach().numpy(), dx, tx.grad.numpy(), grads


LAYER_CASES = {
    "linear": (lambda: L.Linear(7, 4, dtype=np.float64, rng=0), lambda: nn.Linear(7, 4).double(), (5, 7)),
    "linear_no_bias": (
        lambda: L.Linear(7, 4, bias=False, dtype=np.float64, rng=0),
        lambda: nn.Linear(7, 4, bias=False).double(),
        (5, 7),
    ),
    "linear_3d_input": (lambda: L.Linear(6, 3, dtype=np.float64, rng=0), lambda: nn.Linear(6, 3).double(), (2, 4, 6)),
    "conv_pad": (
        lambda: L.Conv2d(3, 4, 3, padding=1, dtype=np.float64, rng=0),
        lambda: nn.Conv2d(3, 4, 3, padding=1).double(),
        (2, 3, 8, 8),
    ),
    "conv_stride_rect": (
        lambda: L.Conv2d(3, 4, (3, 2), stride=(2, 1), dtype=np.float64, rng=0),
        lambda: nn.Conv2d(3, 4, (3, 2), stride=(2, 1)).double(),
        (2, 3, 9, 8),
    ),
    "conv_dilated": (
        lambda: L.Conv2d(2, 3, 3, dilation=2, padding=2, dtype=np.float64, rng=0),
        lambda: nn.Conv2d(2, 3, 3, dilation=2, padding=2).double(),
        (2, 2, 9, 9),
    ),
    "conv_groups": (
        lambda: L.Conv2d(4, 6, 3, groups=2, bias=False, dtype=np.float64, rng=0),
        lambda: nn.Conv2d(4, 6, 3, groups=2, bias=False).double(),
        (2, 4, 7, 7),
    ),
    "conv_depthwise_same": (
        lambda: L.Conv2d(3, 3, 5, padding="same", groups=3, dtype=np.float64, rng=0),
        lambda: nn.Conv2d(3, 3, 5, padding="same", groups=3).double(),
        (2, 3, 7, 7),
    ),
    "maxpool": (lambda: L.MaxPool2d(2), lambda: nn.MaxPool2d(2), (2, 3, 8, 9)),
    "maxpool_overlap": (lambda: L.MaxPool2d(3, stride=2), lambda: nn.MaxPool2d(3, stride=2), (2, 3, 9, 9)),
    "avgpool": (lambda: L.AvgPool2d(2), lambda: nn.AvgPool2d(2), (2, 3, 8, 9)),
    "avgpool_rect": (lambda: L.AvgPool2d((2, 3), stride=1), lambda: nn.AvgPool2d((2, 3), stride=1), (2, 3, 6, 6)),
    "relu": (lambda: L.ReLU(), lambda: nn.ReLU(), (4, 5)),
    "sigmoid": (lambda: L.Sigmoid(), lambda: nn.Sigmoid(), (4, 5)),
    "tanh": (lambda: L.Tanh(), lambda: nn.Tanh(), (4, 5)),
    "flatten": (lambda: L.Flatten(), lambda: nn.Flatten(), (2, 3, 4, 5)),
}


@pytest.mark.parametrize("case", list(LAYER_CASES), ids=list(LAYER_CASES))
def test_layer_matches_torch(case):
    make_ours, make_theirs, shape = LAYER_CASES[case]
    x = np.random.default_rng(1).standard_normal(shape) * 3
    out, ref_out, dx, ref_dx, grads = _torch_layer_pair(make_ours(), make_theirs(), x)
    assert out.shape == ref_out.shape and dx.shape == x.shape
    np.testing.assert_allclose(out, ref_out, atol=ATOL, rtol=0)
    np.testing.assert_allclose(dx, ref_dx, atol=ATOL, rtol=0)
    for name, (ours, theirs) in grads.items():
        np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0, err_msg=name)


def test_sigmoid_is_stable_at_extreme_inputs():
    x = np.array([[-1e4, -800.0, 0.0, 800.0, 1e4]])
    with np.errstate(all="raise"):
        out = L.Sigmoid().forward(x)
    np.testing.assert_allclose(out, torch.sigmoid(torch.tensor(x)).numpy(), atol=1e-300, rtol=0)


@pytest.mark.parametrize(
    "make, fan_in, weight_shape",
    [
        (lambda rng: L.Linear(300, 50, rng=rng), 300, (50, 300)),
        (lambda rng: L.Conv2d(12, 66, (3, 5), groups=3, rng=rng), 4 * 15, (66, 4, 3, 5)),
    ],
)
def test_init_matches_torch_default_bounds(make, fan_in, weight_shape):
    layer = make(0)
    w, b = layer.params["weight"], layer.params["bias"]
    bound = 1 / math.sqrt(fan_in)
    assert w.shape == weight_shape and w.dtype == np.float32 and b.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # Uniform(-b, b) has std b/sqrt(3); with >= 3960 draws the sample std is within 2% (about 3 sigma).
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    # torch's own init of the same layer has the same bound (kaiming_uniform_ with a=sqrt(5)).
    torch_layer = nn.Linear(300, 50) if isinstance(layer, L.Linear) else nn.Conv2d(12, 66, (3, 5), groups=3)
    assert torch_layer.weight.abs().max().item() == pytest.approx(bound, rel=0.01)
    # Same seed, same weights; another seed, other weights.
    np.testing.assert_array_equal(make(0).params["weight"], w)
    assert not np.array_equal(make(1).params["weight"], w)


def test_global_seed_makes_default_init_repeatable():
    seed_everything(3)
    a = L.Linear(4, 3).params["weight"].copy()
    seed_everything(3)
    np.testing.assert_array_equal(L.Linear(4, 3).params["weight"], a)


def test_dropout_train_and_eval():
    x = np.ones((200, 100), dtype=np.float32)
    drop = L.Dropout(0.25, rng=0)
    out = drop.forward(x)
    kept = out != 0
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    assert kept.mean() == pytest.approx(0.75, abs=0.01)  # 20000 draws: std of the mean ~0.003
    dx = drop.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx, out)  # the same mask and scale on the way back
    drop.eval()
    np.testing.assert_array_equal(drop.forward(x), x)
    np.testing.assert_array_equal(drop.backward(x), x)
    with pytest.raises(ValueError, match=r"p=1.5 is not possible: use a probability in \[0, 1\]"):
        L.Dropout(1.5)


def _small_cnn(dtype=np.float64, seed=0, p=0.0):
    rng = np.random.default_rng(seed)
    return L.Sequential(
        L.Conv2d(1, 4, 3, padding=1, dtype=dtype, rng=rng),
        L.ReLU(),
        L.MaxPool2d(2),
        L.Conv2d(4, 6, 3, dtype=dtype, rng=rng),
        L.Tanh(),
        L.AvgPool2d(2),
        L.Flatten(),
        L.Dropout(p, rng=rng),
        L.Linear(6 * 2 * 2, 5, dtype=dtype, rng=rng),
        L.Sigmoid(),
        L.Linear(5, 3, dtype=dtype, rng=rng),
    )


def _torch_copy(model):
    theirs = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Identity(),
        nn.Linear(24, 5),
        nn.Sigmoid(),
        nn.Linear(5, 3),
    ).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    return theirs


def test_sequential_matches_torch_sequential():
    model = _small_cnn()
    theirs = _torch_copy(model)
    x = np.random.default_rng(2).standard_normal((3, 1, 12, 12))
    out = model(x)
    dout = np.random.default_rng(3).standard_normal(out.shape)
    dx = model.backward(dout)
    tx = torch.tensor(x, requires_grad=True)
    tout = theirs(tx)
    tout.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, tout.detach().numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(dx, tx.grad.numpy(), atol=ATOL, rtol=0)
    torch_grads = {name: p.grad.numpy() for name, p in theirs.named_parameters()}
    assert [name for name, _ in model.named_gradients()] == list(torch_grads)
    for name, grad in model.named_gradients():
        np.testing.assert_allclose(grad, torch_grads[name], atol=ATOL, rtol=0, err_msg=name)


def test_parameters_and_gradients_are_aligned_live_arrays():
    model = _small_cnn()
    params, grads = model.parameters(), model.gradients()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias", "8.weight", "8.bias", "10.weight", "10.bias"]
    assert [p.shape for p in params] == [g.shape for g in grads]
    assert model.num_parameters() == sum(p.size for p in params) == 40 + 222 + 125 + 18
    x = np.random.default_rng(4).standard_normal((2, 1, 12, 12))
    model.backward(np.ones_like(model(x)))
    # backward writes into the very arrays returned earlier, so an optimizer can keep the lists
    assert all(g is h for g, h in zip(grads, model.gradients()))
    assert all(np.abs(g).sum() > 0 for g in grads)
    before = model(x).copy()
    for p, g in zip(params, grads):
        p -= 0.1 * g  # an in-place update changes the model
    assert not np.allclose(model(x), before)
    model.zero_grad()
    assert all(not g.any() for g in model.gradients())


def test_backward_overwrites_gradients_instead_of_accumulating():
    layer = L.Linear(3, 2, dtype=np.float64, rng=0)
    x = np.ones((4, 3))
    layer.forward(x)
    layer.backward(np.ones((4, 2)))
    first = layer.grads["weight"].copy()
    layer.forward(x)
    layer.backward(np.ones((4, 2)))
    np.testing.assert_array_equal(layer.grads["weight"], first)


def test_train_eval_propagates_to_dropout():
    model = _small_cnn(p=0.5)
    x = np.random.default_rng(5).standard_normal((4, 1, 12, 12))
    model.eval()
    assert not model.training and not model[7].training
    np.testing.assert_array_equal(model(x), model(x))  # deterministic in eval mode
    model.train()
    assert model.training and model[7].training
    assert not np.allclose(model(x), model(x))  # a fresh dropout mask per call


def test_state_dict_roundtrip_and_errors(tmp_path):
    model, other = _small_cnn(seed=0), _small_cnn(seed=1)
    state = model.state_dict()
    assert list(state) == [n for n, _ in model.named_parameters()]
    np.savez(tmp_path / "ckpt.npz", **state)
    params_before = other.parameters()
    with np.load(tmp_path / "ckpt.npz") as data:
        other.load_state_dict(dict(data))
    assert all(p is q for p, q in zip(params_before, other.parameters()))  # loaded in place
    x = np.random.default_rng(6).standard_normal((2, 1, 12, 12))
    np.testing.assert_array_equal(model(x), other(x))
    # a snapshot: training the model afterwards does not change it
    model.parameters()[0][...] += 1
    assert not np.array_equal(state["0.weight"], model.parameters()[0])

    bad = dict(state, **{"8.weight": np.zeros((5, 25))})
    message = r"1 tensor\(s\) differ in shape \(e\.g\. '8\.weight': \(5, 25\) saved, \(5, 24\) in the model\)"
    with pytest.raises(ValueError, match=message):
        other.load_state_dict(bad)
    missing = {k: v for k, v in state.items() if k != "0.bias"}
    with pytest.raises(ValueError, match=r"1 are missing from it \(e\.g\. '0\.bias'\)"):
        other.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"1 are not in the model \(e\.g\. '99\.weight'\)"):
        other.load_state_dict(dict(state, **{"99.weight": np.zeros(1)}))


def test_dtype_mismatch_and_bad_shapes_raise():
    layer = L.Linear(4, 2)
    with pytest.raises(ValueError, match=r"float32 parameters but got a float64 input of shape \(3, 4\)"):
        layer(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"Linear\(4, 2\) expects input of shape \(..., 4\); got \(3, 5\)"):
        layer(np.zeros((3, 5), dtype=np.float32))
    conv = L.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"Channel mismatch: x of shape \(1, 2, 5, 5\) has 2 channels"):
        conv(np.zeros((1, 2, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="groups=2 must divide in_channels=3"):
        L.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        L.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="Sequential item 1 is a int"):
        L.Sequential(L.ReLU(), 3)


def test_astype_converts_a_model_for_float64_checks():
    model = _small_cnn(dtype=np.float32)
    model.astype(np.float64)
    assert all(p.dtype == np.float64 for p in model.parameters() + model.gradients())
    assert model(np.zeros((1, 1, 12, 12))).dtype == np.float64


def test_simple_cnn_builds_the_lab_design():
    from labutils.scratch.cnn import simple_cnn

    model = simple_cnn(rng=0)
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    assert model(x).shape == (2, 10)
    assert isinstance(model[2], L.MaxPool2d) and isinstance(simple_cnn(pool="avg")[2], L.AvgPool2d)
    # conv 8*9+8, conv 16*8*9+16, fc 784*64+64, fc 64*10+10
    assert model.num_parameters() == 80 + 1168 + 50240 + 650
    assert simple_cnn(hidden=None, rng=0).num_parameters() == 80 + 1168 + 7850
    with pytest.raises(ValueError, match="Unknown pool 'min'"):
        simple_cnn(pool="min")
