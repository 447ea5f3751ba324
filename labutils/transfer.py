"""Transfer learning: a stage view of pretrained backbones, freezing by stage, strategies by name,
discriminative learning rates, and the recipes of source and transfer runs.

Every backbone is seen as the same few **stages**, input side first, ending with the classifier ``head``::

    course ResNet (6n+2)   stem, stage1, stage2, stage3, head
    course ResNet-18       stem, stage1, stage2, stage3, stage4, head
    torchvision ResNet     stem, layer1, layer2, layer3, layer4, head      (stem = conv1, bn1, relu, maxpool)

and a **strategy** says which stages train:

    linear_probe   head only (the backbone is a fixed feature extractor)
    ft0            head + the last stage            ft1   + the stage before     ft2   + one more
    full           every stage
    two_phase      phase 1: head only; phase 2: the last two stages + head at a tenth of the learning rate
                   (the ResNet-50 recipe: 10 epochs of phase 1, then layer3, layer4 and fc, ReduceLROnPlateau)

Batch normalisation in a frozen stage is always frozen: running statistics *and* affine parameters, in
evaluation mode even under ``model.train()``, so a frozen stage computes the same function before and after
training. ``freeze_bn=True`` (the default) freezes the batch norms of the trainable stages too, which is
what small batches from a new dataset need; ``freeze_bn=False`` lets them adapt.

>>> model = transfer_model("course", checkpoint=path, strategy="ft0", num_classes=5)
>>> groups = param_groups(model, lr=1e-3, decay=0.3)           # head 1e-3, last stage 3e-4, ...

The backbones themselves (the course's, torchvision's ImageNet ResNets) are built by :mod:`labutils.backbones`;
features and classical baselines on them are :mod:`labutils.features`.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labutils import models as M
from labutils.backbones import (
    IMAGENET_ARCHS,
    ImageNetWeightsUnavailable,
    course_backbone,
    imagenet_backbone,
    imagenet_weights_file,
)
from labutils.datasets import channels_and_classes
from labutils.train import load_checkpoint, load_state_checked
from labutils.util import check_choice, check_int

BACKBONES = ("course", "resnet18", "resnet50")
STRATEGIES = ("linear_probe", "ft0", "ft1", "ft2", "full", "two_phase")
HEAD = "head"
# The two-phase recipe: phase 1 trains the head for TWO_PHASE_EPOCHS epochs; phase 2 unfreezes the last
# TWO_PHASE_UNFREEZE stages as well, at TWO_PHASE_LR_FACTOR times the learning rate, under ReduceLROnPlateau.
TWO_PHASE_EPOCHS = 10
TWO_PHASE_UNFREEZE = 2
TWO_PHASE_LR_FACTOR = 0.1


class HeadMismatchError(ValueError):
    """A classifier head's number of outputs differs from the number of classes of the target data."""


# --------------------------------------------------------------------------------------------
# The stage view
# --------------------------------------------------------------------------------------------
def stage_prefixes(model: nn.Module) -> OrderedDict[str, tuple[str, ...]]:
    """Stage name -> the parameter-name prefixes of that stage, input side first, ``head`` last.

    A parameter belongs to a stage when its name equals a prefix or starts with ``prefix + "."``; these
    prefixes are what an optimizer grouped by parameter names (e.g. a recipe's ``lr_groups``) matches.
    """
    from torchvision.models import ResNet as TorchvisionResNet

    if isinstance(model, M.CifarNet):
        body = [("stem", ("stem",))] + [(f"stage{i}", (f"stage{i}",)) for i in (1, 2, 3)]
    elif isinstance(model, M.ResNet18):
        body = [("stem", ("stem",))] + [(f"stage{i + 1}", (f"stages.{i}",)) for i in range(len(model.stages))]
    elif isinstance(model, TorchvisionResNet):
        body = [("stem", ("conv1", "bn1"))] + [(f"layer{i}", (f"layer{i}",)) for i in (1, 2, 3, 4)]
    else:
        raise ValueError(
            f"{type(model).__name__} has no stage view: transfer works with the course's ResNet, PlainCNN and "
            "ResNet18 and with torchvision's ResNets."
        )
    return OrderedDict([*body, (HEAD, ("fc",))])


