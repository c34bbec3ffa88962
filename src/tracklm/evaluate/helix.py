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

    def direction_at(self, s_mm: np.ndarray) -> np.ndarray:
        """(N, 3) unit tangents of the helices, in flight direction, at arc lengths ``s_mm`` (N,)."""
        s_mm = np.asarray(s_mm, dtype=np.float64)
        phi = self.phi_ref + self.rotation * s_mm / self.radius_mm
        d = np.stack(
            [
                -self.rotation * np.sin(phi),
                self.rotation * np.cos(phi),
                self.dz_ds * np.ones_like(phi),
            ],
            axis=-1,
        )
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

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
    x_mm: np.ndarray,
    y_mm: np.ndarray,
    mask: np.ndarray,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Algebraic (Kasa) circle fit of N point sets at once, optionally weighted.

    Parameters
    ----------
    x_mm, y_mm : (N, K) coordinates.
    mask : (N, K) bool, the points to use (at least 2 per row; 3 for a true circle).
    weights : (N, K) positive weights (1 / variance of the distance to the circle), default 1.

    Returns
    -------
    centre_x_mm, centre_y_mm, radius_mm : (N,) the circle; straight rows get ``MAX_RADIUS_MM``
        and a centre on the normal of the principal line through the points' mean.
    straight : (N,) bool, the rows fitted as straight lines.
    """
    w = np.asarray(mask, dtype=np.float64)
    if weights is not None:
        w = w * np.where(w > 0, np.asarray(weights, dtype=np.float64), 0.0)
    x = np.where(w > 0, np.asarray(x_mm, dtype=np.float64), 0.0)
    y = np.where(w > 0, np.asarray(y_mm, dtype=np.float64), 0.0)
    n = w.sum(axis=1)
    n = np.where(n > 0, n, 1.0)
    mx = (w * x).sum(axis=1) / n
    my = (w * y).sum(axis=1) / n
    u = (x - mx[:, None]) * (w > 0)
    v = (y - my[:, None]) * (w > 0)
    r2 = u**2 + v**2
    suu, svv, suv = (w * u * u).sum(1), (w * v * v).sum(1), (w * u * v).sum(1)
    b1 = 0.5 * (w * u * r2).sum(1)
    b2 = 0.5 * (w * v * r2).sum(1)
    det = suu * svv - suv**2
    scale = (suu + svv) ** 2
    regular = det > 1e-12 * np.maximum(scale, 1e-300)
    det_safe = np.where(regular, det, 1.0)
    uc = (b1 * svv - b2 * suv) / det_safe
    vc = (b2 * suu - b1 * suv) / det_safe
    radius = np.sqrt(uc**2 + vc**2 + (w * r2).sum(1) / n)
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


def fit_circle_origin(
    x_mm: np.ndarray,
    y_mm: np.ndarray,
    mask: np.ndarray,
    sigma_phi_mm: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Circles through the origin (the beam line), fitted as azimuth against radius.

    A circle of signed curvature kappa through the origin, leaving it at azimuth phi0, reaches
    radius r at azimuth phi0 - asin(kappa r / 2). The fit minimises the transverse (r * phi)
    residuals, weighted by ``sigma_phi_mm``: linear in (phi0, kappa) for small kappa r, then two
    Gauss-Newton steps on the exact form. Suited to coarse points (module centres): a point's
    radial error barely moves its azimuth, and two nearby points (an overlap) cannot bend the
    circle as they do an algebraic fit. Points within 1 mm of the axis are ignored.

    Returns the same as ``fit_circle_xy``: centre_x, centre_y, radius (N,), straight (N,).
    """
    x = np.asarray(x_mm, dtype=np.float64)
    y = np.asarray(y_mm, dtype=np.float64)
    r = np.hypot(x, y)
    use = np.asarray(mask, dtype=bool) & (r > 1.0)
    sig = np.ones_like(r) if sigma_phi_mm is None else np.asarray(sigma_phi_mm, dtype=np.float64)
    w = np.where(use, (r / np.maximum(sig, 1e-6)) ** 2, 0.0)  # weights of azimuth residuals
    phi = np.arctan2(y, x)
    # Azimuths relative to the outermost used point (tracks turn by far less than pi in r).
    ref = np.take_along_axis(phi, np.argmax(np.where(use, r, -1.0), axis=1)[:, None], axis=1)
    dphi = np.where(use, _wrap_angle(phi - ref), 0.0)
    rr = np.where(use, r, 0.0)
    a0, kappa = np.zeros(len(x)), np.zeros(len(x))
    for step in range(3):
        if step == 0:
            model, d_kappa = np.zeros_like(rr), -0.5 * rr
        else:
            arg = np.clip(kappa[:, None] * rr / 2.0, -0.999, 0.999)
            model = a0[:, None] - np.arcsin(arg)
            d_kappa = -0.5 * rr / np.sqrt(1.0 - arg**2)
        resid = np.where(use, dphi - model, 0.0) if step else dphi
        # Weighted least squares of resid = da + dk * d_kappa.
        sw = w.sum(1)
        sw = np.where(sw > 0, sw, 1.0)
        mj, mr = (w * d_kappa).sum(1) / sw, (w * resid).sum(1) / sw
        jj = (w * (d_kappa - mj[:, None]) ** 2).sum(1)
        ok = jj > 1e-18
        dk = np.where(
            ok,
            (w * (d_kappa - mj[:, None]) * (resid - mr[:, None])).sum(1) / np.where(ok, jj, 1.0),
            0.0,
        )
        da = mr - dk * mj
        a0, kappa = (da, dk) if step == 0 else (a0 + da, kappa + dk)
    phi0 = ref[:, 0] + a0
    straight = np.abs(kappa) < 1.0 / MAX_RADIUS_MM
    kappa = np.where(straight, np.where(kappa < 0, -1.0, 1.0) / MAX_RADIUS_MM, kappa)
    radius = 1.0 / np.abs(kappa)
    # Centre to the right of the direction at the origin for kappa > 0 (azimuth decreasing).
    centre_x = np.sin(phi0) / kappa
    centre_y = -np.cos(phi0) / kappa
    return centre_x, centre_y, radius, straight


