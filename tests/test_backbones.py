"""labutils.backbones.backbone_meta: the one metadata schema of saved networks, on a real (tiny) run on the bundled
digits. Its keys are exactly the documented ones, each value is the run's, and lab 08's reader (saved_models) finds
and rebuilds the network from that metadata alone."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from labutils import corruptions, experiment
from labutils.backbones import BACKBONE_META_KEYS, backbone_meta
from labutils.experiment import Recipe
from labutils.models import SimpleCNN
from labutils.train import load_backbone, save_backbone

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABS_RUNS", str(tmp_path_factory.mktemp("runs")))
        recipe = Recipe(
            "tiny-cnn",
            model=SimpleCNN,
            model_kwargs=dict(num_classes=10, in_channels=1, width=4),
            dataset="digits",
            train_subset=200,
            val_size=50,
            test_subset=60,
            batch_size=32,
            lr=5e-3,
        )
        result = experiment.run(recipe, lab="backbones_test", profile="quick", progress=False)
        info = experiment.loaders_for(recipe, "quick").info
        yield result, info


def test_backbone_meta_has_exactly_the_documented_keys_with_the_runs_values(tiny_run):
    result, info = tiny_run
    meta = backbone_meta(result, info, profile="quick", architecture="SimpleCNN-4")
    assert tuple(meta) == BACKBONE_META_KEYS
    for key in BACKBONE_META_KEYS:  # every key is documented in the docstring's table
        assert f"``{key}``" in backbone_meta.__doc__, key
    assert meta["architecture"] == "SimpleCNN-4" and meta["model_class"] == "SimpleCNN"
    assert meta["model_kwargs"] == {"num_classes": 10, "in_channels": 1, "width": 4}
    assert meta["num_parameters"] == sum(p.numel() for p in result.model.parameters())
    assert meta["dataset"] == result.dataset and meta["dataset"]["name"] == "digits"
    assert meta["synthetic"] is False and meta["num_classes"] == 10 and meta["image_shape"] == [1, 28, 28]
    assert meta["classes"] == list(info.classes) and meta["mean"] == list(info.mean) and meta["std"] == list(info.std)
    assert (meta["run"], meta["key"], meta["profile"]) == ("tiny-cnn", result.key, "quick")
    assert meta["recipe"] == result.recipe.as_config()
    assert meta["val_acc"] == result.history[-1]["val_acc"]
    assert (meta["test_acc"], meta["test_top5"]) == (result.test.top1, result.test.top5)
    assert 0.0 <= meta["test_acc"] <= meta["test_top5"] <= 1.0
    assert backbone_meta(result, info, profile="full")["architecture"] == "SimpleCNN"  # the class name by default


def test_saved_with_backbone_meta_lab_08_finds_and_rebuilds_the_network(tiny_run, tmp_path):
    result, info = tiny_run
    path = save_backbone(result.model, tmp_path / "tiny.pt", backbone_meta(result, info, profile="quick"))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert set(sidecar) == set(BACKBONE_META_KEYS)  # save_backbone adds nothing the schema lacks
    found, skipped = corruptions.saved_models([path], info)
    assert list(found) == ["tiny"] and skipped == {}
    other = dataclasses.replace(info, name="mnist")
    assert "trained on digits (10 classes), not mnist" in corruptions.saved_models([path], other)[1]["tiny"]
    x = torch.rand(3, 1, 28, 28)
    result.model.eval(), found["tiny"].eval()
    torch.testing.assert_close(found["tiny"](x), result.model(x), rtol=0, atol=0)
    rebuilt, meta = load_backbone(path, SimpleCNN)
    assert meta["key"] == result.key and sum(p.numel() for p in rebuilt.parameters()) == sidecar["num_parameters"]


def test_backbone_meta_refuses_what_would_break_its_promises(tiny_run):
    result, info = tiny_run
    with pytest.raises(ValueError, match=r"info describes mnist \(10 classes\) but run 'tiny-cnn' was trained on"):
        backbone_meta(result, dataclasses.replace(info, name="mnist"), profile="quick")
    with pytest.raises(ValueError, match="'tiny-cnn' was interrupted before its test"):
        backbone_meta(dataclasses.replace(result, test=None), info, profile="quick")
    by_name = dataclasses.replace(result, recipe=result.recipe.replace(model="simple_cnn"))
    with pytest.raises(ValueError, match="not with its class SimpleCNN"):
        backbone_meta(by_name, info, profile="quick")
    with pytest.raises(ValueError, match="Unknown profile 'fast'"):
        backbone_meta(result, info, profile="fast")
