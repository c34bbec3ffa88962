"""BERT-style masking of module tokens, vectorized over a batch, and the mask-rate schedule.

Only module tokens are ever selected (never ``[CLS]``, ``[SEP]``, ``[PAD]`` or other special
tokens). Each track (A, and B in pairs) gets a number of selected hits drawn so that on average a
fraction ``rate`` of its hits is selected, and never fewer than one. Of the selected positions
80% become ``[MASK]``, 10% a random module token and 10% stay unchanged; the labels hold the
original token there and -100 ("no label") everywhere else. Pure numpy with a
``numpy.random.Generator``, so it is testable without torch and reproducible from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracklm.detector.vocab import ModuleVocab

IGNORE_INDEX = -100
MASK_FRACTION = 0.8
RANDOM_FRACTION = 0.1


@dataclass
class MaskedTokens:
    """Masked model inputs; B sequences of width W.

    Attributes
    ----------
    input_ids : (B, W) int64 ids with the selected positions replaced.
    labels : (B, W) int64 original token at selected positions, -100 elsewhere.
    """

    input_ids: np.ndarray
    labels: np.ndarray


def _per_track_counts(candidates: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """(B,) number of hits to select per track: rate x hits, stochastically rounded, at least one."""
    hits = candidates.sum(axis=1)
    expected = rate * hits
    counts = np.floor(expected + rng.random(hits.shape[0])).astype(np.int64)
    return np.clip(counts, np.minimum(hits, 1), hits)


def select_positions(
    is_candidate: np.ndarray,
    segment: np.ndarray,
    rate: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Choose positions to predict, separately within every (row, segment) track.

    Parameters
    ----------
    is_candidate : (B, W) bool, True on module tokens.
    segment : (B, W) segment id of every position (0 for track A, 1 for track B).
    rate : mean fraction of each track's hits to select, in (0, 1].
    rng : the random generator.

    Returns
    -------
    (B, W) bool, True at the selected positions; at least one per non-empty track.
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"mask rate must lie in (0, 1], got {rate}")
    ranking_key = rng.random(is_candidate.shape)
    selected = np.zeros(is_candidate.shape, dtype=bool)
    for track in np.unique(segment[is_candidate]):
        candidates = is_candidate & (segment == track)
        counts = _per_track_counts(candidates, rate, rng)
        key = np.where(candidates, ranking_key, 2.0)  # non-candidates rank last
        rank = np.argsort(np.argsort(key, axis=1, kind="stable"), axis=1, kind="stable")
        selected |= candidates & (rank < counts[:, None])
    return selected


def mask_modules(
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    vocab: ModuleVocab,
    rate: float,
    rng: np.random.Generator,
    *,
    hidden: bool = False,
) -> MaskedTokens:
    """Mask module tokens of a batch BERT-style (80% ``[MASK]``, 10% random module, 10% kept).

    Parameters
    ----------
    input_ids : (B, W) token ids from ``encode_pairs``.
    token_type_ids : (B, W) segment ids from ``encode_pairs`` (tells track A from track B).
    vocab : gives the module token range and the ``[MASK]`` id.
    rate : mean fraction of each track's hits to select, in (0, 1]; at least one per track.
    rng : the random generator.
    hidden : every selected position becomes ``[MASK]`` (no random or kept token): the honest
        protocol of validation, where a kept token would be an answer the model can read.

    Returns
    -------
    MaskedTokens with the replaced inputs and the labels (-100 where nothing is predicted).
    """
    input_ids = np.asarray(input_ids, dtype=np.int64)
    is_candidate = vocab.is_module(input_ids)
    selected = select_positions(is_candidate, np.asarray(token_type_ids), rate, rng)
    action = rng.random(input_ids.shape)
    if hidden:
        action[:] = 0.0  # the same random draws, so a seed selects the same positions
    random_modules = rng.integers(vocab.num_special, len(vocab), size=input_ids.shape)
    masked = np.where(selected & (action < MASK_FRACTION), vocab.mask_id, input_ids)
    use_random = selected & (action >= MASK_FRACTION) & (action < MASK_FRACTION + RANDOM_FRACTION)
    masked = np.where(use_random, random_modules, masked)
    labels = np.where(selected, input_ids, IGNORE_INDEX)
    return MaskedTokens(input_ids=masked, labels=labels)


@dataclass(frozen=True)
class MaskSchedule:
    """Mask rate as a step function of the optimiser step (the paper raises 15% -> 30% -> 50%).

    No defaults here: a run's schedule is built once by ``tracklm.train.config.PretrainConfig``
    (``mask_schedule``), which holds the default rates and steps.

    Attributes
    ----------
    rates : mask rate of each stage, each in (0, 1].
    boundaries : first step of stages 2, 3, ...; increasing; one fewer than ``rates``.
    """

    rates: tuple[float, ...]
    boundaries: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.rates) < 1 or len(self.boundaries) != len(self.rates) - 1:
            raise ValueError("a mask schedule needs one rate more than step boundaries")
        if any(not 0.0 < r <= 1.0 for r in self.rates):
            raise ValueError(f"mask rates must lie in (0, 1], got {list(self.rates)}")
        if any(b2 <= b1 for b1, b2 in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(
                f"mask-rate step boundaries must increase, got {list(self.boundaries)}"
            )

    def rate_at(self, step: int) -> float:
        """Mask rate in force at optimiser step ``step`` (0-based)."""
        stage = int(np.searchsorted(np.asarray(self.boundaries), step, side="right"))
        return float(self.rates[stage])
