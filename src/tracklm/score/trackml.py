"""The TrackML score and the track-finding figures around it: pure numpy functions of one event.

Written from the challenge's published definition (trackml-library ``score_event``), restated:

1. every evaluated hit carries one submitted ``track_id``; ``UNASSIGNED`` (0) marks a hit the finder
   left out, scored as if it were a track of its own (the challenge's other convention for such
   hits, which gives the same score);
2. each track's **majority particle** is the particle with most of its hits, ties to the lower
   ``particle_id``; noise (``particle_id`` 0) can be the majority;
3. a track counts under the **double majority**: more than half of its hits are the majority
   particle's *and* it holds more than half of that particle's hits (both strict, > 0.5), so at
   most one track per particle counts;
4. the score is the summed weight of the majority particle's hits in the counted tracks;
5. hit weights (``trackml_weights``): an order weight by the hit's rank along its particle's
   trajectory times a pT weight, zero for noise and for particles with fewer than
   ``MIN_PARTICLE_HITS`` hits, normalised to sum to 1 over the evaluated hits.

When only some volumes are evaluated (the pixel detector), weights and hit counts are those of the
evaluated hits alone; the score is then the *pixel TrackML score*, not the challenge's number.

Only where the treatment of ``UNASSIGNED`` differs from trackml-library, which treats 0 as an
ordinary track id, can the two scores differ: when the left-out hits are mostly one particle's and
hold more than half of its hits, that library counts them as a track.

Figures beside the score (``EventScore``), with the conventions named:

- efficiency: fraction of *reconstructable* particles (not noise, at least ``MIN_PARTICLE_HITS``
  evaluated hits) that a track matches by double majority (gnn_tracking's "double majority"
  efficiency); ``efficiency_pt1`` the same for particles with pT > 1 GeV;
- fake rate: fraction of *candidate* tracks (assigned hits, at least ``MIN_TRACK_HITS`` of them)
  that match no particle by double majority (a noise majority is fake);
- duplicate rate: a candidate track *matches* its majority particle when more than half of its hits
  are that particle's (noise excluded); the duplicate rate is the fraction of matched tracks that
  are not the only match of their particle, ``(matched tracks - matched particles) / matched
  tracks`` (ACTS's duplication rate). The double majority cannot be used here: it lets at most one
  track per particle pass, so no duplicate could ever be seen.

Where the score is lost (``score_losses``): every hit the score does not count, by weight, in one
of ``LOSS_KINDS``, so that the score and the losses sum to the event's total weight (1):

- a particle that no track matches: ``not_found_impure`` (one track holds more than half of the
  particle's hits, but half or more of that track is other hits), ``not_found_unassigned`` (else,
  when half or more of its hits were left out), ``not_found_split`` (else: its hits spread over
  several tracks, none holding more than half);
- a particle that a track matches: ``found_hit_unassigned`` (its hits that were left out) and
  ``found_hit_elsewhere`` (its hits in another track).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UNASSIGNED = 0
"""``track_id`` of a hit the finder left out (it is scored as a one-hit track)."""

NOISE = 0
"""``particle_id`` of a noise hit."""

MIN_PARTICLE_HITS = 4
"""Fewest evaluated hits a particle needs to weigh anything and to count in the efficiency."""

MIN_TRACK_HITS = 4
"""Fewest hits a submitted track needs to count in the fake and duplicate rates."""

ORDER_WEIGHT_PROFILE = np.array([10.0, 8.0, 6.0, 5.0, 3.0, 3.0, 3.0, 5.0, 6.0])
"""Relative weight along a trajectory, first to last hit: the ends weigh most. A particle's n hits
sample this profile at n evenly spaced points with both ends fixed (linear interpolation)."""

PT_WEIGHT_GEV = (0.5, 3.0)
PT_WEIGHT_VALUES = (0.2, 1.0)
"""pT weight: 0.2 up to 0.5 GeV, rising linearly to 1.0 at 3 GeV, 1.0 above."""

PT_ONE_GEV = 1.0


def order_weights(n_hits: int) -> np.ndarray:
    """Order weight of each hit of an ``n_hits``-hit particle, first to last, summing to 1.

    Parameters
    ----------
    n_hits : number of the particle's (evaluated) hits, at least 1.

    Returns
    -------
    (n_hits,) float64; for 4 hits 0.411, 0.219, 0.123, 0.247.
    """
    if n_hits < 1:
        raise ValueError(f"a particle has at least one hit, got {n_hits}")
    raw = _profile_values(np.arange(n_hits), np.full(n_hits, n_hits))
    return raw / raw.sum()


def _profile_values(rank: np.ndarray, n_hits: np.ndarray) -> np.ndarray:
    """``ORDER_WEIGHT_PROFILE`` at each hit's rank, before normalisation.

    Parameters
    ----------
    rank : (H,) int, the hit's 0-based rank along its particle.
    n_hits : (H,) int, the particle's hit count: its ranks 0 .. n - 1 are spread evenly over the
        profile, the first on its first value and the last on its last.

    Returns
    -------
    (H,) float64.
    """
    last = ORDER_WEIGHT_PROFILE.size - 1
    position = rank * (last / np.maximum(n_hits - 1, 1))
    return np.interp(position, np.arange(last + 1), ORDER_WEIGHT_PROFILE)


def pt_weight(pt_gev: np.ndarray) -> np.ndarray:
    """The pT weight of hits whose particles have transverse momentum ``pt_gev`` (GeV), in [0.2, 1]."""
    return np.interp(np.asarray(pt_gev, dtype=np.float64), PT_WEIGHT_GEV, PT_WEIGHT_VALUES)


def _group_by(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct values, the group index of every entry, and each group's size."""
    distinct, index, size = np.unique(values, return_inverse=True, return_counts=True)
    return distinct, index.reshape(-1), size


