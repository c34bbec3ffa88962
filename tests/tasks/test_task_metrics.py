"""Task metrics (and the shared ones the tasks use) against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from tracklm.evaluate import metrics as shared
from tracklm.tasks import metrics


def test_auc_hand_computed_with_ties():
    # Positives 0.9, 0.4; negatives 0.5, 0.4, 0.1. Pairs (pos > neg): 0.9 beats all 3;
    # 0.4 beats 0.1, ties 0.4 (half), loses to 0.5 -> (3 + 1.5) / 6.
    scores = np.array([0.9, 0.4, 0.5, 0.4, 0.1])
    labels = np.array([1, 1, 0, 0, 0])
    assert shared.roc_auc(scores, labels) == pytest.approx(4.5 / 6)
    assert shared.roc_auc(-scores, labels) == pytest.approx(1.5 / 6)
    assert shared.roc_auc(np.ones(4), np.array([1, 0, 1, 0])) == pytest.approx(0.5)
    assert np.isnan(shared.roc_auc(np.ones(3), np.ones(3)))


def test_average_ranks_share_ties():
    np.testing.assert_allclose(
        shared.average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2]
    )


def test_efficiency_at_fixed_false_positive_rate():
    negatives = np.arange(100, dtype=float)  # 0 ... 99
    positives = np.array([99.5, 98.5, 97.5, 50.0])
    scores = np.r_[negatives, positives]
    labels = np.r_[np.zeros(100), np.ones(4)]
    # 1% of 100 negatives: 1 may pass, the cut is score > 98 -> 99.5, 98.5 pass.
    assert metrics.efficiency_at_fpr(scores, labels, 0.01) == pytest.approx(0.5)
    # 5%: cut at score > 94 -> three positives pass.
    assert metrics.efficiency_at_fpr(scores, labels, 0.05) == pytest.approx(0.75)
    # 0%: nothing above the best negative except 99.5.
    assert metrics.efficiency_at_fpr(scores, labels, 0.0) == pytest.approx(0.25)


def test_relative_resolution_and_accuracy():
    true = np.full(1000, 2.0)
    predicted = true * (1 + np.linspace(-0.1, 0.1, 1000))  # uniform relative error in [-0.1, 0.1]
    res = metrics.relative_resolution(predicted, true)
    assert res["bias"] == pytest.approx(0.0, abs=1e-9)
    assert res["sigma68"] == pytest.approx(0.06827, abs=1e-3)
    assert res["std"] == pytest.approx(0.1 / np.sqrt(3), rel=1e-2)
    assert shared.exact_accuracy(np.array([1, 2, 3]), np.array([1, 0, 3])) == pytest.approx(2 / 3)
    assert shared.top_k_accuracy(np.array([[5, 6], [7, 8]]), np.array([6, 9]), 2) == pytest.approx(
        0.5
    )


def test_detection_metrics_use_the_shared_auc():
    scores = np.array([0.9, 0.4, 0.5, 0.4, 0.1])
    labels = np.array([1, 1, 0, 0, 0])
    assert metrics.detection_metrics(scores, labels)["auc"] == pytest.approx(4.5 / 6)
    assert metrics.detection_metrics(scores, labels)["auc"] == shared.roc_auc(scores, labels)


def test_q68_abs_sees_the_bias_that_sigma68_hides():
    true = np.exp(np.linspace(np.log(0.5), np.log(20.0), 1000))
    biased = 0.2 * true  # 80% low on every track: a zero width around the median
    res = metrics.relative_resolution(biased, true)
    assert res["sigma68"] == pytest.approx(0.0, abs=1e-9)
    assert res["bias"] == pytest.approx(-0.8)
    assert res["q68_abs"] == pytest.approx(0.8)
    assert res["spearman"] == pytest.approx(1.0)
    # Relative errors -0.1 ... 0.1 uniformly, shifted by +0.05: |error| uniform on [0, 0.15],
    # except [0, 0.05] twice as dense (half of it); 68.27% lies below 0.05 + (0.6827 - 0.5) * 0.2.
    shifted = true * (1.05 + np.linspace(-0.1, 0.1, 1000))
    res = metrics.relative_resolution(shifted, true)
    assert res["sigma68"] == pytest.approx(0.06827, abs=1e-3)
    assert res["q68_abs"] == pytest.approx(0.05 + 0.1827 * 0.2, abs=1e-3)


def test_perfect_and_reversed_predictors():
    true = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    perfect = metrics.relative_resolution(true, true)
    assert perfect["q68_abs"] == 0.0 and perfect["sigma68"] == 0.0 and perfect["bias"] == 0.0
    assert perfect["spearman"] == pytest.approx(1.0)
    reversed_ = metrics.relative_resolution(true[::-1].copy(), true)
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert set(metrics.relative_resolution(np.array([]), np.array([]))) == set(perfect)
    assert all(
        np.isnan(v) for v in metrics.relative_resolution(np.array([]), np.array([])).values()
    )


def test_spearman_hand_computed_with_ties():
    # Ranks of a: 1, 2.5, 2.5, 4; of b: 2, 1, 3, 4. Centred (mean 2.5): a -1.5, 0, 0, 1.5;
    # b -0.5, -1.5, 0.5, 1.5. Sum of products 3; norms sqrt(4.5) and sqrt(5).
    a = np.array([1.0, 2.0, 2.0, 3.0])
    b = np.array([2.0, 1.0, 3.0, 4.0])
    assert metrics.spearman_correlation(a, b) == pytest.approx(3 / np.sqrt(4.5 * 5))
    # Invariant under a monotone map, and nan when one side is constant or too short.
    assert metrics.spearman_correlation(np.exp(a), b**3) == pytest.approx(3 / np.sqrt(22.5))
    assert np.isnan(metrics.spearman_correlation(np.ones(4), b))
    assert np.isnan(metrics.spearman_correlation(a[:1], b[:1]))
