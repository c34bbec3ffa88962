"""The finder's track candidates as examples for a learned candidate scorer.

The greedy resolution (``resolve.py``) decides which candidates become tracks; how well it orders
them and which it drops is most of what separates a finder's score from its candidates' best
(see the README: a resolution told the truth reaches 0.936-0.949 on the candidates that score
0.899 under the helix's own quality). ``tracklm finetune --task candidates`` teaches a
pre-trained TrackingBERT to judge candidates from examples made here: every round's candidates
of the helix finder on simulated events with truth, each labelled

- ``real``: more than half of its hits come from one particle (the challenge's rule for a
  track that can count), and that particle is no noise hit;
- ``good`` per hit: the hit belongs to that particle (on a real candidate).

What a candidate shows the model: its first ``context_hits`` hits by distance from the origin
(module tokens, and the measured positions for a model that reads hits), and beside the
encoder a few numbers the finder knows (``candidate_features``): the helix chi2 per hit, the
number of hits, and the round that made the candidate (its seed pT cut, shortest track, whether
its seeds came from the beam line, its kind of layer triple).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from tracklm.detector.geometry import Detector
from tracklm.errors import InputError
from tracklm.find.config import TRIPLE_KINDS, FinderConfig, SeedRound
from tracklm.find.extend import TrackCandidates, helix_decider
from tracklm.find.finder import Method, find_tracks, helix_quality
from tracklm.find.hits import EventHits
from tracklm.find.layers import FinderLayers
from tracklm.io.trackml import event_path, read_part

N_FEATURES = 5 + len(TRIPLE_KINDS)


def candidate_features(n_hits: np.ndarray, chi2: np.ndarray, seed_round: SeedRound) -> np.ndarray:
    """(N, ``N_FEATURES``) float32: log(1 + chi2 per hit), hits / 10, the round's 1 / seed pT
    (GeV^-1) / 10, its shortest track / 10, whether its seeds come from the beam line, and its
    kind of layer triple (one-hot over ``TRIPLE_KINDS``)."""
    n = np.asarray(n_hits, dtype=np.float64)
    out = np.zeros((n.size, N_FEATURES), dtype=np.float32)
    out[:, 0] = np.log1p(np.asarray(chi2, dtype=np.float64) / np.maximum(n, 1.0))
    out[:, 1] = n / 10.0
    out[:, 2] = 0.1 / seed_round.pt_min_gev
    out[:, 3] = seed_round.min_hits / 10.0
    out[:, 4] = float(seed_round.beamline)
    out[:, 5 + TRIPLE_KINDS.index(seed_round.triples)] = 1.0
    return out


def unique_candidates(hits: np.ndarray, n_hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copies of one candidate (the same hits, a particle seeded several times) merged.

    Returns
    -------
    (U,) the row of each distinct candidate's first copy, and (N,) the distinct candidate each
    row is (``rows[inverse]`` gives a copy of every row).
    """
    if len(n_hits) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    width = hits.shape[1]
    big = np.iinfo(np.int64).max
    valid = np.arange(width)[None, :] < n_hits[:, None]
    key = np.sort(np.where(valid, hits, big), axis=1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return first.astype(np.int64), inverse.ravel().astype(np.int64)


def order_by_distance(
    hits: np.ndarray, n_hits: np.ndarray, distance: np.ndarray, width: int
) -> np.ndarray:
    """(N, width) the candidates' first ``width`` hits by distance from the origin, -1 after."""
    valid = np.arange(hits.shape[1])[None, :] < n_hits[:, None]
    d = np.where(valid, distance[np.maximum(hits, 0)], np.inf)
    ordered = np.take_along_axis(hits, np.argsort(d, axis=1, kind="stable"), axis=1)
    ordered = np.where(valid, ordered, -1)[:, :width]
    if ordered.shape[1] < width:
        ordered = np.pad(ordered, ((0, 0), (0, width - ordered.shape[1])), constant_values=-1)
    return ordered


@dataclass
class CandidateSet:
    """Labelled candidates (one row per distinct candidate of a round).

    Attributes
    ----------
    module_ids : (N, C, 3) int64 (volume, layer, module) of the first C hits by distance, -1 after.
    xyz_mm : (N, C, 3) float32 their measured positions, NaN after.
    n_hits : (N,) hits of the whole candidate (may exceed C).
    features : (N, ``N_FEATURES``) float32 ``candidate_features``.
    real : (N,) bool, more than half of the hits from one particle (not noise).
    good : (N, C) bool, the hit belongs to that particle (False on a candidate that is not real).
    event : (N,) int64 event id.
    """

    module_ids: np.ndarray
    xyz_mm: np.ndarray
    n_hits: np.ndarray
    features: np.ndarray
    real: np.ndarray
    good: np.ndarray
    event: np.ndarray

    def __len__(self) -> int:
        return int(self.n_hits.shape[0])

    def take(self, rows: np.ndarray) -> CandidateSet:
        """The candidates at ``rows``."""
        return CandidateSet(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))

    @classmethod
    def concat(cls, parts: list[CandidateSet], width: int) -> CandidateSet:
        if not parts:
            return cls(
                np.zeros((0, width, 3), np.int64), np.zeros((0, width, 3), np.float32),
                np.zeros(0, np.int64), np.zeros((0, N_FEATURES), np.float32),
                np.zeros(0, bool), np.zeros((0, width), bool), np.zeros(0, np.int64),
            )  # fmt: skip
        return cls(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__)
        )


