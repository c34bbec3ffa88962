"""The finder's stages on hand-made helices: seeds, extension with an overlap hit, resolution."""

from __future__ import annotations

import numpy as np
import pytest

from tracklm.detector.geometry import Detector
from tracklm.find.config import FinderConfig
from tracklm.find.extend import TrackCandidates, extend_tracks, helix_decider
from tracklm.find.finder import HELIX, find_tracks, luminous_region
from tracklm.find.hits import EventHits, HitIndex
from tracklm.find.layers import FinderLayers
from tracklm.find.resolve import resolve_greedy
from tracklm.find.seeds import BeamlineHelix, arc_length_mm, find_seeds
from tracklm.tracking.constants import GEV_PER_TESLA_METRE

FIELD_T = 2.0
PIXEL = (7, 8, 9)


@pytest.fixture(scope="module")
def layers() -> FinderLayers:
    return FinderLayers.from_detector(Detector.builtin("trackml"), PIXEL, FIELD_T)


def helix_points(
    layers: FinderLayers, pt_gev: float, charge: int, phi0: float, eta: float, z0_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Where a particle from (0, 0, z0) crosses the barrel cylinders and the disks it reaches,
    in flight order: (points (K, 3), layer index (K,))."""
    curvature = -charge * GEV_PER_TESLA_METRE * FIELD_T / 1000.0 / pt_gev  # 1/mm, ccw > 0
    cot = np.sinh(eta)
    arcs, which = [], []
    for index in range(len(layers)):
        if layers.is_barrel[index]:
            s = float(arc_length_mm(np.array([curvature]), np.array([layers.radius_mm[index]]))[0])
        else:
            s = (layers.z_mm[index] - z0_mm) / cot
        if s <= 0:
            continue
        helix = BeamlineHelix(
            np.array([phi0]), np.array([curvature]), np.array([z0_mm]), np.array([cot]),
            np.array([0.0]),
        )  # fmt: skip
        point, _ = helix.at_arc(np.array([s]))
        r, z = np.hypot(point[0, 0], point[0, 1]), point[0, 2]
        if layers.r_min_mm[index] <= r <= layers.r_max_mm[index] and (
            layers.z_min_mm[index] <= z <= layers.z_max_mm[index]
        ):
            arcs.append(s)
            which.append(index)
    order = np.argsort(arcs)
    helix = BeamlineHelix(
        np.array([phi0]), np.array([curvature]), np.array([z0_mm]), np.array([cot]), np.array([0.0])
    )
    points = np.concatenate([helix.at_arc(np.array([arcs[i]]))[0] for i in order])
    return points, np.asarray(which)[order]


def make_hits(layers: FinderLayers, xyz: np.ndarray, layer: np.ndarray) -> EventHits:
    """Hits at ``xyz`` on ``layer``, each on its own module."""
    n = len(xyz)
    volume, layer_id = layers.volume_id[layer], layers.layer_id[layer]
    module_id = np.arange(1, n + 1)
    return EventHits(
        hit_id=np.arange(1, n + 1, dtype=np.int64),
        xyz_mm=xyz,
        r_mm=np.hypot(xyz[:, 0], xyz[:, 1]),
        phi=np.arctan2(xyz[:, 1], xyz[:, 0]),
        layer=layer.astype(np.int64),
        module=(volume * 100 + layer_id) * 100_000 + module_id,
        module_ids=np.stack([volume, layer_id, module_id], axis=1),
    )


def noise_hits(layers: FinderLayers, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hits spread uniformly over the barrel layers."""
    rng = np.random.default_rng(seed)
    barrel = np.flatnonzero(layers.is_barrel)
    layer = rng.choice(barrel, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    r = layers.radius_mm[layer]
    z = rng.uniform(-400, 400, n)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1), layer


def test_seeding_layers_follow_the_geometry(layers: FinderLayers) -> None:
    names = {tuple(layers.name(i) for i in t) for t in layers.seed_triples["first"]}
    assert ("8:2", "8:4", "8:6") in names  # the barrel
    assert ("9:2", "9:4", "9:6") in names and ("7:14", "7:12", "7:10") in names  # the endcaps
    assert ("8:4", "8:6", "8:8") in {
        tuple(layers.name(i) for i in t) for t in layers.seed_triples["skipped"]
    }


def test_a_perfect_helix_is_one_track_and_keeps_its_overlap_hit(layers: FinderLayers) -> None:
    xyz, layer = helix_points(layers, pt_gev=0.8, charge=1, phi0=0.7, eta=0.4, z0_mm=5.0)
    assert [layers.name(i) for i in layer] == ["8:2", "8:4", "8:6", "8:8"]
    # the overlapping neighbour module on 8:4 sees the particle again, 0.6 mm further out
    curvature = -GEV_PER_TESLA_METRE * FIELD_T / 1000.0 / 0.8
    helix = BeamlineHelix(
        np.array([0.7]), np.array([curvature]), np.array([5.0]), np.array([np.sinh(0.4)]),
        np.array([0.0]),
    )  # fmt: skip
    s_overlap = arc_length_mm(np.array([curvature]), np.array([layers.radius_mm[layer[1]] + 0.6]))
    overlap, _ = helix.at_arc(s_overlap)
    noise, noise_layer = noise_hits(layers, 400, seed=3)
    hits = make_hits(
        layers,
        np.concatenate([xyz, overlap, noise]),
        np.concatenate([layer, layer[1:2], noise_layer]),
    )
    track = np.arange(len(xyz) + 1)  # the particle's hits come first

    index = HitIndex(hits, layers)
    config = FinderConfig()
    seeds = find_seeds(hits, index, layers, layers.seed_triples["first"], 0.5, config, FIELD_T)
    assert [0, 1, 2] in seeds.hits.tolist() or [0, 4, 2] in seeds.hits.tolist()

    track_id = find_tracks(hits, layers, config, HELIX, FIELD_T)
    assert track_id[0] > 0
    assert np.all(track_id[track] == track_id[0])  # the four layers and the overlap hit
    assert np.sum(track_id == track_id[0]) == len(track)  # and no noise hit


def test_extension_follows_a_curling_low_pt_track_into_the_endcap(layers: FinderLayers) -> None:
    xyz, layer = helix_points(layers, pt_gev=0.3, charge=-1, phi0=-2.0, eta=2.5, z0_mm=-10.0)
    assert len(xyz) >= 5 and layers.name(layer[-1]).startswith("9:")
    hits = make_hits(layers, xyz, layer)
    index = HitIndex(hits, layers)
    config = FinderConfig()
    seeds = find_seeds(hits, index, layers, layers.seed_triples["first"], 0.2, config, FIELD_T)
    # the first three layers seed, and so do later disk triples of the same particle
    assert [0, 1, 2] in seeds.hits.tolist()
    assert all(np.all(np.diff(seed) > 0) for seed in seeds.hits)  # in flight order
    tracks = TrackCandidates.from_seeds(seeds, hits, config.max_hits)
    tracks = extend_tracks(
        tracks, hits, index, layers, config, helix_decider(config, hits), FIELD_T
    )
    first = seeds.hits.tolist().index([0, 1, 2])
    assert tracks.hits[first, : tracks.n_hits[first]].tolist() == list(range(len(xyz)))
    # a seed further out gets the first hits back when the tracks grow towards the beam line
    later = next(k for k, seed in enumerate(seeds.hits.tolist()) if seed[0] > 1)
    assert tracks.n_hits[later] < len(xyz)
    tracks = extend_tracks(
        tracks, hits, index, layers, config, helix_decider(config, hits), FIELD_T, backward=True
    )
    assert sorted(tracks.hits[later, : tracks.n_hits[later]].tolist()) == list(range(len(xyz)))


def test_greedy_resolution_keeps_the_better_track_and_drops_mostly_shared_ones() -> None:
    hits = np.array([[0, 1, 2, 3, -1], [2, 3, 4, -1, -1], [5, 6, 7, 8, 9]])
    n_hits = np.array([4, 3, 5])
    taken = np.zeros(10, dtype=bool)
    chosen, tracks = resolve_greedy(hits, n_hits, np.array([4.0, 3.0, 5.0]), taken, 3, 0.5)
    assert chosen.tolist() == [2, 0]  # the 3-hit track lost two of its hits: dropped
    assert [t.tolist() for t in tracks] == [[5, 6, 7, 8, 9], [0, 1, 2, 3]]
    assert taken.sum() == 9 and not taken[4]


def test_luminous_region_is_the_central_z0_of_the_first_tracks() -> None:
    config = FinderConfig()
    z0 = np.random.default_rng(0).normal(3.0, 6.0, 2000)
    lo, hi = luminous_region(z0, config) or (0.0, 0.0)
    assert -20 - config.luminous_margin_mm < lo < -10 and 16 < hi < 25 + config.luminous_margin_mm
    assert luminous_region(z0[: config.luminous_min_tracks - 1], config) is None


def displaced_points(
    layers: FinderLayers, pt_gev: float, charge: int, phi0: float, eta: float, origin: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where a particle made at ``origin`` (mm), leaving with azimuth ``phi0``, first crosses
    each barrel cylinder outside its start: (points (K, 3), layer index (K,)), outwards."""
    curvature = -charge * GEV_PER_TESLA_METRE * FIELD_T / 1000.0 / pt_gev  # 1/mm, ccw > 0
    s = np.linspace(0.0, 600.0, 600_001)  # transverse arc length, 1 um steps
    psi = phi0 + curvature * s
    x = origin[0] + (np.sin(psi) - np.sin(phi0)) / curvature
    y = origin[1] - (np.cos(psi) - np.cos(phi0)) / curvature
    z = origin[2] + np.sinh(eta) * s
    r = np.hypot(x, y)
    points, which = [], []
    for index in np.flatnonzero(layers.is_barrel):
        outside = np.flatnonzero(r >= layers.radius_mm[index])
        if r[0] >= layers.radius_mm[index] or outside.size == 0:
            continue
        k = outside[0]
        if layers.z_min_mm[index] <= z[k] <= layers.z_max_mm[index]:
            points.append([x[k], y[k], z[k]])
            which.append(index)
    order = np.argsort(np.hypot(*np.asarray(points)[:, :2].T))
    return np.asarray(points)[order], np.asarray(which)[order]


def test_the_last_round_finds_a_slow_particle_made_inside_the_detector(
    layers: FinderLayers,
) -> None:
    # pT 0.15 GeV, made 20 mm from the beam line and leaving it at 60 degrees to the radial
    # direction: its circle passes 17.5 mm from the beam line
    xyz, layer = displaced_points(
        layers, pt_gev=0.15, charge=1, phi0=np.pi / 3, eta=0.3, origin=np.array([20.0, 0.0, 30.0])
    )
    assert [layers.name(i) for i in layer] == ["8:2", "8:4", "8:6", "8:8"]
    noise, noise_layer = noise_hits(layers, 300, seed=5)
    hits = make_hits(layers, np.concatenate([xyz, noise]), np.concatenate([layer, noise_layer]))
    particle = np.arange(len(xyz))

    config = FinderConfig()
    assert not config.rounds[-1].beamline and config.rounds[-1].pt_min_gev < 0.15
    earlier = FinderConfig(rounds=config.rounds[:-1])
    # no beam-line seed reaches it, and the earlier free seeds bend no further than 0.2 GeV
    assert np.all(find_tracks(hits, layers, earlier, HELIX, FIELD_T)[particle] == 0)

    track_id = find_tracks(hits, layers, config, HELIX, FIELD_T)
    assert track_id[0] > 0 and np.all(track_id[particle] == track_id[0])
    assert np.sum(track_id == track_id[0]) == len(particle)  # and no noise hit