def stages(model: nn.Module) -> OrderedDict[str, nn.Module]:
    """Stage name -> module, input side first, ``head`` (the final ``nn.Linear``) last.

    Applying the stages before the head in order, then global average pooling, gives the backbone's
    features; torchvision's stem is returned as ``nn.Sequential(conv1, bn1, relu, maxpool)``.
    """
    out = OrderedDict()
    for name, prefixes in stage_prefixes(model).items():
        if prefixes == ("conv1", "bn1"):
            out[name] = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        else:
            out[name] = model.get_submodule(prefixes[0])
    return out


def _stage_of(param_name: str, prefixes: Mapping[str, tuple[str, ...]]) -> str:
    for stage, pre in prefixes.items():
        if any(param_name == p or param_name.startswith(p + ".") for p in pre):
            return stage
    raise ValueError(f"Parameter {param_name!r} belongs to no stage of this model.")  # pragma: no cover


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Put a fresh ``nn.Linear(feature_dim, num_classes)`` in place of the head; returns the model.

    The new head is initialised by PyTorch's default (from the global random state) on the old head's device.
    """
    check_int("num_classes", num_classes, 1)
    old = stages(model)[HEAD]
    new = nn.Linear(old.in_features, num_classes).to(device=old.weight.device, dtype=old.weight.dtype)
    setattr(model, stage_prefixes(model)[HEAD][0], new)
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes
    return model


def check_head(model: nn.Module, num_classes: int, *, target: str = "the target data") -> None:
    """Raise :class:`HeadMismatchError` unless the model's head gives ``num_classes`` logits."""
    out = stages(model)[HEAD].out_features
    if out != num_classes:
        raise HeadMismatchError(
            f"The model's head gives {out} logits but {target} has {num_classes} classes: replace the head "
            f"(replace_head(model, {num_classes}), or transfer_model(..., keep_head=False))."
        )


# --------------------------------------------------------------------------------------------
# Freezing
# --------------------------------------------------------------------------------------------
class _FrozenBatchNorm:
    """Batch norm fixed in evaluation mode: ``train()`` cannot switch it back, so its running statistics stay
    as they are and it normalises with them. Installed by swapping the module's class, so the state dict,
    parameter names and hooks of the network stay exactly what they were."""

    def train(self, mode: bool = True):
        return super().train(False)


class FrozenBatchNorm1d(_FrozenBatchNorm, nn.BatchNorm1d):
    structure_name = "BatchNorm1d"  # the same architecture as the thawed layer (see train.module_structure)


class FrozenBatchNorm2d(_FrozenBatchNorm, nn.BatchNorm2d):
    structure_name = "BatchNorm2d"


_FROZEN_BN = {nn.BatchNorm1d: FrozenBatchNorm1d, nn.BatchNorm2d: FrozenBatchNorm2d}
_THAWED_BN = {v: k for k, v in _FROZEN_BN.items()}


def is_frozen_bn(module: nn.Module) -> bool:
    return isinstance(module, _FrozenBatchNorm)


def _freeze_bn(bn: nn.Module) -> None:
    bn.__class__ = _FROZEN_BN[type(bn)]
    for p in bn.parameters(recurse=False):
        p.requires_grad_(False)
    bn.eval()


def freeze(model: nn.Module, trainable_stages: Iterable[str], *, freeze_bn: bool = True) -> nn.Module:
    """Make exactly the parameters of ``trainable_stages`` trainable; returns the model.

    Batch norms of frozen stages are frozen (evaluation mode for good, affine parameters fixed); with
    ``freeze_bn`` those of the trainable stages too. Calling ``freeze`` again starts from a fully thawed
    model, so a second phase simply calls it with more stages.
    """
    layout = stage_prefixes(model)
    trainable = list(trainable_stages)
    unknown = [s for s in trainable if s not in layout]
    if unknown:
        raise ValueError(
            f"Unknown stage {unknown[0]!r} for {type(model).__name__}: its stages are {', '.join(layout)}."
        )
    for m in model.modules():  # thaw everything first
        if type(m) in _THAWED_BN:
            m.__class__ = _THAWED_BN[type(m)]
            m.train(model.training)
    for name, p in model.named_parameters():
        p.requires_grad_(_stage_of(name, layout) in trainable)
    for stage, module in stages(model).items():
        if stage not in trainable or freeze_bn:
            for m in module.modules():
                if type(m) in _FROZEN_BN:
                    _freeze_bn(m)
    return model


