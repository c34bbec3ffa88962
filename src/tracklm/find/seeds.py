"""Triplet seeds: three hits on three layers a particle from the beam line crosses in turn.

For each seeding layer triple (``FinderLayers.seed_triples``), doublets join a hit of the first
layer with the hits of the second that a particle from the beam line (|z0| below
``seed_z0_max_mm``, pT above the round's ``pt_min_gev``) could reach; the circle through the beam line
and the doublet, with the straight line in (s, z), predicts the crossing with the third layer,
and the hit there with the smallest chi2 (multiple scattering sets the window) completes the
seed. Vectorised over all hits of a layer at once.

Lengths in mm, momenta in GeV, field in tesla. Curvatures are signed, 1/mm, positive for a
counter-clockwise turn seen from +z.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracklm.find.config import FinderConfig
from tracklm.find.hits import EventHits, HitIndex
from tracklm.find.layers import FinderLayers
from tracklm.tracking.constants import GEV_PER_TESLA_METRE

# Flight between two hits of one layer on overlapping modules, for their prediction's spread.
_OVERLAP_STEP_MM = 10.0


@dataclass(frozen=True)
class Seeds:
    """S seeds.

    Attributes
    ----------
    hits : (S, 3) int64 hit indices, in flight order.
    chi2 : (S,) chi2 of the third hit against the prediction from the first two.
    z0_mm : (S,) where the seed's (s, z) line meets the beam line.
    """

    hits: np.ndarray
    chi2: np.ndarray
    z0_mm: np.ndarray

    def __len__(self) -> int:
        return int(self.hits.shape[0])

    @classmethod
    def empty(cls) -> Seeds:
        return cls(np.zeros((0, 3), np.int64), np.zeros(0), np.zeros(0))

    @classmethod
    def concatenate(cls, parts: list[Seeds]) -> Seeds:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.hits for p in parts]),
            np.concatenate([p.chi2 for p in parts]),
            np.concatenate([p.z0_mm for p in parts]),
        )


def arc_length_mm(curvature: np.ndarray, radius_mm: np.ndarray) -> np.ndarray:
    """Transverse arc length from the beam line to radius ``radius_mm`` on circles through it."""
    half = np.clip(curvature * radius_mm / 2.0, -1.0, 1.0)
    safe = np.where(np.abs(half) > 1e-9, half, 1.0)
    factor = np.where(np.abs(half) > 1e-9, np.arcsin(safe) / safe, 1.0)
    result: np.ndarray = radius_mm * factor
    return result


def momentum_scale(
    curvature: np.ndarray, cot_theta: np.ndarray, b_field_t: float
) -> tuple[np.ndarray, np.ndarray]:
    """(pT, p) in GeV of circles of signed ``curvature`` (1/mm) and slopes ``cot_theta``."""
    pt = GEV_PER_TESLA_METRE * abs(b_field_t) / 1000.0 / np.maximum(np.abs(curvature), 1e-7)
    return pt, pt * np.sqrt(1.0 + cot_theta**2)


def prediction_sigmas(
    config: FinderConfig,
    is_barrel: bool | np.ndarray,
    step_mm: np.ndarray,
    pt_gev: np.ndarray,
    cot_theta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(across, along) uncertainties (mm) of a crossing predicted ``step_mm`` of transverse arc
    length ahead: a floor plus multiple scattering, which grows with the flight length and falls
    with momentum; along a barrel it is stretched by 1 / sin(theta), along a disk by
    1 / |cos(theta)|."""
    stretch = np.sqrt(1.0 + cot_theta**2)
    p = pt_gev * stretch
    scatter = config.ms_mm_gev_per_100mm * (np.abs(step_mm) * stretch / 100.0) / p
    across = np.hypot(config.hit_sigma_mm, scatter)
    along_scale = np.where(is_barrel, stretch, stretch / np.maximum(np.abs(cot_theta), 1e-3))
    along = np.hypot(config.hit_sigma_mm, scatter * along_scale)
    return across, along


