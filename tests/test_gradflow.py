"""labutils.gradflow: recorded gradient norms and dead-ReLU fractions against hand computations.

The hand side: ``torch.linalg.vector_norm`` of each layer's ``.grad``, and dead fractions computed from the
ReLU outputs themselves (captured by a separate hook), unit by unit.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from labutils import gradflow
from labutils.gradflow import (
    GradientRecorder,
    dead_fraction,
    first_last_ratio,
    grad_norms_at_init,
    layer_grad_norms,
    unit_maxima,
)
from labutils.models import MLP, ResNet, SimpleCNN

torch.set_num_threads(1)
RTOL = 1e-5  # float32 norms, computed by the same kernel on both sides: they agree far closer than this


def _batch(n=32, d=20, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def _step(model, x, y):
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()


def _hand_norms(model):
    """Layer names, weight and bias gradient norms of every Linear/Conv2d layer (NaN: no bias or no gradient)."""

    def norm(p):
        return np.nan if p is None or p.grad is None else torch.linalg.vector_norm(p.grad.float()).item()

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return (
        [n for n, _ in layers],
        np.array([norm(m.weight) for _, m in layers]),
        np.array([norm(m.bias) for _, m in layers]),
    )


def _capture_relu_outputs(model, types=(nn.ReLU, nn.LeakyReLU)):
    """Every ReLU output of the next forward passes, captured by a hook of the test's own."""
    outputs = {}
    for name, m in model.named_modules():
        if isinstance(m, types):
            m.register_forward_hook(lambda mod, i, o, name=name: outputs.__setitem__(name, o.detach().clone()))
    return outputs


def _hand_dead(output):
    """Fraction of units (features, or channels of a convolution) that are 0 at every example (and position)."""
    per_unit = output.transpose(0, 1).reshape(output.shape[1], -1)  # (units, examples x positions)
    return (per_unit == 0).all(dim=1).float().mean().item()