def _weighted_line(
    s: np.ndarray, z: np.ndarray, mask: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(z_ref, dz_ds) of z = z_ref + dz_ds * s by weighted least squares over ``mask``."""
    w = np.where(mask, weights, 0.0)
    n = w.sum(1)
    n = np.where(n > 0, n, 1.0)
    s0 = np.where(mask, s, 0.0)
    z0 = np.where(mask, z, 0.0)
    ms, mz = (w * s0).sum(1) / n, (w * z0).sum(1) / n
    ds, dz = (s0 - ms[:, None]) * mask, (z0 - mz[:, None]) * mask
    sss = (w * ds * ds).sum(1)
    tiny = 1e-12 * np.maximum(n, 1e-300)
    dz_ds = np.where(sss > tiny, (w * ds * dz).sum(1) / np.where(sss > tiny, sss, 1.0), 0.0)
    return mz - dz_ds * ms, dz_ds


def _arc_lengths(
    x: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    order: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(phi_ref (N,), rotation (N,), s (N, K), phi (N, K)) of the points on fitted circles.

    The angle is unwrapped along the fitted points in flight order (``order`` (N, K) gives the
    flight rank of each column when it is not the column order; only the first column may be
    out of order, e.g. a beam-line pseudo-point in front).
    """
    phi = np.arctan2(y - cy[:, None], x - cx[:, None])  # (N, K)
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
    return phi_ref, rotation, np.where(mask, s, np.nan), phi


def fit_helix(
    xyz_mm: np.ndarray,
    mask: np.ndarray,
    covariance_mm2: np.ndarray | None = None,
    iterations: int = 3,
    through_origin: bool = False,
) -> HelixFit:
    """Fit helices to N tracks of up to K points each.

    Parameters
    ----------
    xyz_mm : (N, K, 3) points in mm, in flight order along K.
    mask : (N, K) bool, the points to fit (at least 2 per track; 3 or more for a curvature).
    covariance_mm2 : optional (N, K, 3, 3) covariance of every point (e.g. a module centre
        standing for a hit anywhere on the module: ``ModuleBounds.covariance``). Without it all
        points weigh the same. With it, each fit is repeated ``iterations`` times: the circle
        with weights 1 / (variance of the point along the circle's normal there), the (s, z) line
        with weights 1 / (variance of z - dz_ds * s), both directions taken from the previous fit.
    iterations : refits with covariances (ignored without them).
    through_origin : fit the x-y circle through the origin (``fit_circle_origin``, weighted by
        the points' azimuthal variances when covariances are given) instead of the free
        algebraic fit; for primary tracks measured coarsely.

    Returns
    -------
    HelixFit, with ``s = 0`` at each track's first fitted point.
    """
    xyz = np.asarray(xyz_mm, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if xyz.ndim != 3 or xyz.shape[2] != 3 or mask.shape != xyz.shape[:2]:
        raise ValueError(f"need (N, K, 3) points and (N, K) mask, got {xyz.shape} and {mask.shape}")
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    cov = None
    if covariance_mm2 is not None:
        cov = np.asarray(covariance_mm2, dtype=np.float64)
        if cov.shape != (*mask.shape, 3, 3):
            raise ValueError(f"covariance_mm2 must be (N, K, 3, 3), got {cov.shape}")
        cov = np.where(mask[..., None, None], cov, 0.0)
    floor = 1e-6  # mm^2, keeps weights finite for exact points

    if through_origin:
        sigma = None
        if cov is not None:
            phi_pt = np.arctan2(y, x)
            tx, ty = -np.sin(phi_pt), np.cos(phi_pt)
            var = tx * tx * cov[..., 0, 0] + 2 * tx * ty * cov[..., 0, 1] + ty * ty * cov[..., 1, 1]
            sigma = np.sqrt(var + floor)
        cx, cy, radius, straight = fit_circle_origin(x, y, mask, sigma)
    elif cov is None:
        cx, cy, radius, straight = fit_circle_xy(x, y, mask)
    else:
        # Start from the mean transverse variance, then the variance along the circle's normal.
        weights = 1.0 / (0.5 * (cov[..., 0, 0] + cov[..., 1, 1]) + floor)
        cx, cy, radius, straight = fit_circle_xy(x, y, mask, weights)
        for _ in range(max(iterations, 1)):
            nx, ny = x - cx[:, None], y - cy[:, None]
            norm = np.hypot(nx, ny)
            norm = np.where(norm > 0, norm, 1.0)
            nx, ny = nx / norm, ny / norm
            var = nx * nx * cov[..., 0, 0] + 2 * nx * ny * cov[..., 0, 1] + ny * ny * cov[..., 1, 1]
            cx, cy, radius, straight = fit_circle_xy(x, y, mask, 1.0 / (var + floor))

    phi_ref, rotation, s, phi = _arc_lengths(x, y, mask, cx, cy, radius)

    # z = z_ref + dz_ds * s, (weighted) least squares over the fitted points.
    if cov is None:
        z_ref, dz_ds = _weighted_line(s, z, mask, np.ones_like(z))
    else:
        # Direction of increasing s in x-y at each point; a point's error moves both its z and s.
        tx, ty = -rotation[:, None] * np.sin(phi), rotation[:, None] * np.cos(phi)
        z_ref, dz_ds = _weighted_line(s, z, mask, 1.0 / (cov[..., 2, 2] + floor))
        for _ in range(max(iterations, 1)):
            k = dz_ds[:, None]
            a = np.stack([-k * tx, -k * ty, np.ones_like(tx)], axis=-1)  # (N, K, 3)
            var = np.einsum("nki,nkij,nkj->nk", a, cov, a)
            z_ref, dz_ds = _weighted_line(s, z, mask, 1.0 / (var + floor))
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


@dataclass
class ModuleBounds:
    """Every module's local frame and bounds, indexed by token id.

    A module is a flat rectangle (or trapezoid) centred on its centre, spanned by its local axes
    u (half-width ``minhu`` .. ``maxhu``, growing with v) and v (half-length ``hv``); w is its
    normal. ``from_detector`` reads them from the detector geometry; ``approximate`` guesses them
    from the centres alone (u along phi, v along z on a barrel and along r on a disk, half-sizes
    half the spacing of neighbouring centres), for datasets whose geometry cannot be loaded.

    Attributes
    ----------
    u, v, w : (V, 3) unit axes (NaN for special tokens).
    minhu, maxhu, hv : (V,) half-sizes in mm.
    exact : True when read from the detector geometry.
    """

    centre: np.ndarray
    u: np.ndarray
    v: np.ndarray
    w: np.ndarray
    minhu: np.ndarray
    maxhu: np.ndarray
    hv: np.ndarray
    exact: bool
    plane_tolerance_mm: float = 10.0

    @classmethod
    def from_detector(
        cls, modules: pd.DataFrame, detector: object, vocab_size: int | None = None
    ) -> ModuleBounds:
        """From a ``tracklm.detector.Detector`` and the dataset's module table (token, ids).

        Raises ``ValueError`` when a module of the table is missing from the detector.
        """
        size = int(vocab_size if vocab_size is not None else modules["token"].max() + 1)
        rows = detector.rows(  # type: ignore[attr-defined]
            modules["volume_id"].to_numpy(),
            modules["layer_id"].to_numpy(),
            modules["module_id"].to_numpy(),
        )
        if np.any(rows < 0):
            raise ValueError(
                f"{int(np.sum(rows < 0))} modules of the dataset are not in the detector"
            )
        table = detector.modules  # type: ignore[attr-defined]
        rotation = detector.rotations[rows]  # type: ignore[attr-defined]
        token = modules["token"].to_numpy(np.int64)
        out = cls._empty(size, exact=True)
        out.centre[token] = detector.centres[rows]  # type: ignore[attr-defined]
        out.u[token], out.v[token], out.w[token] = (
            rotation[:, :, 0],
            rotation[:, :, 1],
            rotation[:, :, 2],
        )
        out.minhu[token] = table["module_minhu"].to_numpy(np.float64)[rows]
        out.maxhu[token] = table["module_maxhu"].to_numpy(np.float64)[rows]
        out.hv[token] = table["module_hv"].to_numpy(np.float64)[rows]
        return out

    @classmethod
    def approximate(cls, modules: pd.DataFrame, vocab_size: int | None = None) -> ModuleBounds:
        """Guess frames and half-sizes from module centres (columns token, volume_id, layer_id, cx, cy, cz).

        Per layer (barrel when the centres spread less in r than in z, as ``LayerSurfaces``),
        modules are grouped in rings (equal z on a barrel, equal r on a disk, within 5 mm):
        half-length = half the distance to the neighbouring ring (``DEFAULT_HALF_MODULE_MM``
        for a single ring), half-width = pi * r / (modules in the ring).
        """
        size = int(vocab_size if vocab_size is not None else modules["token"].max() + 1)
        out = cls._empty(size, exact=False)
        for _, group in modules.groupby(["volume_id", "layer_id"], sort=False):
            token = group["token"].to_numpy(np.int64)
            c = group[["cx", "cy", "cz"]].to_numpy(np.float64)
            r = np.hypot(c[:, 0], c[:, 1])
            barrel = np.ptp(r) <= np.ptp(c[:, 2])
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
                below = np.r_[gaps[0], gaps]
                above = np.r_[gaps, gaps[-1]]
                half_length = 0.5 * np.minimum(below, above)
            else:
                half_length = np.array([DEFAULT_HALF_MODULE_MM])
            per_ring = np.bincount(ring, minlength=len(ring_mid))
            out.centre[token] = c
            out.u[token] = phi_hat
            out.v[token] = z_hat if barrel else r_hat
            out.w[token] = np.cross(out.u[token], out.v[token])
            out.hv[token] = half_length[ring]
            half_width = np.pi * r / np.maximum(per_ring[ring], 1)
            out.minhu[token] = half_width
            out.maxhu[token] = half_width
        return out

    @classmethod
    def _empty(cls, size: int, exact: bool) -> ModuleBounds:
        nan3 = np.full((size, 3), np.nan)
        nan1 = np.full(size, np.nan)
        return cls(
            centre=nan3.copy(), u=nan3.copy(), v=nan3.copy(), w=nan3.copy(),
            minhu=nan1.copy(), maxhu=nan1.copy(), hv=nan1.copy(), exact=exact,
        )  # fmt: skip

    def _safe(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64)
        return np.clip(tokens, 0, len(self.hv) - 1)

    def covariance(self, tokens: np.ndarray, normal_sigma_mm: float = 0.5) -> np.ndarray:
        """(..., 3, 3) covariance of a hit anywhere on each module about the module centre.

        Uniform over the module: sigma = full size / sqrt(12) along u and v; ``normal_sigma_mm``
        along the normal (sensor thickness, the stagger of overlapping modules). Special tokens
        get an isotropic 1 m sigma (they carry no position).
        """
        t = self._safe(tokens)
        su2 = (self.minhu[t] + self.maxhu[t]) ** 2 / 12.0
        sv2 = (2.0 * self.hv[t]) ** 2 / 12.0
        u, v, w = self.u[t], self.v[t], self.w[t]
        cov = (
            su2[..., None, None] * u[..., :, None] * u[..., None, :]
            + sv2[..., None, None] * v[..., :, None] * v[..., None, :]
            + normal_sigma_mm**2 * w[..., :, None] * w[..., None, :]
        )
        bad = ~np.isfinite(cov).all(axis=(-2, -1))
        return np.where(bad[..., None, None], 1e6 * np.eye(3), cov)

    def local(
        self, tokens: np.ndarray, xyz_mm: np.ndarray, direction: np.ndarray | None = None
    ) -> np.ndarray:
        """(..., 3) local (u, v, w) of points relative to modules ``tokens``.

        With ``direction`` (unit track directions, same shape as the points), each point is first
        moved along it onto the module plane (w = 0), i.e. the track's crossing of that module's
        plane rather than of the layer's mean surface.
        """
        t = self._safe(tokens)
        d = np.asarray(xyz_mm, dtype=np.float64) - self.centre[t]
        uvw = np.stack(
            [(d * self.u[t]).sum(-1), (d * self.v[t]).sum(-1), (d * self.w[t]).sum(-1)], axis=-1
        )
        if direction is not None:
            direction = np.asarray(direction, dtype=np.float64)
            du = (direction * self.u[t]).sum(-1)
            dv = (direction * self.v[t]).sum(-1)
            dw = (direction * self.w[t]).sum(-1)
            ok = np.abs(dw) > 0.05  # not grazing: at most 20 mm of travel per mm off the plane
            step = np.where(ok, -uvw[..., 2] / np.where(ok, dw, 1.0), 0.0)
            uvw = uvw + step[..., None] * np.stack([du, dv, dw], axis=-1)
        return uvw

    def outside(
        self, tokens: np.ndarray, xyz_mm: np.ndarray, direction: np.ndarray | None = None
    ) -> np.ndarray:
        """(...) how far outside each module's bounds each point lies, in units of its half-sizes.

        ``max(|u| / half-width(v), |v| / hv, |w| / plane_tolerance_mm)``: at most 1 where the
        module contains the point (the bounds test of ``Detector.contains``, with a tolerance
        off the plane instead of the sensor thickness, since a helix crossing is computed on the
        layer's mean surface unless a direction is given). NaN tokens give inf.
        """
        return self._outside_uvw(tokens, self.local(tokens, xyz_mm, direction))

    def _outside_uvw(self, tokens: np.ndarray, uvw: np.ndarray) -> np.ndarray:
        t = self._safe(tokens)
        hv = self.hv[t]
        v_clip = np.clip(uvw[..., 1], -hv, hv)
        half_u = self.minhu[t] + (self.maxhu[t] - self.minhu[t]) * (v_clip + hv) / (2.0 * hv)
        score = np.maximum(np.abs(uvw[..., 0]) / half_u, np.abs(uvw[..., 1]) / hv)
        # Off the module plane (another module on the far side of the detector, a point far
        # from the plane it was not projected onto) counts as outside too.
        score = np.maximum(score, np.abs(uvw[..., 2]) / self.plane_tolerance_mm)
        return np.where(np.isfinite(score), score, np.inf)

    def rank(
        self,
        surfaces: LayerSurfaces,
        layer: np.ndarray,
        xyz_mm: np.ndarray,
        k: int = 5,
        exclude: np.ndarray | None = None,
        direction: np.ndarray | None = None,
        candidates: int = 32,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` modules of each point's layer that contain it, or come closest to, best first.

        Candidates are the ``candidates`` nearest centres of the layer. Modules that contain the
        point come first (of overlapping ones, the one whose centre is nearest in normalised
        local coordinates, hypot(u / half-width, v / hv)), then the others by ``outside``.
        ``exclude`` (N, E) token ids are never returned.

        Returns
        -------
        tokens (N, k) int64 (-1 where none) and their ranking scores (N, k): below 1e-3 for a
        containing module, else ``outside`` (inf where none).
        """
        tokens, _ = surfaces.nearest_modules(layer, xyz_mm, k=candidates, exclude=exclude)
        xyz = np.broadcast_to(np.asarray(xyz_mm, dtype=np.float64)[:, None, :], (*tokens.shape, 3))
        d = None
        if direction is not None:
            d = np.broadcast_to(np.asarray(direction, dtype=np.float64)[:, None, :], xyz.shape)
        uvw = self.local(tokens, xyz, d)
        outside = np.where(tokens >= 0, self._outside_uvw(tokens, uvw), np.inf)
        # Containing modules first; among overlapping ones, the point relatively nearest the
        # centre (both normalised coordinates count, not only the larger one).
        t = self._safe(tokens)
        central = np.hypot(
            uvw[..., 0] / (0.5 * (self.minhu[t] + self.maxhu[t])), uvw[..., 1] / self.hv[t]
        )
        score = np.where(outside <= 1.0, central / np.sqrt(2.0) * 1e-3, outside)
        order = np.argsort(score, axis=1, kind="stable")[:, :k]
        tokens = np.take_along_axis(tokens, order, axis=1)
        score = np.take_along_axis(score, order, axis=1)
        return np.where(np.isfinite(score), tokens, -1), score