def _doublets(
    hits: EventHits,
    index: HitIndex,
    layers: FinderLayers,
    first: np.ndarray,
    layer_b: int,
    z0_range: tuple[float, float],
    max_curvature: float,
    d0_max_mm: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (hit of the first layer, hit of ``layer_b``), moving outwards, whose straight line in
    (r, z) meets the beam line inside ``z0_range`` (mm), of a particle passing within ``d0_max_mm`` of the
    beam line (0: through it, and then the circle through the beam line and both hits must
    not bend more than ``max_curvature``)."""
    xyz_a, r_a, phi_a = hits.xyz_mm[first], hits.r_mm[first], hits.phi[first]
    z_a = xyz_a[:, 2]
    r_lo, r_hi = layers.r_min_mm[layer_b], layers.r_max_mm[layer_b]
    # Azimuth turned between the two radii, at the largest curvature, plus slack for the vertex
    # (and for a track that does not come from the beam line, the angle its offset makes).
    bend = np.maximum(
        np.abs(
            np.arcsin(np.clip(max_curvature * r_hi / 2, -1, 1)) - np.arcsin(max_curvature * r_a / 2)
        ),
        np.abs(
            np.arcsin(np.clip(max_curvature * r_lo / 2, -1, 1)) - np.arcsin(max_curvature * r_a / 2)
        ),
    )
    dphi = bend + 0.01 + np.arcsin(np.clip(d0_max_mm / r_a, 0.0, 1.0))
    if layers.is_barrel[layer_b]:
        ends = [z0v + (z_a - z0v) * r / r_a for z0v in z0_range for r in (r_lo, r_hi)]
        u_lo = np.minimum.reduce(ends) - 1.0
        u_hi = np.maximum.reduce(ends) + 1.0
    else:
        ends = []
        valid = np.ones(len(first), bool)
        for z0v in z0_range:
            for zb in (layers.z_min_mm[layer_b], layers.z_max_mm[layer_b]):
                lever = z_a - z0v
                ok = (np.abs(lever) > 1e-3) & (np.sign(lever) == np.sign(zb - z0v))
                valid &= ok
                ends.append(r_a * (zb - z0v) / np.where(ok, lever, 1.0))
        u_lo = np.where(valid, np.minimum.reduce(ends) - 1.0, r_lo)
        u_hi = np.where(valid, np.maximum.reduce(ends) + 1.0, r_hi)
    query, b = index.window(layer_b, phi_a - dphi, phi_a + dphi, u_lo, u_hi)
    a = first[query]
    r_b, z_b = hits.r_mm[b], hits.xyz_mm[b, 2]
    outward = r_b > hits.r_mm[a] + 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z0_pair = hits.xyz_mm[a, 2] - hits.r_mm[a] * (z_b - hits.xyz_mm[a, 2]) / (
            r_b - hits.r_mm[a]
        )
    keep = outward & (z0_pair >= z0_range[0]) & (z0_pair <= z0_range[1])
    a, b = a[keep], b[keep]
    if d0_max_mm > 0:
        return a, b
    curvature = _beamline_curvature(hits.xyz_mm[a], hits.xyz_mm[b])
    keep = np.abs(curvature) <= max_curvature
    return a[keep], b[keep]


def _beamline_curvature(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signed curvature (1/mm) of the circles through the beam line (0, 0), a and b (x-y)."""
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    lengths = np.hypot(a[:, 0], a[:, 1]) * np.hypot(b[:, 0], b[:, 1]) * np.hypot(*(b - a)[:, :2].T)
    result: np.ndarray = 2.0 * cross / np.maximum(lengths, 1e-12)
    return result


@dataclass(frozen=True)
class BeamlineHelix:
    """Helices from the beam line through two hits: azimuth psi0 at the beam line, signed
    curvature (1/mm), z0 (mm) and cot(theta); ``s_b`` the arc length of the second hit."""

    psi0: np.ndarray
    curvature: np.ndarray
    z0_mm: np.ndarray
    cot_theta: np.ndarray
    s_b_mm: np.ndarray

    @classmethod
    def through(cls, a: np.ndarray, b: np.ndarray) -> BeamlineHelix:
        """Through hits ``a`` and ``b`` (N, 3) (mm), in flight order."""
        curvature = _beamline_curvature(a, b)
        r_a, r_b = np.hypot(a[:, 0], a[:, 1]), np.hypot(b[:, 0], b[:, 1])
        s_a, s_b = arc_length_mm(curvature, r_a), arc_length_mm(curvature, r_b)
        psi0 = np.arctan2(a[:, 1], a[:, 0]) - np.arcsin(np.clip(curvature * r_a / 2, -1, 1))
        cot = (b[:, 2] - a[:, 2]) / np.maximum(s_b - s_a, 1e-6)
        return cls(psi0, curvature, a[:, 2] - cot * s_a, cot, s_b)

    def at_arc(self, s_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(point (N, 3), tangent per unit transverse arc length (N, 3)) at arc lengths ``s_mm``."""
        k = self.curvature
        half = k * s_mm / 2.0
        safe = np.where(np.abs(half) > 1e-9, half, 1.0)
        r = s_mm * np.where(np.abs(half) > 1e-9, np.sin(safe) / safe, 1.0)
        phi = self.psi0 + half
        psi = self.psi0 + k * s_mm
        point = np.stack([r * np.cos(phi), r * np.sin(phi), self.z0_mm + self.cot_theta * s_mm], 1)
        tangent = np.stack([np.cos(psi), np.sin(psi), self.cot_theta], 1)
        return point, tangent

    def crossing(
        self, layers: FinderLayers, layer: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(point (N, 3), tangent (N, 3), arc length (N,), crosses (N,) bool) with a layer,
        beyond the second hit and inside the layer's extent."""
        if layers.is_barrel[layer]:
            radius = layers.radius_mm[layer]
            crosses = np.abs(self.curvature * radius / 2.0) < 1.0
            s = arc_length_mm(self.curvature, np.full_like(self.curvature, radius))
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                s = (layers.z_mm[layer] - self.z0_mm) / self.cot_theta
            s = np.where(np.isfinite(s), s, -1.0)
            crosses = np.abs(self.curvature * s) < np.pi
        crosses &= s > self.s_b_mm + 1.0
        point, tangent = self.at_arc(s)
        r = np.hypot(point[:, 0], point[:, 1])
        margin = 20.0
        crosses &= (r >= layers.r_min_mm[layer] - margin) & (r <= layers.r_max_mm[layer] + margin)
        crosses &= (point[:, 2] >= layers.z_min_mm[layer] - margin) & (
            point[:, 2] <= layers.z_max_mm[layer] + margin
        )
        return point, tangent, s, crosses


def find_seeds(
    hits: EventHits,
    index: HitIndex,
    layers: FinderLayers,
    triples: tuple[tuple[int, int, int], ...],
    pt_min_gev: float,
    config: FinderConfig,
    b_field_t: float,
    z0_range: tuple[float, float] | None = None,
) -> Seeds:
    """Triplet seeds on the given layer triples, among the hits in ``index``.

    Parameters
    ----------
    hits : the event's hits.
    index : spatial index of the hits still free.
    layers : the layers.
    triples : layer-index triples (first, second, third layer in flight order).
    pt_min_gev : lowest seed pT.
    z0_range : where along the beam (mm) seeds may start; default +-``config.seed_z0_max_mm``.
    config : cuts (``seed_*``, ``chi2_max``, the prediction sigmas).
    b_field_t : field (tesla) converting curvature to pT.

    Returns
    -------
    ``Seeds``: per doublet, the third hit of smallest chi2 (below ``config.chi2_max``).
    """
    max_curvature = GEV_PER_TESLA_METRE * abs(b_field_t) / 1000.0 / pt_min_gev
    if z0_range is None:
        z0_range = (-config.seed_z0_max_mm, config.seed_z0_max_mm)
    parts = []
    for layer_a, layer_b, layer_c in triples:
        first = index.hit_of[layer_a]
        first = np.unique(first)
        if first.size == 0:
            continue
        a, b = _doublets(hits, index, layers, first, layer_b, z0_range, max_curvature)
        if a.size == 0:
            continue
        helix = BeamlineHelix.through(hits.xyz_mm[a], hits.xyz_mm[b])
        overlap = layer_c == layer_b
        if overlap:
            # the third hit is the second layer's again, on the overlapping neighbour module
            s_c = helix.s_b_mm + _OVERLAP_STEP_MM
            point, tangent = helix.at_arc(helix.s_b_mm)
            crosses = np.ones(a.size, dtype=bool)
        else:
            point, tangent, s_c, crosses = helix.crossing(layers, layer_c)
        rows = np.flatnonzero(crosses)
        if rows.size == 0:
            continue
        pt, _ = momentum_scale(helix.curvature[rows], helix.cot_theta[rows], b_field_t)
        sigma_t, sigma_l = prediction_sigmas(
            config,
            bool(layers.is_barrel[layer_c]),
            s_c[rows] - helix.s_b_mm[rows],
            pt,
            helix.cot_theta[rows],
        )
        found = index.candidates(
            layer_c,
            point[rows],
            tangent[rows],
            config.search_sigmas * sigma_t,
            config.search_sigmas * sigma_l,
        )
        if found.query.size == 0:
            continue
        chi2 = (found.residual_t_mm / sigma_t[found.query]) ** 2 + (
            found.residual_l_mm / sigma_l[found.query]
        ) ** 2
        if overlap:
            second = b[rows[found.query]]
            chi2 = np.where(hits.module[found.hit] == hits.module[second], np.inf, chi2)
        order = np.lexsort((chi2, found.query))
        query, hit, chi2 = found.query[order], found.hit[order], chi2[order]
        best = np.r_[True, query[1:] != query[:-1]] & (chi2 < config.chi2_max)
        doublet = rows[query[best]]
        parts.append(
            Seeds(
                np.stack([a[doublet], b[doublet], hit[best]], axis=1),
                chi2[best],
                helix.z0_mm[doublet],
            )
        )
    return Seeds.concatenate(parts)


def circles_through(
    a: np.ndarray, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Circles through three points per row (x-y of (N, 3) arrays, mm).

    Returns
    -------
    centre_x, centre_y, radius : (N,) (radius inf for collinear points).
    """
    # Coordinates relative to b keep the arithmetic well conditioned far from the origin.
    ax, ay = a[:, 0] - b[:, 0], a[:, 1] - b[:, 1]
    cx, cy = c[:, 0] - b[:, 0], c[:, 1] - b[:, 1]
    d = 2.0 * (ax * cy - ay * cx)
    safe = np.where(np.abs(d) > 1e-12, d, 1e-12)
    a2, c2 = ax * ax + ay * ay, cx * cx + cy * cy
    ux = (cy * a2 - ay * c2) / safe
    uy = (ax * c2 - cx * a2) / safe
    radius = np.where(np.abs(d) > 1e-12, np.hypot(ux, uy), np.inf)
    return ux + b[:, 0], uy + b[:, 1], radius


def find_free_seeds(
    hits: EventHits,
    index: HitIndex,
    layers: FinderLayers,
    triples: tuple[tuple[int, int, int], ...],
    pt_min_gev: float,
    config: FinderConfig,
    b_field_t: float,
    z0_range: tuple[float, float] | None = None,
) -> Seeds:
    """Triplet seeds of particles made inside the detector (no beam-line constraint).

    The straight line through the first two hits predicts the third layer's crossing; the window
    there allows for the sagitta of a circle of ``pt_min_gev`` and for multiple scattering. The
    circle through the three hits must then pass within ``free_seed_d0_max_mm`` of the beam line
    and bend no more than ``pt_min_gev`` allows; the chi2 is that of the change of slope in
    (s, z) between the two halves of the seed. ``z0_range`` is ignored: these particles need
    not come from the luminous region (``config.free_seed_z0_max_mm`` bounds them).
    """
    max_curvature = GEV_PER_TESLA_METRE * abs(b_field_t) / 1000.0 / pt_min_gev
    parts = []
    for layer_a, layer_b, layer_c in triples:
        first = np.unique(index.hit_of[layer_a])
        if first.size == 0:
            continue
        a, b = _doublets(
            hits, index, layers, first, layer_b,
            (-config.free_seed_z0_max_mm, config.free_seed_z0_max_mm), max_curvature,
            config.free_seed_d0_max_mm,
        )  # fmt: skip
        if a.size == 0:
            continue
        xyz_a, xyz_b = hits.xyz_mm[a], hits.xyz_mm[b]
        chord = xyz_b - xyz_a
        chord_xy = np.maximum(np.hypot(chord[:, 0], chord[:, 1]), 1e-6)
        tangent = chord / chord_xy[:, None]
        if layers.is_barrel[layer_c]:
            radius = layers.radius_mm[layer_c]
            along = (xyz_b[:, :2] * tangent[:, :2]).sum(1)
            disc = along**2 - ((xyz_b[:, :2] ** 2).sum(1) - radius**2)
            step = -along + np.sqrt(np.maximum(disc, 0.0))
            crosses = disc > 0
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                step = (layers.z_mm[layer_c] - xyz_b[:, 2]) / tangent[:, 2]
            crosses = np.isfinite(step)
            step = np.where(crosses, step, -1.0)
        crosses &= step > 1.0
        point = xyz_b + tangent * step[:, None]
        r = np.hypot(point[:, 0], point[:, 1])
        margin = 20.0
        crosses &= (r >= layers.r_min_mm[layer_c] - margin) & (
            r <= layers.r_max_mm[layer_c] + margin
        )
        crosses &= (point[:, 2] >= layers.z_min_mm[layer_c] - margin) & (
            point[:, 2] <= layers.z_max_mm[layer_c] + margin
        )
        rows = np.flatnonzero(crosses)
        if rows.size == 0:
            continue
        cot = tangent[rows, 2]
        sigma_t, sigma_l = prediction_sigmas(
            config, bool(layers.is_barrel[layer_c]), step[rows],
            np.full(rows.size, pt_min_gev), cot,
        )  # fmt: skip
        sagitta = max_curvature * step[rows] * (chord_xy[rows] + step[rows]) / 2.0
        found = index.candidates(
            layer_c, point[rows], tangent[rows],
            config.search_sigmas * sigma_t + sagitta, config.search_sigmas * sigma_l,
        )  # fmt: skip
        if found.query.size == 0:
            continue
        ia, ib, ic = a[rows[found.query]], b[rows[found.query]], found.hit
        pa, pb, pc = hits.xyz_mm[ia], hits.xyz_mm[ib], hits.xyz_mm[ic]
        ux, uy, radius = circles_through(pa, pb, pc)
        d0 = np.abs(np.hypot(ux, uy) - radius)
        s_ab = 2.0 * radius * np.arcsin(np.clip(np.hypot(*(pb - pa)[:, :2].T) / (2 * radius), 0, 1))
        s_bc = 2.0 * radius * np.arcsin(np.clip(np.hypot(*(pc - pb)[:, :2].T) / (2 * radius), 0, 1))
        s_ab = np.where(np.isfinite(radius), s_ab, np.hypot(*(pb - pa)[:, :2].T))
        s_bc = np.where(np.isfinite(radius), s_bc, np.hypot(*(pc - pb)[:, :2].T))
        cot_ab = (pb[:, 2] - pa[:, 2]) / np.maximum(s_ab, 1e-6)
        z_residual = pc[:, 2] - (pb[:, 2] + cot_ab * s_bc)
        pt = GEV_PER_TESLA_METRE * abs(b_field_t) * radius / 1000.0
        _, sigma_z = prediction_sigmas(config, True, s_bc, np.maximum(pt, pt_min_gev), cot_ab)
        chi2 = (z_residual / sigma_z) ** 2
        # where the (s, z) line meets the beam line, s taken as the radius (a rough z0)
        z0 = pa[:, 2] - cot_ab * np.hypot(pa[:, 0], pa[:, 1])
        ok = (pt >= pt_min_gev) & (d0 <= config.free_seed_d0_max_mm) & (chi2 < config.chi2_max)
        query, hit, chi2, z0 = found.query[ok], ic[ok], chi2[ok], z0[ok]
        order = np.lexsort((chi2, query))
        query, hit, chi2, z0 = query[order], hit[order], chi2[order], z0[order]
        best = np.r_[True, query[1:] != query[:-1]] if query.size else query > 0
        doublet = rows[query[best]]
        seed_hits = np.stack([a[doublet], b[doublet], hit[best]], axis=1)
        parts.append(Seeds(seed_hits, chi2[best], z0[best]))
    return Seeds.concatenate(parts)
