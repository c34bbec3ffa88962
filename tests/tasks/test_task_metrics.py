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
