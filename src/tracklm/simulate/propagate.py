"""Helix propagation of many charged particles at once through the layers of a detector.

All particles advance together, one layer crossing per step: at each step every particle finds
the next layer surface its helix reaches (barrel cylinder or disk plane, plus passive cylinders
such as the beam pipe), intersects the helix exactly with the candidate modules of that layer
(Newton on the module plane), records a crossing for every module whose bounds it passes
through (two on overlapping neighbours), then scatters (Highland) and loses energy in the
material it crossed. A particle stops after half a turn in the transverse plane, when it leaves
the detector (no further layer ahead), when it is slowed below a minimum momentum, or when it
interacts in the material it crossed (a chance that grows with the path through that material).
Every crossing records its incidence angle: the hits decide from it whether a grazing crossing
leaves a hit.

Helix in a field B along +z, transverse path length ``t`` (mm) from the current point:
``phi(t) = phi0 + k t`` with curvature ``k = -q * 0.299792458 * B / pT / 1000`` (1/mm, B in T,
pT in GeV; the factor is ``tracking.constants.GEV_PER_TESLA_METRE``),
``x(t) = x0 + (2 sin(k t / 2) / k) cos(phi0 + k t / 2)``, likewise y with sin, and
``z(t) = z0 + t cot(theta)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracklm.detector.layers import BARREL
from tracklm.detector.locator import ModuleLocator
from tracklm.simulate.config import SimulationConfig
from tracklm.tracking.constants import GEV_PER_TESLA_METRE

_NEWTON_ITERATIONS = 3
# Plane intersections closer than this to the current point are the crossing just made.
_T_EPSILON_MM = 1e-6
_PLANE_TOLERANCE_MM = 1e-4
# Incidence factor 1/|cos(alpha)| is capped: a grazing helix does not cross metres of silicon.
_MAX_PATH_FACTOR = 20.0


@dataclass(frozen=True)
class Crossings:
    """Material crossings recorded during propagation, in flight order per particle.

    Attributes
    ----------
    particle : (C,) index of the particle in the propagated arrays.
    row : (C,) module row, -1 for a passive surface (beam pipe).
    order : (C,) flight index of the crossing along its particle (0, 1, ...).
    position_mm : (C, 3) crossing point (on the module plane for modules).
    momentum_gev : (C, 3) momentum at the crossing, before the scattering there.
    cos_incidence : (C,) |cos| of the angle between the flight direction and the surface normal
        (1 at normal incidence, near 0 for a grazing crossing).
    """

    particle: np.ndarray
    row: np.ndarray
    order: np.ndarray
    position_mm: np.ndarray
    momentum_gev: np.ndarray
    cos_incidence: np.ndarray


@dataclass
class _Flight:
    """The state of N particles during propagation (arrays updated in place, step by step).

    Attributes
    ----------
    position_mm, direction : (N, 3) current point and unit flight direction.
    p, charge, mass : (N,) momentum (GeV), charge (e), mass (GeV).
    turned : (N,) angle turned so far in the transverse plane (rad).
    visited : (N, layers) bool, layers already crossed (each is crossed at most once).
    n_recorded : (N,) crossings recorded so far per particle.
    records : one tuple of ``Crossings`` columns per recorded batch, in recording order.
    """

    position_mm: np.ndarray
    direction: np.ndarray
    p: np.ndarray
    charge: np.ndarray
    mass: np.ndarray
    turned: np.ndarray
    visited: np.ndarray
    n_recorded: np.ndarray
    records: list[tuple[np.ndarray, ...]]


@dataclass
class _Step:
    """One step of the m ``active`` particles: helix parameters at the start point and, once the
    next layer is chosen, that layer, the path to it and the material met on the way.

    Attributes
    ----------
    active : (m,) particle indices. x0 : (m, 3) start points (mm). phi0, k, cot : (m,) azimuth,
    curvature (1/mm) and cot(theta). t_max : (m,) transverse path left before half a turn (mm).
    layer, t_layer : (m,) next layer and path to it. t_end : (m,) path to the last crossing in
    that layer. x_over_x0 : (m,) material crossed (X0). n_modules : (m,) modules crossed.
    """

    active: np.ndarray
    x0: np.ndarray
    phi0: np.ndarray
    k: np.ndarray
    cot: np.ndarray
    t_max: np.ndarray
    layer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    t_layer: np.ndarray = field(default_factory=lambda: np.zeros(0))
    t_end: np.ndarray = field(default_factory=lambda: np.zeros(0))
    x_over_x0: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_modules: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def take(self, keep: np.ndarray) -> _Step:
        """The helices of particles ``keep`` (indices into this step), before a layer is chosen."""
        return _Step(
            active=self.active[keep],
            x0=self.x0[keep],
            phi0=self.phi0[keep],
            k=self.k[keep],
            cot=self.cot[keep],
            t_max=self.t_max[keep],
        )


def _helix_position(
    x0: np.ndarray, phi0: np.ndarray, k: np.ndarray, cot: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """Helix points (..., 3) at transverse path ``t`` (broadcast with the helix parameters)."""
    half = 0.5 * k * t
    # 2 sin(k t / 2) / k is the chord length; sin keeps full relative precision for tiny k t.
    chord = 2.0 * np.sin(half) / k
    return np.stack(
        [
            x0[..., 0] + chord * np.cos(phi0 + half),
            x0[..., 1] + chord * np.sin(phi0 + half),
            x0[..., 2] + t * cot,
        ],
        axis=-1,
    )


def _cylinder_paths(
    x0: np.ndarray, phi0: np.ndarray, k: np.ndarray, radius_mm: np.ndarray
) -> np.ndarray:
    """Smallest positive transverse path to each cylinder (N, L) from helices (N,); inf if none.

    Intersects the helix circle (centre C, radius 1/|k|) with the circle of radius ``radius_mm``
    about the beam line, then turns each intersection into the rotation angle from the start point.
    """
    xc = x0[:, 0] - np.sin(phi0) / k
    yc = x0[:, 1] + np.cos(phi0) / k
    rho = 1.0 / np.abs(k)
    d = np.hypot(xc, yc)[:, None]
    r = radius_mm[None, :]
    a = (r**2 - rho[:, None] ** 2 + d**2) / (2.0 * d)
    h2 = r**2 - a**2
    ok = h2 >= 0.0
    h = np.sqrt(np.where(ok, h2, 0.0))
    ux, uy = (xc[:, None] / d), (yc[:, None] / d)
    # Start point relative to the centre, and the rotation sense.
    sx, sy = (x0[:, 0] - xc)[:, None], (x0[:, 1] - yc)[:, None]
    sign = np.sign(k)[:, None]
    best = np.full(h2.shape, np.inf)
    for side in (1.0, -1.0):
        px = a * ux - side * h * uy - xc[:, None]
        py = a * uy + side * h * ux - yc[:, None]
        angle = np.arctan2(sx * py - sy * px, sx * px + sy * py) * sign
        angle = np.mod(angle, 2.0 * np.pi)
        t = angle * rho[:, None]
        best = np.where(ok & (t > _T_EPSILON_MM) & (t < best), t, best)
    return best


class Propagator:
    """Propagates particles through the layers of a detector (see the module docstring).

    Parameters
    ----------
    locator : the detector's ``ModuleLocator``.
    module_x0 : (M,) material of each module at normal incidence, in X0.
    config : the simulation config (field, beam pipe, energy loss, limits).
    """

    def __init__(
        self, locator: ModuleLocator, module_x0: np.ndarray, config: SimulationConfig
    ) -> None:
        self.locator = locator
        self.frames = locator.frames
        self.module_x0 = np.asarray(module_x0, dtype=np.float64)
        self.config = config
        surfaces = locator.layers
        margin = config.lookup_margin_mm
        n_module_layers = len(surfaces)
        barrel = [i for i, s in enumerate(surfaces) if s.kind == BARREL]
        disk = [i for i, s in enumerate(surfaces) if s.kind != BARREL]
        # Passive cylinders come after the module layers in the layer numbering.
        self.passive_radius_mm = np.array([config.beam_pipe_radius_mm])
        self.passive_x0 = np.array([config.beam_pipe_x0])
        self.n_layers = n_module_layers + len(self.passive_radius_mm)
        self.barrel_layer = np.array([*barrel, n_module_layers], dtype=np.int64)
        self.barrel_radius = np.array(
            [surfaces[i].radius_mm for i in barrel] + [config.beam_pipe_radius_mm]
        )
        self.barrel_z_lo = np.array(
            [surfaces[i].z_min_mm - margin for i in barrel] + [-config.beam_pipe_half_length_mm]
        )
        self.barrel_z_hi = np.array(
            [surfaces[i].z_max_mm + margin for i in barrel] + [config.beam_pipe_half_length_mm]
        )
        self.disk_layer = np.array(disk, dtype=np.int64)
        self.disk_z = np.array([surfaces[i].z_mm for i in disk])
        self.disk_r_lo = np.array([surfaces[i].r_min_mm - margin for i in disk])
        self.disk_r_hi = np.array([surfaces[i].r_max_mm + margin for i in disk])
        self.n_module_layers = n_module_layers

    def propagate(
        self,
        position_mm: np.ndarray,
        momentum_gev: np.ndarray,
        charge: np.ndarray,
        mass_gev: np.ndarray,
        rng: np.random.Generator,
        start_layer: np.ndarray | None = None,
        tracked: np.ndarray | None = None,
    ) -> Crossings:
        """Propagate N particles from their production points until they stop.

        Parameters
        ----------
        position_mm : (N, 3) production points.
        momentum_gev : (N, 3) momenta at production.
        charge : (N,) charges in units of e (non-zero).
        mass_gev : (N,) masses.
        rng : random generator for scattering.
        start_layer : (N,) layer index each particle is born on (not crossed again), -1 for none.
        tracked : (N,) bool, which particles to propagate (default all).

        Returns
        -------
        ``Crossings`` of every module and passive surface crossed.
        """
        flight = self._start(position_mm, momentum_gev, charge, mass_gev, start_layer)
        active = np.flatnonzero(
            (flight.p > 0) & (True if tracked is None else np.asarray(tracked, dtype=bool))
        )
        for _ in range(self.config.max_layer_crossings):
            if active.size == 0:
                break
            active = self._step(flight, active, rng)
        return self._collect(flight.records)

    def _start(
        self,
        position_mm: np.ndarray,
        momentum_gev: np.ndarray,
        charge: np.ndarray,
        mass_gev: np.ndarray,
        start_layer: np.ndarray | None,
    ) -> _Flight:
        """The flight state of N particles at production."""
        n = len(position_mm)
        mom = np.array(momentum_gev, dtype=np.float64).reshape(n, 3)
        p = np.linalg.norm(mom, axis=1)
        visited = np.zeros((n, self.n_layers), dtype=bool)
        if start_layer is not None:
            born = np.flatnonzero(np.asarray(start_layer) >= 0)
            visited[born, np.asarray(start_layer)[born]] = True
        return _Flight(
            position_mm=np.array(position_mm, dtype=np.float64).reshape(n, 3),
            direction=mom / np.where(p > 0, p, 1.0)[:, None],
            p=p,
            charge=np.asarray(charge, dtype=np.float64),
            mass=np.asarray(mass_gev, dtype=np.float64),
            turned=np.zeros(n),
            visited=visited,
            n_recorded=np.zeros(n, dtype=np.int64),
            records=[],
        )

    def _step(self, flight: _Flight, active: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Move the ``active`` particles across their next layer; returns those still going."""
        step = self._helices(flight, active)
        layer, t_layer = self._next_layer(step, flight.visited[active])
        going = np.isfinite(t_layer)
        if not going.all():
            keep = np.flatnonzero(going)
            step, layer, t_layer = step.take(keep), layer[keep], t_layer[keep]
        if step.active.size == 0:
            return step.active
        flight.visited[step.active, layer] = True
        step.layer, step.t_layer, step.t_end = layer, t_layer, t_layer.copy()
        step.x_over_x0 = np.zeros(step.active.size)
        step.n_modules = np.zeros(step.active.size, dtype=np.int64)
        passive = layer >= self.n_module_layers
        if passive.any():
            self._cross_passive(flight, step, np.flatnonzero(passive))
        modular = np.flatnonzero(~passive)
        if modular.size:
            self._cross_modules(flight, step, modular)
        return self._advance(flight, step, rng)

    def _helices(self, flight: _Flight, active: np.ndarray) -> _Step:
        """The helices of the ``active`` particles from their current points."""
        x0 = flight.position_mm[active]
        d = flight.direction[active]
        sin_theta = np.hypot(d[:, 0], d[:, 1])
        # A particle along the beam line has no finite helix; it leaves through the disks.
        sin_theta = np.maximum(sin_theta, 1e-9)
        pt = flight.p[active] * sin_theta
        field = self.config.magnetic_field_tesla
        k = -flight.charge[active] * GEV_PER_TESLA_METRE * field / pt / 1000.0
        return _Step(
            active=active,
            x0=x0,
            phi0=np.arctan2(d[:, 1], d[:, 0]),
            k=k,
            cot=d[:, 2] / sin_theta,
            t_max=(np.pi - flight.turned[active]) / np.abs(k),
        )

    def _next_layer(self, step: _Step, visited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(layer (m,), path t (m,)) of the nearest layer ahead not yet crossed, within its
        extent and half a turn; t is inf where there is none."""
        x0, phi0, k, cot, t_max = step.x0, step.phi0, step.k, step.cot, step.t_max
        t_barrel = _cylinder_paths(x0, phi0, k, self.barrel_radius)
        z_at = x0[:, 2:3] + t_barrel * cot[:, None]
        t_barrel[(z_at < self.barrel_z_lo) | (z_at > self.barrel_z_hi)] = np.inf
        with np.errstate(divide="ignore", invalid="ignore"):
            t_disk = (self.disk_z[None, :] - x0[:, 2:3]) / cot[:, None]
        t_disk = np.where(np.isfinite(t_disk) & (t_disk > _T_EPSILON_MM), t_disk, np.inf)
        t_disk[t_disk > t_max[:, None]] = np.inf
        # Radius at the disk plane, only where the disk lies ahead within the half turn.
        track, disk = np.nonzero(np.isfinite(t_disk))
        point = _helix_position(x0[track], phi0[track], k[track], cot[track], t_disk[track, disk])
        r_at = np.hypot(point[:, 0], point[:, 1])
        outside = (r_at < self.disk_r_lo[disk]) | (r_at > self.disk_r_hi[disk])
        t_disk[track[outside], disk[outside]] = np.inf
        t_all = np.empty((step.active.size, self.n_layers))
        t_all[:, self.barrel_layer] = t_barrel
        t_all[:, self.disk_layer] = t_disk
        t_all[visited] = np.inf
        t_all[t_all > t_max[:, None]] = np.inf
        layer = np.argmin(t_all, axis=1)
        return layer, t_all[np.arange(step.active.size), layer]

    def _cross_passive(self, flight: _Flight, step: _Step, i: np.ndarray) -> None:
        """Passive cylinders ``i`` (step indices): material only, crossing recorded for
        secondary production."""
        t = step.t_layer[i]
        point = _helix_position(step.x0[i], step.phi0[i], step.k[i], step.cot[i], t)
        phi_here = step.phi0[i] + step.k[i] * t
        radial = np.cos(phi_here) * point[:, 0] + np.sin(phi_here) * point[:, 1]
        cos_alpha = (
            np.abs(radial) / np.hypot(point[:, 0], point[:, 1]) / np.sqrt(1.0 + step.cot[i] ** 2)
        )
        factor = np.minimum(1.0 / np.maximum(cos_alpha, 1e-12), _MAX_PATH_FACTOR)
        step.x_over_x0[i] += self.passive_x0[step.layer[i] - self.n_module_layers] * factor
        particle = step.active[i]
        flight.records.append(
            self._record(
                particle,
                np.full(i.size, -1),
                flight.n_recorded,
                point,
                phi_here,
                step.cot[i],
                flight.p[particle],
                cos_alpha,
            )
        )

    def _cross_modules(self, flight: _Flight, step: _Step, modular: np.ndarray) -> None:
        """Module layers ``modular`` (step indices): exact helix-plane intersections with the
        candidate modules, each crossing recorded with its material."""
        x0, phi0, k, cot = step.x0, step.phi0, step.k, step.cot
        t_layer = step.t_layer
        reference = _helix_position(
            x0[modular], phi0[modular], k[modular], cot[modular], t_layer[modular]
        )
        candidates = self.locator.candidates(step.layer[modular], reference)
        pair_track, slot = np.nonzero(candidates >= 0)
        rows = candidates[pair_track, slot]
        j = modular[pair_track]
        t_hit, point, inside = self._intersect_modules(
            rows, x0[j], phi0[j], k[j], cot[j], t_layer[j], step.t_max[j]
        )
        j, rows, t_hit, point = j[inside], rows[inside], t_hit[inside], point[inside]
        # Flight order within the layer.
        order = np.lexsort((t_hit, j))
        j, rows, t_hit, point = j[order], rows[order], t_hit[order], point[order]
        phi_hit = phi0[j] + k[j] * t_hit
        direction_hit = (
            np.stack([np.cos(phi_hit), np.sin(phi_hit), cot[j]], axis=1)
            / np.sqrt(1.0 + cot[j] ** 2)[:, None]
        )
        cos_alpha = np.abs(np.einsum("ij,ij->i", direction_hit, self.frames.normals[rows]))
        factor = np.minimum(1.0 / np.maximum(cos_alpha, 1e-12), _MAX_PATH_FACTOR)
        np.add.at(step.x_over_x0, j, self.module_x0[rows] * factor)
        np.add.at(step.n_modules, j, 1)
        np.maximum.at(step.t_end, j, t_hit)
        particle = step.active[j]
        flight.records.append(
            self._record(
                particle,
                rows,
                flight.n_recorded,
                point,
                phi_hit,
                cot[j],
                flight.p[particle],
                cos_alpha,
            )
        )

    def _advance(self, flight: _Flight, step: _Step, rng: np.random.Generator) -> np.ndarray:
        """Move every particle to the end of its layer crossing, apply the material (scattering,
        energy loss, interactions); returns the particles still going."""
        active = step.active
        flight.position_mm[active] = _helix_position(
            step.x0, step.phi0, step.k, step.cot, step.t_end
        )
        phi_end = step.phi0 + step.k * step.t_end
        new_direction = np.stack([np.cos(phi_end), np.sin(phi_end), step.cot], axis=1)
        new_direction /= np.linalg.norm(new_direction, axis=1)[:, None]
        flight.turned[active] += np.abs(step.k) * step.t_end
        stopped = self._apply_material(
            active, new_direction, step.x_over_x0, flight.p, flight.mass, flight.charge, rng
        )
        # Nuclear interactions (and other losses) grow with the material traversed, so a grazing
        # crossing, whose path through the module is long, ends more particles than a normal one.
        survive = np.exp(-self.config.interaction_rate_per_x0 * step.x_over_x0)
        stopped |= rng.uniform(size=active.size) >= survive
        flight.direction[active] = new_direction
        return active[~stopped]

    def _intersect_modules(
        self,
        rows: np.ndarray,
        x0: np.ndarray,
        phi0: np.ndarray,
        k: np.ndarray,
        cot: np.ndarray,
        t_start: np.ndarray,
        t_max: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Newton-solve helix x module-plane; returns (t, point (P, 3), inside-bounds mask)."""
        normal = self.frames.normals[rows]
        offset = np.einsum("ij,ij->i", normal, self.frames.centres[rows])
        t = t_start.copy()
        for _ in range(_NEWTON_ITERATIONS):
            point = _helix_position(x0, phi0, k, cot, t)
            phi = phi0 + k * t
            f = np.einsum("ij,ij->i", normal, point) - offset
            slope = normal[:, 0] * np.cos(phi) + normal[:, 1] * np.sin(phi) + normal[:, 2] * cot
            slope = np.where(np.abs(slope) > 1e-9, slope, 1e-9)
            t = t - f / slope
        point = _helix_position(x0, phi0, k, cot, t)
        f = np.einsum("ij,ij->i", normal, point) - offset
        inside = (
            (np.abs(f) < _PLANE_TOLERANCE_MM)
            & (t > _T_EPSILON_MM)
            & (t <= t_max)
            & self.frames.within_bounds(rows, self.frames.to_local(rows, point))
        )
        return t, point, inside

    @staticmethod
    def _record(
        particle: np.ndarray,
        rows: np.ndarray,
        n_recorded: np.ndarray,
        point: np.ndarray,
        phi: np.ndarray,
        cot: np.ndarray,
        p: np.ndarray,
        cos_incidence: np.ndarray,
    ) -> tuple[np.ndarray, ...]:
        """One step's crossings, with per-particle flight indices (input sorted by particle)."""
        # Rank within each particle's run of crossings in this step.
        start = np.r_[True, particle[1:] != particle[:-1]][: particle.size]
        run_start = np.maximum.accumulate(np.where(start, np.arange(particle.size), 0))
        order = n_recorded[particle] + np.arange(particle.size) - run_start
        np.add.at(n_recorded, particle, 1)
        sin_theta = 1.0 / np.sqrt(1.0 + cot**2)
        momentum = p[:, None] * np.stack(
            [np.cos(phi) * sin_theta, np.sin(phi) * sin_theta, cot * sin_theta], axis=1
        )
        return particle, rows, order, point, momentum, cos_incidence

    def _apply_material(
        self,
        active: np.ndarray,
        direction: np.ndarray,
        x_over_x0: np.ndarray,
        p: np.ndarray,
        mass: np.ndarray,
        charge: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Highland scattering and mean energy loss, in place; returns the mask of stopped ones."""
        config = self.config
        hit = np.flatnonzero(x_over_x0 > 0)
        stopped = np.zeros(active.size, dtype=bool)
        if hit.size == 0:
            return stopped
        idx = active[hit]
        x = x_over_x0[hit]
        energy = np.hypot(p[idx], mass[idx])
        beta = p[idx] / energy
        z = np.abs(charge[idx])
        theta0 = (
            0.0136 / (beta * p[idx]) * z * np.sqrt(x) * (1.0 + 0.038 * np.log(x * z**2 / beta**2))
        )
        theta0 = np.maximum(theta0, 0.0)
        d = direction[hit]
        # Two axes perpendicular to the flight direction.
        e1 = np.cross(d, np.array([0.0, 0.0, 1.0]))
        norm = np.linalg.norm(e1, axis=1)
        e1 = np.where(
            norm[:, None] > 1e-9, e1 / np.maximum(norm, 1e-12)[:, None], np.array([1.0, 0.0, 0.0])
        )
        e2 = np.cross(d, e1)
        kicks = rng.standard_normal((hit.size, 2)) * theta0[:, None]
        d = d + kicks[:, :1] * e1 + kicks[:, 1:] * e2
        direction[hit] = d / np.linalg.norm(d, axis=1)[:, None]
        if config.energy_loss:
            energy = energy - config.mip_loss_gev_per_x0 * x
            new_p = np.sqrt(np.maximum(energy**2 - mass[idx] ** 2, 0.0))
            p[idx] = new_p
            stopped[hit] = new_p < config.min_momentum_gev
        return stopped

    @staticmethod
    def _collect(records: list[tuple[np.ndarray, ...]]) -> Crossings:
        if not records:
            return Crossings(
                particle=np.zeros(0, dtype=np.int64),
                row=np.zeros(0, dtype=np.int64),
                order=np.zeros(0, dtype=np.int64),
                position_mm=np.zeros((0, 3)),
                momentum_gev=np.zeros((0, 3)),
                cos_incidence=np.zeros(0),
            )
        particle, rows, order, point, momentum, cos_incidence = (
            np.concatenate(parts) for parts in zip(*records)
        )
        return Crossings(
            particle=particle.astype(np.int64),
            row=rows.astype(np.int64),
            order=order.astype(np.int64),
            position_mm=point,
            momentum_gev=momentum,
            cos_incidence=cos_incidence,
        )
