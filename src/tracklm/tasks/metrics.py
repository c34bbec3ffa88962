"""Metrics of the downstream tasks, as pure numpy functions (no torch).

Conventions: scores are "higher means more likely positive"; labels are 0/1; fractions are in
[0, 1]. An empty or one-class selection gives ``nan`` (written as ``null`` in JSON), never a
silent 0.
"""

from __future__ import annotations

import numpy as np


def _binary(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in shape: {scores.shape} vs {labels.shape}")
    return scores, labels.astype(bool)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N of ``values`` (N,), ties sharing the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Start index of each run of equal values, and the mean rank of the run.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = 0.5 * (starts + ends - 1) + 1.0
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random negative.

    Ties count one half (Mann-Whitney U statistic).

    Parameters
    ----------
    scores : (N,) scores, higher = more likely positive.
    labels : (N,) 0/1 or bool truth.

    Returns
    -------
    float in [0, 1]; ``nan`` when either class is empty.
    """
    scores, labels = _binary(scores, labels)
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


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
    scores, labels = _binary(scores, labels)
    negatives = np.sort(scores[~labels])[::-1]
    positives = scores[labels]
    if negatives.size == 0 or positives.size == 0:
        return float("nan")
    allowed = int(np.floor(fpr * negatives.size + 1e-9))
    threshold = negatives[allowed] if allowed < negatives.size else -np.inf
    return float(np.mean(positives > threshold))


def accuracy(predicted: np.ndarray, true: np.ndarray) -> float:
    """Fraction of predictions equal to the truth (``nan`` when empty)."""
    predicted = np.asarray(predicted).reshape(-1)
    true = np.asarray(true).reshape(-1)
    if predicted.shape != true.shape:
        raise ValueError(f"shapes differ: {predicted.shape} vs {true.shape}")
    return float(np.mean(predicted == true)) if true.size else float("nan")


def top_k_accuracy(ranked: np.ndarray, true: np.ndarray) -> float:
    """Fraction of rows whose truth is among the ranked candidates (N, k) (``nan`` when empty)."""
    ranked = np.asarray(ranked)
    true = np.asarray(true)
    if true.size == 0:
        return float("nan")
    return float(np.mean(np.any(ranked == true[:, None], axis=1)))


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
