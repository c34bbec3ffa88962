"""Judging generated tracks: distances against hand-computed and scipy values, helix observables
against the simulator's truth, and wrong samples (random modules, dropped or shuffled hits) told
apart from simulated ones by every judge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from tracklm.evaluate.metrics import average_ranks
from tracklm.generate.judge import (
    MAX_PULL,
    OBSERVABLES,
    classifier_auc,
    compare_samples,
    quantiled_kl,
    track_observables,
    unfittable,
    wasserstein_1,
)
from tracklm.io.dataset import TrackArrays, open_dataset
from tracklm.tasks.common import TaskContext, delete_hit, track_mask
from tracklm.tracking.constants import GEV_PER_TESLA_METRE


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def toy(toy_data: Path) -> tuple[TrackArrays, TaskContext]:
    """All toy tracks (every split) and the dataset's context."""
    dataset = open_dataset(toy_data)
    width = dataset.split("train").max_length
    parts = [dataset.split(name).take(slice(None)) for name in ("train", "val", "test")]
    return TrackArrays.concatenate(parts, width), TaskContext.from_dataset(dataset)


def _arrays(tracks: TrackArrays) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(tracks.tokens, dtype=np.int64), np.asarray(tracks.lengths, dtype=np.int64)


def _random_modules(
    tokens: np.ndarray, lengths: np.ndarray, context: TaskContext, rng: np.random.Generator
) -> np.ndarray:
    """Every hit moved to a random module of its own layer."""
    layers = np.where(track_mask(lengths, tokens.shape[1]), context.layer_of(tokens), -1)
    out = tokens.copy()
    for y in range(len(context.surfaces)):
        on = layers == y
        out[on] = rng.choice(context.surfaces.tokens[y], int(on.sum()))
    return out


