"""The experiment harness: keys, the cache (reload, resume, retrain on any change) and result records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from labutils import experiment
from labutils.experiment import Recipe, recipe_key, results_table, run
from labutils.models import MLP

DATASET = {"name": "mnist", "source": "x", "synthetic": False, "sizes": {"train": 10}, "num_classes": 10}


class InterruptingMLP(MLP):
    """An MLP that raises KeyboardInterrupt (as Jupyter's stop button does) at its ``interrupt_at``-th
    training forward pass, to test resuming."""

    interrupt_at: int | None = None
    calls = 0

    def forward(self, x):
        if self.training and InterruptingMLP.interrupt_at is not None:
            InterruptingMLP.calls += 1
            if InterruptingMLP.calls == InterruptingMLP.interrupt_at:
                raise KeyboardInterrupt
        return super().forward(x)


def tiny(name="tiny", **changes) -> Recipe:
    base = Recipe(
        name,
        model=MLP,
        model_kwargs=dict(in_features=784, num_classes=10, width=32, depth=2),
        dataset="mnist",
        train_subset=1024,
        val_size=256,
        test_subset=256,
        batch_size=32,
        lr=3e-3,
        epochs=2,
        seed=1,
    )
    return base.replace(**changes)


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def test_key_is_readable_and_changes_with_every_knob_and_the_data_provenance():
    base = tiny()
    key = recipe_key(base, DATASET)
    assert key.startswith("tiny-") and len(key) == len("tiny-") + 10
    assert recipe_key(tiny(), DATASET) == key  # deterministic
    for change in (
        {"lr": 0.02},
        {"train_subset": 256},
        {"epochs": 3},
        {"seed": 2},
        {"augment": "standard"},
        {"scheduler": "cosine"},
        {"model_kwargs": {**base.model_kwargs, "residual": True}},
        {"record_every": 5},
        {"augment_on": "device"},
    ):
        assert recipe_key(base.replace(**change), DATASET) != key, change
    assert recipe_key(base, {**DATASET, "name": "mnist-synthetic", "synthetic": True}) != key
    # tracking decides whether numbers are logged, not what they are
    assert recipe_key(base.replace(track=True), DATASET) == key


def test_a_file_named_in_model_kwargs_is_keyed_by_its_content(tmp_path):
    path = tmp_path / "backbone.pt"
    path.write_bytes(b"first")
    recipe = tiny(model_kwargs={"in_features": 784, "num_classes": 10, "width": 32, "depth": 2, "ckpt": path})
    first = recipe_key(recipe, DATASET)
    copy = tmp_path / "elsewhere" / "backbone.pt"  # the same weights in another runs folder: the same run
    copy.parent.mkdir()
    copy.write_bytes(b"first")
    assert recipe_key(recipe.replace(model_kwargs={**recipe.model_kwargs, "ckpt": copy}), DATASET) == first
    path.write_bytes(b"second")
    assert recipe_key(recipe, DATASET) != first


def test_bad_recipes_are_one_clear_error():
    with pytest.raises(ValueError, match="defined in a notebook or inside a function"):
        Recipe("x", model=lambda: torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="epochs=0"):
        tiny(epochs=0)
    with pytest.raises(ValueError, match="lr=-1"):
        tiny(lr=-1)
    with pytest.raises(ValueError, match="no field 'learning_rate'"):
        tiny().replace(learning_rate=0.1)
    with pytest.raises(ValueError, match="augment_on='gpu' is not possible"):
        tiny(augment_on="gpu")


def test_unchanged_rerun_reloads_without_training_and_a_changed_knob_trains_anew(runs, monkeypatch):
    first = run(tiny(record_every=4), lab="lab", profile="quick", progress=False)
    assert not first.loaded and first.test.top1 > 0.5  # 2 epochs on 1,024 real digits: far above chance
    assert (first.dir / experiment.RESULT_FILE).exists() and first.dir.parent == runs / "lab" / "checkpoints"

    import labutils.train

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(labutils.train, "fit", no_training)
    again = run(tiny(record_every=4), lab="lab", profile="quick", progress=False)
    assert again.loaded and again.key == first.key
    assert again.test.top1 == first.test.top1 and np.array_equal(again.test.confusion, first.test.confusion)
    assert again.history.as_dict()["epochs"] == first.history.as_dict()["epochs"]
    for name, value in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name].cpu(), value.cpu()), name
    # the gradient record comes back too, so plots redraw without retraining
    assert np.allclose(again.recorder.history["weight"], first.recorder.history["weight"], equal_nan=True)
    assert again.recorder.at() == pytest.approx(first.recorder.at(), nan_ok=True)

    monkeypatch.undo()
    changed = run(tiny(record_every=4, lr=0.02), lab="lab", profile="quick", progress=False)
    assert not changed.loaded and changed.key != first.key


def test_equal_recipes_give_identical_runs_whatever_ran_before(runs):
    a = run(tiny(), lab="a", profile="quick", progress=False)
    run(tiny("other", seed=5), lab="a", profile="quick", progress=False)  # moves every random state
    b = run(tiny(), lab="b", profile="quick", progress=False)  # another lab: no cache shared
    assert not b.loaded
    assert a.history["train_loss"] == b.history["train_loss"] and a.test.top1 == b.test.top1


def test_an_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(runs, monkeypatch):
    recipe = tiny(model=InterruptingMLP, epochs=3)
    monkeypatch.setattr(InterruptingMLP, "interrupt_at", 32 * 2 + 3)  # inside the third epoch (32 batches each)
    monkeypatch.setattr(InterruptingMLP, "calls", 0)
    partial = run(recipe, lab="lab", profile="quick", progress=False)
    assert partial.history.interrupted and len(partial.history) == 2 and partial.test is None
    assert not (partial.dir / experiment.RESULT_FILE).exists()

    monkeypatch.setattr(InterruptingMLP, "interrupt_at", None)
    resumed = run(recipe, lab="lab", profile="quick", progress=False)
    assert resumed.key == partial.key and resumed.history.resumed_from == 2 and len(resumed.history) == 3

    whole = run(recipe, lab="other", profile="quick", progress=False)
    assert whole.history["train_loss"] == pytest.approx(resumed.history["train_loss"], rel=1e-6)
    assert whole.test.top1 == resumed.test.top1


def test_retrain_discards_the_cached_run(runs):
    first = run(tiny(), lab="lab", profile="quick", progress=False)
    second = run(tiny(), lab="lab", profile="quick", progress=False, retrain=True)
    assert not second.loaded and second.key == first.key
    assert second.test.top1 == first.test.top1  # same recipe, same seed: the same numbers


def test_results_table_has_one_row_per_run_with_extra_columns(runs):
    a = run(tiny(), lab="lab", profile="quick", progress=False)
    b = run(tiny("wide", model_kwargs={**tiny().model_kwargs, "width": 64}), lab="lab", profile="quick", progress=False)
    table = results_table([a, b], width=lambda r: r.recipe.model_kwargs["width"])
    assert list(table["run"]) == ["tiny", "wide"] and list(table["width"]) == [32, 64]
    assert table.loc[0, "test_acc"] == a.test.top1 and table.loc[1, "params"] > table.loc[0, "params"]
    assert set(table.columns) >= {"test_top5", "best_val_acc", "best_epoch", "epochs_run", "seconds", "key"}


def test_lr_groups_give_one_parameter_group_per_prefix():
    recipe = tiny(optimizer="sgd", lr=0.1, lr_groups={"stem": 0.1})
    model = experiment.build(recipe)
    opt = experiment.optimizer_for(recipe, model)
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([0.01, 0.1])
    n_grouped = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_grouped == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="'nothing' matches no trainable parameter"):
        experiment.optimizer_for(tiny(lr_groups={"nothing": 0.1}), model)


def test_equal_builds_start_from_equal_weights():
    a, b = experiment.build(tiny()), experiment.build(tiny())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_recipe_is_saved_beside_the_run(runs):
    import json

    result = run(tiny(), lab="lab", profile="quick", progress=False)
    saved = json.loads(Path(result.dir / experiment.RECIPE_FILE).read_text())
    assert saved["key"] == result.key and saved["recipe"]["model"] == "labutils.models.MLP"
    assert saved["recipe"]["lr"] == 3e-3 and saved["dataset"]["name"] == "mnist"


def test_run_all_keeps_the_keys_or_the_order_and_refuses_duplicate_names(runs):
    recipes = {("a", 1): tiny("a", epochs=1), ("b", 2): tiny("b", epochs=1, lr=1e-3)}
    out = experiment.run_all(recipes, lab="lab", profile="quick", progress=False)
    assert list(out) == [("a", 1), ("b", 2)] and out["b", 2].recipe.lr == 1e-3
    listed = experiment.run_all(list(recipes.values()), lab="lab", profile="quick", progress=False)
    assert [r.name for r in listed] == ["a", "b"] and all(r.loaded for r in listed)
    with pytest.raises(ValueError, match="Two recipes are named 'a'"):
        experiment.run_all([tiny("a"), tiny("a", lr=0.1)], lab="lab", profile="quick")


def test_run_all_shows_three_bars_for_any_number_of_runs(runs, tqdm_bars):
    """The runs bar, and one epochs bar and one batches bar restarted for every run (not two new ones each)."""
    bars = tqdm_bars
    recipes = [tiny(f"r{i}", epochs=2, seed=i) for i in range(3)]
    experiment.run_all(recipes, lab="lab", profile="quick", desc="sweep")
    assert [b.desc for b in bars.made] == ["sweep", "epochs", "epoch 2"] and all(b.disable for b in bars.made)
    runs_bar, epochs_bar, _ = bars.made
    assert runs_bar.n == 3 and len(epochs_bar.resets) == 2 and (epochs_bar.n, epochs_bar.total) == (2, 2)
    experiment.run_all(recipes, lab="lab", profile="quick", progress=False)  # all cached, and no bar shown
    assert not any(b.shown for b in bars.made[3:])


def test_editing_the_code_that_builds_the_model_changes_the_key(tmp_path, monkeypatch):
    """A student who edits the model's module must never get the old result back."""
    import importlib
    import sys

    module = tmp_path / "my_models.py"
    module.write_text("from labutils.models import MLP\n\n\nclass MyMLP(MLP):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    my_models = importlib.import_module("my_models")
    recipe = tiny(model=my_models.MyMLP)
    before = recipe_key(recipe, DATASET)
    assert set(experiment.source_digests(recipe)) == {*experiment.TRAINING_SOURCES, "my_models"}
    module.write_text(module.read_text() + "\n# a changed line\n")
    assert recipe_key(recipe, DATASET) != before
    sys.modules.pop("my_models", None)
    # and the course's own training code is covered for every recipe
    digests = experiment.source_digests(tiny())
    assert set(digests) == set(experiment.TRAINING_SOURCES)
    monkeypatch.setattr(experiment, "TRAINING_SOURCES", ("labutils.models",))
    assert set(experiment.source_digests(tiny())) == {"labutils.models"}


def test_a_recipe_augmenting_on_the_device_trains_from_a_device_loader(runs):
    from labutils.batch_augment import DeviceLoader

    recipe = tiny("on-device", augment="digits", augment_on="device")
    per_image = recipe.replace(augment_on="loader")
    assert isinstance(experiment.loaders_for(recipe, "quick").train, DeviceLoader)
    assert not isinstance(experiment.loaders_for(per_image, "quick").train, DeviceLoader)
    batched, reference = (run(r, lab="lab", profile="quick", progress=False) for r in (recipe, per_image))
    # 2 epochs on 1,024 augmented real digits, 256 test digits: both far above chance (0.1) and close to each
    # other (measured 0.605 and 0.633; the same augmentation, drawn by another generator)
    assert batched.test.top1 > 0.5 and abs(batched.test.top1 - reference.test.top1) < 0.1
