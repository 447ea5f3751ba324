"""Lab 06's machinery: ConvPoolNet and conv_block, the five configurations as recipes, the augmentation presets,
dead-unit counting and the block-builder exercise's check."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labutils import checks, data, experiment, gradflow, regularization
from labutils.experiment import Recipe
from labutils.models import ConvPoolNet, build_model, conv_block, count_parameters

KWARGS = dict(num_classes=10, in_channels=3, image_size=32, widths=(8, 16, 32), fc_widths=(64,))


def make_base(dataset: str = "cifar10") -> Recipe:
    return Recipe(
        "baseline",
        model=ConvPoolNet,
        model_kwargs=dict(KWARGS),
        dataset=dataset,
        train_subset=256,
        val_size=128,
        batch_size=128,
        optimizer="adam",
        lr=1e-3,
        epochs=3,
        patience=10,
        seed=0,
        record_every=1,
    )


def modules(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


# -- the configurations ---------------------------------------------------------------------------------------
EXPECTED = {  # configuration: (batch norms, dropout rates, weight decay, augmentation on CIFAR-10)
    "baseline": (0, [], 0.0, "none"),
    "batch_norm": (4, [], 0.0, "none"),
    "dropout_wd": (0, [0.25, 0.25, 0.25, 0.5], 1e-4, "none"),
    "augmentation": (0, [], 0.0, "flip_jitter"),
    "combined": (4, [0.25, 0.25, 0.25, 0.5], 1e-4, "flip_jitter"),
}


@pytest.mark.parametrize("name", regularization.CONFIGURATIONS)
def test_each_configuration_builds_exactly_its_layers_and_optimizer(name):
    recipe = regularization.ablation_recipes(make_base())[name]
    n_bn, rates, wd, augment = EXPECTED[name]
    model = experiment.build(recipe)
    assert len(modules(model, nn.BatchNorm2d)) == (3 if n_bn else 0)
    assert len(modules(model, nn.BatchNorm1d)) == (1 if n_bn else 0)
    assert [m.p for m in modules(model, nn.Dropout)] == rates
    assert len(modules(model, nn.Conv2d)) == 3 and len(modules(model, nn.Linear)) == 2
    assert len(modules(model, nn.ReLU)) == 4 and len(modules(model, nn.MaxPool2d)) == 3
    # a conv followed by batch norm has no bias; without it, it has one
    assert all((c.bias is None) == bool(n_bn) for c in modules(model, nn.Conv2d))
    optimizer = experiment.optimizer_for(recipe, model)
    assert isinstance(optimizer, torch.optim.Adam)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [wd]
    assert optimizer.param_groups[0]["lr"] == 1e-3
    assert recipe.augment == augment


def test_batch_norm_sits_before_the_relu_and_dropout_after_the_pool():
    model = experiment.build(regularization.ablation_recipes(make_base())["combined"])
    block = [type(m).__name__ for m in model.convs[0]]
    assert block == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Dropout"]
    assert [type(m).__name__ for m in model.hidden[0]] == ["Linear", "BatchNorm1d", "ReLU", "Dropout"]


def test_the_five_runs_share_one_budget_and_differ_only_in_the_intended_fields():
    base = make_base()
    recipes = regularization.ablation_recipes(base)
    assert list(recipes) == list(regularization.CONFIGURATIONS)
    intended = {
        "baseline": set(),
        "batch_norm": {"model_kwargs.batch_norm"},
        "dropout_wd": {"model_kwargs.conv_dropout", "model_kwargs.fc_dropout", "weight_decay"},
        "augmentation": {"augment"},
        "combined": {
            "model_kwargs.batch_norm",
            "model_kwargs.conv_dropout",
            "model_kwargs.fc_dropout",
            "weight_decay",
            "augment",
        },
    }
    for name, recipe in recipes.items():
        assert regularization.recipe_differences(base, recipe) == intended[name], name
        for knob in ("seed", "epochs", "batch_size", "patience", "optimizer", "lr", "record_every"):
            assert getattr(recipe, knob) == getattr(base, knob)
        same_data = {k: v for k, v in recipe.data_settings().items() if k != "augment"}
        assert same_data == {k: v for k, v in base.data_settings().items() if k != "augment"}
    # the same seed gives the same initial weights wherever the architecture is the same
    a, b = experiment.build(recipes["baseline"]), experiment.build(recipes["augmentation"])
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_recipe_differences_sees_a_changed_learning_rate():
    base = make_base()
    assert regularization.recipe_differences(base, base.replace(name="x", lr=0.01)) == {"lr"}


def test_digits_get_their_own_augmentation_preset():
    recipes = regularization.ablation_recipes(make_base("mnist").replace(model_kwargs={**KWARGS, "in_channels": 1}))
    assert recipes["augmentation"].augment == recipes["combined"].augment == "digits"
    assert data.augmentation_for("mnist", "strong") == "digits" and data.augmentation_for("mnist", "none") == "none"
    assert data.augmentation_for("cifar100", "strong") == "strong"
    with pytest.raises(ValueError, match="Unknown augmentation preset 'flip'"):
        data.augmentation_for("mnist", "flip")
    with pytest.raises(ValueError, match="Unknown dataset 'svhn'"):
        data.augmentation_for("svhn", "strong")


def test_activation_remedies_change_one_model_argument_each():
    base = make_base()
    variants = regularization.activation_recipes(base)
    assert regularization.recipe_differences(base, variants["leaky_relu"]) == {"model_kwargs.activation"}
    assert regularization.recipe_differences(base, variants["he_init"]) == {"model_kwargs.init"}
    assert len(modules(experiment.build(variants["leaky_relu"]), nn.LeakyReLU)) == 4


# -- augmentation presets -------------------------------------------------------------------------------------
def test_digits_preset_moves_a_digit_but_never_mirrors_it():
    torch.manual_seed(0)
    img = torch.zeros(1, 28, 28, dtype=torch.uint8)
    img[0, 6:22, 12:15] = 255  # a vertical bar: a flip would keep its column, a shift moves it
    tf = data.augmentation("digits", 28)
    outs = torch.stack([tf(img) for _ in range(50)])
    assert outs.shape == (50, 1, 28, 28) and outs.dtype == torch.uint8
    assert (outs != img).any(dim=(1, 2, 3)).float().mean() > 0.9  # almost every draw changes the image
    # the bar's ink stays within the 10 % shift range of its centre column 13 (no mirror, no large move)
    cols = (outs.float().sum(dim=(1, 2)) * torch.arange(28)).sum(dim=1) / outs.float().sum(dim=(1, 2, 3))
    assert (cols - 13).abs().max() <= 3.5


def test_flip_jitter_flips_and_jitters_colour_only():
    torch.manual_seed(0)
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    tf = data.augmentation("flip_jitter", 32)
    outs = [tf(img) for _ in range(40)]
    assert all(o.shape == img.shape and o.dtype == torch.uint8 for o in outs)
    # colour jitter of +-20 % keeps the image close to the original or its mirror (no crop, no rotation)
    ref = img.float()

    def close(o):
        return min((o.float() - ref).abs().mean(), (o.float() - ref.flip(-1)).abs().mean())

    assert max(close(o) for o in outs) < 40
    flipped = sum((o.float() - ref.flip(-1)).abs().mean() < (o.float() - ref).abs().mean() for o in outs)
    assert 8 <= flipped <= 32  # a fair coin over 40 draws


# -- the model ------------------------------------------------------------------------------------------------
def test_conv_pool_net_shapes_parameters_and_pooled_size():
    model = ConvPoolNet(**KWARGS)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    expected = (3 * 9 * 8 + 8) + (8 * 9 * 16 + 16) + (16 * 9 * 32 + 32) + (32 * 4 * 4 * 64 + 64) + (64 * 10 + 10)
    assert count_parameters(model) == expected
    big = ConvPoolNet(10, 3, 160, widths=(8, 16, 32), fc_widths=(64,), pooled_size=4)
    assert big.hidden[0].linear.in_features == 32 * 4 * 4  # 20x20 map averaged down to 4x4
    small = ConvPoolNet(10, 1, 28, widths=(8, 16, 32), fc_widths=(64,), pooled_size=4)
    assert small.hidden[0].linear.in_features == 32 * 3 * 3  # 3x3 map: already small, kept
    deep = ConvPoolNet(100, 3, 32, **regularization.DEEP_CONVPOOLNET)
    assert [m.out_features for m in modules(deep, nn.Linear)] == [1024, 512, 100]
    assert build_model("conv_pool_net", **KWARGS)(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_he_initialisation_gives_variance_two_over_fan_in():
    torch.manual_seed(0)
    model = ConvPoolNet(10, 3, 32, widths=(64, 128, 256), fc_widths=(512,), init="kaiming")
    conv = model.convs[2].conv.weight
    fan_in = conv.shape[1] * 9
    assert conv.var().item() == pytest.approx(2 / fan_in, rel=0.03)
    assert torch.count_nonzero(model.convs[2].conv.bias) == 0
    default = ConvPoolNet(10, 3, 32, widths=(64, 128, 256), fc_widths=(512,))
    assert default.convs[2].conv.weight.var().item() == pytest.approx(1 / (3 * fan_in), rel=0.03)


def test_conv_pool_net_refuses_impossible_settings():
    with pytest.raises(ValueError, match="halve a 8-pixel image to nothing"):
        ConvPoolNet(10, 3, 8, widths=(4, 4, 4, 4))
    with pytest.raises(ValueError, match=r"dropout=1.5 is not possible: use a probability"):
        ConvPoolNet(**KWARGS, fc_dropout=1.5)
    with pytest.raises(ValueError, match="Unknown activation 'relu6'"):
        ConvPoolNet(**KWARGS, activation="relu6")
    with pytest.raises(ValueError, match="widths must name at least one"):
        ConvPoolNet(10, 3, 32, widths=())


def test_scaled_divides_every_width():
    assert regularization.scaled(regularization.DEEP_CONVPOOLNET, 8)["widths"] == (8, 16, 32, 64)
    assert regularization.scaled(regularization.SMALL_CONVPOOLNET, 1000)["fc_widths"] == (1,)
    with pytest.raises(ValueError, match="divisor must be an integer >= 1, got 0"):
        regularization.scaled(regularization.DEEP_CONVPOOLNET, 0)


# -- dead units -----------------------------------------------------------------------------------------------
def tiny_net(activation: nn.Module) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 3), activation)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, -1.0], [0.0, -1.0]]))
        net[0].bias.zero_()
    return net


X = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
# by hand: pre-activations per example are unit 0: (1, 0), unit 1: (-1, -1), unit 2: (0, -1).
# Unit 0 fires on the first example; units 1 and 2 never exceed 0: two of three are dead.


def test_dead_unit_count_agrees_with_a_hand_computation():
    assert gradflow.dead_fractions_on(tiny_net(nn.ReLU()), X) == {"1": pytest.approx(2 / 3)}
    # a leaky ReLU unit that is negative on every example counts too (it only leaks 1 % of the gradient)
    assert gradflow.dead_fractions_on(tiny_net(nn.LeakyReLU(0.01)), X) == {"1": pytest.approx(2 / 3)}
    # only the first example: unit 0 fires, unit 2 is at exactly 0 (dead), unit 1 is negative
    assert gradflow.dead_fractions_on(tiny_net(nn.ReLU()), X[:1]) == {"1": pytest.approx(2 / 3)}
    # shift unit 2 up by 0.5: it now fires on the first example
    net = tiny_net(nn.ReLU())
    with torch.no_grad():
        net[0].bias[2] = 0.5
    assert gradflow.dead_fractions_on(net, X) == {"1": pytest.approx(1 / 3)}


def test_dead_channels_of_a_convolution_and_agreement_with_the_recorder():
    conv = nn.Conv2d(1, 4, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0, 2.0, -3.0]).view(4, 1, 1, 1))
        conv.bias.zero_()
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 9, 2))
    x = torch.rand(3, 1, 3, 3) + 0.1  # positive pixels: channels with negative weights are dead everywhere
    assert gradflow.dead_fractions_on(net, x) == {"1": pytest.approx(0.5)}
    recorder = gradflow.GradientRecorder(net)
    with recorder:
        nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 0])).backward()
        recorder.record(0)
    assert recorder.at(0, kind="dead_relu") == {"1": pytest.approx(0.5)}
    assert net.training  # the train/eval mode is restored


def test_dead_fractions_on_names_a_model_without_activations():
    with pytest.raises(ValueError, match="no activation modules of type ReLU"):
        gradflow.dead_fractions_on(nn.Linear(2, 2), X)


# -- the exercise's check -------------------------------------------------------------------------------------
def reference_block(in_ch, out_ch, batch_norm, dropout):
    return conv_block(in_ch, out_ch, batch_norm=batch_norm, dropout=dropout)


def block_from(order, bias_with_bn=False):
    def build(in_ch, out_ch, batch_norm, dropout):
        make = {
            "conv": lambda: nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias_with_bn or not batch_norm),
            "bn": lambda: nn.BatchNorm2d(out_ch) if batch_norm else None,
            "relu": nn.ReLU,
            "pool": lambda: nn.MaxPool2d(2),
            "dropout": lambda: nn.Dropout(dropout) if dropout > 0 else None,
        }
        return nn.Sequential(*[m for m in (make[k]() for k in order) if m is not None])

    return build


def test_check_conv_block_accepts_the_reference(capsys):
    assert checks.check_conv_block(reference_block) == 0.0
    assert checks.check_conv_block(block_from(["conv", "bn", "relu", "pool", "dropout"])) == 0.0
    assert "check_conv_block: 4 cases" in capsys.readouterr().out


@pytest.mark.parametrize(
    "order, bias_with_bn, expected",
    [
        (["conv", "relu", "bn", "pool", "dropout"], False, r"'ReLU', 'BatchNorm2d\(4\)'"),
        (["conv", "bn", "relu", "dropout", "pool"], False, r"'Dropout\(p=0.25\)', 'MaxPool2d\(2\)'"),
        (["conv", "bn", "relu", "pool", "dropout"], True, r"bias=True\)', 'BatchNorm2d"),
    ],
)
def test_check_conv_block_names_the_wrong_layer_order(order, bias_with_bn, expected):
    with pytest.raises(checks.CheckFailed, match=expected) as info:
        checks.check_conv_block(block_from(order, bias_with_bn))
    assert "Hint:" in str(info.value)


def test_check_conv_block_reports_the_stub_and_a_wrong_return():
    def stub(in_ch, out_ch, batch_norm, dropout):
        raise NotImplementedError()

    with pytest.raises(checks.CheckFailed, match="NotImplementedError: replace the '# YOUR CODE HERE' stub"):
        checks.check_conv_block(stub)
    with pytest.raises(checks.CheckFailed, match="returned list, expected an nn.Module"):
        checks.check_conv_block(lambda *args: [])


def test_ablation_curves_share_axes_and_give_each_run_one_colour_in_both_panels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histories = {
        "baseline": {"train_acc": [0.2, 0.6, 0.9], "val_acc": [0.2, 0.5, 0.55], "train_loss": [2.0, 1.0, 0.3],
                     "val_loss": [2.1, 1.4, 1.3]},
        "combined": {"train_acc": [0.1, 0.4, 0.6], "val_acc": [0.2, 0.45, 0.6], "train_loss": [2.2, 1.5, 1.1],
                     "val_loss": [2.2, 1.5, 1.2]},
    }  # fmt: skip
    fig, data = regularization.plot_ablation_curves(histories)
    acc, loss = fig.axes[:2]
    assert acc.get_shared_x_axes().joined(acc, loss)  # one epoch axis
    assert data["val_acc"]["combined"] == [0.2, 0.45, 0.6] and data["train_loss"]["baseline"] == [2.0, 1.0, 0.3]
    # every curve of a run has the run's colour; training dashed, validation solid, on one accuracy panel
    lines = acc.get_lines()
    assert len(lines) == 4 and len(loss.get_lines()) == 4
    assert {(matplotlib.colors.to_hex(line.get_color()), line.get_linestyle()) for line in lines} == {
        (matplotlib.colors.to_hex(data["colors"][n]), style) for n in histories for style in ("--", "-")
    }
    ymin, ymax = acc.get_ylim()
    assert ymin <= 0.1 and ymax >= 0.9  # both runs' training and validation curves inside one y range
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["baseline", "combined", "training", "validation"]
    assert not acc.get_legend() and not loss.get_legend()  # no legend over the data
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one history"):
        regularization.plot_ablation_curves({})