def trainable_summary(model: nn.Module) -> list[dict[str, Any]]:
    """One row per stage: ``stage``, ``parameters``, ``trainable`` (counts) and ``frozen_bn`` (frozen / all BN)."""
    layout = stage_prefixes(model)
    rows = {s: {"stage": s, "parameters": 0, "trainable": 0, "frozen_bn": "0/0"} for s in layout}
    for name, p in model.named_parameters():
        row = rows[_stage_of(name, layout)]
        row["parameters"] += p.numel()
        row["trainable"] += p.numel() if p.requires_grad else 0
    for stage, module in stages(model).items():
        bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        rows[stage]["frozen_bn"] = f"{sum(map(is_frozen_bn, bns))}/{len(bns)}"
    return list(rows.values())


def trainable_stages(model: nn.Module, strategy: str, phase: int = 1) -> list[str]:
    """The stages a strategy trains (``phase`` 2 only for ``two_phase``), input side first."""
    check_choice("strategy", strategy, STRATEGIES)
    if phase not in (1, 2) or (phase == 2 and strategy != "two_phase"):
        raise ValueError(
            f"phase={phase!r} is not possible for strategy {strategy!r}: phase 2 exists for two_phase only."
        )
    names = list(stage_prefixes(model))
    body = names[1:-1]  # everything between the stem and the head
    if strategy == "full":
        return names
    if strategy == "linear_probe" or (strategy == "two_phase" and phase == 1):
        extra = 0
    elif strategy == "two_phase":
        extra = TWO_PHASE_UNFREEZE
    else:
        extra = int(strategy[2]) + 1
    if extra > len(body):
        raise ValueError(
            f"Strategy {strategy!r} trains the last {extra} stages but {type(model).__name__} has only "
            f"{len(body)} after its stem ({', '.join(body)}): use 'full'."
        )
    return body[len(body) - extra :] + [HEAD]


