"""labutils.models: shapes, parameter counts, skips and projections, depth semantics, bad configurations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from labutils.models import (
    MLP,
    VGG,
    ConvBNReLU,
    PlainBlock,
    PlainCNN,
    ResidualBlock,
    ResNet,
    ResNet18,
    SimpleCNN,
    available_models,
    build_model,
    count_parameters,
    resnet18_cifar,
)

torch.set_num_threads(1)


def _projection_params(model: nn.Module) -> int:
    return sum(count_parameters(m.shortcut) for m in model.modules() if isinstance(m, ResidualBlock))


# -- MLP -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("norm", [None, "batch", "layer"])
def test_mlp_shapes_and_depth_semantics(residual, norm):
    model = MLP(784, 10, width=16, depth=5, residual=residual, norm=norm)
    x = torch.randn(6, 1, 28, 28)
    assert model(x).shape == (6, 10)
    assert model(x.flatten(1)).shape == (6, 10)
    assert model.features(x).shape == (6, 16) and model.feature_dim == 16
    linears = model.linear_layers()
    # depth = hidden linear layers; +1 for the output layer; one activation per hidden layer
    assert len(linears) == 5 + 1
    assert [n for n, _ in linears] == [
        "stem",
        "blocks.0.linear",
        "blocks.1.linear",
        "blocks.2.linear",
        "blocks.3.linear",
        "fc",
    ]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 5
    assert torch.allclose(model.fc(model.features(x)), model(x))


@pytest.mark.parametrize("norm", [None, "batch", "layer"])
@pytest.mark.parametrize("depth", [1, 2, 7])
def test_mlp_plain_and_residual_have_identical_parameter_counts(norm, depth):
    plain = MLP(50, 7, width=12, depth=depth, norm=norm)
    residual = MLP(50, 7, width=12, depth=depth, residual=True, norm=norm)
    expected = 50 * 12 + 12 + (depth - 1) * (12 * 12 + 12) + 12 * 7 + 7
    expected += depth * 2 * 12 if norm else 0  # one norm (scale + shift) per hidden layer
    assert count_parameters(plain) == count_parameters(residual) == expected


def test_residual_mlp_matches_its_formula():
    torch.manual_seed(0)
    model = MLP(5, 3, width=4, depth=3, residual=True)
    x = torch.randn(8, 5)
    alpha = 1 / math.sqrt(2)  # 1/sqrt(depth - 1)
    h = model.stem(x)
    for block in model.blocks:
        h = h + alpha * block.linear(torch.relu(h))
    expected = model.fc(torch.relu(h))
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_plain_mlp_matches_its_formula():
    torch.manual_seed(0)
    model = MLP(5, 3, width=4, depth=3)
    x = torch.randn(8, 5)
    h = torch.relu(model.stem(x))
    for block in model.blocks:
        h = torch.relu(block.linear(h))
    assert torch.allclose(model(x), model.fc(h), atol=1e-6)


def _first_last_grad_ratio(model: nn.Module, x, y) -> float:
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return float(model.stem.weight.grad.norm() / model.fc.weight.grad.norm())


def test_deep_residual_mlp_keeps_signal_and_gradient_at_init():
    """Depth 64 at init: the residual net's first layer gets a gradient within 10x of the last one and
    its logits stay O(1); a plain net with nn.Linear's own init loses the gradient on the way down."""
    torch.manual_seed(0)
    x, y = torch.randn(256, 784), torch.randint(0, 10, (256,))
    residual = MLP(784, 10, width=16, depth=64, residual=True)
    assert 0.1 < _first_last_grad_ratio(residual, x, y) < 10
    assert residual(x).std().item() < 10
    plain = MLP(784, 10, width=16, depth=64, init="pytorch")
    assert _first_last_grad_ratio(plain, x, y) < 1e-6


def test_mlp_init_options():
    torch.manual_seed(0)
    kaiming = MLP(1000, 10, width=500, depth=2)
    w = kaiming.blocks[0].linear.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / 500), rel=0.05)  # He: var = 2/fan_in
    assert torch.count_nonzero(kaiming.blocks[0].linear.bias) == 0
    default = MLP(1000, 10, width=500, depth=2, init="pytorch")
    assert default.blocks[0].linear.weight.std().item() == pytest.approx(math.sqrt(1 / (3 * 500)), rel=0.05)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "gelu", "silu", "tanh", "sigmoid"])
