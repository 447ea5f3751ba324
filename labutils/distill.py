"""Knowledge distillation (Hinton, Vinyals & Dean, 2015): a small student trained on a big teacher's softened outputs.

The loss, for student logits ``s``, teacher logits ``t``, labels ``y``, temperature ``T`` and weight ``alpha``::

    L = alpha * T² * KL( softmax(t / T) || softmax(s / T) )  +  (1 - alpha) * CE(s, y)

Dividing logits by ``T > 1`` flattens both distributions, so the student also learns how the teacher ranks the
wrong classes ("a 7 that looks a bit like a 1"). The soft term's gradient shrinks like ``1 / T²``; multiplying by
``T²`` keeps its size independent of ``T``, so ``alpha`` means the same at every temperature.

There is no second training loop. :class:`Distilled` is a model: the student, plus the frozen teacher it learns
from. Its ``forward`` returns the student's logits (and, in training mode, keeps the teacher's logits on the same
batch); its ``training_loss(scores, y)`` is the loss above. :func:`labutils.experiment.run` hands a model's
``training_loss`` to :func:`labutils.train.fit`, so a distilled student is one more recipe, cached and resumed like
any other::

    >>> teacher = experiment.run(teacher_recipe, lab=LAB)
    >>> alone = experiment.run(student_recipe, lab=LAB)
    >>> distilled = experiment.run(distilled_recipe(student_recipe, teacher, temperature=4, alpha=0.9), lab=LAB)
    >>> count_test_errors(alone), count_test_errors(distilled)  # misclassified test images, as Hinton reports them

The recipe carries the temperature, alpha, the teacher's architecture and its weights file (keyed by content),
so changing any of them trains anew.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labutils.util import check_positive


def _check_alpha(alpha: float) -> float:
    ok = isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0.0 <= alpha <= 1.0
    if not ok:
        raise ValueError(f"alpha={alpha!r} is not possible: use a weight in [0, 1] (1: soft targets only).")
    return float(alpha)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton et al.'s loss, the batch mean: ``alpha * T² * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE``.

    student_logits, teacher_logits: (N, K); labels: (N,) class indices; temperature ``T > 0``; ``alpha`` in [0, 1]
    weighs the soft term (0: plain cross-entropy, 1: the teacher's soft targets only). The teacher's logits are
    detached: no gradient ever reaches the teacher. Computed in float32 (inputs may be bfloat16 under autocast).
    """
    temperature, alpha = check_positive("temperature", temperature), _check_alpha(alpha)
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(
            f"distillation_loss needs student and teacher logits of one shape (N, K), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}."
        )
    student_logits = student_logits.float()
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    soft = F.kl_div(log_p_student, p_teacher, reduction="batchmean")  # sum over classes, mean over the batch
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


def _make(factory: Callable[..., nn.Module] | str, kwargs: Mapping[str, Any]) -> nn.Module:
    from labutils.models import build_model

    return build_model(factory, **kwargs) if isinstance(factory, str) else factory(**kwargs)