# --------------------------------------------------------------------------------------------
# A ready model by name (what an experiment recipe calls)
# --------------------------------------------------------------------------------------------
def _load_init(path: str | os.PathLike, model: nn.Module) -> None:
    """Load a fit checkpoint (``best.pt``/``last.pt``) or a plain state dict (a run's ``model.pt``) into model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init={str(path)!r} does not exist: pass the weights file of the earlier phase.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "format" in state:
        load_checkpoint(path, model)
    else:
        load_state_checked(model, state, source=str(path))


def transfer_model(
    backbone: str = "course",
    *,
    num_classes: int,
    strategy: str = "linear_probe",
    checkpoint: str | os.PathLike | None = None,
    weights: str = "DEFAULT",
    pretrained: bool = True,
    freeze_bn: bool | None = None,
    phase: int = 1,
    init: str | os.PathLike | None = None,
    keep_head: bool = False,
    download: bool = True,
    seed: int | None = None,
) -> nn.Module:
    """A backbone re-headed for ``num_classes`` classes with the strategy's stages trainable.

    Args:
        backbone: ``"course"`` (needs ``checkpoint``, the file lab 05 saved), ``"resnet18"`` or ``"resnet50"``
            (torchvision, ImageNet ``weights`` from torch's cache; see :func:`imagenet_backbone`).
        num_classes: classes of the target data.
        strategy: one of :data:`STRATEGIES`; ``phase`` 1 or 2 for ``two_phase``.
        pretrained: False builds the same architecture with random weights (the from-scratch baseline).
        freeze_bn: freeze the batch norms of the trainable stages too (those of frozen stages always are).
            Default: True with pretrained weights, False with random ones (they have no statistics worth keeping).
        init: a file with the weights of this whole transfer model to start from (e.g. phase 1's weights when
            building phase 2): a checkpoint of :func:`labutils.train.fit` or a state dict (an experiment run's
            ``model.pt``).
        keep_head: keep the backbone's own head (source and target share their classes); its size must be
            ``num_classes``.
        seed: if given, the random parts (new head, or every weight when not pretrained) are drawn from it
            without touching the global random state.

    All arguments are plain values (and paths), so an experiment recipe can store and key them.
    """
    check_choice("backbone", backbone, BACKBONES)
    check_choice("strategy", strategy, STRATEGIES)
    check_int("num_classes", num_classes, 1)
    if phase not in (1, 2) or (phase == 2 and strategy != "two_phase"):
        raise ValueError(
            f"phase={phase!r} is not possible for strategy {strategy!r}: phase 2 exists for two_phase only."
        )
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        if backbone == "course":
            if checkpoint is None:
                raise ValueError("backbone='course' needs checkpoint=<the backbone file lab 05 saved>.")
            model, _ = course_backbone(checkpoint, pretrained=pretrained)
        else:
            if checkpoint is not None:
                raise ValueError(f"checkpoint={checkpoint!r} applies to backbone='course' only, not {backbone!r}.")
            model = imagenet_backbone(backbone, weights=weights, pretrained=pretrained, download=download)
        if keep_head:
            check_head(model, num_classes)
        else:
            replace_head(model, num_classes)
    if init is not None:
        _load_init(init, model)
    freeze_bn = pretrained if freeze_bn is None else bool(freeze_bn)
    return freeze(model, trainable_stages(model, strategy, phase), freeze_bn=freeze_bn)


# --------------------------------------------------------------------------------------------
# Discriminative learning rates
# --------------------------------------------------------------------------------------------
def _stage_multipliers(
    model: nn.Module, stage_lr: Mapping[str, float] | None, decay: float | None
) -> OrderedDict[str, float]:
    names = list(stage_prefixes(model))
    if stage_lr is not None and decay is not None:
        raise ValueError("Give stage_lr or decay, not both.")
    if decay is not None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
            raise ValueError(f"decay={decay!r} is not possible: use a number in (0, 1] (1 = one learning rate).")
        # the head gets the full rate; each stage closer to the input a factor `decay` less
        return OrderedDict((s, float(decay) ** (len(names) - 1 - i)) for i, s in enumerate(names))
    mult = OrderedDict((s, 1.0) for s in names)
    for stage, factor in (stage_lr or {}).items():
        if stage not in mult:
            raise ValueError(f"Unknown stage {stage!r} in stage_lr: the stages are {', '.join(names)}.")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
            raise ValueError(f"stage_lr[{stage!r}]={factor!r} is not possible: use a positive multiplier.")
        mult[stage] = float(factor)
    return mult


def param_groups(
    model: nn.Module,
    lr: float,
    *,
    stage_lr: Mapping[str, float] | None = None,
    decay: float | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups, one per stage with trainable parameters, input side first.

    Each group is ``{"params": [...], "lr": lr * multiplier, "stage": name}``. Multipliers come from
    ``stage_lr`` (``{"layer3": 0.1, "layer4": 0.3}``; unnamed stages get 1) or from ``decay`` (head 1, the
    stage before ``decay``, then ``decay**2`` …: discriminative fine-tuning). Frozen parameters are left out.
    ``torch.optim.SGD(param_groups(model, 0.01, decay=0.5), momentum=0.9)``.
    """
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        raise ValueError(f"Learning rate lr={lr!r} must be a positive number.")
    mult = _stage_multipliers(model, stage_lr, decay)
    layout = stage_prefixes(model)
    members: dict[str, list[nn.Parameter]] = {s: [] for s in layout}
    for name, p in model.named_parameters():
        if p.requires_grad:
            members[_stage_of(name, layout)].append(p)
    groups = [{"params": ps, "lr": lr * mult[s], "stage": s} for s, ps in members.items() if ps]
    if not groups:
        raise ValueError("The model has no trainable parameters: freeze() left every stage frozen.")
    return groups


def lr_groups(
    model: nn.Module, *, stage_lr: Mapping[str, float] | None = None, decay: float | None = None
) -> dict[str, float]:
    """The same multipliers as :func:`param_groups`, keyed by parameter-name prefix (``{"layer3": 0.1, "fc": 1.0,
    "conv1": ...}``): the form an experiment recipe's ``lr_groups`` takes."""
    mult = _stage_multipliers(model, stage_lr, decay)
    return {p: mult[s] for s, prefixes in stage_prefixes(model).items() for p in prefixes}


# --------------------------------------------------------------------------------------------
# Two phases with labutils.train.fit
# --------------------------------------------------------------------------------------------
def fit_two_phase(
    model: nn.Module,
    train_loader,
    val_loader,
    *,
    lr: float,
    phase1_epochs: int = TWO_PHASE_EPOCHS,
    phase2_epochs: int = TWO_PHASE_EPOCHS,
    freeze_bn: bool = True,
    scheduler: str | None = "plateau",
    checkpoint_dir: str | os.PathLike | None = None,
    **fit_kwargs,
):
    """Train the head alone for ``phase1_epochs`` at ``lr``, then the last two stages and the head for
    ``phase2_epochs`` at ``lr * TWO_PHASE_LR_FACTOR``; each phase is one :func:`labutils.train.fit` call
    (a fresh optimizer and scheduler). Returns the two histories. Checkpoints go to ``phase1/`` and
    ``phase2/`` under ``checkpoint_dir``.
    """
    from labutils.train import fit

    histories = []
    for phase, epochs, rate in ((1, phase1_epochs, lr), (2, phase2_epochs, lr * TWO_PHASE_LR_FACTOR)):
        freeze(model, trainable_stages(model, "two_phase", phase), freeze_bn=freeze_bn)
        ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / f"phase{phase}"
        histories.append(
            fit(
                model,
                train_loader,
                val_loader,
                epochs=epochs,
                lr=rate,
                scheduler=scheduler,
                checkpoint_dir=ckpt,
                **fit_kwargs,
            )
        )
    return tuple(histories)


# --------------------------------------------------------------------------------------------
# Recipes: source backbones and transfer runs on the experiment harness
# --------------------------------------------------------------------------------------------
SOURCE_LAB = "05_residual_cnn"  # where the course backbone's runs are cached, trained here or by lab 05
BACKBONE_FILE = "backbone.pt"  # written next to a source run's model.pt
# Source -> target pairs on real data that this machine has: name -> (source data, target data).
TRANSFER_PAIRS = {
    "mnist_0-4_to_5-9": (
        {"dataset": "mnist", "classes": (0, 1, 2, 3, 4)},
        {"dataset": "mnist", "classes": (5, 6, 7, 8, 9)},
    ),
    "mnist_to_digits": ({"dataset": "mnist"}, {"dataset": "digits"}),
}


def course_backbone_recipe(
    dataset: str = "cifar10",
    *,
    depth: int = 20,
    width: int = 16,
    epochs: int = 30,
    classes: Iterable[int] | None = None,
    name: str | None = None,
    **fields: Any,
):
    """The recipe of a source network: the course :class:`~labutils.models.ResNet` (depth 6n + 2, ``width``
    channels in its first stage) trained on ``dataset`` (or its ``classes``) from scratch.

    Defaults are lab 05's backbone (ResNet-20, SGD with momentum 0.9 at 0.1, cosine schedule, standard
    augmentation, weight decay 5e-4); ``fields`` are any other :class:`~labutils.experiment.Recipe` fields
    (``train_subset``, ``lr``, ``seed``, ...). Run it with :func:`source_backbone`.
    """
    from labutils.experiment import Recipe

    classes = None if classes is None else tuple(int(c) for c in classes)
    in_channels, num_classes = channels_and_classes(dataset, classes)
    settings = dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, scheduler="cosine", batch_size=128)
    settings["augment"] = "standard" if in_channels == 3 else "none"  # flips do not suit digits
    settings.update(fields)
    kwargs = dict(depth=depth, num_classes=num_classes, in_channels=in_channels, width=width)
    where = dataset if classes is None else f"{dataset}{''.join(map(str, classes))}"
    return Recipe(
        name or f"source-resnet{depth}-w{width}-{where}",
        model=M.ResNet,
        model_kwargs=kwargs,
        dataset=dataset,
        classes=classes,
        epochs=epochs,
        **settings,
    )


