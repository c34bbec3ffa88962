"""Counting tables of symbols (modules or layers) given their neighbours along tracks.

What the baselines of ``tracklm.evaluate.baselines`` count on the training split: the most
frequent symbols for each context of neighbouring visible symbols (``ContextModel``, over
``TopKTable``s), and the helpers that find those neighbours around a hidden hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

_PACK = np.int64(1 << 21)  # token ids and layer indices stay far below 2**21


@dataclass
class TopKTable:
    """For each context key, the ``k`` most frequent targets (most frequent first, ties by id).

    Attributes
    ----------
    keys : (U,) sorted int64 context keys.
    top : (U, k) int64 targets, -1 where a key has fewer than k distinct targets.
    """

    keys: np.ndarray
    top: np.ndarray

    @classmethod
    def count(cls, keys: np.ndarray, targets: np.ndarray, k: int) -> TopKTable:
        """Count (key, target) occurrences, vectorized (pandas groupby), and keep the top ``k``."""
        frame = pd.DataFrame(
            {"key": np.asarray(keys, np.int64), "target": np.asarray(targets, np.int64)}
        )
        counts = frame.groupby(["key", "target"], sort=False).size().reset_index(name="n")
        counts = counts.sort_values(["key", "n", "target"], ascending=[True, False, True])
        counts["rank"] = counts.groupby("key", sort=False).cumcount()
        counts = counts[counts["rank"] < k]
        unique_keys = np.unique(counts["key"].to_numpy())
        top = np.full((len(unique_keys), k), -1, dtype=np.int64)
        row = np.searchsorted(unique_keys, counts["key"].to_numpy())
        top[row, counts["rank"].to_numpy()] = counts["target"].to_numpy()
        return cls(keys=unique_keys, top=top)

    def lookup(self, keys: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """(N, k) top targets of each key; rows with an unknown (or invalid) key are all -1."""
        keys = np.asarray(keys, dtype=np.int64)
        k = self.top.shape[1]
        if len(self.keys) == 0:
            return np.full((len(keys), k), -1, dtype=np.int64)
        index = np.clip(np.searchsorted(self.keys, keys), 0, len(self.keys) - 1)
        found = self.keys[index] == keys
        if valid is not None:
            found &= valid
        return np.where(found[:, None], self.top[index], -1)


def neighbours(
    tokens: np.ndarray, visible: np.ndarray, target: np.ndarray
) -> dict[str, np.ndarray]:
    """The nearest visible hit indices around each target hit.

    Parameters
    ----------
    tokens : (N, L) any per-hit values (only the shape is used).
    visible : (N, L) bool, hits that may be used (padding must be False).
    target : (N,) index of the hidden hit.

    Returns
    -------
    dict of (N,) int64 hit indices ``prev1, prev2`` (nearest first before the target) and
    ``next1, next2`` (after it), -1 where there is none.
    """
    n, width = np.asarray(tokens).shape[:2]
    index = np.broadcast_to(np.arange(width), (n, width))
    target = np.asarray(target)[:, None]
    before = np.where(visible & (index < target), index, -1)
    prev1 = before.max(axis=1)
    prev2 = np.where(before < prev1[:, None], before, -1).max(axis=1)
    after = np.where(visible & (index > target), index, width)
    next1 = after.min(axis=1)
    next2 = np.where(after > next1[:, None], after, width).min(axis=1)
    next1 = np.where(next1 == width, -1, next1)
    next2 = np.where(next2 == width, -1, next2)
    return {"prev1": prev1, "prev2": prev2, "next1": next1, "next2": next2}


def at_index(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[row, index[row]], -1 where index is -1."""
    picked = np.take_along_axis(values, np.clip(index, 0, None)[:, None], axis=1)[:, 0]
    return np.where(index >= 0, picked, -1).astype(np.int64)


def merge_candidates(columns: list[np.ndarray], exclude: np.ndarray, k: int) -> np.ndarray:
    """Concatenate candidate lists in priority order, drop -1, repeats and excluded ids, keep k."""
    cand = np.concatenate(columns, axis=1)
    bad = cand < 0
    bad |= np.any(cand[:, :, None] == exclude[:, None, :], axis=2)
    for j in range(1, cand.shape[1]):
        bad[:, j] |= np.any(cand[:, :j] == cand[:, j : j + 1], axis=1)
    order = np.argsort(bad, axis=1, kind="stable")
    cand = np.take_along_axis(np.where(bad, -1, cand), order, axis=1)
    out = np.full((len(cand), k), -1, dtype=np.int64)
    width = min(k, cand.shape[1])
    out[:, :width] = cand[:, :width]
    return out


