"""The extrapolate task's baseline is the helix follower: overlaps included, ranked lists clean."""

from __future__ import annotations

import numpy as np

from tracklm.generate.follower import HelixFollower
from tracklm.io.dataset import open_dataset
from tracklm.tasks import extrapolate
from tracklm.tasks.common import ABSENT, TaskContext


def _examples(path):
    dataset = open_dataset(path)
    context = TaskContext.from_dataset(dataset)
    tracks = dataset.split("test").take(slice(None))
    return extrapolate.make_examples(tracks, context, np.random.default_rng(0)), context


def test_baseline_ranks_the_followers_modules_first(toy_data):
    examples, context = _examples(toy_data)
    predictions = extrapolate.baseline(examples, context)
    tokens, lengths = examples.tokens, examples.lengths
    follower = HelixFollower(context, max_length=tokens.shape[1] + extrapolate.AHEAD)
    completion = follower.complete(tokens, lengths, min_generated=1)
    rows = np.arange(len(lengths))
    np.testing.assert_array_equal(predictions["next1_top"][:, 0], completion.tokens[rows, lengths])
    went_on = completion.lengths > lengths + 1
    np.testing.assert_array_equal(
        predictions["next2_top"][went_on, 0], completion.tokens[rows, lengths + 1][went_on]
    )
    for key in ("next1_top", "next2_top"):
        top = predictions[key]
        assert top.shape == (len(lengths), extrapolate.TOP_K)
        for row, kept in zip(
            top, np.where(np.arange(tokens.shape[1]) < lengths[:, None], tokens, -1)
        ):
            real = row[row != ABSENT]
            assert len(np.unique(real)) == len(real)
            assert not np.isin(real, kept[kept > 0]).any()
            # ABSENT only at the end of a list
            assert np.all(np.diff((row == ABSENT).astype(int)) >= 0)


def test_baseline_predicts_overlaps_and_beats_the_nearest_crossed_layer(toy_data):
    """The next module is often the second module of the last hit's layer (an overlap), which the
    nearest-module list of the next crossed layer (the baseline before the follower) never is."""
    examples, context = _examples(toy_data)
    predictions = extrapolate.baseline(examples, context)
    scores = extrapolate.metrics(predictions, examples, context)
    nearest = extrapolate._nearest_ahead(examples, context)[0]
    next1 = examples.labels["next1"]
    before = float(np.mean(nearest[:, 0] == next1))
    assert scores["next1_accuracy"] > before + 0.15
    assert scores["next1_accuracy"] > 0.3
    layer = context.layer_of(predictions["next1_top"][:, 0])
    last = context.layer_of(examples.tokens[np.arange(len(examples)), examples.lengths - 1])
    overlap = layer == last
    assert overlap.mean() > 0.05
    assert np.mean(predictions["next1_top"][overlap, 0] == next1[overlap]) > 0.5
