"""Metrics that only the downstream tasks use, as pure numpy functions (no torch).

Accuracy, top-k accuracy, ranks and ROC AUC are shared with ``tracklm evaluate`` and live in
``tracklm/evaluate/metrics.py``; the functions here build on them.

Conventions: scores are "higher means more likely positive"; labels are 0/1; fractions are in
[0, 1]. An empty or one-class selection gives ``nan`` (written as ``null`` in JSON), never a
silent 0.
"""

from __future__ import annotations

import numpy as np

from tracklm.evaluate.metrics import average_ranks, binary_scores, roc_auc


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


def spearman_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation: the Pearson correlation of the ranks (ties averaged).

    Parameters
    ----------
    a, b : (N,) real numbers, paired by index (e.g. predicted and true pT in GeV).

    Returns
    -------
    float in [-1, 1]; ``nan`` with fewer than 2 pairs or when either side is constant.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size < 2:
        return float("nan")
    ra = average_ranks(a) - 0.5 * (a.size + 1)
    rb = average_ranks(b) - 0.5 * (b.size + 1)
    norm = np.sqrt(np.sum(ra**2) * np.sum(rb**2))
    return float(np.sum(ra * rb) / norm) if norm > 0 else float("nan")


def relative_resolution(predicted: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Spread, bias and ordering of the relative error ``(predicted - true) / true`` (e.g. of pT).

    ``sigma68`` measures the width around the median only, so a predictor that is 80% low on
    every track has ``sigma68`` 0; ``q68_abs`` counts the bias too.

    Parameters
    ----------
    predicted, true : (N,) positive quantities in the same unit (GeV for pT).

    Returns
    -------
    dict with ``sigma68`` (half the width of the central 68.27% interval, robust to tails),
    ``std`` (standard deviation), ``bias`` (median), ``q68_abs`` (68.27% quantile of the absolute
    relative error, bias included), all dimensionless, and ``spearman`` (rank correlation of
    predicted and true values); ``nan`` when empty.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if true.size == 0:
        keys = ("sigma68", "std", "bias", "q68_abs", "spearman")
        return dict.fromkeys(keys, float("nan"))
    relative = (predicted - true) / true
    lo, hi = np.quantile(relative, [0.5 - 0.6827 / 2, 0.5 + 0.6827 / 2])
    return {
        "sigma68": float(0.5 * (hi - lo)),
        "std": float(np.std(relative)),
        "bias": float(np.median(relative)),
        "q68_abs": float(np.quantile(np.abs(relative), 0.6827)),
        "spearman": spearman_correlation(predicted, true),
    }


def detection_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUC and efficiency at 1% and 5% false-positive rate of a track-level detector."""
    return {
        "auc": roc_auc(scores, labels),
        "efficiency_at_fpr_1pct": efficiency_at_fpr(scores, labels, 0.01),
        "efficiency_at_fpr_5pct": efficiency_at_fpr(scores, labels, 0.05),
    }