class ContextModel:
    """Most frequent symbols (modules or layers) given neighbouring symbols, counted on tracks.

    Tables (all over every hit of every training track, flight order):
    ``between`` (previous, next) -> hit, ``before2`` (next, next-but-one) -> hit,
    ``after2`` (previous-but-one, previous) -> hit, ``after1`` previous -> hit,
    ``before1`` next -> hit, and the overall frequency.
    """

    def __init__(self, symbols: np.ndarray, lengths: np.ndarray, k: int = 5) -> None:
        symbols = np.asarray(symbols, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        width = symbols.shape[1]
        pos = np.arange(width)[None, :]
        real = pos < lengths[:, None]
        self.k = k

        def shifted(offset: int) -> tuple[np.ndarray, np.ndarray]:
            values = np.full_like(symbols, -1)
            ok = np.zeros_like(real)
            if offset > 0:
                values[:, :-offset] = symbols[:, offset:]
                ok[:, :-offset] = real[:, offset:]
            else:
                values[:, -offset:] = symbols[:, :offset]
                ok[:, -offset:] = real[:, :offset]
            return values, ok & real

        prev1, ok_p1 = shifted(-1)
        prev2, ok_p2 = shifted(-2)
        next1, ok_n1 = shifted(1)
        next2, ok_n2 = shifted(2)
        target = symbols

        def table(key: np.ndarray, ok: np.ndarray) -> TopKTable:
            return TopKTable.count(key[ok], target[ok], k)

        self.between = table(prev1 * _PACK + next1, ok_p1 & ok_n1)
        self.after2 = table(prev2 * _PACK + prev1, ok_p2)
        self.before2 = table(next1 * _PACK + next2, ok_n2)
        self.after1 = table(prev1, ok_p1)
        self.before1 = table(next1, ok_n1)
        values, counts = np.unique(target[real], return_counts=True)
        order = np.lexsort((values, -counts))[:k]
        overall = np.full(k, -1, dtype=np.int64)
        overall[: len(order)] = values[order]
        self.overall = overall

    def rank(
        self, symbols: np.ndarray, visible: np.ndarray, target: np.ndarray, exclude: np.ndarray
    ) -> np.ndarray:
        """(N, k) candidate symbols for each target hit, most likely first, -1 when none.

        Parameters
        ----------
        symbols : (N, L) symbols of the tracks (values at hidden hits are ignored).
        visible : (N, L) bool, the hits that may be used.
        target : (N,) hidden hit index.
        exclude : (N, E) symbols never to propose (-1 entries are ignored).
        """
        symbols = np.asarray(symbols, dtype=np.int64)
        near = neighbours(symbols, visible, target)
        p1, p2 = at_index(symbols, near["prev1"]), at_index(symbols, near["prev2"])
        n1, n2 = at_index(symbols, near["next1"]), at_index(symbols, near["next2"])
        has_p1, has_p2, has_n1, has_n2 = p1 >= 0, p2 >= 0, n1 >= 0, n2 >= 0
        inside = has_p1 & has_n1
        columns = [
            self.between.lookup(p1 * _PACK + n1, inside),
            # a first hit: the two following; a last hit: the two preceding
            self.before2.lookup(n1 * _PACK + n2, ~has_p1 & has_n2),
            self.after2.lookup(p2 * _PACK + p1, ~has_n1 & has_p2),
            self.after1.lookup(p1, has_p1),
            self.before1.lookup(n1, has_n1),
            np.broadcast_to(self.overall, (len(target), self.k)),
        ]
        return merge_candidates(columns, exclude, self.k)


def visible_tokens(tokens: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(N, L) tokens of the visible hits, -1 elsewhere (for excluding already-used modules)."""
    return np.where(visible, np.asarray(tokens, dtype=np.int64), -1)


def row_keys(rows: np.ndarray) -> np.ndarray:
    """(M,) int64 keys, equal exactly where two rows of an (M, c) matrix of token ids are equal.

    Ids below 2**13 are packed 13 bits each: the first four into 52 bits, then three at a time
    beside the number (in order of appearance, fewer than 2**24 rows) of the key so far. Other
    matrices are numbered by ``numpy.unique``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 2:
        raise ValueError("row_keys expects an (M, c) matrix")
    if rows.size and (rows.min() < 0 or rows.max() >= 1 << 13 or len(rows) >= 1 << 24):
        return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)

    def packed(part: np.ndarray) -> np.ndarray:
        key = np.zeros(len(part), dtype=np.int64)
        for c in range(part.shape[1]):
            key = (key << 13) | part[:, c]
        return key

    key = packed(rows[:, :4])
    for start in range(4, rows.shape[1], 3):
        number = pd.factorize(key)[0].astype(np.int64)
        key = (number << 39) | packed(rows[:, start : start + 3])
    return key