def truth_particles(events: Path, event_id: int, hits: EventHits) -> np.ndarray:
    """(N,) particle id of each of the event's evaluated hits (0 for noise), from its truth file.

    Raises ``InputError`` for a missing truth file or a hit it does not name.
    """
    source = event_path(events, event_id, "truth")
    truth = read_part(source, "truth")
    table = pd.Series(truth["particle_id"].to_numpy(), index=truth["hit_id"].to_numpy())
    if not table.index.is_unique:
        raise InputError(f"{source}: a hit_id appears twice")
    found = table.reindex(hits.hit_id)
    if found.isna().any():
        missing = int(hits.hit_id[np.flatnonzero(found.isna().to_numpy())[0]])
        raise InputError(f"{source}: no truth row for hit_id {missing}")
    result: np.ndarray = found.to_numpy().astype(np.int64)
    return result


def label_candidates(
    ordered: np.ndarray, n_hits: np.ndarray, particle: np.ndarray, all_hits: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``real`` (N,) and ``good`` (N, C) of candidates (``CandidateSet``): ``ordered`` their first
    C hits, ``all_hits`` (N, H) every hit (-1 padded), ``particle`` the hits' particle ids."""
    valid = all_hits >= 0
    pid = np.where(valid, particle[np.maximum(all_hits, 0)], -1)
    real = np.zeros(len(n_hits), dtype=bool)
    major = np.full(len(n_hits), -1, dtype=np.int64)
    for i in range(len(n_hits)):
        values, counts = np.unique(pid[i, : n_hits[i]], return_counts=True)
        best = int(counts.argmax())
        major[i] = values[best]
        real[i] = values[best] != 0 and 2 * counts[best] > n_hits[i]
    shown = np.where(ordered >= 0, particle[np.maximum(ordered, 0)], -1)
    good = (shown == major[:, None]) & (ordered >= 0) & real[:, None]
    return real, good


def shown_candidates(
    tracks: TrackCandidates,
    rows: np.ndarray,
    hits: EventHits,
    distance: np.ndarray,
    width: int,
    seed_round: SeedRound,
) -> tuple[CandidateSet, np.ndarray]:
    """The candidates ``rows`` of ``tracks`` as a model is shown them (``CandidateSet``, labels
    all False, event 0), and (N, width) their first ``width`` hits outwards (-1 after).
    ``distance`` is every hit's distance from the origin."""
    n = tracks.n_hits[rows].astype(np.int64)
    ordered = order_by_distance(tracks.hits[rows], n, distance, width)
    shown = ordered >= 0
    at = np.maximum(ordered, 0)
    candidates = CandidateSet(
        module_ids=np.where(shown[..., None], hits.module_ids[at], -1),
        xyz_mm=np.where(shown[..., None], hits.xyz_mm[at], np.nan).astype(np.float32),
        n_hits=n,
        features=candidate_features(n, tracks.chi2[rows], seed_round),
        real=np.zeros(len(rows), dtype=bool),
        good=np.zeros(shown.shape, dtype=bool),
        event=np.zeros(len(rows), dtype=np.int64),
    )
    return candidates, ordered


class _Recorder:
    """A helix ``Method.quality`` that records one event's candidates on the way, labelled."""

    def __init__(self, event_id: int, particle: np.ndarray, hits: EventHits, width: int) -> None:
        self.event_id = event_id
        self.particle = particle
        self.distance = np.linalg.norm(hits.xyz_mm, axis=1)
        self.width = width
        self.parts: list[CandidateSet] = []

    def __call__(
        self, tracks: TrackCandidates, hits: EventHits, config: FinderConfig, seed_round: SeedRound
    ) -> np.ndarray:
        rows = np.flatnonzero(tracks.n_hits >= seed_round.min_hits)
        first, _ = unique_candidates(tracks.hits[rows], tracks.n_hits[rows])
        rows = rows[first]
        shown, ordered = shown_candidates(tracks, rows, hits, self.distance, self.width, seed_round)
        real, good = label_candidates(ordered, shown.n_hits, self.particle, tracks.hits[rows])
        event = np.full(len(rows), self.event_id, dtype=np.int64)
        self.parts.append(dataclasses.replace(shown, real=real, good=good, event=event))
        return helix_quality(tracks, hits, config, seed_round)


def collect_candidates(
    events: Path,
    event_ids: list[int],
    layers: FinderLayers,
    config: FinderConfig,
    b_field_t: float,
    width: int,
    desc: str = "candidates",
) -> CandidateSet:
    """Every round's distinct candidates of the helix finder on ``event_ids``, labelled from truth.

    The finder runs as ``tracklm find --method helix`` does (its resolution decides what later
    rounds see); each round's candidates that the resolution would consider (at least the
    round's ``min_hits``) are recorded with ``candidate_features`` and their labels.
    """
    parts: list[CandidateSet] = []
    for event_id in tqdm(event_ids, desc=desc, unit="event", disable=None):
        source = event_path(events, event_id, "hits")
        hits, _ = EventHits.from_table(read_part(source, "hits"), layers, str(source))
        recorder = _Recorder(event_id, truth_particles(events, event_id, hits), hits, width)
        find_tracks(hits, layers, config, Method("helix", helix_decider, recorder), b_field_t)
        parts.extend(recorder.parts)
    return CandidateSet.concat(parts, width)


def split_events(event_ids: list[int], source: str | os.PathLike[str]) -> dict[str, list[int]]:
    """Train, val and test events (by event, never by candidate): the last tenth of the events
    (at least one) is test, the one before it val, the rest train. Needs at least 3 events."""
    if len(event_ids) < 3:
        raise InputError(
            f"--data {source}: task candidates needs at least 3 events with truth "
            f"(train, val and test), found {len(event_ids)}"
        )
    n_test = max(1, len(event_ids) // 10)
    return {
        "train": event_ids[: -n_test - 1],
        "val": event_ids[-n_test - 1 : -n_test],
        "test": event_ids[-n_test:],
    }


def finder_setup(
    events: Path, detector: Detector | None = None
) -> tuple[FinderLayers, float, tuple[int, ...]]:
    """The finder's layers of the pixel volumes, the field of ``events`` and the volumes (as
    ``tracklm find`` sets them up by default)."""
    from tracklm.data.prepare import events_magnetic_field, resolve_detector
    from tracklm.find.run import DEFAULT_VOLUMES, finder_volumes

    detector = detector or resolve_detector(events, None)
    b_field_t = float(events_magnetic_field(events)["tesla"])
    volumes = finder_volumes(DEFAULT_VOLUMES, detector)
    layers = FinderLayers.from_detector(
        detector, volumes, b_field_t, FinderConfig().seed_layer_support
    )
    return layers, b_field_t, volumes
