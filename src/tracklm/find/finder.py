"""One event through the finder: seeding rounds, extension, ambiguity resolution.

``find_tracks`` runs the stages shared by both methods; what differs is the ``StepDecider`` that
picks hits during extension and the quality that orders candidates for the resolution, both
given by a ``Method``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tracklm.find.config import FinderConfig, SeedRound
from tracklm.find.extend import (
    StepDecider,
    TrackCandidates,
    add_seed_layer_hits,
    extend_tracks,
    helix_decider,
)
from tracklm.find.hits import EventHits, HitIndex
from tracklm.find.layers import FinderLayers
from tracklm.find.resolve import resolve_greedy, track_quality
from tracklm.find.seeds import find_free_seeds, find_seeds


@dataclass
class Method:
    """What decides: the step decider and the candidates' quality.

    Attributes
    ----------
    name : ``helix`` or ``model``.
    decider : builds the ``StepDecider`` for an event's hits.
    quality : (candidates, hits, config, the round) -> (N,) quality for the resolution
        (larger is better).
    """

    name: str
    decider: Callable[[FinderConfig, EventHits], StepDecider]
    quality: Callable[[TrackCandidates, EventHits, FinderConfig, SeedRound], np.ndarray]


def helix_quality(
    tracks: TrackCandidates, hits: EventHits, config: FinderConfig, seed_round: SeedRound
) -> np.ndarray:
    """Hits first, then a small chi2 per hit."""
    return track_quality(tracks.n_hits, tracks.chi2, config.chi2_weight)


HELIX = Method("helix", helix_decider, helix_quality)


@dataclass
class StageTimes:
    """Seconds spent per stage, summed over events."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def luminous_region(z0_mm: np.ndarray, config: FinderConfig) -> tuple[float, float] | None:
    """Where along the beam this event's collisions happened, from the z0 of the first round's
    tracks: the central ``luminous_fraction`` of them, widened by ``luminous_margin_mm``; None
    (keep the configured window) when fewer than ``luminous_min_tracks`` tracks say so.

    Later rounds seed only from there: the window of a pile-up 200 event can shrink several-fold
    (6 mm r.m.s. in the simulator, about 55 mm in TrackML), and with it the combinatorial fakes.
    """
    z0 = z0_mm[np.isfinite(z0_mm)]
    if z0.size < config.luminous_min_tracks:
        return None
    tail = (1.0 - config.luminous_fraction) / 2.0
    lo, hi = np.quantile(z0, [tail, 1.0 - tail])
    limit = config.seed_z0_max_mm
    return (
        max(float(lo) - config.luminous_margin_mm, -limit),
        min(float(hi) + config.luminous_margin_mm, limit),
    )


def find_tracks(
    hits: EventHits,
    layers: FinderLayers,
    config: FinderConfig,
    method: Method,
    b_field_t: float,
    times: StageTimes | None = None,
) -> np.ndarray:
    """Tracks of one event.

    Returns
    -------
    (N,) int64 track id of every hit (1, 2, ... in order of acceptance; 0 for none).
    """
    times = times if times is not None else StageTimes()
    taken = np.zeros(len(hits), dtype=bool)
    track_id = np.zeros(len(hits), dtype=np.int64)
    next_id = 1
    decide = method.decider(config, hits)
    overlaps = helix_decider(config, hits)
    z0_range: tuple[float, float] | None = None
    for seed_round in config.rounds:
        triples = layers.seed_triples[seed_round.triples]
        start = time.perf_counter()
        index = HitIndex(hits, layers, available=~taken)
        seeder = find_seeds if seed_round.beamline else find_free_seeds
        seeds = seeder(
            hits, index, layers, triples, seed_round.pt_min_gev, config, b_field_t, z0_range
        )
        times.add("seed", time.perf_counter() - start)
        start = time.perf_counter()
        tracks = TrackCandidates.from_seeds(seeds, hits, config.max_hits)
        # the seed hits stay; their overlapping neighbours are the helix's call for both methods
        tracks = add_seed_layer_hits(tracks, hits, index, layers, config, overlaps, b_field_t)
        tracks = extend_tracks(tracks, hits, index, layers, config, decide, b_field_t)
        tracks = extend_tracks(
            tracks, hits, index, layers, config, decide, b_field_t, backward=True
        )
        times.add("extend", time.perf_counter() - start)
        start = time.perf_counter()
        quality = method.quality(tracks, hits, config, seed_round)
        chosen, accepted = resolve_greedy(
            tracks.hits,
            tracks.n_hits,
            quality,
            taken,
            seed_round.min_hits,
            config.max_shared_fraction,
        )
        for track in accepted:
            track_id[track] = next_id
            next_id += 1
        if z0_range is None and seed_round.beamline:
            z0_range = luminous_region(tracks.z0_mm[chosen], config)
        times.add("resolve", time.perf_counter() - start)
    return track_id
