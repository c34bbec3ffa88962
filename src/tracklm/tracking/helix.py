"""Helix fits to hits and their intersections with cylinders and planes, vectorized over tracks.

A charged particle in a uniform solenoid field (along +z) moves on a helix: a circle in x-y and a
straight line in (s, z), s the transverse arc length. This module fits both to a batch of tracks
at once, so that baselines and downstream tasks (holes, outliers, extrapolation, pT) share one
implementation. Crossings with detector layers: ``tracklm.detector.layers.TokenLayers.intersect``.

Main entry point
----------------
``fit_helix(xyz_mm, mask, b_field_t=...)``
    Fit N tracks of up to K points each (flight order along K, ``mask`` selects the points used).
    Returns a ``HelixFit`` with the circle (centre, radius), the rotation sense, the (s, z) line,
    ``pt_gev()``, ``charge()``, ``point_at(s_mm)``, ``arc_length_mm(xy)``,
    ``intersect_cylinder(radius_mm, s_lo, s_hi)`` and ``intersect_plane_z(z_mm)``.

Fit method: an algebraic (Kasa) circle fit on coordinates centred on the points' mean, exact for
points on a circle and unbiased enough for pixel-precision hits over pixel-detector arcs; nearly
collinear points (radius above ``MAX_RADIUS_MM``, i.e. pT above about 300 GeV at 2 T, or a
singular fit) become a circle of radius ``MAX_RADIUS_MM`` tangent to the principal line, so every
track has the same parametrisation. Then z = z0 + dz_ds * s by least squares.

Conventions: lengths in mm, momenta in GeV, field in tesla along +z. ``rotation`` is +1 when the
particle turns counter-clockwise seen from +z; with the field along +z a positive particle turns
clockwise, so ``charge = -rotation``. pT = 0.3 * B[T] * R[m] (``GEV_PER_TESLA_METRE``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracklm.tracking.constants import GEV_PER_TESLA_METRE, TRACKML_FIELD_TESLA

MAX_RADIUS_MM = 5.0e5


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
    b_field_t : the field (tesla, along +z) the tracks moved in; sets ``pt_gev`` and ``charge``.
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
    b_field_t: float = TRACKML_FIELD_TESLA

    def __len__(self) -> int:
        return int(self.radius_mm.shape[0])

    def pt_gev(self) -> np.ndarray:
        """(N,) transverse momentum in GeV from the radius: pT = 0.3 * B[T] * R[m]."""
        return GEV_PER_TESLA_METRE * self.b_field_t * self.radius_mm / 1000.0

    def charge(self) -> np.ndarray:
        """(N,) charge sign (+1 / -1) from the rotation sense (field along +z if ``b_field_t > 0``)."""
        result: np.ndarray = (-self.rotation * np.sign(self.b_field_t)).astype(np.int8)
        return result

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
        result: np.ndarray = d / np.linalg.norm(d, axis=-1, keepdims=True)
        return result

    def arc_length_mm(self, xy_mm: np.ndarray) -> np.ndarray:
        """(N,) arc length of the circle point nearest to ``xy_mm`` (N, 2), within half a turn of s = 0."""
        xy_mm = np.asarray(xy_mm, dtype=np.float64)
        phi = np.arctan2(xy_mm[:, 1] - self.centre_y_mm, xy_mm[:, 0] - self.centre_x_mm)
        result: np.ndarray = self.rotation * self.radius_mm * _wrap_angle(phi - self.phi_ref)
        return result

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
    curvature_sigma_per_mm: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Circles through the origin (the beam line), fitted as azimuth against radius.

    A circle of signed curvature kappa through the origin, leaving it at azimuth phi0, reaches
    radius r at azimuth phi0 - asin(kappa r / 2). The fit minimises the transverse (r * phi)
    residuals, weighted by ``sigma_phi_mm``: linear in (phi0, kappa) for small kappa r, then two
    Gauss-Newton steps on the exact form. Suited to coarse points (module centres): a point's
    radial error barely moves its azimuth, and two nearby points (an overlap) cannot bend the
    circle as they do an algebraic fit. Points within 1 mm of the axis are ignored.
    ``curvature_sigma_per_mm``: a Gaussian prior on kappa (1/mm) about 0, the spread of the
    tracks' curvatures, for points too coarse to measure it (None: no prior).

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
    prior = 0.0 if curvature_sigma_per_mm is None else 1.0 / curvature_sigma_per_mm**2
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
        jj = (w * (d_kappa - mj[:, None]) ** 2).sum(1) + prior
        ok = jj > 1e-18
        dk = np.where(
            ok,
            ((w * (d_kappa - mj[:, None]) * (resid - mr[:, None])).sum(1) - prior * kappa)
            / np.where(ok, jj, 1.0),
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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


# mm^2 added to every variance: keeps the weights of exact points finite.
_VARIANCE_FLOOR_MM2 = 1e-6


def _fit_circle(
    x: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray,
    cov: np.ndarray | None,
    iterations: int,
    through_origin: bool,
    curvature_sigma_per_mm: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The x-y circle of ``fit_helix``: (centre_x, centre_y, radius, straight), each (N,)."""
    floor = _VARIANCE_FLOOR_MM2
    if through_origin:
        sigma = None
        if cov is not None:
            phi_pt = np.arctan2(y, x)
            tx, ty = -np.sin(phi_pt), np.cos(phi_pt)
            var = tx * tx * cov[..., 0, 0] + 2 * tx * ty * cov[..., 0, 1] + ty * ty * cov[..., 1, 1]
            sigma = np.sqrt(var + floor)
        return fit_circle_origin(x, y, mask, sigma, curvature_sigma_per_mm)
    if cov is None:
        return fit_circle_xy(x, y, mask)
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
    return cx, cy, radius, straight


