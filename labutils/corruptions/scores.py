"""Summary scores of robustness: corruption errors, mCE, relative mCE and mean corruption accuracy.

Hendrycks & Dietterich (2019) normalise each corruption's errors by a baseline model's, so that hard
corruptions do not dominate the mean. Every function takes ``{corruption: [value at each severity]}`` mappings
of top-1 error rates (or accuracies) in [0, 1] and returns plain floats (x100 for the paper's percentages).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _per_corruption(errors: Mapping[str, Sequence[float]], what: str) -> dict[str, np.ndarray]:
    out = {}
    for name, values in errors.items():
        v = np.asarray(values, np.float64)
        if v.ndim != 1 or len(v) == 0 or not np.all(np.isfinite(v)):
            raise ValueError(
                f"{what}[{name!r}] must be a non-empty list of finite numbers per severity, got {values!r}."
            )
        out[name] = v
    if not out:
        raise ValueError(f"{what} is empty: give one list of per-severity numbers per corruption.")
    return out


def _matched(errors, baseline_errors):
    e = _per_corruption(errors, "errors")
    b = _per_corruption(baseline_errors, "baseline_errors")
    missing = sorted(set(e) - set(b))
    if missing:
        raise ValueError(
            f"baseline_errors has no entry for {', '.join(missing)}: give the baseline on every corruption."
        )
    for name in e:
        if len(e[name]) != len(b[name]):
            raise ValueError(
                f"{name!r}: {len(e[name])} severities in errors but {len(b[name])} in baseline_errors: they must match."
            )
    return e, b


def corruption_errors(errors, baseline_errors) -> dict[str, float]:
    """CE_c = sum_s E_{s,c} / sum_s E^baseline_{s,c} per corruption (Hendrycks & Dietterich 2019).

    ``errors`` and ``baseline_errors`` map corruption name -> top-1 error rates per severity (same units).
    """
    e, b = _matched(errors, baseline_errors)
    out = {}
    for name in e:
        denom = b[name].sum()
        if denom <= 0:
            raise ValueError(f"The baseline's errors on {name!r} sum to {denom}: CE needs a positive baseline error.")
        out[name] = float(e[name].sum() / denom)
    return out


def mean_corruption_error(errors, baseline_errors) -> float:
    """mCE: the mean over corruptions of CE_c (1.0 = as robust as the baseline; x100 for the paper's %)."""
    return float(np.mean(list(corruption_errors(errors, baseline_errors).values())))


def relative_mce(errors, clean_error: float, baseline_errors, baseline_clean_error: float) -> float:
    """Relative mCE: mean over c of sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} - E^base_clean).

    It measures how much accuracy a model loses under corruption, relative to the baseline's loss.
    """
    e, b = _matched(errors, baseline_errors)
    ratios = []
    for name in e:
        denom = float((b[name] - baseline_clean_error).sum())
        if denom <= 0:
            raise ValueError(
                f"The baseline loses no accuracy on {name!r} (sum of E - E_clean = {denom:.4g}): "
                "relative CE is undefined."
            )
        ratios.append(float((e[name] - clean_error).sum()) / denom)
    return float(np.mean(ratios))


def mean_corruption_accuracy(accuracies: Mapping[str, Sequence[float]]) -> float:
    """The mean of the accuracies over every corruption and severity given."""
    acc = _per_corruption(accuracies, "accuracies")
    return float(np.mean(np.concatenate(list(acc.values()))))
