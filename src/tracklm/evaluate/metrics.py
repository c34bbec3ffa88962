"""Metrics as pure numpy functions (no torch), each tested on hand-computed cases.

The one home of the metrics shared by ``tracklm evaluate`` and the downstream tasks
(``tracklm.tasks``): accuracy, top-k accuracy, ranks and ROC AUC, module distances, and the
conversion of results to plain JSON (``json_ready``). Task-only metrics live in
``tracklm/tasks/metrics.py`` and build on these.

Conventions: predictions and truths are token ids (or any labels); scores are "higher means more
likely positive"; fractions are in [0, 1]; distances in mm. An empty (or, for ROC AUC, one-class)
selection gives ``nan`` (written as ``null`` in JSON), never a silent 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

POSITION_NAMES = ("first", "middle", "last")


def exact_accuracy(predicted: np.ndarray, true: np.ndarray) -> float:
    """Fraction of predictions equal to the truth.

    Parameters
    ----------
    predicted, true : (N,) token ids or labels (any shape is flattened; both must agree).

    Returns
    -------
    float in [0, 1], ``nan`` when N = 0.
    """
    predicted = np.asarray(predicted).reshape(-1)
    true = np.asarray(true).reshape(-1)
    if predicted.shape != true.shape:
        raise ValueError(f"shapes differ: {predicted.shape} vs {true.shape}")
    if true.size == 0:
        return float("nan")
    return float(np.mean(predicted == true))


def top_k_hits(ranked: np.ndarray, true: np.ndarray, k: int) -> np.ndarray:
    """Whether the truth is among the first ``k`` ranked candidates.

    Parameters
    ----------
    ranked : (N, K) candidate token ids, best first (K >= k); -1 marks "no candidate".
    true : (N,) token ids.
    k : number of candidates that count.

    Returns
    -------
    (N,) bool.
    """
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.shape[1] < k:
        raise ValueError(f"need (N, K >= {k}) ranked candidates, got shape {ranked.shape}")
    return np.any(ranked[:, :k] == np.asarray(true)[:, None], axis=1)


def top_k_accuracy(ranked: np.ndarray, true: np.ndarray, k: int = 5) -> float:
    """Fraction of rows whose truth is among the first ``k`` candidates (``nan`` when empty)."""
    hits = top_k_hits(ranked, true, k)
    return float(np.mean(hits)) if hits.size else float("nan")


def top_k_from_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores per row, best first (ties: lower index first).

    Parameters
    ----------
    scores : (N, C) scores.
    k : number of indices (k <= C).

    Returns
    -------
    (N, k) int64 column indices.
    """
    scores = np.asarray(scores)
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k].astype(np.int64)


def module_distance_mm(
    predicted: np.ndarray, true: np.ndarray, centres_mm: np.ndarray
) -> np.ndarray:
    """Distance in mm between the centres of the predicted and the true modules.

    Parameters
    ----------
    predicted, true : (N,) token ids; a prediction that is not a module (negative id or a
        special token, whose centre is NaN) gives ``inf``.
    centres_mm : (V, 3) module centre of every token id (NaN for special tokens).

    Returns
    -------
    (N,) float64 distances in mm.
    """
    predicted = np.asarray(predicted, dtype=np.int64)
    true = np.asarray(true, dtype=np.int64)
    centres_mm = np.asarray(centres_mm, dtype=np.float64)
    valid = (predicted >= 0) & (predicted < len(centres_mm))
    p = centres_mm[np.where(valid, predicted, 0)]
    t = centres_mm[true]
    distance = np.linalg.norm(p - t, axis=-1)
    return np.where(valid & np.isfinite(distance), distance, np.inf)


def fraction_within(distances_mm: np.ndarray, threshold_mm: float) -> float:
    """Fraction of distances at most ``threshold_mm`` (``nan`` when empty)."""
    distances_mm = np.asarray(distances_mm, dtype=np.float64)
    if distances_mm.size == 0:
        return float("nan")
    return float(np.mean(distances_mm <= threshold_mm))


def median_distance_mm(distances_mm: np.ndarray) -> float:
    """Median distance in mm (``inf`` entries count as large; ``nan`` when empty)."""
    distances_mm = np.asarray(distances_mm, dtype=np.float64)
    return float(np.median(distances_mm)) if distances_mm.size else float("nan")


def mean_distance_mm(distances_mm: np.ndarray) -> float:
    """Mean distance in mm of the finite entries (``inf``: no prediction, left out; they count in
    the accuracy and the fractions within a distance); ``nan`` when none is finite."""
    distances_mm = np.asarray(distances_mm, dtype=np.float64)
    finite = distances_mm[np.isfinite(distances_mm)]
    return float(np.mean(finite)) if finite.size else float("nan")


def quantile_distance_mm(distances_mm: np.ndarray, q: float) -> float:
    """The ``q`` quantile (0..1) of distances in mm (``inf`` and ``nan`` entries count as large;
    ``nan`` when empty)."""
    distances_mm = np.asarray(distances_mm, dtype=np.float64).ravel()
    if distances_mm.size == 0:
        return float("nan")
    # numpy's linear interpolation, written out: numpy's own gives nan next to an inf
    ordered = np.sort(np.where(np.isnan(distances_mm), np.inf, distances_mm))
    h = q * (ordered.size - 1)
    lo, hi = ordered[int(np.floor(h))], ordered[int(np.ceil(h))]
    if not np.isfinite(hi):
        return float(hi if h > np.floor(h) else lo)
    return float(lo + (h - np.floor(h)) * (hi - lo))


