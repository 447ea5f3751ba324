"""From-scratch optimizers against torch.optim: same hyperparameters and gradients -> same trajectory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labutils.scratch import optim

STEPS = 15
SHAPES = [(4, 3), (3,), (2, 3, 2)]
# float64 throughout: differences come only from the order of floating-point operations.
RTOL, ATOL = 1e-10, 1e-12


def _run_pair(scratch_cls, torch_cls, kwargs, *, torch_kwargs=None, lr_schedule=None, seed=0, dtype=np.float64):
    """Run both optimizers on the same parameters with the same (random, param-dependent) gradients.

    The gradient depends on the current parameters (a quadratic bowl plus noise), so any
    divergence in the update rule compounds over the steps instead of cancelling.
    Returns the list of per-step max abs differences and the two final parameter lists.
    """
    rng = np.random.default_rng(seed)
    init = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    targets = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    noise = [[(rng.normal(size=s) * 0.1).astype(dtype) for s in SHAPES] for _ in range(STEPS)]

    ours = [p.copy() for p in init]
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in init]
    opt_ours = scratch_cls(ours, **kwargs)
    opt_theirs = torch_cls(theirs, **(torch_kwargs or kwargs))
    diffs = []
    for t in range(STEPS):
        if lr_schedule is not None:
            opt_ours.lr = lr_schedule[t]
            for group in opt_theirs.param_groups:
                group["lr"] = lr_schedule[t]
        grads = [(p - c) * 2.0 + n for p, c, n in zip(ours, targets, noise[t])]
        for tp, tc, n in zip(theirs, targets, noise[t]):
            tp.grad = (tp.detach() - torch.from_numpy(tc)) * 2.0 + torch.from_numpy(n)
        opt_ours.step(grads)
        opt_theirs.step()
        diffs.append(max(np.max(np.abs(a - b.detach().numpy())) for a, b in zip(ours, theirs)))
    return diffs, ours, [p.detach().numpy() for p in theirs], init


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.03, momentum=0.5, weight_decay=0.1, nesterov=True),
]


@pytest.mark.parametrize("kwargs", SGD_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_sgd_matches_torch(kwargs):
    diffs, ours, theirs, init = _run_pair(optim.SGD, torch.optim.SGD, kwargs)
    for a, b, p0 in zip(ours, theirs, init):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
        assert np.max(np.abs(a - p0)) > 1e-2, "the parameters must actually move"


RMSPROP_CASES = [
    dict(lr=0.01),
    dict(lr=0.005, alpha=0.9, eps=1e-6),
    dict(lr=0.01, weight_decay=0.05),
    dict(lr=0.01, eps=0.5),  # a large eps makes "eps outside the square root" visible
]


@pytest.mark.parametrize("kwargs", RMSPROP_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_rmsprop_matches_torch(kwargs):
    diffs, ours, theirs, init = _run_pair(optim.RMSprop, torch.optim.RMSprop, kwargs)
    for a, b, p0 in zip(ours, theirs, init):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
        assert np.max(np.abs(a - p0)) > 1e-3


ADAM_CASES = [
    dict(lr=1e-2),
    dict(lr=5e-2, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=1e-2, weight_decay=0.1),
    dict(lr=1e-2, eps=0.3),  # large eps: checks eps is added after bias-correcting v
    dict(lr=1e-2, betas=(0.0, 0.5)),
]


@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_adam_matches_torch(kwargs):
    diffs, ours, theirs, init = _run_pair(optim.Adam, torch.optim.Adam, kwargs)
    for a, b, p0 in zip(ours, theirs, init):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
        assert np.max(np.abs(a - p0)) > 1e-2


@pytest.mark.parametrize(
    "scratch_cls,torch_cls,kwargs",
    [
        (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
        (optim.RMSprop, torch.optim.RMSprop, dict(lr=0.01)),
        (optim.Adam, torch.optim.Adam, dict(lr=0.01)),
    ],
    ids=["sgd", "rmsprop", "adam"],
)
def test_changing_lr_between_steps_matches_torch(scratch_cls, torch_cls, kwargs):
    schedule = list(np.linspace(kwargs["lr"], kwargs["lr"] / 10, STEPS))
    diffs, ours, theirs, _ = _run_pair(scratch_cls, torch_cls, kwargs, lr_schedule=schedule)
    assert max(diffs) < 1e-10


@pytest.mark.parametrize(
    "scratch_cls,torch_cls,kwargs",
    [
        (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
        (optim.RMSprop, torch.optim.RMSprop, dict(lr=0.01, weight_decay=0.01)),
        (optim.Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.01)),
    ],
    ids=["sgd", "rmsprop", "adam"],
)
def test_float32_trajectory_stays_float32_and_matches_torch(scratch_cls, torch_cls, kwargs):
    """float32 in, float32 arithmetic throughout (as torch): no silent float64 state or temporaries."""
    diffs, ours, theirs, _ = _run_pair(scratch_cls, torch_cls, kwargs, dtype=np.float32)
    assert all(p.dtype == np.float32 for p in ours)
    opt = scratch_cls([np.ones(3, dtype=np.float32)], **kwargs)
    opt.step([np.full(3, 0.5, dtype=np.float32)])
    buffers = {"SGD": ["velocity"], "RMSprop": ["square_avg"], "Adam": ["exp_avg", "exp_avg_sq"]}[scratch_cls.__name__]
    for name in buffers:
        assert getattr(opt, name)[0].dtype == np.float32, name
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_momentum_differs_from_plain_sgd():
    """Guard against a test harness that would pass for any update rule."""
    _, plain, _, _ = _run_pair(optim.SGD, torch.optim.SGD, dict(lr=0.05))
    _, _, torch_momentum, _ = _run_pair(optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9))
    assert max(np.max(np.abs(a - b)) for a, b in zip(plain, torch_momentum)) > 1e-2


def test_float32_parameters_stay_float32_and_are_updated_in_place():
    p = np.ones((3, 2), dtype=np.float32)
    same = p
    opt = optim.Adam([p], lr=0.1)
    opt.step([np.full((3, 2), 0.5, dtype=np.float32)])
    assert p is same and p.dtype == np.float32
    np.testing.assert_allclose(p, 0.9, rtol=1e-6)  # Adam's first step moves each weight by ~lr


def test_sgd_converges_on_quadratic():
    p = np.array([5.0, -3.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(200):
        opt.step([2 * p])
    assert np.max(np.abs(p)) < 1e-6


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: optim.SGD(p, lr=-0.1), "lr"),
        (lambda p: optim.SGD(p, lr=0.1, momentum=1.0), "momentum"),
        (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "Nesterov"),
        (lambda p: optim.SGD(p, lr=0.1, weight_decay=-1), "weight_decay"),
        (lambda p: optim.Adam(p, betas=(0.9, 1.0)), r"betas\[1\]"),
        (lambda p: optim.Adam(p, betas=(-0.1, 0.9)), r"betas\[0\]"),
        (lambda p: optim.Adam(p, betas=(0.9,)), "pair"),
        (lambda p: optim.Adam(p, eps=-1e-8), "eps"),
        (lambda p: optim.RMSprop(p, alpha=1.5), "alpha"),
        (lambda p: optim.RMSprop(p, lr=float("nan")), "lr"),
        (lambda p: optim.SGD([], lr=0.1), "empty"),
        (lambda p: optim.SGD([np.arange(3)], lr=0.1), "dtype"),
    ],
)
def test_bad_hyperparameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make([np.zeros(3)])


def test_lr_setter_validates():
    opt = optim.SGD([np.zeros(2)], lr=0.1)
    opt.lr = 0.5
    assert opt.lr == 0.5
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0


def test_mismatched_gradients_raise():
    opt = optim.SGD([np.zeros((2, 3)), np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="got 1 gradients for 2 parameters"):
        opt.step([np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"shape \(3, 2\).*shape \(2, 3\)"):
        opt.step([np.zeros((3, 2)), np.zeros(3)])
