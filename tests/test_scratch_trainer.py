"""The from-scratch trainer: it learns, keeps the best weights, checkpoints round-trip, and refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest

from labutils.scratch import losses, schedules
from labutils.scratch.mlp import mlp
from labutils.scratch.optim import SGD, Adam
from labutils.scratch.trainer import evaluate, load_npz, predict, save_npz, train


def blobs(n: int, seed: int = 0):
    """Three well-separated Gaussian blobs in 2-D (float32 inputs, int64 labels)."""
    rng = np.random.default_rng(seed)
    centers = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    y = rng.integers(0, 3, size=n)
    x = centers[y] + rng.normal(scale=0.6, size=(n, 2))
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def data():
    return blobs(300, seed=0), blobs(150, seed=1)


def test_learns_a_separable_problem(data):
    (x, y), (xv, yv) = data
    model = mlp([2, 16, 3], seed=0)
    before, _ = evaluate(model, xv, yv)
    history = train(model, Adam(model.parameters(), lr=0.05), x, y, xv, yv, epochs=8, batch_size=32, progress=False)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s", "epoch"):
        assert len(history[key]) == 8, key
    assert history["epoch"] == list(range(1, 9))
    assert history["val_acc"][-1] >= 0.98
    assert history["train_loss"][-1] < 0.25 * history["train_loss"][0]
    assert history["val_loss"][-1] < before
    assert history["lr"] == [0.05] * 8
    assert history["steps"] == 8 * 10  # ceil(300 / 32) updates per epoch
    loss, acc = evaluate(model, xv, yv)
    assert acc == pytest.approx(history["best_val_acc"], abs=1e-12)
    assert loss == pytest.approx(history["best_val_loss"], rel=1e-6)


def test_same_seed_same_history(data):
    (x, y), (xv, yv) = data
    runs = []
    for _ in range(2):
        model = mlp([2, 8, 3], seed=3)
        h = train(
            model,
            SGD(model.parameters(), lr=0.1, momentum=0.9),
            x,
            y,
            xv,
            yv,
            epochs=3,
            batch_size=50,
            seed=7,
            progress=False,
        )
        runs.append((h["train_loss"], model.parameters()[0].copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_best_validation_weights_are_restored(data):
    """Train 4 epochs, then scramble the weights and freeze them (lr 0): the best epoch's weights come back."""
    (x, y), (xv, yv) = data
    xv = xv + np.random.default_rng(2).normal(scale=2.0, size=xv.shape).astype(np.float32)  # accuracy < 1
    model = mlp([2, 16, 3], seed=0)
    snapshots = []  # the weights at the end of each epoch (= at the start of the next)
    rng = np.random.default_rng(0)

    def schedule(epoch):
        snapshots.append([p.copy() for p in model.parameters()])
        if epoch == 4:  # a stand-in for a diverging update
            for p in model.parameters():
                p[...] = rng.normal(scale=3.0, size=p.shape)
        return 0.05 if epoch < 4 else 0.0

    history = train(
        model,
        SGD(model.parameters(), lr=0.05),
        x,
        y,
        xv,
        yv,
        epochs=6,
        batch_size=32,
        schedule=schedule,
        progress=False,
    )
    assert history["lr"] == [0.05] * 4 + [0.0] * 2
    best = history["best_epoch"]
    assert best <= 4 and history["val_acc"][best - 1] == max(history["val_acc"]) > 0.7
    assert max(history["val_acc"][4:]) < history["val_acc"][best - 1] - 0.2, "the scrambled epochs must be worse"
    for restored, saved in zip(model.parameters(), snapshots[best]):
        np.testing.assert_array_equal(restored, saved)
    loss, acc = evaluate(model, xv, yv)
    assert acc == history["val_acc"][best - 1]
    assert loss == pytest.approx(history["val_loss"][best - 1], rel=1e-6)


def test_regression_monitors_validation_loss():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(200, 1)).astype(np.float32)
    y = np.sin(x)
    model = mlp([1, 16, 1], activation="tanh", seed=0)
    h = train(
        model,
        Adam(model.parameters(), lr=0.02),
        x,
        y,
        x[:50],
        y[:50],
        epochs=30,
        batch_size=20,
        loss_fn=losses.mse,
        progress=False,
    )
    assert h["monitor"] == "val_loss" and np.isnan(h["val_acc"]).all()
    assert h["best_val_loss"] == min(h["val_loss"]) and h["best_val_loss"] < 0.01
    assert evaluate(model, x[:50], y[:50], loss_fn=losses.mse)[0] == pytest.approx(h["best_val_loss"], rel=1e-6)


def test_step_schedule_sets_lr_every_update(data):
    (x, y), (xv, yv) = data
    model = mlp([2, 8, 3], seed=0)
    sched = schedules.OneCycle(0.1, total_steps=3 * 10)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    h = train(model, opt, x, y, xv, yv, epochs=3, batch_size=32, schedule=sched, progress=False)
    values = sched.values(30)
    np.testing.assert_allclose(h["lr"], values.reshape(3, 10).mean(axis=1), rtol=1e-12)
    assert opt.lr == pytest.approx(values[-1])


