"""Backbones: the networks one lab trains and a later lab reuses, and what a saved one says about itself.

* ``"course"``: a network saved by lab 05 with :func:`labutils.train.save_backbone` (a CIFAR ResNet of depth
  6n + 2 or the course's ResNet-18), rebuilt from the checkpoint's ``model_kwargs`` (:func:`course_backbone`);
* ``"resnet18"`` / ``"resnet50"``: torchvision's ImageNet networks (:func:`imagenet_backbone`). Their weights are
  read from torch's cache, ``$TORCH_HOME/hub/checkpoints/`` under torchvision's own file names
  (``resnet18-f37072fd.pth`` …), or downloaded there when the host answers within seconds; otherwise
  :class:`ImageNetWeightsUnavailable` says which file to place where, and a lab goes on with the course backbone.

The metadata saved beside a backbone has one schema.

Lab 05 saves its best residual network, lab 06 its CIFAR-100 baselines and :func:`labutils.transfer.source_backbone`
its source networks, all with :func:`labutils.train.save_backbone`; lab 07 fine-tunes them and lab 08 measures
their robustness (:func:`labutils.corruptions.saved_models`). The metadata of every such file is built here, by
:func:`backbone_meta`, so each reader finds the same keys with the same meaning:

>>> save_backbone(best.model, path, backbone_meta(best, info, profile=PROFILE, architecture="ResNet-20"))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from labutils import check_profile
from labutils import models as M
from labutils.checkpoints import CheckpointMismatchError, load_backbone, load_state_checked
from labutils.util import check_choice

BACKBONE_META_KEYS = (
    "architecture",
    "model_class",
    "model_kwargs",
    "num_parameters",
    "dataset",
    "synthetic",
    "num_classes",
    "classes",
    "image_shape",
    "mean",
    "std",
    "run",
    "key",
    "recipe",
    "profile",
    "val_acc",
    "test_acc",
    "test_top5",
)


def backbone_meta(result, info, *, profile: str, architecture: str | None = None) -> dict[str, Any]:
    """The metadata to save beside a trained network: a dict with exactly the keys of :data:`BACKBONE_META_KEYS`.

    ``result`` is the :class:`labutils.experiment.RunResult` of the run that trained it, whose recipe's
    ``model`` is the network's class; ``info`` the :class:`labutils.data.DatasetInfo` of the data it was
    trained on (for the class names and the normalisation); ``profile`` the profile it ran under.

    ======================  ==================================================================================
    ``architecture``        a readable name, e.g. ``"ResNet-20"`` (default: the class name)
    ``model_class``         the network's class name in :mod:`labutils.models`
    ``model_kwargs``        the recipe's keyword arguments: ``model_class(**model_kwargs)`` rebuilds the network
    ``num_parameters``      number of weights and biases
    ``dataset``             the run's :meth:`DatasetInfo.as_dict` (name, base, source, synthetic, num_classes,
                            image_shape, sizes, ...); the name ends in ``-synthetic`` for a stand-in
    ``synthetic``           True if it was trained on a synthetic stand-in (the same as ``dataset["synthetic"]``)
    ``num_classes``         outputs of the classifier (the same as ``dataset["num_classes"]``)
    ``classes``             class names, index = label
    ``image_shape``         input shape ``[C, H, W]``
    ``mean``, ``std``       per-channel normalisation of inputs in [0, 1]: the network sees (x - mean) / std
    ``run``, ``key``        the recipe's name and the run's cache key (``runs/<lab>/checkpoints/<key>/``)
    ``recipe``              every setting of the run (:meth:`Recipe.as_config`)
    ``profile``             ``"quick"`` or ``"full"``
    ``val_acc``             top-1 validation accuracy after the last epoch (None without validation data)
    ``test_acc``            top-1 test accuracy of the saved weights, in [0, 1]
    ``test_top5``           top-5 test accuracy of the saved weights, in [0, 1]
    ======================  ==================================================================================
    """
    model_class = type(result.model)
    if result.recipe.model is not model_class:
        raise ValueError(
            f"Run {result.name!r} built its network with {result.recipe.model!r}, not with its class "
            f"{model_class.__name__}: save a run whose recipe names the model class, so that "
            "model_class(**model_kwargs) rebuilds it."
        )
    trained_on = (result.dataset.get("name"), result.dataset.get("num_classes"))
    if trained_on != (info.name, info.num_classes):
        raise ValueError(
            f"info describes {info.name} ({info.num_classes} classes) but run {result.name!r} was trained on "
            f"{trained_on[0]} ({trained_on[1]} classes): pass the DatasetInfo of the run's data."
        )
    if result.test is None:
        raise ValueError(f"Run {result.name!r} was interrupted before its test: run it again to finish it first.")
    last_epoch = result.history[-1] if len(result.history) else {}
    return {
        "architecture": architecture or model_class.__name__,
        "model_class": model_class.__name__,
        "model_kwargs": dict(result.recipe.model_kwargs),
        "num_parameters": sum(p.numel() for p in result.model.parameters()),
        "dataset": dict(result.dataset),
        "synthetic": bool(result.dataset["synthetic"]),
        "num_classes": info.num_classes,
        "classes": list(info.classes),
        "image_shape": list(info.image_shape),
        "mean": list(info.mean),
        "std": list(info.std),
        "run": result.name,
        "key": result.key,
        "recipe": result.recipe.as_config(),
        "profile": check_profile(profile),
        "val_acc": last_epoch.get("val_acc"),
        "test_acc": result.test.top1,
        "test_top5": result.test.top5,
    }


__all__ = ["BACKBONE_META_KEYS", "backbone_meta"]


IMAGENET_ARCHS = ("resnet18", "resnet50")
DOWNLOAD_TIMEOUT_S = 4.0  # the connection probe; a download that started is bounded per socket read


class ImageNetWeightsUnavailable(RuntimeError):
    """torchvision's ImageNet weights are neither in torch's cache nor downloadable (or the cached file is wrong)."""


_COURSE_CLASSES = {"ResNet": M.ResNet, "PlainCNN": M.PlainCNN, "ResNet18": M.ResNet18}


def course_backbone(path: str | os.PathLike, *, pretrained: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The network lab 05 saved at ``path`` (:func:`labutils.train.save_backbone`); returns ``(model, meta)``.

    The architecture comes from the checkpoint (``model_class`` and ``meta["model_kwargs"]``).
    ``pretrained=False`` builds the same architecture with fresh random weights: the from-scratch baseline.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No course backbone at {path}: run lab 05 (notebooks/05_residual_cnn.ipynb), which saves "
            "runs/05_residual_cnn/backbone_resnet.pt, or pass the file it wrote."
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "labutils-backbone":
        raise ValueError(f"{path} is not a backbone checkpoint written by labutils.train.save_backbone.")
    name = ckpt.get("model_class")
    if name not in _COURSE_CLASSES:
        raise ValueError(
            f"{path} holds a {name}; transfer works with the course's {', '.join(_COURSE_CLASSES)} backbones."
        )
    if not pretrained:
        meta = dict(ckpt["meta"])
        return _COURSE_CLASSES[name](**meta.get("model_kwargs", {})), meta
    return load_backbone(path, _COURSE_CLASSES[name])


def _imagenet_weights(arch: str, weights: str):
    from torchvision import models as tvm

    check_choice("ImageNet backbone", arch, IMAGENET_ARCHS)
    enum = tvm.get_model_weights(arch)
    try:
        return enum[weights]
    except KeyError:
        raise ValueError(
            f"Unknown weights {weights!r} for {arch}: choose one of DEFAULT, {', '.join(w.name for w in enum)}."
        ) from None


def imagenet_weights_file(arch: str, weights: str = "DEFAULT") -> Path:
    """Where torch's cache keeps ``arch``'s ImageNet weights: ``$TORCH_HOME/hub/checkpoints/<torchvision's name>``.

    The file name is the last part of the weights' URL in torchvision's enum (e.g. ``resnet18-f37072fd.pth``),
    exactly where ``torchvision.models.resnet18(weights=...)`` looks for it.
    """
    url = _imagenet_weights(arch, weights).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _download_weights(url: str, target: Path, timeout: float) -> str | None:
    """Download ``url`` to ``target`` (hash-checked by torch.hub) if its host answers; returns why not, or None."""
    from labutils.datasets import network_reachable, socket_timeout

    host = urlparse(url).hostname or ""
    if not network_reachable(host, timeout=timeout):
        return f"no connection to {host}"
    target.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(target.name)
    try:
        with socket_timeout(30):
            torch.hub.download_url_to_file(url, str(target), hash_prefix=match.group(1) if match else None)
    except Exception as exc:  # a refused or broken download is missing weights, not a crash
        return f"download failed ({type(exc).__name__}: {exc})"
    return None


def imagenet_backbone(
    arch: str = "resnet18",
    *,
    weights: str = "DEFAULT",
    pretrained: bool = True,
    download: bool = True,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> nn.Module:
    """torchvision's ``arch`` (``resnet18`` or ``resnet50``) with ImageNet weights from torch's cache.

    ``weights`` names a member of torchvision's weights enum (``"DEFAULT"``, ``"IMAGENET1K_V1"``, …). A missing
    file is downloaded when ``download`` and the host answers within ``timeout`` seconds; otherwise, or when
    the file holds something else, :class:`ImageNetWeightsUnavailable` says which file to place where.
    ``pretrained=False`` gives the same network with random weights (no file needed).
    """
    from torchvision import models as tvm

    w = _imagenet_weights(arch, weights)
    model = tvm.get_model(arch, weights=None)
    if not pretrained:
        return model
    path = imagenet_weights_file(arch, weights)
    title = f"torchvision's {arch} ImageNet weights ({w.name})"
    if not path.is_file():
        why = _download_weights(w.url, path, timeout) if download else "downloading was not allowed"
        if why is not None:
            raise ImageNetWeightsUnavailable(
                f"{title} are not in torch's cache and could not be downloaded ({why}): place {path.name} "
                f"(from {w.url}) in {path.parent}/ and run again, or use the course backbone."
            )
    # Whatever the file holds, the fix is the same: the right file. torch's own message is not passed on: for a
    # damaged file its advice (load with weights_only=False) would be wrong.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise ImageNetWeightsUnavailable(
            f"{path} is damaged or is not a PyTorch weights file; replace it with {path.name} from {w.url}."
        ) from None
    try:
        load_state_checked(model, state, source=str(path))
    except CheckpointMismatchError as exc:
        detail = str(exc).split(": ", 1)[-1]
        raise ImageNetWeightsUnavailable(
            f"{path} is not {title} ({detail.rstrip('.')}); replace it with {path.name} from {w.url}."
        ) from None
    return model
