"""Greedy ambiguity resolution: the best candidates keep their hits, the rest what is left.

Candidates overlap: several seeds of one particle grow into copies of one track, and fakes share
hits with real tracks. Candidates are taken in decreasing quality (more hits first, then a smaller
chi2 per hit, or the model's score); each keeps the hits no better candidate took, and is dropped
when too few are left or when more than ``max_shared_fraction`` of its hits were taken.
"""

from __future__ import annotations

import numpy as np


def track_quality(n_hits: np.ndarray, chi2: np.ndarray, chi2_weight: float) -> np.ndarray:
    """(N,) quality of candidates: hit count minus ``chi2_weight`` times the chi2 per hit."""
    result: np.ndarray = n_hits - chi2_weight * chi2 / np.maximum(n_hits, 1)
    return result


def resolve_greedy(
    hits: np.ndarray,
    n_hits: np.ndarray,
    quality: np.ndarray,
    taken: np.ndarray,
    min_hits: int,
    max_shared_fraction: float,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Accept candidates in decreasing quality, each with the hits still free.

    Parameters
    ----------
    hits : (N, H) int64 hit indices per candidate, -1 padded.
    n_hits : (N,) hits per candidate.
    quality : (N,) larger is better; -inf drops a candidate.
    taken : (E,) bool, hits of the event already in a track; updated in place.
    min_hits : fewest free hits an accepted track keeps.
    max_shared_fraction : drop a candidate when more than this fraction of its hits are taken.

    Returns
    -------
    The accepted candidates' indices (best first) and their tracks, each an int64 array of the
    hit indices it keeps.
    """
    order = np.argsort(-quality, kind="stable")
    order = order[(n_hits[order] >= min_hits) & (quality[order] > -np.inf)]
    rows = hits[order].tolist()
    counts = n_hits[order].tolist()
    used = bytearray(taken.astype(np.uint8).tobytes())
    accepted: list[list[int]] = []
    chosen: list[int] = []
    for candidate, row, count in zip(order.tolist(), rows, counts):
        free = [h for h in row[:count] if not used[h]]
        if len(free) < min_hits or len(free) < (1.0 - max_shared_fraction) * count:
            continue
        for h in free:
            used[h] = 1
        accepted.append(free)
        chosen.append(candidate)
    taken[:] = np.frombuffer(bytes(used), dtype=np.uint8).astype(bool)
    return np.asarray(chosen, dtype=np.int64), [
        np.asarray(track, dtype=np.int64) for track in accepted
    ]
