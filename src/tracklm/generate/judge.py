"""Judging generated tracks against a simulated sample: physics observables and their distances.

A generated sample (from ``tracklm generate``) is compared with a held-out simulated sample,
observable by observable, and every distance is read against its **floor**: the same distance
between two independent simulated samples of the same size.

Observables (``track_observables``, one value per track unless said)
--------------------------------------------------------------------
``hits_per_track``
    The number of hits.
``modules_per_layer``
    One value per (track, layer the track has hits on): how many of its modules lie on that layer
    (2 or more for a track crossing a module overlap).
``holes_per_track``
    Layers the fitted helix crosses (within the layer's coverage) strictly between the first and
    the last hit, on which the track has no hit: the definition of ``tracklm.tasks.holes``.
``first_r_mm``, ``first_z_mm``, ``last_r_mm``, ``last_z_mm``
    Transverse radius and z of the first and last hit (module centres unless positions are given).
``pt_gev``, ``eta``, ``z0_mm``
    From a helix through the beam line (``fit_helix(..., through_origin=True)``, the azimuth-
    against-radius fit that suits coarse module centres, weighted by the modules' covariances when
    the dataset has module frames): pT = 0.3 B R, eta = asinh(dz/ds), z0 = z where the helix
    meets the beam line.
``d0_mm``
    Signed transverse impact parameter from a circle with a free impact parameter: the
    azimuth of the points against their radius fitted, by weighted least squares, as
    phi(r) = phi0 - kappa r / 2 + d0 / r (the circle to first order in kappa r and d0 / r),
    loosely held towards the beam line (``D0_PRIOR_SIGMA_MM``) where the points cannot fix it.
    Positive when the beam line lies to the right of the track, seen from +z.

Helix quantities need 3 hits. When a track's points span less than ``MIN_RADIAL_SPREAD_MM``
in transverse radius (a very forward track on overlapping modules of one disk ring), the
curvature of a circle through the beam line is undetermined: pT and d0 are NaN (dropped by the
distances), and eta and z0 come from the straight line from the beam line (z0 = 0) through the
points' mean.

Distances (``wasserstein_1``, ``quantiled_kl``, ``compare_samples``): see each function.
``unfittable``: tracks no helix can follow (see its docstring for the criterion).
``classifier_auc`` (``tracklm.generate.judge_classifier``): how well a small network tells the
generated from the simulated tracks.

Lengths in mm, momenta in GeV, the field in tesla along +z.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tracklm.tasks.common import TaskContext, track_mask
from tracklm.tracking.helix import HelixFit, fit_helix

__all__ = [
    "DISCRETE_OBSERVABLES",
    "OBSERVABLES",
    "TrackFits",
    "classifier_auc",
    "compare_samples",
    "fit_tracks",
    "quantiled_kl",
    "track_observables",
    "unfittable",
    "wasserstein_1",
]

OBSERVABLES: tuple[str, ...] = (
    "hits_per_track",
    "modules_per_layer",
    "holes_per_track",
    "first_r_mm",
    "first_z_mm",
    "last_r_mm",
    "last_z_mm",
    "pt_gev",
    "eta",
    "d0_mm",
    "z0_mm",
)
DISCRETE_OBSERVABLES: tuple[str, ...] = ("hits_per_track", "modules_per_layer", "holes_per_track")
"""Integer-valued observables: ``quantiled_kl`` bins them one bin per value."""

POSITION_SIGMA_MM = 1.0
"""Assumed uncertainty (mm, each coordinate) of given hit positions: multiple scattering of the
softest tracks over the pixel layers, and what a position head can be expected to reach."""
MODULE_NORMAL_SIGMA_MM = 0.5
"""Spread of a hit along its module's normal (``ModuleFrames.covariance``)."""
D0_PRIOR_SIGMA_MM = 20.0
"""Width of the beam-line constraint of the d0 fit (``_free_d0_fit``)."""
MIN_RADIAL_SPREAD_MM = 5.0
"""Smallest spread in transverse radius of a track's points for its circle (pT, d0) to be
determined."""
_VARIANCE_FLOOR_MM2 = 1e-6