class Distilled(nn.Module):
    """A student network and the frozen teacher it is trained against; in evaluation it *is* the student.

    - ``student``, ``student_kwargs``: the student's factory (a class from :mod:`labutils.models` or a model name)
      and its arguments. It is built first, so from the same seed it starts with exactly the weights of the same
      student trained alone.
    - ``teacher``, ``teacher_kwargs``, ``teacher_weights``: the teacher's factory, arguments and trained weights
      (a ``model.pt`` state dict, as :func:`labutils.experiment.run` saves it). The teacher never trains
      (``requires_grad`` off) and stays in evaluation mode, also when ``.train()`` is called: its batch norm uses
      its running statistics and its dropout is off, as when it was tested.
    - ``temperature`` (T > 0) and ``alpha`` (weight of the soft term) as in :func:`distillation_loss`.

    ``forward(x)``: (N, C, H, W) -> the student's logits (N, K). In training mode it also runs the teacher on the
    same batch, without gradients, and keeps its logits in ``teacher_logits`` for :meth:`training_loss`, which
    :func:`labutils.train.train_one_epoch` calls right after the forward pass.
    """

    def __init__(
        self,
        student: Callable[..., nn.Module] | str,
        student_kwargs: Mapping[str, Any],
        teacher: Callable[..., nn.Module] | str,
        teacher_kwargs: Mapping[str, Any],
        teacher_weights: str | Path,
        temperature: float,
        alpha: float,
    ):
        super().__init__()
        from labutils.checkpoints import load_state_checked

        self.temperature = check_positive("temperature", temperature)
        self.alpha = _check_alpha(alpha)
        self.student = _make(student, student_kwargs)
        self.teacher = _make(teacher, teacher_kwargs)
        weights = Path(teacher_weights)
        if not weights.is_file():
            raise FileNotFoundError(f"teacher_weights={str(weights)!r} does not exist: train the teacher first.")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        load_state_checked(self.teacher, state, source=str(weights))
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.teacher_logits: torch.Tensor | None = None

    def train(self, mode: bool = True) -> Distilled:
        super().train(mode)
        self.teacher.eval()  # the teacher is only ever evaluated
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.teacher_logits = self.teacher(x)
        return self.student(x)

    def training_loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The distillation loss of the last training batch; in evaluation mode (validation) plain cross-entropy,
        so that the validation loss of a distilled student compares with that of the student trained alone."""
        if not self.training:
            return F.cross_entropy(scores.float(), labels)
        if self.teacher_logits is None or self.teacher_logits.shape != scores.shape:
            raise RuntimeError("training_loss needs the teacher's logits of the same batch: call forward(x) first.")
        return distillation_loss(scores, self.teacher_logits, labels, self.temperature, self.alpha)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, alpha={self.alpha:g}"


def distilled_recipe(student, teacher, *, temperature: float, alpha: float, name: str | None = None):
    """The recipe that trains ``student`` (a :class:`~labutils.experiment.Recipe`) against ``teacher`` (the
    :class:`~labutils.experiment.RunResult` of a finished run): the same data, optimiser, budget and seed, with
    the model replaced by :class:`Distilled`. Named ``<student name>-T<temperature>`` unless ``name`` is given.

    The recipe's key covers ``temperature``, ``alpha``, the teacher's architecture and the content of its weights
    file, so each of them trains anew when it changes.
    """
    from labutils.experiment import MODEL_FILE, Recipe

    if not isinstance(student, Recipe):
        raise TypeError(f"student must be a Recipe, got {type(student).__name__}.")
    if getattr(teacher, "test", None) is None:
        raise ValueError("teacher must be the result of a finished experiment.run (it has no test evaluation).")
    if teacher.recipe.dataset != student.dataset or teacher.recipe.classes != student.classes:
        raise ValueError(
            f"The teacher was trained on {teacher.recipe.dataset!r} (classes {teacher.recipe.classes}) and the "
            f"student trains on {student.dataset!r} (classes {student.classes}): use one dataset for both."
        )
    kwargs = dict(
        student=student.model,
        student_kwargs=dict(student.model_kwargs),
        teacher=teacher.recipe.model,
        teacher_kwargs=dict(teacher.recipe.model_kwargs),
        teacher_weights=Path(teacher.dir) / MODEL_FILE,
        temperature=check_positive("temperature", temperature),
        alpha=_check_alpha(alpha),
    )
    return student.replace(name=name or f"{student.name}-T{temperature:g}", model=Distilled, model_kwargs=kwargs)


def count_test_errors(result) -> int:
    """Misclassified test images of a finished run (Hinton et al. report MNIST results as errors out of 10,000)."""
    return int(np.sum(result.test.predictions != result.test.targets))


def plot_temperature_sweep(
    distilled: Mapping[float, Sequence[float]],
    alone: Sequence[float],
    *,
    teacher: float | None = None,
    ylabel: str = "test errors",
    title: str = "",
    ax=None,
):
    """Test errors of the distilled student against temperature, beside the student trained alone.

    distilled: ``{T: [errors of each seed]}``; alone: errors of each seed without a teacher; teacher: the
    teacher's errors (a dashed line). Every seed is a dot, the mean over seeds a line; temperatures on a log-2
    axis. Returns ``(fig, numbers)`` with the plotted ``temperatures``, ``distilled_mean``, ``alone_mean``,
    ``teacher``, and the dots (``distilled_points``: ``(T, errors)`` pairs, ``alone_points``).
    """
    import matplotlib.pyplot as plt

    if not distilled or not alone:
        raise ValueError("plot_temperature_sweep needs at least one temperature and one run of the student alone.")
    temperatures = sorted(float(t) for t in distilled)
    by_t = {float(t): [float(v) for v in values] for t, values in distilled.items()}
    means = [float(np.mean(by_t[t])) for t in temperatures]
    alone_values = [float(v) for v in alone]
    alone_mean = float(np.mean(alone_values))
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.6))
    else:
        fig = ax.figure
    points = [(t, v) for t in temperatures for v in by_t[t]]
    ax.scatter([t for t, _ in points], [v for _, v in points], color="C1", alpha=0.6, s=18, label="distilled, per seed")
    ax.plot(temperatures, means, color="C1", marker="o", label="distilled, mean over seeds")
    ax.axhline(alone_mean, color="C0", label=f"student alone, mean ({alone_mean:g})")
    for v in alone_values:
        ax.axhline(v, color="C0", alpha=0.3, lw=0.8, ls=":")
    if teacher is not None:
        ax.axhline(float(teacher), color="grey", ls="--", label=f"teacher ({float(teacher):g})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(temperatures, [f"{t:g}" for t in temperatures])
    ax.set(xlabel="temperature T", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    numbers = {
        "temperatures": temperatures,
        "distilled_mean": means,
        "alone_mean": alone_mean,
        "teacher": None if teacher is None else float(teacher),
        "distilled_points": points,
        "alone_points": alone_values,
    }
    return fig, numbers


def multiply_adds(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of one forward pass of a single input of ``input_shape`` (C, H, W) through ``model``'s
    convolutions and linear layers (the work that dominates; batch norm, ReLU and pooling are left out). A small
    student is small in this sense: a convolutional teacher can have fewer parameters and still cost far more."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += per_output * output[0].numel()
        else:
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return int(total)


__all__ = [
    "distillation_loss",
    "Distilled",
    "distilled_recipe",
    "count_test_errors",
    "multiply_adds",
    "plot_temperature_sweep",
]
