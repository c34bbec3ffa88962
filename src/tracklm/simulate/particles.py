"""Particle generation: pile-up collisions with their charged primaries, and secondaries.

Primaries: ``signal_collisions + Poisson(mean_pileup_collisions)`` collisions, each with a negative-binomial number
of charged particles, flat in eta and phi, with a log-normal pT spectrum cut at ``pt_min_gev``,
from a Gaussian luminous region. Secondaries (material interactions and decays) are spawned on
already propagated primaries: at one of the parent's material crossings, or for decays on its
helix inside the beam pipe, with a softer spectrum and a direction near the parent's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from tracklm.simulate.config import SimulationConfig
from tracklm.tracking.constants import GEV_PER_TESLA_METRE

# PDG codes (positive-charge code first) and masses in GeV.
PION, KAON, PROTON, POSITRON = 211, 321, 2212, -11
MASS_GEV = {PION: 0.13957, KAON: 0.493677, PROTON: 0.938272, POSITRON: 0.000511}


@dataclass
class ParticleSet:
    """Generated particles (arrays of length N).

    Attributes
    ----------
    vertex_mm : (N, 3) production point. momentum_gev : (N, 3) momentum at production.
    charge : (N,) int, +1 or -1. pdg : (N,) int PDG code. mass_gev : (N,).
    collision : (N,) index of the collision the particle comes from.
    parent : (N,) index of the parent particle, -1 for primaries.
    """

    vertex_mm: np.ndarray
    momentum_gev: np.ndarray
    charge: np.ndarray
    pdg: np.ndarray
    mass_gev: np.ndarray
    collision: np.ndarray
    parent: np.ndarray

    def __len__(self) -> int:
        return len(self.charge)

    @staticmethod
    def concatenate(first: ParticleSet, second: ParticleSet) -> ParticleSet:
        return ParticleSet(
            *(np.concatenate([getattr(first, name), getattr(second, name)]) for name in _FIELDS)
        )


_PARENT_DRAWS = 8
_FIELDS = ("vertex_mm", "momentum_gev", "charge", "pdg", "mass_gev", "collision", "parent")


def truncated_lognormal(
    rng: np.random.Generator, n: int, median: float, sigma: float, minimum: float
) -> np.ndarray:
    """n draws of a log-normal (median, log sigma) restricted to values >= minimum (inverse CDF)."""
    lowest = ndtr(np.log(minimum / median) / sigma)
    u = rng.uniform(lowest, 1.0, n)
    return median * np.exp(sigma * ndtri(u))


def _species(
    rng: np.random.Generator, n: int, fractions: dict[int, float], positive_fraction: float
):  # type: ignore[no-untyped-def]
    """PDG codes (signed by charge), charges and masses of n particles."""
    codes = np.array(list(fractions))
    kind = codes[rng.choice(len(codes), size=n, p=np.array(list(fractions.values())))]
    charge = np.where(rng.uniform(size=n) < positive_fraction, 1, -1)
    # Positron's code is negative: the charge-conjugate flips the sign of the positive-charge code.
    pdg = kind * charge
    mass = np.vectorize(MASS_GEV.__getitem__, otypes=[float])(kind) if n else np.zeros(0)
    return pdg.astype(np.int64), charge.astype(np.int64), mass


def _momenta(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=1)


def generate_primaries(rng: np.random.Generator, config: SimulationConfig) -> ParticleSet:
    """Charged primaries of ``signal_collisions + Poisson(mean_pileup_collisions)`` collisions."""
    n_collisions = config.signal_collisions + int(rng.poisson(config.mean_pileup_collisions))
    shape = config.multiplicity_shape
    multiplicity = rng.negative_binomial(
        shape, shape / (shape + config.charged_per_collision), n_collisions
    )
    collision = np.repeat(np.arange(n_collisions), multiplicity)
    n = collision.size
    vertices = np.stack(
        [
            rng.normal(0.0, config.vertex_sigma_xy_mm, n_collisions),
            rng.normal(0.0, config.vertex_sigma_xy_mm, n_collisions),
            rng.normal(0.0, config.vertex_sigma_z_mm, n_collisions),
        ],
        axis=1,
    )
    pt = truncated_lognormal(rng, n, config.pt_median_gev, config.pt_log_sigma, config.pt_min_gev)
    eta = rng.uniform(-config.eta_max, config.eta_max, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    pion = 1.0 - config.kaon_fraction - config.proton_fraction
    pdg, charge, mass = _species(
        rng,
        n,
        {PION: pion, KAON: config.kaon_fraction, PROTON: config.proton_fraction},
        config.positive_fraction,
    )
    return ParticleSet(
        vertex_mm=vertices[collision],
        momentum_gev=_momenta(pt, eta, phi),
        charge=charge,
        pdg=pdg,
        mass_gev=mass,
        collision=collision.astype(np.int64),
        parent=np.full(n, -1, dtype=np.int64),
    )


def _rotate_towards(direction: np.ndarray, angle: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """Unit vectors at polar ``angle`` (rad) and ``azimuth`` about each ``direction`` (N, 3)."""
    helper = np.where(
        np.abs(direction[:, 2:3]) < 0.9, np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0])
    )
    e1 = np.cross(direction, helper)
    e1 /= np.linalg.norm(e1, axis=1)[:, None]
    e2 = np.cross(direction, e1)
    return np.cos(angle)[:, None] * direction + np.sin(angle)[:, None] * (
        np.cos(azimuth)[:, None] * e1 + np.sin(azimuth)[:, None] * e2
    )


def generate_secondaries(
    rng: np.random.Generator,
    primaries: ParticleSet,
    crossing_particle: np.ndarray,
    crossing_position_mm: np.ndarray,
    crossing_momentum_gev: np.ndarray,
    crossing_layer: np.ndarray,
    config: SimulationConfig,
) -> tuple[ParticleSet, np.ndarray]:
    """Secondaries spawned on the propagated primaries.

    Parameters
    ----------
    rng : random generator.
    primaries : the primaries (already propagated).
    crossing_particle : (C,) primary index of each material crossing, sorted.
    crossing_position_mm, crossing_momentum_gev : (C, 3) where each crossing happened and with what momentum.
    crossing_layer : (C,) layer index of the crossing (the secondary is born in it).
    config : the simulation config.

    Returns
    -------
    The secondaries, and (S,) the layer each was born on (-1 for decays, born in vacuum).
    """
    n_primary = len(primaries)
    fraction = config.secondary_fraction
    n_secondary = int(rng.poisson(n_primary * fraction / (1.0 - fraction))) if n_primary else 0
    has_crossing = np.zeros(n_primary, dtype=bool)
    has_crossing[crossing_particle] = True
    candidates = np.flatnonzero(has_crossing)
    if n_secondary == 0 or candidates.size == 0:
        return _empty_set(), np.zeros(0, dtype=np.int64)

    mom = primaries.momentum_gev[candidates]
    eta = np.arcsinh(mom[:, 2] / np.hypot(mom[:, 0], mom[:, 1]))
    weight = np.exp(-np.abs(eta) / config.secondary_parent_eta_scale)
    weight /= weight.sum()
    is_decay = rng.uniform(size=n_secondary) < config.decay_fraction
    radius_target = np.exp(
        np.interp(
            rng.uniform(size=n_secondary),
            config.secondary_radius_levels,
            np.log(config.secondary_radius_quantiles_mm),
        )
    )
    crossing_radius = np.hypot(crossing_position_mm[:, 0], crossing_position_mm[:, 1])
    reach = np.zeros(n_primary)
    np.maximum.at(reach, crossing_particle, crossing_radius)
    # Interaction secondaries need a parent that got as far out as the drawn radius (parents
    # stop, curl or leave early); redraw the parent a few times, then keep the last draw.
    parent = candidates[rng.choice(candidates.size, size=n_secondary, p=weight)]
    for _ in range(_PARENT_DRAWS):
        redraw = np.flatnonzero(~is_decay & (reach[parent] < 0.8 * radius_target))
        if redraw.size == 0:
            break
        parent[redraw] = candidates[rng.choice(candidates.size, size=redraw.size, p=weight)]

    # Interaction secondaries: the parent's crossing closest in log radius to the drawn radius.
    first = np.searchsorted(crossing_particle, parent, side="left")
    count = np.searchsorted(crossing_particle, parent, side="right") - first
    width = int(count.max())
    slots = first[:, None] + np.arange(width)[None, :]
    valid = np.arange(width)[None, :] < count[:, None]
    slots = np.where(valid, slots, first[:, None])
    radius = crossing_radius[slots]
    distance = np.where(
        valid, np.abs(np.log(np.maximum(radius, 1e-3) / radius_target[:, None])), np.inf
    )
    chosen = slots[np.arange(n_secondary), np.argmin(distance, axis=1)]
    origin = crossing_position_mm[chosen].copy()
    parent_direction = crossing_momentum_gev[chosen].copy()
    born_layer = crossing_layer[chosen].copy()

    # Decays: on the parent's (unscattered) helix at a small radius, inside the beam pipe.
    decays = np.flatnonzero(is_decay)
    if decays.size:
        decay_radius = 1.0 + rng.exponential(config.decay_radius_scale_mm, decays.size)
        decay_radius = np.minimum(decay_radius, 0.9 * config.beam_pipe_radius_mm)
        origin[decays], parent_direction[decays] = _point_at_radius(
            primaries, parent[decays], decay_radius, config.magnetic_field_tesla
        )
        born_layer[decays] = -1
    parent_direction /= np.linalg.norm(parent_direction, axis=1)[:, None]

    angle = np.abs(rng.normal(0.0, config.secondary_opening_angle_rad, n_secondary))
    azimuth = rng.uniform(-np.pi, np.pi, n_secondary)
    direction = _rotate_towards(parent_direction, angle, azimuth)
    sin_theta = np.maximum(np.hypot(direction[:, 0], direction[:, 1]), 1e-6)
    pt = truncated_lognormal(
        rng,
        n_secondary,
        config.secondary_pt_median_gev,
        config.secondary_pt_log_sigma,
        config.pt_min_gev,
    )
    momentum = direction * (pt / sin_theta)[:, None]
    pion = 1.0 - config.secondary_proton_fraction - config.secondary_electron_fraction
    pdg, charge, mass = _species(
        rng,
        n_secondary,
        {
            PION: pion,
            PROTON: config.secondary_proton_fraction,
            POSITRON: config.secondary_electron_fraction,
        },
        config.positive_fraction,
    )
    secondaries = ParticleSet(
        vertex_mm=origin,
        momentum_gev=momentum,
        charge=charge,
        pdg=pdg,
        mass_gev=mass,
        collision=primaries.collision[parent],
        parent=parent.astype(np.int64),
    )
    return secondaries, born_layer.astype(np.int64)


def _point_at_radius(
    particles: ParticleSet, index: np.ndarray, radius_mm: np.ndarray, field_tesla: float
):  # type: ignore[no-untyped-def]
    """Point (n, 3) and momentum (n, 3) where particles ``index`` first reach ``radius_mm`` (no material)."""
    vertex = particles.vertex_mm[index]
    mom = particles.momentum_gev[index]
    pt = np.hypot(mom[:, 0], mom[:, 1])
    k = -particles.charge[index] * GEV_PER_TESLA_METRE * field_tesla / pt / 1000.0
    phi0 = np.arctan2(mom[:, 1], mom[:, 0])
    cot = mom[:, 2] / pt
    # Vertices sit within ~0.1 mm of the beam line, so the path to radius r is the chord
    # 2 sin(k t / 2) / k = r, i.e. t = 2 arcsin(k r / 2) / k; beyond reach the helix turns back.
    s = np.clip(np.abs(k) * radius_mm / 2.0, 0.0, 1.0)
    t = 2.0 * np.arcsin(s) / np.abs(k)
    half = 0.5 * k * t
    chord = t * np.sinc(half / np.pi)
    point = np.stack(
        [
            vertex[:, 0] + chord * np.cos(phi0 + half),
            vertex[:, 1] + chord * np.sin(phi0 + half),
            vertex[:, 2] + t * cot,
        ],
        axis=1,
    )
    phi = phi0 + k * t
    momentum = np.stack([pt * np.cos(phi), pt * np.sin(phi), mom[:, 2]], axis=1)
    return point, momentum


def _empty_set() -> ParticleSet:
    return ParticleSet(
        vertex_mm=np.zeros((0, 3)),
        momentum_gev=np.zeros((0, 3)),
        charge=np.zeros(0, dtype=np.int64),
        pdg=np.zeros(0, dtype=np.int64),
        mass_gev=np.zeros(0),
        collision=np.zeros(0, dtype=np.int64),
        parent=np.zeros(0, dtype=np.int64),
    )
