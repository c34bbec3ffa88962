"""Physics of simulated pile-up 200 events against the TrackML challenge data.

The reference figures are those of the public TrackML events, quoted beside each check. Most
checks read one event; the pixel layer shares, the pixel hits per event and their spread read
``N_EVENTS`` events (the ``pixel_counts`` fixture, marked slow where used).

Tolerances are about 15% on the headline counts (the generator is tuned, not fitted) and a few
percentage points on fractions; each check fails if the physics it names breaks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tracklm.detector.geometry import PIXEL_VOLUMES, Detector
from tracklm.simulate.config import SimulationConfig
from tracklm.simulate.event import SimulatedEvent, simulate_event
from tracklm.simulate.particles import pileup_collisions

# Pixel hits per (volume, layer) of two full real TrackML events, A and B (noise included).
REAL_PIXEL_HITS = {
    (7, 2): (1235, 1423),
    (7, 4): (1504, 1674),
    (7, 6): (1751, 1967),
    (7, 8): (2048, 2334),
    (7, 10): (2389, 2670),
    (7, 12): (2548, 2706),
    (7, 14): (2615, 2809),
    (8, 2): (7628, 7916),
    (8, 4): (6412, 6585),
    (8, 6): (5731, 5952),
    (8, 8): (5318, 5392),
    (9, 2): (2796, 2806),
    (9, 4): (2673, 2785),
    (9, 6): (2610, 2668),
    (9, 8): (2200, 2275),
    (9, 10): (1928, 1954),
    (9, 12): (1590, 1599),
    (9, 14): (1333, 1344),
}
REAL_PIXEL_TOTALS = (54_309, 56_859)
# Events for the per-layer checks: about 900k pixel hits, so each layer's share carries a
# relative statistical error of 1.3% at most (test_pixel_layer_shares_match_the_real_detector),
# under a seventh of the 10% tolerance.
N_EVENTS = 16


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.load("trackml")


@pytest.fixture(scope="module")
def event(detector: Detector) -> SimulatedEvent:
    return simulate_event(
        detector, event_id=1, seed=0, config=SimulationConfig(mean_pileup_collisions=200.0)
    )


@pytest.fixture(scope="module")
def pixel_counts(detector: Detector, event: SimulatedEvent) -> pd.DataFrame:
    """Pixel hits per (volume, layer) (columns) of events 1..N_EVENTS of seed 0 (rows)."""
    rows = []
    for event_id in range(1, N_EVENTS + 1):
        this = event if event_id == 1 else simulate_event(detector, event_id=event_id, seed=0)
        hits = this.hits
        pixel = hits[hits["volume_id"].isin(PIXEL_VOLUMES)]
        rows.append(pixel.groupby(["volume_id", "layer_id"]).size().rename(event_id))
    return pd.DataFrame(rows).fillna(0).astype(np.int64)


@pytest.fixture(scope="module")
def pixel_tracks(event: SimulatedEvent) -> pd.DataFrame:
    """True pixel hits of particles with at least 4 of them, with flight order and distances."""
    hits, truth = event.hits, event.truth
    pixel = hits["volume_id"].isin(PIXEL_VOLUMES).to_numpy() & (truth["particle_id"].to_numpy() > 0)
    table = pd.DataFrame(
        {
            "particle_id": truth["particle_id"].to_numpy()[pixel],
            "volume_id": hits["volume_id"].to_numpy()[pixel],
            "layer_id": hits["layer_id"].to_numpy()[pixel],
            "module_id": hits["module_id"].to_numpy()[pixel],
            "x": hits["x"].to_numpy()[pixel],
            "y": hits["y"].to_numpy()[pixel],
            "z": hits["z"].to_numpy()[pixel],
            "flight": event.flight_order[pixel],
        }
    )
    count = table.groupby("particle_id")["x"].transform("size")
    return table[count >= 4].reset_index(drop=True)


def _pt(particles: pd.DataFrame) -> np.ndarray:
    return np.hypot(particles["px"].to_numpy(), particles["py"].to_numpy())


def test_hit_counts_and_pixel_share(event: SimulatedEvent) -> None:
    volume = event.hits["volume_id"].to_numpy()
    n_hits = volume.size
    pixel = np.isin(volume, PIXEL_VOLUMES)
    assert 92_000 < n_hits < 124_000  # real: 106-109k
    assert 0.47 < pixel.mean() < 0.57  # real: 51-52%
    assert 47_000 < pixel.sum() < 65_000  # real: 54-57k
    assert 21_000 < (volume == 8).sum() < 30_000  # real: ~25k in the pixel barrel
    for endcap in (7, 9):
        assert 12_500 < (volume == endcap).sum() < 17_500  # real: ~15k per pixel endcap


def test_noise_rates(event: SimulatedEvent) -> None:
    noise = event.truth["particle_id"].to_numpy() == 0
    pixel = event.hits["volume_id"].isin(PIXEL_VOLUMES).to_numpy()
    assert noise.mean() == pytest.approx(0.15, abs=0.02)
    assert noise[pixel].mean() == pytest.approx(0.055, abs=0.01)
    assert np.all(event.truth["weight"].to_numpy()[noise] == 0)
    assert np.all(event.truth["weight"].to_numpy()[~noise] > 0)


def test_pixel_modules_nearly_all_hit(event: SimulatedEvent, detector: Detector) -> None:
    hits = event.hits[event.hits["volume_id"].isin(PIXEL_VOLUMES)]
    n_hit = len(hits.drop_duplicates(["volume_id", "layer_id", "module_id"]))
    n_pixel = int(detector.modules["volume_id"].isin(PIXEL_VOLUMES).sum())
    assert n_hit >= 0.98 * n_pixel  # real: 3,975 of 4,004


def test_particle_spectra(event: SimulatedEvent) -> None:
    particles = event.particles
    pt = _pt(particles)
    assert 10_000 < len(particles) < 15_000  # real: 12-14k
    assert 9_000 < (particles["nhits"] > 0).sum() < 13_000  # real: 10.5-12k
    np.testing.assert_allclose(
        np.quantile(pt, [0.05, 0.25, 0.5, 0.75, 0.95]), [0.12, 0.22, 0.36, 0.63, 1.5], rtol=0.12
    )
    assert (particles["q"] > 0).mean() == pytest.approx(0.55, abs=0.02)
    assert set(np.unique(particles["q"])) == {-1, 1}
    ids = particles["particle_id"].to_numpy()
    assert ids.min() > 0 and np.unique(ids).size == ids.size
    assert {211, -211, 321, 2212}.issubset(set(particles["particle_type"]))


def test_vertices_and_secondaries(event: SimulatedEvent) -> None:
    particles = event.particles
    radius = np.hypot(particles["vx"].to_numpy(), particles["vy"].to_numpy())
    secondary = radius > 1.0
    assert secondary.mean() == pytest.approx(0.30, abs=0.04)
    assert 95.0 < np.median(radius[secondary]) < 145.0  # real: ~120 mm
    assert np.median(_pt(particles)[secondary]) == pytest.approx(0.23, rel=0.15)
    primary = particles[~secondary]
    assert primary["vz"].std() == pytest.approx(6.0, rel=0.2)
    assert primary["vx"].std() == pytest.approx(0.04, rel=0.3)


def test_eta_of_particles_with_hits_is_flat(event: SimulatedEvent) -> None:
    particles = event.particles[event.particles["nhits"] > 0]
    eta = np.arcsinh(particles["pz"].to_numpy() / _pt(particles))
    np.testing.assert_allclose(np.quantile(eta, [0.25, 0.5, 0.75]), [-1.5, 0.0, 1.5], atol=0.25)
    assert (
        np.abs(eta) > 4.0
    ).mean() < 0.01  # primaries stop at |eta| = 4; a few secondaries beyond


def test_pixel_hits_per_particle(pixel_tracks: pd.DataFrame) -> None:
    count = pixel_tracks.groupby("particle_id").size().to_numpy()
    fractions = np.bincount(np.minimum(count, 9), minlength=10)[4:] / count.size
    np.testing.assert_allclose(fractions, [0.23, 0.25, 0.14, 0.07, 0.05, 0.27], atol=0.05)


def test_pt_of_pixel_tracks(event: SimulatedEvent, pixel_tracks: pd.DataFrame) -> None:
    particles = event.particles.set_index("particle_id")
    pt = _pt(particles.loc[pixel_tracks["particle_id"].unique()])
    assert np.median(pt) == pytest.approx(0.47, rel=0.1)
    assert (pt > 1.0).mean() == pytest.approx(0.13, abs=0.03)


def test_overlap_double_hits(pixel_tracks: pd.DataFrame) -> None:
    per_layer = pixel_tracks.groupby(["particle_id", "volume_id", "layer_id"]).size()
    volume = per_layer.index.get_level_values("volume_id")
    assert per_layer[volume == 8].mean() == pytest.approx(1.24, abs=0.06)
    assert per_layer[volume != 8].mean() == pytest.approx(1.6, abs=0.15)
    with_double = (per_layer >= 2).groupby(level="particle_id").any()
    assert with_double.mean() == pytest.approx(0.80, abs=0.06)
    assert not pixel_tracks.duplicated(["particle_id", "volume_id", "layer_id", "module_id"]).any()


def test_distance_order_matches_flight_order(pixel_tracks: pd.DataFrame) -> None:
    table = pixel_tracks.assign(
        d=np.sqrt(pixel_tracks.x**2 + pixel_tracks.y**2 + pixel_tracks.z**2)
    )
    table = table.sort_values(["particle_id", "flight"])
    rising = np.diff(table["d"].to_numpy()) > 0
    same = table["particle_id"].to_numpy()[1:] == table["particle_id"].to_numpy()[:-1]
    broken = np.unique(table["particle_id"].to_numpy()[1:][same & ~rising])
    fraction = 1.0 - broken.size / table["particle_id"].nunique()
    assert fraction >= 0.98  # real: 99.2%


def test_hits_and_truth_lie_on_their_modules(event: SimulatedEvent, detector: Detector) -> None:
    hits, truth = event.hits, event.truth
    rows = detector.rows(hits["volume_id"], hits["layer_id"], hits["module_id"])
    assert np.all(rows >= 0)
    # float32 coordinates carry ~1e-4 mm rounding at a metre.
    measured = hits[["x", "y", "z"]].to_numpy(np.float64)
    assert detector.contains(rows, measured, tolerance_mm=2e-3).all()
    true_points = truth[["tx", "ty", "tz"]].to_numpy(np.float64)
    assert detector.contains(rows, true_points, tolerance_mm=2e-3).all()
    # Smearing is of order the pitch: pixel hits within 0.1 mm of the truth.
    pixel = hits["volume_id"].isin(PIXEL_VOLUMES).to_numpy()
    assert np.percentile(np.linalg.norm(measured - true_points, axis=1)[pixel], 99) < 0.1


def test_tables_follow_the_trackml_layout(event: SimulatedEvent) -> None:
    hits = event.hits
    np.testing.assert_array_equal(hits["hit_id"], np.arange(1, len(hits) + 1))
    np.testing.assert_array_equal(event.truth["hit_id"], hits["hit_id"])
    keys = hits[["volume_id", "layer_id", "module_id"]].to_numpy(np.int64)
    packed = (keys[:, 0] << 40) | (keys[:, 1] << 24) | keys[:, 2]
    assert np.all(np.diff(packed) >= 0)
    true_hits = event.truth[event.truth["particle_id"] > 0]
    nhits = true_hits.groupby("particle_id").size()
    listed = event.particles.set_index("particle_id")["nhits"]
    np.testing.assert_array_equal(listed.loc[nhits.index].to_numpy(), nhits.to_numpy())
    assert listed.sum() == len(true_hits)
    # Every true hit carries the particle's momentum there.
    momentum = np.linalg.norm(true_hits[["tpx", "tpy", "tpz"]].to_numpy(np.float64), axis=1)
    assert np.all(momentum > 0)


def test_same_seed_same_event_different_seed_different(detector: Detector) -> None:
    config = SimulationConfig(mean_pileup_collisions=5.0)
    first = simulate_event(detector, 3, seed=11, config=config)
    again = simulate_event(detector, 3, seed=11, config=config)
    other = simulate_event(detector, 3, seed=12, config=config)
    for name in ("hits", "particles", "truth"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(again, name))
    np.testing.assert_array_equal(first.flight_order, again.flight_order)
    assert not first.hits.equals(other.hits)


def test_pileup_zero_is_one_collision(detector: Detector) -> None:
    event = simulate_event(detector, 1, seed=0, config=SimulationConfig(mean_pileup_collisions=0.0))
    hits, particles, truth = event.hits, event.particles, event.truth
    primaries = particles[np.hypot(particles["vx"], particles["vy"]) < 1.0]
    # Only the signal collision: one primary vertex, a few tens of particles.
    assert primaries["vz"].nunique() == 1
    assert 0 < len(particles) < 400
    assert len(hits) == len(truth)
    # the hits are this collision's particles' (and noise, id 0), as many as their nhits say
    signal = truth["particle_id"].to_numpy() != 0
    ids, counts = np.unique(truth["particle_id"].to_numpy()[signal], return_counts=True)
    assert len(ids) > 0 and np.isin(ids, particles["particle_id"]).all()
    nhits = particles.set_index("particle_id")["nhits"]
    np.testing.assert_array_equal(nhits.loc[ids].to_numpy(), counts)
    assert (nhits.drop(ids) == 0).all()


@pytest.mark.slow  # N_EVENTS pile-up 200 events: about 20-40 s on one core
def test_pixel_layer_shares_match_the_real_detector(pixel_counts: pd.DataFrame) -> None:
    # Each pixel layer's share of the pixel hits, within 10% (relative) of the real share.
    assert set(pixel_counts.columns) == set(REAL_PIXEL_HITS)
    layers = list(REAL_PIXEL_HITS)
    real = np.array([sum(REAL_PIXEL_HITS[key]) for key in layers], dtype=np.float64)
    real_share = real / real.sum()
    counts = pixel_counts[layers].sum().to_numpy(np.float64)
    n_hits = counts.sum()
    share = counts / n_hits
    # Binomial relative error of a share p over n hits, sqrt((1 - p) / (p n)), doubled for the
    # hits a particle leaves together (1.2-1.8 per layer): under 1.5% for the rarest layer.
    relative_error = 2.0 * np.sqrt((1.0 - share) / (share * n_hits))
    assert relative_error.max() < 0.015
    ratio = share / real_share
    worst = layers[int(np.argmax(np.abs(ratio - 1.0)))]
    assert np.all(np.abs(ratio - 1.0) < 0.10), f"layer {worst}: {ratio.round(3).tolist()}"


@pytest.mark.slow  # shares the pixel_counts fixture
def test_pixel_hits_per_event_match_the_real_mean_and_spread(pixel_counts: pd.DataFrame) -> None:
    per_event = pixel_counts.sum(axis=1).to_numpy(np.float64)
    assert per_event.size == N_EVENTS
    real_mean = np.mean(REAL_PIXEL_TOTALS)  # 55,584
    # The mean of N_EVENTS events carries about 5% / 4 = 1.3% statistical error.
    assert per_event.mean() == pytest.approx(real_mean, rel=0.05)
    # Real events vary by a few percent: four of them (A and B among them) span 54.3k-56.9k
    # pixel hits, while the full particle table of event 1000 (shared data) sums 103k true hits
    # where A and B (106-109k hits, 15% noise) carry about 91k. The simulator spreads by about
    # 5% (negative-binomial multiplicity of a fixed number of collisions); a Poisson number of
    # collisions would add 7% in quadrature, 8-9% in all.
    spread = per_event.std(ddof=1) / per_event.mean()
    assert 0.01 < spread < 0.075


def test_the_pileup_count_is_fixed_unless_poisson_is_asked() -> None:
    rng = np.random.default_rng(5)
    fixed = [pileup_collisions(rng, SimulationConfig()) for _ in range(200)]
    assert set(fixed) == {200}
    # A fractional mean: n or n + 1 collisions, in proportion.
    half = np.array(
        [pileup_collisions(rng, SimulationConfig(mean_pileup_collisions=2.5)) for _ in range(4000)]
    )
    assert set(np.unique(half)) == {2, 3}
    assert half.mean() == pytest.approx(2.5, abs=0.05)
    poisson = SimulationConfig(pileup_poisson=True)
    drawn = np.array([pileup_collisions(rng, poisson) for _ in range(4000)])
    assert drawn.mean() == pytest.approx(200.0, rel=0.01)
    assert drawn.var() == pytest.approx(200.0, rel=0.1)


def test_grazing_crossings_leave_no_hit(event: SimulatedEvent) -> None:
    # The innermost pixel barrel layer (r = 32 mm, |z| < 491 mm) is crossed by primaries up to
    # |eta| = 3.4, at |cos| = 1 / cosh(eta) of its normal. Real primaries (the TrackML event in
    # the shared data) leave 1.3 hits on it at |eta| 2.5-2.9 and none above |eta| 3.2.
    particles = event.particles
    pt = _pt(particles)
    eta = np.abs(np.arcsinh(particles["pz"].to_numpy() / pt))
    primary = np.hypot(particles["vx"].to_numpy(), particles["vy"].to_numpy()) < 1.0
    hits = event.hits
    inner = ((hits["volume_id"] == 8) & (hits["layer_id"] == 2)).to_numpy()
    on_inner = pd.Series(event.truth["particle_id"].to_numpy()[inner]).value_counts()
    per_particle = on_inner.reindex(particles["particle_id"]).fillna(0).to_numpy()
    steep = primary & (eta > 2.5) & (eta < 2.9) & (particles["nhits"].to_numpy() > 0)
    grazing = primary & (eta > 3.05) & (eta < 3.4)
    assert per_particle[steep].mean() == pytest.approx(1.3, abs=0.15)
    assert per_particle[grazing].sum() < 0.02 * grazing.sum()


def test_grazing_crossings_end_more_particles(event: SimulatedEvent) -> None:
    # Interactions grow with the path through the material: primaries that graze the innermost
    # barrel layer (|eta| 3.0-3.4) end there without any hit far more often than steeper ones.
    # Real (TrackML event 1000, primaries above 150 MeV): 9.9% and 7.9% at |eta| 3.0-3.25 and
    # 3.25-3.5, against 0.2-1.8% in every quarter unit of |eta| below 2.75.
    particles = event.particles
    pt = _pt(particles)
    eta = np.abs(np.arcsinh(particles["pz"].to_numpy() / pt))
    primary = (np.hypot(particles["vx"].to_numpy(), particles["vy"].to_numpy()) < 1.0) & (pt > 0.15)
    no_hit = particles["nhits"].to_numpy() == 0
    grazing = primary & (eta > 3.0) & (eta < 3.4)
    steep = primary & (eta < 2.75)
    assert 0.05 < no_hit[grazing].mean() < 0.16
    assert no_hit[steep].mean() < 0.02
