"""Pairs: same event, pT labels, re-drawn per epoch, reproducible per (seed, epoch), swap option."""

from __future__ import annotations

import numpy as np
import pytest

from tracklm.data.pairs import draw_pairs


@pytest.fixture
def tracks() -> tuple[np.ndarray, np.ndarray]:
    """Event ids (events of 1 to 30 tracks, unsorted) and continuous pT of 2,000 tracks."""
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 31, 120)
    event_id = np.repeat(np.arange(120) * 3 + 11, sizes)[:2000]
    rng.shuffle(event_id)
    pt = rng.exponential(1.0, event_id.shape[0]).astype(np.float32) + 0.1
    return event_id, pt


def test_pairs_come_from_one_event_and_use_every_pairable_track_once(tracks):
    event_id, pt = tracks
    pairs = draw_pairs(event_id, pt, seed=0, epoch=0)
    assert np.all(event_id[pairs.index_a] == event_id[pairs.index_b])
    assert np.all(pairs.index_a != pairs.index_b)
    events, counts = np.unique(event_id, return_counts=True)
    pairable = np.flatnonzero(np.isin(event_id, events[counts >= 2]))
    # every track of an event with a partner is A exactly once and B exactly once
    np.testing.assert_array_equal(np.sort(pairs.index_a), pairable)
    np.testing.assert_array_equal(np.sort(pairs.index_b), pairable)
    # pairs are shuffled across events, not grouped
    assert np.mean(event_id[pairs.index_a][1:] == event_id[pairs.index_a][:-1]) < 0.2


def test_pair_labels_are_pt_of_b_above_pt_of_a_in_random_order(tracks):
    event_id, pt = tracks
    pairs = draw_pairs(event_id, pt, seed=3, epoch=1, pair_task="pt")
    np.testing.assert_array_equal(
        pairs.labels, (pt[pairs.index_b] > pt[pairs.index_a]).astype(np.float32)
    )
    assert pairs.labels.dtype == np.float32
    # A and B in random order: the higher-pT track is B about half the time
    assert abs(pairs.labels.mean() - 0.5) < 0.05


def test_pairs_are_redrawn_every_epoch_and_reproducible_per_seed_and_epoch(tracks):
    event_id, pt = tracks
    first = draw_pairs(event_id, pt, seed=5, epoch=0)
    again = draw_pairs(event_id, pt, seed=5, epoch=0)
    np.testing.assert_array_equal(first.index_a, again.index_a)
    np.testing.assert_array_equal(first.index_b, again.index_b)
    next_epoch = draw_pairs(event_id, pt, seed=5, epoch=1)
    other_seed = draw_pairs(event_id, pt, seed=6, epoch=0)
    for other in (next_epoch, other_seed):
        same_partner = np.mean(
            first.index_b[np.argsort(first.index_a)] == other.index_b[np.argsort(other.index_a)]
        )
        assert same_partner < 0.3  # partners re-drawn (chance matches only in small events)
        assert np.mean(first.index_a == other.index_a) < 0.01  # order re-drawn


def test_any_pairing_crosses_events_and_single_mode_has_no_b(tracks):
    event_id, pt = tracks
    pairs = draw_pairs(event_id, pt, seed=0, epoch=0, pairing="any")
    assert len(pairs) == event_id.shape[0]
    assert np.mean(event_id[pairs.index_a] != event_id[pairs.index_b]) > 0.9
    single = draw_pairs(event_id, pt, seed=0, epoch=0, pairing="single", pair_task="none")
    assert single.index_b is None and single.labels is None
    np.testing.assert_array_equal(np.sort(single.index_a), np.arange(event_id.shape[0]))
    with pytest.raises(ValueError, match="needs pairs"):
        draw_pairs(event_id, pt, seed=0, epoch=0, pairing="single", pair_task="pt")


def test_swap_task_labels_replaced_b_from_another_event(tracks):
    event_id, pt = tracks
    pairs = draw_pairs(event_id, pt, seed=1, epoch=0, pair_task="swap")
    replaced = pairs.labels == 1.0
    assert 0.45 < replaced.mean() < 0.55
    assert np.all(event_id[pairs.index_b[replaced]] != event_id[pairs.index_a[replaced]])
    assert np.all(event_id[pairs.index_b[~replaced]] == event_id[pairs.index_a[~replaced]])
    assert draw_pairs(event_id, pt, seed=1, epoch=0, pair_task="none").labels is None
