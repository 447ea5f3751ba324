"""labutils.transfer on tiny networks: stage views, freezing per strategy, frozen batch norm through a training
step, per-stage learning rates in the optimizer, features, SVM/kNN baselines, ImageNet weights from a temporary
TORCH_HOME (no network), and the data features the transfer lab needs (class subsets, label budgets, digits)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from labutils import checks, data, datasets, features
from labutils import transfer as X
from labutils.models import ResNet, ResNet18
from labutils.train import CheckpointMismatchError, atomic_save, save_backbone

torch.set_num_threads(1)
KWARGS = {"depth": 8, "num_classes": 4, "in_channels": 1, "width": 4}  # a ResNet-8: 4-8-16 channels
COURSE_STAGES = ["stem", "stage1", "stage2", "stage3", "head"]
TV_STAGES = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
EXPECTED = {  # strategy -> trainable stages, for the course ResNet-8 and torchvision's ResNet-18
    "linear_probe": (["head"], ["head"]),
    "ft0": (["stage3", "head"], ["layer4", "head"]),
    "ft1": (["stage2", "stage3", "head"], ["layer3", "layer4", "head"]),
    "ft2": (["stage1", "stage2", "stage3", "head"], ["layer2", "layer3", "layer4", "head"]),
    "full": (COURSE_STAGES, TV_STAGES),
    "two_phase": (["head"], ["head"]),
}
PREFIX = {"head": "fc", "stem": "stem"}  # stage -> parameter-name prefix where they differ (course models)


@pytest.fixture
def backbone_file(tmp_path):
    torch.manual_seed(0)
    model = ResNet(**KWARGS)
    return save_backbone(model, tmp_path / "backbone_resnet.pt", {"model_kwargs": KWARGS, "synthetic": True})


def course_model(path, **kw):
    return X.transfer_model("course", checkpoint=path, num_classes=3, seed=0, **kw)


def bn_parameter_names(model: nn.Module) -> set[str]:
    return {
        f"{mn}.{pn}"
        for mn, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for pn, _ in m.named_parameters(recurse=False)
    }


def trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def names_under(model: nn.Module, prefixes) -> set[str]:
    return {n for n, _ in model.named_parameters() if any(n == p or n.startswith(p + ".") for p in prefixes)}


# -- stage view ---------------------------------------------------------------------------------------
def test_stage_views_cover_every_parameter_once_and_chain_to_the_models_output():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    for model, names in (
        (ResNet(**KWARGS), COURSE_STAGES),
        (ResNet18(4, 1, width=4), [*COURSE_STAGES[:4], "stage4", "head"]),
    ):
        model.eval()
        assert list(X.stages(model)) == names
        prefixes = X.stage_prefixes(model)
        owned = [names_under(model, p) for p in prefixes.values()]
        assert sum(map(len, owned)) == len(list(model.parameters())) == len(set().union(*owned))
        h = x
        for name, stage in X.stages(model).items():
            h = stage(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)) if name == "head" else stage(h)
        torch.testing.assert_close(h, model(x), rtol=0, atol=1e-6)
    tv = torchvision.models.resnet18(weights=None).eval()
    assert list(X.stages(tv)) == TV_STAGES and X.stage_prefixes(tv)["stem"] == ("conv1", "bn1")
    img = torch.randn(1, 3, 64, 64)
    h = img
    for name, stage in X.stages(tv).items():
        h = stage(torch.flatten(tv.avgpool(h), 1)) if name == "head" else stage(h)
    torch.testing.assert_close(h, tv(img), rtol=0, atol=1e-5)
    assert list(X.stages(torchvision.models.resnet50(weights=None))) == TV_STAGES
    with pytest.raises(ValueError, match="Linear has no stage view"):
        X.stages(nn.Linear(2, 2))


def test_replace_head_and_head_mismatch(backbone_file):
    model = ResNet(**KWARGS)
    X.replace_head(model, 7)
    assert model.fc.out_features == 7 and model.fc.in_features == 16 and model.num_classes == 7
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 7)
    with pytest.raises(X.HeadMismatchError, match=r"head gives 7 logits but the target data has 5 classes"):
        X.check_head(model, 5)
    # the source head is kept only when the classes match: 4 source classes, 3 target classes
    with pytest.raises(X.HeadMismatchError, match=r"gives 4 logits .* has 3 classes: replace the head"):
        course_model(backbone_file, keep_head=True)
    kept = X.transfer_model("course", checkpoint=backbone_file, num_classes=4, keep_head=True)
    saved = torch.load(backbone_file, weights_only=True)["model"]
    assert torch.equal(kept.fc.weight, saved["fc.weight"])


# -- strategies and freezing --------------------------------------------------------------------------------
@pytest.mark.parametrize("freeze_bn", [True, False])
@pytest.mark.parametrize("strategy", X.STRATEGIES)
def test_each_strategy_trains_exactly_its_stages(backbone_file, strategy, freeze_bn):
    model = course_model(backbone_file, strategy=strategy, freeze_bn=freeze_bn)
    stages = EXPECTED[strategy][0]
    expected = names_under(model, [PREFIX.get(s, s) for s in stages])
    if freeze_bn:
        expected -= bn_parameter_names(model)
    assert trainable_names(model) == expected
    assert X.trainable_stages(model, strategy) == stages
    if strategy in ("linear_probe", "two_phase"):
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 16 * 3 + 3  # the new head
    # batch norms: frozen (eval for good) outside the trainable stages, and inside them with freeze_bn
    model.train()
    for stage, module in X.stages(model).items():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                frozen = stage not in stages or freeze_bn
                assert X.is_frozen_bn(m) == frozen and m.training == (not frozen), (stage, strategy)


def test_strategies_on_torchvision_resnet18():
    model = torchvision.models.resnet18(weights=None)
    for strategy, (_, stages) in EXPECTED.items():
        X.freeze(model, X.trainable_stages(model, strategy), freeze_bn=True)
        prefixes = [p for s in stages for p in X.stage_prefixes(model)[s]]
        assert trainable_names(model) == names_under(model, prefixes) - bn_parameter_names(model), strategy
    assert X.trainable_stages(model, "two_phase", phase=2) == ["layer3", "layer4", "head"]  # the ResNet-50 recipe


def test_unknown_strategy_stage_or_phase_is_one_clear_error(backbone_file):
    with pytest.raises(
        ValueError, match=r"Unknown strategy 'finetune': choose one of linear_probe, ft0, ft1, ft2, full"
    ):
        course_model(backbone_file, strategy="finetune")
    with pytest.raises(ValueError, match=r"phase=2 is not possible for strategy 'ft0'"):
        course_model(backbone_file, strategy="ft0", phase=2)
    with pytest.raises(ValueError, match=r"Unknown stage 'layer4' for ResNet: its stages are stem, stage1"):
        X.freeze(ResNet(**KWARGS), ["layer4"])
    with pytest.raises(ValueError, match=r"Unknown backbone 'vgg'"):
        X.transfer_model("vgg", num_classes=3)
    with pytest.raises(ValueError, match="needs checkpoint="):
        X.transfer_model("course", num_classes=3)


def test_transfer_model_is_reproducible_and_leaves_the_global_random_state_alone(backbone_file):
    state = torch.get_rng_state()
    a, b = course_model(backbone_file, strategy="ft0"), course_model(backbone_file, strategy="ft0")
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.fc.weight, b.fc.weight)
    saved = torch.load(backbone_file, weights_only=True)["model"]
    assert torch.equal(a.stage3[0].conv1.weight, saved["stage3.0.conv1.weight"])  # pretrained weights kept
    # random weights from seed 1 (the backbone itself was drawn from seed 0)
    scratch = X.transfer_model(
        "course", checkpoint=backbone_file, num_classes=3, strategy="full", pretrained=False, seed=1
    )
    assert not torch.equal(scratch.stage3[0].conv1.weight, saved["stage3.0.conv1.weight"])
    # random batch norms have no statistics worth keeping: they train unless freeze_bn=True is asked for
    assert trainable_names(scratch) == {n for n, _ in scratch.named_parameters()}
    assert not any(X.is_frozen_bn(m) for m in scratch.modules())


# -- frozen batch norm through a training step -------------------------------------------------------------
def train_step(model: nn.Module, lr: float = 0.1) -> None:
    torch.manual_seed(1)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    x, y = torch.randn(16, 1, 8, 8) * 3 + 1, torch.randint(0, 3, (16,))  # statistics unlike the source's
    F.cross_entropy(model(x), y).backward()
    opt.step()


def test_frozen_batch_norm_keeps_its_statistics_and_the_trainable_one_changes(backbone_file):
    frozen = course_model(backbone_file, strategy="ft0", freeze_bn=True)
    free = course_model(backbone_file, strategy="ft0", freeze_bn=False)
    before = copy.deepcopy(frozen.state_dict())
    assert before.keys() == ResNet(**{**KWARGS, "num_classes": 3}).state_dict().keys()  # no renamed tensors
    train_step(frozen), train_step(free)
    bn3, bn1 = "stage3.0.bn1", "stage1.0.bn1"
    for key in ("running_mean", "running_var", "num_batches_tracked", "weight", "bias"):
        assert torch.equal(frozen.state_dict()[f"{bn3}.{key}"], before[f"{bn3}.{key}"]), key
        assert torch.equal(free.state_dict()[f"{bn1}.{key}"], before[f"{bn1}.{key}"]), key  # frozen stage
    assert not torch.equal(frozen.stage3[0].conv1.weight, before["stage3.0.conv1.weight"])  # the stage did train
    moved = (free.state_dict()[f"{bn3}.running_mean"] - before[f"{bn3}.running_mean"]).abs().max()
    assert moved > 1e-3 and int(free.state_dict()[f"{bn3}.num_batches_tracked"]) == 1
    assert not torch.equal(free.stage3[0].bn1.weight, before[f"{bn3}.weight"])
    # the freeze survives a copy and a state-dict round trip; freezing anew thaws first
    clone = copy.deepcopy(frozen).train()
    assert X.is_frozen_bn(clone.stage3[0].bn1) and not clone.stage3[0].bn1.training
    X.freeze(clone, COURSE_STAGES, freeze_bn=False).train()
    assert type(clone.stage3[0].bn1) is nn.BatchNorm2d and clone.stage3[0].bn1.training
    assert trainable_names(clone) == {n for n, _ in clone.named_parameters()}


# -- learning rates per stage ---------------------------------------------------------------------------------
def test_per_stage_learning_rates_land_in_the_optimizer(backbone_file):
    model = course_model(backbone_file, strategy="ft1", freeze_bn=False)
    opt = torch.optim.SGD(X.param_groups(model, 0.1, stage_lr={"stage2": 0.01, "stage3": 0.3}), momentum=0.9)
    lrs = {g["stage"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"stage2": 0.001, "stage3": 0.03, "head": 0.1}, rel=1e-12)
    by_stage = {g["stage"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    for stage, ids in by_stage.items():
        assert ids == {
            id(p) for n, p in model.named_parameters() if n in names_under(model, [PREFIX.get(stage, stage)])
        }
    decayed = X.param_groups(model, 1.0, decay=0.5)
    assert [(g["stage"], g["lr"]) for g in decayed] == [("stage2", 0.25), ("stage3", 0.5), ("head", 1.0)]
    # the same multipliers keyed by parameter-name prefix, for a recipe's lr_groups
    tv = torchvision.models.resnet18(weights=None)
    assert X.lr_groups(tv, decay=0.5) == {
        "conv1": 1 / 32,
        "bn1": 1 / 32,
        "layer1": 1 / 16,
        "layer2": 1 / 8,
        "layer3": 1 / 4,
        "layer4": 1 / 2,
        "fc": 1.0,
    }
    assert X.lr_groups(model, stage_lr={"stage3": 0.1})["stage3"] == 0.1
    with pytest.raises(ValueError, match="Unknown stage 'layer3' in stage_lr: the stages are stem, stage1"):
        X.param_groups(model, 0.1, stage_lr={"layer3": 0.1})
    with pytest.raises(ValueError, match="stage_lr or decay, not both"):
        X.param_groups(model, 0.1, stage_lr={"stage3": 0.1}, decay=0.5)
    with pytest.raises(ValueError, match=r"decay=1.5 is not possible"):
        X.param_groups(model, 0.1, decay=1.5)


def tiny_loaders(n: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 0).long()  # 3 learnable classes
    train = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=g)
    return train, DataLoader(TensorDataset(x, y), batch_size=16)


def test_two_phase_trains_the_head_then_the_last_two_stages_at_a_tenth_of_the_rate(backbone_file, tmp_path):
    model = course_model(backbone_file, strategy="two_phase")
    stem_before = model.stem[0].weight.detach().clone()
    stage3_before = model.stage3[0].conv1.weight.detach().clone()
    train, val = tiny_loaders()
    h1, h2 = X.fit_two_phase(
        model, train, val, lr=0.05, phase1_epochs=1, phase2_epochs=2, optimizer="sgd", device="cpu",
        progress=False, checkpoint_dir=tmp_path / "ckpt",
    )  # fmt: skip
    assert h1["lr"] == [0.05] and h2["lr"][0] == pytest.approx(0.005, rel=1e-12)
    assert torch.equal(model.stem[0].weight, stem_before)
    assert not torch.equal(model.stage3[0].conv1.weight, stage3_before)
    assert trainable_names(model) == names_under(model, ["stage2", "stage3", "fc"]) - bn_parameter_names(model)
    # phase 2 as a model of its own, started from phase 1's best checkpoint (what an experiment recipe builds)
    phase2 = course_model(backbone_file, strategy="two_phase", phase=2, init=tmp_path / "ckpt/phase1/best.pt")
    phase1_best = torch.load(tmp_path / "ckpt/phase1/best.pt", weights_only=True)["model"]
    assert torch.equal(phase2.fc.weight, phase1_best["fc.weight"])
    assert trainable_names(phase2) == trainable_names(model)
    with pytest.raises(CheckpointMismatchError):
        X.transfer_model("course", checkpoint=backbone_file, num_classes=5, init=tmp_path / "ckpt/phase1/best.pt")


# -- features and baselines -------------------------------------------------------------------------------------
def test_extract_features_gives_the_heads_input_for_every_sample(backbone_file):
    model = course_model(backbone_file, strategy="ft0").train()
    _, loader = tiny_loaders(n=37)
    feats, labels = features.extract_features(model, loader, device="cpu", progress=False)
    assert feats.shape == (37, 16) and feats.dtype == np.float32 and labels.shape == (37,) and labels.dtype == np.int64
    x, y = loader.dataset.tensors
    with torch.no_grad():
        expected = model.eval().features(x)
    np.testing.assert_allclose(feats, expected.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(labels, y.numpy())
    model.train()
    features.extract_features(model, loader, device="cpu", progress=False)
    assert model.training  # the caller's mode is restored


def blobs(n_per_class: int, num_classes: int, seed: int, noise_scale: float = 1000.0):
    """Separable Gaussian blobs in 2-D plus one large, useless noise dimension (scaling must tame it)."""
    rng = np.random.default_rng(seed)
    centres = np.stack([np.cos(np.arange(num_classes)), np.sin(np.arange(num_classes))], 1) * 6
    y = np.repeat(np.arange(num_classes), n_per_class)
    x = centres[y] + rng.normal(size=(len(y), 2))
    return np.concatenate([x, rng.normal(scale=noise_scale, size=(len(y), 1))], 1).astype(np.float32), y


def test_svm_and_knn_beat_chance_on_separable_blobs():
    xtr, ytr = blobs(20, 6, seed=0)
    xte, yte = blobs(20, 6, seed=1)
    for result in (features.svm_baseline(xtr, ytr, xte, yte, C=1.0), features.knn_baseline(xtr, ytr, xte, yte, k=5)):
        assert result.top1 >= 0.8, result.as_dict()  # chance is 1/6
        assert result.top5 >= result.top1 and result.predictions.shape == (120,)
        assert result.top1 == pytest.approx((result.predictions == yte).mean())
    # binary problem: LinearSVC's decision function is 1-D; top-min(5, 2) is trivially 1
    binary = features.svm_baseline(xtr[ytr < 2], ytr[ytr < 2], xte[yte < 2], yte[yte < 2])
    assert binary.top1 >= 0.9 and binary.top5 == 1.0
    with pytest.raises(ValueError, match="k=500 is not possible with 120 training samples"):
        features.knn_baseline(xtr, ytr, xte, yte, k=500)
    with pytest.raises(ValueError, match="train features have 3 dimensions but test features 2"):
        features.svm_baseline(xtr, ytr, xte[:, :2], yte)


def test_top5_ranks_classes_by_score():
    scores = np.array([[0.9, 0.1, 0.5, 0.3, 0.2, 0.0, 0.4], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    classes = np.arange(7)
    assert features.topk_accuracy(scores, classes, np.array([1, 1]), 5) == 0.0  # class 1 is 6th in both rows
    assert features.topk_accuracy(scores, classes, np.array([4, 2]), 5) == 1.0
    assert features.topk_accuracy(scores, classes, np.array([4, 0]), 1) == 0.0


# -- ImageNet weights from torch's cache, without the network ---------------------------------------------------
@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_imagenet_weights_are_found_under_torchvisions_file_name_and_loaded(torch_home):
    path = X.imagenet_weights_file("resnet18")
    expected_name = torchvision.models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    assert path == torch_home / "hub" / "checkpoints" / expected_name and expected_name == "resnet18-f37072fd.pth"
    torch.manual_seed(3)
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["fc.bias"].fill_(0.25)
    path.parent.mkdir(parents=True)
    atomic_save(state, path)
    loaded = X.imagenet_backbone("resnet18", download=False)
    assert torch.equal(loaded.conv1.weight, state["conv1.weight"]) and torch.equal(loaded.fc.bias, state["fc.bias"])
    model = X.transfer_model("resnet18", strategy="ft0", num_classes=5, download=False)
    assert model.fc.out_features == 5 and torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert trainable_names(model) == names_under(model, ["layer4", "fc"]) - bn_parameter_names(model)


def test_imagenet_weights_missing_or_wrong_give_one_clear_error(torch_home, monkeypatch):
    path = X.imagenet_weights_file("resnet18")
    with pytest.raises(X.ImageNetWeightsUnavailable, match=rf"place resnet18-f37072fd.pth .* in {path.parent}/"):
        X.imagenet_backbone("resnet18", download=False)
    monkeypatch.setattr(datasets, "network_reachable", lambda host, timeout=4.0: False)
    with pytest.raises(X.ImageNetWeightsUnavailable, match="no connection to download.pytorch.org"):
        X.transfer_model("resnet18", num_classes=5)
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["fc.weight"] = torch.zeros(10, 512)  # a head for 10 classes: not the ImageNet weights
    path.parent.mkdir(parents=True)
    atomic_save(state, path)
    with pytest.raises(X.ImageNetWeightsUnavailable, match=r"differ in shape \(e.g. 'fc.weight'.*replace it with"):
        X.imagenet_backbone("resnet18", download=False)
    whole = path.read_bytes()
    damaged = {
        "garbage": b"not a checkpoint",
        "empty": b"",
        "html": b"<!DOCTYPE html><html><body>Access denied</body></html>",
        "truncated": whole[: len(whole) // 2],
        "random": np.random.default_rng(0).bytes(4096),
    }
    for what, content in damaged.items():
        path.write_bytes(content)
        with pytest.raises(X.ImageNetWeightsUnavailable) as err:
            X.imagenet_backbone("resnet18", download=False)
        message = str(err.value)
        assert message == (
            f"{path} is damaged or is not a PyTorch weights file; replace it with {path.name} from "
            f"{torchvision.models.ResNet18_Weights.DEFAULT.url}."
        ), what
        assert "weights_only" not in message and "\n" not in message, what
    with pytest.raises(ValueError, match=r"Unknown weights 'V9' for resnet50: choose one of DEFAULT, IMAGENET1K_V1"):
        X.imagenet_weights_file("resnet50", "V9")
    assert X.imagenet_weights_file("resnet50").name == torchvision.models.ResNet50_Weights.DEFAULT.url.rsplit("/")[-1]


# -- data: class subsets, label budgets, scikit-learn's digits ------------------------------------------------
def test_digits_are_real_mnist_shaped_and_split_with_a_fixed_test_set():
    from sklearn.datasets import load_digits

    splits = data.load_arrays("digits", profile="full", seed=0)
    info = splits.info
    assert info.source == "scikit-learn bundled digits (UCI ML hand-written digits)" and not info.synthetic
    assert info.num_classes == 10 and info.image_shape == (1, 28, 28) and splits.x_train.dtype == np.uint8
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (1_097, 200, 500)
    assert np.bincount(splits.y_test).tolist() == [50] * 10
    images = np.concatenate([splits.x_train, splits.x_val, splits.x_test])
    assert images.shape == (1_797, 1, 28, 28) and images.max() == 255
    assert images[:, :, :4].max() == 0 and images[:, :, 24:].max() == 0  # a 20x20 digit in a 28x28 frame
    np.testing.assert_allclose(images.mean() / 255, info.mean[0], atol=1e-4)
    np.testing.assert_allclose((images / 255).std(), info.std[0], atol=1e-4)
    # averaging the 20x20 box back to 8x8 recovers the bundled images' ink, image by image (as multisets)
    back = F.adaptive_avg_pool2d(torch.from_numpy(images[:, :, 4:24, 4:24]).float(), 8).numpy() * 16 / 255
    np.testing.assert_allclose(np.sort(back.sum((1, 2, 3))), np.sort(load_digits().images.sum((1, 2))), atol=1.0)
    again = data.load_arrays("digits", profile="quick", seed=5)
    np.testing.assert_array_equal(again.x_test, splits.x_test)  # the lab seed moves only the validation split
    assert not np.array_equal(again.y_val, splits.y_val)


def test_classes_keeps_and_relabels_a_subset_in_the_given_order():
    whole = data.load_arrays("digits", profile="full", seed=0)
    sub = data.load_arrays("digits", profile="full", seed=0, classes=(7, 5, 9))
    assert sub.info.num_classes == 3 and sub.info.classes == ("7", "5", "9") and sub.info.class_ids == (7, 5, 9)
    assert sub.info.as_dict()["class_ids"] == [7, 5, 9] and "class_ids" not in whole.info.as_dict()
    assert "classes 7, 5, 9 relabelled 0..2" in sub.info.describe()
    for new, old in enumerate((7, 5, 9)):
        np.testing.assert_array_equal(sub.x_test[sub.y_test == new], whole.x_test[whole.y_test == old])
    assert set(np.unique(sub.y_train)) == {0, 1, 2}
    assert len(sub.x_train) + len(sub.x_val) == sum(
        ((whole.y_train == c).sum() + (whole.y_val == c).sum()) for c in (5, 7, 9)
    )
    for bad in ((5,), (5, 5), (3, 10), (1.0, 2.0)):
        with pytest.raises(ValueError, match=r"classes=.* is not possible for digits: give at least two distinct"):
            data.load_arrays("digits", profile="full", classes=bad)


def test_train_per_class_takes_the_first_n_of_each_class_from_the_seeded_shuffle():
    whole = data.load_arrays("digits", profile="full", seed=3, classes=(5, 6, 7, 8, 9))
    budget = data.load_arrays("digits", profile="full", seed=3, classes=(5, 6, 7, 8, 9), train_per_class=4)
    assert np.bincount(budget.y_train).tolist() == [4] * 5 and budget.info.train_per_class == 4
    first = np.concatenate([np.flatnonzero(whole.y_train == c)[:4] for c in range(5)])
    np.testing.assert_array_equal(budget.x_train, whole.x_train[np.sort(first)])
    np.testing.assert_array_equal(budget.x_val, whole.x_val)  # validation and test are untouched
    assert budget.info.sizes["train"] == 20 and budget.info.as_dict()["train_per_class"] == 4
    loaders = data.make_loaders("digits", profile="full", seed=3, classes=(5, 6, 7, 8, 9), train_per_class=4)
    assert len(loaders.train.dataset) == 20 and loaders.info.num_classes == 5
    fewest = int(np.bincount(whole.y_train).min())
    with pytest.raises(
        ValueError, match=rf"train_per_class=500 is not possible: class '\d' has only \d+ .* at most {fewest}"
    ):
        data.load_arrays("digits", profile="full", seed=3, classes=(5, 6, 7, 8, 9), train_per_class=500)
    with pytest.raises(ValueError, match="use one of them"):
        data.load_arrays("digits", profile="full", train_per_class=4, train_subset=10)
    with pytest.raises(ValueError, match="train_per_class=0 is not possible"):
        data.load_arrays("digits", profile="full", train_per_class=0)


# -- recipes on the experiment harness (lab 07) ------------------------------------------------------------------
DIGITS_04, DIGITS_59 = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
TINY = dict(val_size=50, test_subset=60, batch_size=32, progress=False)


@pytest.fixture
def harness_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def tiny_source():
    fields = {k: v for k, v in TINY.items() if k != "progress"}
    return X.course_backbone_recipe("digits", classes=DIGITS_04, depth=8, width=4, epochs=1, lr=0.05, **fields)


def test_course_backbone_recipe_fits_the_data_and_defaults_to_lab_05s_training():
    r = tiny_source()
    assert r.model_kwargs == {"depth": 8, "num_classes": 5, "in_channels": 1, "width": 4}
    assert (r.optimizer, r.scheduler, r.momentum, r.weight_decay, r.augment) == ("sgd", "cosine", 0.9, 5e-4, "none")
    cifar = X.course_backbone_recipe("cifar10")
    assert cifar.model_kwargs == {"depth": 20, "num_classes": 10, "in_channels": 3, "width": 16}
    assert (cifar.lr, cifar.epochs, cifar.augment) == (0.1, 30, "standard")


def test_source_backbone_is_saved_once_and_transfer_recipes_build_the_strategy(harness_runs):
    from labutils import experiment

    path, source = X.source_backbone(tiny_source(), lab="07_test", profile="quick", progress=False)
    assert path == source.dir / X.BACKBONE_FILE and path.parent.parent == harness_runs / "07_test" / "checkpoints"
    blob = path.read_bytes()
    path2, again = X.source_backbone(tiny_source(), lab="07_test", profile="quick", progress=False)
    assert again.loaded and path2 == path and path.read_bytes() == blob  # keys downstream stay the same
    model, meta = X.course_backbone(path)
    assert meta["key"] == source.key and meta["synthetic"] is False
    for name, p in source.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], p.cpu())

    ft1 = X.transfer_recipe("ft1", path, strategy="ft1", dataset="digits", classes=DIGITS_59, decay=0.5)
    built = experiment.build(ft1)
    assert built.fc.out_features == 5 and ft1.model_kwargs["checkpoint"] == path
    assert trainable_names(built) == names_under(built, ["stage2", "stage3", "fc"]) - bn_parameter_names(built)
    assert ft1.lr_groups == {"stage2": 0.25, "stage3": 0.5, "fc": 1.0}  # frozen stages get no group
    scratch = experiment.build(ft1.replace(model_kwargs={**ft1.model_kwargs, "strategy": "full", "pretrained": False}))
    assert not torch.equal(scratch.stem[0].weight, model.stem[0].weight)
    assert not any(X.is_frozen_bn(m) for m in scratch.modules())  # random weights: batch norm trains


def test_two_phase_on_the_harness_starts_phase_two_from_phase_ones_weights(harness_runs):
    from labutils import experiment

    path, _ = X.source_backbone(tiny_source(), lab="07_test", profile="quick", progress=False)
    data_fields = dict(dataset="digits", classes=DIGITS_59, train_per_class=5, val_size=50, test_subset=60)
    one = X.transfer_recipe("tp", path, strategy="two_phase", epochs=2, lr=0.01, batch_size=16, **data_fields)
    phase1 = experiment.run(one, lab="07_test", profile="quick", progress=False)
    two = X.phase_two_recipe(phase1, epochs=1)
    assert two.model_kwargs["phase"] == 2 and two.model_kwargs["init"] == phase1.dir / "model.pt"
    assert two.lr == pytest.approx(0.001, rel=1e-12) and two.scheduler == "plateau" and two.name == "tp-phase2"
    start = experiment.build(two)
    assert torch.equal(start.fc.weight, phase1.model.fc.weight.cpu())
    assert trainable_names(start) == names_under(start, ["stage2", "stage3", "fc"]) - bn_parameter_names(start)
    phase2 = experiment.run(two, lab="07_test", profile="quick", progress=False)
    assert torch.equal(phase2.model.stem[0].weight.cpu(), phase1.model.stem[0].weight.cpu())  # frozen throughout
    assert not torch.equal(phase2.model.stage3[0].conv1.weight.cpu(), phase1.model.stage3[0].conv1.weight.cpu())
    # phase 2's key follows the content of phase 1's weights file
    loaders = experiment.loaders_for(two, "quick")
    key = experiment.recipe_key(two, loaders.info.as_dict())
    state = torch.load(phase1.dir / "model.pt", weights_only=True)
    state["fc.bias"] += 1.0
    torch.save(state, phase1.dir / "model.pt")
    assert experiment.recipe_key(two, loaders.info.as_dict()) != key
    with pytest.raises(ValueError, match="not phase 1 of a two_phase recipe"):
        X.phase_two_recipe(phase2, epochs=1)


def test_init_that_does_not_exist_is_one_clear_error(backbone_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        course_model(backbone_file, strategy="two_phase", phase=2, init=tmp_path / "nothing.pt")


def test_imagenet_transfer_model_resizes_small_images_for_the_backbone():
    torch.manual_seed(0)
    model = X.imagenet_transfer_model("resnet18", input_size=64, num_classes=3, pretrained=False, strategy="ft0")
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3) and model[0].size == (64, 64)
    assert {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad} == {"layer4", "fc"}


# -- the lab 07 exercise check --------------------------------------------------------------------------------
def solution_set_trainable():
    import nbformat

    from labutils.student import BEGIN_SOLUTION
    from labutils.util import REPO_ROOT

    nb = nbformat.read(REPO_ROOT / "notebooks" / "07_transfer_learning.ipynb", as_version=4)
    namespace = {"transfer": X}
    for cell in nb.cells:
        if cell.cell_type == "code" and BEGIN_SOLUTION in cell.source:
            exec(compile(cell.source, "07:exercise", "exec"), namespace)
    return namespace["set_trainable"]


def test_freeze_by_stage_check_passes_the_solution_and_the_package(capsys):
    assert checks.check_freeze_by_stage(solution_set_trainable()) > 0

    def by_package(model, strategy):
        X.freeze(model, X.trainable_stages(model, strategy), freeze_bn=False)

    n = checks.check_freeze_by_stage(by_package, seed=1)
    m18 = ResNet18(num_classes=3, width=4, blocks_per_stage=(1, 1, 1, 1))
    m8 = ResNet(8, num_classes=3, in_channels=1, width=4)
    assert n == 5 * (len(list(m18.parameters())) + len(list(m8.parameters())))
    assert capsys.readouterr().out.count("all requires_grad as expected") == 2


def test_freeze_by_stage_check_fails_a_stub_and_wrong_answers():
    def stub(model, strategy):
        raise NotImplementedError()

    def forgets_to_freeze(model, strategy):  # sets the trainable stages but leaves the rest as it was
        for name in X.trainable_stages(model, strategy):
            for p in X.stages(model)[name].parameters():
                p.requires_grad_(True)

    def off_by_one(model, strategy):  # ft0 trains two stages
        extra = {"linear_probe": 1, "ft0": 2, "ft1": 3, "ft2": 4}.get(strategy, 99)
        names = list(X.stages(model))
        for p in model.parameters():
            p.requires_grad_(False)
        for name in names[max(0, len(names) - 1 - extra) :]:
            for p in X.stages(model)[name].parameters():
                p.requires_grad_(True)

    with pytest.raises(checks.CheckFailed, match="NotImplementedError"):
        checks.check_freeze_by_stage(stub)
    with pytest.raises(
        checks.CheckFailed, match=r"strategy 'linear_probe'.*expected False, got True.*'linear_probe' trains head;"
    ):
        checks.check_freeze_by_stage(forgets_to_freeze)
    with pytest.raises(checks.CheckFailed, match=r"strategy 'linear_probe'.*first 'stage3\..*expected False"):
        checks.check_freeze_by_stage(off_by_one)


def test_backbone_provenance_names_the_lab_the_data_and_whether_it_is_synthetic(tmp_path):
    meta = {
        "architecture": "ResNet-8",
        "run": "source-resnet8-w8-cifar10",
        "profile": "quick",
        "dataset": {"name": "cifar10-synthetic"},
        "synthetic": True,
        "test_acc": 0.1234,
    }
    path = tmp_path / "runs" / "05_residual_cnn" / "backbone_resnet.pt"
    line = X.backbone_provenance(path, meta)
    assert line == (
        "backbone_resnet.pt: ResNet-8 trained by lab 05 (05_residual_cnn), run 'source-resnet8-w8-cifar10' "
        "(quick profile), on cifar10-synthetic — a SYNTHETIC stand-in; test accuracy there 0.123."
    )
    real = X.backbone_provenance(tmp_path / "elsewhere.pt", {**meta, "synthetic": False, "test_acc": None})
    assert "an unknown lab" in real and real.endswith("— real data.")