def _fit_line(
    s: np.ndarray,
    z: np.ndarray,
    mask: np.ndarray,
    cov: np.ndarray | None,
    iterations: int,
    rotation: np.ndarray,
    phi: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The (s, z) line of ``fit_helix``: z = z_ref + dz_ds * s by (weighted) least squares."""
    if cov is None:
        return _weighted_line(s, z, mask, np.ones_like(z))
    floor = _VARIANCE_FLOOR_MM2
    # Direction of increasing s in x-y at each point; a point's error moves both its z and s.
    tx, ty = -rotation[:, None] * np.sin(phi), rotation[:, None] * np.cos(phi)
    z_ref, dz_ds = _weighted_line(s, z, mask, 1.0 / (cov[..., 2, 2] + floor))
    for _ in range(max(iterations, 1)):
        k = dz_ds[:, None]
        a = np.stack([-k * tx, -k * ty, np.ones_like(tx)], axis=-1)  # (N, K, 3)
        var = np.einsum("nki,nkij,nkj->nk", a, cov, a)
        z_ref, dz_ds = _weighted_line(s, z, mask, 1.0 / (var + floor))
    return z_ref, dz_ds


def fit_helix(
    xyz_mm: np.ndarray,
    mask: np.ndarray,
    covariance_mm2: np.ndarray | None = None,
    iterations: int = 3,
    through_origin: bool = False,
    b_field_t: float = TRACKML_FIELD_TESLA,
    curvature_sigma_per_mm: float | None = None,
) -> HelixFit:
    """Fit helices to N tracks of up to K points each.

    Parameters
    ----------
    xyz_mm : (N, K, 3) points in mm, in flight order along K.
    mask : (N, K) bool, the points to fit (at least 2 per track; 3 or more for a curvature).
    covariance_mm2 : optional (N, K, 3, 3) covariance of every point (e.g. a module centre
        standing for a hit anywhere on the module: ``ModuleFrames.covariance``). Without it all
        points weigh the same. With it, each fit is repeated ``iterations`` times: the circle
        with weights 1 / (variance of the point along the circle's normal there), the (s, z) line
        with weights 1 / (variance of z - dz_ds * s), both directions taken from the previous fit.
    iterations : refits with covariances (ignored without them).
    through_origin : fit the x-y circle through the origin (``fit_circle_origin``, weighted by
        the points' azimuthal variances when covariances are given) instead of the free
        algebraic fit; for primary tracks measured coarsely.
    b_field_t : the field the tracks moved in (tesla, along +z): the dataset's
        ``PreparedDataset.b_field_t``. Only ``pt_gev`` and ``charge`` depend on it.
    curvature_sigma_per_mm : with ``through_origin``, a Gaussian prior on the curvature about 0
        (``fit_circle_origin``); None: none.

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
    cx, cy, radius, straight = _fit_circle(
        x, y, mask, cov, iterations, through_origin, curvature_sigma_per_mm
    )
    phi_ref, rotation, s, phi = _arc_lengths(x, y, mask, cx, cy, radius)
    z_ref, dz_ds = _fit_line(s, z, mask, cov, iterations, rotation, phi)
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
        b_field_t=float(b_field_t),
    )


def beam_line_circle(
    points_mm: np.ndarray, used: np.ndarray, b_field_t: float
) -> dict[str, np.ndarray]:
    """pT and charge of a circle in x-y through the beam line (0, 0) and the points.

    Parameters
    ----------
    points_mm : (N, L, 3) points of each track in mm, in flight order.
    used : (N, L) bool, the points to fit (at least 2 per track for a curvature).
    b_field_t : the field along +z in tesla.

    Returns
    -------
    predictions: ``pt_gev`` (N,) float64 in GeV and ``charge`` (N,) int8 (+1 / -1).
    """
    n = len(points_mm)
    points = np.concatenate([np.zeros((n, 1, 3)), np.where(used[..., None], points_mm, 0.0)], 1)
    mask = np.concatenate([np.ones((n, 1), dtype=bool), used], axis=1)
    fit = fit_helix(points, mask, b_field_t=b_field_t)
    return {"pt_gev": fit.pt_gev(), "charge": fit.charge()}
