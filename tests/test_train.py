"""labutils.train on tiny synthetic tensors: fit and train_one_epoch against a bare torch loop, optimizers and
schedulers against torch, early stopping, checkpoints and exact resume, interrupts, non-finite and diverged
losses, evaluation by hand, progress bars and tracking."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from labutils import checkpoints, experiment, seed_everything
from labutils import train as T
from labutils.train import CheckpointMismatchError, NonFiniteLossError, evaluate, fit

torch.set_num_threads(1)
N_TRAIN, N_VAL, FEATURES, CLASSES, BATCH = 192, 64, 8, 4, 32  # 6 steps per epoch


def make_data(seed: int = 0, flip_val: bool = False, generator: torch.Generator | None = None):
    """Gaussian inputs labelled by a random linear map (learnable); ``flip_val`` permutes the val labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN + N_VAL, FEATURES, generator=g)
    y = (x @ torch.randn(FEATURES, CLASSES, generator=g)).argmax(1)
    xv, yv = x[N_TRAIN:], y[N_TRAIN:]
    if flip_val:  # validation on the training inputs with other labels: the better the fit, the worse val
        xv, yv = x[:N_VAL], (y[:N_VAL] + 1) % CLASSES
    train = DataLoader(TensorDataset(x[:N_TRAIN], y[:N_TRAIN]), batch_size=BATCH, shuffle=True, generator=generator)
    val = DataLoader(TensorDataset(xv, yv), batch_size=BATCH)
    return train, val


def mlp(seed: int = 0, hidden: int = 32, dropout: float = 0.1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, CLASSES))


def run(model, train, val, **kw):
    kw = {"epochs": 3, "progress": False, "device": "cpu", **kw}
    return fit(model, train, val, **kw)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: nn.Module, b: nn.Module):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def rows_without_time(history):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in history]


