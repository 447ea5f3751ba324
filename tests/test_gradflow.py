"""labutils.gradflow: recorded gradient norms and dead-ReLU fractions against hand computations."""

from __future__ import annotations

import math

import matplotlib
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
    plot_grad_histograms,
    plot_layer_norms,
    plot_norm_heatmap,
    unit_maxima,
)
from labutils.models import MLP, ResNet, SimpleCNN

matplotlib.use("Agg")
torch.set_num_threads(1)


def _batch(n=32, d=20, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def _step(model, x, y):
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()


def _hand_norms(model):
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    weight = [torch.linalg.vector_norm(m.weight.grad).item() for _, m in layers]
    bias = [torch.linalg.vector_norm(m.bias.grad).item() if m.bias is not None else np.nan for _, m in layers]
    return [n for n, _ in layers], np.array(weight), np.array(bias)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("depth", [2, 9])
def test_recorded_norms_equal_hand_computation(residual, depth):
    """depth 9: the eight 8x8 hidden weights and the nine biases of width 8 are measured as stacked groups."""
    torch.manual_seed(0)
    model = MLP(20, 3, width=8, depth=depth, residual=residual)
    recorder = GradientRecorder(model)
    assert [stop - start for start, stop, _ in recorder._norms.groups] == ([8, 9] if depth == 9 else [])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected_w, expected_b = [], []
    with recorder:
        for step in range(4):
            x, y = _batch(seed=step)
            _step(model, x, y)
            names, w, b = _hand_norms(model)
            expected_w.append(w), expected_b.append(b)
            recorder.record(step)
            opt.step()
    h = recorder.history
    assert h["layers"] == names == recorder.layer_names
    assert h["steps"].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(h["weight"], np.stack(expected_w), rtol=1e-5)
    np.testing.assert_allclose(h["bias"], np.stack(expected_b), rtol=1e-5)
    latest = recorder.latest()
    assert latest["weight"] == pytest.approx(dict(zip(names, expected_w[-1])), rel=1e-5)
    assert recorder.at(2) == pytest.approx(dict(zip(names, expected_w[2])), rel=1e-5)


def test_conv_layers_without_bias_get_nan_and_are_left_out_of_latest():
    torch.manual_seed(0)
    model = ResNet(8, width=4)
    recorder = GradientRecorder(model)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    _step(model, x, y)
    recorder.record(0)
    names, w, b = _hand_norms(model)
    h = recorder.history
    assert h["layers"] == names and "stage2.0.shortcut.0" in names
    np.testing.assert_allclose(h["weight"][0], w, rtol=1e-5)
    assert np.isnan(h["bias"][0, :-1]).all() and h["bias"][0, -1] == pytest.approx(b[-1], rel=1e-5)
    assert list(recorder.latest()["bias"]) == ["fc"]


def test_layers_without_gradient_are_nan():
    model = MLP(20, 3, width=8, depth=3)
    for p in model.stem.parameters():
        p.requires_grad_(False)
    recorder = GradientRecorder(model)
    assert recorder.layer_names[0] == "blocks.0.linear"  # frozen layers are not measured
    model.fc.weight.grad = None
    x, y = _batch()
    _step(model, x, y)
    model.fc.weight.grad = None  # as if the head took no part in this backward pass
    recorder.record(0)
    w = recorder.history["weight"][0]
    assert np.isnan(w[-1]) and np.isfinite(w[:-1]).all()


@pytest.mark.parametrize("missing", ["stem.weight", "fc.weight"])
def test_steps_with_a_missing_gradient_among_full_steps_equal_the_reference(missing):
    """A record keeps its norms as the kernels return them and joins many steps into rows at once; a step where a
    layer took no part (its own NaN row), whether the first measured gradient or a later one, sits among normal
    steps in the same block, and the rows still equal the readable recorder's."""
    torch.manual_seed(0)
    model = MLP(20, 3, width=8, depth=9, residual=True)
    fast, reference = GradientRecorder(model), gradflow.ReferenceGradientRecorder(model)
    param = model.get_parameter(missing)
    with fast, reference:
        for step in range(5):
            _step(model, *_batch(seed=step))
            if step in (1, 3):
                param.grad = None
            fast.record(step), reference.record(step)
    hf, hr = fast.history, reference.history
    for key in ("weight", "bias", "dead_relu"):
        np.testing.assert_allclose(hf[key], hr[key], rtol=1e-6, atol=0, equal_nan=True, err_msg=key)
    column = hr["layers"].index(missing.rsplit(".", 1)[0])
    assert np.isnan(hf["weight"][[1, 3], column]).all() and np.isfinite(hf["weight"][[0, 2, 4]]).all()


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_gradients_of_a_create_graph_backward_are_recorded_as_numbers():
    """After ``backward(create_graph=True)`` the gradients are part of a graph; the recorder keeps plain numbers
    (nothing that would hold the graph alive until the next copy to the host)."""
    torch.manual_seed(0)
    model = MLP(20, 3, width=8, depth=3)
    recorder = GradientRecorder(model)
    x, y = _batch()
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward(create_graph=True)
    assert model.fc.weight.grad.requires_grad
    recorder.record(0)
    assert not any(t.requires_grad for t in recorder._rows[-1])
    np.testing.assert_allclose(recorder.history["weight"][0], _hand_norms(model)[1], rtol=1e-5)
    model.zero_grad(set_to_none=True)


# The recorder reduces small nn.ReLU outputs in record() (stacked by shape) and other ones in the hook;
# STACK_NUMEL = 0 sends every output down the second path.
BOTH_PATHS = pytest.mark.parametrize("stack_numel", [1 << 16, 0], ids=["stacked", "in-hook"])


@BOTH_PATHS
def test_dead_relu_fraction_equals_hand_computation(stack_numel):
    torch.manual_seed(0)
    model = MLP(20, 3, width=10, depth=3)
    with torch.no_grad():
        model.stem.bias[:4] = -1e3  # 4 of 10 stem units can never fire: dead
        model.blocks[0].linear.bias[:1] = -1e3
    outputs = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(lambda mod, i, o, name=name: outputs.__setitem__(name, o.detach().clone()))
    recorder = GradientRecorder(model)
    recorder._dead.stack_numel = stack_numel
    x, y = _batch()
    with recorder:
        _step(model, x, y)
        recorder.record(0)
    hand = [(outputs[n] == 0).all(dim=0).float().mean().item() for n in recorder.relu_names]
    assert hand[0] == pytest.approx(0.4) and hand[1] >= 0.1
    np.testing.assert_allclose(recorder.history["dead_relu"][0], hand, rtol=1e-6)
    assert recorder.latest()["dead_relu"]["stem_act"] == pytest.approx(0.4)
    assert dead_fraction(outputs["stem_act"]) == pytest.approx(0.4)


@BOTH_PATHS
def test_dead_channels_in_convnets(stack_numel):
    torch.manual_seed(0)
    model = SimpleCNN(width=4)
    with torch.no_grad():
        model.body[0][1].bias[:1] = -1e3  # first BatchNorm's shift kills channel 0 of layer 1
    recorder = GradientRecorder(model)
    recorder._dead.stack_numel = stack_numel
    recorder.attach()
    x, y = torch.randn(8, 3, 12, 12), torch.randint(0, 10, (8,))
    _step(model, x, y)
    recorder.record(0)
    recorder.detach()
    out = model.body[1](model.body[0](x)).detach()
    hand = (out.amax(dim=(0, 2, 3)) <= 0).float().mean().item()
    dead = recorder.history["dead_relu"][0]
    assert dead[0] == pytest.approx(0.25) and dead[1] == pytest.approx(hand)


def test_evaluation_passes_do_not_overwrite_training_statistics():
    torch.manual_seed(0)
    model = MLP(20, 3, width=10, depth=2)
    with torch.no_grad():
        model.stem.bias[:5] = -1e3
    recorder = GradientRecorder(model)
    with recorder:
        _step(model, *_batch())
        with torch.no_grad():
            model.stem.bias[:5] = 0.0
            model(torch.randn(16, 20) + 100)  # an evaluation batch where nothing is dead
        recorder.record(0)
        recorder.record(1)  # no training forward since: NaN, not stale numbers
    assert recorder.history["dead_relu"][0, 0] == pytest.approx(0.5)
    assert np.isnan(recorder.history["dead_relu"][1]).all()


def _watched(m: nn.Module) -> bool:
    return "forward" in m.__dict__  # attached: the ReLU's forward is wrapped on the instance


def test_attach_detach_and_context_manager():
    model = MLP(20, 3, width=8, depth=3)
    recorder = GradientRecorder(model)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert not recorder.attached and not any(map(_watched, relus))
    with recorder as r:
        assert r is recorder and recorder.attached and all(map(_watched, relus))
        inner = [m.forward for m in relus]
        recorder.attach()  # idempotent
        assert [m.forward for m in relus] == inner
        assert all(not m._forward_hooks for m in relus)  # no hook: Module.__call__ keeps its fast path
    assert not recorder.attached and not any(map(_watched, relus))
    _step(model, *_batch())
    recorder.record(0)  # gradient norms need no hooks; dead fractions are NaN without them
    assert np.isfinite(recorder.history["weight"]).all() and np.isnan(recorder.history["dead_relu"]).all()


def test_a_deep_copy_of_a_watched_model_is_not_watched_and_detach_restores_the_forward():
    import copy

    model = MLP(20, 3, width=8, depth=3)
    x, y = _batch()
    with GradientRecorder(model) as recorder:
        twin = copy.deepcopy(model)
        assert not any(isinstance(m.forward, gradflow._Watch) for m in twin.modules())  # their own forward
        with torch.no_grad():
            torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)
        _step(twin, x, y)
        recorder.record(0)  # the copy's training pass is not the watched model's
    assert np.isnan(recorder.history["dead_relu"]).all()
    assert not any(map(_watched, model.modules()))


