"""Layer surfaces and point -> module lookup, derived from any TrackML-format module table.

A layer is one (volume_id, layer_id). Its modules are either a barrel (module normals roughly
radial: the layer is a cylinder of radius ``radius_mm`` over ``[z_min_mm, z_max_mm]``) or a disk
(normals along z: a plane at ``z_mm`` over ``[r_min_mm, r_max_mm]``). The kind is read off the
module orientations, so the same code serves the real ``detectors.csv``, the built-in detector and
any other table in that format.

``ModuleLocator`` bins every layer's modules in a grid: (phi, z) on a barrel, (phi, r) on a disk.
A module is registered in every cell its outline (plus a margin) touches, so the cell of a point
lists every module that may contain it, overlapping neighbours included. Lengths in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracklm.detector.geometry import Detector

BARREL = 0
DISK = 1
# Points sampled along each module edge to find its extent in r, phi and z. The closest approach
# of a flat module to the beam line can be mid-edge, so corners alone are not enough.
_EDGE_SAMPLES = 9


@dataclass(frozen=True, eq=False)
class LayerSurface:
    """One detector layer as a simple surface.

    Attributes
    ----------
    volume_id, layer_id : the layer's ids.
    kind : ``BARREL`` (cylinder) or ``DISK`` (plane of constant z).
    radius_mm : mean radius of the module centres (barrel; mean centre radius for a disk).
    z_mm : mean z of the module centres (disk; for a barrel the centre of its z extent).
    r_min_mm, r_max_mm, z_min_mm, z_max_mm : extent of the module outlines.
    rows : (n,) int64 module rows of the layer in ``Detector.modules``.
    """

    volume_id: int
    layer_id: int
    kind: int
    radius_mm: float
    z_mm: float
    r_min_mm: float
    r_max_mm: float
    z_min_mm: float
    z_max_mm: float
    rows: np.ndarray

    @property
    def is_barrel(self) -> bool:
        return self.kind == BARREL


class ModuleArrays:
    """The module table as contiguous float64 arrays (the DataFrame views copy on every access).

    Attributes
    ----------
    centres : (M, 3) mm. rotations : (M, 3, 3), columns u, v, w. normals : (M, 3) the w axes.
    minhu, maxhu, hv, thickness, pitch_u, pitch_v : (M,) mm.
    """

    def __init__(self, detector: Detector) -> None:
        table = detector.modules
        self.centres = np.ascontiguousarray(detector.centres)
        self.rotations = np.ascontiguousarray(detector.rotations)
        self.normals = np.ascontiguousarray(self.rotations[:, :, 2])
        self.minhu = table["module_minhu"].to_numpy(np.float64)
        self.maxhu = table["module_maxhu"].to_numpy(np.float64)
        self.hv = table["module_hv"].to_numpy(np.float64)
        self.thickness = table["module_t"].to_numpy(np.float64)
        self.pitch_u = table["pitch_u"].to_numpy(np.float64)
        self.pitch_v = table["pitch_v"].to_numpy(np.float64)
        self.ids = detector.ids

    def half_width(self, rows: np.ndarray, v_mm: np.ndarray) -> np.ndarray:
        """Half-width in u (mm) of modules ``rows`` at local ``v_mm`` (trapezoids grow with v)."""
        hv = self.hv[rows]
        return self.minhu[rows] + (self.maxhu[rows] - self.minhu[rows]) * (v_mm + hv) / (2.0 * hv)

    def to_local(self, rows: np.ndarray, xyz: np.ndarray) -> np.ndarray:
        """Global points (N, 3) to the local (u, v, w) frames of modules ``rows`` (N,)."""
        offset = xyz - self.centres[rows]
        return np.einsum("nji,nj->ni", self.rotations[rows], offset)

    def to_global(self, rows: np.ndarray, uvw: np.ndarray) -> np.ndarray:
        """Local points (N, 3) on modules ``rows`` (N,) to global coordinates (mm)."""
        return np.einsum("nij,nj->ni", self.rotations[rows], uvw) + self.centres[rows]

    def outline(self) -> np.ndarray:
        """(M, 4 * _EDGE_SAMPLES, 3) global points along every module's boundary (mm)."""
        s = np.linspace(-1.0, 1.0, _EDGE_SAMPLES)
        hv = self.hv[:, None]
        # Local (u, v) walks of the four edges: bottom (v = -hv), top (v = +hv), left, right.
        v_edges = np.concatenate(
            [-hv * np.ones_like(s), hv * np.ones_like(s), hv * s, hv * s], axis=1
        )
        sign_u = np.concatenate([s, s, -np.ones_like(s), np.ones_like(s)])
        half = self.minhu[:, None] + (self.maxhu - self.minhu)[:, None] * (v_edges + hv) / (
            2.0 * hv
        )
        uvw = np.stack([sign_u[None, :] * half, v_edges, np.zeros_like(v_edges)], axis=-1)
        return np.einsum("mij,mkj->mki", self.rotations, uvw) + self.centres[:, None, :]


