"""The networks of the PyTorch labs: MLPs, plain and residual CNNs, a ResNet-18, a VGG and a small CNN.

Every classifier here has the same small interface, so the training loop, the gradient-flow tools
and the transfer-learning lab can treat them alike:

- ``model(x)`` → logits ``(N, num_classes)``;
- ``model.features(x)`` → the backbone's feature vector ``(N, model.feature_dim)`` (what a linear
  probe reads);
- ``model.fc`` → the final ``nn.Linear(feature_dim, num_classes)`` (replace it to re-head a backbone).

Plain and residual variants are built from the same blocks so that they differ *only* in the skip
connections (and, for CNNs, the 1×1 projections a skip needs where the shape changes):

- :class:`MLP` with ``residual=False/True`` (depth = number of hidden linear layers);
- :class:`PlainCNN` / :class:`ResNet` with He et al. (2016)'s CIFAR depth ``6n + 2`` (20, 32, 56, 110).

``build_model(name, **kwargs)`` builds any of them by name (``"resnet20"``, ``"plain56"``, ``"vgg11"``…).
Convnets work with ``channels_last`` tensors (``model.to(memory_format=torch.channels_last)``).
"""

from __future__ import annotations

import inspect
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from labutils.util import check_choice, check_int, check_probability

# Activation name -> (module factory, nonlinearity name for nn.init's He gain).
ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "relu": (lambda: nn.ReLU(), "relu"),
    "leaky_relu": (lambda: nn.LeakyReLU(0.01), "leaky_relu"),
    "gelu": (lambda: nn.GELU(), "relu"),  # no exact gain for GELU; ReLU's is the usual stand-in
    "silu": (lambda: nn.SiLU(), "relu"),
    "tanh": (lambda: nn.Tanh(), "tanh"),
    "sigmoid": (lambda: nn.Sigmoid(), "sigmoid"),
}
NORMS = (None, "batch", "layer")
INITS = ("kaiming", "pytorch")


# --------------------------------------------------------------------------------------------
# checks and small helpers
# --------------------------------------------------------------------------------------------
_check_positive_int = check_int  # (name, value, minimum=1): the shared checks, one sentence per mistake
_check_choice = check_choice


def _check_dropout(p) -> float:
    return check_probability("dropout", p)


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (one per layer, so hooks can tell layers apart)."""
    _check_choice("activation", name, list(ACTIVATIONS))
    return ACTIVATIONS[name][0]()


def make_norm1d(norm: str | None, width: int) -> nn.Module:
    """``None`` → identity, ``"batch"`` → BatchNorm1d, ``"layer"`` → LayerNorm over the features."""
    _check_choice("norm", norm, NORMS)
    if norm is None:
        return nn.Identity()
    return nn.BatchNorm1d(width) if norm == "batch" else nn.LayerNorm(width)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (trainable ones only unless ``trainable_only=False``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution with padding 1 and no bias (a BatchNorm follows and has its own shift)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _init_conv_net(model: nn.Module) -> None:
    """He (fan-out) init for convolutions, unit BatchNorm, small-normal classifier — as in He et al."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Classifier(nn.Module):
    """Base class: ``forward(x) = fc(features(x))``; subclasses define ``features`` and ``feature_dim``."""

    feature_dim: int
    fc: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


# --------------------------------------------------------------------------------------------
# MLPs
# --------------------------------------------------------------------------------------------
class PlainMLPBlock(nn.Module):
    """``h → act(norm(W h + b))``: one hidden layer of a plain MLP. ``(N, in) → (N, out)``."""

    def __init__(self, in_features: int, out_features: int, activation: str = "relu", norm: str | None = None):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.norm = make_norm1d(norm, out_features)
        self.act = make_activation(activation)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.linear(h)))


class ResidualMLPBlock(nn.Module):
    """Pre-activation residual layer ``h → h + α · W act(norm(h))``. ``(N, width) → (N, width)``.

    The identity path carries the signal and the gradient past the layer untouched; the branch is
    scaled by ``α`` (the MLP uses ``1/sqrt(number of blocks)``) so that the sum of many branches
    keeps the activations' variance bounded at initialisation however deep the stack is.
    """

    def __init__(self, width: int, activation: str = "relu", norm: str | None = None, branch_scale: float = 1.0):
        super().__init__()
        self.norm = make_norm1d(norm, width)
        self.act = make_activation(activation)
        self.linear = nn.Linear(width, width)
        self.branch_scale = float(branch_scale)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.branch_scale * self.linear(self.act(self.norm(h)))

    def extra_repr(self) -> str:
        return f"branch_scale={self.branch_scale:.4g}"