def test_two_recorders_on_one_model_detach_in_any_order():
    model = MLP(20, 3, width=8, depth=3)
    with torch.no_grad():
        model.stem.bias[:2] = -1e3  # two dead units in the first ReLU: fractions that are not all 0
    x, y = _batch()
    first, second = GradientRecorder(model).attach(), GradientRecorder(model).attach()
    _step(model, x, y)
    first.record(0), second.record(0)
    first.detach()  # the inner wrapper goes first: the second recorder keeps watching
    _step(model, x, y)
    second.record(1)
    second.detach()
    assert not any(map(_watched, model.modules()))
    np.testing.assert_array_equal(first.history["dead_relu"][0], second.history["dead_relu"][0])
    assert np.isfinite(second.history["dead_relu"]).all() and len(first) == 1 and len(second) == 2


def test_every_and_long_histories():
    model = MLP(20, 3, width=4, depth=2)
    recorder = GradientRecorder(model, every=3)
    _step(model, *_batch())
    recorded = [recorder.record(s) for s in range(600)]
    assert sum(recorded) == 200 and len(recorder) == 200
    h = recorder.history
    assert h["weight"].shape == (200, 3) and h["steps"][:3].tolist() == [0, 3, 6]
    assert np.allclose(h["weight"], h["weight"][0])  # same gradients every time
    recorder.reset()
    assert len(recorder) == 0 and recorder.latest() == {"weight": {}, "bias": {}, "dead_relu": {}}


