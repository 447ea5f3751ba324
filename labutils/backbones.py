"""What a saved network says about itself: the one metadata schema of the backbones labs save for later labs.

Lab 05 saves its best residual network, lab 06 its CIFAR-100 baselines and :func:`labutils.transfer.source_backbone`
its source networks, all with :func:`labutils.train.save_backbone`; lab 07 fine-tunes them and lab 08 measures
their robustness (:func:`labutils.corruptions.saved_models`). The metadata of every such file is built here, by
:func:`backbone_meta`, so each reader finds the same keys with the same meaning:

>>> save_backbone(best.model, path, backbone_meta(best, info, profile=PROFILE, architecture="ResNet-20"))
"""

from __future__ import annotations

from typing import Any

from labutils import check_profile

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