class MLP(Classifier):
    """A fully connected classifier, plain or residual, with ``depth`` hidden linear layers.

    ``depth`` counts the hidden linear layers, so the network has ``depth + 1`` ``nn.Linear`` layers
    in all (the ``+1`` is the output layer ``fc``) and ``depth`` activations. Layer names are the same
    in both variants — ``stem`` (``in_features → width``), ``blocks.0.linear`` … ``blocks.{depth-2}.linear``
    (``width → width``), ``fc`` (``width → num_classes``) — and so are the parameter counts::

        plain     x → stem → norm → act → [linear → norm → act] × (depth-1)          → fc
        residual  x → stem → [h + α · linear(act(norm(h)))] × (depth-1) → norm → act → fc

    The residual variant uses pre-activation blocks (He et al., 2016b) with identity skips and a
    fixed branch scale ``α = 1/sqrt(depth-1)``, which keeps the forward signal and the backward
    gradient of order one at initialisation for any depth (64, 128 … train).

    Args:
        in_features: input size; inputs of shape ``(N, C, H, W)`` are flattened to ``(N, C·H·W)``.
        num_classes: number of logits.
        width: units in each hidden layer.
        depth: hidden linear layers, ``>= 1``.
        residual: identity skips around every hidden layer after the stem.
        activation: one of ``relu, leaky_relu, gelu, silu, tanh, sigmoid``.
        norm: ``None``, ``"batch"`` (BatchNorm1d) or ``"layer"`` (LayerNorm).
        init: ``"kaiming"`` (He-normal weights with the activation's gain, zero biases; the default)
            or ``"pytorch"`` (what ``nn.Linear`` does on its own: uniform with variance ``1/(3·fan_in)``,
            which shrinks a ReLU signal about six-fold per layer).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        width: int,
        depth: int,
        residual: bool = False,
        activation: str = "relu",
        norm: str | None = None,
        init: str = "kaiming",
    ):
        super().__init__()
        _check_positive_int("in_features", in_features)
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("width", width)
        _check_positive_int("depth", depth)
        _check_choice("activation", activation, list(ACTIVATIONS))
        _check_choice("norm", norm, NORMS)
        _check_choice("init", init, INITS)
        self.in_features, self.num_classes, self.width, self.depth = in_features, num_classes, width, depth
        self.residual, self.activation, self.norm, self.init = bool(residual), activation, norm, init
        self.feature_dim = width

        self.flatten = nn.Flatten()
        self.stem = nn.Linear(in_features, width)
        if self.residual:
            scale = 1.0 / math.sqrt(max(depth - 1, 1))
            self.blocks = nn.Sequential(*[ResidualMLPBlock(width, activation, norm, scale) for _ in range(depth - 1)])
            # pre-activation blocks leave h un-normalised: one norm + act before the classifier
            self.out_norm, self.out_act = make_norm1d(norm, width), make_activation(activation)
        else:
            self.stem_norm, self.stem_act = make_norm1d(norm, width), make_activation(activation)
            self.blocks = nn.Sequential(*[PlainMLPBlock(width, width, activation, norm) for _ in range(depth - 1)])
        self.fc = nn.Linear(width, num_classes)
        if init == "kaiming":
            gain_name = ACTIVATIONS[activation][1]
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.kaiming_normal_(m.weight, nonlinearity=gain_name)
                    nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_features)`` or ``(N, C, H, W)`` → the last hidden representation ``(N, width)``."""
        h = self.stem(self.flatten(x))
        if self.residual:
            return self.out_act(self.out_norm(self.blocks(h)))
        return self.blocks(self.stem_act(self.stem_norm(h)))

    def linear_layers(self) -> list[tuple[str, nn.Linear]]:
        """``(name, layer)`` for all ``depth + 1`` linear layers, input side first."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, nn.Linear)]

    def extra_repr(self) -> str:
        kind = "residual" if self.residual else "plain"
        return f"{kind}, depth={self.depth}, width={self.width}, activation={self.activation}, norm={self.norm}"


# --------------------------------------------------------------------------------------------
# CNN building blocks
# --------------------------------------------------------------------------------------------
class ConvBNReLU(nn.Sequential):
    """conv3×3 → BatchNorm → ReLU. ``(N, in_ch, H, W) → (N, out_ch, H/stride, W/stride)``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        _check_positive_int("in_ch", in_ch)
        _check_positive_int("out_ch", out_ch)
        _check_positive_int("stride", stride)
        super().__init__(conv3x3(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class PlainBlock(nn.Module):
    """Two conv3×3–BN layers with ReLUs and no skip: the residual block with its shortcut removed.

    ``conv1(stride) → bn1 → relu1 → [dropout] → conv2 → bn2 → relu2``;
    ``(N, in_ch, H, W) → (N, out_ch, H/stride, W/stride)``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        _check_positive_int("in_ch", in_ch)
        _check_positive_int("out_ch", out_ch)
        _check_positive_int("stride", stride)
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if _check_dropout(dropout) > 0 else nn.Identity()
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU(inplace=True)

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        """``F(x)``: everything but the final ReLU."""
        return self.bn2(self.conv2(self.dropout(self.relu1(self.bn1(self.conv1(x))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.residual_branch(x))


class ResidualBlock(PlainBlock):
    """He et al. (2016)'s basic block: ``relu(F(x) + shortcut(x))`` with ``F`` = two conv3×3–BN layers.

    The shortcut is the identity when shape is kept, and a 1×1 convolution with stride + BatchNorm
    (a *projection*, option B of the paper) when ``stride != 1`` or ``in_ch != out_ch``.
    Optional dropout sits between the two convolutions (as in wide ResNets).
    ``(N, in_ch, H, W) → (N, out_ch, H/stride, W/stride)``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dropout: float = 0.0):
        super().__init__(in_ch, out_ch, stride, dropout)
        if stride != 1 or in_ch != out_ch:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        else:
            self.shortcut = nn.Identity()

    @property
    def has_projection(self) -> bool:
        return not isinstance(self.shortcut, nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.residual_branch(x) + self.shortcut(x))


# --------------------------------------------------------------------------------------------
# CIFAR networks: depth 6n + 2
# --------------------------------------------------------------------------------------------
def cifar_blocks_per_stage(depth: int) -> int:
    """``n`` for a CIFAR ResNet of ``depth = 6n + 2`` layers (20 → 3, 56 → 9, 110 → 18)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"CIFAR plain/residual networks need depth = 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, …), "
            f"got {depth!r}."
        )
    return (depth - 2) // 6


class CifarNet(Classifier):
    """The CIFAR network of He et al. (2016, §4.2), plain or residual.

    conv3×3(16) → 3 stages of ``n`` blocks (16, 32, 64 channels; the first block of stages 2 and 3
    halves the resolution) → global average pool → ``fc``; ``6n + 2`` weighted layers in all.
    ``(N, in_channels, H, W) → (N, num_classes)``; ``features`` → ``(N, 4·width)``.

    ``width`` scales the channel counts (16 in the paper); ``dropout`` goes inside every block.
    """

    block_type: type[PlainBlock] = PlainBlock

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, width: int = 16, dropout: float = 0.0):
        super().__init__()
        n = cifar_blocks_per_stage(depth)
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("width", width)
        _check_dropout(dropout)
        self.depth, self.num_classes = depth, num_classes
        self.stem = ConvBNReLU(in_channels, width)
        stages, ch = [], width
        for i, out_ch in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(self.block_type(ch, out_ch, stride, dropout))
                ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = ch
        self.fc = nn.Linear(ch, num_classes)
        _init_conv_net(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return torch.flatten(self.pool(x), 1)


class PlainCNN(CifarNet):
    """:class:`CifarNet` built from :class:`PlainBlock`: the ResNet with every shortcut removed."""

    block_type = PlainBlock


class ResNet(CifarNet):
    """:class:`CifarNet` built from :class:`ResidualBlock`: ResNet-20/32/44/56/110 for CIFAR.

    With projection shortcuts ResNet-20 has 0.27 M parameters and ResNet-56 0.86 M (the paper's
    option-A shortcuts give 0.27 M / 0.85 M).
    """

    block_type = ResidualBlock


class ResNet18(Classifier):
    """ResNet-18 adapted to 32×32 images: 4 stages of 2 residual blocks (64, 128, 256, 512 channels).

    As usual for CIFAR, the ImageNet stem (7×7 stride-2 conv + max-pool) is replaced by a single
    conv3×3–BN–ReLU so small images are not downsampled four-fold at the start. 11.2 M parameters
    at ``width=64``. ``features`` → ``(N, 8·width)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        dropout: float = 0.0,
        blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
    ):
        super().__init__()
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("width", width)
        _check_dropout(dropout)
        if len(blocks_per_stage) != 4 or not all(isinstance(b, int) and b >= 1 for b in blocks_per_stage):
            raise ValueError(f"blocks_per_stage must be 4 integers >= 1, got {blocks_per_stage!r}.")
        self.num_classes = num_classes
        self.stem = ConvBNReLU(in_channels, width)
        stages, ch = [], width
        for i, nblocks in enumerate(blocks_per_stage):
            out_ch = width * 2**i
            blocks = []
            for j in range(nblocks):
                blocks.append(ResidualBlock(ch, out_ch, 2 if (i > 0 and j == 0) else 1, dropout))
                ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = ch
        self.fc = nn.Linear(ch, num_classes)
        _init_conv_net(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.stages(self.stem(x))), 1)


