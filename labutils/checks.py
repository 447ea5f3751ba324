"""Instant checks for the labs' exercises: one call after each exercise, CS231n style.

Each check runs the student's code on small random float64 inputs and compares it with a reference
(``labutils.scratch`` and, where torch has the operation, ``torch``). On success it prints one line with
the largest error found; on failure it raises :class:`CheckFailed` (an ``AssertionError``) whose message
says what was expected, what came back (shape, dtype, the largest difference and its index) and gives
one hint.

    >>> checks.check_conv2d(my_conv2d)
    check_conv2d: 9 cases, largest relative error 2.1e-16 (should be below 1e-09)

Errors are CS231n's relative error, max |a - b| / max(1e-8, |a| + |b|) over all elements, so a correct
float64 implementation reaches ~1e-12 or better whatever the size of the numbers.
"""

from __future__ import annotations

import numpy as np

from .scratch import functional as F
from .scratch.gradcheck import numerical_gradient, relative_error

__all__ = [
    "CheckFailed",
    "compare",
    "check_linear_layer",
    "check_two_layer_backward",
    "check_numerical_gradient",
    "check_adam",
    "check_conv2d",
    "check_max_pool2d",
    "check_conv_block",
]

TOLERANCE = 1e-9


class CheckFailed(AssertionError):
    """A check found a difference (or the code under test raised); the message says what and gives a hint."""


def _describe(a) -> str:
    a = np.asarray(a)
    return f"shape {a.shape} {a.dtype}"


def compare(what: str, got, expected, hint: str, tol: float = TOLERANCE) -> float:
    """Relative error between ``got`` and ``expected``; raise :class:`CheckFailed` above ``tol``.

    what: names the quantity in the message (``"conv2d output, case 'stride 2'"``). The message gives both
    shapes and dtypes, or the largest absolute difference, its index and both values there, then ``hint``.
    """
    expected = np.asarray(expected)
    if got is None:
        raise CheckFailed(f"{what}: expected an array of {_describe(expected)}, got None (a missing return?). {hint}")
    got = np.asarray(got)
    if got.shape != expected.shape:
        raise CheckFailed(f"{what}: expected {_describe(expected)}, got {_describe(got)}. {hint}")
    if not np.issubdtype(got.dtype, np.number) or np.issubdtype(got.dtype, np.complexfloating):
        raise CheckFailed(f"{what}: expected real numbers ({expected.dtype}), got dtype {got.dtype}. {hint}")
    if not np.all(np.isfinite(got)):
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(got))[0])
        raise CheckFailed(f"{what}: got a non-finite value {got[index]} at index {index}. {hint}")
    error = relative_error(got, expected)
    if error > tol:
        diff = np.abs(got.astype(np.float64) - expected)
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
        raise CheckFailed(
            f"{what}: relative error {error:.1e} (should be below {tol:.0e}). Largest difference "
            f"{diff[index]:.3g} at index {index}: expected {expected[index]:.6g}, got {got[index]:.6g} "
            f"({_describe(got)}). {hint}"
        )
    return error


