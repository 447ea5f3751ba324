"""One configuration = one recipe = one cached, tracked, resumable run.

A lab states *what* to compare; this module knows *how* to run one configuration of it:

>>> base = Recipe("plain-32", model=MLP, model_kwargs=dict(in_features=784, num_classes=10, width=16, depth=32),
...               dataset="mnist", train_subset=5000, optimizer="adam", lr=5e-3, scheduler="onecycle", epochs=2)
>>> plain = run(base, lab="04_residual_mlp")
>>> residual = run(base.replace(name="residual-32", model_kwargs={**base.model_kwargs, "residual": True}),
...                lab="04_residual_mlp")
>>> results_table([plain, residual])          # one row per run: test top-1/top-5, epochs, seconds, ...

``run`` seeds everything, builds the model, resets the order of the training batches, trains with
:func:`labutils.train.fit` (optionally recording gradients), tests with :func:`labutils.train.evaluate`,
times the run and gives it one wandb run (grouped by notebook and profile, the whole recipe as config).

**The cache.** Each run lives in ``runs/<lab>/checkpoints/<key>/``. The key is the recipe's readable name
plus a short hash of every field that affects the result and of the dataset's provenance (name, source,
synthetic or real, split sizes, classes). So:

- an unchanged re-run reloads the finished run in seconds and says so;
- a run interrupted part-way (Ctrl-C, a killed kernel) resumes from its last epoch;
- any changed knob (learning rate, subset size, depth, data source, ...) gives another key: it trains anew,
  and a stale result can never be shown under new parameters.

The key also covers the source files of the code that builds and trains the model (``labutils/models.py``,
``train.py``, ``optimizers.py``, ``data.py`` and the factory's own module): whoever edits them gets new runs,
never the results of the code as it was. Only ``track`` is left out of the key: it decides whether numbers
are logged, not what they are.
The model factory is keyed by its import path (``labutils.models.MLP``), so it must be a module-level
class or function; ``pathlib.Path`` values in ``model_kwargs`` (a backbone checkpoint, say) are keyed by
the file's content, so a retrained backbone gives new keys downstream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from labutils.train import TrainingBars

HARNESS_VERSION = 2  # bump when a change in labutils changes what an unchanged recipe trains (2: no flips on digits)
RESULT_FILE, MODEL_FILE, RECIPE_FILE = "result.json", "model.pt", "recipe.json"
EVALUATION_FILE, GRADIENTS_FILE = "evaluation.npz", "gradients.npz"
_DATA_FIELDS = (
    "dataset",
    "classes",
    "train_subset",
    "train_per_class",
    "val_size",
    "test_subset",
    "augment",
    "augment_on",
    "batch_size",
)


@dataclass(frozen=True)
class Recipe:
    """Everything that defines one training run. ``recipe.replace(lr=0.01)`` gives a variant.

    - model: a module-level class or function returning an ``nn.Module`` (called with ``model_kwargs``),
      or a name for :func:`labutils.models.build_model`.
    - data: ``dataset`` (a :mod:`labutils.data` name), ``classes`` (keep only these labels),
      ``train_subset`` / ``train_per_class`` (training images in all / per class), ``val_size``,
      ``test_subset``, ``augment`` (a preset), ``augment_on`` (``"loader"``: image by image in the DataLoader;
      ``"device"``: whole batches on the training device, :mod:`labutils.batch_augment`), ``batch_size``.
    - optimisation: ``optimizer`` (adam, adamw, sgd), ``lr``, ``lr_groups`` (``{parameter-name prefix:
      lr multiplier}`` for discriminative learning rates; parameters matching no prefix get ``lr``),
      ``weight_decay``, ``momentum``, ``nesterov``, ``scheduler`` (+ ``scheduler_kwargs``), ``epochs``,
      ``patience`` (early stopping), ``max_steps_per_epoch``, ``seed``.
    - instrumentation: ``record_every`` (gradient norms every n-th step; None = no recorder), ``track`` (wandb).
    """

    name: str
    model: Callable[..., Any] | str
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    dataset: str = "mnist"
    classes: tuple[int, ...] | None = None
    train_subset: int | None = None
    train_per_class: int | None = None
    val_size: int | None = None
    test_subset: int | None = None
    augment: str = "none"
    augment_on: str = "loader"
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_groups: Mapping[str, float] | None = None
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    scheduler: str | None = None
    scheduler_kwargs: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 1
    patience: int | None = None
    max_steps_per_epoch: int | None = None
    seed: int = 0
    record_every: int | None = None
    track: bool = False

    def __post_init__(self):
        from labutils.util import check_int

        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"A recipe needs a readable name, got {self.name!r}.")
        factory_path(self.model)  # fails early for a lambda or a function defined in a notebook
        check_int("epochs", self.epochs)
        check_int("batch_size", self.batch_size)
        check_int("seed", self.seed, minimum=0)
        for knob in ("patience", "max_steps_per_epoch", "record_every", "train_subset", "train_per_class"):
            check_int(knob, getattr(self, knob), allow_none=True)
        if not (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} is not possible: use a positive number.")
        if self.augment_on not in ("loader", "device"):
            raise ValueError(f"augment_on={self.augment_on!r} is not possible: use 'loader' or 'device'.")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (``dataclasses.replace``)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"Recipe has no field {unknown[0]!r}; fields are {', '.join(recipe_fields())}.")
        return dataclasses.replace(self, **changes)

    def as_config(self) -> dict[str, Any]:
        """The recipe as plain JSON-able values (the model factory as its import path)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = factory_path(value) if f.name == "model" else _plain(value)
        return out

    def data_settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _DATA_FIELDS}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Recipe:
        """The recipe :meth:`as_config` wrote (e.g. the ``"recipe"`` of a run's recipe.json, or a hand-written
        JSON file): the model factory is found again from its import path (``"labutils.models.MLP"``); a name
        without a dot stays a :func:`labutils.models.build_model` name."""
        unknown = sorted(set(config) - set(recipe_fields()))
        if unknown:
            raise ValueError(f"A recipe has no field {unknown[0]!r}; fields are {', '.join(recipe_fields())}.")
        model = config.get("model")
        if isinstance(model, str) and "." in model:
            config = {**config, "model": import_factory(model)}
        return cls(**config)


