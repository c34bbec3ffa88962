"""The ``regression`` baseline of pT: features of the module centres, and a fit that learns."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from tracklm.evaluate.pt_regression import centre_features, regression_estimates

RADII_MM = (32.0, 72.0, 116.0, 172.0)


def test_centre_features_by_hand() -> None:
    # One track of three hits at azimuths 0, 0.1 and 0.3 rad, in a width of four positions.
    radius = np.array([30.0, 70.0, 110.0])
    azimuth = np.array([0.0, 0.1, 0.3])
    centres = np.full((1, 4, 3), np.nan)
    centres[0, :3] = np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), [1, 2, 3]], -1)
    raw = centre_features(centres, np.array([3]))
    width = 4
    # r, z, turned, |turned|, from 2nd, |..|, slope, and the centre with the first on the x axis
    blocks = raw[0, : 9 * width].reshape(9, width)
    np.testing.assert_allclose(blocks[0, :3], radius)
    np.testing.assert_allclose(blocks[1, :3], [1, 2, 3])
    np.testing.assert_allclose(blocks[2, :3], [0.0, 0.1, 0.3], atol=1e-12)
    np.testing.assert_allclose(blocks[4, :3], [-0.1, 0.0, 0.2], atol=1e-12)
    np.testing.assert_allclose(blocks[6, 1:3], [0.1 / 40.0, 0.3 / 80.0])
    np.testing.assert_allclose(blocks[7, :3], radius * np.cos(azimuth))
    np.testing.assert_allclose(blocks[8, :3], radius * np.sin(azimuth), atol=1e-12)
    assert np.isnan(blocks[:, 3]).all() and np.isnan(blocks[6, 0])  # absent, and no slope at 1st
    np.testing.assert_allclose(raw[0, 9 * width :], [0.3, 0.3, 3.0])  # last turned, |..|, hits
    # the detector's azimuth carries no pT: the same track turned about the beam line (by more
    # than pi, so the azimuths wrap) has the same features
    turn = 2.5
    turned_centres = centres.copy()
    turned_centres[0, :3, 0] = radius * np.cos(azimuth + turn)
    turned_centres[0, :3, 1] = radius * np.sin(azimuth + turn)
    np.testing.assert_allclose(centre_features(turned_centres, np.array([3])), raw, atol=1e-9)


def _helix_tracks(n: int, rng: np.random.Generator, first_token: int):
    """n tracks of 4 modules whose centres lie exactly on circles through the beam line in 2 T:
    (tokens, lengths, centres of those tokens, pT, charge)."""
    pt = np.exp(rng.uniform(np.log(0.3), np.log(10.0), n))
    charge = rng.choice([-1, 1], n)
    radius_of_curvature = pt / (0.3 * 2.0) * 1000.0  # mm
    phi0 = rng.uniform(-np.pi, np.pi, n)
    r = np.array(RADII_MM)[None, :]
    azimuth = phi0[:, None] - charge[:, None] * np.arcsin(r / (2.0 * radius_of_curvature[:, None]))
    z = rng.uniform(-1.0, 1.0, n)[:, None] * r
    centres = np.stack([r * np.cos(azimuth), r * np.sin(azimuth), z], -1)  # (n, 4, 3)
    tokens = first_token + np.arange(4 * n).reshape(n, 4)  # every crossing its own module
    return tokens, np.full(n, 4), centres, pt, charge


def test_the_regression_learns_pt_and_charge_from_the_centres() -> None:
    rng = np.random.default_rng(3)
    train = _helix_tracks(3000, rng, first_token=5)
    test = _helix_tracks(500, rng, first_token=5 + 4 * 3000)
    table = np.full((5 + 4 * 3500, 3), np.nan)  # special tokens 0-4 have no centre
    for tokens, _, centres, _, _ in (train, test):
        table[tokens.ravel()] = centres.reshape(-1, 3)
    log_pt, positive = regression_estimates(
        train[0], train[1], np.log(train[3]), (train[4] > 0).astype(np.float32),
        test[0], test[1], table,
    )  # fmt: skip
    assert spearmanr(log_pt, np.log(test[3])).statistic > 0.95
    assert np.mean(np.where(positive > 0.5, 1, -1) == test[4]) > 0.95
    # deterministic, and without a charge the pT is fitted the same way
    again, _ = regression_estimates(
        train[0], train[1], np.log(train[3]), (train[4] > 0).astype(np.float32),
        test[0], test[1], table,
    )  # fmt: skip
    np.testing.assert_array_equal(log_pt, again)
    alone, half = regression_estimates(
        train[0], train[1], np.log(train[3]), None, test[0], test[1], table
    )
    assert spearmanr(alone, np.log(test[3])).statistic > 0.95
    assert (half == 0.5).all()


def test_tracks_wider_than_the_training_tracks_are_cut_and_narrower_padded() -> None:
    rng = np.random.default_rng(4)
    tokens, lengths, centres, pt, _ = _helix_tracks(400, rng, first_token=5)
    table = np.full((5 + 4 * 400, 3), np.nan)
    table[tokens.ravel()] = centres.reshape(-1, 3)
    wide = np.concatenate([tokens[:5], np.zeros((5, 2), np.int64)], axis=1)
    narrow = tokens[:5, :3]
    train_args = (tokens, lengths, np.log(pt), None)
    full, _ = regression_estimates(*train_args, tokens[:5], lengths[:5], table)
    cut, _ = regression_estimates(*train_args, wide, lengths[:5], table)
    np.testing.assert_array_equal(full, cut)
    short, _ = regression_estimates(*train_args, narrow, np.full(5, 3), table)
    assert short.shape == (5,) and np.isfinite(short).all()


def test_no_training_tracks_is_refused() -> None:
    empty = np.zeros((0, 4), np.int64)
    with pytest.raises(ValueError, match="training tracks"):
        regression_estimates(
            empty, np.zeros(0), np.zeros(0), None, empty, np.zeros(0), np.zeros((5, 3))
        )
