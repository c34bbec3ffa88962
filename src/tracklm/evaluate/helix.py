"""Helix fits to hits and their intersections with detector layers, vectorized over tracks.

A charged particle in a uniform solenoid field (along +z) moves on a helix: a circle in x-y and a
straight line in (s, z), s the transverse arc length. This module fits both to a batch of tracks
at once and intersects the result with layer surfaces (barrel cylinders and endcap disks), so that
baselines and downstream tasks (holes, outliers, extrapolation, pT) share one implementation.

Main entry points
-----------------
``fit_helix(xyz_mm, mask)``
    Fit N tracks of up to K points each (flight order along K, ``mask`` selects the points used).
    Returns a ``HelixFit`` with the circle (centre, radius), the rotation sense, the (s, z) line,
    ``pt_gev()``, ``charge()``, ``point_at(s_mm)``, ``arc_length_mm(xy)``,
    ``intersect_cylinder(radius_mm, s_lo, s_hi)`` and ``intersect_plane_z(z_mm)``.
``LayerSurfaces.from_modules(modules)``
    The layers of a module table (``volume_id, layer_id, token, cx, cy, cz``): barrel layers as
    cylinders at the mean centre radius, disks as planes at the mean centre z, a KD-tree of module
    centres per layer. ``intersect(fit, layer, s_lo, s_hi)`` and ``nearest_modules(layer, xyz, k)``.

Fit method: an algebraic (Kasa) circle fit on coordinates centred on the points' mean, exact for
points on a circle and unbiased enough for pixel-precision hits over pixel-detector arcs; nearly
collinear points (radius above ``MAX_RADIUS_MM``, i.e. pT above about 300 GeV at 2 T, or a
singular fit) become a circle of radius ``MAX_RADIUS_MM`` tangent to the principal line, so every
track has the same parametrisation. Then z = z0 + dz_ds * s by least squares.

Conventions: lengths in mm, momenta in GeV, field in tesla along +z. ``rotation`` is +1 when the
particle turns counter-clockwise seen from +z; with the field along +z a positive particle turns
clockwise, so ``charge = -rotation``. pT = 0.3 * B[T] * R[m] (0.299792458 exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

MAX_RADIUS_MM = 5.0e5
DEFAULT_HALF_MODULE_MM = 40.0  # coverage margin of a layer with a single ring of modules
PT_PER_TESLA_METRE_GEV = 0.299792458


def _wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angle in (-pi, pi]."""
    return np.pi - np.mod(np.pi - angle, 2.0 * np.pi)