def _shuffled(tokens: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    key = np.where(track_mask(lengths, tokens.shape[1]), rng.random(tokens.shape), 2.0)
    return np.take_along_axis(tokens, np.argsort(key, axis=1), axis=1)


def _reversed(tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    j = np.arange(tokens.shape[1])[None, :]
    source = np.where(j < lengths[:, None], lengths[:, None] - 1 - j, j)
    return np.take_along_axis(tokens, source, axis=1)


def _drop_last(tokens: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = tokens.copy()
    out[np.arange(len(out)), lengths - 1] = 0
    return out, lengths - 1


# ----------------------------------------------------------------------------- distances
def test_wasserstein_matches_scipy_and_a_shift() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=700), rng.exponential(size=300)
    assert wasserstein_1(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-12)
    assert wasserstein_1(a, a + 2.5) == pytest.approx(2.5)
    hits_a, hits_b = rng.integers(4, 9, 500), rng.integers(4, 7, 300)  # ties everywhere
    assert wasserstein_1(hits_a, hits_b) == pytest.approx(wasserstein_distance(hits_a, hits_b))
    assert wasserstein_1(np.r_[a, np.nan], b) == pytest.approx(wasserstein_1(a, b))
    assert np.isnan(wasserstein_1(np.array([np.nan]), b))


def test_quantiled_kl_discrete_by_hand() -> None:
    reference = np.r_[np.full(50, 4.0), np.full(50, 5.0)]
    sample = np.r_[np.full(25, 4.0), np.full(75, 5.0)]
    expected = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert quantiled_kl(sample, reference) == pytest.approx(expected, rel=1e-6)
    # A value beyond the reference's range counts in the outer bin.
    beyond = np.r_[np.full(25, 4.0), np.full(25, 5.0), np.full(50, 6.0)]
    assert quantiled_kl(beyond, reference) == pytest.approx(expected, rel=1e-6)
    # An empty bin stays finite (epsilon) but costs a lot.
    empty = quantiled_kl(np.full(10, 4.0), reference)
    assert np.isfinite(empty) and empty > 5.0
    assert quantiled_kl(reference, reference) == pytest.approx(0.0, abs=1e-12)


def test_quantiled_kl_continuous_gaussians_and_ties() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=200_000)
    # KL(N(0, 1) || N(1, 1)) = 0.5; binning at 30 quantiles loses a little of it.
    assert 0.38 < quantiled_kl(rng.normal(1.0, 1.0, 200_000), reference) < 0.52
    assert quantiled_kl(rng.normal(size=200_000), reference) < 0.002
    # 60% of the reference on one value: coinciding quantile edges merge into one bin.
    spiked = np.r_[np.zeros(6000), rng.uniform(0.1, 1.0, 4000)]
    assert quantiled_kl(spiked[::-1].copy(), spiked) == pytest.approx(0.0, abs=1e-9)
    no_spike = rng.uniform(0.1, 1.0, 10_000)
    assert quantiled_kl(no_spike, spiked) > 5.0
    # the same where subnormal floats are flushed to zero, as every tracklm run sets it
    # (tracklm.runtime.configure_torch): the bin of the tied value 0 must not vanish
    from tracklm.runtime import configure_torch

    configure_torch()
    assert quantiled_kl(no_spike, spiked) > 5.0


def test_compare_samples_floors() -> None:
    rng = np.random.default_rng(2)
    reference = {"pt_gev": rng.exponential(size=3000), "other": rng.normal(size=3000)}
    floors = [{k: rng.permutation(v) + rng.normal(0, 0.01, v.shape) for k, v in reference.items()}]
    floors.append({"pt_gev": rng.exponential(size=3000), "other": rng.normal(size=3000)})
    generated = {"pt_gev": 2.0 * rng.exponential(size=3000), "other": rng.normal(size=3000)}
    one = compare_samples(generated, reference, floors[1])
    assert list(one) == ["pt_gev", "other"]
    assert set(one["pt_gev"]) == {"w1", "w1_floor", "kl", "kl_floor"}
    assert one["pt_gev"]["w1"] > 10 * one["pt_gev"]["w1_floor"]
    assert one["pt_gev"]["w1"] == pytest.approx(
        wasserstein_1(generated["pt_gev"], reference["pt_gev"])
    )
    both = compare_samples(generated, reference, floors)
    floor_w1 = [wasserstein_1(f["pt_gev"], reference["pt_gev"]) for f in floors]
    assert both["pt_gev"]["w1_floor"] == pytest.approx(np.mean(floor_w1))
    assert both["pt_gev"]["w1_floor_std"] == pytest.approx(np.std(floor_w1, ddof=1))


# ----------------------------------------------------------------------------- observables
def _circle_track(radius_mm: float, d0_sign_side: float, dz_ds: float, z0_mm: float) -> np.ndarray:
    """(1, 4, 3) points at r = 32, 72, 116, 172 mm on a circle through the beam line (radius
    ``radius_mm``, centre on +y: counter-clockwise) or, for ``radius_mm`` = inf, on the straight
    line y = ``d0_sign_side`` running along +x."""
    radii = np.array([32.0, 72.0, 116.0, 172.0])
    if np.isinf(radius_mm):
        x = np.sqrt(radii**2 - d0_sign_side**2)
        y = np.full_like(x, d0_sign_side)
        s = x
    else:
        angle = 2.0 * np.arcsin(radii / (2.0 * radius_mm))  # turned from the origin
        x, y = radius_mm * np.sin(angle), radius_mm * (1.0 - np.cos(angle))
        s = radius_mm * angle
    return np.stack([x, y, z0_mm + dz_ds * s], axis=-1)[None]


def test_helix_observables_of_exact_tracks(toy: tuple[TrackArrays, TaskContext]) -> None:
    tracks, context = toy
    tokens, lengths = _arrays(tracks)
    row = int(np.flatnonzero(lengths == 4)[0])
    one_tokens, one_lengths = tokens[row : row + 1, :4], lengths[row : row + 1]

    radius = 1000.0
    curved = track_observables(one_tokens, one_lengths, context, _circle_track(radius, 0, 0.5, 10))
    expected_pt = GEV_PER_TESLA_METRE * context.b_field_t * radius / 1000.0
    assert curved["pt_gev"][0] == pytest.approx(expected_pt, rel=0.01)
    assert curved["eta"][0] == pytest.approx(np.arcsinh(0.5), abs=1e-3)
    assert curved["z0_mm"][0] == pytest.approx(10.0, abs=0.05)
    assert abs(curved["d0_mm"][0]) < 0.05
    assert curved["first_r_mm"][0] == pytest.approx(32.0)
    assert curved["last_z_mm"][0] == pytest.approx(_circle_track(radius, 0, 0.5, 10)[0, 3, 2])

    # Straight line y = -3 along +x: the beam line on its left, d0 = -3 (and +3 mirrored).
    for side in (-3.0, 3.0):
        line = track_observables(
            one_tokens, one_lengths, context, _circle_track(np.inf, side, 0, 0)
        )
        assert line["d0_mm"][0] == pytest.approx(side, abs=0.05)


def test_observables_of_simulated_tracks(toy: tuple[TrackArrays, TaskContext]) -> None:
    tracks, context = toy
    tokens, lengths = _arrays(tracks)
    obs = track_observables(tokens, lengths, context)
    assert set(obs) == set(OBSERVABLES)
    assert np.array_equal(obs["hits_per_track"], lengths)
    assert obs["modules_per_layer"].sum() == lengths.sum()
    assert obs["modules_per_layer"].min() == 1 and obs["modules_per_layer"].max() >= 2
    assert np.mean(obs["holes_per_track"] == 0) > 0.9

    primary = np.hypot(tracks.vertex[:, 0], tracks.vertex[:, 1]) < 1.0
    fitted = np.isfinite(obs["pt_gev"])
    assert fitted.mean() > 0.95
    pt = obs["pt_gev"][fitted & primary]
    true_pt = np.asarray(tracks.pt)[fitted & primary]
    assert abs(np.median(pt / true_pt) - 1.0) < 0.1
    rank_correlation = np.corrcoef(average_ranks(pt), average_ranks(true_pt))[0, 1]
    assert rank_correlation > 0.5
    assert np.median(np.abs(obs["eta"] - tracks.eta)[primary]) < 0.15
    assert np.median(np.abs(obs["z0_mm"] - tracks.vertex[:, 2])[primary]) < 30.0
    assert np.median(np.abs(obs["d0_mm"][fitted & primary])) < 5.0

    # With the measured hits the same fits are far sharper.
    hits = np.where(track_mask(lengths, tokens.shape[1])[..., None], tracks.hits, 0.0)
    measured = track_observables(tokens, lengths, context, hits)
    ratio = measured["pt_gev"][primary] / np.asarray(tracks.pt)[primary]
    assert np.percentile(np.abs(ratio - 1.0), 68) < 0.1
    assert np.median(np.abs(measured["d0_mm"][primary])) < 0.5
    # Hits without a position (NaN) fall back to their module centres.
    unknown = track_observables(tokens, lengths, context, np.full(hits.shape, np.nan))
    for name in OBSERVABLES:
        assert np.allclose(unknown[name], obs[name], equal_nan=True), name


def test_a_removed_interior_hit_is_a_hole(toy: tuple[TrackArrays, TaskContext]) -> None:
    tracks, context = toy
    tokens, lengths = _arrays(tracks)
    layers = np.where(track_mask(lengths, tokens.shape[1]), context.layer_of(tokens), -1)
    # Tracks whose third hit (index 2) is alone on its layer: removing it leaves a hole.
    alone = (layers == layers[:, 2:3]).sum(axis=1) == 1
    pick = np.flatnonzero(alone & (lengths >= 5))
    before = track_observables(tokens[pick], lengths[pick], context)["holes_per_track"]
    removed = delete_hit(tokens[pick], np.full(len(pick), 2), 0)
    after = track_observables(removed, lengths[pick] - 1, context)["holes_per_track"]
    assert len(pick) > 50
    assert np.mean(after - before >= 1) > 0.6
    assert np.mean(before) < 0.1


# ----------------------------------------------------------------------------- wrong samples
def test_unfittable_flags_impossible_tracks(toy: tuple[TrackArrays, TaskContext]) -> None:
    tracks, context = toy
    tokens, lengths = _arrays(tracks)
    rng = np.random.default_rng(3)
    hits = np.where(track_mask(lengths, tokens.shape[1])[..., None], tracks.hits, 0.0)
    assert unfittable(tokens, lengths, context).mean() < 0.03
    assert unfittable(tokens, lengths, context, hits).mean() < 0.03
    random = _random_modules(tokens, lengths, context, rng)
    assert unfittable(random, lengths, context).mean() > 0.9
    assert unfittable(_shuffled(tokens, lengths, rng), lengths, context).mean() > 0.85
    assert unfittable(_reversed(tokens, lengths), lengths, context).mean() > 0.9
    # A hit moved far off the helix in the measured positions.
    moved = hits.copy()
    moved[:, 1, 2] += 20.0 * MAX_PULL
    assert unfittable(tokens, lengths, context, moved).mean() > 0.9
    # A special token inside a track is never a module; two hits always fit.
    special = tokens.copy()
    special[:, 1] = context.vocab.mask_id
    assert unfittable(special, lengths, context).all()
    two = np.where(np.arange(tokens.shape[1]) < 2, random, 0)
    assert not unfittable(two, np.full(len(lengths), 2), context).any()


def test_wrong_samples_are_many_floors_away(toy: tuple[TrackArrays, TaskContext]) -> None:
    tracks, context = toy
    tokens, lengths = _arrays(tracks)
    rng = np.random.default_rng(4)
    third = np.array_split(rng.permutation(len(lengths)), 3)
    ref, floor, other = ((tokens[i], lengths[i]) for i in third)
    ref_obs = track_observables(*ref, context)
    floor_obs = track_observables(*floor, context)

    def distances(sample: tuple[np.ndarray, np.ndarray]) -> dict[str, dict[str, float]]:
        return compare_samples(track_observables(*sample, context), ref_obs, floor_obs)

    same = distances(other)
    assert all(v["w1"] < 4.0 * v["w1_floor"] for v in same.values())
    dropped = distances(_drop_last(*other))
    for name in ("hits_per_track", "last_r_mm"):
        assert dropped[name]["w1"] > 8.0 * dropped[name]["w1_floor"]
        assert dropped[name]["kl"] > 8.0 * dropped[name]["kl_floor"]
    shuffled = distances((_shuffled(other[0], other[1], rng), other[1]))
    assert shuffled["first_r_mm"]["w1"] > 8.0 * shuffled["first_r_mm"]["w1_floor"]
    random = distances((_random_modules(other[0], other[1], context, rng), other[1]))
    for name in ("d0_mm", "pt_gev", "first_z_mm"):
        assert random[name]["w1"] > 5.0 * random[name]["w1_floor"]
    # A harder pT spectrum: the same tracks drawn with weight pT^2.
    weight = np.asarray(tracks.pt, dtype=np.float64) ** 2
    hard = rng.choice(len(lengths), len(other[1]), replace=False, p=weight / weight.sum())
    harder = distances((tokens[hard], lengths[hard]))
    assert harder["pt_gev"]["w1"] > 4.0 * harder["pt_gev"]["w1_floor"]


def test_classifier_auc(toy: tuple[TrackArrays, TaskContext], one_torch_thread: None) -> None:
    tracks, context = toy
    tokens, lengths = _arrays(tracks)
    rng = np.random.default_rng(5)
    a, b = np.array_split(rng.permutation(len(lengths)), 2)
    same = classifier_auc((tokens[a], lengths[a]), (tokens[b], lengths[b]), context, seed=0)
    assert 0.42 < same < 0.58
    shuffled = _shuffled(tokens[a], lengths[a], rng)
    assert classifier_auc((shuffled, lengths[a]), (tokens[b], lengths[b]), context) > 0.85
    random = _random_modules(tokens[a], lengths[a], context, rng)
    assert classifier_auc((random, lengths[a]), (tokens[b], lengths[b]), context) > 0.9
    # Seeded: the same answer again; samples of different widths are padded to one.
    again = classifier_auc((tokens[a], lengths[a]), (tokens[b], lengths[b]), context, seed=0)
    assert again == same
    wider = np.pad(tokens[a], ((0, 0), (0, 3)))
    assert 0.42 < classifier_auc((wider, lengths[a]), (tokens[b], lengths[b]), context) < 0.58