def layer_surfaces(detector: Detector) -> list[LayerSurface]:
    """The layers of ``detector`` as barrel cylinders or disk planes, sorted by (volume, layer).

    A layer is a disk when its module normals point mostly along z (mean ``|w_z|`` > 1/sqrt(2)),
    otherwise a barrel.
    """
    arrays = ModuleArrays(detector)
    outline = arrays.outline()
    r_outline = np.hypot(outline[..., 0], outline[..., 1])
    z_outline = outline[..., 2]
    ids = arrays.ids.astype(np.int64)
    layer_key = ids[:, 0] * 100_000 + ids[:, 1]
    # Rows are sorted by (volume, layer, module), so each layer is one contiguous block.
    starts = np.flatnonzero(np.r_[True, layer_key[1:] != layer_key[:-1]])
    ends = np.r_[starts[1:], len(layer_key)]
    surfaces = []
    for start, end in zip(starts, ends):
        rows = np.arange(start, end, dtype=np.int64)
        normal_z = np.abs(arrays.normals[rows, 2]).mean()
        centre_r = np.hypot(arrays.centres[rows, 0], arrays.centres[rows, 1])
        surfaces.append(
            LayerSurface(
                volume_id=int(ids[start, 0]),
                layer_id=int(ids[start, 1]),
                kind=DISK if normal_z > np.sqrt(0.5) else BARREL,
                radius_mm=float(centre_r.mean()),
                z_mm=float(arrays.centres[rows, 2].mean()),
                r_min_mm=float(r_outline[rows].min()),
                r_max_mm=float(r_outline[rows].max()),
                z_min_mm=float(z_outline[rows].min()),
                z_max_mm=float(z_outline[rows].max()),
                rows=rows,
            )
        )
    return surfaces


