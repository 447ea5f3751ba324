"""Scratch losses against torch.nn.functional: values, gradients, and stability at extreme logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from labutils.scratch.losses import log_softmax, mse, softmax, softmax_cross_entropy


def _torch_ce(logits, labels):
    t = torch.tensor(logits, requires_grad=True)
    loss = TF.cross_entropy(t, torch.tensor(labels))
    loss.backward()
    return loss.item(), t.grad.numpy()


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4], ids=["unit", "large", "extreme"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_matches_torch(scale, dtype):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((8, 5)) * scale).astype(dtype)
    labels = rng.integers(0, 5, size=8)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # exp may underflow to 0: harmless
        loss, dlogits = softmax_cross_entropy(logits, labels)
    ref_loss, ref_grad = _torch_ce(logits, labels)
    assert np.isfinite(loss) and dlogits.dtype == dtype and dlogits.shape == logits.shape
    # float32 keeps ~7 significant digits of losses that reach ~1e4 at the extreme scale
    assert loss == pytest.approx(ref_loss, rel=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(dlogits, ref_grad, atol=1e-7 if dtype == np.float32 else 1e-15)


def test_softmax_cross_entropy_at_plus_minus_1e4():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]])
    labels = np.array([0, 1])
    loss, dlogits = softmax_cross_entropy(logits, labels)
    ref_loss, ref_grad = _torch_ce(logits, labels)
    # sample 0 is certain and right (loss 0), sample 1 certain and wrong (loss 2e4): mean 1e4
    assert loss == pytest.approx(1e4, rel=1e-12) and loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(dlogits, ref_grad, atol=1e-15)
    np.testing.assert_allclose(dlogits[1], [0.0, -0.5, 0.5], atol=1e-15)


def test_softmax_helpers_are_normalised_and_stable():
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    p = softmax(logits)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(log_softmax(logits), TF.log_softmax(torch.tensor(logits), dim=1).numpy(), atol=1e-12)


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n():
    logits = np.random.default_rng(1).standard_normal((4, 3))
    labels = np.array([2, 0, 1, 1])
    _, dlogits = softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(dlogits, (softmax(logits) - np.eye(3)[labels]) / 4, atol=1e-15)


def test_cross_entropy_rejects_bad_input():
    with pytest.raises(ValueError, match=r"floating \(N, C\) array; got shape \(4,\)"):
        softmax_cross_entropy(np.zeros(4), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match=r"integer array of shape \(2,\).*got shape \(3,\)"):
        softmax_cross_entropy(np.zeros((2, 3)), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="integer array.*dtype float64"):
        softmax_cross_entropy(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\] for 3 classes; got values in \[0, 3\]"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mse_matches_torch(dtype):
    rng = np.random.default_rng(2)
    pred, target = rng.standard_normal((6, 3)).astype(dtype), rng.standard_normal((6, 3)).astype(dtype)
    loss, dpred = mse(pred, target)
    t = torch.tensor(pred, requires_grad=True)
    ref = TF.mse_loss(t, torch.tensor(target))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-6 if dtype == np.float32 else 1e-12)
    assert dpred.dtype == dtype
    np.testing.assert_allclose(dpred, t.grad.numpy(), rtol=1e-6 if dtype == np.float32 else 1e-12)
    with pytest.raises(ValueError, match=r"same shape; got \(6, 3\) and \(6,\)"):
        mse(pred, target[:, 0])
