"""labutils.checks.check_residual_block (lab 04): the notebook's solution, the package's block and a function pass
to float64 rounding; the stub and each common wrong forward fail with the case, the quantity and the matching hint."""

from __future__ import annotations

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from labutils import checks
from labutils.models import ResidualMLPBlock
from labutils.student import BEGIN_SOLUTION
from labutils.util import REPO_ROOT


@pytest.fixture(scope="module")
def lab04():
    """What the exercise cells of lab 04's solution notebook define (and only those cells run)."""
    nb = nbformat.read(REPO_ROOT / "notebooks" / "04_residual_mlp.ipynb", as_version=4)
    namespace = {"torch": torch}
    cells = [c for c in nb.cells if c.cell_type == "code" and BEGIN_SOLUTION in c.source]
    assert [c.id for c in cells] == ["ex04-block"]
    for cell in cells:
        exec(compile(cell.source, f"04_residual_mlp:{cell.id}", "exec"), namespace)
    return namespace


def block_fn(h, weight, bias, alpha):
    return h + alpha * TF.linear(torch.relu(h), weight, bias)


def fails(candidate, *needles: str) -> str:
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_residual_block(candidate)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    return message


def test_solution_package_block_and_function_pass_at_float64_rounding(lab04, capsys):
    assert checks.check_residual_block(lab04["MyResidualBlock"]) < 1e-12
    assert checks.check_residual_block(lab04["MyResidualBlock"], seed=1) < 1e-12
    assert checks.check_residual_block(ResidualMLPBlock) < 1e-12
    assert checks.check_residual_block(block_fn, seed=2) < 1e-12
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert all(line.startswith("check_residual_block: 3 cases, output and gradients (h, W, b)") for line in lines)


def test_the_global_torch_random_state_is_left_alone(lab04):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    checks.check_residual_block(lab04["MyResidualBlock"])
    assert torch.equal(torch.get_rng_state(), before)


def test_the_stub_fails_with_a_pointer_to_it(lab04):
    class Stub(lab04["MyResidualBlock"]):
        def forward(self, h):
            raise NotImplementedError()

    fails(Stub, "Stub.forward raised NotImplementedError", "YOUR CODE HERE")


def as_module(forward):
    """A MyResidualBlock-shaped class whose forward is ``forward(h, linear, alpha)``."""

    class Wrong(torch.nn.Module):
        def __init__(self, width, branch_scale=1.0):
            super().__init__()
            self.linear = torch.nn.Linear(width, width)
            self.branch_scale = branch_scale

        def forward(self, h):
            return forward(h, self.linear, self.branch_scale)

    return Wrong


relu = torch.relu


@pytest.mark.parametrize(
    "forward, case, hint",
    [
        (lambda h, lin, a: a * lin(relu(h)), "width 8, alpha 1", "the skip connection is missing"),
        (lambda h, lin, a: relu(h + a * lin(h)), "width 8, alpha 1", "ReLU is applied after the sum (post-activation)"),
        (lambda h, lin, a: relu(h + a * lin(relu(h))), "width 8, alpha 1", "ReLU is applied after the sum as well"),
        (lambda h, lin, a: h + lin(relu(h)), "width 5, alpha 1/sqrt(7)", "the branch scale is missing"),
        (lambda h, lin, a: a * h + lin(relu(h)), "width 5, alpha 1/sqrt(7)", "alpha scales the branch, not the skip"),
        (lambda h, lin, a: h + a * lin(h), "width 8, alpha 1", "the ReLU is missing"),
        (lambda h, lin, a: h + a * lin(torch.tanh(h)), "width 8, alpha 1", "a pre-activation block computes"),
        (lambda h, lin, a: h + a * lin(relu(h)).float(), "width 8, alpha 1", "close, but not to float64 precision"),
    ],
)
def test_each_common_mistake_fails_on_the_output_with_its_hint(forward, case, hint):
    message = fails(as_module(forward), f"case {case!r}", ": output: relative error", "at index (", "Hint: " + hint)
    assert message.count("Hint:") == 1


def test_alpha_one_does_not_hide_a_missing_branch_scale():
    # the first case has alpha = 1, where h + W relu(h) is right: the second case must catch it
    message = fails(as_module(lambda h, lin, a: h + lin(relu(h))), "case 'width 5, alpha 1/sqrt(7)'")
    error = float(message.split("relative error ")[1].split(" ")[0])
    assert 1e-3 < error <= 1.0


def test_a_detached_skip_has_the_right_output_but_fails_on_the_gradient():
    fails(as_module(lambda h, lin, a: h.detach() + a * lin(relu(h))), ": dL/dh: relative error", "autograd")


def test_the_function_form_gets_the_same_hints():
    fails(lambda h, w, b, a: a * TF.linear(relu(h), w, b), "<lambda>, case 'width 8, alpha 1'", "skip connection")
    fails(lambda h, w, b, a: (h + a * TF.linear(relu(h), w, b)).detach(), "does not depend on h through autograd")
    fails(
        lambda h, w, b, a: block_fn(h, w, b, a).detach().numpy(), "expected a torch.Tensor of shape (6, 8), got ndarray"
    )
    fails(lambda h, w, b, a: h + a * TF.linear(relu(h), w.detach(), b), "dL/dW (linear.weight) is None")


def test_a_block_without_a_layer_named_linear_is_refused_with_what_it_holds():
    class Renamed(torch.nn.Module):
        def __init__(self, width, branch_scale=1.0):
            super().__init__()
            self.fc = torch.nn.Linear(width, width)

    fails(Renamed, "named 'linear'", "but holds {'fc.weight': (8, 8), 'fc.bias': (8,)}")


def test_the_expected_numbers_are_those_of_the_formula():
    # the reference itself, recomputed in NumPy: h + alpha * (relu(h) W^T + b), alpha = 0.25
    torch.manual_seed(0)
    block = ResidualMLPBlock(6, branch_scale=0.25).double()
    h = torch.randn(4, 6, dtype=torch.float64)
    w, b = block.linear.weight.detach().numpy(), block.linear.bias.detach().numpy()
    by_hand = h.numpy() + 0.25 * (np.maximum(h.numpy(), 0) @ w.T + b)
    np.testing.assert_allclose(block(h).detach().numpy(), by_hand, rtol=1e-12, atol=1e-12)
