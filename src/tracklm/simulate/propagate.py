"""Helix propagation of many charged particles at once through the layers of a detector.

All particles advance together, one layer crossing per step: at each step every particle finds
the next layer surface its helix reaches (barrel cylinder or disk plane, plus passive cylinders
such as the beam pipe), intersects the helix exactly with the candidate modules of that layer
(Newton on the module plane), records a crossing for every module whose bounds it passes
through (two on overlapping neighbours), then scatters (Highland) and loses energy in the
material it crossed. A particle stops after half a turn in the transverse plane, when it leaves
the detector (no further layer ahead), or when it is slowed below a minimum momentum.

Helix in a field B along +z, transverse path length ``t`` (mm) from the current point:
``phi(t) = phi0 + k t`` with curvature ``k = -q * 0.299792458 * B / pT / 1000`` (1/mm, B in T,
pT in GeV), ``x(t) = x0 + (2 sin(k t / 2) / k) cos(phi0 + k t / 2)``, likewise y with sin, and
``z(t) = z0 + t cot(theta)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracklm.detector.surfaces import BARREL, ModuleLocator
from tracklm.simulate.config import SimulationConfig

# GeV per (tesla metre) for a unit charge: R[m] = pT[GeV] / (0.2998 B[T] |q|).
C_GEV_PER_T_M = 0.299792458
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
    """

    particle: np.ndarray
    row: np.ndarray
    order: np.ndarray
    position_mm: np.ndarray
    momentum_gev: np.ndarray


def _helix_position(x0, phi0, k, cot, t):  # type: ignore[no-untyped-def]
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