def recipe_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(Recipe)]


def factory_path(factory: Callable[..., Any] | str) -> str:
    """``"module.qualname"`` of a model factory (or the model name itself); one clear error for a lambda or a
    function defined inside another function or a notebook, which cannot be keyed or found again."""
    if isinstance(factory, str):
        return factory
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)
    if not callable(factory) or not module or not qualname:
        raise ValueError(f"model={factory!r} is neither a model name nor a class/function that builds a model.")
    if "<" in qualname or module == "__main__":
        raise ValueError(
            f"model={qualname} is defined in a notebook or inside a function, so its runs cannot be cached: "
            "use a class or function from labutils (or another importable module)."
        )
    return f"{module}.{qualname}"


def import_factory(path: str) -> Callable[..., Any]:
    """The class or function at ``"package.module.Name"`` (the inverse of :func:`factory_path`)."""
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise ValueError(
            f"model={path!r} names no importable class or function: use e.g. labutils.models.MLP."
        ) from None


def _plain(value: Any) -> Any:
    """JSON-able form of a recipe value; paths become their text (:func:`recipe_key` keys their content)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if callable(value):
        return factory_path(value)
    raise ValueError(f"Recipe value {value!r} ({type(value).__name__}) cannot be keyed: use numbers, strings, lists.")


def _files_by_content(value: Any) -> Any:
    """``value`` with every file path in it replaced by the SHA-256 of the file's content: an edited file keys
    anew, and two copies of one file (another runs folder, another machine) key alike."""
    if isinstance(value, Mapping):
        return {k: _files_by_content(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_files_by_content(v) for v in value]
    if isinstance(value, Path):
        if not value.is_file():
            raise FileNotFoundError(f"The recipe refers to {value}, which does not exist.")
        return "sha256:" + hashlib.sha256(value.read_bytes()).hexdigest()
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-")[:60] or "run"


# The code that builds and trains every recipe's model; the module of the recipe's own factory is added to it.
TRAINING_SOURCES = (
    "labutils.models",
    "labutils.train",
    "labutils.optimizers",
    "labutils.data",
    "labutils.batch_augment",
    "labutils.distributed",
)


def source_digests(recipe: Recipe) -> dict[str, str]:
    """SHA-256 of the source file of each module that builds or trains ``recipe``'s model: its factory's module
    and :data:`TRAINING_SOURCES`. Editing any of them (say ``models.py``) changes every key it affects, so the
    cache can never hand back a result of the code as it was."""
    modules = set(TRAINING_SOURCES) | {getattr(recipe.model, "__module__", None) or "labutils.models"}
    digests = {}
    for module in sorted(modules):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            digests[module] = hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()
    return digests


def recipe_key(recipe: Recipe, dataset: Mapping[str, Any]) -> str:
    """``<readable name>-<10 hex digits>``: the hash covers every recipe field but ``track``, the contents of
    files it names (not where they lie), the dataset's provenance, the source of the code that builds and trains
    the model (:func:`source_digests`), :data:`HARNESS_VERSION` and, under torchrun, the number of processes (they
    shuffle and deal out the batches differently from one process)."""
    from labutils import distributed

    config = recipe.as_config()
    config["model_kwargs"] = _plain(_files_by_content(dict(recipe.model_kwargs)))
    config.pop("track")
    if config["augment_on"] == "loader":  # the default: keys of runs cached before the field existed stay valid
        config.pop("augment_on")
    payload = {
        "recipe": config,
        "source": source_digests(recipe),
        "dataset": {k: dataset.get(k) for k in ("name", "source", "synthetic", "sizes", "classes", "num_classes")},
        "harness": HARNESS_VERSION,
    }
    if distributed.launched():
        payload["processes"] = distributed.world_size()
    digest = hashlib.sha256(json.dumps(_plain(payload), sort_keys=True).encode()).hexdigest()
    return f"{_slug(recipe.name)}-{digest[:10]}"


# ---------------------------------------------------------------------------------------------------
# Data and models
# ---------------------------------------------------------------------------------------------------
_LOADERS: dict[tuple, Any] = {}


def loaders_for(recipe: Recipe, profile: str):
    """The DataLoaders of a recipe's data settings (built once per process and settings)."""
    from labutils import data

    settings = recipe.data_settings()
    key = (profile, recipe.seed, json.dumps(_plain(settings), sort_keys=True), str(data.data_dir()))
    if key not in _LOADERS:
        optional = {k: settings[k] for k in ("classes", "train_per_class") if settings[k] is not None}
        _LOADERS[key] = data.make_loaders(
            recipe.dataset,
            profile=profile,
            batch_size=recipe.batch_size,
            augment=recipe.augment,
            augment_on=recipe.augment_on,
            val_size=recipe.val_size,
            seed=recipe.seed,
            train_subset=recipe.train_subset,
            test_subset=recipe.test_subset,
            **optional,
        )
    return _LOADERS[key]