def _call(name: str, fn, *args, **kwargs):
    """Call the student's code; turn the stub's NotImplementedError (or any crash) into a clear failure."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as exc:
        raise CheckFailed(f"{name} raised NotImplementedError: replace the '# YOUR CODE HERE' stub first.") from exc
    except Exception as exc:
        raise CheckFailed(f"{name} raised {type(exc).__name__}: {exc}") from exc


def _passed(check: str, detail: str, error: float, tol: float = TOLERANCE) -> float:
    print(f"{check}: {detail}, largest relative error {error:.1e} (should be below {tol:.0e})")
    return error


# -- lab 01: a layer's forward and backward -----------------------------------------------------------
def check_linear_layer(layer_cls, seed: int = 0) -> float:
    """Check a linear layer class against ``torch.nn.functional.linear`` and autograd, in float64.

    layer_cls(in_features, out_features, dtype=np.float64, rng=seed) must follow the scratch layer contract
    (``params``/``grads`` with ``"weight"`` (H, D) and ``"bias"`` (H,), ``forward(x)`` (N, D) -> (N, H),
    ``backward(dout)`` -> dx (N, D) filling ``grads``). Returns the largest relative error.
    """
    import torch

    rng = np.random.default_rng(seed)
    n, d, h = 5, 7, 4
    layer = _call(f"{layer_cls.__name__}(...)", layer_cls, d, h, dtype=np.float64, rng=seed)
    x, dout = rng.standard_normal((n, d)), rng.standard_normal((n, h))
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(layer.params["weight"], requires_grad=True)
    tb = torch.tensor(layer.params["bias"], requires_grad=True)
    tout = torch.nn.functional.linear(tx, tw, tb)
    tout.backward(torch.from_numpy(dout))
    name = layer_cls.__name__
    errors = [
        compare(
            f"{name}.forward(x) for x of shape {x.shape}",
            _call(f"{name}.forward", layer.forward, x),
            tout.detach().numpy(),
            "Hint: z = x @ W.T + b, with W of shape (out_features, in_features).",
        )
    ]
    dx = _call(f"{name}.backward", layer.backward, dout)
    hints = {
        "dx": "Hint: dL/dx = dout @ W (shape N x D).",
        "weight": "Hint: dL/dW = dout.T @ x (shape H x D), using the x saved by forward.",
        "bias": "Hint: dL/db sums dout over the batch: dout.sum(axis=0).",
    }
    errors.append(compare(f"{name}.backward: the returned dL/dx", dx, tx.grad.numpy(), hints["dx"]))
    for key, tensor in (("weight", tw), ("bias", tb)):
        errors.append(
            compare(f"{name}.backward: grads[{key!r}]", layer.grads.get(key), tensor.grad.numpy(), hints[key])
        )
    return _passed("check_linear_layer", "forward, dx, dW, db", max(errors))


# -- lab 02: backprop, gradient checking, Adam -----------------------------------------------------
def check_two_layer_backward(net_cls, seed: int = 0) -> float:
    """Check the hand-written backward pass of a :class:`~labutils.scratch.twolayer.TwoLayerNet` subclass.

    net_cls(D, H, C, seed=seed, dtype=np.float64) is run forward on a batch and ``backward(dz2)`` is compared
    with torch autograd: the returned dL/dx (N, D) and ``grads`` W1 (H, D), b1 (H,), W2 (C, H), b2 (C,).
    """
    import torch

    rng = np.random.default_rng(seed)
    n, d, h, c = 6, 5, 8, 3
    net = _call(f"{net_cls.__name__}(...)", net_cls, d, h, c, seed=seed, dtype=np.float64)
    x, dz2 = rng.standard_normal((n, d)), rng.standard_normal((n, c))
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in net.state_dict().items()}
    tx = torch.tensor(x, requires_grad=True)
    z2 = torch.relu(tx @ tensors["W1"].T + tensors["b1"]) @ tensors["W2"].T + tensors["b2"]
    z2.backward(torch.from_numpy(dz2))
    name = net_cls.__name__
    _call(f"{name}.forward", net.forward, x)
    dx = _call(f"{name}.backward", net.backward, dz2)
    hints = {
        "W2": "Hint: dL/dW2 = dz2.T @ h, with h = relu(z1) from the forward pass.",
        "b2": "Hint: dL/db2 = dz2.sum(axis=0).",
        "W1": "Hint: dL/dW1 = dz1.T @ x, where dz1 = (dz2 @ W2) * (z1 > 0): did you apply the ReLU mask?",
        "b1": "Hint: dL/db1 = dz1.sum(axis=0), with dz1 = (dz2 @ W2) * (z1 > 0).",
    }
    errors = [compare(f"{name}.backward: the returned dL/dx", dx, tx.grad.numpy(), "Hint: dL/dx = dz1 @ W1.")]
    for key in ("W2", "b2", "W1", "b1"):
        errors.append(
            compare(f"{name}.backward: grads[{key!r}]", net.grads.get(key), tensors[key].grad.numpy(), hints[key])
        )
    return _passed("check_two_layer_backward", "dx, dW1, db1, dW2, db2", max(errors))


def check_numerical_gradient(grad_fn, seed: int = 0) -> float:
    """Check a centred finite-difference gradient ``grad_fn(f, x, h)`` -> array of x's shape.

    Compared with the exact gradient of two smooth functions, and with
    :func:`labutils.scratch.gradcheck.numerical_gradient`; ``x`` must be left unchanged. The centred difference
    has error O(h^2): with h = 1e-5 the relative error is ~1e-10, a one-sided difference gives ~1e-5.
    """
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((3, 4))
    functions = {
        "f(x) = sum(sin(x) * a)": (lambda x: float(np.sum(np.sin(x) * a)), lambda x: np.cos(x) * a),
        "f(x) = sum(x**3) / 3": (lambda x: float(np.sum(x**3) / 3), lambda x: x**2),
    }
    hint = "Hint: (f(x + h e_k) - f(x - h e_k)) / 2h for each entry k, putting x[k] back to its value afterwards."
    errors = []
    for label, (f, exact) in functions.items():
        x = rng.standard_normal((3, 4))
        original = x.copy()
        got = _call("your numerical gradient", grad_fn, f, x, 1e-5)
        if not np.array_equal(x, original):
            changed = tuple(int(i) for i in np.argwhere(x != original)[0])
            raise CheckFailed(
                f"{label}: x was changed at index {changed} ({original[changed]!r} -> {x[changed]!r}); "
                "restore each entry after perturbing it."
            )
        errors.append(compare(f"numerical gradient of {label}", got, exact(x), hint, tol=1e-7))
        reference = numerical_gradient(f, x.copy(), 1e-5)
        errors.append(compare(f"numerical gradient of {label} (vs labutils')", got, reference, hint, tol=1e-7))
    return _passed("check_numerical_gradient", f"{len(functions)} functions", max(errors), tol=1e-7)


def check_adam(step_fn, steps: int = 5, seed: int = 0) -> float:
    """Check ``step_fn(param, grad, m, v, t, lr, betas, eps)`` -> ``(param, m, v)`` against ``torch.optim.Adam``.

    t counts steps from 1; param, grad, m, v are float64 arrays of one shape (m and v start at zero).
    ``steps`` updates with random gradients are compared after each step, also with the scratch ``Adam``.
    """
    import torch

    from .scratch.optim import Adam

    rng = np.random.default_rng(seed)
    lr, betas, eps = 1e-2, (0.9, 0.99), 1e-8
    param = rng.standard_normal((3, 5))
    tparam = torch.tensor(param.copy(), requires_grad=True)
    optimizer = torch.optim.Adam([tparam], lr=lr, betas=betas, eps=eps)
    scratch = param.copy()
    scratch_adam = Adam([scratch], lr=lr, betas=betas, eps=eps)
    m, v = np.zeros_like(param), np.zeros_like(param)
    hint = (
        "Hint: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g**2; "
        "param -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps) - did you bias-correct both, with t from 1?"
    )
    errors = []
    for t in range(1, steps + 1):
        grad = rng.standard_normal(param.shape)
        tparam.grad = torch.from_numpy(grad.copy())
        optimizer.step()
        scratch_adam.step([grad])
        result = _call("your Adam step", step_fn, param.copy(), grad.copy(), m, v, t, lr, betas, eps)
        if not isinstance(result, tuple) or len(result) != 3:
            raise CheckFailed(f"Adam step {t}: expected a tuple (param, m, v), got {type(result).__name__}.")
        param, m, v = (np.asarray(r) for r in result)
        errors.append(compare(f"Adam step {t}: param", param, tparam.detach().numpy(), hint))
        errors.append(compare(f"Adam step {t}: param (vs labutils' Adam)", param, scratch, hint))
    return _passed("check_adam", f"{steps} steps", max(errors))


# -- lab 03: convolution and pooling -------------------------------------------------------------
def _conv_cases(rng) -> dict[str, tuple]:
    """(x, weight, bias, stride, padding, dilation, groups) per case: small, non-square, float64."""

    def r(*shape):
        return rng.standard_normal(shape)

    return {
        "3x3": (r(2, 3, 7, 8), r(4, 3, 3, 3), None, 1, 0, 1, 1),
        "bias": (r(2, 3, 7, 8), r(4, 3, 3, 3), r(4), 1, 0, 1, 1),
        "non-square kernel 2x3": (r(1, 2, 6, 7), r(3, 2, 2, 3), r(3), 1, 0, 1, 1),
        "padding 1": (r(2, 3, 7, 8), r(4, 3, 3, 3), r(4), 1, 1, 1, 1),
        "stride 2": (r(2, 3, 9, 8), r(4, 3, 3, 3), r(4), 2, 1, 1, 1),
        "dilation 2": (r(2, 3, 9, 10), r(4, 3, 3, 3), r(4), 1, 0, 2, 1),
        "groups 2": (r(2, 4, 7, 8), r(6, 2, 3, 3), r(6), 1, 1, 1, 2),
        "depthwise (groups 3)": (r(1, 3, 6, 6), r(3, 1, 3, 3), None, 1, 1, 1, 3),
        "stride 2, padding 2, dilation 2, groups 2": (r(2, 4, 11, 10), r(4, 2, 3, 3), r(4), 2, 2, 2, 2),
    }


def check_conv2d(conv_fn, seed: int = 0) -> float:
    """Check ``conv_fn(x, weight, bias, stride, padding, dilation, groups)`` against ``torch.nn.functional.conv2d``.

    x: (N, C_in, H, W); weight: (C_out, C_in/groups, kh, kw); bias: (C_out,) or None; stride, padding, dilation,
    groups: ints. Nine float64 cases cover bias, non-square kernels, padding, stride, dilation and groups.
    """
    import torch
    import torch.nn.functional as TF

    hints = {
        "padding": "Hint: pad H and W with zeros on both sides first (np.pad), then slide the kernel.",
        "stride": "Hint: output pixel (i, j) starts at input row i*stride, column j*stride; "
        "H_out = (H + 2p - d(kh-1) - 1) // stride + 1.",
        "dilation": "Hint: with dilation d the kernel taps are d pixels apart: rows i*stride + a*d for a in range(kh).",
        "groups": "Hint: output channel o sees only input channels g*C_in/groups ... (g+1)*C_in/groups - 1, "
        "with g = o // (C_out/groups).",
        "bias": "Hint: add bias[o] to every pixel of output channel o (and nothing when bias is None).",
    }
    errors = []
    for name, (x, w, b, stride, padding, dilation, groups) in _conv_cases(np.random.default_rng(seed)).items():
        expected = TF.conv2d(
            torch.from_numpy(x),
            torch.from_numpy(w),
            None if b is None else torch.from_numpy(b),
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
        ).numpy()
        got = _call(f"conv2d, case {name!r}", conv_fn, x.copy(), w.copy(), b, stride, padding, dilation, groups)
        hint = next((h for key, h in hints.items() if key in name), "Hint: out[n, o, i, j] = sum(window * weight[o]).")
        args = f"stride={stride}, padding={padding}, dilation={dilation}, groups={groups}"
        errors.append(compare(f"conv2d, case {name!r} (x {x.shape}, weight {w.shape}, {args})", got, expected, hint))
    return _passed("check_conv2d", f"{len(errors)} cases", max(errors))


def check_max_pool2d(pool_fn, seed: int = 0) -> float:
    """Check ``pool_fn(x, kernel_size, stride)`` (ints; x (N, C, H, W)) against ``torch.nn.functional.max_pool2d``
    and :func:`labutils.scratch.functional.max_pool2d`, with windows that overlap and sizes that do not divide."""
    import torch
    import torch.nn.functional as TF

    rng = np.random.default_rng(seed)
    cases = {
        "2x2, stride 2": (rng.standard_normal((2, 3, 8, 6)), 2, 2),
        "3x3, stride 2 (overlapping windows)": (rng.standard_normal((2, 2, 9, 7)), 3, 2),
        "2x2, stride 1": (rng.standard_normal((1, 2, 5, 6)), 2, 1),
        "3x3, stride 3, size not divisible": (rng.standard_normal((1, 3, 10, 8)), 3, 3),
    }
    hint = (
        "Hint: output (i, j) is the max of x[..., i*stride : i*stride + k, j*stride : j*stride + k]; "
        "H_out = (H - k) // stride + 1 (leftover rows are dropped)."
    )
    errors = []
    for name, (x, k, stride) in cases.items():
        expected = TF.max_pool2d(torch.from_numpy(x), k, stride).numpy()
        got = _call(f"max_pool2d, case {name!r}", pool_fn, x.copy(), k, stride)
        errors.append(compare(f"max_pool2d, case {name!r} (x {x.shape})", got, expected, hint))
        errors.append(compare(f"max_pool2d, case {name!r} (vs labutils')", got, F.max_pool2d(x, k, stride), hint))
    return _passed("check_max_pool2d", f"{len(cases)} cases", max(errors))


# -- lab 04: the residual block ------------------------------------------------------------------
__all__ += ["check_residual_block"]  # declared here so that each lab's checks stay in one section


def _residual_hint(got, h, linear, alpha: float, expected) -> str:
    """The one hint for a wrong block output ``got``: the mistake it matches, if any (all float64 tensors)."""
    import torch

    relu, got, expected = torch.relu, got.detach().numpy(), expected.detach().numpy()
    if got.shape == expected.shape and 0 < relative_error(got, expected) < 1e-5:
        return "Hint: close, but not to float64 precision: is a step done in float32 (a tensor made without a dtype)?"
    mistakes = [
        (lambda: alpha * linear(relu(h)), "Hint: the skip connection is missing: add the input h to the branch."),
        (
            lambda: relu(h + alpha * linear(h)),
            "Hint: ReLU is applied after the sum (post-activation): in a pre-activation block it comes first, on "
            "the branch only, relu(h) -> linear, and nothing is applied to h + branch.",
        ),
        (
            lambda: relu(h + alpha * linear(relu(h))),
            "Hint: ReLU is applied after the sum as well: return h + alpha * linear(relu(h)) as it is, so that "
            "the identity path is never squashed.",
        ),
        (lambda: h + linear(relu(h)), "Hint: the branch scale is missing: multiply linear(relu(h)) by alpha."),
        (lambda: alpha * h + linear(relu(h)), "Hint: alpha scales the branch, not the skip: h + alpha * branch."),
        (lambda: h + alpha * linear(h), "Hint: the ReLU is missing: the branch is linear(relu(h)), not linear(h)."),
    ]
    with torch.no_grad():
        for mistake, hint in mistakes:
            wrong = mistake().numpy()
            if got.shape == wrong.shape and relative_error(got, wrong) < 1e-9:
                return hint
    return (
        "Hint: a pre-activation block computes h + alpha * linear(relu(h)): ReLU first, on the branch only, then "
        "the linear layer, the result scaled by alpha (branch_scale), then h added back unchanged."
    )


def check_residual_block(block, seed: int = 0) -> float:
    """Check a pre-activation residual block ``h -> h + alpha * linear(relu(h))`` against
    :class:`labutils.models.ResidualMLPBlock` (ReLU, no normalisation), outputs and gradients, in float64.

    block: either an ``nn.Module`` subclass built as ``block(width, branch_scale=alpha)`` with one
    ``nn.Linear(width, width)`` named ``linear`` (the reference weights are copied into it), or a function
    ``block(h, weight, bias, branch_scale)`` with ``weight`` (width, width) and ``bias`` (width,), where
    ``linear(x) = x @ weight.T + bias``. h: (N, width) -> (N, width). Three cases with alpha = 1, 1/sqrt(7)
    and 0.25; the gradients dL/dh, dL/dW, dL/db of L = sum(out * g), g random, come from autograd on both.
    The global torch random state is left as it was. Returns the largest relative error.
    """
    import torch

    from .models import ResidualMLPBlock

    is_module = isinstance(block, type) and issubclass(block, torch.nn.Module)
    name = getattr(block, "__name__", type(block).__name__)
    cases = {
        "width 8, alpha 1": (6, 8, 1.0),
        "width 5, alpha 1/sqrt(7)": (4, 5, 7**-0.5),
        "width 16, alpha 0.25": (3, 16, 0.25),
    }
    grad_hint = (
        "Hint: the output is right but its gradient is not: keep every step in torch (no .detach(), .data, "
        ".numpy() or in-place changes of h) so that autograd can follow it."
    )
    errors = []
    with torch.random.fork_rng(devices=[]):  # the student's nn.Linear draws weights: leave the notebook's RNG alone
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        for case, (n, width, alpha) in cases.items():
            reference = ResidualMLPBlock(width, activation="relu", norm=None, branch_scale=alpha).double()
            with torch.no_grad():
                reference.linear.weight.copy_(
                    torch.randn(width, width, generator=gen, dtype=torch.float64) / width**0.5
                )
                reference.linear.bias.copy_(0.5 * torch.randn(width, generator=gen, dtype=torch.float64))
            h = torch.randn(n, width, generator=gen, dtype=torch.float64)
            g = torch.randn(n, width, generator=gen, dtype=torch.float64)  # dL/d(output)
            h_ref, h_got = h.clone().requires_grad_(True), h.clone().requires_grad_(True)
            expected = reference(h_ref)
            expected.backward(g)

            where = f"{name}, case {case!r} (h {tuple(h.shape)})"
            if is_module:
                module = _call(f"{name}({width}, branch_scale={alpha:.4g})", block, width, branch_scale=alpha).double()
                try:
                    module.load_state_dict(reference.state_dict())
                except RuntimeError as exc:
                    has = {k: tuple(v.shape) for k, v in module.state_dict().items()}
                    raise CheckFailed(
                        f"{where}: could not copy the reference weights into {name}: it should hold exactly one "
                        f"nn.Linear({width}, {width}) named 'linear' (parameters 'linear.weight' and 'linear.bias'), "
                        f"but holds {has or 'no parameters'}."
                    ) from exc
                params = dict(module.named_parameters())
                got = _call(f"{name}.forward", module, h_got)
            else:
                params = {k: v.detach().clone().requires_grad_(True) for k, v in reference.state_dict().items()}
                got = _call(name, block, h_got, params["linear.weight"], params["linear.bias"], alpha)
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(
                    f"{where}: expected a torch.Tensor of shape {tuple(expected.shape)}, got {type(got).__name__}; "
                    "autograd needs torch operations all the way through."
                )
            hint = _residual_hint(got, h, reference.linear, alpha, expected)
            errors.append(compare(f"{where}: output", got.detach().numpy(), expected.detach().numpy(), hint))

            if not got.requires_grad:
                raise CheckFailed(f"{where}: the output does not depend on h through autograd. {grad_hint}")
            got.backward(g)
            for label, tensor, reference_tensor in (
                ("dL/dh", h_got, h_ref),
                ("dL/dW (linear.weight)", params["linear.weight"], reference.linear.weight),
                ("dL/db (linear.bias)", params["linear.bias"], reference.linear.bias),
            ):
                if tensor.grad is None:
                    raise CheckFailed(f"{where}: {label} is None: the output does not depend on it. {grad_hint}")
                errors.append(
                    compare(f"{where}: {label}", tensor.grad.numpy(), reference_tensor.grad.numpy(), grad_hint)
                )
    return _passed("check_residual_block", f"{len(cases)} cases, output and gradients (h, W, b)", max(errors))


# -- lab 06: the order of a regularised conv block -------------------------------------------------------
def _layer_summary(module) -> list[str]:
    """One readable line per layer: type and the settings that matter for the block."""
    from torch import nn

    out = []
    for m in module.children() if len(list(module.children())) else [module]:
        if isinstance(m, nn.Conv2d):
            out.append(
                f"Conv2d({m.in_channels}->{m.out_channels}, kernel {m.kernel_size[0]}, padding {m.padding[0]}, "
                f"bias={m.bias is not None})"
            )
        elif isinstance(m, nn.BatchNorm2d):
            out.append(f"BatchNorm2d({m.num_features})")
        elif isinstance(m, nn.MaxPool2d):
            out.append(f"MaxPool2d({m.kernel_size})")
        elif isinstance(m, nn.Dropout):
            out.append(f"Dropout(p={m.p})")
        else:
            out.append(type(m).__name__)
    return out


def check_conv_block(block_fn, seed: int = 0) -> float:
    """Check ``block_fn(in_ch, out_ch, batch_norm, dropout)`` (returning an ``nn.Module``) against
    :func:`labutils.models.conv_block`: the same layers in the same order (conv3×3 → [BatchNorm] → ReLU →
    2×2 max-pool → [Dropout]) and, with the reference's weights copied in, the same output in evaluation mode."""
    import torch

    from labutils.models import conv_block

    cases = {
        "plain": (3, 4, False, 0.0),
        "batch norm": (3, 4, True, 0.0),
        "dropout 0.25": (2, 5, False, 0.25),
        "batch norm + dropout 0.25": (2, 5, True, 0.25),
    }
    hint = (
        "Hint: conv3x3 (padding 1) -> BatchNorm2d (only with batch_norm; then the conv needs no bias) -> ReLU -> "
        "MaxPool2d(2) -> Dropout (only when dropout > 0). Normalise before the non-linearity, drop after the pool."
    )
    errors = []
    for name, (in_ch, out_ch, bn, p) in cases.items():
        args = f"in_ch={in_ch}, out_ch={out_ch}, batch_norm={bn}, dropout={p}"
        got = _call(f"block_fn({args})", block_fn, in_ch, out_ch, bn, p)
        if not isinstance(got, torch.nn.Module):
            raise CheckFailed(f"block_fn({args}) returned {type(got).__name__}, expected an nn.Module. {hint}")
        torch.manual_seed(seed)
        ref = conv_block(in_ch, out_ch, batch_norm=bn, dropout=p)
        want, have = _layer_summary(ref), _layer_summary(got)
        if want != have:
            raise CheckFailed(f"case {name!r} ({args}): expected the layers {want}, got {have}. {hint}")
        params = list(got.parameters())
        with torch.no_grad():
            for mine, theirs in zip(params, ref.parameters()):
                mine.copy_(theirs)
            for mine, theirs in zip(got.buffers(), ref.buffers()):
                mine.copy_(theirs)
        x = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, in_ch, 6, 6))).float()
        with torch.no_grad():
            expected = ref.eval()(x).double().numpy()
            out = got.eval()(x)
        errors.append(
            compare(f"block output, case {name!r}", out.double().numpy(), expected, hint, tol=1e-6)  # float32 layers
        )
    return _passed("check_conv_block", f"{len(cases)} cases", max(errors), tol=1e-6)