def trackml_weights(
    particle_id: np.ndarray,
    order_key_mm: np.ndarray,
    pt_gev: np.ndarray,
    hit_id: np.ndarray,
) -> np.ndarray:
    """TrackML hit weights over the given (evaluated) hits, summing to 1.

    A hit's weight is its order weight (``order_weights`` of its rank along its particle) times the
    pT weight of its particle (``pt_weight``); zero for noise hits and for the hits of particles with
    fewer than ``MIN_PARTICLE_HITS`` hits among those given; then all are divided by their sum.

    The rank is by ``order_key_mm`` (ties by hit id). The challenge ranks by ``|tz - vz|``, the
    distance along the beam from the particle's production vertex to the hit's true position: on
    the real TrackML event this reproduces the file's ``weight`` column hit for hit, which distance
    from the origin or from the vertex does not.

    Parameters
    ----------
    particle_id : (H,) int64, particle of each hit (``NOISE`` for noise).
    order_key_mm : (H,) float, position along the trajectory in mm (``|tz - vz|``).
    pt_gev : (H,) float, transverse momentum of each hit's particle in GeV (ignored for noise).
    hit_id : (H,) int64, breaks ties of ``order_key_mm``.

    Returns
    -------
    (H,) float64 weights summing to 1, or all zero when no hit can weigh anything.
    """
    particle_id = np.asarray(particle_id, dtype=np.int64)
    weight = np.zeros(particle_id.size, dtype=np.float64)
    if particle_id.size == 0:
        return weight
    sort = np.lexsort((np.asarray(hit_id), np.asarray(order_key_mm, dtype=np.float64), particle_id))
    _, group, size = _group_by(particle_id[sort])
    first = np.cumsum(size) - size
    rank = np.arange(sort.size) - first[group]
    raw = _profile_values(rank, size[group])
    per_particle_sum = np.bincount(group, weights=raw)
    weight[sort] = raw / per_particle_sum[group] * pt_weight(np.asarray(pt_gev)[sort])
    weight[(particle_id == NOISE) | (_hits_per_particle(particle_id) < MIN_PARTICLE_HITS)] = 0.0
    total = weight.sum()
    return weight / total if total > 0 else weight


