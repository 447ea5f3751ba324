"""labutils.distill: Hinton et al.'s loss (T² scaling, the alpha limits, gradients to the student only), the
Distilled model, its recipe's cache key, and one distilled run through experiment.run on scikit-learn's digits."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labutils import distill, experiment
from labutils.distill import Distilled, distillation_loss, distilled_recipe
from labutils.experiment import Recipe
from labutils.models import MLP, SimpleCNN


def logits(seed: int, n: int = 6, k: int = 5, scale: float = 2.0) -> torch.Tensor:
    return scale * torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def kl_by_hand(student: np.ndarray, teacher: np.ndarray, t: float) -> float:
    """Mean over the batch of sum_k p_teacher log(p_teacher / p_student), both softened by t, in NumPy."""

    def log_softmax(z):
        z = z / t
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    log_p, log_q = log_softmax(teacher), log_softmax(student)
    return float((np.exp(log_p) * (log_p - log_q)).sum(axis=1).mean())


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 8.0])
def test_alpha_one_is_t_squared_times_the_kl_divergence_whatever_the_labels(temperature):
    s, t = logits(0), logits(1)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    loss = distillation_loss(s, t, y, temperature, alpha=1.0)
    assert loss.item() == pytest.approx(temperature**2 * kl_by_hand(s.numpy(), t.numpy(), temperature), rel=1e-5)
    assert distillation_loss(s, t, y.flip(0), temperature, alpha=1.0).item() == pytest.approx(loss.item(), rel=1e-6)
    assert distillation_loss(t, t, y, temperature, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_alpha_zero_is_plain_cross_entropy_whatever_the_teacher(temperature):
    s, y = logits(0), torch.tensor([4, 3, 2, 1, 0, 1])
    expected = F.cross_entropy(s.float(), y)
    assert distillation_loss(s, logits(1), y, temperature, alpha=0.0).item() == pytest.approx(expected.item(), rel=1e-6)
    assert distillation_loss(s, logits(2), y, temperature, alpha=0.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_weights_in_between_mix_the_two_terms_linearly():
    s, t, y = logits(0), logits(1), torch.tensor([0, 1, 2, 3, 4, 0])
    soft, hard = (distillation_loss(s, t, y, 3.0, alpha=a).item() for a in (1.0, 0.0))
    assert distillation_loss(s, t, y, 3.0, alpha=0.25).item() == pytest.approx(0.25 * soft + 0.75 * hard, rel=1e-5)


def test_t_squared_keeps_the_soft_gradient_the_same_size_at_high_temperature():
    """Hinton et al. (2015, section 2.1): for zero-mean logits and T much larger than them, the gradient of the
    softened cross-entropy is (z - v) / (K T²) per example; times T² it is (z - v) / K whatever T. Without the
    T² factor it would be 400 and 40,000 times smaller at T = 20 and T = 200, far outside the tolerance."""
    n, k = 6, 5
    s, t = logits(0, n, k, scale=1.0), logits(1, n, k, scale=1.0)
    s, t = s - s.mean(dim=1, keepdim=True), t - t.mean(dim=1, keepdim=True)
    y = torch.zeros(n, dtype=torch.long)
    limit = ((s - t) / (k * n)).numpy()  # batchmean: one more 1/N
    for temperature in (20.0, 200.0):
        student = s.clone().requires_grad_(True)
        distillation_loss(student, t, y, temperature, alpha=1.0).backward()
        tol = 3 * float(torch.cat([s, t]).abs().max()) / temperature  # the limit's relative error is O(|z| / T)
        assert tol < 0.5
        np.testing.assert_allclose(student.grad.numpy(), limit, rtol=tol, atol=tol * np.abs(limit).max())


def test_gradients_reach_the_student_and_never_the_teacher():
    student = logits(0).requires_grad_(True)
    teacher = logits(1).requires_grad_(True)
    distillation_loss(student, teacher, torch.tensor([0, 1, 2, 3, 4, 0]), 4.0, alpha=0.9).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum().item() > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0.0, alpha=0.5), "temperature=0.0 is not possible"),
        (dict(temperature=2.0, alpha=1.5), "alpha=1.5 is not possible: use a weight in"),
        (dict(temperature=2.0, alpha=True), "alpha=True is not possible"),
    ],
)
def test_bad_settings_are_one_clear_sentence(kwargs, message):
    with pytest.raises(ValueError, match=message):
        distillation_loss(logits(0), logits(1), torch.zeros(6, dtype=torch.long), **kwargs)


def test_logits_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match=r"one shape \(N, K\), got \(6, 5\) and \(6, 4\)"):
        distillation_loss(logits(0), logits(1, k=4), torch.zeros(6, dtype=torch.long), 2.0, 0.5)


# ---- the Distilled model --------------------------------------------------------------------------------------------
TEACHER_KWARGS = dict(num_classes=10, in_channels=1, width=4)
STUDENT_KWARGS = dict(in_features=64, num_classes=10, width=16, depth=2)


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(0)
    teacher = SimpleCNN(**TEACHER_KWARGS)
    teacher.train()
    with torch.no_grad():  # give batch norm running statistics that differ from the batch's
        for _ in range(3):
            teacher(torch.randn(16, 1, 8, 8) * 3 + 1)
    path = tmp_path / "model.pt"
    torch.save(teacher.state_dict(), path)
    return path


def make_distilled(path, temperature=4.0, alpha=0.9):
    return Distilled(MLP, STUDENT_KWARGS, SimpleCNN, TEACHER_KWARGS, path, temperature, alpha)


def test_the_teacher_is_frozen_and_stays_in_evaluation_mode(teacher_file):
    model = make_distilled(teacher_file).train()
    assert model.training and model.student.training and not model.teacher.training
    assert all(not p.requires_grad for p in model.teacher.parameters())
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    student_before = [p.clone() for p in model.student.parameters()]
    for _ in range(2):
        optimizer.zero_grad()
        model.training_loss(model(x), y).backward()
        optimizer.step()
    assert all(p.grad is None for p in model.teacher.parameters())
    for k, v in model.teacher.state_dict().items():  # weights and batch-norm statistics untouched
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(student_before, model.student.parameters()))


def test_forward_is_the_student_and_the_loss_uses_this_batchs_teacher_logits(teacher_file):
    model = make_distilled(teacher_file, temperature=2.0, alpha=0.7).train()
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    scores = model(x)
    assert torch.equal(scores, model.student(x))
    with torch.no_grad():
        expected_teacher = model.teacher(x)
    assert torch.allclose(model.teacher_logits, expected_teacher)
    expected = distillation_loss(scores, expected_teacher, y, 2.0, 0.7)
    assert model.training_loss(scores, y).item() == pytest.approx(expected.item(), rel=1e-6)
    model.eval()  # validation: plain cross-entropy, and the teacher is not run
    model.teacher_logits = None
    scores = model(x)
    assert model.teacher_logits is None
    assert model.training_loss(scores, y).item() == pytest.approx(F.cross_entropy(scores, y).item(), rel=1e-6)


def test_a_missing_teacher_file_is_one_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: train the teacher first"):
        make_distilled(tmp_path / "nothing.pt")


# ---- recipes and the harness ------------------------------------------------------------------------------------
DIGITS = dict(dataset="digits", val_size=200, batch_size=64, optimizer="adam", lr=3e-3, seed=0)


def fake_teacher_run(path, recipe):
    return SimpleNamespace(recipe=recipe, dir=path.parent, test=object())


def test_the_recipe_key_changes_with_temperature_alpha_and_the_teachers_weights(teacher_file):
    student = Recipe("student", model=MLP, model_kwargs=STUDENT_KWARGS, **DIGITS)
    teacher = fake_teacher_run(teacher_file, Recipe("teacher", model=SimpleCNN, model_kwargs=TEACHER_KWARGS, **DIGITS))
    dataset = {"name": "digits", "source": "test", "synthetic": False}
    base = distilled_recipe(student, teacher, temperature=4, alpha=0.9)
    assert base.name == "student-T4" and base.model is Distilled and base.seed == student.seed
    keys = {
        experiment.recipe_key(r, dataset)
        for r in (
            base,
            distilled_recipe(student, teacher, temperature=2, alpha=0.9),
            distilled_recipe(student, teacher, temperature=4, alpha=0.5),
            student,
        )
    }
    assert len(keys) == 4
    assert experiment.recipe_key(distilled_recipe(student, teacher, temperature=4, alpha=0.9), dataset) in keys
    torch.save({k: v + 1 for k, v in torch.load(teacher_file, weights_only=True).items()}, teacher_file)
    assert experiment.recipe_key(base, dataset) not in keys  # a retrained teacher trains its students anew


def test_the_distilled_student_starts_from_the_weights_of_the_student_alone(teacher_file):
    student = Recipe("student", model=MLP, model_kwargs=STUDENT_KWARGS, **DIGITS)
    teacher = fake_teacher_run(teacher_file, Recipe("teacher", model=SimpleCNN, model_kwargs=TEACHER_KWARGS, **DIGITS))
    alone = experiment.build(student)
    distilled = experiment.build(distilled_recipe(student, teacher, temperature=4, alpha=0.9))
    for (name, a), b in zip(alone.state_dict().items(), distilled.student.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_teacher_of_another_dataset_is_refused(teacher_file):
    student = Recipe("student", model=MLP, model_kwargs=STUDENT_KWARGS, **DIGITS)
    other = Recipe("teacher", model=SimpleCNN, model_kwargs=TEACHER_KWARGS, **{**DIGITS, "dataset": "mnist"})
    with pytest.raises(ValueError, match="trained on 'mnist'.*student trains on 'digits'"):
        distilled_recipe(student, fake_teacher_run(teacher_file, other), temperature=4, alpha=0.9)
    with pytest.raises(ValueError, match="finished experiment.run"):
        distilled_recipe(
            student, SimpleNamespace(recipe=other, dir=teacher_file.parent, test=None), temperature=4, alpha=1
        )


def test_through_experiment_run_alpha_zero_is_the_student_alone_and_alpha_above_zero_is_not(tmp_path, monkeypatch):
    """One loss, no second loop: experiment.run hands the model's training_loss to fit. With alpha = 0 that loss
    is cross-entropy, so the distilled run must end with exactly the weights and history of the student alone (same
    seed, same batches); with alpha = 0.9 it differs, and accuracy is still counted against the labels."""
    monkeypatch.setenv("LABS_RUNS", str(tmp_path / "runs"))
    lab = "09_test"
    mlp = dict(in_features=784, num_classes=10, depth=2)  # the digits come as 28x28 images, like MNIST
    teacher = experiment.run(
        Recipe("teacher", model=MLP, model_kwargs={**mlp, "width": 64}, epochs=2, **DIGITS),
        lab=lab,
        profile="quick",
        progress=False,
    )
    student = Recipe("student", model=MLP, model_kwargs={**mlp, "width": 16}, epochs=2, **DIGITS)
    alone = experiment.run(student, lab=lab, profile="quick", progress=False)
    zero = experiment.run(distilled_recipe(student, teacher, temperature=4, alpha=0.0), lab=lab, progress=False)
    soft = experiment.run(distilled_recipe(student, teacher, temperature=4, alpha=0.9), lab=lab, progress=False)
    for name, value in alone.model.state_dict().items():
        assert torch.equal(value, zero.model.student.state_dict()[name]), name
    assert alone.history.rows == [{**r, "time_s": a["time_s"]} for r, a in zip(zero.history.rows, alone.history.rows)]
    assert distill.count_test_errors(zero) == distill.count_test_errors(alone)
    assert not torch.equal(alone.model.fc.weight, soft.model.student.fc.weight)
    assert soft.history[0]["train_loss"] != pytest.approx(alone.history[0]["train_loss"], rel=1e-3)
    # accuracy is counted from the student's logits and the labels, as for any run
    errors = distill.count_test_errors(soft)
    assert errors == round((1 - soft.test.top1) * len(soft.test.targets))
    assert 0.3 < soft.history[-1]["train_acc"] <= 1.0
    again = experiment.run(distilled_recipe(student, teacher, temperature=4, alpha=0.9), lab=lab, progress=False)
    assert again.loaded and distill.count_test_errors(again) == errors


def test_plot_temperature_sweep_returns_the_numbers_it_draws():
    fig, numbers = distill.plot_temperature_sweep({4: [10, 14], 1: [20, 22]}, [30, 34], teacher=5)
    assert numbers["temperatures"] == [1.0, 4.0]
    assert numbers["distilled_mean"] == [21.0, 12.0]
    assert numbers["alone_mean"] == 32.0 and numbers["teacher"] == 5.0
    assert sorted(numbers["distilled_points"]) == [(1.0, 20.0), (1.0, 22.0), (4.0, 10.0), (4.0, 14.0)]
    line = [ln for ln in fig.axes[0].lines if ln.get_marker() == "o"][0]
    assert list(line.get_ydata()) == [21.0, 12.0]
    assert math.isclose(fig.axes[0].get_lines()[1].get_ydata()[0], 32.0)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_multiply_adds_counts_convolutions_and_linear_layers():
    mlp = MLP(784, 10, width=128, depth=2)
    assert distill.multiply_adds(mlp, (1, 28, 28)) == 784 * 128 + 128 * 128 + 128 * 10
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, stride=2, groups=2))
    # 3x3x3 weights for each of 8 x 10 x 10 outputs; then 3x3x4 for each of 8 x 4 x 4 outputs
    assert distill.multiply_adds(conv, (3, 10, 10)) == 27 * 800 + 36 * 128