def source_backbone(recipe, *, lab: str = SOURCE_LAB, profile: str | None = None, progress: bool = True):
    """Train (or reload from the cache of ``runs/<lab>/``) a source recipe and save its network as a backbone.

    Returns ``(path, result)``: ``path`` is ``backbone.pt`` in the run's folder, written with
    :func:`labutils.train.save_backbone` and the metadata of :func:`labutils.backbones.backbone_meta`, and
    rewritten only when its run changed, so recipes that name it keep their keys.
    """
    from labutils import default_profile
    from labutils.backbones import backbone_meta
    from labutils.experiment import loaders_for, run
    from labutils.train import save_backbone

    profile = profile or default_profile()
    result = run(recipe, lab=lab, profile=profile, progress=progress)
    if result.test is None:
        raise RuntimeError(f"The source run {recipe.name} was interrupted: run it again to finish it.")
    path = result.dir / BACKBONE_FILE
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("meta", {}).get("key") == result.key:
            return path, result
    info = loaders_for(recipe, profile).info  # built by run() above: no second load
    save_backbone(result.model.cpu(), path, backbone_meta(result, info, profile=profile))
    return path, result


def backbone_provenance(path: str | os.PathLike, meta: Mapping[str, Any]) -> str:
    """One sentence saying where a saved backbone comes from, from its :func:`labutils.backbones.backbone_meta`:
    the lab that trained it (the ``runs/NN_<stem>/`` folder it lies in), its run and profile, the data (real or a
    synthetic stand-in) and its test accuracy there."""
    path = Path(path)
    lab = next((part for part in path.parts if part[:2].isdigit() and part[2:3] == "_"), None)
    dataset = meta.get("dataset") or {}
    kind = "a SYNTHETIC stand-in" if meta.get("synthetic") else "real data"
    acc = meta.get("test_acc")
    return (
        f"{path.name}: {meta.get('architecture', meta.get('model_class'))} trained by "
        f"{'lab ' + lab[:2] + ' (' + lab + ')' if lab else 'an unknown lab'}, run {meta.get('run')!r} "
        f"({meta.get('profile')} profile), on {dataset.get('name', '?')} — {kind}"
        + (f"; test accuracy there {acc:.3f}." if acc is not None else ".")
    )


