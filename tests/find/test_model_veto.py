"""The model finder's veto of short candidates: calibrated on the event's long candidates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tracklm.find.config import FinderConfig
from tracklm.find.extend import TrackCandidates
from tracklm.find.model import short_veto_threshold, veto_levels

ON = FinderConfig(model_short_veto_quantile=0.35)  # tracklm find --short-veto 0.35


class CountingScorer:
    """Stands in for ``TrackScorer``: hit index = distance from the origin, and a track's
    pseudo-log-likelihood is minus its first hit's index over 100 (so each reference track's
    value is known); records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[np.ndarray] = []

    def ordered_hits(self, hits: np.ndarray, n_hits: np.ndarray) -> np.ndarray:
        valid = np.arange(hits.shape[1])[None, :] < n_hits[:, None]
        ordered = np.sort(np.where(valid, hits, np.iinfo(np.int64).max), axis=1)
        result: np.ndarray = np.where(valid, ordered, -1)
        return result

    def pseudo_log_likelihood(self, hits: np.ndarray, n_hits: np.ndarray) -> np.ndarray:
        self.asked.append(hits.copy())
        assert np.all(n_hits == 4) and np.all(hits >= 0)
        values: np.ndarray = -hits[:, 0] / 100.0
        return values


def candidates(rows: list[list[int]], width: int = 8) -> TrackCandidates:
    n = len(rows)
    hits = np.full((n, width), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        hits[i, : len(row)] = row
    zeros = np.zeros(n)
    return TrackCandidates(
        hits=hits, n_hits=np.array([len(r) for r in rows], dtype=np.int64),
        anchors=np.zeros((n, 3), np.int64), seed=np.zeros((n, 3), np.int64), z0_mm=zeros,
        visited=np.zeros(n, np.int64), missed=np.zeros(n, np.int64), chi2=zeros,
        active=np.zeros(n, bool),
    )  # fmt: skip


def long_track(first: int) -> list[int]:
    """Six hits, the innermost ``first`` (the hits of different tracks never coincide)."""
    return [first + 1000 * k for k in range(6)]


def test_the_threshold_is_the_quantile_of_the_long_tracks_innermost_hits() -> None:
    firsts = list(range(100))
    rows = [long_track(f) for f in firsts]
    # copies of a track in another hit order count once; short candidates are not references
    rows += [long_track(7)[::-1], long_track(7)[1:] + long_track(7)[:1], [5, 6, 7], [1, 2, 3, 4]]
    scorer = CountingScorer()
    threshold = short_veto_threshold(candidates(rows), scorer, ON)  # type: ignore[arg-type]
    assert threshold == pytest.approx(np.quantile(-np.array(firsts) / 100.0, 0.35))
    (asked,) = scorer.asked
    assert asked.shape == (100, 4)  # the innermost four hits, one copy of each track
    assert sorted(asked[:, 0]) == firsts and np.all(asked[:, 1] == asked[:, 0] + 1000)


def test_no_threshold_when_switched_off_or_too_few_references() -> None:
    scorer = CountingScorer()
    many = candidates([long_track(f) for f in range(100)])
    assert FinderConfig().model_short_veto_quantile == 0  # off unless asked for
    assert short_veto_threshold(many, scorer, FinderConfig()) == -np.inf  # type: ignore[arg-type]
    # 60 rows, but only 49 distinct long tracks: below the minimum of 50
    few = candidates([long_track(f) for f in range(49)] + [long_track(3)] * 11)
    assert short_veto_threshold(few, scorer, ON) == -np.inf  # type: ignore[arg-type]
    only_short = candidates([[1, 2, 3, 4]] * 60)
    assert short_veto_threshold(only_short, scorer, ON) == -np.inf  # type: ignore[arg-type]
    assert scorer.asked == []  # nothing scored for nothing


def test_many_references_are_an_even_sample() -> None:
    scorer = CountingScorer()
    config = dataclasses.replace(ON, model_reference_max_tracks=50)
    threshold = short_veto_threshold(
        candidates([long_track(f) for f in range(500)]), scorer, config
    )  # type: ignore[arg-type]
    (asked,) = scorer.asked
    assert asked.shape[0] == 50
    firsts = np.sort(asked[:, 0])
    assert firsts[0] == 0 and firsts[-1] == 499 and np.all(np.diff(firsts) >= 9)
    assert threshold == pytest.approx(np.quantile(-firsts / 100.0, 0.35))


def test_only_short_candidates_face_the_stricter_veto_and_it_never_loosens() -> None:
    config = ON  # veto -3 for all, short ones at most 4 hits
    n_hits = np.array([3, 4, 5, 6])
    assert veto_levels(n_hits, config, -1.2).tolist() == [-1.2, -1.2, -3.0, -3.0]
    # a model less sure of real tracks than the fixed veto does not lower it
    assert veto_levels(n_hits, config, -6.0).tolist() == [-3.0] * 4
    assert veto_levels(n_hits, config, -np.inf).tolist() == [-3.0] * 4