def _cylinder_paths(x0, phi0, k, radius_mm):  # type: ignore[no-untyped-def]
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
        self.arrays = locator.arrays
        self.module_x0 = np.asarray(module_x0, dtype=np.float64)
        self.config = config
        surfaces = locator.surfaces
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
        config = self.config
        n = len(position_mm)
        pos = np.array(position_mm, dtype=np.float64).reshape(n, 3)
        mom = np.array(momentum_gev, dtype=np.float64).reshape(n, 3)
        p = np.linalg.norm(mom, axis=1)
        direction = mom / np.where(p > 0, p, 1.0)[:, None]
        charge = np.asarray(charge, dtype=np.float64)
        mass = np.asarray(mass_gev, dtype=np.float64)
        turned = np.zeros(n)
        visited = np.zeros((n, self.n_layers), dtype=bool)
        if start_layer is not None:
            born = np.flatnonzero(np.asarray(start_layer) >= 0)
            visited[born, np.asarray(start_layer)[born]] = True
        n_recorded = np.zeros(n, dtype=np.int64)
        active = np.flatnonzero(
            (p > 0) & (True if tracked is None else np.asarray(tracked, dtype=bool))
        )
        records: list[tuple[np.ndarray, ...]] = []
        field = config.magnetic_field_tesla

        for _ in range(config.max_layer_crossings):
            if active.size == 0:
                break
            x0 = pos[active]
            d = direction[active]
            sin_theta = np.hypot(d[:, 0], d[:, 1])
            # A particle along the beam line has no finite helix; it leaves through the disks.
            sin_theta = np.maximum(sin_theta, 1e-9)
            pt = p[active] * sin_theta
            k = -charge[active] * C_GEV_PER_T_M * field / pt / 1000.0
            phi0 = np.arctan2(d[:, 1], d[:, 0])
            cot = d[:, 2] / sin_theta
            t_max = (np.pi - turned[active]) / np.abs(k)

            # Next layer: the smallest path to any not yet crossed layer within its extent.
            t_barrel = _cylinder_paths(x0, phi0, k, self.barrel_radius)
            z_at = x0[:, 2:3] + t_barrel * cot[:, None]
            t_barrel[(z_at < self.barrel_z_lo) | (z_at > self.barrel_z_hi)] = np.inf
            with np.errstate(divide="ignore", invalid="ignore"):
                t_disk = (self.disk_z[None, :] - x0[:, 2:3]) / cot[:, None]
            t_disk = np.where(np.isfinite(t_disk) & (t_disk > _T_EPSILON_MM), t_disk, np.inf)
            t_disk[t_disk > t_max[:, None]] = np.inf
            # Radius at the disk plane, only where the disk lies ahead within the half turn.
            track, disk = np.nonzero(np.isfinite(t_disk))
            point = _helix_position(
                x0[track], phi0[track], k[track], cot[track], t_disk[track, disk]
            )
            r_at = np.hypot(point[:, 0], point[:, 1])
            outside = (r_at < self.disk_r_lo[disk]) | (r_at > self.disk_r_hi[disk])
            t_disk[track[outside], disk[outside]] = np.inf
            t_all = np.empty((active.size, self.n_layers))
            t_all[:, self.barrel_layer] = t_barrel
            t_all[:, self.disk_layer] = t_disk
            t_all[visited[active]] = np.inf
            t_all[t_all > t_max[:, None]] = np.inf
            layer = np.argmin(t_all, axis=1)
            t_layer = t_all[np.arange(active.size), layer]
            going = np.isfinite(t_layer)
            if not going.all():
                keep = np.flatnonzero(going)
                active, x0 = active[keep], x0[keep]
                k, phi0, cot, t_max, layer, t_layer = (
                    k[keep],
                    phi0[keep],
                    cot[keep],
                    t_max[keep],
                    layer[keep],
                    t_layer[keep],
                )
            if active.size == 0:
                break
            visited[active, layer] = True
            m = active.size
            t_end = t_layer.copy()
            x_over_x0 = np.zeros(m)
            n_modules = np.zeros(m, dtype=np.int64)

            # Passive cylinders: material only, crossing recorded for secondary production.
            passive = layer >= self.n_module_layers
            if passive.any():
                i = np.flatnonzero(passive)
                point = _helix_position(x0[i], phi0[i], k[i], cot[i], t_layer[i])
                phi_here = phi0[i] + k[i] * t_layer[i]
                radial = np.cos(phi_here) * point[:, 0] + np.sin(phi_here) * point[:, 1]
                cos_alpha = (
                    np.abs(radial) / np.hypot(point[:, 0], point[:, 1]) / np.sqrt(1.0 + cot[i] ** 2)
                )
                factor = np.minimum(1.0 / np.maximum(cos_alpha, 1e-12), _MAX_PATH_FACTOR)
                x_over_x0[i] += self.passive_x0[layer[i] - self.n_module_layers] * factor
                records.append(
                    self._record(
                        active[i],
                        np.full(i.size, -1),
                        n_recorded,
                        point,
                        phi_here,
                        cot[i],
                        p[active[i]],
                    )
                )

            # Module layers: exact helix-plane intersections with the candidate modules.
            modular = np.flatnonzero(~passive)
            if modular.size:
                reference = _helix_position(
                    x0[modular], phi0[modular], k[modular], cot[modular], t_layer[modular]
                )
                candidates = self.locator.candidates(layer[modular], reference)
                pair_track, slot = np.nonzero(candidates >= 0)
                rows = candidates[pair_track, slot]
                j = modular[pair_track]
                t_hit, point, inside = self._intersect_modules(
                    rows, x0[j], phi0[j], k[j], cot[j], t_layer[j], t_max[j]
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
                cos_alpha = np.abs(np.einsum("ij,ij->i", direction_hit, self.arrays.normals[rows]))
                factor = np.minimum(1.0 / np.maximum(cos_alpha, 1e-12), _MAX_PATH_FACTOR)
                np.add.at(x_over_x0, j, self.module_x0[rows] * factor)
                np.add.at(n_modules, j, 1)
                np.maximum.at(t_end, j, t_hit)
                records.append(
                    self._record(active[j], rows, n_recorded, point, phi_hit, cot[j], p[active[j]])
                )

            # Move every particle to the end of its layer crossing, then apply the material.
            pos[active] = _helix_position(x0, phi0, k, cot, t_end)
            phi_end = phi0 + k * t_end
            new_direction = np.stack([np.cos(phi_end), np.sin(phi_end), cot], axis=1)
            new_direction /= np.linalg.norm(new_direction, axis=1)[:, None]
            turned[active] += np.abs(k) * t_end
            stopped = self._apply_material(active, new_direction, x_over_x0, p, mass, charge, rng)
            crossed = np.flatnonzero(n_modules > 0)
            survive = (1.0 - config.interaction_probability_per_module) ** n_modules[crossed]
            stopped[crossed] |= rng.uniform(size=crossed.size) >= survive
            direction[active] = new_direction
            active = active[~stopped]
        return self._collect(records)

    def _intersect_modules(self, rows, x0, phi0, k, cot, t_start, t_max):  # type: ignore[no-untyped-def]
        """Newton-solve helix x module-plane; returns (t, point (P, 3), inside-bounds mask)."""
        normal = self.arrays.normals[rows]
        offset = np.einsum("ij,ij->i", normal, self.arrays.centres[rows])
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
        uvw = self.arrays.to_local(rows, point)
        hv = self.arrays.hv[rows]
        inside = (
            (np.abs(f) < _PLANE_TOLERANCE_MM)
            & (t > _T_EPSILON_MM)
            & (t <= t_max)
            & (np.abs(uvw[:, 1]) <= hv)
            & (np.abs(uvw[:, 0]) <= self.arrays.half_width(rows, uvw[:, 1]))
        )
        return t, point, inside

    @staticmethod
    def _record(particle, rows, n_recorded, point, phi, cot, p):  # type: ignore[no-untyped-def]
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
        return particle, rows, order, point, momentum

    def _apply_material(self, active, direction, x_over_x0, p, mass, charge, rng):  # type: ignore[no-untyped-def]
        """Highland scattering and mean energy loss in place; returns the mask of stopped particles."""
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
            )
        particle, rows, order, point, momentum = (np.concatenate(parts) for parts in zip(*records))
        return Crossings(
            particle=particle.astype(np.int64),
            row=rows.astype(np.int64),
            order=order.astype(np.int64),
            position_mm=point,
            momentum_gev=momentum,
        )
