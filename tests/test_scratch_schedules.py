"""Learning-rate schedules against torch.optim.lr_scheduler, value by value."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pytest
import torch

from labutils.scratch import schedules as S

matplotlib.use("Agg")
TOL = 1e-12  # relative; torch computes some curves recursively, so only rounding may differ


def torch_curve(make_scheduler, lr: float, n: int) -> np.ndarray:
    """The lr torch's scheduler gives at t = 0 .. n-1 (read before each scheduler.step())."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_scheduler(opt)
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for _ in range(n):
            values.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return np.array(values)


def test_constant():
    np.testing.assert_array_equal(S.Constant(0.05).values(7), np.full(7, 0.05))


@pytest.mark.parametrize("step_size,gamma", [(3, 0.1), (1, 0.5), (5, 0.9)])
def test_step_decay_matches_steplr(step_size, gamma):
    ours = S.StepDecay(0.1, step_size=step_size, gamma=gamma).values(20)
    theirs = torch_curve(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=step_size, gamma=gamma), 0.1, 20)
    np.testing.assert_allclose(ours, theirs, rtol=TOL)
    assert ours[-1] < ours[0]


@pytest.mark.parametrize("gamma", [0.9, 0.5])
def test_exponential_matches_exponentiallr(gamma):
    ours = S.ExponentialDecay(0.2, gamma=gamma).values(25)
    theirs = torch_curve(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=gamma), 0.2, 25)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)


@pytest.mark.parametrize("t_max,eta_min", [(10, 0.0), (7, 1e-3), (1, 0.0)])
def test_cosine_matches_cosineannealinglr(t_max, eta_min):
    n = 2 * t_max + 5  # past t_max the curve rises again, as torch's does
    ours = S.CosineAnnealing(0.1, t_max=t_max, eta_min=eta_min).values(n)
    theirs = torch_curve(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=t_max, eta_min=eta_min), 0.1, n)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-15)
    assert ours[t_max] == pytest.approx(eta_min, abs=1e-15)


ONE_CYCLE_CASES = [
    dict(total_steps=100),
    dict(total_steps=37, pct_start=0.25, anneal_strategy="linear"),
    dict(total_steps=50, three_phase=True),
    dict(total_steps=60, div_factor=10.0, final_div_factor=100.0, pct_start=0.5),
]


@pytest.mark.parametrize("kwargs", ONE_CYCLE_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_one_cycle_matches_onecyclelr(kwargs):
    n = kwargs["total_steps"]
    ours = S.OneCycle(0.5, **kwargs).values(n)
    theirs = torch_curve(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.5, cycle_momentum=False, **kwargs), 0.5, n
    )
    np.testing.assert_allclose(ours, theirs, rtol=TOL, atol=1e-15)
    assert ours.max() == pytest.approx(0.5, rel=5e-2)  # the peak may fall between two steps
    assert ours[0] == pytest.approx(0.5 / kwargs.get("div_factor", 25.0))


def test_one_cycle_is_counted_in_steps_and_refuses_to_overrun():
    sched = S.OneCycle(0.1, total_steps=10)
    assert sched.unit == "step" and S.CosineAnnealing(0.1, t_max=3).unit == "epoch"
    with pytest.raises(ValueError, match="beyond its total_steps=10"):
        sched(11)


def test_make_schedule_by_name():
    sched = S.make_schedule("cosine", lr=0.1, t_max=4)
    assert isinstance(sched, S.CosineAnnealing) and sched(4) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="Unknown schedule 'linear'"):
        S.make_schedule("linear", lr=0.1)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: S.Constant(-0.1), "lr"),
        (lambda: S.StepDecay(0.1, step_size=0), "step_size"),
        (lambda: S.StepDecay(0.1, step_size=2.5), "step_size"),
        (lambda: S.ExponentialDecay(0.1, gamma=0.0), "gamma"),
        (lambda: S.CosineAnnealing(0.1, t_max=5, eta_min=0.2), "eta_min"),
        (lambda: S.OneCycle(0.1, total_steps=10, pct_start=1.5), "pct_start"),
        (lambda: S.OneCycle(0.1, total_steps=10, anneal_strategy="exp"), "anneal_strategy"),
        (lambda: S.Constant(0.1, unit="batch"), "unit"),
        (lambda: S.Constant(0.1)(-1), "integer"),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_plot_returns_the_drawn_values():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    scheds = {"step": S.StepDecay(0.1, 3), "cosine": S.CosineAnnealing(0.1, 9)}
    fig, curves = S.plot_schedules(scheds, 10, ax=ax)
    assert fig is ax.figure
    assert set(curves) == {"step", "cosine"}
    for line, (name, values) in zip(ax.get_lines(), curves.items()):
        np.testing.assert_array_equal(line.get_ydata(), values)
        np.testing.assert_array_equal(values, scheds[name].values(10))
    plt.close(fig)
