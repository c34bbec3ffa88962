"""TrackML-like events: particles -> propagation -> hits -> TrackML tables and files.

Two library entry points reach the generator: ``simulate_event`` makes one event in memory
(tests, studies), ``simulate_events`` writes N events into a TrackML event directory with its
manifest. ``run_simulate`` is the ``tracklm simulate`` verb: it checks the options, builds one
``SimulationConfig`` from them (``--pileup`` is its ``mean_pileup_collisions``) and calls
``simulate_events``. Each event draws from its own generator seeded by
``SeedSequence([seed, event_id])``, so an event does not depend on which others are simulated
or on the number of worker processes.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import multiprocessing
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from tracklm._fs import atomic_output_dir
from tracklm._workers import exit_with_parent
from tracklm.config import to_dict
from tracklm.detector.geometry import Detector
from tracklm.detector.locator import ModuleLocator
from tracklm.errors import InputError
from tracklm.io.trackml import write_event
from tracklm.manifest import write_manifest
from tracklm.simulate.config import SimulationConfig
from tracklm.simulate.hits import noise_hits, smear_on_module
from tracklm.simulate.particles import ParticleSet, generate_primaries, generate_secondaries
from tracklm.simulate.propagate import Crossings, Propagator

log = logging.getLogger(__name__)

# Particle ids pack the collision above the particle's serial number within it (like TrackML's
# ids pack the vertex), so ids are unique, positive and never 0 (the noise id).
_COLLISION_SHIFT = 32


@dataclass
class SimulatedEvent:
    """One simulated event: the three TrackML tables plus what the files do not store.

    Attributes
    ----------
    hits, particles, truth : TrackML tables (hits sorted by volume, layer, module).
    flight_order : (H,) per hit row, the index of the hit along its particle's flight
        (0 = first hit), -1 for noise.
    """

    hits: pd.DataFrame
    particles: pd.DataFrame
    truth: pd.DataFrame
    flight_order: np.ndarray


class _EventGenerator:
    """Generates events on one detector with one config (the lookup grid is built once).

    Parameters
    ----------
    detector : any TrackML-format detector.
    config : the simulation parameters.
    """

    def __init__(self, detector: Detector, config: SimulationConfig) -> None:
        if len(detector) == 0:
            raise InputError(f"{detector.name}: the detector has no modules")
        self.detector = detector
        self.config = config
        self.locator = ModuleLocator(detector, margin_mm=config.lookup_margin_mm)
        arrays = self.locator.frames
        self.arrays = arrays
        self.is_pixel = np.maximum(arrays.pitch_u, arrays.pitch_v) < config.pixel_max_pitch_mm
        module_x0 = np.where(self.is_pixel, config.pixel_module_x0, config.strip_module_x0)
        self.propagator = Propagator(self.locator, module_x0, config)
        self.ids = detector.ids

    def _layer_of(self, rows: np.ndarray) -> np.ndarray:
        """Layer index of each crossing row; passive crossings (-1) map to the beam pipe layer."""
        safe = np.maximum(rows, 0)
        return np.where(rows >= 0, self.locator.module_layer[safe], self.propagator.n_module_layers)

    def generate(self, rng: np.random.Generator) -> SimulatedEvent:
        """Simulate one event of this generator's config from the random generator ``rng``."""
        config = self.config
        primaries = generate_primaries(rng, config)
        crossings = self.propagator.propagate(
            primaries.vertex_mm,
            primaries.momentum_gev,
            primaries.charge,
            primaries.mass_gev,
            rng,
            tracked=_transverse_momentum(primaries) >= config.pt_min_hits_gev,
        )
        by_particle = np.lexsort((crossings.order, crossings.particle))
        secondaries, born_layer = generate_secondaries(
            rng,
            primaries,
            crossings.particle[by_particle],
            crossings.position_mm[by_particle],
            crossings.momentum_gev[by_particle],
            self._layer_of(crossings.row[by_particle]),
            config,
        )
        secondary_crossings = self.propagator.propagate(
            secondaries.vertex_mm,
            secondaries.momentum_gev,
            secondaries.charge,
            secondaries.mass_gev,
            rng,
            start_layer=born_layer,
            tracked=_transverse_momentum(secondaries) >= config.pt_min_hits_gev,
        )
        particles = ParticleSet.concatenate(primaries, secondaries)
        all_crossings = _join(crossings, secondary_crossings, len(primaries))
        return self._assemble(particles, all_crossings, rng)

    def _assemble(
        self, particles: ParticleSet, crossings: Crossings, rng: np.random.Generator
    ) -> SimulatedEvent:
        """Hits of the crossings (inefficiency, smearing) plus noise, as the TrackML tables."""
        hits = self._true_hits(crossings, rng)
        noise_rows, noise_mm = self._noise(hits.rows, rng)
        particle_id = _particle_ids(particles)
        all_rows = np.concatenate([hits.rows, noise_rows])
        sort = np.argsort(all_rows, kind="stable")
        n_noise = noise_rows.size
        n_true = hits.rows.size
        position = np.concatenate([hits.measured_mm, noise_mm])[sort]
        truth_mm = np.concatenate([hits.true_mm, noise_mm])[sort]
        hit_particle = np.concatenate([particle_id[hits.particle], np.zeros(n_noise, np.int64)])
        truth_momentum = np.concatenate([hits.momentum_gev, np.zeros((n_noise, 3))])
        weight = np.concatenate([np.full(n_true, 1.0 / max(n_true, 1)), np.zeros(n_noise)])
        flight_order = np.concatenate([hits.flight_order, np.full(n_noise, -1, np.int64)])[sort]
        ids = self.ids[all_rows[sort]]
        hit_id = np.arange(1, all_rows.size + 1, dtype=np.int64)
        return SimulatedEvent(
            hits=_hits_table(hit_id, position, ids),
            particles=_particles_table(particles, particle_id, hits.particle),
            truth=_truth_table(
                hit_id, hit_particle[sort], truth_mm, truth_momentum[sort], weight[sort]
            ),
            flight_order=flight_order,
        )

    def _true_hits(self, crossings: Crossings, rng: np.random.Generator) -> _TrueHits:
        """The module crossings that leave a hit, smeared: not grazing (``hit_min_cos_incidence``)
        and efficient (``1 - hit_inefficiency``)."""
        seen = (crossings.row >= 0) & (crossings.cos_incidence >= self.config.hit_min_cos_incidence)
        efficient = rng.uniform(size=int(seen.sum())) >= self.config.hit_inefficiency
        keep = np.flatnonzero(seen)[efficient]
        particle = crossings.particle[keep]
        rows = crossings.row[keep]
        true_mm = crossings.position_mm[keep]
        # Flight order counts only the hits that were kept.
        order = np.lexsort((crossings.order[keep], particle))
        rank = np.empty(keep.size, dtype=np.int64)
        first = (
            np.r_[True, particle[order][1:] != particle[order][:-1]]
            if keep.size
            else np.zeros(0, bool)
        )
        run_start = (
            np.maximum.accumulate(np.where(first, np.arange(keep.size), 0)) if keep.size else first
        )
        rank[order] = np.arange(keep.size) - run_start
        return _TrueHits(
            particle=particle,
            rows=rows,
            true_mm=true_mm,
            measured_mm=smear_on_module(self.arrays, rows, true_mm, rng),
            momentum_gev=crossings.momentum_gev[keep],
            flight_order=rank,
        )

    def _noise(self, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Noise hits: a fixed fraction of the pixel and of the strip hits, uniform over modules.

        Returns (N,) module rows and (N, 3) positions in mm, pixel noise first.
        """
        config = self.config
        n_pixel = int(self.is_pixel[rows].sum())
        parts = []
        for fraction, n_true, module_rows in (
            (config.pixel_noise_fraction, n_pixel, np.flatnonzero(self.is_pixel)),
            (config.strip_noise_fraction, rows.size - n_pixel, np.flatnonzero(~self.is_pixel)),
        ):
            n_noise = int(rng.poisson(n_true * fraction / (1.0 - fraction))) if fraction > 0 else 0
            parts.append(noise_hits(self.arrays, module_rows, n_noise, rng))
        return (
            np.concatenate([part[0] for part in parts]),
            np.concatenate([part[1] for part in parts]),
        )


@dataclass
class _TrueHits:
    """Hits left by particles, in crossing order: (H,) particle index and module row, (H, 3) true
    and measured positions (mm) and momentum (GeV), (H,) index along the particle's flight."""

    particle: np.ndarray
    rows: np.ndarray
    true_mm: np.ndarray
    measured_mm: np.ndarray
    momentum_gev: np.ndarray
    flight_order: np.ndarray


def _particle_ids(particles: ParticleSet) -> np.ndarray:
    """(P,) ids: collision in the high bits, serial (primaries then secondaries) below."""
    n_particles = len(particles)
    by_collision = np.argsort(particles.collision, kind="stable")
    serial = np.empty(n_particles, dtype=np.int64)
    counts = np.bincount(particles.collision, minlength=1) if n_particles else np.zeros(1, np.int64)
    serial[by_collision] = np.arange(n_particles) - np.repeat(np.cumsum(counts) - counts, counts)
    return ((particles.collision.astype(np.int64) + 1) << _COLLISION_SHIFT) + serial + 1


def _hits_table(hit_id: np.ndarray, position_mm: np.ndarray, ids: np.ndarray) -> pd.DataFrame:
    """TrackML ``hits``: (N,) ids, (N, 3) measured positions in mm, (N, 3) module id triples."""
    return pd.DataFrame(
        {
            "hit_id": hit_id,
            "x": position_mm[:, 0].astype(np.float32),
            "y": position_mm[:, 1].astype(np.float32),
            "z": position_mm[:, 2].astype(np.float32),
            "volume_id": ids[:, 0].astype(np.int32),
            "layer_id": ids[:, 1].astype(np.int32),
            "module_id": ids[:, 2].astype(np.int32),
        }
    )


def _truth_table(
    hit_id: np.ndarray,
    particle_id: np.ndarray,
    truth_mm: np.ndarray,
    momentum_gev: np.ndarray,
    weight: np.ndarray,
) -> pd.DataFrame:
    """TrackML ``truth``: per hit its particle (0 for noise), true position, momentum, weight."""
    return pd.DataFrame(
        {
            "hit_id": hit_id,
            "particle_id": particle_id,
            "tx": truth_mm[:, 0].astype(np.float32),
            "ty": truth_mm[:, 1].astype(np.float32),
            "tz": truth_mm[:, 2].astype(np.float32),
            "tpx": momentum_gev[:, 0].astype(np.float32),
            "tpy": momentum_gev[:, 1].astype(np.float32),
            "tpz": momentum_gev[:, 2].astype(np.float32),
            "weight": weight.astype(np.float32),
        }
    )


def _particles_table(
    particles: ParticleSet, particle_id: np.ndarray, hit_particle: np.ndarray
) -> pd.DataFrame:
    """TrackML ``particles`` sorted by id; ``nhits`` counts ``hit_particle`` (H,) per particle."""
    nhits = np.bincount(hit_particle, minlength=len(particles))
    table = pd.DataFrame(
        {
            "particle_id": particle_id,
            "particle_type": particles.pdg.astype(np.int32),
            "vx": particles.vertex_mm[:, 0].astype(np.float32),
            "vy": particles.vertex_mm[:, 1].astype(np.float32),
            "vz": particles.vertex_mm[:, 2].astype(np.float32),
            "px": particles.momentum_gev[:, 0].astype(np.float32),
            "py": particles.momentum_gev[:, 1].astype(np.float32),
            "pz": particles.momentum_gev[:, 2].astype(np.float32),
            "q": particles.charge.astype(np.int32),
            "nhits": nhits.astype(np.int32),
        }
    )
    return table.sort_values("particle_id", kind="stable").reset_index(drop=True)


def _transverse_momentum(particles: ParticleSet) -> np.ndarray:
    return np.hypot(particles.momentum_gev[:, 0], particles.momentum_gev[:, 1])


def _join(first: Crossings, second: Crossings, offset: int) -> Crossings:
    return Crossings(
        particle=np.concatenate([first.particle, second.particle + offset]),
        row=np.concatenate([first.row, second.row]),
        order=np.concatenate([first.order, second.order]),
        position_mm=np.concatenate([first.position_mm, second.position_mm]),
        momentum_gev=np.concatenate([first.momentum_gev, second.momentum_gev]),
        cos_incidence=np.concatenate([first.cos_incidence, second.cos_incidence]),
    )


# One generator per (detector, config): building the module lookup grid costs more than an event.
_GENERATORS: weakref.WeakKeyDictionary[Detector, dict[SimulationConfig, _EventGenerator]] = (
    weakref.WeakKeyDictionary()
)


def _generator(detector: Detector, config: SimulationConfig) -> _EventGenerator:
    """The cached generator of ``detector`` and ``config``."""
    per_detector = _GENERATORS.setdefault(detector, {})
    if config not in per_detector:
        per_detector[config] = _EventGenerator(detector, config)
    return per_detector[config]


def _event_rng(seed: int, event_id: int) -> np.random.Generator:
    """The random generator of event ``event_id`` under run seed ``seed``."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(event_id)])
    )


def simulate_event(
    detector: Detector,
    event_id: int,
    *,
    seed: int = 0,
    config: SimulationConfig | None = None,
) -> SimulatedEvent:
    """Simulate one TrackML-like event in memory.

    Parameters
    ----------
    detector : any TrackML-format detector.
    event_id : the event number; with ``seed`` it fixes the event's random stream
        (``default_rng(SeedSequence([seed, event_id]))``), so event ``k`` of
        ``simulate_events(..., seed=s)`` equals ``simulate_event(detector, k, seed=s)``.
    seed : run seed.
    config : simulation parameters, pile-up included; ``SimulationConfig()`` (pile-up 200) if None.

    Returns
    -------
    SimulatedEvent : ``hits``, ``particles``, ``truth`` (DataFrames with TrackML's columns,
        ``particle_type`` and ``weight`` included; hits sorted by (volume, layer, module) and
        numbered 1..N in that order) and ``flight_order`` (H,).
    """
    config = SimulationConfig() if config is None else config
    return _generator(detector, config).generate(_event_rng(seed, event_id))


# ---------------------------------------------------------------------- event directories
_WORKER: dict[str, Detector] = {}


def _init_worker(detector: Detector) -> None:
    _WORKER["detector"] = detector


def _init_pool_worker(detector: Detector) -> None:
    exit_with_parent()
    _init_worker(detector)


def _write_one(directory: Path, event_id: int, seed: int, config: SimulationConfig) -> int:
    event = _generator(_WORKER["detector"], config).generate(_event_rng(seed, event_id))
    write_event(directory, event_id, hits=event.hits, particles=event.particles, truth=event.truth)
    return len(event.hits)


def _write_events(
    directory: Path,
    geometry: Detector,
    configs: list[SimulationConfig],
    event_ids: list[int],
    seed: int,
    workers: int,
) -> int:
    """Write the events ``event_ids`` into ``directory`` (event ``event_ids[i]`` with
    ``configs[i]``); returns the number of hits written."""
    progress = tqdm(total=len(event_ids), desc="simulate", unit="event", disable=None)
    n_hits = 0
    if workers == 1:
        _init_worker(geometry)
        for event_id, config in zip(event_ids, configs):
            n_hits += _write_one(directory, event_id, seed, config)
            progress.update()
    else:
        # Spawned (not forked) workers: safe whatever threads the parent runs.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(workers, len(event_ids)),
            mp_context=context,
            initializer=_init_pool_worker,
            initargs=(geometry,),
        ) as pool:
            futures = [
                pool.submit(_write_one, directory, event_id, seed, config)
                for event_id, config in zip(event_ids, configs)
            ]
            for future in concurrent.futures.as_completed(futures):
                n_hits += future.result()
                progress.update()
    progress.close()
    return n_hits


def _cycled_fields(configs: list[SimulationConfig]) -> dict[str, list[Any]]:
    """The fields in which ``configs`` differ: {field: [its value in each config]}."""
    rows = [to_dict(c) for c in configs]
    return {k: [r[k] for r in rows] for k in rows[0] if any(r[k] != rows[0][k] for r in rows)}


def simulate_events(
    out: str | os.PathLike[str],
    config: SimulationConfig | Sequence[SimulationConfig],
    *,
    detector: str | os.PathLike[str] = "trackml",
    events: int = 10,
    seed: int = 0,
    workers: int = 1,
) -> Path:
    """Simulate ``events`` events into the TrackML event directory ``out`` (atomically).

    Parameters
    ----------
    out : output directory (must not exist or be empty).
    config : simulation parameters, pile-up included; recorded in the manifest. A sequence of
        configs is cycled over the events (event ``k`` uses ``config[(k - 1) % len(config)]``);
        the manifest's ``simulation`` is then the first, and ``cycled`` lists per config the
        fields that differ.
    detector : ``"trackml"`` (built-in) or a path to a TrackML ``detectors.csv``.
    events : number of events, at least 1; their ids are 1..events.
    seed : run seed; the same seed and config give byte-identical event files.
    workers : processes, at least 1; the result does not depend on it.

    Returns
    -------
    The output directory, holding ``detectors.csv``, the event files and ``manifest.json``
    (whose ``config`` holds ``events``, ``seed`` and the whole ``simulation`` config).
    """
    configs = [config] if isinstance(config, SimulationConfig) else list(config)
    if not configs:
        raise InputError("simulation config: no config given")
    geometry = Detector.load(detector)
    if len(geometry) == 0:
        raise InputError(f"{detector}: the detector has no modules")
    out = Path(out)
    settings = {"events": events, "seed": seed, "simulation": to_dict(configs[0])}
    cycled = _cycled_fields(configs)
    if cycled:
        settings["cycled"] = cycled
    log.info(
        "simulate: %d events, pile-up %g, seed %d, detector %s -> %s",
        events,
        configs[0].mean_pileup_collisions,
        seed,
        detector,
        out,
    )
    with atomic_output_dir(out) as tmp:
        geometry.to_csv(tmp / "detectors.csv")
        event_ids = list(range(1, events + 1))
        per_event = [configs[(k - 1) % len(configs)] for k in event_ids]
        n_hits = _write_events(tmp, geometry, per_event, event_ids, seed, workers)
        write_manifest(
            tmp,
            "simulate",
            config=settings,
            inputs={"detector": str(detector)},
            n_events=events,
            n_hits=n_hits,
        )
    log.info("simulate: wrote %d hits in %d events to %s", n_hits, events, out)
    return out


def run_simulate(
    out: str | os.PathLike[str],
    detector: str | os.PathLike[str] = "trackml",
    events: int = 10,
    pileup: float = SimulationConfig.mean_pileup_collisions,
    seed: int = 0,
    workers: int = 1,
    vertex_sigma_z: float | Sequence[float] = SimulationConfig.vertex_sigma_z_mm,
) -> Path:
    """``tracklm simulate``: check the options and call ``simulate_events``.

    Parameters
    ----------
    out : output directory (must not exist or be empty).
    detector : ``"trackml"`` (built-in) or a path to a TrackML ``detectors.csv``.
    events : number of events; their ids are 1..events.
    pileup : mean number of pile-up collisions per event (``SimulationConfig.mean_pileup_collisions``;
        the other simulation parameters keep their defaults).
    seed : run seed; the same seed gives byte-identical event files.
    workers : processes; the result does not depend on it.
    vertex_sigma_z : the luminous region's Gaussian spread in z (mm,
        ``SimulationConfig.vertex_sigma_z_mm``); several values are cycled over the events.

    Returns
    -------
    The output directory, holding ``detectors.csv``, the event files and ``manifest.json``.
    """
    sigmas = [vertex_sigma_z] if isinstance(vertex_sigma_z, (int, float)) else list(vertex_sigma_z)
    if not sigmas or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        for v in sigmas
    ):
        raise InputError(
            f"--vertex-sigma-z: must be finite numbers >= 0 (mm), got {vertex_sigma_z!r}"
        )
    if isinstance(events, bool) or not isinstance(events, int) or events < 1:
        raise InputError(f"--events: must be a positive integer, got {events!r}")
    if not isinstance(pileup, (int, float)) or not math.isfinite(pileup) or pileup < 0:
        raise InputError(f"--pileup: must be a finite number >= 0, got {pileup!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"--workers: must be a positive integer, got {workers!r}")
    config = SimulationConfig(mean_pileup_collisions=float(pileup))
    configs = [replace(config, vertex_sigma_z_mm=float(v)) for v in sigmas]
    return simulate_events(
        out, configs, detector=detector, events=events, seed=seed, workers=workers
    )