# -- lab 08: one corruption ---------------------------------------------------------------------------
__all__ += ["check_contrast"]


def check_contrast(contrast_fn, seed: int = 0) -> float:
    """Check ``contrast_fn(x, severity)`` against :func:`labutils.corruptions.corrupt` (``"contrast"``, CIFAR-10-C's
    factors) at all five severities, on float32 batches (N, C, H, W) in [0, 1], colour and greyscale.

    Contrast draws no random numbers, so the reference's ``seed`` (passed as ``seed``) changes nothing: the
    student's function needs none. ``seed`` only picks the test images. Returns the largest relative error.
    """
    import torch

    from . import corruptions

    rng = np.random.default_rng(seed)
    cases = {
        "colour (4, 3, 8, 8)": rng.uniform(0, 1, (4, 3, 8, 8)),
        "greyscale (3, 1, 7, 5)": rng.uniform(0, 1, (3, 1, 7, 5)),
        "colour, nearly saturated (2, 3, 6, 6)": np.clip(rng.uniform(0.6, 1.4, (2, 3, 6, 6)), 0, 1),
    }
    hint = (
        "Hint: per image and per channel, out = (x - mean) * c + mean with mean over (H, W), "
        "c = corruptions.parameters('contrast', severity), then clip to [0, 1]."
    )
    errors = []
    for name, array in cases.items():
        x = torch.from_numpy(array.astype(np.float32))
        for severity in corruptions.SEVERITIES:
            expected = corruptions.corrupt(x, "contrast", severity, seed).numpy()
            got = _call(f"contrast, case {name!r}, severity {severity}", contrast_fn, x.clone(), severity)
            got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else got
            errors.append(compare(f"contrast, case {name!r}, severity {severity}", got, expected, hint, tol=1e-5))
    return _passed("check_contrast", f"{len(cases)} cases x 5 severities", max(errors), tol=1e-5)