def _hits_per_particle(particle_id: np.ndarray) -> np.ndarray:
    """(H,) number of the given hits that belong to each hit's particle."""
    _, group, size = _group_by(particle_id)
    return size[group]


@dataclass(frozen=True)
class TrackMatches:
    """Every submitted track of one event with its majority particle.

    Left-out hits (``UNASSIGNED``) are one-hit tracks each, marked ``assigned = False``.

    Attributes
    ----------
    hit_track : (H,) int, index of each hit's track in the arrays below.
    n_hits : (T,) int, hits of the track.
    majority_particle : (T,) int64, the particle with most of the track's hits (ties to the lower id).
    majority_hits : (T,) int, the track's hits that belong to it.
    particle_hits : (T,) int, the majority particle's hits in the whole evaluated event.
    assigned : (T,) bool, whether the track is a submitted track (not a left-out hit).
    """

    hit_track: np.ndarray
    n_hits: np.ndarray
    majority_particle: np.ndarray
    majority_hits: np.ndarray
    particle_hits: np.ndarray
    assigned: np.ndarray

    @property
    def double_majority(self) -> np.ndarray:
        """(T,) bool: more than half of the track is its majority particle's and it holds more
        than half of that particle's hits (both strict)."""
        return (2 * self.majority_hits > self.n_hits) & (
            2 * self.majority_hits > self.particle_hits
        )

    @property
    def matched(self) -> np.ndarray:
        """(T,) bool: a double-majority track whose majority particle is not noise."""
        return self.double_majority & (self.majority_particle != NOISE)

    def counted(self, particle_id: np.ndarray) -> np.ndarray:
        """(H,) bool: the hits the score counts, those of a double-majority track's majority
        particle (``particle_id``: the true particle of each hit)."""
        track = self.hit_track
        return self.double_majority[track] & (particle_id == self.majority_particle[track])

    @property
    def candidate(self) -> np.ndarray:
        """(T,) bool: submitted tracks of at least ``MIN_TRACK_HITS`` hits (fake and duplicate
        rates count these)."""
        return self.assigned & (self.n_hits >= MIN_TRACK_HITS)


def match_tracks(track_id: np.ndarray, particle_id: np.ndarray) -> TrackMatches:
    """Majority particle of every submitted track of one event.

    Parameters
    ----------
    track_id : (H,) int64, submitted track of each evaluated hit (``UNASSIGNED`` for left out).
    particle_id : (H,) int64, true particle of each evaluated hit (``NOISE`` for noise).

    Returns
    -------
    ``TrackMatches``.
    """
    track_id = np.asarray(track_id, dtype=np.int64)
    particle_id = np.asarray(particle_id, dtype=np.int64)
    n = track_id.size
    # Dense track index: submitted ids first, then one new track per left-out hit.
    left_out = track_id == UNASSIGNED
    distinct_tracks, dense = np.unique(track_id[~left_out], return_inverse=True)
    n_assigned = int(distinct_tracks.size)
    hit_track = np.empty(n, dtype=np.int64)
    hit_track[~left_out] = dense.reshape(-1)
    hit_track[left_out] = n_assigned + np.arange(int(left_out.sum()))
    n_tracks = n_assigned + int(left_out.sum())

    particles, hit_particle, particle_size = _group_by(particle_id)
    # Hits of each (track, particle) pair, pairs sorted by track then particle id.
    pair_key = hit_track * max(particles.size, 1) + hit_particle
    pairs, pair_hits = np.unique(pair_key, return_counts=True)
    pair_track = pairs // max(particles.size, 1)
    pair_particle = pairs % max(particles.size, 1)
    # Majority: most hits first, then the lower particle id (particles are sorted by id).
    best = np.lexsort((pair_particle, -pair_hits, pair_track))
    first_of_track = np.r_[True, pair_track[best][1:] != pair_track[best][:-1]]
    majority = best[first_of_track]  # one pair per track, in track order
    assert majority.size == n_tracks
    return TrackMatches(
        hit_track=hit_track,
        n_hits=np.bincount(hit_track, minlength=n_tracks),
        majority_particle=particles[pair_particle[majority]],
        majority_hits=pair_hits[majority],
        particle_hits=particle_size[pair_particle[majority]],
        assigned=np.arange(n_tracks) < n_assigned,
    )


