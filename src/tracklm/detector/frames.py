"""Module frames and bounds: the one home of the local-frame and trapezoid maths.

A module is a flat sensor with a local frame (u, v, w): u across, v along, w the normal. Local
to global: ``xyz = R @ uvw + centre``, the columns of ``R`` being the u, v, w axes in global
coordinates (``R[i, j] = rot_{xyz[i]}{uvw[j]}`` in ``detectors.csv``). Bounds: ``|v| <= hv`` and
``|u| <= h(v)``, the half-width growing linearly from ``minhu`` at ``v = -hv`` to ``maxhu`` at
``v = +hv`` (trapezoids on disks). Lengths in mm.

``ModuleFrames`` holds these numbers as contiguous arrays indexed by an integer: the row of a
detector's module table (``Detector.frames``, used by the simulator and the point -> module
lookup), or the token id of a dataset's vocabulary (``Detector.frames_by_token``, or
``ModuleFrames.approximate`` from the module centres alone; used by the baselines), where the
rows of special tokens are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tracklm.detector.table import ROTATION_COLUMNS

# Half-length of a module in a layer with a single ring of module centres (nothing to measure
# the ring spacing against); also the coverage margin of such a layer (``detector.layers``).
DEFAULT_HALF_MODULE_MM = 40.0
# Points sampled along each module edge to find its extent in r, phi and z. The closest approach
# of a flat module to the beam line can be mid-edge, so corners alone are not enough.
EDGE_SAMPLES = 9


def centres_form_barrel(centres_mm: np.ndarray) -> bool:
    """Whether a layer's module centres (n, 3) spread less in radius than in z (a barrel)."""
    radius = np.hypot(centres_mm[:, 0], centres_mm[:, 1])
    return bool(np.ptp(radius) <= np.ptp(centres_mm[:, 2]))