@dataclass
class TrackFits:
    """What the observables and the unfittable criterion share: points, layers and helix fits.

    Attributes
    ----------
    points_mm : (N, L, 3) float64 the points fitted (hit positions or module centres; 0 where
        padded).
    used : (N, L) bool, the real hits.
    layers : (N, L) int64 layer index of every hit (-1 where padded).
    covariance_mm2 : (N, L, 3, 3) covariance of every point about the true hit.
    helix : helices through the beam line (pT, eta, z0, holes).
    d0_mm : (N,) impact parameter from the free-d0 azimuth fit.
    transverse_pull : (N, L) azimuth residual of each point to the free-d0 fit, times r, over
        its transverse sigma (0 where padded).
    z_pull : (N, L) z residual of each point to the helix's (s, z) line over its sigma.
    radial_spread_mm : (N,) largest minus smallest transverse radius of the points.
    """

    points_mm: np.ndarray
    used: np.ndarray
    layers: np.ndarray
    covariance_mm2: np.ndarray
    helix: HelixFit
    d0_mm: np.ndarray
    transverse_pull: np.ndarray
    z_pull: np.ndarray
    radial_spread_mm: np.ndarray

    def __len__(self) -> int:
        return int(self.used.shape[0])


def _points_and_covariance(
    tokens: np.ndarray,
    used: np.ndarray,
    context: TaskContext,
    positions_mm: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, L, 3) points (0 where unused) and (N, L, 3, 3) covariances about the true hits.

    Module centres with the modules' covariances, or the given positions with
    ``POSITION_SIGMA_MM``; a hit whose given position is not finite falls back to its module.
    """
    n, width = used.shape
    points = context.centres_of(tokens)
    frames = context.frames
    if frames is not None:
        covariance = frames.covariance(tokens, normal_sigma_mm=MODULE_NORMAL_SIGMA_MM)
    else:  # no frames: a pixel module's size, isotropic
        covariance = np.broadcast_to(np.eye(3) * 10.0**2, (n, width, 3, 3))
    if positions_mm is not None:
        positions = np.asarray(positions_mm, dtype=np.float64)
        if positions.shape != (n, width, 3):
            raise ValueError(f"positions_mm must be {(n, width, 3)}, got {positions.shape}")
        measured: np.ndarray = np.asarray(np.isfinite(positions).all(axis=-1))
        points = np.where(measured[..., None], positions, points)
        covariance = np.where(
            measured[..., None, None], np.eye(3) * POSITION_SIGMA_MM**2, covariance
        )
    points = np.where(used[..., None], np.nan_to_num(points), 0.0)
    return points, np.asarray(covariance, dtype=np.float64)


def _transverse_sigma_mm(points: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """(N, L) sigma of each point along the azimuthal direction about the z axis."""
    phi = np.arctan2(points[..., 1], points[..., 0])
    tx, ty = -np.sin(phi), np.cos(phi)
    var = (
        tx * tx * covariance[..., 0, 0]
        + 2 * tx * ty * covariance[..., 0, 1]
        + ty * ty * covariance[..., 1, 1]
    )
    return np.sqrt(var + _VARIANCE_FLOOR_MM2)


def _free_d0_fit(
    points: np.ndarray, used: np.ndarray, sigma_mm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """d0 (N,) and the weighted azimuth residuals times r (N, L) of phi = phi0 - k r / 2 + d0 / r.

    Weighted linear least squares in (phi0, kappa, d0), with d0 = 0 +- ``D0_PRIOR_SIGMA_MM``
    as one more measurement: it holds d0 where the points cannot fix it (module centres at
    nearly equal radii) and barely moves it elsewhere. Azimuths are taken relative to the
    outermost point, so tracks that turn by less than pi need no unwrapping. Tracks with fewer
    than 3 points get d0 = 0 and residuals 0.
    """
    r = np.hypot(points[..., 0], points[..., 1])
    use = used & (r > 1.0)
    phi = np.arctan2(points[..., 1], points[..., 0])
    outer = np.argmax(np.where(use, r, -1.0), axis=1)
    ref = np.take_along_axis(phi, outer[:, None], axis=1)
    dphi = np.where(use, np.pi - np.mod(np.pi - (phi - ref), 2.0 * np.pi), 0.0)
    r_safe = np.where(use, r, 1.0)
    design = np.stack([np.ones_like(r_safe), -0.5 * r_safe, 1.0 / r_safe], axis=-1)  # (N, L, 3)
    w = np.where(use, (r_safe / sigma_mm) ** 2, 0.0)
    normal = np.einsum("nk,nki,nkj->nij", w, design, design)
    rhs = np.einsum("nk,nki,nk->ni", w, design, dphi)
    enough = use.sum(axis=1) >= 3
    # A tiny ridge, relative to each parameter's own scale, keeps degenerate rows (too few
    # points, equal radii) solvable.
    normal[:, 2, 2] += 1.0 / D0_PRIOR_SIGMA_MM**2
    diagonal = np.diagonal(normal, axis1=1, axis2=2)
    ridge = (1e-10 * diagonal + 1e-300)[:, :, None] * np.eye(3)
    params = np.linalg.solve(normal + ridge, rhs[..., None])[..., 0]
    residual = np.where(use, r_safe * (dphi - np.einsum("nki,ni->nk", design, params)), 0.0)
    return np.where(enough, params[:, 2], 0.0), np.where(enough[:, None], residual, 0.0)


def _z_pull(fit: HelixFit, points: np.ndarray, used: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """(N, L) z residuals to the (s, z) line of ``fit`` over their sigma (0 where unused).

    The sigma is that of z - dz_ds * s, a point's error moving both (as ``fit_helix`` weighs).
    """
    s = np.where(used, np.nan_to_num(fit.s_mm), 0.0)
    residual = points[..., 2] - fit.z_ref_mm[:, None] - fit.dz_ds[:, None] * s
    phi = np.arctan2(
        points[..., 1] - fit.centre_y_mm[:, None], points[..., 0] - fit.centre_x_mm[:, None]
    )
    k = fit.dz_ds[:, None]
    tx, ty = -fit.rotation[:, None] * np.sin(phi), fit.rotation[:, None] * np.cos(phi)
    a = np.stack([-k * tx, -k * ty, np.ones_like(tx)], axis=-1)
    var = np.einsum("nki,nkij,nkj->nk", a, cov, a)
    return np.where(used, residual / np.sqrt(var + _VARIANCE_FLOOR_MM2), 0.0)


def _radial_spread_mm(points: np.ndarray, used: np.ndarray) -> np.ndarray:
    """(N,) largest minus smallest transverse radius of each track's points (0 if empty)."""
    r = np.hypot(points[..., 0], points[..., 1])
    high = np.where(used, r, -np.inf).max(axis=1)
    low = np.where(used, r, np.inf).min(axis=1)
    return np.where(used.any(axis=1), high - low, 0.0)