def test_mlp_activations(activation):
    model = MLP(10, 2, width=8, depth=3, residual=True, activation=activation)
    assert model(torch.randn(4, 10)).shape == (4, 2)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"depth": 0}, "depth"),
        ({"depth": -3}, "depth"),
        ({"depth": 2.5}, "depth"),
        ({"width": 0}, "width"),
        ({"activation": "swish"}, "activation"),
        ({"norm": "group"}, "norm"),
        ({"init": "xavier"}, "init"),
    ],
)
def test_mlp_bad_configs_raise_one_clear_error(kwargs, word):
    args = {"in_features": 10, "num_classes": 2, "width": 8, "depth": 3, **kwargs}
    with pytest.raises(ValueError, match=word):
        MLP(**args)


# -- CNN blocks ----------------------------------------------------------------------------------
def test_conv_block_shape():
    block = ConvBNReLU(3, 8, stride=2)
    assert block(torch.randn(2, 3, 16, 16)).shape == (2, 8, 8, 8)
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]


@pytest.mark.parametrize(
    "in_ch, out_ch, stride, projects",
    [
        (16, 16, 1, False),
        (16, 32, 1, True),
        (16, 16, 2, True),
        (16, 32, 2, True),
    ],
)
def test_residual_block_shortcuts(in_ch, out_ch, stride, projects):
    block = ResidualBlock(in_ch, out_ch, stride=stride)
    assert block.has_projection is projects
    out = block(torch.randn(2, in_ch, 8, 8))
    assert out.shape == (2, out_ch, 8 // stride, 8 // stride)
    if projects:
        conv = block.shortcut[0]
        assert conv.kernel_size == (1, 1) and conv.stride == (stride, stride)


def test_residual_block_is_relu_of_branch_plus_shortcut():
    torch.manual_seed(0)
    block = ResidualBlock(8, 8).eval()
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(block(x), torch.relu(block.residual_branch(x) + x), atol=1e-6)
    # with the branch's last BatchNorm zeroed the block is relu(identity)
    nn.init.zeros_(block.bn2.weight)
    nn.init.zeros_(block.bn2.bias)
    assert torch.allclose(block(x), torch.relu(x))
    proj = ResidualBlock(8, 16, stride=2).eval()
    nn.init.zeros_(proj.bn2.weight)
    nn.init.zeros_(proj.bn2.bias)
    assert torch.allclose(proj(x), torch.relu(proj.shortcut(x)))


def test_plain_block_is_residual_block_without_shortcut():
    torch.manual_seed(0)
    plain, res = PlainBlock(8, 16, stride=2, dropout=0.1), ResidualBlock(8, 16, stride=2, dropout=0.1)
    plain_keys = set(plain.state_dict())
    assert plain_keys <= set(res.state_dict())
    assert all(k.startswith("shortcut.") for k in set(res.state_dict()) - plain_keys)
    plain.load_state_dict({k: v for k, v in res.state_dict().items() if k in plain_keys})
    plain.eval(), res.eval()
    x = torch.randn(2, 8, 8, 8)
    assert torch.allclose(plain(x), torch.relu(res.residual_branch(x)), atol=1e-6)


def test_block_dropout_only_in_training():
    block = ResidualBlock(4, 4, dropout=0.5)
    assert isinstance(block.dropout, nn.Dropout) and block.dropout.p == 0.5
    block.eval()
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(block(x), block(x))


# -- CIFAR networks ------------------------------------------------------------------------------
@pytest.mark.parametrize("depth, millions", [(20, 0.27), (32, 0.46), (56, 0.85), (110, 1.7)])
def test_resnet_parameter_counts_match_the_paper(depth, millions):
    """He et al. (2016), Table 6: 0.27M, 0.46M, 0.85M, 1.7M (their option-A shortcuts have no
    parameters; our two 1x1 projections add 2,752, well inside the tolerance)."""
    model = ResNet(depth)
    n = count_parameters(model)
    assert abs(n / 1e6 - millions) < 0.01 * max(1, millions / 0.5)
    assert _projection_params(model) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert count_parameters(PlainCNN(depth)) == n - _projection_params(model)


@pytest.mark.parametrize("depth", [20, 56])
def test_depth_counts_weighted_layers(depth):
    """depth = 6n + 2 counts the 3x3 convolutions and the classifier (not the 1x1 projections)."""
    for cls in (PlainCNN, ResNet):
        model = cls(depth)
        convs3 = sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())
        linears = sum(isinstance(m, nn.Linear) for m in model.modules())
        assert convs3 + linears == depth