def position_summary(distances_mm: np.ndarray) -> dict[str, float]:
    """Median and 68% and 95% quantiles of position errors (``position_mm`` in ``metrics.json``).

    Parameters
    ----------
    distances_mm : (N,) distance in mm between a predicted position (e.g. a helix's crossing of
        the predicted module) and the true hit; ``inf``/``nan`` (no position) count as large.

    Returns
    -------
    dict ``median``, ``q68``, ``q95`` in mm (``nan`` when empty).
    """
    return {
        "median": quantile_distance_mm(distances_mm, 0.5),
        "q68": quantile_distance_mm(distances_mm, 0.68),
        "q95": quantile_distance_mm(distances_mm, 0.95),
    }


def grouped_mean(values: np.ndarray, groups: np.ndarray, keys: Iterable[Any]) -> dict[str, float]:
    """Mean of ``values`` within each group, for the given group keys (``nan`` for empty groups).

    Parameters
    ----------
    values : (N,) numbers or booleans (the mean of booleans is an accuracy).
    groups : (N,) group label of every entry.
    keys : the groups to report, in order; keys are written as strings.

    Returns
    -------
    dict mapping ``str(key)`` to the group's mean.
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    out = {}
    for key in keys:
        selected = values[groups == key]
        out[str(key)] = float(selected.mean()) if selected.size else float("nan")
    return out


def position_names(positions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Name the place of a hit in its track: ``first`` (index 0), ``last`` (length - 1), else ``middle``.

    Parameters
    ----------
    positions : (N,) hit index in the track.
    lengths : (N,) number of hits of the track.

    Returns
    -------
    (N,) array of str.
    """
    positions = np.asarray(positions)
    lengths = np.asarray(lengths)
    return np.where(positions == 0, "first", np.where(positions == lengths - 1, "last", "middle"))


def binary_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows where ``logit > 0`` agrees with the 0/1 label (``nan`` when empty)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    return float(np.mean((logits > 0) == labels)) if labels.size else float("nan")


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N of ``values`` (N,), ties sharing the mean of the ranks they span.

    Parameters
    ----------
    values : (N,) real numbers.

    Returns
    -------
    (N,) float64 ranks, 1 for the smallest value.
    """
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


def binary_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores and 0/1 labels as flat (N,) float64 and bool arrays of the same shape.

    Raises
    ------
    ValueError
        When the two hold different numbers of entries.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in shape: {scores.shape} vs {labels.shape}")
    return scores, labels.astype(bool)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve, with tied scores counted as one half (Mann-Whitney U).

    AUC = P(score of a random positive > score of a random negative) + 0.5 P(equal).

    Parameters
    ----------
    scores : (N,) real scores, larger = more positive.
    labels : (N,) 0/1 or bool.

    Returns
    -------
    float in [0, 1]; ``nan`` when either class is absent.
    """
    scores, labels = binary_scores(scores, labels)
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    u = average_ranks(scores)[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates over all thresholds, one point per distinct score.

    Tied scores move the curve diagonally, so the trapezoidal area equals ``roc_auc``.

    Parameters
    ----------
    scores : (N,) real scores.
    labels : (N,) 0/1 or bool; both classes must be present.

    Returns
    -------
    fpr, tpr : (M + 1,) arrays from (0, 0) to (1, 1), M the number of distinct scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_pos = labels.sum()
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_curve needs both positive and negative labels")
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    y = labels[order]
    last_of_block = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp = np.cumsum(y)[last_of_block]
    fp = np.cumsum(~y)[last_of_block]
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def masked_module_summary(
    predicted: np.ndarray,
    true: np.ndarray,
    distances_mm: np.ndarray,
    position_name: np.ndarray,
    lengths: np.ndarray,
    ranked: np.ndarray | None = None,
    side: np.ndarray | None = None,
    length_keys: Iterable[int] = range(4, 9),
) -> dict[str, Any]:
    """The ``masked_module`` block of ``metrics.json`` (also used for every baseline).

    Parameters
    ----------
    predicted, true : (N,) token ids of the predicted and the true module.
    distances_mm : (N,) distance between their centres in mm.
    position_name : (N,) ``first`` / ``middle`` / ``last``.
    lengths : (N,) number of hits of the track the masked hit belongs to.
    ranked : (N, K >= 5) ranked candidates for top-5 accuracy, or None (key left out).
    side : (N,) ``A`` / ``B`` (which track of the pair was masked), or None (key left out).
    length_keys : the track lengths reported under ``by_length``.

    Returns
    -------
    dict with accuracy, top5_accuracy, within_20mm, within_100mm, median_distance_mm,
    mean_distance_mm, q90_distance_mm, by_position, by_length, by_track and n_predictions.
    """
    correct = np.asarray(predicted) == np.asarray(true)
    summary: dict[str, Any] = {"accuracy": exact_accuracy(predicted, true)}
    if ranked is not None:
        summary["top5_accuracy"] = top_k_accuracy(ranked, true, 5)
    summary["within_20mm"] = fraction_within(distances_mm, 20.0)
    summary["within_100mm"] = fraction_within(distances_mm, 100.0)
    summary["median_distance_mm"] = median_distance_mm(distances_mm)
    summary["mean_distance_mm"] = mean_distance_mm(distances_mm)
    summary["q90_distance_mm"] = quantile_distance_mm(distances_mm, 0.9)
    summary["by_position"] = grouped_mean(correct, position_name, POSITION_NAMES)
    summary["by_length"] = grouped_mean(correct, lengths, length_keys)
    if side is not None:
        summary["by_track"] = grouped_mean(correct, side, ("A", "B"))
    summary["n_predictions"] = int(correct.size)
    return summary


def json_ready(obj: Any) -> Any:
    """Numbers and containers as plain JSON, recursively.

    Mappings become dicts with string keys, tuples become lists, numpy scalars become Python
    numbers, and ``nan``/``inf`` (not valid JSON) become None.
    """
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
