"""Pair-task baselines: lookup by module sequence, circles through module centres and hits."""

from __future__ import annotations

import numpy as np

from tracklm.evaluate.pair_baselines import lookup_log_pt
from tracklm.io.dataset import TrackArrays


def tracks(tokens: list[list[int]], pt: list[float]) -> TrackArrays:
    n = len(tokens)
    return TrackArrays(
        tokens=np.array(tokens, dtype=np.int32),
        lengths=np.array([sum(t > 0 for t in row) for row in tokens], dtype=np.int32),
        hits=np.zeros((n, 3, 3), np.float32),
        pt=np.array(pt, dtype=np.float32),
        eta=np.zeros(n, np.float32), phi=np.zeros(n, np.float32),
        charge=np.ones(n, np.int8), vertex=np.zeros((n, 3), np.float32),
        event_id=np.zeros(n, np.int64), particle_id=np.arange(n, dtype=np.int64),
    )  # fmt: skip


def test_the_lookup_backs_off_from_the_longest_known_key() -> None:
    train = tracks([[10, 11, 12], [10, 11, 12], [10, 20, 12], [30, 31, 0]], [1.0, 4.0, 8.0, 0.5])
    asked = tracks([[10, 11, 12], [10, 99, 12], [10, 98, 97], [50, 51, 52]], [1.0] * 4)
    estimate = np.exp(lookup_log_pt(train, asked))
    np.testing.assert_allclose(estimate[0], 2.0, rtol=1e-6)  # (10, 11, 12): tracks 0 and 1
    three = 32.0 ** (1 / 3)  # the mean of log pT: a geometric mean
    np.testing.assert_allclose(estimate[1], three, rtol=1e-6)  # (10, 12): tracks 0, 1, 2
    np.testing.assert_allclose(estimate[2], three, rtol=1e-6)  # first module 10: the same three
    np.testing.assert_allclose(estimate[3], np.exp(np.mean(np.log([1, 4, 8, 0.5]))), rtol=1e-6)


def test_the_lookup_asks_the_whole_track_first() -> None:
    # Both training tracks share (first, second, last) = (10, 11, 13); only one is the same track.
    train = tracks([[10, 11, 12, 13], [10, 11, 14, 13]], [1.0, 4.0])
    asked = tracks([[10, 11, 12, 13], [10, 11, 15, 13], [10, 11, 13, 0]], [1.0] * 3)
    estimate = np.exp(lookup_log_pt(train, asked))
    np.testing.assert_allclose(estimate, [1.0, 2.0, 2.0], rtol=1e-6)  # else (10, 11, 13): both


def test_the_pt_task_lookup_gives_pt_and_charge_from_training_tracks() -> None:
    from types import SimpleNamespace

    from tracklm.tasks.pt import lookup_baseline

    train = tracks([[10, 11, 12], [10, 11, 12], [10, 20, 12], [30, 31, 0]], [1.0, 4.0, 8.0, 0.5])
    train.charge[:] = [1, 1, -1, 0]  # the neutral track is left out
    asked = tracks([[10, 11, 12], [10, 20, 12], [30, 31, 0]], [1.0] * 3)
    context = SimpleNamespace(train_tracks=train)
    examples = SimpleNamespace(tokens=asked.tokens.astype(np.int64), lengths=asked.lengths)
    predicted = lookup_baseline(examples, context)  # type: ignore[arg-type]
    np.testing.assert_allclose(predicted["pt_gev"][:2], [2.0, 8.0], rtol=1e-6)
    # (30, 31) is known only from the neutral track: backs off to every charged track
    np.testing.assert_allclose(predicted["pt_gev"][2], 32.0 ** (1 / 3), rtol=1e-6)
    assert list(predicted["charge"]) == [1, -1, 1]