def _trainable_lr_groups(model: nn.Module, strategy: str, phase: int, decay: float) -> dict[str, float]:
    """:func:`lr_groups` for the stages the strategy trains (a prefix of a frozen stage matches nothing)."""
    layout = stage_prefixes(model)
    groups = lr_groups(model, decay=decay)
    keep = {p for s in trainable_stages(model, strategy, phase) for p in layout[s]}
    return {p: m for p, m in groups.items() if p in keep}


def transfer_recipe(
    name: str,
    checkpoint: str | os.PathLike,
    *,
    strategy: str,
    dataset: str,
    classes: Iterable[int] | None = None,
    pretrained: bool = True,
    freeze_bn: bool | None = None,
    phase: int = 1,
    init: str | os.PathLike | None = None,
    decay: float | None = None,
    **fields: Any,
):
    """A recipe that trains :func:`transfer_model` (course backbone at ``checkpoint``) on ``dataset``.

    ``strategy``, ``pretrained``, ``freeze_bn``, ``phase`` and ``init`` go to :func:`transfer_model`;
    ``pretrained=False`` with ``strategy="full"`` is the from-scratch baseline of the same architecture.
    ``decay`` sets discriminative learning rates (head ``lr``, each stage closer to the input ``decay``
    times less) as the recipe's ``lr_groups``. The checkpoint (and ``init``) are keyed by their content.
    ``fields`` are any other Recipe fields (``train_per_class``, ``epochs``, ``lr``, ``optimizer``, ...).
    """
    from labutils.experiment import Recipe

    classes = None if classes is None else tuple(int(c) for c in classes)
    _, num_classes = channels_and_classes(dataset, classes)
    kwargs = dict(
        backbone="course",
        checkpoint=Path(checkpoint),
        num_classes=num_classes,
        strategy=strategy,
        pretrained=bool(pretrained),
        freeze_bn=freeze_bn,
        phase=phase,
    )
    if init is not None:
        kwargs["init"] = Path(init)
    groups = None
    if decay is not None:
        model = transfer_model(**{**kwargs, "init": None})
        groups = _trainable_lr_groups(model, strategy, phase, decay)
    return Recipe(
        name, model=transfer_model, model_kwargs=kwargs, dataset=dataset, classes=classes, lr_groups=groups, **fields
    )


