"""Task examples are made from truth correctly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tracklm.io.dataset import open_dataset
from tracklm.tasks import extrapolate, holes, outliers, pt
from tracklm.tasks.common import (
    TaskContext,
    delete_hit,
    insert_token,
    track_mask,
    tracks_with_min_hits,
)


@pytest.fixture(scope="module")
def setup(toy_data: Path):
    dataset = open_dataset(toy_data)
    return dataset.split("test").take(slice(None)), TaskContext.from_dataset(dataset)


def test_delete_and_insert_hits():
    tokens = np.array([[10, 11, 12, 0], [20, 21, 22, 23]])
    np.testing.assert_array_equal(
        delete_hit(tokens, np.array([1, 3]), 0), [[10, 12, 0, 0], [20, 21, 22, 0]]
    )
    np.testing.assert_array_equal(
        insert_token(tokens, np.array([0, 2]), 4), [[4, 10, 11, 12, 0], [20, 21, 4, 22, 23]]
    )


def test_holes_remove_one_hit_and_record_where(setup):
    tracks, context = setup
    ex = holes.make_examples(tracks, context, np.random.default_rng(1))
    has = ex.labels["has_hole"] > 0.5
    assert 0.35 < has.mean() < 0.65
    # Map each example back to its track by the particle id is not kept; rebuild from tokens:
    # the shortened track plus the removed hit at the gap gives a real track of the split.
    originals = {tuple(t[:n]) for t, n in zip(np.asarray(tracks.tokens), tracks.lengths)}
    for i in np.flatnonzero(has)[:50]:
        n, gap, module = ex.lengths[i], ex.labels["gap"][i], ex.labels["hole_module"][i]
        assert 1 <= gap <= n - 1  # interior: between two remaining hits
        restored = np.insert(ex.tokens[i, :n], gap, module)
        assert tuple(restored) in originals
        # the removed hit's layer now carries no hit: a real hole
        layers = context.layer_of(ex.tokens[i, :n])
        assert context.layer_of(np.array([module]))[0] not in layers
    for i in np.flatnonzero(~has)[:50]:
        assert ex.labels["gap"][i] == -1 and ex.labels["hole_module"][i] == -1
        assert any(
            tuple(ex.tokens[i, : ex.lengths[i]]) == o[: ex.lengths[i]]
            and len(o) == ex.lengths[i] + 1
            for o in originals
        )
    # model inputs hold the shortened track
    n0 = ex.lengths[0]
    np.testing.assert_array_equal(ex.inputs["input_ids"][0, 1 : 1 + n0], ex.tokens[0, :n0])
    assert ex.inputs["attention_mask"][0].sum() == n0 + 2


def test_outliers_replace_one_hit_by_a_nearby_module_on_the_same_layer(setup):
    tracks, context = setup
    ex = outliers.make_examples(tracks, context, np.random.default_rng(2))
    original_tokens = np.asarray(tracks.tokens)[np.asarray(tracks.lengths) >= 4]
    has = ex.labels["has_outlier"] > 0.5
    assert 0.35 < has.mean() < 0.65
    changed = (ex.tokens != original_tokens) & track_mask(ex.lengths, ex.tokens.shape[1])
    np.testing.assert_array_equal(changed.sum(axis=1), has.astype(int))
    rows = np.flatnonzero(has)
    pos = ex.labels["position"][rows]
    np.testing.assert_array_equal(np.argmax(changed[rows], axis=1), pos)
    new, old = ex.tokens[rows, pos], original_tokens[rows, pos]
    np.testing.assert_array_equal(ex.labels["original"][rows], old)
    assert np.all(new != old)
    np.testing.assert_array_equal(context.layer_of(new), context.layer_of(old))
    distance = np.linalg.norm(context.centres_of(new) - context.centres_of(old), axis=1)
    assert distance.max() < 150.0  # among the nearest modules of the layer
    assert np.all(ex.labels["position"][~has] == -1)


def test_extrapolation_targets_are_the_real_next_modules(setup):
    tracks, context = setup
    ex = extrapolate.make_examples(tracks, context, np.random.default_rng(3))
    keep = np.asarray(tracks.lengths) >= 4
    full, lengths = np.asarray(tracks.tokens)[keep], np.asarray(tracks.lengths)[keep]
    rows = np.arange(len(ex))
    cut = ex.labels["cut"]
    assert cut.min() >= 3 and np.all(cut <= lengths - 1)
    np.testing.assert_array_equal(ex.labels["next1"], full[rows, cut])
    has2 = cut + 1 < lengths
    np.testing.assert_array_equal(ex.labels["next2"][has2], full[rows[has2], cut[has2] + 1])
    assert np.all(ex.labels["next2"][~has2] == -1)
    # the input shows only the first `cut` hits, then two [MASK]
    ids = ex.inputs["input_ids"]
    mask_id = context.vocab.mask_id
    assert np.all(ids[rows, 1 + cut] == mask_id) and np.all(ids[rows, 2 + cut] == mask_id)
    visible = track_mask(cut, full.shape[1])
    np.testing.assert_array_equal(
        np.where(visible, ids[:, 1 : 1 + full.shape[1]], 0), np.where(visible, full, 0)
    )
    assert not np.any(ids == full[rows, cut][:, None])  # the answer is not in the input


def test_pt_labels(setup):
    tracks, context = setup
    ex = pt.make_examples(tracks, context, np.random.default_rng(4))
    np.testing.assert_allclose(np.exp(ex.labels["log_pt"]), np.asarray(tracks.pt), rtol=1e-6)
    np.testing.assert_array_equal(
        ex.labels["charge_positive"], (np.asarray(tracks.charge) > 0).astype(np.float32)
    )


def test_tracks_with_min_hits_keeps_long_enough_tracks(setup):
    tracks, _ = setup
    tokens, lengths = tracks_with_min_hits(tracks, 6)
    keep = tracks.lengths >= 6
    assert tokens.dtype == lengths.dtype == np.int64
    np.testing.assert_array_equal(tokens, tracks.tokens[keep])
    np.testing.assert_array_equal(lengths, tracks.lengths[keep])
    assert 0 < len(lengths) < len(tracks)