class ModuleLocator:
    """Point -> module lookup through a per-layer grid: (phi, z) on barrels, (phi, r) on disks.

    Parameters
    ----------
    detector : any TrackML-format detector.
    margin_mm : how far beyond its outline a module is still listed as a candidate; covers points
        that are off the module plane (stagger, helix curvature) when looked up.

    Attributes
    ----------
    surfaces : list of ``LayerSurface`` (index = layer index).
    module_layer : (M,) layer index of every module row.
    arrays : ``ModuleArrays`` of the detector.
    max_candidates : K, the width of ``candidates``' answer.
    """

    def __init__(self, detector: Detector, margin_mm: float = 6.0) -> None:
        self.detector = detector
        self.margin_mm = float(margin_mm)
        self.arrays = ModuleArrays(detector)
        self.surfaces = layer_surfaces(detector)
        n_layers = len(self.surfaces)
        self.module_layer = np.empty(len(detector), dtype=np.int64)
        for index, surface in enumerate(self.surfaces):
            self.module_layer[surface.rows] = index
        self.kind = np.array([s.kind for s in self.surfaces], dtype=np.int64)
        self._build_grid(n_layers)

    # ------------------------------------------------------------------ grid
    def _build_grid(self, n_layers: int) -> None:
        arrays = self.arrays
        outline = arrays.outline()
        r_out = np.hypot(outline[..., 0], outline[..., 1])
        z_out = outline[..., 2]
        phi_centre = np.arctan2(arrays.centres[:, 1], arrays.centres[:, 0])
        dphi = np.angle(
            np.exp(1j * (np.arctan2(outline[..., 1], outline[..., 0]) - phi_centre[:, None]))
        )
        layer = self.module_layer
        is_disk = self.kind[layer] == DISK
        # The second grid coordinate: z on a barrel, r on a disk.
        b_out = np.where(is_disk[:, None], r_out, z_out)
        b_lo = b_out.min(axis=1) - self.margin_mm
        b_hi = b_out.max(axis=1) + self.margin_mm
        # A phi margin equal to margin_mm at the module's smallest radius.
        r_min = np.maximum(r_out.min(axis=1), 1.0)
        phi_lo = phi_centre + dphi.min(axis=1) - self.margin_mm / r_min
        phi_hi = phi_centre + dphi.max(axis=1) + self.margin_mm / r_min

        n_phi = np.empty(n_layers, dtype=np.int64)
        n_b = np.empty(n_layers, dtype=np.int64)
        b_min = np.empty(n_layers)
        b_step = np.empty(n_layers)
        for index, surface in enumerate(self.surfaces):
            rows = surface.rows
            # Cells about as large as the smallest module dimension: each module then touches a few
            # cells and each cell lists only the modules that overlap near it.
            width = 2.0 * arrays.minhu[rows].min()
            length = 2.0 * arrays.hv[rows].min()
            lo, hi = b_lo[rows].min(), b_hi[rows].max()
            if surface.kind == BARREL:
                n_phi[index] = max(1, int(2.0 * np.pi * surface.radius_mm / width))
                n_b[index] = max(1, int(np.ceil((hi - lo) / length)))
            else:
                n_phi[index] = max(1, int(2.0 * np.pi * surface.radius_mm / width))
                n_b[index] = max(1, int(np.ceil((hi - lo) / min(length, width * 2.0))))
            b_min[index] = lo
            b_step[index] = (hi - lo) / n_b[index]
        self.n_phi, self.n_b, self.b_min, self.b_step = n_phi, n_b, b_min, b_step
        self.cell_offset = np.r_[0, np.cumsum(n_phi * n_b)[:-1]].astype(np.int64)
        n_cells = int((n_phi * n_b).sum())

        # Cell ranges of every module (phi wraps; b is clipped to the grid).
        nphi_m = n_phi[layer]
        ia_lo = np.floor((phi_lo + np.pi) / (2.0 * np.pi) * nphi_m).astype(np.int64)
        ia_hi = np.floor((phi_hi + np.pi) / (2.0 * np.pi) * nphi_m).astype(np.int64)
        ia_hi = np.minimum(ia_hi, ia_lo + nphi_m - 1)
        ib_lo = np.clip(np.floor((b_lo - b_min[layer]) / b_step[layer]), 0, n_b[layer] - 1).astype(
            np.int64
        )
        ib_hi = np.clip(np.floor((b_hi - b_min[layer]) / b_step[layer]), 0, n_b[layer] - 1).astype(
            np.int64
        )
        na = ia_hi - ia_lo + 1
        nb = ib_hi - ib_lo + 1
        count = na * nb
        module = np.repeat(np.arange(len(layer), dtype=np.int64), count)
        # Position of each (module, cell) pair within its module's block -> (ia, ib).
        within = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        ia = (ia_lo[module] + within // nb[module]) % nphi_m[module]
        ib = ib_lo[module] + within % nb[module]
        cell = self.cell_offset[layer[module]] + ia * n_b[layer[module]] + ib
        order = np.argsort(cell, kind="stable")
        cell, module = cell[order], module[order]
        per_cell = np.bincount(cell, minlength=n_cells)
        self.max_candidates = int(per_cell.max()) if per_cell.size else 0
        slot = np.arange(cell.size) - (np.cumsum(per_cell) - per_cell)[cell]
        table = np.full((n_cells, max(self.max_candidates, 1)), -1, dtype=np.int64)
        table[cell, slot] = module
        self._cells = table

    def cells(self, layer_index: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Grid cell of each point (N, 3) in layers ``layer_index`` (scalar or (N,))."""
        points = np.asarray(points, dtype=np.float64)
        layer = np.broadcast_to(np.asarray(layer_index, dtype=np.int64), points.shape[:1])
        phi = np.arctan2(points[:, 1], points[:, 0])
        b = np.where(self.kind[layer] == DISK, np.hypot(points[:, 0], points[:, 1]), points[:, 2])
        n_phi = self.n_phi[layer]
        ia = np.floor((phi + np.pi) / (2.0 * np.pi) * n_phi).astype(np.int64) % n_phi
        ib = np.clip(np.floor((b - self.b_min[layer]) / self.b_step[layer]), 0, self.n_b[layer] - 1)
        return self.cell_offset[layer] + ia * self.n_b[layer] + ib.astype(np.int64)

    def candidates(self, layer_index: np.ndarray | int, points: np.ndarray) -> np.ndarray:
        """Module rows that may contain each point.

        Parameters
        ----------
        layer_index : scalar or (N,) index into ``surfaces``.
        points : (N, 3) global points in mm, on or near the layer.

        Returns
        -------
        (N, K) int64 module rows, padded with -1.
        """
        return self._cells[self.cells(layer_index, points)]

    def locate(
        self,
        points: np.ndarray,
        layer_index: np.ndarray | int,
        tolerance_mm: float = 1e-3,
        max_distance_mm: float | None = None,
    ) -> np.ndarray:
        """The module of each point: the row whose bounds contain it, or -1.

        Parameters
        ----------
        points : (N, 3) global points in mm.
        layer_index : scalar or (N,) layer index (into ``surfaces``).
        tolerance_mm : slack on the u and v bounds.
        max_distance_mm : largest distance from the module plane; default half the sensor
            thickness plus ``tolerance_mm``. Where several overlapping modules qualify, the one whose
            plane is closest wins.

        Returns
        -------
        (N,) int64 module rows, -1 where no module contains the point.
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        candidates = self.candidates(layer_index, points)
        n, k = candidates.shape
        point_index = np.repeat(np.arange(n), k)
        rows = candidates.ravel()
        valid = rows >= 0
        point_index, rows = point_index[valid], rows[valid]
        uvw = self.arrays.to_local(rows, points[point_index])
        hv = self.arrays.hv[rows]
        limit = (
            0.5 * self.arrays.thickness[rows] + tolerance_mm
            if max_distance_mm is None
            else np.full(rows.shape, float(max_distance_mm))
        )
        inside = (
            (np.abs(uvw[:, 1]) <= hv + tolerance_mm)
            & (
                np.abs(uvw[:, 0])
                <= self.arrays.half_width(rows, np.clip(uvw[:, 1], -hv, hv)) + tolerance_mm
            )
            & (np.abs(uvw[:, 2]) <= limit)
        )
        point_index, rows, distance = point_index[inside], rows[inside], np.abs(uvw[inside, 2])
        # Keep the closest plane per point: sort by (point, distance) and take the first of each.
        order = np.lexsort((distance, point_index))
        point_index, rows = point_index[order], rows[order]
        first = np.r_[True, point_index[1:] != point_index[:-1]][: point_index.size]
        located = np.full(n, -1, dtype=np.int64)
        located[point_index[first]] = rows[first]
        return located

    def layer_index(self, volume_id: int, layer_id: int) -> int:
        """Index into ``surfaces`` of layer (volume_id, layer_id); raises ``KeyError`` if absent."""
        for index, surface in enumerate(self.surfaces):
            if surface.volume_id == volume_id and surface.layer_id == layer_id:
                return index
        raise KeyError((volume_id, layer_id))
