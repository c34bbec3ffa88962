"""The TrackML score on hand-made events whose answer is computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tracklm.score.trackml import (
    binned_counts,
    match_tracks,
    order_weights,
    pt_weight,
    score_event,
    score_losses,
    trackml_weights,
)

A, B, C = 11, 22, 33  # particle ids; 0 is noise


def _score(particle_id, track_id, weight=None, pt_gev=None):
    particle_id = np.asarray(particle_id, dtype=np.int64)
    n = particle_id.size
    weight = np.full(n, 1.0 / n) if weight is None else np.asarray(weight, dtype=np.float64)
    pt = np.full(n, 2.0) if pt_gev is None else np.asarray(pt_gev, dtype=np.float64)
    result, _ = score_event(np.asarray(track_id), particle_id, weight, pt, np.zeros(n))
    return result


def test_order_weights_follow_the_published_profile():
    # TRACKING.md: 4 hits 41.1/21.9/12.3/24.7%, 5 hits 35.7/21.4/10.7/10.7/21.4%, 8 hits ...
    assert np.round(100 * order_weights(4), 1).tolist() == [41.1, 21.9, 12.3, 24.7]
    assert np.round(100 * order_weights(5), 1).tolist() == [35.7, 21.4, 10.7, 10.7, 21.4]
    expected_8 = [22.6, 17.4, 12.9, 9.4, 6.8, 6.8, 10.6, 13.5]
    assert np.round(100 * order_weights(8), 1).tolist() == expected_8
    # 9 hits sit exactly on the profile's points
    assert np.allclose(order_weights(9), np.array([10, 8, 6, 5, 3, 3, 3, 5, 6]) / 49)


def test_pt_weight_is_flat_below_half_a_gev_and_saturates_at_3_gev():
    pt = np.array([0.1, 0.5, 1.75, 3.0, 50.0])
    assert np.allclose(pt_weight(pt), [0.2, 0.2, 0.6, 1.0, 1.0])


def test_trackml_weights_by_hand():
    # A: 4 hits at 3 GeV (pT weight 1), listed out of order; B: 5 hits at 0.5 GeV (0.2);
    # C: 3 hits (too few: 0); two noise hits (0).
    particle = np.array([A, A, A, A, B, B, B, B, B, C, C, C, 0, 0])
    key = np.array([30.0, 10.0, 40.0, 20.0, 1, 2, 3, 4, 5, 1, 2, 3, 0, 0])
    pt = np.array([3.0] * 4 + [0.5] * 5 + [10.0] * 3 + [0.0] * 2)
    weight = trackml_weights(particle, key, pt, np.arange(particle.size))
    total = 1.0 + 0.2
    # A's hits ranked by key: 10 (1st), 20 (2nd), 30 (3rd), 40 (4th)
    assert np.allclose(weight[:4], order_weights(4)[[2, 0, 3, 1]] / total)
    assert np.allclose(weight[4:9], 0.2 * order_weights(5) / total)
    assert np.all(weight[9:] == 0)
    assert weight.sum() == pytest.approx(1.0)


def test_trackml_weights_break_ties_by_hit_id():
    particle = np.full(4, A)
    weight = trackml_weights(particle, np.zeros(4), np.full(4, 2.0), np.array([40, 10, 30, 20]))
    assert np.allclose(weight, order_weights(4)[[3, 0, 2, 1]])


def test_losses_say_where_each_uncounted_hit_went_and_sum_with_the_score_to_one():
    D, E, F, G = 44, 55, 66, 77
    particle = np.array([A] * 4 + [B] * 4 + [C] * 4 + [D] * 4 + [E] * 4 + [F] * 4 + [G] * 4 + [0])
    track = np.array(
        [1] * 4  # A: found whole
        + [2, 2, 2, 0]  # B: found, one hit left out
        + [3, 3, 3, 1]  # C: found, one hit in A's track (A's track stays 4/5 A)
        + [4, 4, 5, 5]  # D: two halves, neither more than half: split
        + [0, 0, 6, 7]  # E: half left out
        + [8, 8, 8, 0]  # F: 3 of 4 in track 8, but track 8 is 4 G + 3 F: impure
        + [8] * 4  # G: found in track 8 (4 of its 7 hits)
        + [1]  # noise, in A's track, weighs nothing
    )
    weight = np.r_[np.random.default_rng(5).uniform(0.5, 1.5, 28), 0.0]
    weight /= weight.sum()
    result, matches = score_event(track, particle, weight, np.full(29, 2.0), np.zeros(29))
    losses = score_losses(particle, weight, matches)

    def of(p, hits=slice(None)):
        return weight[particle == p][hits].sum()

    assert losses["found_hit_unassigned"] == pytest.approx(of(B, slice(3, 4)))
    assert losses["found_hit_elsewhere"] == pytest.approx(of(C, slice(3, 4)))
    assert losses["not_found_split"] == pytest.approx(of(D))
    assert losses["not_found_unassigned"] == pytest.approx(of(E))
    assert losses["not_found_impure"] == pytest.approx(of(F))
    assert result.score == pytest.approx(of(A) + of(B, slice(0, 3)) + of(C, slice(0, 3)) + of(G))
    assert result.score + sum(losses.values()) == pytest.approx(1.0)
    # a perfect submission loses nothing
    _, perfect = score_event(particle, particle, weight, np.full(29, 2.0), np.zeros(29))
    assert set(score_losses(particle, weight, perfect).values()) == {0.0}


def test_perfect_submission_scores_one():
    particle = [A] * 6 + [B] * 4 + [0] * 2
    track = [1] * 6 + [2] * 4 + [0] * 2
    weight = [0.1] * 10 + [0, 0]
    result = _score(particle, track, weight)
    assert result.score == pytest.approx(1.0)
    assert (result.efficiency, result.fake_rate, result.duplicate_rate) == (1.0, 0.0, 0.0)


def test_particle_split_in_two_tracks_counts_the_larger_part_only():
    particle = [A] * 6 + [B] * 4
    weight = [0.1] * 10
    # 4 + 2: the 4-hit part holds more than half of A; the 2-hit part does not
    assert _score(particle, [1, 1, 1, 1, 2, 2, 3, 3, 3, 3], weight).score == pytest.approx(0.8)
    # 3 + 3: exactly half is not more than half, so neither part counts
    split = _score(particle, [1, 1, 1, 2, 2, 2, 3, 3, 3, 3], weight)
    assert split.score == pytest.approx(0.4)
    assert split.efficiency == 0.5


def test_track_mixing_two_particles():
    particle = [A] * 6 + [B] * 4
    # track 1: 4 of A + 2 of B (A is 4/6 of the track, and 4/6 of A: counts A's 4 hits only);
    # track 2: the other 2 of A + 2 of B (a tie: no majority above half)
    result = _score(particle, [1, 1, 1, 1, 2, 2, 1, 1, 2, 2], [0.1] * 10)
    assert result.score == pytest.approx(0.4)
    assert result.particle_found.tolist() == [True, False]
    assert result.fake_rate == 0.5


def test_exactly_half_of_the_track_is_not_a_majority():
    # A (4 hits) wholly in a track of 8 hits, the other 4 from B: purity 0.5 is not > 0.5
    particle = [A] * 4 + [B] * 4
    assert _score(particle, [1] * 8).score == 0.0
    # one hit of B moved out: A is 4/7 of the track and counts; B keeps 3/7 of the track
    result = _score(particle, [1] * 7 + [2])
    assert result.score == pytest.approx(0.5)


def test_noise_in_a_track_weighs_nothing_but_dilutes_purity():
    particle = [A] * 4 + [0] * 3
    weight = [0.25] * 4 + [0.0] * 3
    assert _score(particle, [1] * 7, weight).score == pytest.approx(1.0)  # 4/7 > 0.5
    # noise as the majority of a track: nothing counts, and the track is fake
    result = _score([A] * 4 + [0] * 5, [1] * 9, [0.25] * 4 + [0.0] * 5)
    assert result.score == 0.0
    assert result.fake_rate == 1.0


def test_majority_ties_go_to_the_lower_particle_id():
    matches = match_tracks(np.array([5, 5, 5, 5]), np.array([B, A, B, A]))
    assert matches.majority_particle.tolist() == [A]
    assert matches.majority_hits.tolist() == [2]


def test_left_out_hits_are_one_hit_tracks_not_a_track_of_their_own():
    particle = [A] * 4 + [B] * 4
    # three of A's hits left out: as one track (id 0) they would hold 3/4 of A, but they are
    # not a track; giving each its own id is the same submission
    left_out = _score(particle, [0, 0, 0, 1, 2, 2, 2, 2])
    own_ids = _score(particle, [7, 8, 9, 1, 2, 2, 2, 2])
    assert left_out.score == own_ids.score == pytest.approx(0.5)
    assert left_out.n_candidates == 1  # only B's track has 4 hits


def test_fake_and_duplicate_rates_by_hand():
    # A: 8 hits, B: 4 hits, 5 noise hits.
    # track 1: 5 of A (double majority); track 2: 3 of A + 1 noise (A is 3/4 of it: a match, but
    # a duplicate, and fake by double majority); track 3: 4 noise (fake); track 4: B (found).
    particle = [A] * 8 + [B] * 4 + [0] * 5
    track = [1] * 5 + [2] * 3 + [4] * 4 + [3] * 4 + [2]
    result = _score(particle, track)
    assert result.n_candidates == 4
    assert result.fake_rate == pytest.approx(2 / 4)
    assert result.duplicate_rate == pytest.approx(1 / 3)
    assert result.efficiency == 1.0


def test_efficiency_counts_particles_with_four_hits_and_pt1_those_above_1_gev():
    particle = [A] * 4 + [B] * 4 + [C] * 3
    pt = [0.5] * 4 + [1.5] * 4 + [3.0] * 3
    result = _score(particle, [1] * 4 + [0] * 4 + [3] * 3, pt_gev=pt)
    assert result.particle_id.tolist() == [A, B]  # C has too few hits to count
    assert result.efficiency == 0.5
    assert result.efficiency_pt1 == 0.0  # B, the only particle above 1 GeV, is missed


def test_binned_counts_with_an_open_last_bin():
    found, total = binned_counts(
        np.array([0.2, 0.7, 0.9, 50.0, -1.0]),
        np.array([True, False, True, True, True]),
        [0.0, 0.5, 1.0, np.inf],
    )
    assert total.tolist() == [1, 2, 1]
    assert found.tolist() == [1, 1, 1]