# -- learning and the history ------------------------------------------------------------------
def test_fit_learns_and_records_history():
    seed_everything(0)
    train, val = make_data()
    model = mlp()
    hist = run(model, train, val, epochs=8, lr=1e-2)
    assert len(hist) == 8 and hist["epoch"] == list(range(1, 9))
    assert set(hist[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s"}
    assert hist[-1]["train_loss"] < 0.6 * hist[0]["train_loss"]
    assert hist[-1]["val_acc"] > 0.8  # chance is 0.25
    assert hist.best_val_acc == max(hist["val_acc"])
    assert hist["val_acc"][hist.best_epoch - 1] == hist.best_val_acc
    assert not hist.stopped_early and not hist.interrupted and hist.resumed_from is None
    # the reported val numbers are what evaluate() measures on the final model
    ev = evaluate(model, val, device="cpu")
    assert ev.top1 == pytest.approx(hist[-1]["val_acc"], abs=1e-12)
    assert ev.loss == pytest.approx(hist[-1]["val_loss"], rel=1e-5)
    json.dumps(hist.as_dict(), allow_nan=False)
    assert T.History.from_dict(hist.as_dict()) == hist
    assert hist["train_error"] == pytest.approx([1 - a for a in hist["train_acc"]], abs=1e-15)
    with pytest.raises(KeyError, match="no column 'accuracy'"):
        hist["accuracy"]


@pytest.mark.parametrize(
    "name, cls, extra",
    [
        ("sgd", torch.optim.SGD, {"momentum": 0.8, "nesterov": True, "weight_decay": 1e-3}),
        ("adam", torch.optim.Adam, {"weight_decay": 1e-3}),
        ("adamw", torch.optim.AdamW, {"weight_decay": 1e-2}),
    ],
)
def test_one_epoch_equals_a_bare_torch_loop(name, cls, extra):
    """fit's update is exactly the textbook loop with the torch optimizer (same seeds, same batches)."""
    lr = 0.05 if name == "sgd" else 3e-3
    seed_everything(1)
    train, val = make_data()
    model = mlp(dropout=0.0)
    hist = run(model, train, val, epochs=2, optimizer=name, lr=lr, **extra)

    seed_everything(1)
    train, val = make_data()
    ref = mlp(dropout=0.0)
    opt = cls(ref.parameters(), lr=lr, **extra)
    val_acc, train_loss = [], []
    for _ in range(2):
        total = 0.0
        for x, y in train:
            opt.zero_grad()
            loss = F.cross_entropy(ref(x), y)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
        train_loss.append(total / N_TRAIN)
        with torch.no_grad():  # validating draws a seed from the global RNG, as in fit
            val_acc.append(sum((ref(x).argmax(1) == y).sum().item() for x, y in val) / N_VAL)
    assert_same_weights(model, ref)
    assert hist["val_acc"] == val_acc
    assert hist["train_loss"] == pytest.approx(train_loss, rel=1e-12)  # the same per-sample sum, same order


def test_bad_arguments_give_one_clear_error():
    train, val = make_data()
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adamm': choose one of adam, adamw, sgd"):
        run(mlp(), train, val, optimizer="adamm")
    with pytest.raises(ValueError, match=r"Unknown scheduler 'cosin': choose one of plateau, step, cosine, onecycle"):
        run(mlp(), train, val, scheduler="cosin")
    with pytest.raises(ValueError, match="not accepted by CosineAnnealingLR"):
        run(mlp(), train, val, scheduler="cosine", scheduler_kwargs={"gamma": 0.5})
    with pytest.raises(ValueError, match="scheduler is None"):
        run(mlp(), train, val, scheduler_kwargs={"factor": 0.1})
    with pytest.raises(ValueError, match="nesterov=True applies to optimizer='sgd' only"):
        run(mlp(), train, val, optimizer="adam", nesterov=True)
    model = mlp()
    ready = torch.optim.SGD(model.parameters(), lr=0.5)
    with pytest.raises(ValueError, match="set them on that optimizer"):
        run(model, train, val, optimizer=ready, lr=0.1)
    assert run(model, train, val, epochs=1, optimizer=ready)[0]["lr"] == 0.5
    for bad in ({"epochs": 0}, {"patience": 0}, {"max_steps_per_epoch": 0}, {"lr": -1.0}):
        with pytest.raises(ValueError, match=repr(list(bad.values())[0])):
            run(mlp(), train, val, **bad)


def test_batches_bar_shows_the_running_loss_and_accuracy_without_forced_redraws(monkeypatch):
    """After every batch the bar's numbers are the epoch's running mean; at its end, the epoch's row."""
    import tqdm.auto

    shown = []

    class Bar(tqdm.auto.tqdm):
        def set_postfix(self, ordered_dict=None, refresh=True, **kw):
            if self.desc.startswith("epoch "):
                shown.append((self.desc, refresh, float(kw["loss"]), float(kw["acc"])))
            super().set_postfix(ordered_dict, refresh=refresh, **kw)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    hist = run(mlp(), *make_data(), epochs=2, progress=True)
    steps = N_TRAIN // BATCH
    assert [d for d, *_ in shown] == ["epoch 1"] * steps + ["epoch 2"] * steps
    assert not any(refresh for _, refresh, _, _ in shown)
    for epoch, row in enumerate(hist, start=1):
        _, _, loss, acc = shown[epoch * steps - 1]
        assert loss == pytest.approx(row["train_loss"], abs=5e-5) and acc == pytest.approx(row["train_acc"], abs=5e-4)


def test_one_epochs_bar_and_one_batches_bar_per_fit_reused_every_epoch(tqdm_bars):
    """A notebook bar is a dozen widgets: fit makes two bars, however many epochs, and restarts the batches bar."""
    bars = tqdm_bars
    run(mlp(), *make_data(), epochs=3, progress=True)
    epochs, steps = bars.made
    assert epochs.desc == "epochs" and (epochs.n, epochs.total) == (3, 3) and "val_acc" in epochs.postfix
    assert steps.desc == "epoch 3" and steps.n == steps.total == N_TRAIN // BATCH
    assert steps.resets == [("epoch 2", 6), ("epoch 3", 6)]  # made for epoch 1, restarted for 2 and 3
    assert epochs.disable and steps.disable  # closed when fit returned


def test_training_bars_are_shared_by_fits_and_closed_by_their_owner(tqdm_bars, tmp_path):
    bars = tqdm_bars
    train, val = make_data()
    with T.TrainingBars() as shared:
        run(mlp(), train, val, epochs=2, progress=shared, checkpoint_dir=tmp_path)
        run(mlp(), train, val, epochs=3, progress=shared, checkpoint_dir=tmp_path)  # resumes after epoch 2
        epochs, steps = bars.made
        assert not epochs.disable  # still open: fit did not make them, so it does not close them
        assert (epochs.n, epochs.total, epochs.initial) == (3, 3, 2)  # the rate counts the resumed run's epoch
    assert len(bars.made) == 2 and epochs.disable and steps.disable
    with T.TrainingBars(enabled=False) as off:
        run(mlp(), train, val, epochs=1, progress=off)
    assert len(bars.made) == 2


def test_max_steps_per_epoch_caps_batches():
    train, val = make_data()
    calls = []

    class Recorder:
        def record(self, step):
            calls.append(step)

    run(mlp(), train, val, epochs=2, max_steps_per_epoch=2, grad_recorder=Recorder())
    assert calls == [0, 1, 2, 3]


# -- schedulers --------------------------------------------------------------------------------
class ConstantScores(nn.Module):
    """Same scores for every input and zero gradients: validation accuracy never changes."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]))

    def forward(self, x):
        return self.bias.detach().expand(x.shape[0], -1) + 0.0 * self.bias


def test_plateau_halves_lr_after_patience_2_on_val_accuracy():
    train, val = make_data()
    hist = run(ConstantScores(), train, val, epochs=9, lr=0.1, scheduler="plateau")
    # epoch 1 sets the best; epochs 2-4 do not improve: the 3rd miss exceeds patience 2 -> halve.
    assert hist["lr"] == pytest.approx([0.1] * 4 + [0.05] * 3 + [0.025] * 2, rel=1e-12)
    sched = T.build_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), "plateau", epochs=5)
    assert (sched.mode, sched.factor, sched.patience) == ("max", 0.5, 2)


def test_plateau_does_not_reduce_while_val_accuracy_improves():
    seed_everything(0)
    train, val = make_data()
    hist = run(mlp(), train, val, epochs=4, lr=1e-2, scheduler="plateau")
    assert hist["lr"] == [1e-2] * 4


def test_step_schedule_divides_by_10_at_half_and_three_quarters():
    train, val = make_data()
    hist = run(mlp(), train, val, epochs=8, optimizer="sgd", lr=0.1, scheduler="step")
    assert hist["lr"] == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2, rel=1e-12)
    hist = run(
        mlp(),
        train,
        val,
        epochs=5,
        optimizer="sgd",
        lr=0.1,
        scheduler="step",
        scheduler_kwargs={"step_size": 2, "gamma": 0.5},
    )
    assert hist["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025], rel=1e-12)


def test_cosine_schedule_per_epoch():
    train, val = make_data()
    hist = run(mlp(), train, val, epochs=6, optimizer="sgd", lr=0.1, scheduler="cosine")
    expected = [0.05 * (1 + math.cos(math.pi * e / 6)) for e in range(6)]
    assert hist["lr"] == pytest.approx(expected, rel=1e-9)


def test_onecycle_steps_after_every_batch():
    train, val = make_data()
    epochs, steps = 4, len(train)
    hist = run(mlp(), train, val, epochs=epochs, optimizer="sgd", lr=0.2, scheduler="onecycle")
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.2, total_steps=epochs * steps)
    expected = []
    for _ in range(epochs):
        expected.append(ref_opt.param_groups[0]["lr"])
        for _ in range(steps):
            ref_opt.step()
            ref.step()
    assert hist["lr"] == pytest.approx(expected, rel=1e-9)
    assert hist["lr"][0] == pytest.approx(0.2 / 25)  # starts at max_lr / div_factor


# -- early stopping and checkpoints -----------------------------------------------------------
def test_early_stopping_restores_the_best_weights(tmp_path):
    seed_everything(3)
    train, val = make_data(flip_val=True)
    model = mlp()
    hist = run(model, train, val, epochs=30, lr=1e-2, patience=3, checkpoint_dir=tmp_path)
    assert hist.stopped_early
    assert len(hist) == hist.best_epoch + 3 < 30
    assert hist.best_val_acc == max(hist["val_acc"])
    # the model is the one from the best epoch: identical to a run that stopped there
    seed_everything(3)
    train, val = make_data(flip_val=True)
    ref = mlp()
    run(ref, train, val, epochs=hist.best_epoch, lr=1e-2)
    assert_same_weights(model, ref)
    assert evaluate(model, val, device="cpu").top1 == hist.best_val_acc
    # best.pt holds the same weights and loads with weights_only=True
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == hist.best_epoch and hist.checkpoint == str(tmp_path / "best.pt")
    for k, v in weights(model).items():
        assert torch.equal(best["model"][k], v)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temp files left


@pytest.mark.parametrize("scheduler", [None, "plateau", "step"])
@pytest.mark.parametrize("own_generator", [False, True])
def test_resume_equals_uninterrupted(tmp_path, scheduler, own_generator):
    """Run 2 epochs with checkpoints, then a new fit for 5 epochs resumes: same weights and history as 5 at once."""

    def setup(seed_model):
        gen = torch.Generator().manual_seed(7) if own_generator else None
        train, val = make_data(generator=gen)
        return mlp(seed_model), train, val

    kw = {"optimizer": "sgd", "lr": 0.05, "scheduler": scheduler, "patience": 4}
    kw["scheduler_kwargs"] = {"milestones": [3]} if scheduler == "step" else None
    seed_everything(5)
    model, train, val = setup(0)
    full = run(model, train, val, epochs=5, checkpoint_dir=tmp_path / "a", **kw)

    seed_everything(5)
    first, train, val = setup(0)
    run(first, train, val, epochs=2, checkpoint_dir=tmp_path / "b", **kw)
    seed_everything(99)  # a fresh session: other seeds, other init
    resumed, train, val = setup(42)
    torch.rand(10)
    hist = run(resumed, train, val, epochs=5, checkpoint_dir=tmp_path / "b", **kw)
    assert hist.resumed_from == 2 and len(hist) == 5
    assert rows_without_time(hist) == rows_without_time(full)
    assert (hist.best_epoch, hist.best_val_acc) == (full.best_epoch, full.best_val_acc)
    assert_same_weights(resumed, model)


class InterruptingLoader:
    """Wraps a loader and raises KeyboardInterrupt (as Jupyter's stop button does) at one batch."""

    def __init__(self, loader, epoch: int, batch: int):
        self.loader, self.epoch, self.batch, self.count = loader, epoch, batch, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.count += 1
        for i, batch in enumerate(self.loader, start=1):
            if (self.count, i) == (self.epoch, self.batch):
                raise KeyboardInterrupt
            yield batch


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_interrupt_keeps_best_and_resume_matches(tmp_path, scheduler):
    kw = {"epochs": 5, "optimizer": "sgd", "lr": 0.05, "scheduler": scheduler}
    seed_everything(2)
    train, val = make_data()
    model = mlp()
    full = run(model, train, val, checkpoint_dir=tmp_path / "a", **kw)

    seed_everything(2)
    train, val = make_data()
    interrupted = mlp()
    hist = run(interrupted, InterruptingLoader(train, epoch=3, batch=4), val, checkpoint_dir=tmp_path / "b", **kw)
    assert hist.interrupted and len(hist) == 2
    assert rows_without_time(hist) == rows_without_time(full)[:2]
    best = torch.load(tmp_path / "b" / "best.pt", weights_only=True)
    assert best["epoch"] == hist.best_epoch
    for k, v in weights(interrupted).items():  # best weights put back
        assert torch.equal(best["model"][k], v)

    seed_everything(11)
    resumed = mlp(seed=8)
    train, val = make_data()
    hist = run(resumed, train, val, checkpoint_dir=tmp_path / "b", **kw)
    assert hist.resumed_from == 2 and not hist.interrupted
    assert rows_without_time(hist) == rows_without_time(full)
    assert_same_weights(resumed, model)
    with pytest.raises(CheckpointMismatchError, match="planned for 5 epochs"):
        run(mlp(), train, val, checkpoint_dir=tmp_path / "b", **{**kw, "epochs": 7})


def test_a_resumed_run_keeps_the_gradient_record_of_its_first_part(tmp_path):
    """The record of an interrupted and resumed run equals an uninterrupted run's, step for step."""
    from labutils.gradflow import GradientRecorder

    kw = {"epochs": 4, "optimizer": "sgd", "lr": 0.05}
    seed_everything(2)
    train, val = make_data()
    model = mlp()
    with GradientRecorder(model, every=3) as whole:
        run(model, train, val, checkpoint_dir=tmp_path / "a", grad_recorder=whole, **kw)

    seed_everything(2)
    train, val = make_data()
    interrupted = mlp()
    with GradientRecorder(interrupted, every=3) as first_part:
        hist = run(
            interrupted,
            InterruptingLoader(train, epoch=3, batch=4),
            val,
            checkpoint_dir=tmp_path / "b",
            grad_recorder=first_part,
            **kw,
        )
    assert hist.interrupted and len(first_part.history["steps"]) > 0
    seed_everything(11)
    resumed = mlp(seed=8)
    train, val = make_data()
    with GradientRecorder(resumed, every=3) as second_part:  # a fresh recorder, as after a restart
        run(resumed, train, val, checkpoint_dir=tmp_path / "b", grad_recorder=second_part, **kw)
    got, want = second_part.history, whole.history
    assert got["steps"].tolist() == want["steps"].tolist() and got["steps"][0] == 0
    for kind in ("weight", "bias", "dead_relu"):
        np.testing.assert_array_equal(got[kind], want[kind])
    with pytest.raises(ValueError, match="saved gradient record is of layers"):
        GradientRecorder(nn.Sequential(nn.Linear(2, 2))).load_state_dict(second_part.state_dict())


def test_mismatched_checkpoint_is_one_clear_error(tmp_path):
    train, val = make_data()
    run(mlp(hidden=16), train, val, epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"does not match this Sequential: 3 tensor\(s\) differ in "
        r"shape \(e\.g\. '0\.weight': \(16, 8\) saved, \(32, 8\)",
    ):
        run(mlp(hidden=32), train, val, epochs=2, checkpoint_dir=tmp_path)
    assert issubclass(CheckpointMismatchError, ValueError)
    with pytest.raises(CheckpointMismatchError, match="optimizer Adam .* this run uses SGD"):
        run(mlp(hidden=16), train, val, epochs=2, optimizer="sgd", checkpoint_dir=tmp_path)
    deeper = nn.Sequential(*mlp(hidden=16), nn.ReLU(), nn.Linear(CLASSES, CLASSES))
    with pytest.raises(CheckpointMismatchError, match=r"2 are missing from it \(e\.g\. '5\.weight'\)"):
        T.load_checkpoint(tmp_path / "best.pt", deeper)
    # starting afresh is allowed
    assert len(run(mlp(hidden=32), train, val, epochs=1, checkpoint_dir=tmp_path, resume=False)) == 1


# -- non-finite loss ---------------------------------------------------------------------------
class NaNAfter(nn.Module):
    """A linear classifier whose scores turn NaN at the n-th training forward pass."""

    def __init__(self, n: int):
        super().__init__()
        self.linear, self.n, self.calls = nn.Linear(FEATURES, CLASSES), n, 0

    def forward(self, x):
        out = self.linear(x)
        if self.training:
            self.calls += 1
            if self.calls == self.n:
                out = out * float("nan")
        return out


def test_non_finite_loss_names_epoch_and_step():
    train, val = make_data()
    model = NaNAfter(n=len(train) + 3)  # 3rd batch of the 2nd epoch
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 2, step 3 \(global step 9\)") as err:
        run(model, train, val, epochs=3)
    assert (err.value.epoch, err.value.step, err.value.global_step) == (2, 3, 9)
    assert len(err.value.history) == 1 and isinstance(err.value, ValueError)
    assert "The model holds the best weights (epoch 1)" in str(err.value)
    assert torch.isfinite(model.linear.weight).all()  # best weights (epoch 1) put back


def test_a_nan_loss_stops_training_before_it_reaches_the_weights():
    """With no finished epoch there are no best weights to put back: the weights are those before the NaN batch."""
    train, val = make_data()
    model = NaNAfter(n=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []

    class Recorder:
        def record(self, step):
            seen.append(step)

    before = []

    def remember(module, args):
        before.append(weights(module))

    model.register_forward_pre_hook(remember)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 3 \(global step 3\)"):
        T.train_one_epoch(model, train, opt, loss_fn=F.cross_entropy, device="cpu", recorder=Recorder())
    assert seen == [0, 1]  # the NaN step was neither recorded nor taken
    for k, v in weights(model).items():
        assert torch.equal(v, before[-1][k]), k


# -- evaluate ----------------------------------------------------------------------------------
class Lookup(nn.Module):
    """Returns a fixed score table row per input id: evaluate's numbers can be checked by hand."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.register_buffer("scores", scores)

    def forward(self, x):
        return self.scores[x.long()]


@pytest.mark.parametrize("n, batch_size", [(23, 5), (123, 2)])  # uneven last batch; many batches
def test_evaluate_against_hand_computation(n, batch_size):
    rng = np.random.default_rng(0)
    k = 7
    scores = rng.normal(size=(n, k)).astype(np.float32)
    labels = rng.integers(0, k, size=n)
    labels[:3] = scores[:3].argmax(1)  # some right for sure
    model = Lookup(torch.from_numpy(scores))
    loader = DataLoader(TensorDataset(torch.arange(n), torch.from_numpy(labels)), batch_size=batch_size)
    ev = evaluate(model, loader, device="cpu")

    order = np.argsort(-scores, axis=1)
    top1 = np.mean(order[:, 0] == labels)
    top5 = np.mean([labels[i] in order[i, :5] for i in range(n)])
    log_softmax = scores - scores.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    loss = -np.mean(log_softmax[np.arange(n), labels])
    confusion = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(labels, order[:, 0]):
        confusion[t, p] += 1
    assert ev.top1 == pytest.approx(top1, abs=1e-12)
    assert ev.top5 == pytest.approx(top5, abs=1e-12) and top5 > top1
    assert ev.loss == pytest.approx(loss, rel=1e-5)
    np.testing.assert_array_equal(ev.confusion, confusion)
    np.testing.assert_array_equal(ev.predictions, order[:, 0])
    np.testing.assert_array_equal(ev.targets, labels)
    assert ev.confusion.sum() == n and ev.num_classes == k
    assert ev.as_dict() == {"loss": ev.loss, "top1": ev.top1, "top5": ev.top5}


def test_evaluate_top5_with_few_classes_and_mode_restored():
    train, val = make_data()
    model = mlp().train()
    ev = evaluate(model, val, device="cpu")
    assert ev.top5 == 1.0  # 4 classes: the true class is always among the top 4
    assert model.training  # the caller's mode is put back
    model.eval()
    evaluate(model, val, device="cpu")
    assert not model.training


# -- tracking and gradient recording -----------------------------------------------------------
class FakeTracker:
    def __init__(self):
        self.logs, self.summaries, self.artifacts = [], {}, []

    def log(self, metrics, step=None):
        self.logs.append((step, dict(metrics)))

    def summary(self, **kv):
        self.summaries.update(kv)

    def log_artifact(self, path, name, type="model"):
        self.artifacts.append((Path(path), name, type))


class CheckingRecorder:
    """Checks it is called after backward (gradients present) and before the step (weights unchanged)."""

    def __init__(self, model):
        self.model, self.steps, self.snapshot = model, [], None

    def record(self, step):
        w = self.model[0].weight
        assert w.grad is not None and torch.isfinite(w.grad).all()
        if self.snapshot is not None:
            assert not torch.equal(self.snapshot, w.detach())  # the previous step was applied after record
        self.snapshot = w.detach().clone()
        self.steps.append(step)

    def latest(self):
        return {"weight": {"0": 0.5, "3": 0.25}, "bias": {"0": 0.125}, "dead_relu": {"1": 0.0}}

    def state_dict(self):  # a checkpoint stores the record so far, as GradientRecorder's does
        return {"steps": list(self.steps)}

    def load_state_dict(self, state):
        self.steps = list(state["steps"])


def test_tracker_and_recorder_calls(tmp_path):
    train, val = make_data()
    model = mlp()
    tracker, recorder = FakeTracker(), CheckingRecorder(model)
    hist = run(
        model,
        train,
        val,
        epochs=3,
        lr=1e-2,
        grad_recorder=recorder,
        tracker=tracker,
        checkpoint_dir=tmp_path / "resnet-20",
    )
    assert recorder.steps == list(range(3 * len(train)))
    epoch_logs = [(s, m) for s, m in tracker.logs if "val/acc" in m]
    assert [s for s, _ in epoch_logs] == [6, 12, 18] and len(tracker.logs) == 3  # once per epoch, nothing between
    step, m = epoch_logs[-1]
    assert m["val/acc"] == hist[-1]["val_acc"] and m["train/loss"] == hist[-1]["train_loss"]
    assert m["lr"] == 1e-2 and m["gradflow/weight/0"] == 0.5 and m["gradflow/weight/3"] == 0.25
    assert m["gradflow/bias/0"] == 0.125 and m["gradflow/dead_relu/1"] == 0.0
    assert tracker.summaries["best_val_acc"] == hist.best_val_acc
    assert tracker.artifacts == [(tmp_path / "resnet-20" / "best.pt", "resnet-20-best", "model")]
    steps = [s for s, _ in tracker.logs]
    assert steps == sorted(steps)  # wandb needs non-decreasing steps


def test_real_offline_wandb_tracker(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from labutils.tracking import Tracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    train, val = make_data()
    with Tracker(project="labs-tests", name="fit") as tracker:
        hist = run(mlp(), train, val, epochs=2, tracker=tracker, checkpoint_dir=tmp_path / "ckpt")
        assert tracker.mode == "offline"
    assert len(hist) == 2
    assert list((tmp_path / "wandb").rglob("*.wandb")), "no offline run file written"


# -- backbones ---------------------------------------------------------------------------------
def test_save_and_load_backbone(tmp_path):
    seed_everything(0)
    model = mlp(hidden=24)
    meta = {"architecture": "mlp", "model_kwargs": {"hidden": 24}, "synthetic": True, "val_acc": np.float32(0.5)}
    path = T.save_backbone(model, tmp_path / "backbone.pt", meta)
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["synthetic"] is True and side["model_class"] == "Sequential" and side["val_acc"] == 0.5
    assert side["num_parameters"] == sum(p.numel() for p in model.parameters())

    def factory(hidden):
        return mlp(seed=5, hidden=hidden)

    loaded, meta2 = T.load_backbone(path, factory)
    assert_same_weights(loaded, model)
    assert meta2["architecture"] == "mlp"
    with pytest.raises(CheckpointMismatchError, match="does not match"):
        T.load_backbone(path, mlp(hidden=8))
    run(model, *make_data(), epochs=1, checkpoint_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="not a backbone checkpoint"):
        T.load_backbone(tmp_path / "c" / "best.pt", factory)


def test_plot_histories_returns_what_it_draws():
    import matplotlib

    matplotlib.use("Agg")
    train, val = make_data()
    runs = {"a": run(mlp(), train, val, epochs=2), "b": run(mlp(1), train, val, epochs=3)}
    fig, data = T.plot_histories(runs, metrics=("train_loss", "val_acc"), logy=("train_loss",))
    assert data["val_acc"]["b"] == runs["b"]["val_acc"] and len(data["train_loss"]["a"]) == 2
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"


def test_with_the_gradient_recorder():
    from labutils.gradflow import GradientRecorder

    train, val = make_data()
    model = mlp()
    tracker = FakeTracker()
    with GradientRecorder(model, every=1) as recorder:
        run(model, train, val, epochs=2, grad_recorder=recorder, tracker=tracker)
    h = recorder.history
    assert list(h["steps"]) == list(range(2 * len(train)))
    assert h["weight"].shape == (2 * len(train), 2) and np.isfinite(h["weight"]).all()
    last = [m for _, m in tracker.logs if "val/acc" in m][-1]
    assert last["gradflow/weight/0"] == pytest.approx(h["weight"][-1, 0], rel=1e-6)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)
    )


def test_bf16_autocast_on_cpu_learns_and_is_the_autocast_textbook_loop():
    """amp=True is the CUDA default; on the CPU bf16 autocast exists too, so the same path is tested here."""
    torch.manual_seed(0)
    images = torch.randn(96, 3, 8, 8)
    labels = (images[:, 0].mean((1, 2)) > 0).long()
    loader = DataLoader(TensorDataset(images, labels), batch_size=16)
    model = small_cnn()
    hist = run(model, loader, loader, epochs=4, lr=1e-2, amp=True)
    assert all(math.isfinite(v) for v in hist["train_loss"])
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast leaves the weights fp32
    # one epoch of train_one_epoch(amp=True) is the hand-written loop under torch.autocast
    model, ref = small_cnn(), small_cnn()
    opt, ref_opt = torch.optim.Adam(model.parameters()), torch.optim.Adam(ref.parameters())
    loss, acc, _ = T.train_one_epoch(model, loader, opt, loss_fn=F.cross_entropy, device="cpu", amp=True)
    total, correct = 0.0, 0
    for x, y in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = ref(x)
            batch_loss = F.cross_entropy(out, y)
        ref_opt.zero_grad()
        batch_loss.backward()
        ref_opt.step()
        total += batch_loss.item() * len(y)
        correct += int((out.argmax(1) == y).sum())
    assert_same_weights(model, ref)
    assert loss == pytest.approx(total / len(images), rel=1e-12) and acc == correct / len(images)


class RaiseLr:
    """Wraps a loader; sets the optimizer's learning rate to 1e6 when the ``at_epoch``-th pass over it starts."""

    def __init__(self, loader, opt, at_epoch: int):
        self.loader, self.opt, self.at_epoch, self.passes = loader, opt, at_epoch, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.passes += 1
        if self.passes == self.at_epoch:
            self.opt.param_groups[0]["lr"] = 1e6
        return iter(self.loader)


# -- divergence ----------------------------------------------------------------------------------
def test_divergence_is_an_error_naming_epoch_and_step_and_keeps_the_best_weights():
    """Adam at lr=1e6 drives the loss to astronomic values: stopped with DivergedLossError, not returned."""
    seed_everything(0)
    train, val = make_data()
    model = mlp(dropout=0.0)
    with pytest.raises(T.DivergedLossError, match=r"exploded to .* at epoch 1, step \d+ \(global step \d+\)") as err:
        run(model, train, val, epochs=3, optimizer="adam", lr=1e6)
    assert isinstance(err.value, NonFiniteLossError) and err.value.epoch == 1
    assert 2 <= err.value.step <= len(train) and err.value.global_step == err.value.step
    assert len(err.value.history) == 0
    # after one good epoch at a sane learning rate, the same explosion puts the epoch-1 weights back
    seed_everything(0)
    model = mlp(dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    with pytest.raises(T.DivergedLossError, match=r"epoch 2, .* The model holds the best weights \(epoch 1\)") as err:
        run(model, RaiseLr(train, opt, at_epoch=2), val, epochs=3, optimizer=opt)
    assert len(err.value.history) == 1
    assert evaluate(model, val, device="cpu").top1 == err.value.history.best_val_acc


class NoisyLoss:
    """Cross-entropy times a log-normal factor (median 1, 1 % of batches above 10x): a noisy but sane loss."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, out, y):
        return F.cross_entropy(out, y) * float(torch.exp(torch.randn((), generator=self.g)))


def test_noisy_normal_training_and_small_losses_do_not_trip_the_guard():
    seed_everything(4)
    train, val = make_data()
    hist = run(mlp(), train, val, epochs=6, lr=1e-2, loss_fn=NoisyLoss(0))
    assert len(hist) == 6
    # a loss that starts near 0 and rises 5000-fold to 5 is poor, not diverged: the absolute floor (100)
    guard = T.LossGuard()
    for step, loss in enumerate([1e-3, 5.0, 99.0], start=1):
        guard.check(loss, epoch=1, step=step, global_step=step)
    assert guard.initial_loss == 1e-3 and guard.limit == pytest.approx(T.DIVERGENCE_FLOOR)
    with pytest.raises(T.DivergedLossError, match=r"epoch 4, step 12 \(global step 30\)"):
        guard.check(101.0, epoch=4, step=12, global_step=30)
    # from a cross-entropy of 2.3 the limit is 2300: 2000 passes, 2400 does not
    guard = T.LossGuard(initial_loss=2.3)
    guard.check(2000.0, epoch=1, step=1, global_step=1)
    with pytest.raises(T.DivergedLossError, match="2.4e\\+03") as err:
        guard.check(2400.0, epoch=1, step=2, global_step=2)
    assert (err.value.epoch, err.value.step, err.value.global_step) == (1, 2, 2)
    with pytest.raises(NonFiniteLossError, match="became inf") as err:
        guard.check(math.inf, epoch=1, step=1, global_step=1)
    assert not isinstance(err.value, T.DivergedLossError)
    first_nan = T.LossGuard()
    with pytest.raises(NonFiniteLossError, match="became nan"):
        first_nan.check(math.nan, epoch=1, step=1, global_step=1)
    assert first_nan.initial_loss is None  # a NaN is never the reference


def test_resumed_run_keeps_the_divergence_reference(tmp_path):
    seed_everything(6)
    train, val = make_data()
    run(mlp(), train, val, epochs=1, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=True)["training"]
    assert 0.5 < state["initial_loss"] < 5.0  # the first batch's cross-entropy (ln 4 = 1.39 at chance)
    # resumed, then the learning rate raised to 1e6: the stored reference applies from the first step
    model = mlp()
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(T.DivergedLossError, match="epoch 2") as err:
        run(model, RaiseLr(train, opt, at_epoch=1), val, epochs=3, optimizer=opt, checkpoint_dir=tmp_path)
    assert f"{state['initial_loss']:.3g}" in str(err.value)


# -- architecture on resume and stale temporaries --------------------------------------------------
def mnist_mlp(residual: bool):
    from labutils.models import MLP

    torch.manual_seed(0)
    return MLP(FEATURES, CLASSES, width=8, depth=3, residual=residual)


def test_plain_checkpoint_does_not_resume_into_a_residual_mlp(tmp_path):
    """Same parameter names and shapes, other network: refused even without an architecture description."""
    train, val = make_data()
    plain, residual = mnist_mlp(False), mnist_mlp(True)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in residual.state_dict().items()}
    run(plain, train, val, epochs=1, checkpoint_dir=tmp_path / "a")
    with pytest.raises(CheckpointMismatchError, match=r"saved from a MLP built from other modules than this one"):
        run(residual, train, val, epochs=2, checkpoint_dir=tmp_path / "a")
    with pytest.raises(CheckpointMismatchError, match="built from other modules"):
        T.load_checkpoint(tmp_path / "a" / "best.pt", mnist_mlp(True))
    # with descriptions: the error names both
    arch = {"factory": "MLP", "kwargs": {"width": 8, "depth": 3, "residual": False}}
    other = {"factory": "MLP", "kwargs": {"width": 8, "depth": 3, "residual": True}}
    run(mnist_mlp(False), train, val, epochs=1, checkpoint_dir=tmp_path / "b", architecture=arch)
    message = (
        r'saved from the architecture \{"factory": "MLP", "kwargs": \{"depth": 3, "residual": false, "width": 8\}\}, '
        r'but this run builds \{"factory": "MLP", "kwargs": \{"depth": 3, "residual": true, "width": 8\}\}'
    )
    with pytest.raises(CheckpointMismatchError, match=message):
        run(mnist_mlp(True), train, val, epochs=2, checkpoint_dir=tmp_path / "b", architecture=other)
    with pytest.raises(CheckpointMismatchError, match=r"but this run builds \(not recorded\)"):
        run(mnist_mlp(False), train, val, epochs=2, checkpoint_dir=tmp_path / "b")
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(tmp_path / "b" / name, weights_only=True)
        assert ckpt["architecture"] == arch and ckpt["model_class"] == "MLP" and ckpt["format"] == 2
        assert ckpt["structure"] == T.module_structure(mnist_mlp(False))
    assert torch.load(tmp_path / "b" / "best.pt", weights_only=True)["training"] is None
    # the same description resumes
    hist = run(mnist_mlp(False), train, val, epochs=2, checkpoint_dir=tmp_path / "b", architecture=dict(arch))
    assert hist.resumed_from == 1 and len(hist) == 2


def test_stale_temporary_of_a_killed_writer_is_removed_by_the_next_save(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited: its temporaries can never be finished
    stale = tmp_path / f".last.pt.{pid}.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".last.pt.{__import__('os').getpid()}.live.tmp"  # a concurrent writer's: kept
    live.write_bytes(b"in progress")
    train, val = make_data()
    run(mlp(), train, val, epochs=1, checkpoint_dir=tmp_path)
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p != live) == ["best.pt", "last.pt"]


def test_early_stopping_class():
    model = nn.Linear(2, 2)
    stopper = T.EarlyStopping(patience=2)
    assert stopper.update(1, 0.5, model) and stopper.best_epoch == 1
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not stopper.update(2, 0.5, model) and not stopper.should_stop  # equal is no improvement
    assert not stopper.update(3, 0.4, model) and stopper.should_stop and stopper.bad_epochs == 2
    stopper.restore_best(model)
    assert torch.equal(model.weight, stopper.best_state["weight"])
    never = T.EarlyStopping(patience=None)
    for epoch in range(1, 20):
        never.update(epoch, 0.1, model)
    assert not never.should_stop and never.best_epoch == 1


def test_train_one_epoch_is_the_textbook_loop():
    """Called with the fewest arguments (as lab 04 does after its hand-written loop): same weights, loss and
    accuracy as that loop, and the global step counts the batches."""
    train, _ = make_data()
    model, ref = mlp(dropout=0.0), mlp(dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(1)  # the shuffling
    loss, acc, step = T.train_one_epoch(model, train, opt, loss_fn=nn.CrossEntropyLoss(), device="cpu")
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    torch.manual_seed(1)
    total, correct = 0.0, 0
    for x, y in train:
        out = ref(x)
        batch_loss = F.cross_entropy(out, y)
        ref_opt.zero_grad()
        batch_loss.backward()
        ref_opt.step()
        total += batch_loss.item() * len(y)
        correct += int((out.argmax(1) == y).sum())
    assert_same_weights(model, ref)
    assert step == len(train) and model.training
    assert loss == pytest.approx(total / N_TRAIN, rel=1e-12) and acc == correct / N_TRAIN
    _, _, step = T.train_one_epoch(model, train, opt, loss_fn=F.cross_entropy, device="cpu", global_step=10)
    assert step == 10 + len(train)
    with pytest.raises(ValueError, match="yielded no batches in epoch 1"):
        T.train_one_epoch(model, [], opt, loss_fn=F.cross_entropy, device="cpu")


def test_one_plot_histories_for_torch_and_scratch_histories():
    import matplotlib

    matplotlib.use("Agg")
    from labutils.plots import plot_histories
    from labutils.scratch import viz

    assert T.plot_histories is plot_histories and viz.plot_histories is plot_histories
    train, val = make_data()
    torch_run = run(mlp(), train, val, epochs=2)
    scratch_run = {"train_loss": [2.0, 1.0, 0.5], "val_acc": [0.3, 0.6, 0.7]}
    fig, data = plot_histories({"torch": torch_run, "scratch": scratch_run}, log_loss=True)
    assert data["train_loss"] == {"torch": torch_run["train_loss"], "scratch": [2.0, 1.0, 0.5]}
    assert data["val_acc"]["scratch"] == [0.3, 0.6, 0.7]
    assert fig.axes[0].get_yscale() == "log" and fig.axes[1].get_yscale() == "linear"
    with pytest.raises(ValueError, match="History 'torch' has no 'lr_max'"):
        plot_histories({"torch": torch_run}, metrics=["lr_max"])
    with pytest.raises(ValueError, match="History 'scratch' has no 'lr'"):
        plot_histories({"scratch": scratch_run}, metrics=["lr"])


# -- one build_optimizer, for a model or parameter groups ------------------------------------------
def test_build_optimizer_takes_a_model_parameters_or_parameter_groups():
    model = mlp()
    model[0].weight.requires_grad_(False)
    opt = T.build_optimizer(model, "sgd", lr=0.1, momentum=0.8, nesterov=True, weight_decay=1e-4)
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.1, 0.8, True, 1e-4)
    assert len(group["params"]) == 3  # the frozen weight is left out
    opt = T.build_optimizer(list(model.parameters()), "adamw", lr=0.01)
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups[0]["params"]) == 3
    groups = [{"params": model[0].parameters(), "lr": 0.01}, {"params": model[3].parameters()}]
    opt = T.build_optimizer(groups, "SGD", lr=0.1, nesterov=True)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.1]  # a group's own lr, else the argument's
    assert [len(g["params"]) for g in opt.param_groups] == [1, 2] and all(g["nesterov"] for g in opt.param_groups)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        T.build_optimizer(frozen, "adam")


def test_sgd_options_with_adam_are_an_error_not_ignored():
    model = mlp()
    groups = [{"params": list(model[0].parameters()), "lr": 0.01}, {"params": list(model[3].parameters())}]
    for params in (model, groups):
        for name in ("adam", "adamw"):
            with pytest.raises(ValueError, match=f"nesterov=True applies to optimizer='sgd' only, not '{name}'"):
                T.build_optimizer(params, name, nesterov=True)
            with pytest.raises(ValueError, match=f"momentum=0.5 applies to optimizer='sgd' only, not '{name}'"):
                T.build_optimizer(params, name, momentum=0.5)
    with pytest.raises(ValueError, match=r"nesterov=True needs a momentum > 0, got momentum=0"):
        T.build_optimizer(model, "sgd", momentum=0, nesterov=True)
    with pytest.raises(ValueError, match=r"lr=0 is not possible"):
        T.build_optimizer(model, "sgd", lr=0)


def test_experiment_optimizer_for_with_lr_groups_is_build_optimizer():
    from labutils.models import MLP

    recipe = experiment.Recipe(
        "groups", model=MLP, model_kwargs={"in_features": 8, "num_classes": 4, "width": 8, "depth": 2}
    )
    model = experiment.build(recipe)
    first = next(name for name, _ in model.named_parameters()).split(".")[0]
    grouped = recipe.replace(optimizer="sgd", lr=0.1, momentum=0.7, nesterov=True, lr_groups={first: 0.1})
    opt = experiment.optimizer_for(grouped, model)
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 2
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.01, 0.1], rel=1e-12)
    assert all(g["nesterov"] and g["momentum"] == 0.7 for g in opt.param_groups)
    # Adam with nesterov used to be silently ignored once lr_groups were given
    for lr_groups in (None, {first: 0.1}):
        with pytest.raises(ValueError, match="nesterov=True applies to optimizer='sgd' only, not 'adam'"):
            experiment.optimizer_for(grouped.replace(optimizer="adam", momentum=0.9, lr_groups=lr_groups), model)


def test_checkpoint_functions_stay_importable_from_train():
    for name in ("load_backbone", "save_backbone", "load_checkpoint", "load_state_checked", "atomic_save"):
        assert getattr(T, name) is getattr(checkpoints, name)
    assert T.CheckpointMismatchError is checkpoints.CheckpointMismatchError
