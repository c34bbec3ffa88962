"""Particle generation: pile-up collisions with their charged primaries, and secondaries.

Primaries: ``signal_collisions`` plus ``mean_pileup_collisions`` pile-up collisions (a fixed number
by default, Poisson with ``pileup_poisson``), each with a negative-binomial number of charged
particles, flat in eta and phi, with a log-normal pT spectrum cut at ``pt_min_gev``,
from a Gaussian luminous region. Secondaries (material interactions and decays) are spawned on
already propagated primaries: at one of the parent's material crossings, or for decays on its
helix inside the beam pipe, with a softer spectrum and a direction near the parent's.
"""

from __future__ import annotations

import math
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def pileup_collisions(rng: np.random.Generator, config: SimulationConfig) -> int:
    """The number of pile-up collisions of one event, whose mean is ``mean_pileup_collisions``.

    By default the number is fixed, as in TrackML's events ("200 additional collisions"): a
    fractional mean ``n + f`` gives ``n + 1`` collisions with probability ``f`` and ``n``
    otherwise. With ``pileup_poisson`` it is Poisson, as for one LHC bunch crossing, which alone
    spreads the hit count of pile-up 200 events by about 7% (TrackML's vary by 2-3%).
    """
    mean = config.mean_pileup_collisions
    if config.pileup_poisson:
        return int(rng.poisson(mean))
    whole = math.floor(mean)
    return whole + int(rng.uniform() < mean - whole)


