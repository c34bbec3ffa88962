"""Track pairs for pre-training: which track is A, which is B, and the pair-task label.

One call draws a whole epoch of pairs with numpy (sort by event, permute within events), so a
split of millions of tracks pairs in a fraction of a second. Pairs are re-drawn every epoch from a
generator seeded by ``(seed, epoch)``: the same seed and epoch always give the same pairs.

Pairing modes (``pairing``):

* ``"event"``: A and B come from the same collision event (the paper's "paragraph").
* ``"any"``: B is any other track of the split.
* ``"single"``: no B; inputs are ``[CLS] A [SEP]``.

Pair tasks (``pair_task``):

* ``"pt"`` (the paper's task): A and B in random order, label 1 where pT(B) > pT(A).
* ``"swap"`` (the public code's next-sentence-style task, for reproduction only): with probability
  one half B is replaced by a track of another event; label 1 where B was replaced.
* ``"none"``: no pair label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAIRINGS = ("event", "any", "single")
PAIR_TASKS = ("pt", "swap", "none")


@dataclass
class Pairs:
    """One epoch of pairs, as indices into a split's track arrays; P pairs.

    Attributes
    ----------
    index_a : (P,) int32 track index of track A (int64 from 2^31 tracks).
    index_b : (P,) the same for track B, or None in single-track mode.
    labels : (P,) float32 pair-task label (1.0 or 0.0), or None without a pair task.
    """

    index_a: np.ndarray
    index_b: np.ndarray | None
    labels: np.ndarray | None

    def __len__(self) -> int:
        return int(self.index_a.shape[0])

    def take(self, index: np.ndarray | slice) -> Pairs:
        """The pairs at ``index``."""
        return Pairs(
            index_a=self.index_a[index],
            index_b=None if self.index_b is None else self.index_b[index],
            labels=None if self.labels is None else self.labels[index],
        )


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """Generator for one (seed, epoch) and purpose ``stream``; independent across all three."""
    return np.random.default_rng([int(seed), int(epoch), int(stream)])


def _partners_within_groups(
    group: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Every member of a group paired with another member of the same group.

    Members are shuffled within their group and each is paired with the next one in that shuffled
    order (cyclically), so every track is A exactly once and B exactly once per epoch. Groups of a
    single track cannot pair and are left out.

    Parameters
    ----------
    group : (N,) integer group label of every track (e.g. its event id).
    rng : the random generator.

    Returns
    -------
    (index_a, index_b), each (P,) int32 (int64 from 2^31 tracks) with P the number of tracks in
    groups of two or more.
    """
    n = group.shape[0]
    index = _index_dtype(n)
    # A random permutation sorted stably by group: shuffled inside each group, groups contiguous.
    # (Arrays of 4-8 bytes per track, made one after another: training sets of tens of millions
    # of tracks pair in memory while their tokens stay memory-mapped.)
    order = rng.permutation(n).astype(index)
    order = order[np.argsort(group[order], kind="stable")]
    sorted_group = group[order]
    boundary = np.flatnonzero(sorted_group[1:] != sorted_group[:-1]) + 1
    del sorted_group
    starts, ends = np.r_[0, boundary], np.r_[boundary, n]
    partner = np.arange(1, n + 1, dtype=index)  # the next member of the group...
    partner[ends - 1] = starts  # ...cyclically
    alone = starts[ends - starts == 1]  # a group of one cannot pair
    if alone.size:
        keep = np.ones(n, dtype=bool)
        keep[alone] = False
        return order[keep], order[partner[keep]]
    return order, order[partner]


def _index_dtype(n: int) -> type[np.signedinteger]:
    """int32 track indices where they fit (half the memory of int64), else int64."""
    return np.int32 if n < 2**31 else np.int64


def draw_pairs(
    event_id: np.ndarray,
    pt: np.ndarray,
    *,
    seed: int,
    epoch: int,
    pairing: str = "event",
    pair_task: str = "pt",
) -> Pairs:
    """Draw one epoch of pairs, shuffled, reproducible from ``(seed, epoch)``.

    Parameters
    ----------
    event_id : (N,) event number of every track of the split.
    pt : (N,) transverse momentum in GeV of every track (used by ``pair_task="pt"``).
    seed : run seed.
    epoch : epoch number; every epoch gives new pairs.
    pairing : ``"event"``, ``"any"`` or ``"single"`` (see the module docstring).
    pair_task : ``"pt"``, ``"swap"`` or ``"none"``; must be ``"none"`` with ``pairing="single"``.

    Returns
    -------
    Pairs in random order. With ``"event"`` or ``"any"`` every pairable track is A exactly once.
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing {pairing!r} is not one of {PAIRINGS}")
    if pair_task not in PAIR_TASKS:
        raise ValueError(f"pair_task {pair_task!r} is not one of {PAIR_TASKS}")
    if pairing == "single" and pair_task != "none":
        raise ValueError(f"pair_task {pair_task!r} needs pairs; single-track mode has no track B")
    event_id = np.asarray(event_id)
    pt = np.asarray(pt)
    n = event_id.shape[0]
    rng = epoch_rng(seed, epoch)

    if pairing == "single":
        return Pairs(index_a=rng.permutation(n).astype(_index_dtype(n)), index_b=None, labels=None)

    group = event_id if pairing == "event" else np.zeros(n, dtype=np.int64)
    index_a, index_b = _partners_within_groups(group, rng)
    shuffle = rng.permutation(index_a.shape[0]).astype(index_a.dtype)
    index_a, index_b = index_a[shuffle], index_b[shuffle]
    del shuffle

    labels = None
    if pair_task == "pt":
        labels = (pt[index_b] > pt[index_a]).astype(np.float32)
    elif pair_task == "swap":
        index_b, labels = _swap_partners(index_a, index_b, event_id, rng)
    return Pairs(index_a=index_a, index_b=index_b, labels=labels)


def _swap_partners(
    index_a: np.ndarray, index_b: np.ndarray, event_id: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Replace half of the B tracks by a track of another event; label 1 where replaced."""
    p = index_a.shape[0]
    n = event_id.shape[0]
    replaced = rng.random(p) < 0.5
    other = rng.integers(0, n, size=(p,))
    # Redraw the few replacements that landed in A's own event (a bounded number of rounds; a
    # split of one event has no other event to draw from).
    for _ in range(8):
        clash = replaced & (event_id[other] == event_id[index_a])
        if not clash.any():
            break
        other[clash] = rng.integers(0, n, size=int(clash.sum()))
    replaced &= event_id[other] != event_id[index_a]
    return np.where(replaced, other, index_b).astype(index_a.dtype), replaced.astype(np.float32)