# -- lab 07: freezing by stage -------------------------------------------------------------------
def check_freeze_by_stage(freeze_fn, seed: int = 0) -> int:
    """Check ``freeze_fn(model, strategy)`` (sets ``requires_grad`` for the stages a strategy trains, returns
    nothing or the model) against :func:`labutils.transfer.freeze` with
    :func:`labutils.transfer.trainable_stages`, for every single-phase strategy on a small course ResNet-8
    and a ResNet-18-style network (4 stages, one block each). Only ``requires_grad`` is compared (batch norm
    is not part of the exercise). Returns the number of parameters checked."""
    import copy

    import torch

    from labutils import transfer
    from labutils.models import ResNet, ResNet18

    torch.manual_seed(seed)
    models = {
        "ResNet-8": ResNet(8, num_classes=3, in_channels=1, width=4),
        "ResNet-18": ResNet18(num_classes=3, width=4, blocks_per_stage=(1, 1, 1, 1)),
    }
    checked = 0
    for label, model in models.items():
        for strategy in ("linear_probe", "ft0", "ft1", "ft2", "full"):
            reference = transfer.freeze(
                copy.deepcopy(model), transfer.trainable_stages(model, strategy), freeze_bn=False
            )
            expected = {n: p.requires_grad for n, p in reference.named_parameters()}
            mine = copy.deepcopy(model)
            for p in mine.parameters():  # start from a state where every answer must set something
                p.requires_grad_(strategy == "linear_probe")
            returned = _call(f"freeze_fn({label}, {strategy!r})", freeze_fn, mine, strategy)
            mine = returned if isinstance(returned, torch.nn.Module) else mine
            got = {n: p.requires_grad for n, p in mine.named_parameters()}
            wrong = [n for n in expected if got.get(n) != expected[n]]
            if wrong:
                stages = ", ".join(transfer.trainable_stages(model, strategy))
                raise CheckFailed(
                    f"freeze_fn on {label}, strategy {strategy!r}: {len(wrong)} of {len(expected)} parameters have "
                    f"the wrong requires_grad, first {wrong[0]!r}: expected {expected[wrong[0]]}, got {got[wrong[0]]}. "
                    f"Hint: {strategy!r} trains {stages}; set requires_grad=False on every parameter first, then "
                    "True on the parameters of those stages (transfer.stages(model)[name].parameters())."
                )
            checked += len(expected)
    print(f"check_freeze_by_stage: 5 strategies on 2 networks, {checked} parameters, all requires_grad as expected")
    return checked