def generate_primaries(rng: np.random.Generator, config: SimulationConfig) -> ParticleSet:
    """Charged primaries of ``signal_collisions`` plus ``pileup_collisions`` collisions."""
    n_collisions = config.signal_collisions + pileup_collisions(rng, config)
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

    The steps, in the order they draw from ``rng``: how many secondaries (Poisson), which are
    decays, the radius each is born at, the parents (``_draw_parents``), the birth points
    (``_birth_points``: a parent's crossing, or a point on its helix for decays), then direction
    and pT (``_secondary_momenta``) and species.

    Parameters
    ----------
    rng : random generator.
    primaries : the P primaries (already propagated).
    crossing_particle : (C,) int, primary index of each material crossing, sorted.
    crossing_position_mm : (C, 3) float, where each crossing happened, in mm.
    crossing_momentum_gev : (C, 3) float, the primary's momentum at the crossing, in GeV.
    crossing_layer : (C,) int, layer index of the crossing (the secondary is born in it).
    config : the simulation config.

    Returns
    -------
    secondaries : the S secondaries (``parent`` indexes ``primaries``).
    born_layer : (S,) int64, the layer each was born on (-1 for decays, born in vacuum).
    """
    n_primary = len(primaries)
    fraction = config.secondary_fraction
    n_secondary = int(rng.poisson(n_primary * fraction / (1.0 - fraction))) if n_primary else 0
    has_crossing = np.zeros(n_primary, dtype=bool)
    has_crossing[crossing_particle] = True
    candidates = np.flatnonzero(has_crossing)
    if n_secondary == 0 or candidates.size == 0:
        return _empty_set(), np.zeros(0, dtype=np.int64)

    is_decay = rng.uniform(size=n_secondary) < config.decay_fraction
    radius_target_mm = _secondary_radii(rng, n_secondary, config)
    crossing_radius_mm = np.hypot(crossing_position_mm[:, 0], crossing_position_mm[:, 1])
    parent = _draw_parents(
        rng,
        primaries,
        candidates,
        crossing_particle,
        crossing_radius_mm,
        radius_target_mm,
        is_decay,
        config,
    )
    chosen = _nearest_crossing(crossing_particle, crossing_radius_mm, parent, radius_target_mm)
    origin_mm, parent_direction, born_layer = _birth_points(
        rng,
        primaries,
        parent,
        is_decay,
        crossing_position_mm[chosen],
        crossing_momentum_gev[chosen],
        crossing_layer[chosen],
        config,
    )
    momentum_gev = _secondary_momenta(rng, parent_direction, config)
    pdg, charge, mass = _secondary_species(rng, n_secondary, config)
    secondaries = ParticleSet(
        vertex_mm=origin_mm,
        momentum_gev=momentum_gev,
        charge=charge,
        pdg=pdg,
        mass_gev=mass,
        collision=primaries.collision[parent],
        parent=parent.astype(np.int64),
    )
    return secondaries, born_layer.astype(np.int64)


def _secondary_radii(rng: np.random.Generator, n: int, config: SimulationConfig) -> np.ndarray:
    """(n,) transverse radii in mm the secondaries should be born at.

    Drawn log-linearly between the quantiles ``config.secondary_radius_quantiles_mm`` at the
    cumulative levels ``config.secondary_radius_levels``.
    """
    return np.exp(
        np.interp(
            rng.uniform(size=n),
            config.secondary_radius_levels,
            np.log(config.secondary_radius_quantiles_mm),
        )
    )


def _draw_parents(
    rng: np.random.Generator,
    primaries: ParticleSet,
    candidates: np.ndarray,
    crossing_particle: np.ndarray,
    crossing_radius_mm: np.ndarray,
    radius_target_mm: np.ndarray,
    is_decay: np.ndarray,
    config: SimulationConfig,
) -> np.ndarray:
    """Parent primary of each secondary, weighted towards the central ones.

    Parameters
    ----------
    rng : random generator.
    primaries : the P primaries.
    candidates : (K,) int, the primaries with at least one crossing, increasing.
    crossing_particle : (C,) int, primary index of each crossing, sorted.
    crossing_radius_mm : (C,) float, transverse radius of each crossing, in mm.
    radius_target_mm : (S,) float, the radius each secondary should be born at, in mm.
    is_decay : (S,) bool, whether each secondary is a decay product.
    config : the simulation config (``secondary_parent_eta_scale``).

    Returns
    -------
    (S,) int, index into ``primaries`` of each secondary's parent.
    """
    mom = primaries.momentum_gev[candidates]
    eta = np.arcsinh(mom[:, 2] / np.hypot(mom[:, 0], mom[:, 1]))
    weight = np.exp(-np.abs(eta) / config.secondary_parent_eta_scale)
    weight /= weight.sum()
    reach_mm = np.zeros(len(primaries))
    np.maximum.at(reach_mm, crossing_particle, crossing_radius_mm)
    # Interaction secondaries need a parent that got as far out as the drawn radius (parents
    # stop, curl or leave early); redraw the parent a few times, then keep the last draw.
    parent = candidates[rng.choice(candidates.size, size=radius_target_mm.size, p=weight)]
    for _ in range(_PARENT_DRAWS):
        redraw = np.flatnonzero(~is_decay & (reach_mm[parent] < 0.8 * radius_target_mm))
        if redraw.size == 0:
            break
        parent[redraw] = candidates[rng.choice(candidates.size, size=redraw.size, p=weight)]
    return parent


def _nearest_crossing(
    crossing_particle: np.ndarray,
    crossing_radius_mm: np.ndarray,
    parent: np.ndarray,
    radius_target_mm: np.ndarray,
) -> np.ndarray:
    """Each secondary's birth crossing: its parent's crossing closest in log radius to the target.

    Parameters
    ----------
    crossing_particle : (C,) int, primary index of each crossing, sorted.
    crossing_radius_mm : (C,) float, transverse radius of each crossing, in mm.
    parent : (S,) int, parent primary of each secondary; each has at least one crossing.
    radius_target_mm : (S,) float, the radius each secondary should be born at, in mm.

    Returns
    -------
    (S,) int, index of the chosen crossing (into the C crossings).
    """
    first = np.searchsorted(crossing_particle, parent, side="left")
    count = np.searchsorted(crossing_particle, parent, side="right") - first
    width = int(count.max())
    slots = first[:, None] + np.arange(width)[None, :]
    valid = np.arange(width)[None, :] < count[:, None]
    slots = np.where(valid, slots, first[:, None])
    radius = crossing_radius_mm[slots]
    distance = np.where(
        valid, np.abs(np.log(np.maximum(radius, 1e-3) / radius_target_mm[:, None])), np.inf
    )
    return slots[np.arange(parent.size), np.argmin(distance, axis=1)]


def _birth_points(
    rng: np.random.Generator,
    primaries: ParticleSet,
    parent: np.ndarray,
    is_decay: np.ndarray,
    crossing_position_mm: np.ndarray,
    crossing_momentum_gev: np.ndarray,
    crossing_layer: np.ndarray,
    config: SimulationConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each secondary is born, its parent's direction there, and the layer it is born on.

    Interaction secondaries are born at their chosen crossing; decays on the parent's
    (unscattered) helix at a small radius, inside the beam pipe.

    Parameters
    ----------
    rng : random generator (draws the decay radii).
    primaries : the P primaries.
    parent : (S,) int, parent primary of each secondary.
    is_decay : (S,) bool, whether each secondary is a decay product.
    crossing_position_mm : (S, 3) float, position of each secondary's chosen crossing, in mm.
    crossing_momentum_gev : (S, 3) float, the parent's momentum there, in GeV.
    crossing_layer : (S,) int, layer of the chosen crossing.
    config : the simulation config (decay radius scale, beam pipe radius, field).

    Returns
    -------
    origin_mm : (S, 3) float, the birth points, in mm.
    parent_direction : (S, 3) float, unit vectors along the parent's momentum at birth.
    born_layer : (S,) int, the layer of birth, -1 for decays.
    """
    origin_mm = crossing_position_mm.copy()
    parent_direction = crossing_momentum_gev.copy()
    born_layer = crossing_layer.copy()
    decays = np.flatnonzero(is_decay)
    if decays.size:
        decay_radius_mm = 1.0 + rng.exponential(config.decay_radius_scale_mm, decays.size)
        decay_radius_mm = np.minimum(decay_radius_mm, 0.9 * config.beam_pipe_radius_mm)
        origin_mm[decays], parent_direction[decays] = _point_at_radius(
            primaries, parent[decays], decay_radius_mm, config.magnetic_field_tesla
        )
        born_layer[decays] = -1
    parent_direction /= np.linalg.norm(parent_direction, axis=1)[:, None]
    return origin_mm, parent_direction, born_layer


def _secondary_momenta(
    rng: np.random.Generator, parent_direction: np.ndarray, config: SimulationConfig
) -> np.ndarray:
    """Momenta of secondaries emitted near their parent's direction, with a soft pT spectrum.

    Parameters
    ----------
    rng : random generator.
    parent_direction : (S, 3) float, unit vectors along each parent's momentum at birth.
    config : the simulation config (opening angle, secondary pT spectrum, ``pt_min_gev``).

    Returns
    -------
    (S, 3) float, momentum of each secondary at production, in GeV.
    """
    n_secondary = len(parent_direction)
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
    return direction * (pt / sin_theta)[:, None]


def _secondary_species(
    rng: np.random.Generator, n: int, config: SimulationConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PDG codes, charges and masses (GeV) of n secondaries: pions, protons and electrons.

    Returns
    -------
    pdg, charge : (n,) int64. mass_gev : (n,) float.
    """
    pion = 1.0 - config.secondary_proton_fraction - config.secondary_electron_fraction
    fractions = {
        PION: pion,
        PROTON: config.secondary_proton_fraction,
        POSITRON: config.secondary_electron_fraction,
    }
    return _species(rng, n, fractions, config.positive_fraction)


def _point_at_radius(
    particles: ParticleSet, index: np.ndarray, radius_mm: np.ndarray, field_tesla: float
) -> tuple[np.ndarray, np.ndarray]:
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
