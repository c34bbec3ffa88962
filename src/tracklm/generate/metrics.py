"""How well completed tracks match the true ones (the conditional judgement of ``tracklm generate``).

Every figure compares a completion with the true track it was seeded from, hit by hit after the
K seeds: step j is hit K + j of the true track. Pure numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def conditional_metrics(
    tokens: np.ndarray,
    lengths: np.ndarray,
    true_tokens: np.ndarray,
    true_lengths: np.ndarray,
    seed_hits: int,
    centres_mm: np.ndarray,
) -> dict[str, Any]:
    """Completion figures of N tracks.

    Parameters
    ----------
    tokens, lengths : (N, L) completed tracks (seeds included, ``[PAD]`` after) and (N,) lengths.
    true_tokens, true_lengths : (N, L') and (N,) the true tracks.
    seed_hits : K, the seeds each completion started from.
    centres_mm : (V, 3) module centre of every token id (NaN for special tokens).

    Returns
    -------
    dict with ``tracks``; ``seed_hits``; ``exact_completion`` (every module right, and the right
    length); ``step_accuracy`` (list by step j: of the tracks whose true track has hit K + j, the
    fraction whose completion has the same module there), with ``step_tracks`` (how many);
    ``generated_hits_accuracy`` (all steps pooled); ``length_error`` (``mean`` of completed minus
    true length, ``mean_abs``, ``exact``: the fraction of the right length); ``distance_mm`` (by
    step, the median distance between the completed and the true module's centre where both
    exist).
    """
    n = len(lengths)
    width = max(tokens.shape[1], true_tokens.shape[1])
    got = _pad(np.asarray(tokens, dtype=np.int64), width)
    true = _pad(np.asarray(true_tokens, dtype=np.int64), width)
    lengths = np.asarray(lengths, dtype=np.int64)
    true_lengths = np.asarray(true_lengths, dtype=np.int64)
    position = np.arange(width)[None, :]
    in_true = position < true_lengths[:, None]
    in_got = position < lengths[:, None]
    same = (got == true) & in_true & in_got
    exact = (lengths == true_lengths) & np.all(same | ~in_true, axis=1)
    steps = range(seed_hits, int(true_lengths.max(initial=seed_hits)))
    step_accuracy, step_tracks, distance = [], [], []
    for j in steps:
        asked = in_true[:, j]
        step_tracks.append(int(asked.sum()))
        step_accuracy.append(float(same[asked, j].mean()) if asked.any() else float("nan"))
        both = asked & in_got[:, j]
        gap = np.linalg.norm(centres_mm[got[both, j]] - centres_mm[true[both, j]], axis=1)
        distance.append(float(np.median(gap)) if gap.size else float("nan"))
    generated = in_true & (position >= seed_hits)
    length_gap = lengths - true_lengths
    return {
        "tracks": n,
        "seed_hits": seed_hits,
        "exact_completion": float(exact.mean()) if n else float("nan"),
        "step_accuracy": step_accuracy,
        "step_tracks": step_tracks,
        "generated_hits_accuracy": float(same[generated].mean())
        if generated.any()
        else float("nan"),
        "length_error": {
            "mean": float(length_gap.mean()) if n else float("nan"),
            "mean_abs": float(np.abs(length_gap).mean()) if n else float("nan"),
            "exact": float((length_gap == 0).mean()) if n else float("nan"),
        },
        "distance_mm": distance,
    }


def _pad(tokens: np.ndarray, width: int) -> np.ndarray:
    if tokens.shape[1] >= width:
        return tokens
    out = np.zeros((tokens.shape[0], width), dtype=tokens.dtype)
    out[:, : tokens.shape[1]] = tokens
    return out