def fit_tracks(
    tokens: np.ndarray,
    lengths: np.ndarray,
    context: TaskContext,
    positions_mm: np.ndarray | None = None,
) -> TrackFits:
    """Fit every track once for ``track_observables`` and ``unfittable``.

    Parameters
    ----------
    tokens : (N, L) int module token ids, ``[PAD]`` after each track's end.
    lengths : (N,) int number of hits.
    context : the dataset's ``TaskContext`` (module centres, layers, frames, field).
    positions_mm : optional (N, L, 3) hit positions in mm; module centres otherwise (and where
        a position is NaN).

    Returns
    -------
    TrackFits.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    used = track_mask(lengths, tokens.shape[1])
    points, covariance = _points_and_covariance(tokens, used, context, positions_mm)
    covariance = np.where(used[..., None, None], covariance, 0.0)
    helix = fit_helix(points, used, covariance, through_origin=True, b_field_t=context.b_field_t)
    sigma = _transverse_sigma_mm(points, covariance)
    d0, residual = _free_d0_fit(points, used, sigma)
    return TrackFits(
        points_mm=points,
        used=used,
        layers=np.where(used, context.layer_of(tokens), -1),
        covariance_mm2=covariance,
        helix=helix,
        d0_mm=d0,
        transverse_pull=np.where(used, residual / sigma, 0.0),
        z_pull=_z_pull(helix, points, used, covariance),
        radial_spread_mm=_radial_spread_mm(points, used),
    )


def _holes_per_track(fits: TrackFits, context: TaskContext) -> np.ndarray:
    """(N,) layers crossed strictly between the first and last hit without a hit (module doc)."""
    n = len(fits)
    rows = np.arange(n)
    last = np.maximum(fits.used.sum(axis=1) - 1, 0)
    s = np.nan_to_num(fits.helix.s_mm)
    s_first, s_last = s[:, 0], s[rows, last]
    lo, hi = np.minimum(s_first, s_last), np.maximum(s_first, s_last)
    surfaces = context.surfaces
    count = np.zeros(n, dtype=np.int64)
    for y in range(len(surfaces)):
        layer = np.full(n, y)
        xyz, s_cross, crosses = surfaces.intersect(fits.helix, layer, lo, hi)
        inside = crosses & surfaces.covers(layer, xyz) & (s_cross > lo) & (s_cross < hi)
        count += inside & ~np.any(fits.layers == y, axis=1)
    return count


def _modules_per_layer(layers: np.ndarray) -> np.ndarray:
    """Modules per (track, layer with hits), flattened: (sum over tracks of their layers,)."""
    n = layers.shape[0]
    if layers.size == 0:
        return np.zeros(0, dtype=np.int64)
    n_layers = int(layers.max()) + 1
    key = np.where(layers >= 0, np.arange(n)[:, None] * (n_layers + 1) + layers, -1).ravel()
    counts = np.bincount(key[key >= 0], minlength=n * (n_layers + 1))
    return counts[counts > 0].astype(np.int64)


def track_observables(
    tokens: np.ndarray,
    lengths: np.ndarray,
    context: TaskContext,
    positions_mm: np.ndarray | None = None,
    fits: TrackFits | None = None,
) -> dict[str, np.ndarray]:
    """The physics observables of N tracks (module docstring), keyed as in ``OBSERVABLES``.

    Parameters
    ----------
    tokens : (N, L) int module token ids, ``[PAD]`` (0) after each track's end.
    lengths : (N,) int number of hits (at least 1).
    context : the dataset's ``TaskContext``.
    positions_mm : optional (N, L, 3) hit positions in mm (else the module centres).
    fits : the tracks' ``fit_tracks`` result, when already at hand.

    Returns
    -------
    name -> 1-D float64 array: (N,) per track, except ``modules_per_layer`` (one value per track
    and layer it has hits on). Helix quantities are NaN for tracks with fewer than 3 hits.
    """
    if fits is None:
        fits = fit_tracks(tokens, lengths, context, positions_mm)
    n = len(fits)
    rows = np.arange(n)
    n_hits = fits.used.sum(axis=1)
    last = np.maximum(n_hits - 1, 0)
    points = fits.points_mm
    first_point, last_point = points[:, 0], points[rows, last]
    helix = fits.helix
    fitted = n_hits >= 3
    circle = fitted & (fits.radial_spread_mm >= MIN_RADIAL_SPREAD_MM)
    # Undetermined circles: the line from the beam line through the points' mean.
    n_used = np.maximum(n_hits, 1)
    mean_r = np.hypot(points[..., 0], points[..., 1]).sum(axis=1) / n_used
    mean_z = points[..., 2].sum(axis=1) / n_used
    slope = np.where(circle, helix.dz_ds, mean_z / np.maximum(mean_r, 1e-6))
    z0 = np.where(circle, helix.z_ref_mm + helix.dz_ds * helix.perigee_s_mm(), 0.0)

    def helix_only(values: np.ndarray, where: np.ndarray = fitted) -> np.ndarray:
        return np.where(where, values, np.nan).astype(np.float64)

    return {
        "hits_per_track": n_hits.astype(np.float64),
        "modules_per_layer": _modules_per_layer(fits.layers).astype(np.float64),
        "holes_per_track": helix_only(_holes_per_track(fits, context)),
        "first_r_mm": np.hypot(first_point[:, 0], first_point[:, 1]),
        "first_z_mm": first_point[:, 2].copy(),
        "last_r_mm": np.hypot(last_point[:, 0], last_point[:, 1]),
        "last_z_mm": last_point[:, 2].copy(),
        "pt_gev": helix_only(helix.pt_gev(), circle),
        "eta": helix_only(np.arcsinh(slope)),
        "d0_mm": helix_only(fits.d0_mm, circle),
        "z0_mm": helix_only(z0),
    }


# Thresholds of ``unfittable``, set on 20,000 simulated training tracks of the demo dataset
# (PU200 pixel, 4-8 hits) so that about 1% of them are flagged, half of those from secondary
# vertices more than 20 mm from the beam line, which the beam-line helix does not describe.
MAX_PULL = 8.0
MAX_BACKWARD_STEP_MM = 20.0
MAX_BEAM_LINE_AHEAD_MM = 10.0


def unfittable(
    tokens: np.ndarray,
    lengths: np.ndarray,
    context: TaskContext,
    positions_mm: np.ndarray | None = None,
    fits: TrackFits | None = None,
) -> np.ndarray:
    """(N,) bool: tracks that no helix from the collision region can follow in their hit order.

    A track is flagged when any of these holds (``fit_tracks`` makes the fits):

    * a point lies more than ``MAX_PULL`` sigma from the best circle with a free impact
      parameter (azimuthal residual times r, over the point's transverse sigma: a module's
      width / sqrt(12), or ``POSITION_SIGMA_MM`` for given positions), or from the (s, z) line
      of the beam-line helix in z: no helix passes through the modules;
    * a hit lies more than ``MAX_BACKWARD_STEP_MM`` of arc length before the previous hit on
      another layer: the hits are not in flight order (two hits on one layer, a module overlap,
      may come in either order);
    * the beam line lies more than ``MAX_BEAM_LINE_AHEAD_MM`` of arc length ahead of the first
      hit along the helix: the track runs towards the beam line (hits in reverse order).

    These need 3 hits (a helix through the beam line passes through any 2 points); a track of
    any length is also flagged when a hit is not a module (a special token or padding inside
    the track).

    Calibration: about 1% of simulated tracks are flagged (half of them secondaries born far
    from the beam line); tracks of random modules on the right layers, hits shuffled out of
    order or reversed are nearly all flagged (``tests/generate/test_judge.py``).

    Parameters
    ----------
    tokens, lengths, context, positions_mm : as ``track_observables``.
    fits : the tracks' ``fit_tracks`` result, when already at hand.
    """
    if fits is None:
        fits = fit_tracks(tokens, lengths, context, positions_mm)
    off_helix = (np.abs(fits.transverse_pull).max(axis=1, initial=0.0) > MAX_PULL) | (
        np.abs(fits.z_pull).max(axis=1, initial=0.0) > MAX_PULL
    )
    s = np.nan_to_num(fits.helix.s_mm)
    step = s[:, 1:] - s[:, :-1]
    other_layer = fits.layers[:, 1:] != fits.layers[:, :-1]
    backwards = np.any(fits.used[:, 1:] & other_layer & (step < -MAX_BACKWARD_STEP_MM), axis=1)
    inwards = fits.helix.perigee_s_mm() > MAX_BEAM_LINE_AHEAD_MM
    helix_test = fits.used.sum(axis=1) >= 3
    not_a_module = np.any(fits.used & (fits.layers < 0), axis=1)
    result: np.ndarray = (helix_test & (off_helix | backwards | inwards)) | not_a_module
    return result


# ----------------------------------------------------------------------------- distances
def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def wasserstein_1(sample: np.ndarray, reference: np.ndarray) -> float:
    """Wasserstein-1 (earth mover's) distance between two 1-D empirical distributions.

    The integral over x of |F_sample(x) - F_reference(x)|, exact for the empirical CDFs, in the
    observable's unit. Non-finite values (failed fits) are dropped first.

    Parameters
    ----------
    sample, reference : 1-D arrays of any sizes.

    Returns
    -------
    float (NaN when either is empty after dropping).
    """
    a, b = np.sort(_finite(sample)), np.sort(_finite(reference))
    if a.size == 0 or b.size == 0:
        return float("nan")
    grid = np.concatenate([a, b])
    grid.sort(kind="mergesort")
    widths = np.diff(grid)
    cdf_a = np.searchsorted(a, grid[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, grid[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * widths))


def _is_discrete(values: np.ndarray, max_values: int = 64) -> bool:
    """Integer-valued with few distinct values."""
    return bool(np.all(values == np.round(values))) and np.unique(values).size <= max_values


def quantiled_kl(
    sample: np.ndarray,
    reference: np.ndarray,
    bins: int = 30,
    epsilon: float = 1e-8,
    discrete: bool | None = None,
) -> float:
    """KL(reference || sample) of histograms binned at the reference's quantiles (OmniJet-alpha).

    Bin edges: the reference's quantiles at ``bins + 1`` levels evenly spaced from 0.001 to
    0.999; values beyond the outer edges are counted in the outer bins. Each histogram's bin
    probabilities get ``epsilon`` added and are renormalised (so empty bins stay finite), then
    KL = sum_i p_ref,i log(p_ref,i / p_sample,i), in nats.

    Ties: where several quantile edges coincide (a value carrying more than 1/bins of the
    reference, e.g. the radius of one layer's module centres), they are merged and that value
    gets a bin of its own, holding exactly that value. Discrete observables (integer-valued with at most 64
    distinct values in the reference, or ``discrete=True``) get one bin per distinct reference
    value instead, edges half-way between neighbouring values; sample values beyond the
    reference's range count in the outer bins.

    Parameters
    ----------
    sample, reference : 1-D arrays; non-finite values are dropped.
    bins : number of quantile bins for continuous observables.
    epsilon : added to every bin probability.
    discrete : force (True) or forbid (False) one bin per value; None decides from the data.

    Returns
    -------
    float >= 0 (NaN when either sample is empty).
    """
    a, b = _finite(sample), _finite(reference)
    if a.size == 0 or b.size == 0:
        return float("nan")
    if discrete is None:
        discrete = _is_discrete(b)
    if discrete:
        values = np.unique(b)
        inner = 0.5 * (values[1:] + values[:-1])
    else:
        edges = np.quantile(b, np.linspace(0.001, 0.999, bins + 1))
        values, count = np.unique(edges, return_counts=True)
        tied = values[count > 1]
        # A tied value gets a bin of its own: [value, next float above it); above 0 the
        # smallest normal float (the next one is subnormal, and flushed to 0 where torch
        # flushes subnormals, ``tracklm.runtime``)
        above = np.maximum(np.nextafter(tied, np.inf), tied + np.finfo(np.float64).tiny)
        edges = np.unique(np.r_[values, above])
        inner = edges[1:-1]
    # Bin index = number of inner edges at or below the value: outer bins are open-ended.
    p_ref = np.bincount(np.searchsorted(inner, b, side="right"), minlength=inner.size + 1)
    p_gen = np.bincount(np.searchsorted(inner, a, side="right"), minlength=inner.size + 1)
    p = p_ref / b.size + epsilon
    q = p_gen / a.size + epsilon
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def compare_samples(
    generated: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    floor_sample: dict[str, np.ndarray] | Sequence[dict[str, np.ndarray]],
    bins: int = 30,
) -> dict[str, dict[str, float]]:
    """Distances of a generated sample to a reference sample, observable by observable, each
    with its floor.

    Parameters
    ----------
    generated, reference : name -> values (``track_observables``).
    floor_sample : observables of a second simulated sample, independent of ``reference`` and
        of the same size as ``generated`` (the caller subsamples), so that the floor is the
        distance that sampling noise alone gives; or a sequence of several such samples, whose
        distances are averaged (a floor from one sample fluctuates by tens of percent).
    bins : ``quantiled_kl`` bins.

    Returns
    -------
    name -> {"w1", "w1_floor", "kl", "kl_floor"} for every name of ``OBSERVABLES`` (then any
    other) found in all the samples; with two or more floor samples also "w1_floor_std" and
    "kl_floor_std", the spread (standard deviation) of the floor over them.
    """
    floors = [floor_sample] if isinstance(floor_sample, dict) else list(floor_sample)
    if not floors:
        raise ValueError("compare_samples needs at least one floor sample")
    names = [k for k in OBSERVABLES if k in generated] + [
        k for k in generated if k not in OBSERVABLES
    ]
    out: dict[str, dict[str, float]] = {}
    for name in names:
        if name not in reference or any(name not in floor for floor in floors):
            continue
        ref = reference[name]
        discrete = name in DISCRETE_OBSERVABLES or None
        w1_floor = [wasserstein_1(floor[name], ref) for floor in floors]
        kl_floor = [quantiled_kl(floor[name], ref, bins, discrete=discrete) for floor in floors]
        out[name] = {
            "w1": wasserstein_1(generated[name], ref),
            "w1_floor": float(np.mean(w1_floor)),
            "kl": quantiled_kl(generated[name], ref, bins, discrete=discrete),
            "kl_floor": float(np.mean(kl_floor)),
        }
        if len(floors) > 1:
            out[name]["w1_floor_std"] = float(np.std(w1_floor, ddof=1))
            out[name]["kl_floor_std"] = float(np.std(kl_floor, ddof=1))
    return out


# The classifier lives in its own file (it needs torch); importable from here too.
from tracklm.generate.judge_classifier import classifier_auc  # noqa: E402