@dataclass
class HelixFit:
    """Helices fitted to N tracks.

    Attributes
    ----------
    centre_x_mm, centre_y_mm : (N,) centre of the circle in x-y.
    radius_mm : (N,) radius of the circle (``MAX_RADIUS_MM`` for straight tracks).
    rotation : (N,) +1 counter-clockwise, -1 clockwise (seen from +z), in flight order.
    phi_ref : (N,) azimuth, around the circle centre, of the first fitted point (where s = 0).
    z_ref_mm : (N,) z at s = 0 from the (s, z) line.
    dz_ds : (N,) slope of z against transverse arc length (cot theta).
    s_mm : (N, K) arc length of every input point (NaN where not fitted); increases in flight order.
    straight : (N,) True where the points were (nearly) collinear in x-y.
    """

    centre_x_mm: np.ndarray
    centre_y_mm: np.ndarray
    radius_mm: np.ndarray
    rotation: np.ndarray
    phi_ref: np.ndarray
    z_ref_mm: np.ndarray
    dz_ds: np.ndarray
    s_mm: np.ndarray
    straight: np.ndarray

    def __len__(self) -> int:
        return int(self.radius_mm.shape[0])

    def pt_gev(self, b_field_t: float = 2.0) -> np.ndarray:
        """(N,) transverse momentum in GeV from the radius: pT = 0.3 * B[T] * R[m]."""
        return PT_PER_TESLA_METRE_GEV * b_field_t * self.radius_mm / 1000.0

    def charge(self, b_field_t: float = 2.0) -> np.ndarray:
        """(N,) charge sign (+1 / -1) from the rotation sense, for a field along +z if ``b_field_t > 0``."""
        return (-self.rotation * np.sign(b_field_t)).astype(np.int8)

    def point_at(self, s_mm: np.ndarray) -> np.ndarray:
        """(N, 3) points on the helices at transverse arc lengths ``s_mm`` (N,) from the first point."""
        s_mm = np.asarray(s_mm, dtype=np.float64)
        phi = self.phi_ref + self.rotation * s_mm / self.radius_mm
        return np.stack(
            [
                self.centre_x_mm + self.radius_mm * np.cos(phi),
                self.centre_y_mm + self.radius_mm * np.sin(phi),
                self.z_ref_mm + self.dz_ds * s_mm,
            ],
            axis=-1,
        )

    def arc_length_mm(self, xy_mm: np.ndarray) -> np.ndarray:
        """(N,) arc length of the circle point nearest to ``xy_mm`` (N, 2), within half a turn of s = 0."""
        xy_mm = np.asarray(xy_mm, dtype=np.float64)
        phi = np.arctan2(xy_mm[:, 1] - self.centre_y_mm, xy_mm[:, 0] - self.centre_x_mm)
        return self.rotation * self.radius_mm * _wrap_angle(phi - self.phi_ref)

    def perigee_s_mm(self) -> np.ndarray:
        """(N,) arc length of the circle point nearest the z axis (the perigee)."""
        d = np.hypot(self.centre_x_mm, self.centre_y_mm)
        d_safe = np.where(d > 0, d, 1.0)
        scale = np.where(d > 0, self.radius_mm / d_safe, 0.0)
        xy = np.stack([self.centre_x_mm * (1 - scale), self.centre_y_mm * (1 - scale)], axis=-1)
        return self.arc_length_mm(xy)

    def intersect_cylinder(
        self,
        radius_mm: np.ndarray,
        s_lo: np.ndarray,
        s_hi: np.ndarray,
        margin_mm: float = 10.0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where each helix crosses the cylinder r = ``radius_mm`` (about the z axis).

        Of the (up to two) crossings, the one whose arc length lies in [s_lo, s_hi] (or nearest to
        that interval) is taken; if both lie inside, the one nearest the interval's middle (or its
        finite end). Use ``s_lo = -inf`` to extrapolate backwards from the first point and
        ``s_hi = +inf`` to extrapolate forwards from the last.

        Parameters
        ----------
        radius_mm : (N,) cylinder radii.
        s_lo, s_hi : (N,) the arc-length window (may be infinite).
        margin_mm : slack on the window, so that a crossing next to a window end (a second hit in
            the same layer as a neighbouring hit) still counts as inside.

        Returns
        -------
        xyz_mm : (N, 3) the crossing (where there is none: the circle point nearest the cylinder).
        s_mm : (N,) its arc length.
        crosses : (N,) bool, whether the circle reaches the cylinder at all.
        """
        radius = np.asarray(radius_mm, dtype=np.float64)
        s_lo = np.asarray(s_lo, dtype=np.float64)
        s_hi = np.asarray(s_hi, dtype=np.float64)
        cx, cy, rho = self.centre_x_mm, self.centre_y_mm, self.radius_mm
        d = np.hypot(cx, cy)
        d_safe = np.where(d > 0, d, 1.0)
        ux, uy = cx / d_safe, cy / d_safe  # unit vector origin -> circle centre
        # Crossing points: distance a along u from the origin, +/- h perpendicular to u.
        a = (radius**2 - rho**2 + d**2) / (2.0 * d_safe)
        h2 = radius**2 - a**2
        crosses = (h2 >= 0) & (d > 0)
        h = np.sqrt(np.clip(h2, 0.0, None))
        candidates_xy = [
            np.stack([a * ux - h * uy, a * uy + h * ux], axis=-1),
            np.stack([a * ux + h * uy, a * uy - h * ux], axis=-1),
        ]
        # No crossing: the circle point nearest the cylinder (outermost or innermost point).
        outer = radius >= d + rho
        sign = np.where(outer | (rho > d), 1.0, -1.0)
        nearest_xy = np.stack([cx + sign * rho * ux, cy + sign * rho * uy], axis=-1)
        s_candidates = np.stack([self.arc_length_mm(xy) for xy in candidates_xy], axis=1)  # (N, 2)
        distance_to_window = np.clip(s_lo[:, None] - margin_mm - s_candidates, 0, None) + np.clip(
            s_candidates - s_hi[:, None] - margin_mm, 0, None
        )
        lo_ok, hi_ok = np.isfinite(s_lo), np.isfinite(s_hi)
        lo, hi = np.where(lo_ok, s_lo, 0.0), np.where(hi_ok, s_hi, 0.0)
        anchor = np.where(lo_ok & hi_ok, 0.5 * (lo + hi), np.where(lo_ok, lo, hi))
        score = distance_to_window * 1e6 + np.abs(s_candidates - anchor[:, None])
        pick = np.argmin(score, axis=1)
        rows = np.arange(len(self))
        s = np.where(crosses, s_candidates[rows, pick], self.arc_length_mm(nearest_xy))
        xyz = self.point_at(s)
        return xyz, s, crosses

    def intersect_plane_z(self, z_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where each helix crosses the plane z = ``z_mm`` (N,).

        Returns
        -------
        xyz_mm : (N, 3) the crossing (clamped to half a turn from s = 0 when out of reach).
        s_mm : (N,) its arc length.
        crosses : (N,) bool, False when the track runs (nearly) parallel to the plane or would
            need more than half a turn to reach it.
        """
        z_mm = np.asarray(z_mm, dtype=np.float64)
        slope_ok = np.abs(self.dz_ds) > 1e-9
        s = (z_mm - self.z_ref_mm) / np.where(slope_ok, self.dz_ds, 1.0)
        half_turn = np.pi * self.radius_mm
        crosses = slope_ok & (np.abs(s) <= half_turn)
        s = np.where(slope_ok, np.clip(s, -half_turn, half_turn), 0.0)
        return self.point_at(s), s, crosses


