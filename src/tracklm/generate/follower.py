"""The physics baseline of track generation: a helix follower from a track's first hits.

``HelixFollower(context).complete(tokens, lengths)`` completes every track of a batch from its
seed hits, the way a tracking physicist would with the same information:

1. Fit a helix to the seeds, as the masked evaluation's helix does
   (``tracklm.evaluate.baselines.HelixBaseline``): the beam spot as a leading pseudo-point, then
   the seed modules' CENTRES weighted by where on the module the hit may lie
   (``ModuleFrames.covariance``), the x-y circle through the beam line (``fit_circle_origin``)
   with a Gaussian prior on its curvature (three module centres barely measure it); two hits on
   one layer (an overlap) stand at the middle of the two modules' overlap (``module_points``).
   With ``use_hits=True``: the measured hit positions and a free circle.
2. Find the arc length ``s_last`` at which the helix crosses the last module's plane.
3. Cross every layer beyond ``s_last`` (``TokenLayers.intersect``) inside its coverage, move each
   crossing onto the planes of the layer's nearest modules along the track and keep the modules
   that contain it (``ModuleFrames.outside_local`` at most 1 + a tolerance), with the arc length
   at their planes: on a layer the track has not touched yet its best module (``tolerance``),
   and any module within ``overlap_tolerance`` (the second module of an overlap, also the overlap
   partner of the last seed).
4. Emit the kept module with the smallest arc length beyond ``s_last`` (two overlapping modules
   of one layer come out in flight order), refit with it (``refit``; on module centres only),
   and repeat. A track ends when no layer ahead has a containing module, or at ``max_length``
   hits; ``min_generated`` makes it go on (a next hit known to exist: the best module of the
   next layer crossed, else of the last hit's layer).

The tolerances, the prior and the refit choice were tuned on the simulated training split for
exact completion. Everything is vectorised over tracks; the loops run over steps and layers.
Lengths in mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tracklm.detector.frames import ModuleFrames
from tracklm.tracking.helix import HelixFit, fit_helix

if TYPE_CHECKING:  # only its attributes are read: no run-time import of tasks (and torch)
    from tracklm.tasks.common import TaskContext

# Beam spot (transverse, z sigma in mm) and a measured hit's sigma, as the masked evaluation's
# helix uses them (``tracklm.evaluate.baselines``).
BEAM_SIGMA_MM = (1.0, 10.0)
HIT_SIGMA_MM = 0.1
# Spread of the prior on the curvature (1/mm) of a fit through module centres; None: no prior.
CURVATURE_SIGMA_PER_MM: float | None = 0.002
# How far (mm of arc length) a layer's mean surface may lie behind the last module's plane and
# still be searched (overlap partners of the last module; the stagger of a disk's modules).
LAYER_BEHIND_MM = 10.0
# Directions this close to a module plane (|w| component) are not moved onto it.
GRAZING = 0.05


@dataclass
class Completion:
    """Completed tracks; N rows.

    Attributes
    ----------
    tokens : (N, max_length) int64, the seed tokens, then the generated modules, ``[PAD]`` (0)
        after the last.
    lengths : (N,) int64, total hits (seeds + generated).
    positions_mm : (N, max_length, 3) float64, the helix's crossing of every seed module's plane
        (on the seeds' fit), then its crossing of every generated module's plane; NaN after the end.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    positions_mm: np.ndarray

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


@dataclass
class _Candidates:
    """The best next module of each track found so far (internal; updated layer by layer)."""

    token: np.ndarray  # (N,) int64, -1 where none
    s_mm: np.ndarray  # (N,) arc length at its plane, inf where none
    xyz_mm: np.ndarray  # (N, 3) the helix's crossing of its plane
    layer: np.ndarray  # (N,) int64

    @classmethod
    def empty(cls, n: int) -> _Candidates:
        return cls(
            token=np.full(n, -1, dtype=np.int64),
            s_mm=np.full(n, np.inf),
            xyz_mm=np.full((n, 3), np.nan),
            layer=np.full(n, -1, dtype=np.int64),
        )


def _onto_planes(
    frames: ModuleFrames, rows: np.ndarray, xyz_mm: np.ndarray, direction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move points along straight lines onto module planes.

    Parameters
    ----------
    frames : module frames.
    rows : (N, K) frame rows (clipped).
    xyz_mm : (N, 3) points near the planes; direction : (N, 3) unit directions.

    Returns
    -------
    uvw_mm : (N, K, 3) the moved points in each module's local frame (w = 0 unless grazing).
    step_mm : (N, K) signed 3D distance moved along ``direction`` (0 where grazing).
    """
    xyz = np.broadcast_to(xyz_mm[:, None, :], (*rows.shape, 3))
    uvw = frames.to_local(rows, xyz)
    along = (direction[:, None, :, None] * frames.rotations[rows]).sum(axis=-2)
    dw = along[..., 2]
    ok = np.abs(dw) > GRAZING
    step = np.where(ok, -uvw[..., 2] / np.where(ok, dw, 1.0), 0.0)
    return uvw + step[..., None] * along, step


def module_points(
    frames: ModuleFrames,
    tokens: np.ndarray,
    layers: np.ndarray,
    real: np.ndarray,
    normal_sigma_mm: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Where each module says its hit is, for a helix fit through module centres.

    A hit is anywhere on its module: the centre, with the covariance of a uniform spread over
    the module (``ModuleFrames.covariance``). Two consecutive hits on one layer (an overlap) lie
    where the two modules overlap: both stand at the middle of the intersection of the two
    outlines (in the first module's frame, the second module's centre moved into it), with the
    spread of that intersection, doubled since the two points stand for one constraint.

    Parameters
    ----------
    frames : module frames by token id.
    tokens : (N, K) int, module tokens in flight order.
    layers : (N, K) int, their layer indices (-1 where none).
    real : (N, K) bool, the hits that exist.
    normal_sigma_mm : spread along the module normal.

    Returns
    -------
    points_mm : (N, K, 3) and covariances_mm2 : (N, K, 3, 3).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    rows = frames.clipped(tokens)
    points = frames.centres[rows].copy()
    cov = frames.covariance(rows, normal_sigma_mm)
    a, b = rows[:, :-1], rows[:, 1:]
    pair = real[:, :-1] & real[:, 1:] & (layers[:, :-1] == layers[:, 1:]) & (layers[:, 1:] >= 0)
    offset = frames.to_local(a, frames.centres[b])  # (N, K-1, 3): b's centre in a's frame
    half_a = np.stack([0.5 * (frames.minhu[a] + frames.maxhu[a]), frames.hv[a]], axis=-1)
    half_b = np.stack([0.5 * (frames.minhu[b] + frames.maxhu[b]), frames.hv[b]], axis=-1)
    lo = np.maximum(-half_a, offset[..., :2] - half_b)
    hi = np.minimum(half_a, offset[..., :2] + half_b)
    width = hi - lo  # (N, K-1, 2) extent of the overlap along u and v
    pair &= np.all(width > 0, axis=-1)
    middle = np.concatenate([0.5 * (lo + hi), 0.5 * offset[..., 2:]], axis=-1)
    global_middle = np.einsum("nkij,nkj->nki", frames.rotations[a], middle) + frames.centres[a]
    u, v, w = (frames.rotations[a][..., i] for i in range(3))
    spread = width**2 / 12.0
    overlap_cov = 2.0 * (
        spread[..., 0, None, None] * u[..., :, None] * u[..., None, :]
        + spread[..., 1, None, None] * v[..., :, None] * v[..., None, :]
        + normal_sigma_mm**2 * w[..., :, None] * w[..., None, :]
    )
    for side in (slice(None, -1), slice(1, None)):
        points[:, side] = np.where(pair[..., None], global_middle, points[:, side])
        cov[:, side] = np.where(pair[..., None, None], overlap_cov, cov[:, side])
    return points, cov


class HelixFollower:
    """Complete tracks from their first hits by following a helix (see the module docstring).

    Parameters
    ----------
    context : the dataset's detector (layers, module centres and frames).
    use_hits : fit the seeds' measured hit positions (True) or their module centres (False).
    max_length : hits per completed track at most (seeds included).
    tolerance : how far outside a module (``ModuleFrames.outside_local``, 1 on its edge) the
        crossing of a layer not yet touched may lie for that module to be emitted: 1 + tolerance.
    overlap_tolerance : the same for a further module of a layer the track already has a hit on
        (the second module of an overlap), and for every module but a layer's best.
    candidates : nearest module centres looked at per layer crossing.
    coverage_margin_mm : a layer is searched only where the helix crosses it within its
        coverage (``TokenLayers.coverage_lo_mm`` / ``coverage_hi_mm``) widened by this margin.
    refit : refit the helix after every emitted module, with the module's centre as a point;
        default on module centres only (a module says little next to measured hits, and its
        centre as a Gaussian point then pulls the fit off).
    curvature_sigma_per_mm : on module centres, a Gaussian prior on the circle's curvature
        about 0 (``fit_circle_origin``): three module centres barely measure it.
    overlaps : fit the two hits of a same-layer overlap at the middle of the overlap
        (``module_points``) rather than at their modules' centres.
    beam_sigma_mm : (transverse, z) spread of the beam spot pseudo-point.
    hit_sigma_mm : isotropic uncertainty of a measured hit (``use_hits=True``).
    """

    def __init__(
        self,
        context: TaskContext,
        *,
        use_hits: bool = False,
        max_length: int = 8,
        tolerance: float = 0.0,
        overlap_tolerance: float = 0.0,
        candidates: int = 8,
        coverage_margin_mm: float = 0.0,
        refit: bool | None = None,
        overlaps: bool = True,
        curvature_sigma_per_mm: float | None = CURVATURE_SIGMA_PER_MM,
        beam_sigma_mm: tuple[float, float] = BEAM_SIGMA_MM,
        hit_sigma_mm: float = HIT_SIGMA_MM,
    ) -> None:
        self.context = context
        self.surfaces = context.surfaces
        frames = context.frames
        if frames is None:
            frames = ModuleFrames.approximate(
                self.surfaces.module_table(), len(self.surfaces.layer_of_token)
            )
        self.frames = frames
        self.use_hits = use_hits
        self.max_length = max_length
        self.tolerance = tolerance
        self.overlap_tolerance = overlap_tolerance
        self.candidates = candidates
        self.coverage_margin_mm = coverage_margin_mm
        self.refit = (not use_hits) if refit is None else refit
        self.curvature_sigma_per_mm = curvature_sigma_per_mm
        self.overlaps = overlaps
        self.beam_sigma_mm = beam_sigma_mm
        self.hit_sigma_mm = hit_sigma_mm

    # ------------------------------------------------------------------ fitting
    def _fit(self, points: np.ndarray, cov: np.ndarray, mask: np.ndarray) -> HelixFit:
        """Helix through the beam spot and the masked points (N, K, 3) with covariances."""
        n = len(points)
        sxy, sz = self.beam_sigma_mm
        beam = np.broadcast_to(np.diag([sxy**2, sxy**2, sz**2]), (n, 1, 3, 3))
        xyz = np.concatenate([np.zeros((n, 1, 3)), np.where(mask[..., None], points, 0.0)], 1)
        full_mask = np.concatenate([np.ones((n, 1), dtype=bool), mask], axis=1)
        return fit_helix(
            xyz,
            full_mask,
            np.concatenate([beam, cov], axis=1),
            through_origin=not self.use_hits,
            b_field_t=self.context.b_field_t,
            curvature_sigma_per_mm=None if self.use_hits else self.curvature_sigma_per_mm,
        )

    def _plane_crossing(
        self, fit: HelixFit, token: np.ndarray, s_near: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(s (N,), xyz (N, 3)): where each helix crosses the plane of module ``token`` (N,),
        starting from arc length ``s_near`` (N,) (two straight-line steps along the helix)."""
        rows = self.frames.clipped(token)[:, None]
        s = s_near
        for _ in range(2):
            xyz = fit.point_at(s)
            direction = fit.direction_at(s)
            _, step = _onto_planes(self.frames, rows, xyz, direction)
            s = s + step[:, 0] * np.hypot(direction[:, 0], direction[:, 1])
        s = np.where(np.isfinite(s), s, s_near)
        return s, fit.point_at(s)

    # ------------------------------------------------------------------ one step
    def _layer_candidates(
        self,
        fit: HelixFit,
        layer: int,
        s_last: np.ndarray,
        used: np.ndarray,
        visited: np.ndarray,
        best: _Candidates,
        active: np.ndarray,
        forced: int = 0,
    ) -> None:
        """Offer the modules of ``layer`` that contain the helix's crossing to ``best`` (in place).

        A module is offered when the crossing moved onto its plane lies beyond ``s_last`` and
        inside it: within 1 + ``overlap_tolerance``, or, for the best module of a layer the
        track has not ``visited`` (N,), within 1 + ``tolerance``. ``used`` (N, E) are excluded.
        ``forced`` (a track that must go on): 1, the best module of a layer not visited is
        offered however far the crossing lies from it; 2, also on a visited layer and outside
        the layer's coverage.
        """
        n = len(fit)
        y = np.full(n, layer)
        xyz, s, crosses = self.surfaces.intersect(fit, y, s_last, np.full(n, np.inf))
        barrel = self.surfaces.is_barrel[layer]
        along = xyz[:, 2] if barrel else np.hypot(xyz[:, 0], xyz[:, 1])
        margin = np.inf if forced == 2 else self.coverage_margin_mm
        covered = (along >= self.surfaces.coverage_lo_mm[layer] - margin) & (
            along <= self.surfaces.coverage_hi_mm[layer] + margin
        )
        rows = np.flatnonzero(active & crosses & covered & (s > s_last - LAYER_BEHIND_MM))
        if len(rows) == 0:
            return
        direction = fit.direction_at(s)[rows]
        tokens, _ = self.surfaces.nearest_modules(
            y[rows], xyz[rows], k=self.candidates, exclude=used[rows]
        )
        frame_rows = self.frames.clipped(tokens)
        uvw, step = _onto_planes(self.frames, frame_rows, xyz[rows], direction)
        outside = np.where(tokens >= 0, self.frames.outside_local(frame_rows, uvw), np.inf)
        s_plane = s[rows, None] + step * np.hypot(direction[:, 0], direction[:, 1])[:, None]
        beyond = s_plane > s_last[rows, None]
        outside = np.where(beyond, outside, np.inf)
        is_best = np.arange(tokens.shape[1])[None, :] == np.argmin(outside, axis=1)[:, None]
        fresh = (forced == 2) | ~visited[rows, layer, None]
        loose = is_best & fresh & ((forced > 0) | (outside <= 1.0 + self.tolerance))
        ok = loose | (outside <= 1.0 + self.overlap_tolerance)
        s_ok = np.where(ok, s_plane, np.inf)
        pick = np.argmin(s_ok, axis=1)
        s_pick = s_ok[np.arange(len(rows)), pick]
        better = s_pick < best.s_mm[rows]
        where = rows[better]
        pick = pick[better]
        best.token[where] = tokens[better, pick]
        best.s_mm[where] = s_pick[better]
        moved = step[better, pick][:, None] * direction[better]
        best.xyz_mm[where] = xyz[where] + moved
        best.layer[where] = layer

    def next_modules(
        self,
        fit: HelixFit,
        s_last: np.ndarray,
        used: np.ndarray,
        visited: np.ndarray,
        active: np.ndarray,
        forced: np.ndarray | None = None,
        last_layer: np.ndarray | None = None,
    ) -> _Candidates:
        """The next module of every ``active`` (N,) track after arc length ``s_last`` (N,).

        ``used`` (N, E) token ids never emitted (-1 or 0 for none); ``visited`` (N, Y) the layers
        the track already has a hit on; ``forced`` (N,) the tracks that may not end here, with
        ``last_layer`` (N,) the layer of their last hit: where no module contains the helix's
        crossing, the best module of the first layer crossed ahead (inside its coverage) is taken,
        else, at the end of the detector, the best unused module of the last hit's layer (the
        partner of an overlap). Returns the candidates (token -1 where the track ends).
        """
        best = _Candidates.empty(len(fit))
        for layer in range(len(self.surfaces)):
            self._layer_candidates(fit, layer, s_last, used, visited, best, active)
        if forced is None or last_layer is None:
            return best
        again = forced & active & (best.token < 0)
        for layer in range(len(self.surfaces)):
            self._layer_candidates(fit, layer, s_last, used, visited, best, again, forced=1)
        again &= best.token < 0
        for layer in np.unique(last_layer[again]):
            on_layer = again & (last_layer == layer)
            self._layer_candidates(fit, int(layer), s_last, used, visited, best, on_layer, 2)
        return best

    # ------------------------------------------------------------------ the loop
    def _fit_tracks(
        self, tokens: np.ndarray, mask: np.ndarray, seed_hits: np.ndarray | None
    ) -> HelixFit:
        """Fit every track's ``mask``ed modules (N, M): the seeds' measured hits (N, S, 3) where
        given (``use_hits``), else the points the modules stand for (``module_points``)."""
        layers = self.context.layer_of(tokens)
        if self.overlaps:
            points, cov = module_points(self.frames, tokens, layers, mask)
        else:
            points = self.context.centres_of(tokens)
            cov = self.frames.covariance(tokens)
        if seed_hits is not None:
            width = seed_hits.shape[1]
            points[:, :width] = seed_hits
            cov[:, :width] = self.hit_sigma_mm**2 * np.eye(3)
        return self._fit(points, cov, mask)

    def complete(
        self,
        tokens: np.ndarray,
        lengths: np.ndarray,
        hits: np.ndarray | None = None,
        min_generated: int = 0,
    ) -> Completion:
        """Complete every track from its seeds.

        Parameters
        ----------
        tokens : (N, S) int, seed module token ids (padded after ``lengths``).
        lengths : (N,) int, seeds per track (at least 2; typically 3).
        hits : (N, S, 3) mm, the seeds' measured positions (required with ``use_hits``).
        min_generated : modules generated at least (up to ``max_length``) before a track may
            end (``next_modules``' ``forced``): for predicting a next hit known to exist.

        Returns
        -------
        Completion, ``max_length`` wide.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        n, m = len(lengths), self.max_length
        seeds = np.asarray(tokens, dtype=np.int64)[:, :m]
        width = seeds.shape[1]
        out = np.zeros((n, m), dtype=np.int64)
        real = np.arange(width)[None, :] < lengths[:, None]
        out[:, :width] = np.where(real, seeds, 0)
        seed_hits = None
        if self.use_hits:
            if hits is None:
                raise ValueError("HelixFollower(use_hits=True) needs hits")
            seed_hits = np.nan_to_num(np.asarray(hits, dtype=np.float64)[:, :width])
        mask = np.zeros((n, m), dtype=bool)
        mask[:, :width] = real
        visited = np.zeros((n, len(self.surfaces)), dtype=bool)
        layers = self.context.layer_of(out)
        rows_all = np.arange(n)
        for j in range(width):
            has = real[:, j] & (layers[:, j] >= 0)
            visited[rows_all[has], layers[has, j]] = True
        positions = np.full((n, m, 3), np.nan)
        count = lengths.copy()
        active = count < m
        fit = self._fit_tracks(out, mask, seed_hits)
        for j in range(width):
            _, xyz_j = self._plane_crossing(fit, out[:, j], np.nan_to_num(fit.s_mm[:, 1 + j]))
            positions[:, j] = np.where(real[:, j, None], xyz_j, np.nan)
        last = lengths - 1
        s_last, _ = self._plane_crossing(
            fit, out[rows_all, last], np.nan_to_num(fit.s_mm[rows_all, 1 + last])
        )
        while active.any():
            used = np.where(np.arange(m)[None, :] < count[:, None], out, -1)
            forced = count - lengths < min_generated
            last_layer = self.context.layer_of(out[rows_all, count - 1])
            best = self.next_modules(fit, s_last, used, visited, active, forced, last_layer)
            found = active & (best.token >= 0)
            rows = np.flatnonzero(found)
            at = count[rows]
            out[rows, at] = best.token[rows]
            positions[rows, at] = best.xyz_mm[rows]
            visited[rows, best.layer[rows]] = True
            count[rows] += 1
            active = found & (count < m)
            s_last = np.where(found, best.s_mm, s_last)
            if self.refit and active.any():
                mask[rows, at] = True
                fit = self._fit_tracks(out, mask, seed_hits)
                last = count - 1
                s_near = fit.arc_length_mm(positions[rows_all, last, :2])
                s_last, _ = self._plane_crossing(fit, out[rows_all, last], np.nan_to_num(s_near))
        return Completion(tokens=out, lengths=count, positions_mm=positions)