__all__ += ["check_freeze_by_stage"]


# -- lab 09: a class activation map by hand --------------------------------------------------------------
def _cam_hint(got, maps, weight, classes, expected) -> str:
    """The one hint for a wrong CAM ``got`` (numpy): the mistake it matches, if any (torch float64 inputs)."""
    import torch

    from .cam import class_activation_map

    n, k, h, w = maps.shape
    mistakes = [
        (expected / (h * w), "Hint: CAM is the weighted sum itself: dividing by h*w gives Grad-CAM's scale, not CAM."),
        (expected / k, "Hint: sum the weighted maps over the K channels, do not average them."),
        (torch.relu(expected), "Hint: no ReLU here: the raw map keeps its negative evidence (the figures clip later)."),
        (
            class_activation_map(maps, weight, torch.zeros_like(classes)),
            "Hint: every image used class 0's weights: image n needs fc_weight[classes[n]].",
        ),
        (
            class_activation_map(maps, weight, classes[:1].expand(n)),
            "Hint: every image used the first image's class: image n needs fc_weight[classes[n]].",
        ),
    ]
    for wrong, hint in mistakes:
        wrong = wrong.numpy()
        if got.shape == wrong.shape and relative_error(got, wrong) < 1e-9:
            return hint
    return (
        "Hint: M[n, i, j] = sum over k of fc_weight[classes[n], k] * maps[n, k, i, j]: pick each image's row of the "
        "weights (N, K) and weigh its K maps with it, e.g. with torch.einsum('nk,nkhw->nhw', ...)."
    )