def test_plain_and_residual_cifar_nets_differ_only_in_shortcuts():
    plain, res = PlainCNN(20), ResNet(20)
    plain_keys, res_keys = set(plain.state_dict()), set(res.state_dict())
    assert plain_keys <= res_keys
    extra = res_keys - plain_keys
    assert extra and all(".shortcut." in k for k in extra)
    assert sum(isinstance(m, ResidualBlock) for m in res.modules()) == 9
    assert sum(type(m) is PlainBlock for m in plain.modules()) == 9


@pytest.mark.parametrize(
    "name, feature_dim, params",
    [
        ("resnet20", 64, 272_474),
        ("plain20", 64, 269_722),
        ("resnet18", 512, 11_173_962),
        ("vgg11", 512, 9_228_362),
        ("simple_cnn", 64, 66_410),
    ],
)
def test_convnet_shapes_features_and_head(name, feature_dim, params):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 10)
    feats = model.features(x)
    assert feats.shape == (2, feature_dim) == (2, model.feature_dim)
    assert torch.allclose(model.fc(feats), logits, atol=1e-5)
    assert count_parameters(model) == params


def test_resnet18_variants():
    model = resnet18_cifar(num_classes=100, width=16)
    assert isinstance(model, ResNet18)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert sum(isinstance(m, ResidualBlock) and m.has_projection for m in model.modules()) == 3


def test_grayscale_inputs_and_other_sizes():
    assert SimpleCNN(in_channels=1)(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert ResNet(8, in_channels=1, num_classes=5)(torch.randn(2, 1, 28, 28)).shape == (2, 5)
    assert VGG("vgg11", width=8)(torch.randn(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet20", "plain20", "resnet18", "vgg11", "simple_cnn"])
def test_channels_last_gives_the_same_output(name):
    torch.manual_seed(0)
    model = build_model(name, width=8).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    out = model(x.to(memory_format=torch.channels_last))
    assert torch.allclose(out, expected, atol=1e-5)
    out.sum().backward()  # and trains that way


def test_count_parameters_trainable_only():
    model = SimpleCNN(width=8)
    total = count_parameters(model)
    for p in model.body.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == count_parameters(model.fc) == 16 * 10 + 10
    assert count_parameters(model, trainable_only=False) == total


# -- registry and errors -------------------------------------------------------------------------
def test_build_model_by_name():
    assert isinstance(build_model("ResNet-56"), ResNet) and build_model("resnet56").depth == 56
    assert isinstance(build_model("plain110"), PlainCNN)
    assert isinstance(build_model("SimpleCNN"), SimpleCNN) and isinstance(build_model("simple-cnn"), SimpleCNN)
    assert isinstance(build_model("PlainCNN", depth=20), PlainCNN)
    assert isinstance(build_model("resnet18_cifar", width=8), ResNet18)
    assert isinstance(build_model("resnet", depth=32), ResNet)
    assert isinstance(build_model("vgg16", width=8), VGG)
    mlp = build_model("mlp", in_features=784, num_classes=10, width=16, depth=32, residual=True)
    assert isinstance(mlp, MLP) and mlp.depth == 32 and mlp.residual
    assert "resnet20" in available_models() and "mlp" in available_models()


@pytest.mark.parametrize(
    "name, kwargs, word",
    [
        ("resnet21", {}, "6n \\+ 2"),
        ("plain18", {}, "6n \\+ 2"),
        ("resnet", {"depth": 0}, "6n \\+ 2"),
        ("resnet", {"depth": 2}, "6n \\+ 2"),
        ("resnet", {}, "needs depth"),
        ("transformer", {}, "Unknown model"),
        ("mlp", {"in_features": 4, "num_classes": 2, "width": 3, "depth": 0}, "depth"),
        ("resnet20", {"depth": 56}, "fixes depth"),
        ("resnet20", {"heads": 4}, "does not take heads"),
        ("vgg19", {}, "Unknown model"),
        ("resnet20", {"dropout": 1.5}, "dropout"),
        ("simple_cnn", {"width": 0}, "width"),
    ],
)
def test_bad_names_and_configs_raise_value_error(name, kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_model(name, **kwargs)
