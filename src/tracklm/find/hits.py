"""An event's hits as the finder sees them, and a spatial index per layer.

``EventHits`` holds the hits of the evaluated volumes with their layer index (``FinderLayers``)
and module. ``HitIndex`` answers "which hits lie near where these tracks cross this layer": per
layer the hits are binned along the surface (z on a barrel, r on a disk, ``bin_mm`` wide) and
sorted by azimuth inside each bin, so a window is a few binary searches; azimuths near +-pi are
stored twice (shifted by 2 pi) so that no window needs to wrap around. Candidates come with their
residuals to the track, taken where the track meets the hit's own radius (barrel) or z (disk):
modules sit a few mm off the ideal cylinder or plane, which at a shallow crossing moves the hit by
centimetres along the surface, and the residual must not see that.

Lengths in mm, angles in radians.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tracklm.errors import InputError
from tracklm.find.layers import FinderLayers

# Azimuths within this of +-pi are also stored shifted by 2 pi: the widest window half-width.
PHI_MARGIN = 0.6
# Keys are bin * _KEY_STRIDE + phi + _KEY_OFFSET: phi + offset stays inside [0, stride).
_KEY_STRIDE = 8.0
_KEY_OFFSET = 4.0
# A crossing more tangent to a barrel than this (cosine of the angle to the radial direction)
# is treated as this one when spreading the window over the layer's thickness.
_MIN_COS_INCIDENCE = 0.05


@dataclass(frozen=True)
class EventHits:
    """Hits of the evaluated volumes of one event.

    Attributes
    ----------
    hit_id : (N,) int64 TrackML hit ids.
    xyz_mm : (N, 3) float64 positions.
    r_mm, phi : (N,) radius and azimuth.
    layer : (N,) int64 index into the ``FinderLayers``.
    module : (N,) int64 key of the hit's module (unique per volume, layer, module).
    module_ids : (N, 3) int64 (volume_id, layer_id, module_id) of the hit's module.
    """

    hit_id: np.ndarray
    xyz_mm: np.ndarray
    r_mm: np.ndarray
    phi: np.ndarray
    layer: np.ndarray
    module: np.ndarray
    module_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.hit_id.shape[0])

    @classmethod
    def from_table(
        cls, hits: pd.DataFrame, layers: FinderLayers, source: str = "hits"
    ) -> tuple[EventHits, np.ndarray]:
        """The hits of ``hits`` (a TrackML hits table) on ``layers``.

        Returns
        -------
        The ``EventHits`` and the (H,) bool mask of the table's rows they come from (the rows in
        the evaluated volumes). Raises ``InputError`` naming ``source`` and the row of a hit
        in an evaluated volume but on a layer the detector does not have.
        """
        volume = hits["volume_id"].to_numpy(np.int64)
        evaluated = np.isin(volume, layers.volume_id)
        rows = np.flatnonzero(evaluated)
        layer_id = hits["layer_id"].to_numpy(np.int64)[rows]
        layer = layers.index(volume[rows], layer_id)
        if (layer < 0).any():
            local = int(np.flatnonzero(layer < 0)[0])
            raise InputError(
                f"{source}: row {int(rows[local]) + 1}: volume {int(volume[rows[local]])} layer "
                f"{int(layer_id[local])} is not a layer of the detector"
            )
        xyz = hits[["x", "y", "z"]].to_numpy(np.float64)[rows]
        module_id = hits["module_id"].to_numpy(np.int64)[rows]
        module = (volume[rows] * 100 + layer_id) * 100_000 + module_id
        return (
            cls(
                hit_id=hits["hit_id"].to_numpy(np.int64)[rows],
                xyz_mm=xyz,
                r_mm=np.hypot(xyz[:, 0], xyz[:, 1]),
                phi=np.arctan2(xyz[:, 1], xyz[:, 0]),
                layer=layer,
                module=module,
                module_ids=np.stack([volume[rows], layer_id, module_id], axis=1),
            ),
            evaluated,
        )


def expand_ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten ranges: for range i = [starts[i], starts[i] + counts[i]), its index and positions.

    Returns
    -------
    owner : (sum(counts),) int64, the range each position comes from.
    position : (sum(counts),) int64 positions.
    """
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    position = np.asarray(starts, dtype=np.int64)[owner] + (
        np.arange(owner.size, dtype=np.int64) - first[owner]
    )
    return owner, position