LOSS_KINDS = (
    "not_found_impure",
    "not_found_unassigned",
    "not_found_split",
    "found_hit_unassigned",
    "found_hit_elsewhere",
)


def score_losses(
    particle_id: np.ndarray, weight: np.ndarray, matches: TrackMatches
) -> dict[str, float]:
    """Weight of the hits the score does not count, by ``LOSS_KINDS`` (module docstring).

    Parameters
    ----------
    particle_id : (H,) int64, true particle of each evaluated hit (``NOISE`` for noise).
    weight : (H,) float, hit weights.
    matches : ``match_tracks`` of the submission over the same hits.

    Returns
    -------
    kind -> summed weight; with the score they add up to ``weight.sum()``.
    """
    particle_id = np.asarray(particle_id, dtype=np.int64)
    weight = np.asarray(weight, dtype=np.float64)
    track = matches.hit_track
    assigned = matches.assigned[track]
    found = np.isin(particle_id, matches.majority_particle[matches.matched])
    found &= particle_id != NOISE
    lost = ~matches.counted(particle_id) & found
    losses = {
        "found_hit_unassigned": float(weight[lost & ~assigned].sum()),
        "found_hit_elsewhere": float(weight[lost & assigned].sum()),
    }
    # A particle no track matches (no hit of it counts): how its hits lie among the tracks.
    missed = ~found & (particle_id != NOISE)
    particles, hit_particle, size = _group_by(particle_id[missed])
    left_out = np.bincount(hit_particle, weights=~assigned[missed], minlength=particles.size)
    best = np.zeros(particles.size, dtype=np.int64)  # most of its hits in one submitted track
    on_track = assigned[missed]
    if on_track.any():
        pair = np.stack([hit_particle[on_track], track[missed][on_track]])
        pairs, pair_hits = np.unique(pair, axis=1, return_counts=True)
        np.maximum.at(best, pairs[0], pair_hits)
    # 0 impure, 1 left out, 2 split
    kind = np.where(2 * best > size, 0, np.where(2 * left_out >= size, 1, 2))
    missed_weight = np.bincount(hit_particle, weights=weight[missed], minlength=particles.size)
    for index, name in enumerate(LOSS_KINDS[:3]):
        losses[name] = float(missed_weight[kind == index].sum())
    return {name: losses[name] for name in LOSS_KINDS}