def fit_circle_xy(
    x_mm: np.ndarray, y_mm: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Algebraic (Kasa) circle fit of N point sets at once.

    Parameters
    ----------
    x_mm, y_mm : (N, K) coordinates.
    mask : (N, K) bool, the points to use (at least 2 per row; 3 for a true circle).

    Returns
    -------
    centre_x_mm, centre_y_mm, radius_mm : (N,) the circle; straight rows get ``MAX_RADIUS_MM``
        and a centre on the normal of the principal line through the points' mean.
    straight : (N,) bool, the rows fitted as straight lines.
    """
    w = np.asarray(mask, dtype=np.float64)
    x = np.where(w > 0, np.asarray(x_mm, dtype=np.float64), 0.0)
    y = np.where(w > 0, np.asarray(y_mm, dtype=np.float64), 0.0)
    n = np.maximum(w.sum(axis=1), 1.0)
    mx = (w * x).sum(axis=1) / n
    my = (w * y).sum(axis=1) / n
    u = (x - mx[:, None]) * w
    v = (y - my[:, None]) * w
    r2 = u**2 + v**2
    suu, svv, suv = (u * u).sum(1), (v * v).sum(1), (u * v).sum(1)
    b1 = 0.5 * (u * r2).sum(1)
    b2 = 0.5 * (v * r2).sum(1)
    det = suu * svv - suv**2
    scale = (suu + svv) ** 2
    regular = det > 1e-12 * np.maximum(scale, 1e-300)
    det_safe = np.where(regular, det, 1.0)
    uc = (b1 * svv - b2 * suv) / det_safe
    vc = (b2 * suu - b1 * suv) / det_safe
    radius = np.sqrt(uc**2 + vc**2 + (r2.sum(1)) / n)
    straight = ~regular | ~np.isfinite(radius) | (radius > MAX_RADIUS_MM)
    # Straight: principal axis of the scatter matrix; the centre sits on its normal, on the side
    # of the (tiny) fitted curvature when known.
    theta = 0.5 * np.arctan2(2.0 * suv, suu - svv)
    normal_x, normal_y = -np.sin(theta), np.cos(theta)
    side = np.sign(np.where(regular, uc * normal_x + vc * normal_y, 1.0))
    side = np.where(side == 0, 1.0, side)
    centre_x = np.where(straight, mx + side * MAX_RADIUS_MM * normal_x, mx + uc)
    centre_y = np.where(straight, my + side * MAX_RADIUS_MM * normal_y, my + vc)
    radius = np.where(straight, MAX_RADIUS_MM, radius)
    return centre_x, centre_y, radius, straight


def fit_helix(xyz_mm: np.ndarray, mask: np.ndarray) -> HelixFit:
    """Fit helices to N tracks of up to K points each.

    Parameters
    ----------
    xyz_mm : (N, K, 3) points in mm, in flight order along K.
    mask : (N, K) bool, the points to fit (at least 2 per track; 3 or more for a curvature).

    Returns
    -------
    HelixFit, with ``s = 0`` at each track's first fitted point.
    """
    xyz = np.asarray(xyz_mm, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if xyz.ndim != 3 or xyz.shape[2] != 3 or mask.shape != xyz.shape[:2]:
        raise ValueError(f"need (N, K, 3) points and (N, K) mask, got {xyz.shape} and {mask.shape}")
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    cx, cy, radius, straight = fit_circle_xy(x, y, mask)

    phi = np.arctan2(y - cy[:, None], x - cx[:, None])  # (N, K)
    # Unwrap along the fitted points in flight order: step between consecutive fitted points.
    rows = np.arange(len(mask))
    first = np.argmax(mask, axis=1)
    phi_ref = phi[rows, first]
    k_index = np.arange(mask.shape[1])
    last_seen = np.maximum.accumulate(np.where(mask, k_index[None, :], -1), axis=1)
    previous = np.concatenate([np.full((len(mask), 1), -1), last_seen[:, :-1]], axis=1)
    prev_phi = np.take_along_axis(phi, np.clip(previous, 0, None), axis=1)
    step = np.where(mask & (previous >= 0), _wrap_angle(phi - prev_phi), 0.0)
    turned = np.cumsum(step, axis=1)  # (N, K) signed angle turned since the first point
    total = turned[rows, np.max(np.where(mask, k_index[None, :], 0), axis=1)]
    rotation = np.where(total < 0, -1.0, 1.0)
    s = rotation[:, None] * radius[:, None] * turned
    s = np.where(mask, s, np.nan)

    # z = z_ref + dz_ds * s, least squares over the fitted points.
    w = mask.astype(np.float64)
    n = np.maximum(w.sum(1), 1.0)
    s0 = np.where(mask, s, 0.0)
    z0 = np.where(mask, z, 0.0)
    ms, mz = s0.sum(1) / n, z0.sum(1) / n
    ds, dz = (s0 - ms[:, None]) * w, (z0 - mz[:, None]) * w
    sss = (ds * ds).sum(1)
    dz_ds = np.where(sss > 1e-12, (ds * dz).sum(1) / np.where(sss > 1e-12, sss, 1.0), 0.0)
    z_ref = mz - dz_ds * ms
    return HelixFit(
        centre_x_mm=cx,
        centre_y_mm=cy,
        radius_mm=radius,
        rotation=rotation,
        phi_ref=phi_ref,
        z_ref_mm=z_ref,
        dz_ds=dz_ds,
        s_mm=s,
        straight=straight,
    )


@dataclass
class LayerSurfaces:
    """The layers of a module table as surfaces, with a KD-tree of module centres per layer.

    Attributes
    ----------
    volume_id, layer_id : (Y,) ids of the Y layers, sorted.
    is_barrel : (Y,) True for a barrel layer (a cylinder), False for a disk (a plane z = const).
    radius_mm : (Y,) mean centre radius of the layer's modules (barrels).
    z_mm : (Y,) mean centre z of the layer's modules (disks).
    coverage_lo_mm, coverage_hi_mm : (Y,) extent of the layer along its surface: z for barrels, r
        for disks; the outermost module centres widened by half the largest gap between
        neighbouring rings of centres (about half a module length), so a crossing outside it
        misses the layer (azimuth is always covered).
    layer_of_token : (V,) layer index of every token id (-1 for special tokens).
    tokens : list of (M_y,) token ids per layer; ``trees`` the matching KD-trees of centres.
    """

    volume_id: np.ndarray
    layer_id: np.ndarray
    is_barrel: np.ndarray
    radius_mm: np.ndarray
    z_mm: np.ndarray
    coverage_lo_mm: np.ndarray
    coverage_hi_mm: np.ndarray
    layer_of_token: np.ndarray
    tokens: list[np.ndarray]
    trees: list[cKDTree]

    @classmethod
    def from_modules(cls, modules: pd.DataFrame, vocab_size: int | None = None) -> LayerSurfaces:
        """Build from a module table with columns token, volume_id, layer_id, cx, cy, cz (mm).

        A layer is a barrel when its module centres spread less in radius than in z.
        """
        table = modules.sort_values(["volume_id", "layer_id", "token"])
        size = int(vocab_size if vocab_size is not None else table["token"].max() + 1)
        layer_of_token = np.full(size, -1, dtype=np.int64)
        fields: dict[str, list[float]] = {
            k: [] for k in ("volume_id", "layer_id", "is_barrel", "radius", "z", "lo", "hi")
        }
        tokens, trees = [], []
        for index, ((volume, layer), group) in enumerate(
            table.groupby(["volume_id", "layer_id"], sort=True)
        ):
            centres = group[["cx", "cy", "cz"]].to_numpy(np.float64)
            r = np.hypot(centres[:, 0], centres[:, 1])
            barrel = np.ptp(r) <= np.ptp(centres[:, 2])
            tree = cKDTree(centres)
            along = centres[:, 2] if barrel else r
            rings = np.unique(np.round(along, 0))
            widen = 0.5 * float(np.diff(rings).max()) if len(rings) > 1 else DEFAULT_HALF_MODULE_MM
            token = group["token"].to_numpy(np.int64)
            layer_of_token[token] = index
            fields["volume_id"].append(volume)
            fields["layer_id"].append(layer)
            fields["is_barrel"].append(barrel)
            fields["radius"].append(float(r.mean()))
            fields["z"].append(float(centres[:, 2].mean()))
            fields["lo"].append(float(along.min()) - widen)
            fields["hi"].append(float(along.max()) + widen)
            tokens.append(token)
            trees.append(tree)
        return cls(
            volume_id=np.asarray(fields["volume_id"], dtype=np.int64),
            layer_id=np.asarray(fields["layer_id"], dtype=np.int64),
            is_barrel=np.asarray(fields["is_barrel"], dtype=bool),
            radius_mm=np.asarray(fields["radius"]),
            z_mm=np.asarray(fields["z"]),
            coverage_lo_mm=np.asarray(fields["lo"]),
            coverage_hi_mm=np.asarray(fields["hi"]),
            layer_of_token=layer_of_token,
            tokens=tokens,
            trees=trees,
        )

    def __len__(self) -> int:
        return int(self.volume_id.shape[0])

    def intersect(
        self, fit: HelixFit, layer: np.ndarray, s_lo: np.ndarray, s_hi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Intersect each helix with a layer surface (cylinder for barrels, plane for disks).

        Parameters
        ----------
        fit : N helices.
        layer : (N,) layer index per helix.
        s_lo, s_hi : (N,) arc-length window used to choose between two barrel crossings.

        Returns
        -------
        xyz_mm (N, 3), s_mm (N,), crosses (N,) bool: as ``HelixFit.intersect_cylinder``.
        """
        layer = np.asarray(layer, dtype=np.int64)
        barrel = self.is_barrel[layer]
        xyz_b, s_b, ok_b = fit.intersect_cylinder(self.radius_mm[layer], s_lo, s_hi)
        xyz_d, s_d, ok_d = fit.intersect_plane_z(self.z_mm[layer])
        xyz = np.where(barrel[:, None], xyz_b, xyz_d)
        return xyz, np.where(barrel, s_b, s_d), np.where(barrel, ok_b, ok_d)

    def covers(self, layer: np.ndarray, xyz_mm: np.ndarray) -> np.ndarray:
        """(N,) bool: whether each point lies within its layer's coverage (z for barrels, r for disks)."""
        layer = np.asarray(layer, dtype=np.int64)
        xyz_mm = np.asarray(xyz_mm, dtype=np.float64)
        along = np.where(self.is_barrel[layer], xyz_mm[:, 2], np.hypot(xyz_mm[:, 0], xyz_mm[:, 1]))
        return (along >= self.coverage_lo_mm[layer]) & (along <= self.coverage_hi_mm[layer])

    def nearest_modules(
        self, layer: np.ndarray, xyz_mm: np.ndarray, k: int = 1, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` modules of each given layer whose centres are nearest to each point.

        Parameters
        ----------
        layer : (N,) layer index.
        xyz_mm : (N, 3) points.
        k : number of modules per point, nearest first.
        exclude : (N, E) token ids that may not be returned (e.g. modules the track already
            crossed: a track never has two hits on one module), -1 or 0 for none.

        Returns
        -------
        tokens : (N, k) int64 (-1 where the layer has too few modules).
        distance_mm : (N, k) distances of the centres to the points (inf where no module).
        """
        layer = np.asarray(layer, dtype=np.int64)
        xyz_mm = np.asarray(xyz_mm, dtype=np.float64)
        extra = 0 if exclude is None else exclude.shape[1]
        want = k + extra
        tokens = np.full((len(layer), want), -1, dtype=np.int64)
        distance = np.full((len(layer), want), np.inf)
        for index in np.unique(layer):
            rows = np.flatnonzero(layer == index)
            tree = self.trees[index]
            kk = min(want, tree.n)
            d, i = tree.query(xyz_mm[rows], k=kk)
            d, i = d.reshape(len(rows), kk), i.reshape(len(rows), kk)
            tokens[rows, :kk] = self.tokens[index][i]
            distance[rows, :kk] = d
        if exclude is not None:
            banned = np.any(tokens[:, :, None] == exclude[:, None, :], axis=2) & (tokens >= 0)
            tokens = np.where(banned, -1, tokens)
            distance = np.where(banned, np.inf, distance)
            order = np.argsort(distance, axis=1, kind="stable")
            tokens = np.take_along_axis(tokens, order, axis=1)
            distance = np.take_along_axis(distance, order, axis=1)
        return tokens[:, :k], distance[:, :k]