def check_class_activation_map(cam_fn, seed: int = 0) -> float:
    """Check ``cam_fn(maps, fc_weight, classes)`` -> (N, h, w), the class activation map
    ``M[n] = sum_k fc_weight[classes[n], k] * maps[n, k]`` (maps (N, K, h, w), fc_weight (C, K), classes (N,)).

    Three float64 cases against :func:`labutils.cam.class_activation_map`; then, on a small course ResNet-8 in
    evaluation mode, two properties of a right answer: each map's mean plus the class bias is the class logit, and
    the map scaled as the library shows maps equals the library's Grad-CAM (``pytorch_grad_cam.GradCAM``) on the
    same model. The global torch random state is left as it was. Returns the largest relative error of the three
    cases.
    """
    import torch

    from .cam import cam_layer, class_activation_map, feature_maps, to_image_scale
    from .models import ResNet

    name = getattr(cam_fn, "__name__", type(cam_fn).__name__)
    cases = {
        "4 images, 6 channels, 5x5 maps, 10 classes": (4, 6, 5, 5, 10),
        "1 image, 3 channels, 7x7 maps, 2 classes": (1, 3, 7, 7, 2),
        "3 images, 16 channels, 4x3 maps, 5 classes": (3, 16, 4, 3, 5),
    }

    def as_numpy(got, where):
        if isinstance(got, torch.Tensor):
            return got.detach().cpu().numpy()
        if got is None or not hasattr(got, "shape"):
            raise CheckFailed(f"{where}: expected a tensor (N, h, w), got {type(got).__name__} (a missing return?).")
        return np.asarray(got)

    errors = []
    gen = torch.Generator().manual_seed(seed)
    for case, (n, k, h, w, c) in cases.items():
        maps = torch.rand(n, k, h, w, generator=gen, dtype=torch.float64)  # after a ReLU: non-negative
        weight = torch.randn(c, k, generator=gen, dtype=torch.float64)
        classes = torch.randint(0, c, (n,), generator=gen)
        classes[-1] = c - 1  # at least one image explains another class than the first
        expected = class_activation_map(maps, weight, classes)
        where = f"{name}, case {case!r} (maps {tuple(maps.shape)}, fc_weight {tuple(weight.shape)})"
        got = as_numpy(_call(name, cam_fn, maps.clone(), weight.clone(), classes.clone()), where)
        hint = (
            _cam_hint(got, maps, weight, classes, expected)
            if got.shape == expected.shape
            else ("Hint: one map per image, for that image's class: (N, h, w), not one per class.")
        )
        errors.append(compare(where, got, expected.numpy(), hint))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNet(8, num_classes=5, in_channels=1, width=4).eval()
        x = torch.randn(3, 1, 16, 16, generator=gen)
        with torch.no_grad():
            logits = model(x)
    classes = logits.argmax(dim=1)
    maps = feature_maps(model, x)
    where = f"{name} on a ResNet-8's last feature maps {tuple(maps.shape)}"
    got = as_numpy(_call(name, cam_fn, maps, model.fc.weight.detach(), classes), where)
    scores = got.reshape(len(x), -1).mean(axis=1) + model.fc.bias.detach().numpy()[classes.numpy()]
    compare(
        f"{where}: map mean + class bias against the class logit",
        scores,
        logits[torch.arange(len(x)), classes].numpy(),
        "Hint: for a global-average-pooled network the logit is the CAM's mean plus the bias: weigh with the "
        "explained class's row of fc_weight.",
        tol=1e-5,  # float32 network
    )
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[cam_layer(model)]) as explainer:
        library = explainer(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    mine = to_image_scale(got, tuple(x.shape[-2:]))
    worst = float(np.max(np.abs(mine - library)))
    if worst > 1e-4:
        raise CheckFailed(
            f"{where}: scaled like the library's maps, your CAM differs from pytorch_grad_cam's Grad-CAM by up to "
            f"{worst:.3g} (should be below 1e-04; maps lie in [0, 1]). Hint: on a global-average-pooled network "
            "Grad-CAM is ReLU(CAM) / (h*w), the same picture: weigh the maps with the explained class's weights."
        )
    return _passed("check_class_activation_map", f"{len(cases)} cases, logits and Grad-CAM on a ResNet-8", max(errors))


__all__ += ["check_class_activation_map"]