@dataclass(frozen=True)
class Candidates:
    """Hits near predicted crossings, with their residuals.

    Attributes
    ----------
    query : (K,) int64 the query (row of the predictions) each candidate answers.
    hit : (K,) int64 hit index into ``EventHits``.
    residual_t_mm : (K,) residual across the track in the surface (azimuthal direction).
    residual_l_mm : (K,) residual along the surface (z on a barrel, r on a disk).
    step_mm : (K,) transverse arc length from the prediction to where the track meets the hit.
    """

    query: np.ndarray
    hit: np.ndarray
    residual_t_mm: np.ndarray
    residual_l_mm: np.ndarray
    step_mm: np.ndarray


class HitIndex:
    """Per-layer binned and azimuth-sorted hits (see the module docstring).

    Parameters
    ----------
    hits : the event's hits.
    layers : their layers.
    available : (N,) bool, the hits to index (default all).
    bin_mm : bin width along the surface.
    """

    def __init__(
        self,
        hits: EventHits,
        layers: FinderLayers,
        available: np.ndarray | None = None,
        bin_mm: float = 10.0,
    ) -> None:
        self.hits = hits
        self.layers = layers
        self.bin_mm = bin_mm
        keep = np.ones(len(hits), bool) if available is None else np.asarray(available, bool)
        along = np.where(layers.is_barrel[hits.layer], hits.xyz_mm[:, 2], hits.r_mm)
        self.u_start = np.where(layers.is_barrel, layers.z_min_mm, layers.r_min_mm) - 50.0
        u_stop = np.where(layers.is_barrel, layers.z_max_mm, layers.r_max_mm) + 50.0
        self.n_bins = np.ceil((u_stop - self.u_start) / bin_mm).astype(np.int64)
        self.keys: list[np.ndarray] = []
        self.hit_of: list[np.ndarray] = []
        for index in range(len(layers)):
            rows = np.flatnonzero(keep & (hits.layer == index))
            bins = np.clip(
                ((along[rows] - self.u_start[index]) // bin_mm).astype(np.int64),
                0,
                self.n_bins[index] - 1,
            )
            phi = hits.phi[rows]
            low, high = phi < -np.pi + PHI_MARGIN, phi > np.pi - PHI_MARGIN
            rows = np.concatenate([rows, rows[low], rows[high]])
            bins = np.concatenate([bins, bins[low], bins[high]])
            phi = np.concatenate([phi, phi[low] + 2 * np.pi, phi[high] - 2 * np.pi])
            key = bins * _KEY_STRIDE + phi + _KEY_OFFSET
            order = np.argsort(key, kind="stable")
            self.keys.append(key[order])
            self.hit_of.append(rows[order])

    def window(
        self,
        layer: int,
        phi_lo: np.ndarray,
        phi_hi: np.ndarray,
        u_lo: np.ndarray,
        u_hi: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hits of one layer inside azimuth and along-surface windows, one window per query.

        Parameters
        ----------
        layer : layer index.
        phi_lo, phi_hi : (Q,) azimuth window; its centre in [-pi, pi], half-width at most
            ``PHI_MARGIN`` (wider windows are cut to that).
        u_lo, u_hi : (Q,) window along the surface (z for a barrel, r for a disk), mm.

        Returns
        -------
        query (K,), hit (K,) int64: every (query, hit) pair inside (each hit once per query).
        """
        centre = 0.5 * (phi_lo + phi_hi)
        phi_lo = np.maximum(phi_lo, centre - PHI_MARGIN)
        phi_hi = np.minimum(phi_hi, centre + PHI_MARGIN)
        start, width = self.u_start[layer], self.bin_mm
        b_lo = np.clip(np.floor((u_lo - start) / width), 0, self.n_bins[layer] - 1).astype(np.int64)
        b_hi = np.clip(np.floor((u_hi - start) / width), 0, self.n_bins[layer] - 1).astype(np.int64)
        n_bins = np.where(u_hi >= u_lo, b_hi - b_lo + 1, 0)
        query, b = expand_ranges(b_lo, n_bins)
        keys = self.keys[layer]
        first = np.searchsorted(keys, b * _KEY_STRIDE + phi_lo[query] + _KEY_OFFSET)
        last = np.searchsorted(keys, b * _KEY_STRIDE + phi_hi[query] + _KEY_OFFSET)
        owner, position = expand_ranges(first, last - first)
        query = query[owner]
        hit = self.hit_of[layer][position]
        along = np.where(
            self.layers.is_barrel[layer], self.hits.xyz_mm[hit, 2], self.hits.r_mm[hit]
        )
        inside = (along >= u_lo[query]) & (along <= u_hi[query])
        return query[inside], hit[inside]

    def candidates(
        self,
        layer: int,
        point_mm: np.ndarray,
        tangent: np.ndarray,
        half_t_mm: np.ndarray,
        half_l_mm: np.ndarray,
    ) -> Candidates:
        """Hits near where tracks cross a layer, with their residuals.

        Parameters
        ----------
        layer : layer index.
        point_mm : (Q, 3) the tracks' crossings with the layer's ideal surface.
        tangent : (Q, 3) the tracks' direction there per unit transverse arc length
            (dx/ds, dy/ds, dz/ds), in flight direction.
        half_t_mm, half_l_mm : (Q,) half-widths of the window across (azimuthal) and along the
            surface, on top of the spread of the layer's modules about the ideal surface.

        Returns
        -------
        ``Candidates``; residuals are linear in the step from the crossing, which is short.
        """
        layers = self.layers
        point = np.asarray(point_mm, dtype=np.float64)
        r = np.maximum(np.hypot(point[:, 0], point[:, 1]), 1e-6)
        radial = point[:, :2] / r[:, None]
        azimuthal = np.stack([-radial[:, 1], radial[:, 0]], axis=1)
        t_radial = (tangent[:, :2] * radial).sum(1)
        t_azimuthal = (tangent[:, :2] * azimuthal).sum(1)
        if layers.is_barrel[layer]:
            cos = np.where(t_radial >= 0, 1.0, -1.0) * np.maximum(
                np.abs(t_radial), _MIN_COS_INCIDENCE
            )
            steps = np.stack(
                [
                    (layers.r_min_mm[layer] - r) / cos,
                    (layers.r_max_mm[layer] - r) / cos,
                ],
                axis=1,
            )
            u0, du = point[:, 2], tangent[:, 2]
        else:
            dz = np.where(np.abs(tangent[:, 2]) > 1e-6, tangent[:, 2], 1e-6)
            steps = np.stack(
                [
                    (layers.z_min_mm[layer] - point[:, 2]) / dz,
                    (layers.z_max_mm[layer] - point[:, 2]) / dz,
                ],
                axis=1,
            )
            u0, du = r, t_radial
        step_lo, step_hi = steps.min(1), steps.max(1)
        u_ends = u0[:, None] + du[:, None] * steps
        phi0 = np.arctan2(point[:, 1], point[:, 0])
        phi_ends = phi0[:, None] + (t_azimuthal / r)[:, None] * steps
        query, hit = self.window(
            layer,
            phi_ends.min(1) - half_t_mm / r,
            phi_ends.max(1) + half_t_mm / r,
            u_ends.min(1) - half_l_mm,
            u_ends.max(1) + half_l_mm,
        )
        xyz = self.hits.xyz_mm[hit]
        if layers.is_barrel[layer]:
            cos = np.where(t_radial >= 0, 1.0, -1.0) * np.maximum(
                np.abs(t_radial), _MIN_COS_INCIDENCE
            )
            step = (self.hits.r_mm[hit] - r[query]) / cos[query]
        else:
            dz = np.where(np.abs(tangent[:, 2]) > 1e-6, tangent[:, 2], 1e-6)
            step = (xyz[:, 2] - point[query, 2]) / dz[query]
        step = np.clip(step, step_lo[query], step_hi[query])
        diff = xyz - (point[query] + tangent[query] * step[:, None])
        residual_t = (diff[:, :2] * azimuthal[query]).sum(1)
        if layers.is_barrel[layer]:
            residual_l = diff[:, 2]
        else:
            residual_l = (diff[:, :2] * radial[query]).sum(1)
        return Candidates(query, hit, residual_t, residual_l, step)
