"""labutils.checks: every check passes the notebooks' own solutions and the package's references, and fails the
stub and a plausible wrong answer with a message that names the quantity, the index and gives a hint."""

from __future__ import annotations

import nbformat
import numpy as np
import pytest

from labutils import checks
from labutils.scratch import functional as F
from labutils.scratch.gradcheck import numerical_gradient
from labutils.scratch.layers import Linear
from labutils.scratch.twolayer import TwoLayerNet
from labutils.student import BEGIN_SOLUTION
from labutils.util import REPO_ROOT


def solutions(stem: str) -> dict:
    """Execute the exercise cells (and only those) of a solution notebook; return what they define."""
    nb = nbformat.read(REPO_ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    namespace = {"np": np, "Linear": Linear, "TwoLayerNet": TwoLayerNet}
    for cell in nb.cells:
        if cell.cell_type == "code" and BEGIN_SOLUTION in cell.source:
            exec(compile(cell.source, f"{stem}:{cell.id}", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def lab01():
    return solutions("01_numpy_mlp")


@pytest.fixture(scope="module")
def lab02():
    return solutions("02_backprop_and_optimizers")


@pytest.fixture(scope="module")
def lab03():
    return solutions("03_numpy_cnn")


def stub(*args, **kwargs):
    raise NotImplementedError()


class StubLinear(Linear):
    forward = backward = stub


class StubTwoLayer(TwoLayerNet):
    backward = stub


def fails(check, candidate, *needles: str) -> str:
    """Run ``check(candidate)``; it must raise CheckFailed with every needle in its message."""
    with pytest.raises(checks.CheckFailed) as info:
        check(candidate)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    return message


# -- solutions pass, with errors at float64 rounding level ------------------------------------------
def test_notebook_solutions_pass_every_check(lab01, lab02, lab03, capsys):
    assert checks.check_linear_layer(lab01["MyLinear"]) < 1e-12
    assert checks.check_two_layer_backward(lab02["MyTwoLayerNet"]) < 1e-12
    assert checks.check_numerical_gradient(lab02["my_numerical_gradient"]) < 1e-7
    assert checks.check_adam(lab02["adam_step"], steps=20, seed=1) < 1e-12
    assert checks.check_conv2d(lab03["my_conv2d"]) < 1e-12
    assert checks.check_conv2d(lab03["my_conv2d"], seed=1) < 1e-12
    assert checks.check_max_pool2d(lab03["my_max_pool2d"]) == 0.0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 7 and all("largest relative error" in line for line in lines)
    assert lines[4].startswith("check_conv2d: 9 cases")


def test_package_references_pass():
    assert checks.check_linear_layer(Linear) < 1e-12
    assert checks.check_two_layer_backward(TwoLayerNet) < 1e-12
    assert checks.check_numerical_gradient(numerical_gradient) < 1e-7
    assert checks.check_conv2d(F.conv2d_naive) < 1e-12
    assert checks.check_conv2d(lambda x, w, b, s, p, d, g: F.conv2d(x, w, b, s, p, d, g)) < 1e-12
    assert checks.check_max_pool2d(F.max_pool2d) == 0.0


# -- the stub fails every check ----------------------------------------------------------------
@pytest.mark.parametrize(
    "check, candidate",
    [
        (checks.check_linear_layer, StubLinear),
        (checks.check_two_layer_backward, StubTwoLayer),
        (checks.check_numerical_gradient, stub),
        (checks.check_adam, stub),
        (checks.check_conv2d, stub),
        (checks.check_max_pool2d, stub),
    ],
)
def test_the_stub_fails_with_a_pointer_to_it(check, candidate):
    fails(check, candidate, "NotImplementedError", "YOUR CODE HERE")


# -- plausible wrong answers fail with the quantity, the index and a hint ------------------------
def test_linear_without_bias_gradient_fails(lab01):
    class NoBiasGrad(lab01["MyLinear"]):
        def backward(self, dout):
            self.grads["weight"][...] = dout.T @ self._x
            return dout @ self.params["weight"]

    fails(checks.check_linear_layer, NoBiasGrad, "grads['bias']", "at index (", "Hint: dL/db")


def test_linear_with_transposed_weight_gradient_fails(lab01):
    class Transposed(lab01["MyLinear"]):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["weight"] = self.grads["weight"].T.copy()  # (D, H) instead of (H, D)
            return dx

    fails(checks.check_linear_layer, Transposed, "expected shape (4, 7) float64, got shape (7, 4)")


def test_two_layer_backward_without_relu_mask_fails(lab02):
    class NoMask(TwoLayerNet):
        def backward(self, dz2):
            x, z1, h = self._cache
            self.grads["W2"][...] = dz2.T @ h
            self.grads["b2"][...] = dz2.sum(axis=0)
            dz1 = dz2 @ self.params["W2"]  # forgot * (z1 > 0)
            self.grads["W1"][...] = dz1.T @ x
            self.grads["b1"][...] = dz1.sum(axis=0)
            return dz1 @ self.params["W1"]

    fails(checks.check_two_layer_backward, NoMask, "the returned dL/dx", "relative error")


def test_one_sided_difference_fails():
    def forward_difference(f, x, h=1e-5):
        grad, f0 = np.zeros(x.shape), f(x)
        for k in np.ndindex(*x.shape):
            old = x[k]
            x[k] = old + h
            grad[k] = (f(x) - f0) / h
            x[k] = old
        return grad

    message = fails(checks.check_numerical_gradient, forward_difference, "should be below 1e-07", "Hint:")
    assert "e-06" in message or "e-05" in message  # the O(h) error of a one-sided difference


def test_numerical_gradient_that_leaves_x_perturbed_fails():
    def forgets_to_restore(f, x, h=1e-5):
        grad = np.zeros(x.shape)
        for k in np.ndindex(*x.shape):
            old = x[k]
            x[k] = old + h
            f_plus = f(x)
            x[k] = old - h
            grad[k] = (f_plus - f(x)) / (2 * h)
        return grad

    fails(checks.check_numerical_gradient, forgets_to_restore, "x was changed at index (0, 0)", "restore")


def test_adam_without_bias_correction_fails():
    def uncorrected(param, grad, m, v, t, lr, betas, eps):
        m = betas[0] * m + (1 - betas[0]) * grad
        v = betas[1] * v + (1 - betas[1]) * grad**2
        return param - lr * m / (np.sqrt(v) + eps), m, v

    fails(checks.check_adam, uncorrected, "Adam step 1: param", "bias-correct")


def test_conv2d_ignoring_dilation_fails_on_the_dilation_case(lab03):
    def no_dilation(x, w, b, stride, padding, dilation, groups):
        return lab03["my_conv2d"](x, w, b, stride, padding, 1, groups)

    fails(checks.check_conv2d, no_dilation, "case 'dilation 2'", "expected shape (2, 4, 5, 6)", "Hint: with dilation")


def test_conv2d_ignoring_groups_reports_the_index(lab03):
    def first_group_only(x, w, b, stride, padding, dilation, groups):
        c_in = w.shape[1]  # every output channel reads the first C_in/groups input channels
        out = F.conv2d(np.ascontiguousarray(x[:, :c_in]), w, b, stride, padding, dilation, 1)
        return out

    fails(checks.check_conv2d, first_group_only, "case 'groups 2'", "Largest difference", "at index (", "Hint:")


def test_conv2d_with_flipped_kernel_fails_on_the_first_case(lab03):
    def true_convolution(x, w, b, stride, padding, dilation, groups):
        return lab03["my_conv2d"](x, w[:, :, ::-1, ::-1], b, stride, padding, dilation, groups)

    fails(checks.check_conv2d, true_convolution, "case '3x3'", "relative error")


def test_max_pool_with_stride_equal_to_kernel_fails(lab03):
    def ignores_stride(x, kernel_size, stride):
        return lab03["my_max_pool2d"](x, kernel_size, kernel_size)

    fails(checks.check_max_pool2d, ignores_stride, "overlapping windows", "expected shape (2, 2, 4, 3)")


def test_compare_reports_none_and_non_finite_values():
    hint = "Hint: h."
    with pytest.raises(checks.CheckFailed, match="got None"):
        checks.compare("out", None, np.zeros(3), hint)
    with pytest.raises(checks.CheckFailed, match=r"non-finite value nan at index \(1,\)"):
        checks.compare("out", np.array([0.0, np.nan, 0.0]), np.zeros(3), hint)
    assert checks.compare("out", np.ones(3), np.ones(3) * (1 + 1e-12), hint) < 1e-11