def _hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules() if isinstance(m, nn.ReLU))


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("depth", [2, 9])
def test_recorded_norms_equal_hand_computation(residual, depth):
    torch.manual_seed(0)
    model = MLP(20, 3, width=8, depth=depth, residual=residual)
    recorder = GradientRecorder(model, every=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected_w, expected_b = [], []
    with recorder:
        for step in range(4):
            _step(model, *_batch(seed=step))
            names, w, b = _hand_norms(model)
            expected_w.append(w), expected_b.append(b)
            assert recorder.record(step) is True
            opt.step()
    h = recorder.history
    assert h["layers"] == names == recorder.layer_names and len(names) == depth + 1
    assert h["steps"].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(h["weight"], np.stack(expected_w), rtol=RTOL)
    np.testing.assert_allclose(h["bias"], np.stack(expected_b), rtol=RTOL)
    assert len(set(h["weight"][:, 0].tolist())) == 4  # the steps really differ
    latest = recorder.latest()
    assert latest["weight"] == pytest.approx(dict(zip(names, expected_w[-1])), rel=RTOL)
    assert recorder.at(2) == pytest.approx(dict(zip(names, expected_w[2])), rel=RTOL)
    assert recorder.at(1, "bias") == pytest.approx(dict(zip(names, expected_b[1])), rel=RTOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_norms_of_other_dtypes(dtype):
    """bfloat16 gradients are measured in float32; float64 ones keep float64 precision."""
    torch.manual_seed(0)
    model = MLP(20, 3, width=8, depth=3).to(dtype)
    x, y = _batch()
    recorder = GradientRecorder(model, every=1)
    _step(model, x.to(dtype), y)
    recorder.record(0)
    grads = [m.weight.grad for m in model.modules() if isinstance(m, nn.Linear)]
    hand = [torch.linalg.vector_norm(g.to(torch.float32 if dtype == torch.bfloat16 else dtype)).item() for g in grads]
    rtol = 1e-6 if dtype == torch.bfloat16 else 1e-13
    np.testing.assert_allclose(recorder.history["weight"][0], hand, rtol=rtol)


def test_conv_layers_without_bias_get_nan_and_are_left_out_of_latest():
    torch.manual_seed(0)
    model = ResNet(8, width=4)
    recorder = GradientRecorder(model)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    _step(model, x, y)
    assert recorder.record(0)  # step 0 is recorded whatever the stride
    names, w, b = _hand_norms(model)
    h = recorder.history
    assert h["layers"] == names and "stage2.0.shortcut.0" in names
    np.testing.assert_allclose(h["weight"][0], w, rtol=RTOL)
    assert np.isnan(h["bias"][0, :-1]).all() and h["bias"][0, -1] == pytest.approx(b[-1], rel=RTOL)
    assert list(recorder.latest()["bias"]) == ["fc"]


def test_layers_without_gradient_are_nan():
    model = MLP(20, 3, width=8, depth=3)
    for p in model.stem.parameters():
        p.requires_grad_(False)
    recorder = GradientRecorder(model)
    assert recorder.layer_names[0] == "blocks.0.linear"  # frozen layers are not measured
    _step(model, *_batch())
    model.fc.weight.grad = None  # as if the head took no part in this backward pass
    recorder.record(0)
    w = recorder.history["weight"][0]
    assert np.isnan(w[-1]) and np.isfinite(w[:-1]).all()
    assert "fc" not in recorder.latest()["weight"] and "fc" in recorder.latest()["bias"]


@pytest.mark.parametrize("missing", ["stem.weight", "fc.weight"])
def test_steps_with_a_missing_gradient_among_full_steps(missing):
    """A step where a layer took no part has NaN in that column only; the steps around it are whole."""
    torch.manual_seed(0)
    model = MLP(20, 3, width=8, depth=9, residual=True)
    recorder = GradientRecorder(model, every=1)
    param = model.get_parameter(missing)
    expected = []
    with recorder:
        for step in range(5):
            _step(model, *_batch(seed=step))
            if step in (1, 3):
                param.grad = None
            expected.append(_hand_norms(model)[1])
            recorder.record(step)
    h = recorder.history
    np.testing.assert_allclose(h["weight"], np.stack(expected), rtol=RTOL, equal_nan=True)
    column = h["layers"].index(missing.rsplit(".", 1)[0])
    assert np.isnan(h["weight"][[1, 3], column]).all() and np.isfinite(h["weight"][[0, 2, 4]]).all()
    assert np.isfinite(np.delete(h["weight"], column, axis=1)).all()


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_gradients_of_a_create_graph_backward_are_recorded_as_numbers():
    torch.manual_seed(0)
    model = MLP(20, 3, width=8, depth=3)
    recorder = GradientRecorder(model)
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(_batch()[0]), _batch()[1]).backward(create_graph=True)
    assert model.fc.weight.grad.requires_grad
    recorder.record(0)
    np.testing.assert_allclose(recorder.history["weight"][0], _hand_norms(model)[1], rtol=RTOL)
    assert all(type(v) is float for v in recorder.latest()["weight"].values())
    model.zero_grad(set_to_none=True)


def test_dead_relu_fraction_equals_hand_computation():
    torch.manual_seed(0)
    model = MLP(20, 3, width=10, depth=3)
    with torch.no_grad():
        model.stem.bias[:4] = -1e3  # 4 of 10 stem units can never fire: dead
        model.blocks[0].linear.bias[:1] = -1e3
    outputs = _capture_relu_outputs(model)
    with GradientRecorder(model) as recorder:
        _step(model, *_batch())
        recorder.record(0)
    hand = [_hand_dead(outputs[n]) for n in recorder.relu_names]
    assert hand[0] == pytest.approx(0.4) and hand[1] >= 0.1
    np.testing.assert_allclose(recorder.history["dead_relu"][0], hand, rtol=0, atol=1e-7)
    assert recorder.latest()["dead_relu"]["stem_act"] == pytest.approx(0.4, abs=1e-7)
    assert dead_fraction(outputs["stem_act"]) == pytest.approx(0.4, abs=1e-7)


def test_dead_channels_in_convnets():
    torch.manual_seed(0)
    model = SimpleCNN(width=4)
    with torch.no_grad():
        model.body[0][1].bias[:1] = -1e3  # first BatchNorm's shift kills channel 0 of layer 1
    outputs = _capture_relu_outputs(model)
    recorder = GradientRecorder(model).attach()
    _step(model, torch.randn(8, 3, 12, 12), torch.randint(0, 10, (8,)))
    recorder.record(0)
    recorder.detach()
    hand = [_hand_dead(outputs[n]) for n in recorder.relu_names]
    dead = recorder.history["dead_relu"][0]
    assert len(hand) >= 2 and dead[0] == pytest.approx(0.25, abs=1e-7)
    np.testing.assert_allclose(dead, hand, rtol=0, atol=1e-7)


def test_unit_maxima_per_feature_and_per_channel():
    g = torch.Generator().manual_seed(0)
    dense = torch.relu(torch.randn(64, 30, generator=g))
    dense[:, :3] = 0.0
    dense[3, 1] = 1e-45  # unit 1 fires once, at the smallest positive float32: alive
    conv = torch.relu(torch.randn(16, 8, 5, 5, generator=g))
    conv[:, 2] = 0.0
    torch.testing.assert_close(unit_maxima(dense), dense.max(dim=0).values, rtol=0, atol=0)
    torch.testing.assert_close(unit_maxima(conv), conv.transpose(0, 1).flatten(1).max(dim=1).values, rtol=0, atol=0)
    assert dead_fraction(dense) == pytest.approx(2 / 30) and dead_fraction(conv) == pytest.approx(1 / 8)


def test_evaluation_passes_do_not_overwrite_training_statistics():
    torch.manual_seed(0)
    model = MLP(20, 3, width=10, depth=2)
    with torch.no_grad():
        model.stem.bias[:5] = -1e3
    recorder = GradientRecorder(model, every=1)
    with recorder:
        _step(model, *_batch())
        with torch.no_grad():
            model.stem.bias[:5] = 0.0
            model(torch.randn(16, 20) + 100)  # an evaluation batch where nothing is dead
        recorder.record(0)
        recorder.record(1)  # no training forward since: NaN, not stale numbers
    assert recorder.history["dead_relu"][0, 0] == pytest.approx(0.5)
    assert np.isnan(recorder.history["dead_relu"][1]).all()


def test_attach_detach_and_context_manager():
    model = MLP(20, 3, width=8, depth=3)
    recorder = GradientRecorder(model, every=1)
    assert not recorder.attached and _hooks(model) == 0
    with recorder as r:
        assert r is recorder and recorder.attached and _hooks(model) == 3  # one per ReLU
        recorder.attach()  # idempotent
        assert _hooks(model) == 3
    assert not recorder.attached and _hooks(model) == 0
    _step(model, *_batch())
    recorder.record(0)  # gradient norms need no hooks; dead fractions are NaN without them
    assert np.isfinite(recorder.history["weight"]).all() and np.isnan(recorder.history["dead_relu"]).all()


def test_hooks_are_in_place_only_for_the_forward_passes_of_recorded_steps():
    """every=3: the ReLUs carry hooks during steps 0, 3, 6, 9 and none in between (a hook slows every call)."""
    model = MLP(20, 3, width=8, depth=3)
    with GradientRecorder(model, every=3) as recorder:
        for step in range(10):
            assert _hooks(model) == (3 if step % 3 == 0 else 0), step
            _step(model, *_batch(seed=step))
            recorder.record(step)
    assert _hooks(model) == 0
    assert np.isfinite(recorder.history["dead_relu"]).all() and len(recorder) == 4


def test_every_records_only_due_steps_exactly():
    """every=3: norms and dead fractions of steps 0, 3, 6, 9 equal the hand computation on those steps."""
    torch.manual_seed(0)
    model = MLP(20, 3, width=10, depth=3)
    with torch.no_grad():
        model.stem.bias[:3] = -1e3  # 3 of 10 stem units dead on every batch
    outputs = _capture_relu_outputs(model)
    recorder = GradientRecorder(model, every=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    expected_w, expected_b, expected_dead = [], [], []
    with recorder:
        for step in range(11):
            with torch.no_grad():  # a different number of dead units in the first block each step
                model.blocks[0].linear.bias[: step % 5 + 1] = -1e3
            _step(model, *_batch(seed=step))
            if step % 3 == 0:
                _, w, b = _hand_norms(model)
                expected_w.append(w), expected_b.append(b)
                expected_dead.append([_hand_dead(outputs[n]) for n in recorder.relu_names])
            assert recorder.record(step) == (step % 3 == 0)
            opt.step()
    h = recorder.history
    assert h["steps"].tolist() == [0, 3, 6, 9]
    np.testing.assert_allclose(h["weight"], np.stack(expected_w), rtol=RTOL)
    np.testing.assert_allclose(h["bias"], np.stack(expected_b), rtol=RTOL)
    np.testing.assert_allclose(h["dead_relu"], np.array(expected_dead), rtol=0, atol=1e-7)
    assert (h["dead_relu"][:, 0] >= 0.3).all() and len({tuple(r) for r in h["dead_relu"]}) > 1


def test_every_and_long_histories_and_reset():
    model = MLP(20, 3, width=4, depth=2)
    recorder = GradientRecorder(model, every=3)
    _step(model, *_batch())
    recorded = [recorder.record(s) for s in range(600)]
    assert sum(recorded) == 200 and len(recorder) == 200
    h = recorder.history
    assert h["weight"].shape == (200, 3) and h["steps"][:3].tolist() == [0, 3, 6]
    np.testing.assert_allclose(h["weight"], np.tile(_hand_norms(model)[1], (200, 1)), rtol=RTOL)
    recorder.reset()
    assert len(recorder) == 0 and recorder.latest() == {"weight": {}, "bias": {}, "dead_relu": {}}
    assert recorder.history["weight"].shape == (0, 3) and recorder.history["dead_relu"].shape == (0, 2)


def test_the_default_stride():
    model = MLP(20, 3, width=4, depth=2)
    recorder = GradientRecorder(model)
    assert recorder.every == gradflow.DEFAULT_EVERY == 20
    _step(model, *_batch())
    assert [s for s in range(61) if recorder.record(s)] == [0, 20, 40, 60]


def test_a_deep_copy_of_a_watched_model_works_and_is_not_watched():
    """A deep copy carries the hooks along (they are the model's), but its passes do not feed the recorder."""
    torch.manual_seed(0)
    model = MLP(20, 3, width=8, depth=3)
    with torch.no_grad():
        model.stem.bias[:2] = -1e3  # 2 of 8 dead in the original ...
    x, y = _batch()
    with GradientRecorder(model, every=1) as recorder:
        twin = copy.deepcopy(model)
        with torch.no_grad():
            torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)
            twin.stem.bias[:6] = -1e3  # ... 6 of 8 in the copy
        _step(twin, x, y)
        recorder.record(0)  # the copy's training pass is not the watched model's
        _step(model, x, y)
        recorder.record(1)
        _step(twin, x, y)  # the copy's pass between the model's pass and its record changes nothing
        recorder.record(2)
    dead = recorder.history["dead_relu"]
    assert np.isnan(dead[0]).all() and dead[1, 0] == pytest.approx(0.25) and np.isnan(dead[2]).all()
    assert _hooks(model) == 0


def test_two_recorders_on_one_model_detach_in_any_order():
    model = MLP(20, 3, width=8, depth=3)
    with torch.no_grad():
        model.stem.bias[:2] = -1e3
    x, y = _batch()
    first, second = GradientRecorder(model, every=1).attach(), GradientRecorder(model, every=1).attach()
    _step(model, x, y)
    first.record(0), second.record(0)
    first.detach()
    _step(model, x, y)
    second.record(1)
    second.detach()
    assert _hooks(model) == 0
    np.testing.assert_array_equal(first.history["dead_relu"][0], second.history["dead_relu"][0])
    assert second.history["dead_relu"][1, 0] == pytest.approx(0.25) and len(first) == 1 and len(second) == 2


def test_other_activations_use_the_maximum():
    """relu_types may name activations with negative outputs (LeakyReLU): dead means no positive output."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 8), nn.LeakyReLU(0.1), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].bias[:2] = -1e3
    outputs = _capture_relu_outputs(model)
    with GradientRecorder(model, relu_types=(nn.LeakyReLU,)) as recorder:
        _step(model, *_batch())
        recorder.record(0)
    hand = (outputs["1"].amax(dim=0) <= 0).float().mean().item()
    assert hand == pytest.approx(0.25) and recorder.latest()["dead_relu"] == {"1": pytest.approx(hand)}


def test_no_hooks_without_relus():
    model = nn.Sequential(nn.Linear(20, 8), nn.Tanh(), nn.Linear(8, 3))
    with GradientRecorder(model) as recorder:
        assert not any(m._forward_hooks for m in model.modules())
        _step(model, *_batch())
        recorder.record(0)
    assert recorder.history["dead_relu"].shape == (1, 0)
    mlp = MLP(20, 3, width=8, depth=3)
    with GradientRecorder(mlp, relu_types=()):
        assert _hooks(mlp) == 0


def test_bad_arguments():
    model = MLP(20, 3, width=4, depth=2)
    with pytest.raises(ValueError, match="every=0"):
        GradientRecorder(model, every=0)
    with pytest.raises(ValueError, match="no trainable layers"):
        GradientRecorder(nn.Sequential(nn.ReLU()))
    recorder = GradientRecorder(model)
    with pytest.raises(ValueError, match="Nothing recorded"):
        recorder.at()
    _step(model, *_batch())
    recorder.record(40)
    with pytest.raises(ValueError, match="Step 4 was not recorded"):
        recorder.at(4)
    with pytest.raises(ValueError, match="kind"):
        recorder.at(40, kind="grad")


def test_grad_norms_at_init_is_one_clean_backward_pass():
    torch.manual_seed(0)
    model = MLP(20, 3, width=8, depth=3, norm="batch").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _batch()
    norms = grad_norms_at_init(model, (x, y))
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    model.train()
    _step(model, x, y)
    names, w, b = _hand_norms(model)
    assert list(norms) == names
    np.testing.assert_allclose(list(norms.values()), w, rtol=RTOL)
    np.testing.assert_allclose(list(grad_norms_at_init(model, (x, y), kind="bias").values()), b, rtol=RTOL)


def test_layer_grad_norms_after_training_and_first_last_ratio():
    torch.manual_seed(0)
    model = MLP(20, 3, width=8, depth=3)
    x, y = _batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        _step(model, x, y)
        opt.step()
    norms = layer_grad_norms(model, (x, y))
    assert norms == grad_norms_at_init(model, (x, y))  # the same measurement under its other name
    _step(model, x, y)
    _, w, _ = _hand_norms(model)
    assert first_last_ratio(norms) == pytest.approx(w[0] / w[-1], rel=RTOL)
    assert first_last_ratio({"a": 1e-3, "b": 2.0, "c": 0.5}) == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="two layers"):
        first_last_ratio({"a": 1.0})


@pytest.mark.parametrize("every", [1, 2])
def test_recorder_works_inside_fit(every):
    """fit calls record once per step and runs evaluation passes between epochs; with every=2 the hooks come and
    go, and every recorded step still has its dead fractions."""
    from torch.utils.data import DataLoader, TensorDataset

    from labutils.train import fit

    torch.manual_seed(0)
    x, y = _batch(n=96)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    model = MLP(20, 3, width=8, depth=3, residual=True)
    with GradientRecorder(model, every=every) as recorder:
        fit(model, loader, loader, epochs=2, lr=1e-2, grad_recorder=recorder, progress=False, device="cpu")
    h = recorder.history
    assert h["steps"].tolist() == list(range(0, 6, every))
    assert np.isfinite(h["weight"]).all() and np.isfinite(h["dead_relu"]).all()
    assert (h["dead_relu"] >= 0).all() and (h["dead_relu"] <= 1).all()
    assert _hooks(model) == 0


def test_gradflow_does_not_import_its_plots():
    code = "import sys, labutils.gradflow; print('labutils.gradflow_plots' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