def resnet18_cifar(num_classes: int = 10, **kwargs) -> ResNet18:
    """ResNet-18 for 32×32 inputs (see :class:`ResNet18`)."""
    return ResNet18(num_classes=num_classes, **kwargs)


# --------------------------------------------------------------------------------------------
# VGG and a small CNN
# --------------------------------------------------------------------------------------------
# Channel multipliers of the base width (64) per conv layer; "M" = 2×2 max-pool (Simonyan & Zisserman).
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
    "vgg13": [1, 1, "M", 2, 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
    "vgg16": [1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"],
}


class VGG(Classifier):
    """VGG-style plain convnet with BatchNorm: stacks of conv3×3–BN–ReLU separated by max-pools.

    For 32×32 inputs the five pools leave a 1×1 map; a global average pool makes the head independent
    of the input size. ``width`` is the first stage's channel count (64 in the paper; later stages
    use 2, 4, 8×). ``(N, in_channels, H, W) → (N, num_classes)``; ``features`` → ``(N, 8·width)``.
    """

    def __init__(
        self, config: str = "vgg11", num_classes: int = 10, in_channels: int = 3, width: int = 64, dropout: float = 0.0
    ):
        super().__init__()
        _check_choice("VGG config", config, list(VGG_CONFIGS))
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("width", width)
        _check_dropout(dropout)
        self.config, self.num_classes = config, num_classes
        layers: list[nn.Module] = []
        ch = in_channels
        for item in VGG_CONFIGS[config]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(ConvBNReLU(ch, width * int(item)))
                ch = width * int(item)
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.feature_dim = ch
        self.fc = nn.Linear(ch, num_classes)
        _init_conv_net(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.flatten(self.pool(self.body(x)), 1))


class SimpleCNN(Classifier):
    """A small CNN for quick runs: 2 × [ConvBNReLU, ConvBNReLU, max-pool] → global average pool → fc.

    Channels ``width, width, 2·width, 2·width``; about 0.07 M parameters at ``width=32``.
    ``(N, in_channels, H, W) → (N, num_classes)`` for any ``H, W >= 4``; ``features`` → ``(N, 2·width)``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 32, dropout: float = 0.0):
        super().__init__()
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("width", width)
        _check_dropout(dropout)
        self.num_classes = num_classes
        self.body = nn.Sequential(
            ConvBNReLU(in_channels, width),
            ConvBNReLU(width, width),
            nn.MaxPool2d(2),
            ConvBNReLU(width, 2 * width),
            ConvBNReLU(2 * width, 2 * width),
            nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.feature_dim = 2 * width
        self.fc = nn.Linear(2 * width, num_classes)
        _init_conv_net(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.flatten(self.pool(self.body(x)), 1))


# --------------------------------------------------------------------------------------------
# Lab 06: a conv → pool network whose regularisers are switches
# --------------------------------------------------------------------------------------------
def conv_block(
    in_ch: int, out_ch: int, batch_norm: bool = False, dropout: float = 0.0, activation: str = "relu"
) -> nn.Sequential:
    """conv3×3 (padding 1) → [BatchNorm2d] → activation → 2×2 max-pool → [Dropout]: one stage of :class:`ConvPoolNet`.

    Batch norm normalises the convolution's output *before* the non-linearity (Ioffe & Szegedy, 2015); dropout comes
    after the pool, so it drops whole pooled positions of the stage's output. The convolution keeps its bias only
    without batch norm (BN's shift replaces it). Layers that are switched off are absent, not identities.
    ``(N, in_ch, H, W) → (N, out_ch, H // 2, W // 2)``; children are named ``conv, bn, act, pool, dropout``.
    """
    _check_positive_int("in_ch", in_ch)
    _check_positive_int("out_ch", out_ch)
    layers: dict[str, nn.Module] = {"conv": nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not batch_norm)}
    if batch_norm:
        layers["bn"] = nn.BatchNorm2d(out_ch)
    layers["act"] = make_activation(activation)
    layers["pool"] = nn.MaxPool2d(2)
    if _check_dropout(dropout) > 0:
        layers["dropout"] = nn.Dropout(dropout)
    return nn.Sequential(OrderedDict(layers))


class ConvPoolNet(Classifier):
    """A plain CNN: ``len(widths)`` × :func:`conv_block` → flatten → hidden FC layers → ``fc``.

    Each hidden FC layer is ``Linear → [BatchNorm1d] → activation → [Dropout]``. Regularisers are switches, so the
    configurations of an ablation differ only in them: ``batch_norm`` (after every conv and every hidden FC layer,
    before the activation), ``conv_dropout`` (after every pool), ``fc_dropout`` (after every hidden FC layer).

    Lab 06's network is ``ConvPoolNet(widths=(128, 256, 512), fc_widths=(1024,))``; the small CIFAR-100 CNN is
    ``widths=(32, 64), fc_widths=(512,), fc_dropout=0.5``; the deeper one ``widths=(64, 128, 256, 512),
    fc_widths=(1024, 512), batch_norm=True, fc_dropout=0.2``.

    Args:
        num_classes, in_channels: logits and image channels.
        image_size: input height = width in pixels (fixes the first FC layer's size).
        widths: output channels of the conv blocks (each halves the resolution; ``image_size // 2**len(widths)``
            must stay >= 1).
        fc_widths: units of the hidden FC layers (``()``: the feature map goes straight to ``fc``).
        pooled_size: when the final map is larger than ``pooled_size × pooled_size``, an adaptive average pool
            shrinks it to that size first (keeps FC1 of a 160-px input from having 200 M weights); None keeps it.
        activation: ``relu``, ``leaky_relu``, … (:data:`ACTIVATIONS`).
        init: ``"pytorch"`` (the layers' own uniform init) or ``"kaiming"`` (He-normal with the activation's gain,
            zero biases).
    ``(N, in_channels, image_size, image_size) → (N, num_classes)``; ``features`` → ``(N, fc_widths[-1])``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        widths: Sequence[int] = (128, 256, 512),
        fc_widths: Sequence[int] = (1024,),
        batch_norm: bool = False,
        conv_dropout: float = 0.0,
        fc_dropout: float = 0.0,
        activation: str = "relu",
        init: str = "pytorch",
        pooled_size: int | None = None,
    ):
        super().__init__()
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("image_size", image_size)
        widths, fc_widths = list(widths), list(fc_widths)
        if not widths:
            raise ValueError("widths must name at least one conv block, got an empty list.")
        for w in [*widths, *fc_widths]:
            _check_positive_int("every width", w)
        _check_choice("activation", activation, list(ACTIVATIONS))
        _check_choice("init", init, INITS)
        side = image_size // 2 ** len(widths)
        if side < 1:
            raise ValueError(
                f"{len(widths)} conv blocks halve a {image_size}-pixel image to nothing: "
                f"use at most {int(math.log2(image_size))} blocks or larger images."
            )
        if pooled_size is not None:
            _check_positive_int("pooled_size", pooled_size)
        self.num_classes, self.activation, self.init = num_classes, activation, init
        blocks, ch = [], in_channels
        for w in widths:
            blocks.append(conv_block(ch, w, batch_norm, conv_dropout, activation))
            ch = w
        self.convs = nn.Sequential(*blocks)
        if pooled_size is not None and side > pooled_size:
            self.shrink: nn.Module = nn.AdaptiveAvgPool2d(pooled_size)
            side = pooled_size
        else:
            self.shrink = nn.Identity()
        self.flatten = nn.Flatten()
        hidden, n_in = [], ch * side * side
        for w in fc_widths:
            layers: dict[str, nn.Module] = {"linear": nn.Linear(n_in, w)}
            if batch_norm:
                layers["bn"] = nn.BatchNorm1d(w)
            layers["act"] = make_activation(activation)
            if _check_dropout(fc_dropout) > 0:
                layers["dropout"] = nn.Dropout(fc_dropout)
            hidden.append(nn.Sequential(OrderedDict(layers)))
            n_in = w
        self.hidden = nn.Sequential(*hidden)
        self.feature_dim = n_in
        self.fc = nn.Linear(n_in, num_classes)
        if init == "kaiming":
            gain_name = ACTIVATIONS[activation][1]
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity=gain_name)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.flatten(self.shrink(self.convs(x))))


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "simple_cnn": SimpleCNN,
    "conv_pool_net": ConvPoolNet,
    "plain_cnn": PlainCNN,
    "resnet": ResNet,
    "resnet18": ResNet18,
    "vgg": VGG,
}
_CIFAR_NAME = re.compile(r"^(plain|resnet)(\d+)$")


