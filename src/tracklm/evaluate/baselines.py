"""Baselines for masked-module prediction that need no training: counting and a helix fit.

Both predict the module of one hidden hit of a track from the hits left visible, on exactly the
tracks and masks the model sees, and both rank candidates (for top-5 accuracy).

``FrequencyBaseline``
    The most frequent module, counted on the training split, given the neighbouring visible
    modules: (previous, next) for a hit inside the track, (next, next-but-one) for a first hit,
    (previous-but-one, previous) for a last hit; it backs off to one neighbour when the pair was
    never seen, then to the most frequent module overall. Modules the track already crossed are
    never proposed (a track has at most one hit per module).
``SequenceBaseline`` (``sequence``)
    The whole visible track looked up: the most frequent module at the hidden hit among training
    tracks of the same length with the same module at every visible hit, else the frequency
    baseline's answer. With enough training tracks it is the most probable module given what
    the model sees. With the 1.5 M tracks of 300 simulated PU200 events, 88% of the hidden hits
    of held-out tracks (first, middle, last) have such matches, 55% at least 20.
``HelixBaseline`` (``helix``; ``helix_hits`` with ``use_hits=True``)
    A tracking physicist's answer from the same information as the model: fit a helix to the
    visible modules' CENTRES, each weighted by where on its module the hit may lie (uniform over
    the module in its local frame: 16.8 mm / sqrt(12) across a pixel module, 72 mm / sqrt(12)
    along it, i.e. along z on a barrel and along r on a disk; ``ModuleFrames.covariance``), with
    the beam spot as a pseudo-point; the x-y circle is fitted through the beam line as azimuth
    against radius (``fit_circle_origin``), the (s, z) line with each point's variance along its
    residual. Then choose the layer of the hidden hit and take the module whose BOUNDS contain
    the helix's crossing of it (``TokenLayers.rank_modules``, with the frames from the detector
    geometry when known, else guessed from the centres), never a module the track already uses.
    The layer is the one the helix crosses between the neighbouring visible hits; else a
    neighbour's own layer where the helix crosses it inside a module the track has not used (an
    overlap: two hits on one layer, about a third of the hidden hits of the demo's tracks);
    else, at a track's end, the next layer crossed beyond it; else the most frequent one in the
    training split for the neighbouring visible layers that the helix crosses near the gap
    (``HelixBaseline.choose_layer``).
    ``helix_hits`` runs the same algorithm on the measured hit positions (free circle): the
    reference for models that see module ids only (it uses information they never have), and
    the baseline that models seeing hit positions must beat.
``HelixFrequencyBaseline`` (``helix+frequency``)
    The frequency baseline's candidates re-ranked by the centre-based helix: candidates the
    helix passes through come first, in frequency order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracklm.detector.frames import ModuleFrames
from tracklm.detector.layers import TokenLayers
from tracklm.evaluate.contexts import (
    ContextModel,
    TopKTable,
    at_index,
    merge_candidates,
    neighbours,
    row_keys,
    visible_tokens,
)
from tracklm.tracking.helix import HelixFit, fit_helix

# What each predictor of the evaluation report is, as the report says it (``metrics.json``).
BASELINE_TEXT = {
    "frequency": "most frequent module given the neighbouring visible modules, counted on the train split",
    "sequence": (
        "most frequent module at the hidden hit among training tracks of the same length whose "
        "every visible hit is on the same module, else the frequency baseline's"
    ),
    "helix": (
        "helix fitted to the visible modules' CENTRES (the information the model has), each "
        "weighted by its module's size in its local frame, through the beam spot; crossed with "
        "the layer of the hidden hit (the one crossed between the neighbouring hits, else a "
        "neighbour's layer where the crossing lies in a module still unused (an overlap), else "
        "from the train-split layer statistics), predicting the module whose bounds contain the "
        "crossing"
    ),
    "helix+frequency": (
        "the frequency baseline's candidates (and the helix's pick), those the centre-based helix "
        "passes through first, in frequency order"
    ),
    "helix_hits": (
        "the same helix algorithm on the measured hit positions: the REFERENCE for models that see "
        "module ids only (they never have those positions), and the BASELINE that models seeing "
        "hit positions must beat"
    ),
    "copy_input": "copies the token visible at the evaluated position (only meaningful under 'unmasked')",
}

# Beam spot (transverse, longitudinal sigma, mm) used as a pseudo-point by the helix fits: the
# luminous region is about 0.04 mm x 6 mm wide in TrackML; the transverse value is loosened
# for particles produced a little off the beam line, z to cover the spread of vertices.
BEAM_SIGMA_MM = (1.0, 10.0)
HIT_SIGMA_MM = 0.1  # a measured pixel hit: resolution and multiple scattering, roughly
# Overlap search on a neighbour's layer: the modules with the nearest centres that are looked at,
# and how far (mm) the crossing of the layer's mean surface may lie off a module's plane (the
# stagger of overlapping modules; the far side of a small barrel is much farther).
OVERLAP_CANDIDATES = 8
PLANE_TOLERANCE_MM = 10.0


class FrequencyBaseline:
    """Most frequent module given the neighbouring visible modules (see the module docstring).

    Parameters
    ----------
    train_tokens : (N, L) training-split tokens.
    train_lengths : (N,) their lengths.
    k : candidates kept per context (top-k accuracy).
    """

    name = "frequency"

    def __init__(self, train_tokens: np.ndarray, train_lengths: np.ndarray, k: int = 5) -> None:
        self.model = ContextModel(train_tokens, train_lengths, k=k)

    def predict(
        self,
        tokens: np.ndarray,
        visible: np.ndarray,
        target: np.ndarray,
        hits_mm: np.ndarray | None = None,
    ) -> np.ndarray:
        """(N, k) ranked module tokens for the hidden hit ``target`` of each track (-1: none).

        ``hits_mm`` is accepted for a common signature and not used.
        """
        return self.model.rank(tokens, visible, target, visible_tokens(tokens, visible))


class SequenceBaseline:
    """The whole visible track looked up on the training split (``sequence``).

    Candidates for the hidden hit are the modules found at its place in training tracks of the
    same length whose every visible hit is on the same module as the evaluated track's, most
    frequent first; where no training track matches, the ``frequency`` baseline's candidates
    follow (they also fill the list when the matches offer fewer than ``k`` modules). Where the
    training split holds many tracks of one visible pattern, this is the most probable module
    given everything a module-token model sees (the length too: the model sees a ``[MASK]`` at
    every hidden hit), so it shows how close a model comes to what the modules say.

    Parameters
    ----------
    train_tokens : (N, L) training-split tokens, ``[PAD]`` (0) after each track's last hit.
    train_lengths : (N,) their lengths.
    fallback : the frequency baseline counted on the same tracks.
    k : candidates kept per hidden hit.
    """

    name = "sequence"

    def __init__(
        self,
        train_tokens: np.ndarray,
        train_lengths: np.ndarray,
        fallback: FrequencyBaseline,
        k: int = 5,
    ) -> None:
        tokens = np.asarray(train_tokens, dtype=np.int64)
        lengths = np.asarray(train_lengths, dtype=np.int64)
        self.k = k
        self.fallback = fallback
        self._by_length = {int(n): tokens[lengths == n] for n in np.unique(lengths)}

    def predict(
        self,
        tokens: np.ndarray,
        visible: np.ndarray,
        target: np.ndarray,
        hits_mm: np.ndarray | None = None,
    ) -> np.ndarray:
        """(N, k) ranked module tokens for the hidden hit ``target`` of each track (-1: none).

        ``tokens`` are read at visible hits, and only for being a hit or padding elsewhere (a
        track's length); ``hits_mm`` is accepted for a common signature and not used.
        """
        tokens = np.asarray(tokens, dtype=np.int64)
        visible = np.asarray(visible, dtype=bool)
        target = np.asarray(target, dtype=np.int64)
        n, width = tokens.shape
        lengths = (tokens != 0).sum(axis=1)
        bits = (visible.astype(np.int64) << np.arange(width, dtype=np.int64)).sum(axis=1)
        pattern = (lengths * (1 << width) + bits) * width + target
        found = np.full((n, self.k), -1, dtype=np.int64)
        for value in np.unique(pattern):
            rows = np.flatnonzero(pattern == value)
            first = rows[0]
            train = self._by_length.get(int(lengths[first]))
            columns = np.flatnonzero(visible[first])
            if train is None or len(columns) == 0 or target[first] >= train.shape[1]:
                continue
            keys = row_keys(np.concatenate([train[:, columns], tokens[rows][:, columns]]))
            table = TopKTable.count(keys[: len(train)], train[:, target[first]], self.k)
            found[rows] = table.lookup(keys[len(train) :])
        backoff = self.fallback.predict(tokens, visible, target)
        return merge_candidates([found, backoff], visible_tokens(tokens, visible), self.k)


@dataclass
class _HelixState:
    """A helix fit of each track and the window around its hidden hit (internal)."""

    fit: HelixFit
    near: dict[str, np.ndarray]
    layers: np.ndarray
    s_lo: np.ndarray
    s_hi: np.ndarray
    exclude: np.ndarray


class HelixBaseline:
    """Helix through the visible modules (or hits), crossed with the layer of the hidden hit.

    See the module docstring. Parameters
    ----------
    surfaces : the detector layers (from the dataset's module table).
    train_tokens, train_lengths : training split, for the layer-transition counts.
    centres_mm : (V, 3) module centre per token id (used with ``use_hits=False``).
    use_hits : fit the measured hit positions (True) or the visible modules' centres (False).
    window_margin_mm : slack on the arc-length window between the neighbouring hits.
    k : ranked modules returned.
    bounds : the modules' frames and bounds by token id (``Detector.frames_by_token``); by
        default ``ModuleFrames.approximate`` from the centres. The predicted module is the one
        whose bounds contain the helix's crossing of the chosen layer
        (``TokenLayers.rank_modules``).
    beam_sigma_mm : (transverse, z) spread of the beam spot, added as a pseudo-point in front of
        every track (``None``: only where fewer than 3 points are visible, with no weight info).
    hit_sigma_mm : isotropic uncertainty of a measured hit (``use_hits=True``), against which
        the beam spot is weighted.
    name : reported name; default ``helix`` on centres, ``helix_hits`` on hits.
    through_origin : fit the x-y circle through the beam line as azimuth against radius
        (``fit_circle_origin``) rather than the free algebraic circle; default on centres only
        (measured on simulated PU200: the algebraic fit through coarse centres, overlap pairs
        included, bends far too much). Needs ``beam_sigma_mm``.
    """

    def __init__(
        self,
        surfaces: TokenLayers,
        train_tokens: np.ndarray,
        train_lengths: np.ndarray,
        centres_mm: np.ndarray,
        use_hits: bool = True,
        window_margin_mm: float = 10.0,
        k: int = 5,
        bounds: ModuleFrames | None = None,
        beam_sigma_mm: tuple[float, float] | None = BEAM_SIGMA_MM,
        hit_sigma_mm: float = HIT_SIGMA_MM,
        name: str | None = None,
        through_origin: bool | None = None,
    ) -> None:
        self.surfaces = surfaces
        self.centres_mm = np.asarray(centres_mm, dtype=np.float64)
        self.use_hits = use_hits
        self.window_margin_mm = window_margin_mm
        self.k = k
        self.bounds = (
            bounds
            if bounds is not None
            else ModuleFrames.approximate(surfaces.module_table(), len(surfaces.layer_of_token))
        )
        self.beam_sigma_mm = beam_sigma_mm
        self.hit_sigma_mm = hit_sigma_mm
        self.through_origin = (not use_hits) if through_origin is None else through_origin
        self.name = name or ("helix_hits" if use_hits else "helix")
        layers = self._layers(
            train_tokens, np.arange(train_tokens.shape[1])[None, :] < train_lengths[:, None]
        )
        self.layer_model = ContextModel(layers, train_lengths, k=3)

    def _layers(self, tokens: np.ndarray, real: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64)
        table = self.surfaces.layer_of_token
        layer = table[np.clip(tokens, 0, len(table) - 1)]
        return np.where(real & (tokens >= 0), layer, -1)

    def _crossed_layer(
        self,
        fit: HelixFit,
        layers: np.ndarray,
        near: dict[str, np.ndarray],
        s_lo: np.ndarray,
        s_hi: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The layer the helix crosses, inside its coverage, strictly between the neighbouring hits.

        Layers of the neighbouring hits are skipped (they are crossed at those hits). Between two
        hits the crossing nearest the middle of the gap wins; before the first visible hit the
        last crossing (after the perigee, the point nearest the beam line); after the last visible
        hit the first crossing. Returns (layer (N,), crossing (N, 3), found (N,) bool).
        """
        n = len(fit)
        prev_layer = at_index(layers, near["prev1"])
        next_layer = at_index(layers, near["next1"])
        lower = np.where(np.isfinite(s_lo), s_lo, fit.perigee_s_mm())
        both = np.isfinite(s_lo) & np.isfinite(s_hi)
        mid = np.where(both, 0.5 * (np.where(both, s_lo, 0.0) + np.where(both, s_hi, 0.0)), 0.0)
        best = np.full(n, np.inf)
        chosen = np.zeros(n, dtype=np.int64)
        point = np.zeros((n, 3))
        for y in range(len(self.surfaces)):
            layer = np.full(n, y)
            xyz, s, crosses = self.surfaces.intersect(fit, layer, s_lo, s_hi)
            ok = crosses & (s > lower) & (s < s_hi) & self.surfaces.covers(layer, xyz)
            ok &= (prev_layer != y) & (next_layer != y)
            with np.errstate(invalid="ignore"):  # inf - inf in rows where the branch is unused
                score = np.where(
                    both, np.abs(s - mid), np.where(np.isfinite(s_lo), s - s_lo, s_hi - s)
                )
            better = ok & (score < best)
            best = np.where(better, score, best)
            chosen = np.where(better, y, chosen)
            point = np.where(better[:, None], xyz, point)
        return chosen, point, np.isfinite(best)

    def _outside_unused(
        self, state: _HelixState, layer: np.ndarray, xyz_mm: np.ndarray, direction: np.ndarray
    ) -> np.ndarray:
        """(N,) how far each crossing lies outside the nearest unused module of its layer.

        In units of the module's half-sizes (``ModuleFrames.outside_local``: at most 1 inside),
        the crossing ``xyz_mm`` (N, 3) of the layer's mean surface moved onto each module's
        plane along ``direction`` (N, 3); modules whose plane lies farther from the crossing
        than ``PLANE_TOLERANCE_MM`` (the far side of a small barrel) do not count. Among the
        ``OVERLAP_CANDIDATES`` modules of ``layer`` (N,) with the nearest centres; inf where none.
        """
        tokens, _ = self.surfaces.nearest_modules(
            layer, xyz_mm, k=OVERLAP_CANDIDATES, exclude=state.exclude
        )
        rows = self.bounds.clipped(tokens)
        xyz = np.broadcast_to(xyz_mm[:, None, :], (*tokens.shape, 3))
        near_plane = np.abs(self.bounds.to_local(rows, xyz)[..., 2]) <= PLANE_TOLERANCE_MM
        along = np.broadcast_to(direction[:, None, :], xyz.shape)
        outside = self.bounds.outside_local(rows, self.bounds.to_local_on_plane(rows, xyz, along))
        result: np.ndarray = np.where((tokens >= 0) & near_plane, outside, np.inf).min(axis=1)
        return result

    def _overlap_layer(self, state: _HelixState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The layer of a neighbouring visible hit whose crossing lies in a module still unused.

        A track crossing the overlap of two modules of one layer leaves a hit on each; with one
        of them visible, the helix's crossing of that layer lies inside the other, which is then
        where the hidden hit is. Of the previous and the next visible hit's layers, the one whose
        crossing lies deepest inside (or least outside) an unused module (``_outside_unused``).

        Returns
        -------
        layer (N,) int64, crossing (N, 3) mm (of the layer's mean surface) and outside (N,):
        ``_outside_unused`` of that crossing, at most 1 where an unused module contains it, inf
        where neither neighbour's layer is crossed near the gap.
        """
        n = len(state.fit)
        best = np.full(n, np.inf)
        chosen = np.zeros(n, dtype=np.int64)
        point = np.zeros((n, 3))
        for key in ("prev1", "next1"):
            layer = at_index(state.layers, state.near[key])
            has = layer >= 0
            layer = np.where(has, layer, 0)
            xyz, direction, accepted = self.crossing(state, layer)
            outside = self._outside_unused(state, layer, xyz, direction)
            better = has & accepted & (outside < best)
            best = np.where(better, outside, best)
            chosen = np.where(better, layer, chosen)
            point = np.where(better[:, None], xyz, point)
        return chosen, point, best

    def fit(
        self,
        tokens: np.ndarray,
        visible: np.ndarray,
        target: np.ndarray,
        hits_mm: np.ndarray | None = None,
    ) -> _HelixState:
        """Fit the visible points of every track and find the arc-length window of the hidden hit."""
        tokens = np.asarray(tokens, dtype=np.int64)
        visible = np.asarray(visible, dtype=bool)
        target = np.asarray(target, dtype=np.int64)
        n, width = tokens.shape
        if self.use_hits:
            if hits_mm is None:
                raise ValueError("HelixBaseline(use_hits=True) needs hits_mm")
            points = np.asarray(hits_mm, dtype=np.float64)
            cov = np.broadcast_to(self.hit_sigma_mm**2 * np.eye(3), (n, width, 3, 3))
        else:
            points = self.centres_mm[np.clip(tokens, 0, len(self.centres_mm) - 1)]
            cov = self.bounds.covariance(tokens)
        # The beam spot as a leading pseudo-point: always with a known spread, else only where
        # fewer than 3 points are visible (the unweighted fit of earlier versions).
        few = visible.sum(axis=1) < 3
        xyz = np.concatenate(
            [np.zeros((n, 1, 3)), np.where(visible[..., None], points, 0.0)], axis=1
        )
        if self.beam_sigma_mm is None:
            mask = np.concatenate([few[:, None], visible], axis=1)
            fit = fit_helix(xyz, mask)
        else:
            sxy, sz = self.beam_sigma_mm
            beam = np.broadcast_to(np.diag([sxy**2, sxy**2, sz**2]), (n, 1, 3, 3))
            mask = np.concatenate([np.ones((n, 1), dtype=bool), visible], axis=1)
            fit = fit_helix(
                xyz,
                mask,
                np.concatenate([beam, cov], axis=1),
                through_origin=self.through_origin,
            )
        s_hits = fit.s_mm[:, 1:]
        near = neighbours(tokens, visible, target)
        rows = np.arange(n)
        s_lo = np.where(near["prev1"] >= 0, s_hits[rows, np.clip(near["prev1"], 0, None)], -np.inf)
        s_hi = np.where(near["next1"] >= 0, s_hits[rows, np.clip(near["next1"], 0, None)], np.inf)
        return _HelixState(
            fit=fit,
            near=near,
            layers=self._layers(tokens, visible),
            s_lo=s_lo,
            s_hi=s_hi,
            exclude=visible_tokens(tokens, visible),
        )

    def crossing(
        self, state: _HelixState, layer: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xyz (N, 3), unit direction (N, 3), accepted (N,)) of each helix on the given layers.

        Accepted: the helix crosses the layer inside its coverage and within the window between
        the neighbouring visible hits (plus ``window_margin_mm``).
        """
        layer = np.asarray(layer, dtype=np.int64)
        xyz, s, crosses = self.surfaces.intersect(state.fit, layer, state.s_lo, state.s_hi)
        margin = self.window_margin_mm
        in_window = (s >= state.s_lo - margin) & (s <= state.s_hi + margin)
        accepted = crosses & in_window & self.surfaces.covers(layer, xyz)
        return xyz, state.fit.direction_at(s), accepted

    def choose_layer(
        self, state: _HelixState, visible: np.ndarray, target: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The layer of each hidden hit and the helix's crossing of it.

        In order: a layer the helix crosses strictly between the neighbouring visible hits; else
        a neighbour's own layer where its crossing lies in a module the track has not used (an
        overlap: the hidden hit is the second hit on that layer; between two visible hits with
        no layer crossed in the gap, the neighbour's layer whose crossing comes nearest such a
        module); else, at a track's end, the next layer crossed beyond it; else the most frequent
        layer for this context (``layer_model``) that the helix crosses near the gap, else the
        most frequent one.

        Returns
        -------
        layer (N,) int64 layer index and crossing (N, 3) mm (of the layer's mean surface).
        """
        n = len(state.fit)
        chosen, point, found = self._crossed_layer(
            state.fit, state.layers, state.near, state.s_lo, state.s_hi
        )
        candidates = self.layer_model.rank(
            state.layers, np.asarray(visible, bool), np.asarray(target), np.full((n, 1), -1)
        )
        settled = found.copy()
        fallback_layer = int(self.layer_model.overall[0])
        for c in range(candidates.shape[1]):
            layer = candidates[:, c]
            has = layer >= 0
            layer_safe = np.where(has, layer, fallback_layer)
            xyz_c, _, accepted = self.crossing(state, layer_safe)
            accepted &= has
            take = (accepted | (c == 0)) & ~settled
            chosen = np.where(take, layer_safe, chosen)
            point = np.where(take[:, None], xyz_c, point)
            settled |= accepted
        # Overlaps: an unused module of a neighbour's layer contains the crossing (at most 1),
        # or, between two visible hits with no layer crossed in the gap, the nearer one wins.
        inside = np.isfinite(state.s_lo) & np.isfinite(state.s_hi)
        overlap_layer, overlap_point, overlap_score = self._overlap_layer(state)
        take = (overlap_score <= 1.0) | (inside & np.isfinite(overlap_score))
        take &= ~(found & inside)
        chosen = np.where(take, overlap_layer, chosen)
        point = np.where(take[:, None], overlap_point, point)
        return chosen, point

    def predict_with_crossing(
        self,
        tokens: np.ndarray,
        visible: np.ndarray,
        target: np.ndarray,
        hits_mm: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ranked modules of each hidden hit and where the helix crosses the best one.

        Parameters are those of ``predict``.

        Returns
        -------
        ranked : (N, k) module tokens, best first (-1: none).
        crossing_mm : (N, 3) the helix's crossing of the best module's plane (of the chosen
            layer's mean surface where no module is ranked or the helix runs along the plane).
        """
        state = self.fit(tokens, visible, target, hits_mm)
        layer, point = self.choose_layer(state, visible, target)
        # The crossing of the layer's mean surface is not moved onto each candidate's plane along
        # the track (measured: that lets far neighbours of forward tracks look containing).
        ranked, _ = self.surfaces.rank_modules(
            self.bounds, layer, point, k=self.k, exclude=state.exclude
        )
        best = self.bounds.clipped(ranked[:, 0])
        direction = state.fit.direction_at(state.fit.arc_length_mm(point[:, :2]))
        on_plane = self.bounds.to_global(
            best, self.bounds.to_local_on_plane(best, point, direction)
        )
        usable = (ranked[:, 0] >= 0) & np.all(np.isfinite(on_plane), axis=1)
        return ranked, np.where(usable[:, None], on_plane, point)

    def predict(
        self,
        tokens: np.ndarray,
        visible: np.ndarray,
        target: np.ndarray,
        hits_mm: np.ndarray | None = None,
    ) -> np.ndarray:
        """(N, k) module tokens for the hidden hit ``target`` of each track, best first.

        Parameters
        ----------
        tokens : (N, L) tokens (the hidden one is not read).
        visible : (N, L) bool, the hits the fit may use.
        target : (N,) hidden hit index.
        hits_mm : (N, L, 3) measured hit positions (required with ``use_hits=True``).
        """
        return self.predict_with_crossing(tokens, visible, target, hits_mm)[0]


class HelixFrequencyBaseline:
    """The frequency baseline's candidates, re-ranked by the helix (``helix+frequency``).

    Candidates are the frequency baseline's top ``k`` modules and the helix's best module; each is
    scored by how far the helix's crossing of the candidate's own layer lies outside the
    candidate's bounds (``ModuleFrames.outside``; inf where the helix misses that layer near the
    hidden hit). Candidates the helix passes through (score at most ``inside``) come first, in
    the frequency order, then the rest by score.
    """

    def __init__(
        self, frequency: FrequencyBaseline, helix: HelixBaseline, inside: float = 1.0
    ) -> None:
        self.frequency = frequency
        self.helix = helix
        self.inside = inside
        self.name = f"{helix.name}+frequency"

    def predict(
        self,
        tokens: np.ndarray,
        visible: np.ndarray,
        target: np.ndarray,
        hits_mm: np.ndarray | None = None,
    ) -> np.ndarray:
        """(N, k) ranked module tokens for the hidden hit ``target`` of each track (-1: none)."""
        freq = self.frequency.predict(tokens, visible, target)
        helix = self.helix.predict(tokens, visible, target, hits_mm)
        state = self.helix.fit(tokens, visible, target, hits_mm)
        cand = merge_candidates([freq, helix[:, :1]], state.exclude, freq.shape[1] + 1)
        table = self.helix.surfaces.layer_of_token
        score = np.full(cand.shape, np.inf)
        for c in range(cand.shape[1]):
            has = cand[:, c] >= 0
            layer = table[np.clip(cand[:, c], 0, len(table) - 1)]
            layer = np.where(has & (layer >= 0), layer, 0)
            xyz, direction, accepted = self.helix.crossing(state, layer)
            out = self.helix.bounds.outside(cand[:, c], xyz, direction)
            score[:, c] = np.where(has & accepted, out, np.inf)
        key = np.where(score <= self.inside, 0.0, score)
        key = np.where(cand >= 0, key, np.inf)
        order = np.argsort(key, axis=1, kind="stable")[:, : freq.shape[1]]
        return np.take_along_axis(cand, order, axis=1)
