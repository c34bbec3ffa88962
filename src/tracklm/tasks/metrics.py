"""Metrics that only the downstream tasks use, as pure numpy functions (no torch).

Accuracy, top-k accuracy, ranks and ROC AUC are shared with ``tracklm evaluate`` and live in
``tracklm/evaluate/metrics.py``; the functions here build on them.

Conventions: scores are "higher means more likely positive"; labels are 0/1; fractions are in
[0, 1]. An empty or one-class selection gives ``nan`` (written as ``null`` in JSON), never a
silent 0.
"""

from __future__ import annotations

import numpy as np

from tracklm.evaluate.metrics import binary_scores, roc_auc


def efficiency_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """Fraction of positives selected by the strictest cut that keeps at most ``fpr`` of negatives.

    The cut is ``score > t`` with t the ``floor(fpr * n_neg) + 1``-th highest negative score, so
    at most ``floor(fpr * n_neg)`` negatives pass (ties at t never pass).

    Parameters
    ----------
    scores : (N,) scores, higher = more likely positive.
    labels : (N,) 0/1 or bool truth.
    fpr : allowed false-positive rate in [0, 1].

    Returns
    -------
    float in [0, 1]; ``nan`` when either class is empty.
    """
    scores, labels = binary_scores(scores, labels)
    negatives = np.sort(scores[~labels])[::-1]
    positives = scores[labels]
    if negatives.size == 0 or positives.size == 0:
        return float("nan")
    allowed = int(np.floor(fpr * negatives.size + 1e-9))
    threshold = negatives[allowed] if allowed < negatives.size else -np.inf
    return float(np.mean(positives > threshold))


def relative_resolution(predicted: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Spread of the relative error ``(predicted - true) / true`` (e.g. of pT).

    Parameters
    ----------
    predicted, true : (N,) positive quantities in the same unit (GeV for pT).

    Returns
    -------
    dict with ``sigma68`` (half the width of the central 68.27% interval, robust to tails),
    ``std`` (standard deviation), ``bias`` (median), all dimensionless; ``nan`` when empty.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if true.size == 0:
        return {"sigma68": float("nan"), "std": float("nan"), "bias": float("nan")}
    relative = (predicted - true) / true
    lo, hi = np.quantile(relative, [0.5 - 0.6827 / 2, 0.5 + 0.6827 / 2])
    return {
        "sigma68": float(0.5 * (hi - lo)),
        "std": float(np.std(relative)),
        "bias": float(np.median(relative)),
    }


def detection_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUC and efficiency at 1% and 5% false-positive rate of a track-level detector."""
    return {
        "auc": roc_auc(scores, labels),
        "efficiency_at_fpr_1pct": efficiency_at_fpr(scores, labels, 0.01),
        "efficiency_at_fpr_5pct": efficiency_at_fpr(scores, labels, 0.05),
    }