@dataclass(frozen=True, eq=False)
class ModuleFrames:
    """Local frames and bounds of M modules (see the module docstring).

    Attributes
    ----------
    centres : (M, 3) module centres in mm.
    rotations : (M, 3, 3) local-to-global rotations; columns are the u, v, w axes.
    minhu, maxhu : (M,) half-width in u at ``v = -hv`` and ``v = +hv``, mm.
    hv : (M,) half-length in v, mm.
    thickness : (M,) sensor thickness, mm.
    pitch_u, pitch_v : (M,) readout pitches, mm.
    exact : True when read from a detector geometry, False when guessed from centres.
    """

    centres: np.ndarray
    rotations: np.ndarray
    minhu: np.ndarray
    maxhu: np.ndarray
    hv: np.ndarray
    thickness: np.ndarray
    pitch_u: np.ndarray
    pitch_v: np.ndarray
    exact: bool = True

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_table(cls, modules: pd.DataFrame) -> ModuleFrames:
        """From a module table in TrackML ``detectors.csv`` layout, indexed by its rows."""

        def column(name: str) -> np.ndarray:
            return modules[name].to_numpy(np.float64)

        return cls(
            centres=np.ascontiguousarray(modules[["cx", "cy", "cz"]].to_numpy(np.float64)),
            rotations=np.ascontiguousarray(
                modules[list(ROTATION_COLUMNS)].to_numpy(np.float64).reshape(-1, 3, 3)
            ),
            minhu=column("module_minhu"),
            maxhu=column("module_maxhu"),
            hv=column("module_hv"),
            thickness=column("module_t"),
            pitch_u=column("pitch_u"),
            pitch_v=column("pitch_v"),
        )

    @classmethod
    def empty(cls, size: int, exact: bool) -> ModuleFrames:
        """``size`` frames, all NaN (to be filled by index)."""
        nan = np.full(size, np.nan)
        return cls(
            centres=np.full((size, 3), np.nan), rotations=np.full((size, 3, 3), np.nan),
            minhu=nan.copy(), maxhu=nan.copy(), hv=nan.copy(), thickness=nan.copy(),
            pitch_u=nan.copy(), pitch_v=nan.copy(), exact=exact,
        )  # fmt: skip

    def reindexed(self, rows: np.ndarray, index: np.ndarray, size: int) -> ModuleFrames:
        """Frames of modules ``rows`` put at positions ``index`` of ``size`` frames (NaN elsewhere)."""
        out = ModuleFrames.empty(size, exact=self.exact)
        for name in ("centres", "rotations", "minhu", "maxhu", "hv", "thickness"):
            getattr(out, name)[index] = getattr(self, name)[rows]
        out.pitch_u[index] = self.pitch_u[rows]
        out.pitch_v[index] = self.pitch_v[rows]
        return out

    @classmethod
    def approximate(cls, modules: pd.DataFrame, vocab_size: int | None = None) -> ModuleFrames:
        """Frames guessed from module centres, indexed by token id.

        Parameters
        ----------
        modules : table with columns token, volume_id, layer_id, cx, cy, cz (mm).
        vocab_size : number of frames (default: the largest token + 1).

        Per layer (a barrel when ``centres_form_barrel``), u runs along phi and v along z on a
        barrel, along r on a disk. Modules are grouped in rings (equal z on a barrel, equal r on a
        disk, within 5 mm): half-length = half the distance to the neighbouring ring
        (``DEFAULT_HALF_MODULE_MM`` for a single ring), half-width = pi * r / (modules in the
        ring). Thickness and pitches stay unknown (NaN).
        """
        size = int(vocab_size if vocab_size is not None else modules["token"].max() + 1)
        out = cls.empty(size, exact=False)
        for _, group in modules.groupby(["volume_id", "layer_id"], sort=False):
            token = group["token"].to_numpy(np.int64)
            c = group[["cx", "cy", "cz"]].to_numpy(np.float64)
            r = np.hypot(c[:, 0], c[:, 1])
            barrel = centres_form_barrel(c)
            phi = np.arctan2(c[:, 1], c[:, 0])
            phi_hat = np.stack([-np.sin(phi), np.cos(phi), np.zeros_like(phi)], axis=1)
            r_hat = np.stack([np.cos(phi), np.sin(phi), np.zeros_like(phi)], axis=1)
            z_hat = np.broadcast_to([0.0, 0.0, 1.0], c.shape)
            along = c[:, 2] if barrel else r
            values = np.sort(along)
            breaks = np.flatnonzero(np.diff(values) > 5.0)
            ring_lo = values[np.r_[0, breaks + 1]]
            ring_hi = values[np.r_[breaks, len(values) - 1]]
            ring_mid = 0.5 * (ring_lo + ring_hi)
            ring = np.clip(np.searchsorted(ring_hi, along - 1e-9), 0, len(ring_mid) - 1)
            gaps = np.diff(ring_mid)
            if len(ring_mid) > 1:
                half_length = 0.5 * np.minimum(np.r_[gaps[0], gaps], np.r_[gaps, gaps[-1]])
            else:
                half_length = np.array([DEFAULT_HALF_MODULE_MM])
            per_ring = np.bincount(ring, minlength=len(ring_mid))
            v_axis = z_hat if barrel else r_hat
            out.centres[token] = c
            out.rotations[token] = np.stack([phi_hat, v_axis, np.cross(phi_hat, v_axis)], axis=2)
            out.hv[token] = half_length[ring]
            half_width = np.pi * r / np.maximum(per_ring[ring], 1)
            out.minhu[token] = half_width
            out.maxhu[token] = half_width
        return out

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.hv.shape[0])

    @property
    def u_axes(self) -> np.ndarray:
        """(M, 3) the u axes in global coordinates."""
        return self.rotations[:, :, 0]

    @property
    def v_axes(self) -> np.ndarray:
        """(M, 3) the v axes in global coordinates."""
        return self.rotations[:, :, 1]

    @property
    def normals(self) -> np.ndarray:
        """(M, 3) the w axes (module normals) in global coordinates."""
        return self.rotations[:, :, 2]

    def clipped(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` as int64 clipped to [0, M - 1]: with frames indexed by token id, -1 (no
        module) then reads token 0, a special token whose frame is NaN."""
        return np.clip(np.asarray(rows, dtype=np.int64), 0, len(self) - 1)

    # ------------------------------------------------------------------ frames
    def half_width(self, rows: np.ndarray, v_mm: np.ndarray) -> np.ndarray:
        """Half-width in u (mm) of modules ``rows`` at local ``v_mm`` (trapezoids grow with v)."""
        hv = self.hv[rows]
        result: np.ndarray = self.minhu[rows] + (self.maxhu[rows] - self.minhu[rows]) * (
            v_mm + hv
        ) / (2.0 * hv)
        return result

    def to_local(self, rows: np.ndarray, xyz_mm: np.ndarray) -> np.ndarray:
        """(..., 3) global points ``xyz_mm`` (..., 3) in the local (u, v, w) frames of ``rows``."""
        offset = np.asarray(xyz_mm, dtype=np.float64) - self.centres[rows]
        # Each local coordinate is the sum over x, y, z of offset * axis, added in that order.
        result: np.ndarray = (offset[..., :, None] * self.rotations[rows]).sum(axis=-2)
        return result

    def to_local_on_plane(
        self, rows: np.ndarray, xyz_mm: np.ndarray, direction: np.ndarray
    ) -> np.ndarray:
        """(..., 3) local (u, v, w) of each point moved along ``direction`` onto its module plane.

        That is the track's crossing of each module's own plane rather than of a layer's mean
        surface. Grazing directions (``|w|`` component at most 0.05, i.e. more than 20 mm of
        travel per mm off the plane) are not moved.
        """
        uvw = self.to_local(rows, xyz_mm)
        along = (np.asarray(direction, dtype=np.float64)[..., :, None] * self.rotations[rows]).sum(
            axis=-2
        )
        dw = along[..., 2]
        ok = np.abs(dw) > 0.05
        step = np.where(ok, -uvw[..., 2] / np.where(ok, dw, 1.0), 0.0)
        result: np.ndarray = uvw + step[..., None] * along
        return result

    def to_global(self, rows: np.ndarray, uvw_mm: np.ndarray) -> np.ndarray:
        """(N, 3) local points ``uvw_mm`` (N, 3) on modules ``rows`` (N,) in global coordinates."""
        uvw = np.asarray(uvw_mm, dtype=np.float64)
        result: np.ndarray = np.einsum("nij,nj->ni", self.rotations[rows], uvw) + self.centres[rows]
        return result

    # ------------------------------------------------------------------ bounds
    def within_bounds(
        self, rows: np.ndarray, uvw_mm: np.ndarray, tolerance_mm: float = 0.0
    ) -> np.ndarray:
        """(N,) whether local points (N, 3) lie within their modules' outlines in u and v."""
        hv = self.hv[rows]
        v = uvw_mm[:, 1]
        inside_v = np.abs(v) <= hv + tolerance_mm
        half_u = self.half_width(rows, np.clip(v, -hv, hv))
        result: np.ndarray = inside_v & (np.abs(uvw_mm[:, 0]) <= half_u + tolerance_mm)
        return result

    def contains(
        self,
        rows: np.ndarray,
        xyz_mm: np.ndarray,
        tolerance_mm: float = 1e-3,
        max_distance_mm: float | None = None,
    ) -> np.ndarray:
        """(N,) whether each point (N, 3) lies on its module ``rows`` (N,).

        Within the outline (plus ``tolerance_mm``) and within ``max_distance_mm`` of the plane;
        default half the sensor thickness plus ``tolerance_mm``.
        """
        uvw = self.to_local(rows, xyz_mm)
        limit = (
            0.5 * self.thickness[rows] + tolerance_mm
            if max_distance_mm is None
            else np.full(np.shape(rows), float(max_distance_mm))
        )
        result: np.ndarray = self.within_bounds(rows, uvw, tolerance_mm) & (
            np.abs(uvw[:, 2]) <= limit
        )
        return result

    def outside_local(
        self, rows: np.ndarray, uvw_mm: np.ndarray, plane_tolerance_mm: float = 10.0
    ) -> np.ndarray:
        """(...) how far outside its module each local point lies, in units of the half-sizes.

        ``max(|u| / half-width(v), |v| / hv, |w| / plane_tolerance_mm)``: at most 1 where the
        module contains the point (with a tolerance off the plane instead of the sensor
        thickness). Indices are ``clipped``; NaN frames give inf.
        """
        t = self.clipped(rows)
        hv = self.hv[t]
        half_u = self.half_width(t, np.clip(uvw_mm[..., 1], -hv, hv))
        score = np.maximum(np.abs(uvw_mm[..., 0]) / half_u, np.abs(uvw_mm[..., 1]) / hv)
        # Off the module plane (another module on the far side of the detector, a point far
        # from the plane it was not projected onto) counts as outside too.
        score = np.maximum(score, np.abs(uvw_mm[..., 2]) / plane_tolerance_mm)
        return np.where(np.isfinite(score), score, np.inf)

    def outside(
        self, rows: np.ndarray, xyz_mm: np.ndarray, direction: np.ndarray | None = None
    ) -> np.ndarray:
        """``outside_local`` of global points (..., 3), moved onto the module planes along
        ``direction`` when given (``to_local_on_plane``)."""
        t = self.clipped(rows)
        if direction is None:
            return self.outside_local(t, self.to_local(t, xyz_mm))
        return self.outside_local(t, self.to_local_on_plane(t, xyz_mm, direction))

    def covariance(self, rows: np.ndarray, normal_sigma_mm: float = 0.5) -> np.ndarray:
        """(..., 3, 3) covariance (mm^2) of a hit anywhere on each module about its centre.

        Uniform over the module: sigma = full size / sqrt(12) along u and v; ``normal_sigma_mm``
        along the normal (sensor thickness, the stagger of overlapping modules). Indices are
        ``clipped``; NaN frames (special tokens) get an isotropic 1 m sigma.
        """
        t = self.clipped(rows)
        su2 = (self.minhu[t] + self.maxhu[t]) ** 2 / 12.0
        sv2 = (2.0 * self.hv[t]) ** 2 / 12.0
        u, v, w = self.u_axes[t], self.v_axes[t], self.normals[t]
        cov = (
            su2[..., None, None] * u[..., :, None] * u[..., None, :]
            + sv2[..., None, None] * v[..., :, None] * v[..., None, :]
            + normal_sigma_mm**2 * w[..., :, None] * w[..., None, :]
        )
        bad = ~np.isfinite(cov).all(axis=(-2, -1))
        return np.where(bad[..., None, None], 1e6 * np.eye(3), cov)

    def outline(self) -> np.ndarray:
        """(M, 4 * EDGE_SAMPLES, 3) global points along every module's boundary (mm)."""
        s = np.linspace(-1.0, 1.0, EDGE_SAMPLES)
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
        result: np.ndarray = (
            np.einsum("mij,mkj->mki", self.rotations, uvw) + self.centres[:, None, :]
        )
        return result
