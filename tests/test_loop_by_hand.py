"""Lab 04's hand-written epoch and ``labutils.train.train_one_epoch`` are the same loop.

The loop checked is the notebook's own: the code cell tagged ``loop-by-hand`` runs after the notebook's parameters
and imports cells, with ``loaders.train`` replaced by fixed batches. Started from a copy of the cell's model and
optimizer as they were before its first batch, ``train_one_epoch`` on the same batches must end with the very same
weights (``torch.equal``, CPU); and the comparison is shown to notice a different loss reduction or a missing batch.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import nbformat
import pytest
import torch
import torch.nn.functional as F

from labutils import colab
from labutils.train import train_one_epoch
from labutils.util import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "04_residual_mlp.ipynb"
TAG = "loop-by-hand"
BATCHES, BATCH_SIZE = 12, 32


def fixed_batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``BATCHES`` batches of MNIST-shaped images, (32, 1, 28, 28) float32, with labels (32,) in 0..9."""
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(BATCH_SIZE, 1, 28, 28, generator=gen), torch.randint(0, 10, (BATCH_SIZE,), generator=gen))
        for _ in range(BATCHES)
    ]


class RecordingBatches:
    """Iterates over fixed batches; as each pass starts, keeps a copy of the notebook's ``model`` and ``optimizer``
    (copied together, so the copied optimizer updates the copied model's parameters)."""

    def __init__(self, batches, namespace: dict):
        self.batches, self.namespace, self.start = batches, namespace, None

    def __iter__(self):
        self.start = copy.deepcopy((self.namespace["model"], self.namespace["optimizer"]))
        return iter(self.batches)


@pytest.fixture(scope="module")
def by_hand():
    """The notebook's hand-written epoch, run on fixed batches: ``(trained model, (model, optimizer) before it)``."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.get("id") != colab.INSTALL_CELL_ID]
    tagged = [c for c in code if TAG in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"lab 04 needs exactly one code cell tagged {TAG!r}, found {len(tagged)}"
    assert "parameters" in code[0].metadata.get("tags", [])
    namespace: dict = {}
    batches = fixed_batches()
    loader = RecordingBatches(batches, namespace)
    # the parameters cell, the imports cell, then the hand-written epoch on the fixed batches
    for cell in (code[0], code[1]):
        exec(compile(cell.source, f"04_residual_mlp:{cell.id}", "exec"), namespace)
    namespace["loaders"] = SimpleNamespace(train=loader)
    exec(compile(tagged[0].source, f"04_residual_mlp:{tagged[0].id}", "exec"), namespace)
    assert loader.start is not None, "the tagged cell never iterated over loaders.train"
    return namespace["model"], loader.start, batches


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters()}


def differing(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    """Names of the parameters whose values are not bit-for-bit equal in ``a`` and ``b``."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return [name for name in wa if not torch.equal(wa[name], wb[name])]


def train_copy(start, batches, **kw):
    model, optimizer = copy.deepcopy(start)
    kw.setdefault("loss_fn", F.cross_entropy)
    result = train_one_epoch(model, batches, optimizer, device="cpu", **kw)
    return model, result


def test_the_copy_trains_its_own_parameters_and_the_epoch_moved_every_weight(by_hand):
    trained, start, _ = by_hand
    model, optimizer = copy.deepcopy(start)
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert params == {id(p) for p in model.parameters()}
    assert not params & {id(p) for p in start[0].parameters()}
    # one epoch of SGD changes every parameter, so equality below is not equality of untouched weights
    assert sorted(differing(trained, start[0])) == sorted(weights(trained))


def test_train_one_epoch_gives_exactly_the_weights_of_the_loop_written_by_hand(by_hand):
    trained, start, batches = by_hand
    model, (mean_loss, accuracy, global_step) = train_copy(start, batches)
    assert differing(model, trained) == []
    assert global_step == BATCHES
    assert mean_loss > 0 and 0.0 <= accuracy <= 1.0


@pytest.mark.parametrize(
    "change",
    [
        dict(loss_fn=lambda scores, y: F.cross_entropy(scores, y, reduction="sum")),  # a summed, not mean, loss
        dict(max_steps=BATCHES - 1),  # one batch short
    ],
    ids=["sum-reduction", "one-batch-short"],
)
def test_the_comparison_notices_a_loop_that_differs(by_hand, change):
    trained, start, batches = by_hand
    model, _ = train_copy(start, batches, **change)
    assert differing(model, trained) != []