def phase_two_recipe(
    phase_one,
    *,
    epochs: int,
    lr_factor: float = TWO_PHASE_LR_FACTOR,
    scheduler: str | None = "plateau",
    patience: int | None = None,
):
    """Phase 2 of ``two_phase``, after the run ``phase_one`` (a finished :class:`~labutils.experiment.RunResult`
    of a ``two_phase`` recipe): the last two stages and the head, starting from phase 1's ``model.pt`` (named
    as a path, so phase 2's key follows phase 1's weights), at ``lr_factor`` times its learning rate."""
    from labutils.experiment import MODEL_FILE

    r = phase_one.recipe
    if r.model_kwargs.get("strategy") != "two_phase" or r.model_kwargs.get("phase", 1) != 1:
        raise ValueError(f"{r.name} is not phase 1 of a two_phase recipe: phase 2 starts from one.")
    if phase_one.test is None:
        raise ValueError(f"{r.name} did not finish: run it again before phase 2.")
    kwargs = {**r.model_kwargs, "phase": 2, "init": phase_one.dir / MODEL_FILE}
    return r.replace(
        name=f"{r.name}-phase2",
        model_kwargs=kwargs,
        lr=r.lr * lr_factor,
        epochs=epochs,
        scheduler=scheduler,
        patience=patience,
    )


def imagenet_transfer_model(arch: str = "resnet18", *, input_size: int = 224, **kwargs) -> nn.Module:
    """:func:`transfer_model` with a torchvision ImageNet backbone behind a bilinear resize to
    ``input_size`` pixels: small images (CIFAR's 32 px) meet the filters at the scale they were trained on.
    ``(N, C, H, W) -> (N, num_classes)``; ``kwargs`` as for :func:`transfer_model`."""
    check_int("input_size", input_size, 32)
    model = transfer_model(arch, **kwargs)
    return nn.Sequential(nn.Upsample(size=(input_size, input_size), mode="bilinear", align_corners=False), model)


__all__ = [
    "backbone_provenance",
    "BACKBONES",
    "IMAGENET_ARCHS",
    "STRATEGIES",
    "TWO_PHASE_EPOCHS",
    "TWO_PHASE_UNFREEZE",
    "TWO_PHASE_LR_FACTOR",
    "ImageNetWeightsUnavailable",
    "HeadMismatchError",
    "FrozenBatchNorm1d",
    "FrozenBatchNorm2d",
    "course_backbone",
    "imagenet_backbone",
    "imagenet_weights_file",
    "stages",
    "stage_prefixes",
    "replace_head",
    "check_head",
    "freeze",
    "is_frozen_bn",
    "trainable_stages",
    "trainable_summary",
    "transfer_model",
    "param_groups",
    "lr_groups",
    "fit_two_phase",
    "SOURCE_LAB",
    "TRANSFER_PAIRS",
    "course_backbone_recipe",
    "source_backbone",
    "transfer_recipe",
    "phase_two_recipe",
    "imagenet_transfer_model",
]