def available_models() -> list[str]:
    """Names ``build_model`` accepts (``plainN`` / ``resnetN`` for any ``N = 6n + 2``)."""
    return sorted([*MODELS, *VGG_CONFIGS, "plain20", "plain56", "resnet20", "resnet32", "resnet56", "resnet110"])


def _normalise(name: str) -> str:
    """``"ResNet-56"``, ``"resnet_56"`` and ``"resnet56"`` name the same model."""
    return re.sub(r"[-_ ]", "", name.lower())


def _resolve(name: str) -> tuple[Callable[..., nn.Module], dict]:
    if not isinstance(name, str):
        raise ValueError(f"Model name must be a string, got {name!r}.")
    key = _normalise(name)
    aliases = {_normalise(k): k for k in MODELS} | {"plaincnn": "plain_cnn", "resnet18cifar": "resnet18"}
    if key in aliases:
        return MODELS[aliases[key]], {}
    if key in VGG_CONFIGS:
        return VGG, {"config": key}
    match = _CIFAR_NAME.match(key)
    if match:
        cls = ResNet if match.group(1) == "resnet" else PlainCNN
        return cls, {"depth": int(match.group(2))}
    raise ValueError(
        f"Unknown model {name!r}: choose one of {', '.join(available_models())} (or plainN / resnetN with N = 6n + 2)."
    )


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a model by name: ``build_model("resnet56", num_classes=10)``, ``build_model("mlp", in_features=784,
    num_classes=10, width=16, depth=32, residual=True)``, ``build_model("vgg11", width=32)``.

    Unknown names, unknown keyword arguments and impossible configurations raise one ``ValueError``.
    """
    factory, fixed = _resolve(name)
    params = inspect.signature(factory).parameters
    clash = sorted(set(fixed) & set(kwargs))
    if clash and any(kwargs[k] != fixed[k] for k in clash):
        raise ValueError(f"Model {name!r} fixes {clash[0]}={fixed[clash[0]]!r}; got {clash[0]}={kwargs[clash[0]]!r}.")
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown:
        accepted = ", ".join(k for k in params if k not in fixed)
        raise ValueError(f"Model {name!r} does not take {', '.join(unknown)}; it accepts: {accepted}.")
    missing = [
        k
        for k, p in params.items()
        if p.default is inspect.Parameter.empty
        and k not in kwargs
        and k not in fixed
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if missing:
        raise ValueError(f"Model {name!r} needs {', '.join(missing)}.")
    return factory(**{**kwargs, **fixed})


__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "MLP",
    "PlainMLPBlock",
    "ResidualMLPBlock",
    "ConvBNReLU",
    "PlainBlock",
    "ResidualBlock",
    "CifarNet",
    "PlainCNN",
    "ResNet",
    "ResNet18",
    "resnet18_cifar",
    "VGG",
    "VGG_CONFIGS",
    "SimpleCNN",
    "ConvPoolNet",
    "conv_block",
    "count_parameters",
    "build_model",
    "available_models",
    "cifar_blocks_per_stage",
    "make_activation",
]
