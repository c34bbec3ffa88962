"""Point -> module lookup for any TrackML-format detector.

The layers are ``DetectorLayer`` surfaces (``detector/layers.py``): barrels (module normals roughly
radial) or disks (normals along z), read off the module orientations, so the same code serves the
real ``detectors.csv``, the built-in detector and any other table in that format.

``ModuleLocator`` bins every layer's modules in a grid: (phi, z) on a barrel, (phi, r) on a disk.
A module is registered in every cell its outline (plus a margin) touches, so the cell of a point
lists every module that may contain it, overlapping neighbours included. Lengths in mm.
"""

from __future__ import annotations

import numpy as np

from tracklm.detector.geometry import Detector
from tracklm.detector.layers import BARREL, DISK, detector_layers


class ModuleLocator:
    """Point -> module lookup through a per-layer grid: (phi, z) on barrels, (phi, r) on disks.

    Parameters
    ----------
    detector : any TrackML-format detector.
    margin_mm : how far beyond its outline a module is still listed as a candidate; covers points
        that are off the module plane (stagger, helix curvature) when looked up.

    Attributes
    ----------
    layers : list of ``DetectorLayer`` (index = layer index).
    module_layer : (M,) layer index of every module row.
    frames : ``ModuleFrames`` of the detector (``Detector.frames``).
    max_candidates : K, the width of ``candidates``' answer.
    """

    def __init__(self, detector: Detector, margin_mm: float = 6.0) -> None:
        self.detector = detector
        self.margin_mm = float(margin_mm)
        self.frames = detector.frames
        self.layers = detector_layers(detector)
        n_layers = len(self.layers)
        self.module_layer = np.empty(len(detector), dtype=np.int64)
        for index, layer in enumerate(self.layers):
            self.module_layer[layer.rows] = index
        self.kind = np.array([layer.kind for layer in self.layers], dtype=np.int64)
        self._build_grid(n_layers)

    # ------------------------------------------------------------------ grid
    def _build_grid(self, n_layers: int) -> None:
        frames = self.frames
        outline = frames.outline()
        r_out = np.hypot(outline[..., 0], outline[..., 1])
        z_out = outline[..., 2]
        phi_centre = np.arctan2(frames.centres[:, 1], frames.centres[:, 0])
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
        for index, layer_surface in enumerate(self.layers):
            rows = layer_surface.rows
            # Cells about as large as the smallest module dimension: each module then touches a few
            # cells and each cell lists only the modules that overlap near it.
            width = 2.0 * frames.minhu[rows].min()
            length = 2.0 * frames.hv[rows].min()
            lo, hi = b_lo[rows].min(), b_hi[rows].max()
            if layer_surface.kind == BARREL:
                n_phi[index] = max(1, int(2.0 * np.pi * layer_surface.radius_mm / width))
                n_b[index] = max(1, int(np.ceil((hi - lo) / length)))
            else:
                n_phi[index] = max(1, int(2.0 * np.pi * layer_surface.radius_mm / width))
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

    def cells(self, layer_index: np.ndarray | int, points: np.ndarray) -> np.ndarray:
        """Grid cell of each point (N, 3) in layers ``layer_index`` (scalar or (N,))."""
        points = np.asarray(points, dtype=np.float64)
        layer = np.broadcast_to(np.asarray(layer_index, dtype=np.int64), points.shape[:1])
        phi = np.arctan2(points[:, 1], points[:, 0])
        b = np.where(self.kind[layer] == DISK, np.hypot(points[:, 0], points[:, 1]), points[:, 2])
        n_phi = self.n_phi[layer]
        ia = np.floor((phi + np.pi) / (2.0 * np.pi) * n_phi).astype(np.int64) % n_phi
        ib = np.clip(np.floor((b - self.b_min[layer]) / self.b_step[layer]), 0, self.n_b[layer] - 1)
        result: np.ndarray = self.cell_offset[layer] + ia * self.n_b[layer] + ib.astype(np.int64)
        return result

    def candidates(self, layer_index: np.ndarray | int, points: np.ndarray) -> np.ndarray:
        """Module rows that may contain each point.

        Parameters
        ----------
        layer_index : scalar or (N,) index into ``layers``.
        points : (N, 3) global points in mm, on or near the layer.

        Returns
        -------
        (N, K) int64 module rows, padded with -1.
        """
        result: np.ndarray = self._cells[self.cells(layer_index, points)]
        return result

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
        layer_index : scalar or (N,) layer index (into ``layers``).
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
        uvw = self.frames.to_local(rows, points[point_index])
        limit = (
            0.5 * self.frames.thickness[rows] + tolerance_mm
            if max_distance_mm is None
            else np.full(rows.shape, float(max_distance_mm))
        )
        inside = self.frames.within_bounds(rows, uvw, tolerance_mm) & (np.abs(uvw[:, 2]) <= limit)
        point_index, rows, distance = point_index[inside], rows[inside], np.abs(uvw[inside, 2])
        # Keep the closest plane per point: sort by (point, distance) and take the first of each.
        order = np.lexsort((distance, point_index))
        point_index, rows = point_index[order], rows[order]
        first = np.r_[True, point_index[1:] != point_index[:-1]][: point_index.size]
        located = np.full(n, -1, dtype=np.int64)
        located[point_index[first]] = rows[first]
        return located

    def layer_index(self, volume_id: int, layer_id: int) -> int:
        """Index into ``layers`` of layer (volume_id, layer_id); raises ``KeyError`` if absent."""
        for index, layer in enumerate(self.layers):
            if layer.volume_id == volume_id and layer.layer_id == layer_id:
                return index
        raise KeyError((volume_id, layer_id))