def _relu_outputs(model):
    """Capture every ReLU output of the next forward passes (a hand-side record, independent of the recorder)."""
    outputs = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            m.register_forward_hook(lambda mod, i, o, name=name: outputs.__setitem__(name, o.detach().clone()))
    return outputs


def test_every_records_only_armed_steps_exactly():
    """every=3: norms and dead fractions of steps 0, 3, 6, 9 equal the hand computation on those steps, and the
    ReLU hooks do their reduction only in the forward passes of those steps."""
    torch.manual_seed(0)
    model = MLP(20, 3, width=10, depth=3)
    with torch.no_grad():
        model.stem.bias[:3] = -1e3  # 3 of 10 stem units dead on every batch
    outputs = _relu_outputs(model)
    recorder = GradientRecorder(model, every=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected_w, expected_b, expected_dead = [], [], []
    with recorder:
        for step in range(11):
            x, y = _batch(seed=step)
            _step(model, x, y)
            kept = [a is not None for a in recorder._dead.activity]  # what the hooks kept of this forward pass
            assert kept == [step % 3 == 0] * len(recorder.relu_names), step
            if step % 3 == 0:
                _, w, b = _hand_norms(model)
                expected_w.append(w), expected_b.append(b)
                expected_dead.append([(outputs[n] == 0).all(dim=0).float().mean().item() for n in recorder.relu_names])
            assert recorder.record(step) == (step % 3 == 0)
            opt.step()
    h = recorder.history
    assert h["steps"].tolist() == [0, 3, 6, 9]
    np.testing.assert_allclose(h["weight"], np.stack(expected_w), rtol=1e-5)
    np.testing.assert_allclose(h["bias"], np.stack(expected_b), rtol=1e-5)
    np.testing.assert_allclose(h["dead_relu"], np.array(expected_dead), rtol=0, atol=1e-12)
    assert (h["dead_relu"][:, 0] >= 0.3).all() and h["dead_relu"][0, 0] == pytest.approx(0.3)


def test_history_spanning_many_device_blocks_equals_hand_computation(monkeypatch):
    """Steps are copied to the host in blocks (FLUSH_STEPS, FLUSH_UNITS); block edges lose and mix nothing."""
    torch.manual_seed(1)
    model = MLP(20, 3, width=12, depth=3)
    outputs = _relu_outputs(model)
    recorder = GradientRecorder(model)
    monkeypatch.setattr(recorder, "FLUSH_STEPS", 4)
    monkeypatch.setattr(recorder, "FLUSH_UNITS", 60)  # 36 units a step: a block of 1 step
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    expected_w, expected_dead = [], []
    with recorder:
        for step in range(7):
            with torch.no_grad():  # a different number of dead units each step
                model.blocks[0].linear.bias[: step + 1] = -1e3
            _step(model, *_batch(seed=step))
            expected_w.append(_hand_norms(model)[1])
            expected_dead.append([(outputs[n] == 0).all(dim=0).float().mean().item() for n in recorder.relu_names])
            recorder.record(step)
            if step == 2:
                assert recorder.at(2, "dead_relu") == pytest.approx(dict(zip(recorder.relu_names, expected_dead[2])))
            assert recorder.latest()["weight"] == pytest.approx(dict(zip(recorder.layer_names, expected_w[-1])))
            opt.step()
        monkeypatch.setattr(recorder, "FLUSH_UNITS", 1 << 22)
        for step in range(7, 16):  # 9 more steps: blocks of FLUSH_STEPS = 4
            _step(model, *_batch(seed=step))
            expected_w.append(_hand_norms(model)[1])
            expected_dead.append([(outputs[n] == 0).all(dim=0).float().mean().item() for n in recorder.relu_names])
            recorder.record(step)
            opt.step()
            latest = recorder.latest()  # read every few steps, as fit does once per epoch
            assert latest["dead_relu"] == pytest.approx(dict(zip(recorder.relu_names, expected_dead[-1])))
    h = recorder.history
    assert h["steps"].tolist() == list(range(16))
    np.testing.assert_allclose(h["weight"], np.stack(expected_w), rtol=1e-5)
    np.testing.assert_allclose(h["dead_relu"], np.array(expected_dead), rtol=0, atol=1e-12)
    assert len({tuple(r) for r in h["dead_relu"][:7]}) == 7  # the rows really differ step to step


def test_dead_statistic_of_nonnegative_activations_is_exact():
    """For ReLU outputs the recorder tests the batch sum for 0 instead of the maximum: same verdict, including
    a unit whose only activity is one subnormal value, and NaN (not dead) in both."""
    g = torch.Generator().manual_seed(0)
    dense = torch.relu(torch.randn(64, 30, generator=g))
    dense[:, :3] = 0.0  # units 0, 1, 2 silent on the whole batch ...
    dense[3, 1] = 1e-45  # ... but unit 1 fires once, at the smallest positive float32
    dense[5, 2] = math.nan  # ... and unit 2 saw a NaN
    conv = torch.relu(torch.randn(16, 8, 5, 5, generator=g))
    conv[:, 2] = 0.0  # channel 2 silent at every example and position
    for out in (dense, conv, torch.zeros(7), torch.relu(torch.randn(7, generator=g))):
        assert torch.equal(gradflow._unit_activity(out, True) <= 0, unit_maxima(out) <= 0)
        torch.testing.assert_close(
            gradflow._unit_activity(out, False), unit_maxima(out), rtol=0, atol=0, equal_nan=True
        )
    assert (gradflow._unit_activity(dense, True) <= 0).nonzero().flatten().tolist() == [0]
    assert (gradflow._unit_activity(conv, True) <= 0).nonzero().flatten().tolist() == [2]


def test_an_output_changed_in_place_after_its_forward_pass_is_not_reported():
    """A kept ReLU output is reduced in record(); if it was changed in place since its forward pass (possible
    only after backward, as autograd guards it until then), its dead fraction is unknown: NaN, not a wrong number."""
    torch.manual_seed(0)
    model = MLP(20, 3, width=10, depth=3)
    kept = {}
    with GradientRecorder(model) as recorder:
        model.stem_act.register_forward_hook(lambda mod, i, o: kept.__setitem__("stem", o))
        _step(model, *_batch())
        recorder.record(0)
        _step(model, *_batch())
        with torch.no_grad():
            kept["stem"].fill_(0.0)  # every unit would look dead now
        recorder.record(1)
    dead = recorder.history["dead_relu"]
    assert recorder.relu_names[0] == "stem_act"
    assert 0 <= dead[0, 0] < 1 and np.isnan(dead[1, 0]) and np.isfinite(dead[:, 1:]).all()


def test_other_activations_use_the_maximum():
    """relu_types may name activations with negative outputs (LeakyReLU): dead means no positive output."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 8), nn.LeakyReLU(0.1), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].bias[:2] = -1e3
    outputs = _relu_outputs(model)
    with GradientRecorder(model, relu_types=(nn.LeakyReLU,)) as recorder:
        _step(model, *_batch())
        recorder.record(0)
    hand = (outputs["1"].amax(dim=0) <= 0).float().mean().item()
    assert hand == pytest.approx(0.25) and recorder.latest()["dead_relu"] == {"1": pytest.approx(hand)}


def test_no_hooks_without_relus():
    model = nn.Sequential(nn.Linear(20, 8), nn.Tanh(), nn.Linear(8, 3))
    with GradientRecorder(model) as recorder:
        assert not recorder.attached and not any(map(_watched, model.modules()))
        _step(model, *_batch())
        recorder.record(0)
    assert recorder.history["dead_relu"].shape == (1, 0)
    mlp = MLP(20, 3, width=8, depth=3)
    with GradientRecorder(mlp, relu_types=()) as recorder:
        assert not any(map(_watched, mlp.modules()))


def test_bad_arguments():
    model = MLP(20, 3, width=4, depth=2)
    with pytest.raises(ValueError, match="every"):
        GradientRecorder(model, every=0)
    with pytest.raises(ValueError, match="no trainable layers"):
        GradientRecorder(nn.Sequential(nn.ReLU()))
    recorder = GradientRecorder(model)
    with pytest.raises(ValueError, match="Nothing recorded"):
        recorder.at()
    _step(model, *_batch())
    recorder.record(5)
    with pytest.raises(ValueError, match="Step 4 was not recorded"):
        recorder.at(4)
    with pytest.raises(ValueError, match="kind"):
        recorder.at(5, kind="grad")


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
    np.testing.assert_allclose(list(norms.values()), w, rtol=1e-5)
    np.testing.assert_allclose(list(grad_norms_at_init(model, (x, y), kind="bias").values()), b, rtol=1e-5)


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
    assert first_last_ratio(norms) == pytest.approx(w[0] / w[-1], rel=1e-5)
    assert first_last_ratio({"a": 1e-3, "b": 2.0, "c": 0.5}) == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="two layers"):
        first_last_ratio({"a": 1.0})


def test_plots_return_the_numbers_they_draw():
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    model = MLP(20, 3, width=8, depth=4)
    recorder = GradientRecorder(model)
    with recorder:
        for step in range(5):
            _step(model, *_batch(seed=step))
            recorder.record(step)
    norms = recorder.at(4)
    fig, data = plot_layer_norms(norms, title="one")
    np.testing.assert_allclose(data[""], list(norms.values()))
    plt.close(fig)
    other = {"a": 1.0, "b": 0.1}
    fig, data = plot_layer_norms({"plain": norms, "residual": other})
    assert set(data) == {"plain", "residual"} and data["residual"].tolist() == [1.0, 0.1]
    plt.close(fig)
    fig, data = plot_norm_heatmap(recorder)
    assert data["values"].shape == (5, 5) and data["layers"] == recorder.layer_names
    np.testing.assert_allclose(data["values"], np.log10(recorder.history["weight"]).T)
    plt.close(fig)
    fig, data = plot_norm_heatmap(recorder.history, kind="dead_relu")
    assert data["values"].shape == (4, 5)
    plt.close(fig)
    fig, data = plot_grad_histograms(model, max_layers=3)
    assert list(data) == ["stem", "blocks.1.linear", "fc"]
    for name, layer in (("stem", model.stem), ("fc", model.fc)):
        g = layer.weight.grad
        assert data[name]["counts"].sum() == int(torch.count_nonzero(g))
        assert data[name]["zero_fraction"] == pytest.approx(1 - torch.count_nonzero(g).item() / g.numel())
    plt.close(fig)
    with pytest.raises(ValueError, match="kind"):
        plot_norm_heatmap(recorder, kind="norms")


def test_plots_account_for_exact_zeros():
    """A gradient that underflowed to 0 has no place on a log axis: counted in the legend, drawn black."""
    import matplotlib.pyplot as plt

    fig, data = plot_layer_norms({"plain": {"a": 0.0, "b": 0.0, "c": 1e-3}, "residual": {"a": 1.0, "b": 0.5}})
    assert set(data) == {"plain (2 layers at exactly 0, not drawn)", "residual"}
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == list(data)
    plt.close(fig)
    history = {"steps": np.array([0, 1]), "layers": ["a", "b"], "weight": np.array([[0.0, 1.0], [1e-3, 10.0]])}
    fig, data = plot_norm_heatmap(history)
    assert data["zero"].tolist() == [[True, False], [False, False]]
    np.testing.assert_allclose(data["values"], [[np.nan, -3.0], [0.0, 1.0]])
    assert "exactly 0" in fig.axes[-1].get_ylabel()  # the colour bar says what black means
    plt.close(fig)


def test_recorder_works_inside_fit():
    from torch.utils.data import DataLoader, TensorDataset

    from labutils.train import fit

    torch.manual_seed(0)
    x, y = _batch(n=96)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    model = MLP(20, 3, width=8, depth=3, residual=True)
    recorder = GradientRecorder(model)
    with recorder:
        fit(model, loader, loader, epochs=2, lr=1e-2, grad_recorder=recorder, progress=False, device="cpu")
    h = recorder.history
    assert h["steps"].tolist() == list(range(6))
    assert np.isfinite(h["weight"]).all() and np.isfinite(h["dead_relu"]).all()


@pytest.mark.parametrize(
    "name, every",
    [
        ("plain-mlp", 1),
        ("residual-mlp", 1),
        ("residual-mlp", 3),
        ("residual-mlp-bf16", 1),
        ("residual-mlp-f64", 1),
        ("residual-mlp-batch-sizes", 1),
        ("cnn", 1),
        ("cnn-frozen-bias", 2),
    ],
)
def test_fast_recorder_equals_the_reference(name, every):
    """The batched recorder stores the same history as the readable one (rtol 1e-6), trained side by side: also
    for a bfloat16 model (float32 norms of bfloat16 gradients), a float64 one, and when the batch size changes
    from step to step (the stacked ReLU outputs go into buffers kept per shape)."""
    torch.manual_seed(0)
    if "mlp" in name:
        model = MLP(20, 3, width=8, depth=9, residual=name.startswith("residual"))
        x, y = _batch(n=16)
        if name.endswith(("bf16", "f64")):
            dtype = torch.bfloat16 if name.endswith("bf16") else torch.float64
            model, x = model.to(dtype), x.to(dtype)
    else:
        model = SimpleCNN(num_classes=3, width=4)
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))
        if name == "cnn-frozen-bias":
            model.fc.bias.requires_grad_(False)
    fast = GradientRecorder(model, every=every)
    reference = gradflow.ReferenceGradientRecorder(model, every=every)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    with fast, reference:
        for step in range(7):
            if name.endswith("batch-sizes"):
                x, y = _batch(n=(16, 5, 16, 9)[step % 4], seed=step)
            _step(model, x, y)
            assert fast.record(step) == reference.record(step)
            opt.step()
            with torch.no_grad():  # an evaluation pass must change neither
                model.eval()
                model(x)
                model.train()
    hf, hr = fast.history, reference.history
    assert hf["layers"] == hr["layers"] and hf["relu_layers"] == hr["relu_layers"] and len(hr["relu_layers"]) >= 2
    np.testing.assert_array_equal(hf["steps"], hr["steps"])
    assert len(hr["steps"]) == len(range(0, 7, every))
    for key in ("weight", "bias", "dead_relu"):
        assert hf[key].shape == hr[key].shape
        np.testing.assert_allclose(hf[key], hr[key], rtol=1e-6, atol=0, equal_nan=True, err_msg=key)
    assert np.isfinite(hr["weight"]).all() and (hr["dead_relu"] >= 0).all()
    if "residual" in name:  # the 8 hidden 8x8 layers and the 9 biases of 8 (stem's too) are stacked groups
        assert [stop - start for start, stop, _ in fast._norms.groups] == [8, 9]
    for kind, values in reference.latest().items():
        assert fast.latest()[kind] == pytest.approx(values, rel=1e-6)
    assert fast.at(kind="dead_relu") == reference.at(kind="dead_relu")
    assert len(fast) == len(reference)