def test_grad_norms_are_recorded_per_parameter_and_update(data):
    (x, y), (xv, yv) = data
    model = mlp([2, 8, 3], seed=0)
    h = train(
        model,
        Adam(model.parameters(), lr=0.01),
        x,
        y,
        xv,
        yv,
        epochs=2,
        batch_size=100,
        progress=False,
        record_grad_norms=True,
    )
    assert list(h["grad_norms"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(len(v) == 6 for v in h["grad_norms"].values()) and h["steps_per_epoch"] == 3
    assert all(v > 0 for series in h["grad_norms"].values() for v in series)
    # the first recorded norm is that of the gradient at the initial weights, on the first shuffled batch
    fresh = mlp([2, 8, 3], seed=0)
    idx = np.random.default_rng(0).permutation(300)[:100]
    _, d = losses.softmax_cross_entropy(fresh.forward(x[idx]), y[idx])
    fresh.backward(d)
    assert h["grad_norms"]["0.weight"][0] == pytest.approx(float(np.linalg.norm(fresh.gradients()[0])), rel=1e-6)


def test_npz_round_trip_gives_identical_predictions(tmp_path, data):
    (x, y), (xv, yv) = data
    model = mlp([2, 16, 3], seed=0)
    train(model, Adam(model.parameters(), lr=0.05), x, y, xv, yv, epochs=2, batch_size=32, progress=False)
    path = save_npz(model, tmp_path / "ckpt" / "model.npz")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["model.npz"]  # no temp file left
    other = mlp([2, 16, 3], seed=123)
    assert not np.array_equal(predict(other, xv), predict(model, xv))
    load_npz(other, path)
    np.testing.assert_array_equal(predict(other, xv), predict(model, xv))


def test_load_npz_rejects_another_architecture(tmp_path):
    path = save_npz(mlp([2, 16, 3]), tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"does not match.*'0\.weight': \(16, 2\) saved, \(8, 2\) in the model"):
        load_npz(mlp([2, 8, 3]), path)
    with pytest.raises(ValueError, match=r"2 are missing from it \(e\.g\. '4\.weight'\)"):
        load_npz(mlp([2, 16, 3, 3]), path)
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        load_npz(mlp([2, 16, 3]), tmp_path / "absent.npz")


def test_non_finite_loss_names_epoch_and_step(data):
    (x, y), (xv, yv) = data
    x = x.copy()
    x[70] = np.nan  # lands in some batch of the first epoch
    model = mlp([2, 8, 3], activation="tanh", seed=0)  # tanh passes NaN on (ReLU as written here zeroes it)
    with pytest.raises(ValueError, match=r"training loss became nan at epoch 1, step \d+ \(of 10"):
        train(model, SGD(model.parameters(), lr=0.1), x, y, xv, yv, epochs=2, batch_size=32, progress=False)


def test_keyboard_interrupt_keeps_best_weights_and_history(data):
    (x, y), (xv, yv) = data
    model = mlp([2, 16, 3], seed=0)

    def schedule(epoch):
        if epoch == 3:
            raise KeyboardInterrupt  # as if Ctrl-C arrived at the start of the 4th epoch
        return 0.05

    h = train(
        model,
        Adam(model.parameters(), lr=0.05),
        x,
        y,
        xv,
        yv,
        epochs=10,
        batch_size=32,
        schedule=schedule,
        progress=False,
    )
    assert h["interrupted"] and h["epoch"] == [1, 2, 3]
    assert evaluate(model, xv, yv)[1] == h["best_val_acc"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(epochs=0), "epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(epochs=2.5), "epochs"),
        (dict(monitor="accuracy"), "monitor"),
        (dict(schedule=0.1), "schedule"),
        (dict(y_train=np.zeros(5, dtype=np.int64)), "300 inputs but 5 targets"),
        (dict(x_val=np.zeros((0, 2), dtype=np.float32), y_val=np.zeros(0, dtype=np.int64)), "empty"),
    ],
)
def test_bad_inputs_raise(data, kwargs, match):
    (x, y), (xv, yv) = data
    model = mlp([2, 4, 3])
    args = dict(x_train=x, y_train=y, x_val=xv, y_val=yv, epochs=1, batch_size=16, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train(model, SGD(model.parameters(), lr=0.1), **args)


def test_mlp_builder():
    model = mlp([4, 8, 6, 2], activation="tanh", seed=1, dtype=np.float64, init="xavier")
    assert [type(layer).__name__ for layer in model] == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert model.parameters()[0].dtype == np.float64
    np.testing.assert_array_equal(mlp([4, 8, 2], seed=5).parameters()[0], mlp([4, 8, 2], seed=5).parameters()[0])
    he = mlp([1000, 500, 2], init="he").parameters()[0]
    assert he.std() == pytest.approx(np.sqrt(2 / 1000), rel=0.02)
    assert [type(layer).__name__ for layer in mlp([3, 5, 2], dropout=0.5)] == ["Linear", "ReLU", "Dropout", "Linear"]
    with pytest.raises(ValueError, match="Unknown activation 'gelu'"):
        mlp([2, 3], activation="gelu")
    with pytest.raises(ValueError, match="sizes"):
        mlp([5])
    with pytest.raises(ValueError, match="Unknown init"):
        mlp([2, 3], init="lecun")
