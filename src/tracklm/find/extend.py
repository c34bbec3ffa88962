"""Extension of seeds layer by layer: the helix through the last three layers predicts where the
track crosses the next layer, and a hit near there joins it.

All active tracks move one layer per step, vectorised. At each step:

1. a helix is fitted through the track's last three anchor hits (one hit per layer: the best of
   the layer; ``tracking.helix.fit_helix``, exact through three points);
2. its crossings with every layer not yet visited are computed (``HelixFit.intersect_cylinder``
   for barrels, ``intersect_plane_z`` for disks); the nearest ahead, inside the layer's extent, is
   the next layer;
3. the hits near the crossing (``HitIndex.candidates``) get a chi2 from the residuals and the
   prediction's uncertainty (a floor plus multiple scattering: ``prediction_sigmas``);
4. a ``StepDecider`` picks the hit that joins (or none) and, optionally, a second hit of the same
   layer on another module (the overlapping neighbour: 80% of real tracks have such a pair);
   ``helix_decider`` takes the smallest chi2 below ``chi2_max``.

A track ends when no layer lies ahead, after more than ``max_missed_layers`` crossed layers in a
row without a hit, or at ``max_hits``. Lengths in mm, momenta in GeV.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tracklm.find.config import FinderConfig
from tracklm.find.hits import EventHits, HitIndex
from tracklm.find.layers import FinderLayers
from tracklm.find.seeds import Seeds, prediction_sigmas
from tracklm.tracking.helix import HelixFit, fit_helix

# A crossing counts as ahead when it lies this much transverse arc length past the last anchor.
_MIN_STEP_MM = 1.0
# Slack on a layer's extent when deciding whether a track crosses it.
_EXTENT_MARGIN_MM = 5.0


@dataclass
class TrackCandidates:
    """N track candidates, as the extension grows them.

    Attributes
    ----------
    hits : (N, H) int64 hit indices in the order they joined, -1 after ``n_hits``.
    n_hits : (N,) number of hits.
    anchors : (N, 3) the last three anchor hits (one per layer), in the direction of growth.
    seed : (N, 3) the seed's hits, flight order (the anchors to grow backwards from).
    z0_mm : (N,) the seed's z0.
    visited : (N,) int64 bit mask of the layers crossed so far.
    missed : (N,) crossed layers in a row without a hit.
    chi2 : (N,) summed chi2 of the hits that joined after the seed (plus the seed's).
    active : (N,) still growing.
    """

    hits: np.ndarray
    n_hits: np.ndarray
    anchors: np.ndarray
    seed: np.ndarray
    z0_mm: np.ndarray
    visited: np.ndarray
    missed: np.ndarray
    chi2: np.ndarray
    active: np.ndarray

    def __len__(self) -> int:
        return int(self.n_hits.shape[0])

    @classmethod
    def from_seeds(cls, seeds: Seeds, hits: EventHits, max_hits: int) -> TrackCandidates:
        n = len(seeds)
        table = np.full((n, max_hits), -1, dtype=np.int64)
        table[:, :3] = seeds.hits
        visited = np.zeros(n, dtype=np.int64)
        for k in range(3):
            visited |= np.left_shift(1, hits.layer[seeds.hits[:, k]]).astype(np.int64)
        return cls(
            hits=table,
            n_hits=np.full(n, 3, dtype=np.int64),
            anchors=seeds.hits.copy(),
            seed=seeds.hits.copy(),
            z0_mm=seeds.z0_mm.copy(),
            visited=visited,
            missed=np.zeros(n, dtype=np.int64),
            chi2=seeds.chi2.astype(np.float64).copy(),
            active=np.ones(n, dtype=bool),
        )


@dataclass(frozen=True)
class StepCandidates:
    """The hits a step may add: candidate k answers track ``rows[query[k]]``.

    Attributes
    ----------
    layer : the layer all these tracks cross next.
    rows : (Q,) track indices (into ``TrackCandidates``).
    query : (K,) index into ``rows``.
    hit : (K,) hit index.
    chi2 : (K,) chi2 of the hit against the prediction.
    backward : the tracks grow towards the beam line (the new hit comes before their others).
    """

    layer: int
    rows: np.ndarray
    query: np.ndarray
    hit: np.ndarray
    chi2: np.ndarray
    backward: bool = False


StepDecider = Callable[[TrackCandidates, StepCandidates], np.ndarray]
"""Chooses the candidates that join their tracks: a (K,) bool mask over the step's candidates, at
most one per module. The taken candidate of smallest chi2 becomes the track's anchor on the layer."""


def first_per_module(step: StepCandidates, modules: np.ndarray, score: np.ndarray) -> np.ndarray:
    """(K,) bool: each candidate that is its query's best (lowest ``score``) on its module.

    Together with a rank within the query (``rank_in_query``) this lets a decider take the best
    hit and the overlapping neighbours on other modules.
    """
    module = modules[step.hit]
    order = np.lexsort((score, module, step.query))
    keep = np.ones(order.size, dtype=bool)
    q, m = step.query[order], module[order]
    keep[1:] = (q[1:] != q[:-1]) | (m[1:] != m[:-1])
    result = np.zeros(order.size, dtype=bool)
    result[order[keep]] = True
    return result


def rank_in_query(query: np.ndarray, score: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """(K,) rank (0 = best, lowest ``score``) of each eligible candidate within its query;
    ineligible candidates get a rank past every eligible one."""
    order = np.lexsort((score, ~eligible, query))
    q = query[order]
    first = np.r_[True, q[1:] != q[:-1]] if q.size else np.zeros(0, dtype=bool)
    start = np.maximum.accumulate(np.where(first, np.arange(q.size), 0)) if q.size else q
    rank = np.empty(q.size, dtype=np.int64)
    rank[order] = np.arange(q.size) - start
    return np.where(eligible, rank, np.iinfo(np.int64).max)


def helix_decider(config: FinderConfig, hits: EventHits) -> StepDecider:
    """The classical choice: the candidate of smallest chi2 below ``chi2_max``, then the best ones
    on other modules below ``overlap_chi2_max``, up to ``max_hits_per_layer`` in all."""

    def decide(tracks: TrackCandidates, step: StepCandidates) -> np.ndarray:
        distinct = first_per_module(step, hits.module, step.chi2)
        rank = rank_in_query(step.query, step.chi2, distinct)
        return best_and_overlaps(step, rank, (rank == 0) & (step.chi2 < config.chi2_max), config)

    return decide


def best_and_overlaps(
    step: StepCandidates, rank: np.ndarray, best: np.ndarray, config: FinderConfig
) -> np.ndarray:
    """The chosen candidates of a step: ``best`` (at most one per query), and for the queries that
    have one, the next ranked candidates below ``overlap_chi2_max``, up to ``max_hits_per_layer``
    in all (same-layer overlap hits on other modules)."""
    has_best = np.zeros(step.rows.size, dtype=bool)
    has_best[step.query[best]] = True
    extra = (
        (rank > 0)
        & (rank < config.max_hits_per_layer)
        & (step.chi2 < config.overlap_chi2_max)
        & has_best[step.query]
    )
    result: np.ndarray = best | extra
    return result


def _take(fit: HelixFit, rows: np.ndarray) -> HelixFit:
    """The helices of ``rows``."""
    return HelixFit(
        centre_x_mm=fit.centre_x_mm[rows],
        centre_y_mm=fit.centre_y_mm[rows],
        radius_mm=fit.radius_mm[rows],
        rotation=fit.rotation[rows],
        phi_ref=fit.phi_ref[rows],
        z_ref_mm=fit.z_ref_mm[rows],
        dz_ds=fit.dz_ds[rows],
        s_mm=fit.s_mm[rows],
        straight=fit.straight[rows],
        b_field_t=fit.b_field_t,
    )


def next_crossings(
    fit: HelixFit, layers: FinderLayers, visited: np.ndarray, s_max: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The next layer each helix crosses after its last fitted point, and the arc length there.

    ``s_max`` (N,), when given, bounds the arc length (growing backwards: the closest approach to
    the beam line, past which the helix would come back out on the other side).

    Returns
    -------
    layer : (N,) int64 layer index (-1 where no unvisited layer lies ahead).
    s_mm : (N,) transverse arc length of that crossing (s = 0 at the first fitted point).
    """
    n = len(fit)
    s_last = fit.s_mm[:, -1]
    s_lo = s_last + _MIN_STEP_MM
    best_s = np.full(n, np.inf)
    best_layer = np.full(n, -1, dtype=np.int64)
    half_turn = np.pi * fit.radius_mm
    limit = s_last + half_turn if s_max is None else np.minimum(s_last + half_turn, s_max)
    for index in range(len(layers)):
        todo = (visited >> index) & 1 == 0
        if not todo.any():
            continue
        if layers.is_barrel[index]:
            xyz, s, crosses = fit.intersect_cylinder(
                np.full(n, layers.radius_mm[index]), s_lo, np.full(n, np.inf)
            )
            along = xyz[:, 2]
            lo, hi = layers.z_min_mm[index], layers.z_max_mm[index]
        else:
            xyz, s, crosses = fit.intersect_plane_z(np.full(n, layers.z_mm[index]))
            along = np.hypot(xyz[:, 0], xyz[:, 1])
            lo, hi = layers.r_min_mm[index], layers.r_max_mm[index]
        ok = (
            todo
            & crosses
            & (s >= s_lo - 1e-6)
            & (s < limit)
            & (along >= lo - _EXTENT_MARGIN_MM)
            & (along <= hi + _EXTENT_MARGIN_MM)
            & (s < best_s)
        )
        best_s = np.where(ok, s, best_s)
        best_layer = np.where(ok, index, best_layer)
    return best_layer, best_s


def extend_tracks(
    tracks: TrackCandidates,
    hits: EventHits,
    index: HitIndex,
    layers: FinderLayers,
    config: FinderConfig,
    decide: StepDecider,
    b_field_t: float,
    backward: bool = False,
) -> TrackCandidates:
    """Grow every active track layer by layer until it ends (see the module docstring).

    With ``backward``, every track restarts from its seed and grows against the flight
    direction, towards the beam line, through the layers it has not crossed yet: a seed on the
    second, third and fourth layers of a particle gets its first hits back.

    Parameters
    ----------
    tracks : the candidates (changed in place and returned).
    hits : the event's hits.
    index : spatial index of the hits a track may take.
    layers : the layers.
    config : windows and cuts.
    decide : picks the hits that join at each step (``helix_decider`` or the model's).
    b_field_t : the field (tesla).
    """
    max_hits = tracks.hits.shape[1]
    if backward:
        tracks.anchors = tracks.seed[:, ::-1].copy()
        tracks.missed[:] = 0
        tracks.active = tracks.n_hits < max_hits
    for _ in range(2 * len(layers)):
        rows = np.flatnonzero(tracks.active)
        if rows.size == 0:
            break
        anchors = tracks.anchors[rows]
        fit = fit_helix(
            hits.xyz_mm[anchors], np.ones(anchors.shape, dtype=bool), b_field_t=b_field_t
        )
        layer, s = next_crossings(
            fit, layers, tracks.visited[rows], fit.perigee_s_mm() if backward else None
        )
        ends = layer < 0
        tracks.active[rows[ends]] = False
        for target in np.unique(layer[~ends]):
            local = np.flatnonzero(layer == target)
            _step(tracks, rows[local], _take(fit, local), s[local], int(target), hits, index,
                  layers, config, decide, backward)  # fmt: skip
        full = tracks.n_hits >= max_hits
        tracks.active &= ~full & (tracks.missed <= config.max_missed_layers)
    return tracks


def _step(
    tracks: TrackCandidates,
    rows: np.ndarray,
    fit: HelixFit,
    s_cross: np.ndarray,
    layer: int,
    hits: EventHits,
    index: HitIndex,
    layers: FinderLayers,
    config: FinderConfig,
    decide: StepDecider,
    backward: bool,
) -> None:
    """One layer for the tracks ``rows`` that all cross ``layer`` next."""
    point = fit.point_at(s_cross)
    direction = fit.direction_at(s_cross)
    transverse = np.maximum(np.hypot(direction[:, 0], direction[:, 1]), 1e-9)
    tangent = direction / transverse[:, None]
    step_mm = s_cross - fit.s_mm[:, -1]
    sigma_t, sigma_l = prediction_sigmas(
        config, bool(layers.is_barrel[layer]), step_mm, fit.pt_gev(), fit.dz_ds
    )
    found = index.candidates(
        layer, point, tangent, config.search_sigmas * sigma_t, config.search_sigmas * sigma_l
    )
    chi2 = (found.residual_t_mm / sigma_t[found.query]) ** 2 + (
        found.residual_l_mm / sigma_l[found.query]
    ) ** 2
    take = decide(tracks, StepCandidates(layer, rows, found.query, found.hit, chi2, backward))
    tracks.visited[rows] |= np.int64(1) << np.int64(layer)
    query, hit, chi2 = found.query[take], found.hit[take], chi2[take]
    order = np.lexsort((chi2, query))
    query, hit, chi2 = query[order], hit[order], chi2[order]
    first = np.r_[True, query[1:] != query[:-1]] if query.size else np.zeros(0, dtype=bool)
    got = np.zeros(rows.size, dtype=bool)
    got[query] = True
    tracks.missed[rows[~got]] += 1
    tracks.missed[rows[got]] = 0
    anchor_rows = rows[query[first]]
    tracks.anchors[anchor_rows] = np.concatenate(
        [tracks.anchors[anchor_rows, 1:], hit[first, None]], axis=1
    )
    tracks.chi2[anchor_rows] += chi2[first]
    # Append every taken hit; a track holding max_hits keeps its first ones.
    target = rows[query]
    slot = tracks.n_hits[target] + (
        np.arange(query.size) - np.maximum.accumulate(np.where(first, np.arange(query.size), 0))
    )
    room = slot < tracks.hits.shape[1]
    tracks.hits[target[room], slot[room]] = hit[room]
    np.add.at(tracks.n_hits, target[room], 1)


def add_seed_layer_hits(
    tracks: TrackCandidates,
    hits: EventHits,
    index: HitIndex,
    layers: FinderLayers,
    config: FinderConfig,
    decide: StepDecider,
    b_field_t: float,
) -> TrackCandidates:
    """Give every track the overlapping neighbours of its seed hits (the extension only searches
    the layers after the seed): the helix through the seed predicts each seed layer again, and
    the decider's extra hits there (other modules than the seed hit's) join the track."""
    fit = fit_helix(hits.xyz_mm[tracks.seed], np.ones(tracks.seed.shape, bool), b_field_t=b_field_t)
    rows_all = np.arange(len(tracks))
    for k in range(3):
        seed_hit = tracks.seed[:, k]
        seed_layer = hits.layer[seed_hit]
        for target in np.unique(seed_layer):
            local = np.flatnonzero(seed_layer == target)
            sub = _take(fit, local)
            s_k = sub.s_mm[:, k]
            point = sub.point_at(s_k)
            direction = sub.direction_at(s_k)
            tangent = (
                direction / np.maximum(np.hypot(direction[:, 0], direction[:, 1]), 1e-9)[:, None]
            )
            sigma_t, sigma_l = prediction_sigmas(
                config,
                bool(layers.is_barrel[target]),
                np.zeros(local.size),
                sub.pt_gev(),
                sub.dz_ds,
            )
            found = index.candidates(
                int(target), point, tangent, config.search_sigmas * sigma_t,
                config.search_sigmas * sigma_l,
            )  # fmt: skip
            chi2 = (found.residual_t_mm / sigma_t[found.query]) ** 2 + (
                found.residual_l_mm / sigma_l[found.query]
            ) ** 2
            rows = rows_all[local]
            take = decide(tracks, StepCandidates(int(target), rows, found.query, found.hit, chi2))
            # the seed hit itself is a candidate too: only its neighbours on other modules join
            same_module = hits.module[found.hit] == hits.module[seed_hit[rows[found.query]]]
            take &= ~same_module
            target_rows = rows[found.query[take]]
            hit = found.hit[take]
            order = np.argsort(target_rows, kind="stable")
            target_rows, hit = target_rows[order], hit[order]
            first = np.r_[True, target_rows[1:] != target_rows[:-1]] if hit.size else hit > 0
            rank = np.arange(hit.size) - np.maximum.accumulate(
                np.where(first, np.arange(hit.size), 0)
            )
            slot = tracks.n_hits[target_rows] + rank
            room = slot < tracks.hits.shape[1]
            tracks.hits[target_rows[room], slot[room]] = hit[room]
            np.add.at(tracks.n_hits, target_rows[room], 1)
    return tracks
