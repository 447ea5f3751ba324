"""Features from a trained network's penultimate layer, and classical classifiers on them.

The transfer lab's third strategy: freeze a backbone, read the input of its head for every image
(:func:`extract_features`), and fit a linear SVM or a k-nearest-neighbour classifier on those vectors
(:func:`svm_baseline`, :func:`knn_baseline`), scored by top-1 and top-5 accuracy like the networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from labutils.transfer import HEAD, stages
from labutils.util import check_int


@torch.no_grad()
def extract_features(model: nn.Module, loader, device=None, *, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The head's input for every sample of ``loader``: ``(features (N, D) float32, labels (N,) int64)``.

    Runs in evaluation mode without gradients, with a progress bar, on ``device`` (default: CUDA, then MPS,
    then CPU). The model's training mode is restored afterwards; the model stays on ``device``.
    """
    from tqdm.auto import tqdm

    from labutils import get_device

    device = torch.device(device) if device is not None else get_device()
    head = stages(model)[HEAD]
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda module, args, out: captured.append(args[0].detach().float().cpu()))
    was_training = model.training
    model.to(device).eval()
    labels = []
    try:
        for x, y in tqdm(loader, desc="features", leave=False, disable=not progress, dynamic_ncols=True):
            model(x.to(device))
            labels.append(torch.as_tensor(y).cpu())
    finally:
        hook.remove()
        model.train(was_training)
    if not captured:
        raise ValueError("The loader yielded no batches: there are no features to extract.")
    return torch.cat(captured).numpy().astype(np.float32), torch.cat(labels).numpy().astype(np.int64)


@dataclass(frozen=True)
class BaselineResult:
    """A classical classifier on extracted features: ``top1``/``top5`` on the test set in [0, 1] (``top5`` is
    top-min(5, K) as in :class:`labutils.train.Evaluation`), ``predictions`` (N,) int64."""

    method: str
    top1: float
    top5: float
    predictions: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "top1": self.top1, "top5": self.top5}


def check_features(train_x, train_y, test_x, test_y) -> None:
    for what, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if np.ndim(x) != 2 or np.ndim(y) != 1 or len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"{what} features must be (N, D) with (N,) labels, N >= 1; got {np.shape(x)} and {np.shape(y)}."
            )
    if np.shape(train_x)[1] != np.shape(test_x)[1]:
        raise ValueError(
            f"train features have {np.shape(train_x)[1]} dimensions but test features {np.shape(test_x)[1]}."
        )


def topk_accuracy(scores: np.ndarray, classes: np.ndarray, y: np.ndarray, k: int) -> float:
    """Share of rows whose true label ``y`` is among the ``k`` classes with the highest ``scores`` (N, K)."""
    if scores.ndim == 1:  # a binary decision function: the score of classes[1]
        scores = np.stack([-scores, scores], axis=1)
    top = classes[np.argsort(-scores, axis=1, kind="stable")[:, :k]]
    return float((top == y[:, None]).any(axis=1).mean())


def fit_and_score(method: str, estimator, train_x, train_y, test_x, test_y) -> BaselineResult:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    check_features(train_x, train_y, test_x, test_y)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    pipe = make_pipeline(StandardScaler(), estimator).fit(np.asarray(train_x, np.float64), train_y)
    test_x = np.asarray(test_x, np.float64)
    pred = pipe.predict(test_x)
    scores = pipe.decision_function(test_x) if hasattr(pipe, "decision_function") else pipe.predict_proba(test_x)
    k = min(5, len(np.union1d(train_y, test_y)))
    top5 = topk_accuracy(np.asarray(scores), pipe.classes_, test_y, k)
    return BaselineResult(method, float((pred == test_y).mean()), top5, pred.astype(np.int64))


def svm_baseline(train_feats, train_y, test_feats, test_y, *, C: float = 1.0, seed: int = 0) -> BaselineResult:
    """A linear SVM (scikit-learn's LinearSVC, one-vs-rest, squared hinge) on standardised features.

    Features (N, D) and labels (N,); ``C`` is the inverse regularisation strength. Top-5 ranks the
    classes by the decision function.
    """
    from sklearn.svm import LinearSVC

    if isinstance(C, bool) or not isinstance(C, (int, float)) or C <= 0:
        raise ValueError(f"C={C!r} is not possible: use a positive number.")
    svm = LinearSVC(C=C, dual="auto", max_iter=10_000, random_state=seed)
    return fit_and_score(f"linear SVM (C={C:g})", svm, train_feats, train_y, test_feats, test_y)


def knn_baseline(train_feats, train_y, test_feats, test_y, *, k: int = 5) -> BaselineResult:
    """k nearest neighbours (Euclidean, majority vote) on standardised features; top-5 ranks the classes by
    their share of the k votes (ties in arbitrary but fixed order)."""
    from sklearn.neighbors import KNeighborsClassifier

    check_int("k", k, 1)
    if k > len(train_y):
        raise ValueError(f"k={k} is not possible with {len(train_y)} training samples: use at most {len(train_y)}.")
    knn = KNeighborsClassifier(n_neighbors=k)
    return fit_and_score(f"{k}-NN", knn, train_feats, train_y, test_feats, test_y)


__all__ = ["extract_features", "BaselineResult", "svm_baseline", "knn_baseline", "topk_accuracy"]