@dataclass(frozen=True)
class EventScore:
    """The TrackML score of one event and the figures around it (see the module docstring).

    Attributes
    ----------
    score : summed weight of the counted hits, in [0, 1]; None when no hit weighs anything.
    n_hits : evaluated hits.
    particle_id : (P,) int64, the reconstructable particles (not noise, at least
        ``MIN_PARTICLE_HITS`` evaluated hits), by increasing id.
    particle_found : (P,) bool, matched by a double-majority track.
    particle_pt_gev, particle_eta : (P,) float64, transverse momentum (GeV) and pseudorapidity.
    n_candidates : submitted tracks of at least ``MIN_TRACK_HITS`` hits.
    n_fake : candidates matching no particle by double majority.
    n_matched : candidates more than half of whose hits are one (non-noise) particle's.
    n_matched_particles : distinct particles of those ``n_matched`` tracks.
    """

    score: float | None
    n_hits: int
    particle_id: np.ndarray
    particle_found: np.ndarray
    particle_pt_gev: np.ndarray
    particle_eta: np.ndarray
    n_candidates: int
    n_fake: int
    n_matched: int
    n_matched_particles: int

    @property
    def n_particles(self) -> int:
        return int(self.particle_id.size)

    @property
    def efficiency(self) -> float | None:
        return _ratio(int(self.particle_found.sum()), self.n_particles)

    @property
    def efficiency_pt1(self) -> float | None:
        high = self.particle_pt_gev > PT_ONE_GEV
        return _ratio(int(self.particle_found[high].sum()), int(high.sum()))

    @property
    def fake_rate(self) -> float | None:
        return _ratio(self.n_fake, self.n_candidates)

    @property
    def duplicate_rate(self) -> float | None:
        return _ratio(self.n_matched - self.n_matched_particles, self.n_matched)


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def score_event(
    track_id: np.ndarray,
    particle_id: np.ndarray,
    weight: np.ndarray,
    pt_gev: np.ndarray,
    eta: np.ndarray,
) -> tuple[EventScore, TrackMatches]:
    """Score one event's submission over its evaluated hits.

    Parameters
    ----------
    track_id : (H,) int64, submitted track of each evaluated hit (``UNASSIGNED`` for left out).
    particle_id : (H,) int64, true particle of each hit (``NOISE`` for noise).
    weight : (H,) float, hit weights (``trackml_weights`` over the same hits).
    pt_gev, eta : (H,) float, transverse momentum (GeV) and pseudorapidity of each hit's particle
        (any value for noise).

    Returns
    -------
    The ``EventScore`` and the ``TrackMatches`` it was computed from.
    """
    particle_id = np.asarray(particle_id, dtype=np.int64)
    weight = np.asarray(weight, dtype=np.float64)
    matches = match_tracks(track_id, particle_id)
    total = weight.sum()
    score = float(weight[matches.counted(particle_id)].sum()) if total > 0 else None

    particles, first_hit, size = np.unique(particle_id, return_index=True, return_counts=True)
    keep = (particles != NOISE) & (size >= MIN_PARTICLE_HITS)
    reconstructable = particles[keep]
    found = np.isin(reconstructable, matches.majority_particle[matches.matched])
    candidate = matches.candidate
    pure = (
        candidate
        & (matches.majority_particle != NOISE)
        & (2 * matches.majority_hits > matches.n_hits)
    )
    return (
        EventScore(
            score=score,
            n_hits=int(particle_id.size),
            particle_id=reconstructable,
            particle_found=found,
            particle_pt_gev=np.asarray(pt_gev, dtype=np.float64)[first_hit[keep]],
            particle_eta=np.asarray(eta, dtype=np.float64)[first_hit[keep]],
            n_candidates=int(candidate.sum()),
            n_fake=int((candidate & ~matches.matched).sum()),
            n_matched=int(pure.sum()),
            n_matched_particles=int(np.unique(matches.majority_particle[pure]).size),
        ),
        matches,
    )


def binned_counts(
    values: np.ndarray, found: np.ndarray, edges: np.ndarray | Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Found and total counts of particles in bins of ``values``.

    Parameters
    ----------
    values : (P,) float, e.g. pT in GeV or eta.
    found : (P,) bool.
    edges : (B + 1,) increasing bin edges (the last may be ``inf``); bin i holds
        ``edges[i] <= value < edges[i + 1]``; values outside every bin are not counted.

    Returns
    -------
    ((B,) int64 found, (B,) int64 total).
    """
    edges = np.asarray(edges, dtype=np.float64)
    n_bins = edges.size - 1
    index = np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="right") - 1
    inside = (index >= 0) & (index < n_bins)
    total = np.bincount(index[inside], minlength=n_bins)
    found_in = inside & np.asarray(found, dtype=bool)
    return np.bincount(index[found_in], minlength=n_bins).astype(np.int64), total.astype(np.int64)