def build(recipe: Recipe):
    """A freshly initialised model of the recipe, seeded with ``recipe.seed`` (so equal recipes start equal)."""
    from labutils import seed_everything
    from labutils.models import build_model

    seed_everything(recipe.seed)
    kwargs = dict(recipe.model_kwargs)
    if isinstance(recipe.model, str):
        return build_model(recipe.model, **kwargs)
    try:
        return recipe.model(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{factory_path(recipe.model)} cannot be built with {kwargs}: {exc}") from None


def optimizer_for(recipe: Recipe, model):
    """The recipe's optimizer, built by :func:`labutils.optimizers.build_optimizer`; with ``lr_groups``, one
    parameter group per prefix (lr = recipe.lr × multiplier) and one for the parameters matching no prefix."""
    from labutils.optimizers import build_optimizer

    params = model
    if recipe.lr_groups:
        groups: dict[str, list] = {prefix: [] for prefix in recipe.lr_groups}
        rest = []
        for name, p in model.named_parameters():
            prefix = next((pre for pre in recipe.lr_groups if name.startswith(pre)), None)
            if p.requires_grad:
                (groups[prefix] if prefix is not None else rest).append(p)
        empty = [pre for pre, ps in groups.items() if not ps]
        if empty:
            raise ValueError(f"lr_groups prefix {empty[0]!r} matches no trainable parameter of {type(model).__name__}.")
        params = [{"params": ps, "lr": recipe.lr * recipe.lr_groups[pre]} for pre, ps in groups.items()]
        params += [{"params": rest}] if rest else []
    return build_optimizer(
        params,
        recipe.optimizer,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
    )


# ---------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------
class SavedGradients:
    """The gradient record of a finished run, read back from disk: ``.history`` as
    :attr:`labutils.gradflow.GradientRecorder.history`, so the same plots draw it."""

    def __init__(self, history: Mapping[str, Any]):
        self.history = dict(history)

    def __len__(self) -> int:
        return len(self.history["steps"])

    def at(self, step: int | None = None, kind: str = "weight") -> dict[str, float]:
        """``{layer: value}`` at one recorded step (default the last)."""
        from labutils.gradflow import history_at

        return history_at(self.history, step, kind)


@dataclass
class RunResult:
    """What :func:`run` returns: the trained ``model`` (best weights when early stopping), its ``history``,
    the ``test`` :class:`~labutils.train.Evaluation`, the gradient ``recorder`` (or None), training
    ``seconds`` (summed over resumed parts), whether it was ``loaded`` from the cache, and its ``key``/``dir``."""

    recipe: Recipe
    key: str
    dir: Path
    model: Any
    history: Any
    test: Any
    recorder: Any
    seconds: float
    loaded: bool
    dataset: dict[str, Any]
    diverged: str | None = None

    @property
    def name(self) -> str:
        return self.recipe.name

    def row(self, **extra: Any) -> dict[str, Any]:
        """One table row: name, test top-1/top-5, best validation accuracy and its epoch, epochs run,
        parameters, seconds, key; ``extra`` columns first."""
        from labutils.models import count_parameters

        h = self.history
        return {
            **extra,
            "run": self.name,
            "test_acc": self.test.top1,
            "test_top5": self.test.top5,
            "best_val_acc": h.best_val_acc,
            "best_epoch": h.best_epoch,
            "epochs_run": len(h),
            "train_acc": h[-1]["train_acc"] if len(h) else None,
            "params": count_parameters(self.model),
            "seconds": round(self.seconds, 1),
            "diverged": self.diverged is not None,
            "key": self.key,
        }


def results_table(results: Iterable[RunResult], columns: Sequence[str] | None = None, **extra_columns):
    """A pandas DataFrame with one :meth:`RunResult.row` per run (``columns`` selects and orders them).

    ``extra_columns`` maps a column name to a function of the result, e.g. ``depth=lambda r:
    r.recipe.model_kwargs["depth"]``.
    """
    import pandas as pd

    rows = [r.row(**{name: fn(r) for name, fn in extra_columns.items()}) for r in results]
    frame = pd.DataFrame(rows)
    return frame[list(columns)] if columns is not None else frame


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------
def run_dir(lab: str) -> Path:
    from labutils.results import runs_dir

    return runs_dir() / lab / "checkpoints"


def _reset_data_order(loader, seed: int) -> None:
    from labutils.checkpoints import loader_generators

    for gen in loader_generators(loader):
        gen.manual_seed(seed)


def run(
    recipe: Recipe,
    *,
    lab: str,
    profile: str | None = None,
    device=None,
    progress: bool | TrainingBars = True,
    retrain: bool = False,
) -> RunResult:
    """Train and test one recipe, or reload it from ``runs/<lab>/checkpoints/<key>/``; see the module docstring.

    ``profile`` (default ``$LABS_PROFILE`` or full) decides only what happens when a dataset is missing:
    the quick profile uses a synthetic stand-in (and the key says so), the full profile stops with one
    sentence. ``retrain=True`` discards a finished run of the same key and trains again.
    A run whose loss becomes non-finite or diverges is a result too: it is kept (best weights) with
    ``diverged`` set to the error's sentence. An interrupt returns the partial run, not cached as finished;
    calling ``run`` again resumes it. ``progress``: show training's bars, or reuse these
    :class:`~labutils.train.TrainingBars`. Under torchrun (:mod:`labutils.distributed`) every process calls
    ``run`` and trains its shard; the main process alone writes the run's files and logs to wandb.
    """
    import torch

    from labutils import default_profile, distributed, get_device
    from labutils.gradflow import GradientRecorder
    from labutils.train import History, NonFiniteLossError, evaluate, fit

    if not isinstance(recipe, Recipe):
        raise TypeError(f"run() takes a Recipe, got {type(recipe).__name__}.")
    profile = profile or default_profile()
    loaders = loaders_for(recipe, profile)
    dataset = loaders.info.as_dict()
    key = recipe_key(recipe, dataset)
    folder = run_dir(lab) / key
    device = distributed.init(torch.device(device) if device is not None else get_device())  # joins torchrun's group
    if (folder / RESULT_FILE).exists() and not retrain:
        try:
            return _load(recipe, key, folder, dataset, device)
        except CachedRunUnusable as exc:  # never a raw error, never another run's numbers: train this one anew
            print(f"{recipe.name}: {exc}; training it again.")
            retrain = True
    distributed.barrier()  # under torchrun: every process has looked at the cache before the main one changes it
    if retrain and distributed.is_main():
        for name in ("last.pt", "best.pt", "timing.json", RESULT_FILE, MODEL_FILE, EVALUATION_FILE, GRADIENTS_FILE):
            (folder / name).unlink(missing_ok=True)
    if distributed.is_main():
        _write_json(folder / RECIPE_FILE, {"key": key, "recipe": recipe.as_config(), "dataset": dataset})
    distributed.barrier()

    model = build(recipe)
    optimizer = optimizer_for(recipe, model)
    _reset_data_order(loaders.train, recipe.seed)  # every run of a lab sees the same sequence of batches
    recorder = GradientRecorder(model, every=recipe.record_every) if recipe.record_every else None
    tracker = _tracker(recipe, lab, profile, key, dataset) if recipe.track and distributed.is_main() else None
    # seconds already spent on an interrupted run that fit will resume from last.pt
    previous = _read_json(folder / "timing.json").get("seconds", 0.0) if (folder / "last.pt").exists() else 0.0
    start, diverged = time.perf_counter(), None
    try:
        if recorder is not None:
            recorder.attach()
        history = fit(
            model,
            loaders.train,
            loaders.val,
            epochs=recipe.epochs,
            optimizer=optimizer,
            scheduler=recipe.scheduler,
            scheduler_kwargs=dict(recipe.scheduler_kwargs),
            patience=recipe.patience,
            checkpoint_dir=folder,
            resume=True,
            grad_recorder=recorder,
            tracker=tracker,
            device=device,
            progress=progress,
            max_steps_per_epoch=recipe.max_steps_per_epoch,
            loss_fn=getattr(model, "training_loss", None),  # a model may bring its own loss (labutils.distill)
            architecture={"model": factory_path(recipe.model), "model_kwargs": _plain(dict(recipe.model_kwargs))},
        )
    except NonFiniteLossError as exc:  # a diverged run is a result too: report it, keep its best weights
        history, diverged = exc.history if isinstance(exc.history, History) else History(), str(exc)
        print(f"{recipe.name}: {exc}")
    finally:
        if recorder is not None:
            recorder.detach()
        seconds = previous + time.perf_counter() - start
        if distributed.is_main():
            _write_json(folder / "timing.json", {"seconds": seconds})
        if tracker is not None and not tracker.enabled:
            tracker = None
    if history.interrupted:
        if tracker is not None:
            tracker.finish()
        print(f"{recipe.name}: interrupted after {len(history)} epoch(s); run it again to resume from {folder}.")
        return RunResult(recipe, key, folder, model, history, None, recorder, seconds, False, dataset, diverged)
    test = evaluate(model, loaders.test, device=device)
    if tracker is not None:
        tracker.summary(test_acc=test.top1, test_top5=test.top5, seconds=seconds)
        tracker.finish()
    if distributed.is_main():
        _save(folder, model, history, test, recorder, seconds, diverged, key, recipe, dataset)
    distributed.barrier()  # the finished run is on disk before any process looks for it again
    return RunResult(recipe, key, folder, model, history, test, recorder, seconds, False, dataset, diverged)


def _tracker(recipe: Recipe, lab: str, profile: str, key: str, dataset: Mapping[str, Any]):
    from labutils.tracking import Tracker

    config = {**recipe.as_config(), "key": key, "lab": lab, "profile": profile, "dataset": dict(dataset)}
    return Tracker(name=f"{lab}/{recipe.name}", group=f"{lab}-{profile}", config=config, tags=[lab, profile])


def _write_json(path: Path, obj: Any) -> None:
    from labutils.results import to_jsonable
    from labutils.util import atomic_write_json

    atomic_write_json(path, to_jsonable(obj))


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or {} when the file is missing, unreadable or holds something else."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _save(folder, model, history, test, recorder, seconds, diverged, key, recipe, dataset) -> None:
    from labutils.checkpoints import atomic_save, cpu_state
    from labutils.util import atomic_write

    atomic_save(cpu_state(model), folder / MODEL_FILE)
    atomic_write(
        folder / EVALUATION_FILE,
        lambda fh: np.savez(fh, confusion=test.confusion, predictions=test.predictions, targets=test.targets),
    )
    if recorder is not None and len(recorder):
        h = recorder.history
        arrays = {k: np.asarray(v) for k, v in h.items()}
        atomic_write(folder / GRADIENTS_FILE, lambda fh: np.savez(fh, **arrays))
    # written last: its presence means the run is finished and everything above is in place
    _write_json(
        folder / RESULT_FILE,
        {
            "key": key,
            "recipe": recipe.as_config(),
            "dataset": dict(dataset),
            "history": history.as_dict(),
            "test": test.as_dict(),
            "seconds": seconds,
            "diverged": diverged,
        },
    )


class CachedRunUnusable(Exception):
    """A finished run's folder that cannot be shown: a damaged file, or another recipe's run (a copied folder)."""


def _load(recipe: Recipe, key: str, folder: Path, dataset, device) -> RunResult:
    """The finished run in ``folder``; raises :class:`CachedRunUnusable` saying why it cannot be used."""
    import torch

    from labutils.train import Evaluation, History, load_state_checked

    saved = _read_json(folder / RESULT_FILE)
    if not isinstance(saved.get("key"), str):
        raise CachedRunUnusable(f"the cached run in {folder} is damaged (its {RESULT_FILE} is unreadable)")
    if saved["key"] != key:  # a copied or renamed folder: its numbers belong to another recipe
        raise CachedRunUnusable(f"{folder} holds the run {saved['key']}, not {key}")
    model = build(recipe)
    try:
        test_scores, history = saved["test"], History.from_dict(saved["history"])
        seconds, diverged = float(saved["seconds"]), saved["diverged"]
        state = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
        load_state_checked(model, state, source=str(folder / MODEL_FILE))
        with np.load(folder / EVALUATION_FILE) as ev:
            test = Evaluation(
                loss=test_scores["loss"],
                top1=test_scores["top1"],
                top5=test_scores["top5"],
                confusion=ev["confusion"],
                predictions=ev["predictions"],
                targets=ev["targets"],
            )
        recorder = None
        if (folder / GRADIENTS_FILE).exists():
            with np.load(folder / GRADIENTS_FILE) as g:
                recorder = SavedGradients({k: (g[k].tolist() if k in ("layers", "relu_layers") else g[k]) for k in g})
    except Exception as exc:  # a truncated, empty or garbled file, whichever: the run is not usable
        raise CachedRunUnusable(f"the cached run in {folder} is damaged ({type(exc).__name__})") from None
    model.to(device).eval()
    print(
        f"{recipe.name}: loaded the finished run {key} from the cache "
        f"(test accuracy {test.top1:.4f}; it trained in {seconds:.1f} s)."
    )
    return RunResult(recipe, key, folder, model, history, test, recorder, seconds, True, dataset, diverged)


def run_all(
    recipes: Mapping[Any, Recipe] | Iterable[Recipe],
    *,
    lab: str,
    profile: str | None = None,
    device=None,
    desc: str = "runs",
    progress: bool = True,
):
    """:func:`run` every recipe in turn under one progress bar.

    ``recipes`` is a dict (returns a dict of :class:`RunResult` with the same keys, e.g. ``(depth, variant)``)
    or a list (returns a list in the same order). Recipe names must be unique within the call. An interrupt
    (Ctrl-C, Jupyter's stop button) stops the whole call with KeyboardInterrupt once the interrupted run is
    saved: running it again reloads the finished runs and resumes the interrupted one.
    """
    from tqdm.auto import tqdm

    from labutils.distributed import is_main
    from labutils.train import TrainingBars

    progress = progress and is_main()  # under torchrun one process draws the bars
    keyed = isinstance(recipes, Mapping)
    items = list(recipes.items()) if keyed else list(enumerate(recipes))
    names = [r.name for _, r in items]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"Two recipes are named {dup!r}: give every run of a lab its own name.")
    out = {}
    bar = tqdm(items, desc=desc, unit="run", disable=not progress)
    with TrainingBars(progress) as bars:  # one epochs bar and one batches bar for every run
        for k, recipe in bar:
            bar.set_postfix_str(recipe.name)
            out[k] = run(recipe, lab=lab, profile=profile, device=device, progress=bars)
            if out[k].history.interrupted:  # stop here: the next recipe must not start after a Ctrl-C
                bar.close()
                raise KeyboardInterrupt(
                    f"interrupted during {recipe.name}; the finished runs are cached: run the cell again to resume"
                )
    return out if keyed else list(out.values())


__all__ = [
    "Recipe",
    "RunResult",
    "SavedGradients",
    "run",
    "run_all",
    "results_table",
    "recipe_key",
    "build",
    "optimizer_for",
    "loaders_for",
    "factory_path",
    "import_factory",
    "HARNESS_VERSION",
]
