"""Lab 06's study written down as data: the regularisation ablation and the CIFAR-100 baselines.

The ablation trains one network (:class:`labutils.models.ConvPoolNet`) five times with the same data, seed, epochs
and batch order; each configuration changes only the fields named here:

============  =====================================================================================
baseline      nothing
batch_norm    BatchNorm after every conv and after FC1, before the ReLU
dropout_wd    dropout 0.25 after every pool, 0.5 after FC1; weight decay 1e-4 in the optimizer
augmentation  the dataset's augmentation (horizontal flip + colour jitter ±0.2; digits: shifts and rotations)
combined      all of the above
============  =====================================================================================

>>> base = Recipe("cnn", model=ConvPoolNet, model_kwargs=dict(num_classes=10, in_channels=1, image_size=28), ...)
>>> recipes = ablation_recipes(base)           # {"baseline": Recipe, ..., "combined": Recipe}
>>> variants = activation_recipes(base)        # the baseline with leaky ReLU, and with He initialisation
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labutils.data import augmentation_for
from labutils.experiment import Recipe

CONFIGURATIONS = ("baseline", "batch_norm", "dropout_wd", "augmentation", "combined")
AUGMENT_PRESET = "flip_jitter"  # the lab's augmentation; augmentation_for swaps in "digits" for MNIST
BATCH_NORM: dict[str, Any] = {"model_kwargs": {"batch_norm": True}}
DROPOUT_WD: dict[str, Any] = {"model_kwargs": {"conv_dropout": 0.25, "fc_dropout": 0.5}, "weight_decay": 1e-4}

# The CIFAR-100 baselines (ConvPoolNet keyword arguments at full width).
SMALL_CONVPOOLNET: dict[str, Any] = {"widths": (32, 64), "fc_widths": (512,), "fc_dropout": 0.5}
DEEP_CONVPOOLNET: dict[str, Any] = {
    "widths": (64, 128, 256, 512),
    "fc_widths": (1024, 512),
    "batch_norm": True,
    "fc_dropout": 0.2,
}


def configuration_changes(name: str, dataset: str) -> dict[str, Any]:
    """The recipe fields configuration ``name`` sets on ``dataset`` (``model_kwargs`` holds only the changed
    keyword arguments). ``configuration_changes("combined", "mnist")`` →
    ``{"model_kwargs": {"batch_norm": True, "conv_dropout": 0.25, "fc_dropout": 0.5}, "weight_decay": 1e-4,
    "augment": "digits"}``."""
    if name not in CONFIGURATIONS:
        raise ValueError(f"Unknown configuration {name!r}: choose one of {', '.join(CONFIGURATIONS)}.")
    augment = {"augment": augmentation_for(dataset, AUGMENT_PRESET)}
    parts = {
        "baseline": [],
        "batch_norm": [BATCH_NORM],
        "dropout_wd": [DROPOUT_WD],
        "augmentation": [augment],
        "combined": [BATCH_NORM, DROPOUT_WD, augment],
    }[name]
    out: dict[str, Any] = {"model_kwargs": {}}
    for part in parts:
        for key, value in part.items():
            if key == "model_kwargs":
                out["model_kwargs"].update(value)
            else:
                out[key] = value
    return out


def apply_changes(base: Recipe, name: str, changes: Mapping[str, Any]) -> Recipe:
    """``base`` renamed ``name`` with ``changes`` applied (``model_kwargs`` merged into the base's, not replaced)."""
    fields = dict(changes)
    fields["model_kwargs"] = {**base.model_kwargs, **fields.get("model_kwargs", {})}
    return base.replace(name=name, **fields)


def ablation_recipes(base: Recipe) -> dict[str, Recipe]:
    """The five configurations of :data:`CONFIGURATIONS` built on ``base`` (which should have no regulariser on).

    They share everything else — seed, epochs, batch size, data settings, optimizer, learning rate — so their
    differences are the regularisers' effects."""
    return {name: apply_changes(base, name, configuration_changes(name, base.dataset)) for name in CONFIGURATIONS}


def activation_recipes(base: Recipe) -> dict[str, Recipe]:
    """The baseline again with a leaky ReLU (``leaky_relu``) and with He initialisation (``he_init``): two remedies
    for dead ReLUs, measured beside the baseline."""
    return {
        "leaky_relu": apply_changes(base, "leaky_relu", {"model_kwargs": {"activation": "leaky_relu"}}),
        "he_init": apply_changes(base, "he_init", {"model_kwargs": {"init": "kaiming"}}),
    }


def recipe_differences(a: Recipe, b: Recipe) -> set[str]:
    """Fields in which two recipes differ (``model_kwargs.<key>`` for model arguments; the name is ignored)."""
    ca, cb = a.as_config(), b.as_config()
    out = {k for k in ca if k not in ("name", "model_kwargs") and ca[k] != cb[k]}
    ka, kb = ca["model_kwargs"], cb["model_kwargs"]
    out |= {f"model_kwargs.{k}" for k in set(ka) | set(kb) if ka.get(k) != kb.get(k)}
    return out


def scaled(kwargs: Mapping[str, Any], divisor: int) -> dict[str, Any]:
    """``kwargs`` of a :class:`~labutils.models.ConvPoolNet` with every conv and FC width divided by ``divisor``
    (at least 1 unit each): the same architecture, small enough for the quick profile."""
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
        raise ValueError(f"divisor must be an integer >= 1, got {divisor!r}.")
    out = dict(kwargs)
    for key in ("widths", "fc_widths"):
        if key in out:
            out[key] = tuple(max(1, int(w) // divisor) for w in out[key])
    return out


def plot_ablation_curves(histories: Mapping[str, Any], *, title: str | None = None):
    """Training (dashed) and validation (solid) curves of several runs: accuracy in the left panel, loss in the
    right, one colour per run in both, one legend for the figure. Training and validation of a metric share one
    panel, so the gap between them is read off directly, and every run shares that panel's axes.

    ``histories``: ``{run name: History}`` (or dicts of per-epoch lists with ``train_acc``, ``val_acc``,
    ``train_loss``, ``val_loss``). Returns ``(fig, data)`` with ``data[metric][run]`` the values drawn
    (metric in ``train_acc``, ``val_acc``, ``train_loss``, ``val_loss``) and ``data["colors"][run]``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    if not histories:
        raise ValueError("plot_ablation_curves needs at least one history, got an empty dict.")
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.6), sharex=True, layout="constrained")
    data: dict[str, Any] = {m: {} for m in ("train_acc", "val_acc", "train_loss", "val_loss")}
    data["colors"] = {}
    for k, (name, history) in enumerate(histories.items()):
        color = f"C{k % 10}"
        data["colors"][name] = color
        for ax, quantity in zip(axes, ("acc", "loss")):
            for split, style in (("train", "--"), ("val", "-")):
                values = [float(v) for v in history[f"{split}_{quantity}"]]
                epochs = range(1, len(values) + 1)
                ax.plot(epochs, values, style, color=color, marker="o", ms=3, lw=1.4)
                data[f"{split}_{quantity}"][name] = values
    axes[0].set(xlabel="epoch", ylabel="accuracy")
    axes[1].set(xlabel="epoch", ylabel="cross-entropy loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=c, lw=2, label=n) for n, c in data["colors"].items()]
    handles += [Line2D([], [], color="0.3", ls="--", label="training"), Line2D([], [], color="0.3", label="validation")]
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig, data


__all__ = [
    "CONFIGURATIONS",
    "AUGMENT_PRESET",
    "BATCH_NORM",
    "DROPOUT_WD",
    "SMALL_CONVPOOLNET",
    "DEEP_CONVPOOLNET",
    "configuration_changes",
    "apply_changes",
    "ablation_recipes",
    "activation_recipes",
    "recipe_differences",
    "scaled",
    "plot_ablation_curves",
]
