"""Metric functions against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from tracklm.evaluate import metrics


def test_exact_and_top_k_accuracy():
    true = np.array([10, 11, 12, 13])
    predicted = np.array([10, 0, 12, 7])
    assert metrics.exact_accuracy(predicted, true) == 0.5
    ranked = np.array(
        [
            [10, 1, 2, 3, 4, 5],
            [1, 2, 3, 4, 11, 5],  # 5th place counts
            [1, 2, 3, 4, 5, 12],  # 6th place does not
            [-1, -1, -1, -1, -1, -1],
        ]
    )
    assert metrics.top_k_accuracy(ranked, true, 5) == 0.5
    assert metrics.top_k_accuracy(ranked, true, 1) == 0.25
    assert np.isnan(metrics.exact_accuracy(np.array([]), np.array([])))


def test_top_k_from_scores_orders_best_first_ties_by_index():
    scores = np.array([[0.1, 0.9, 0.5, 0.9]])
    np.testing.assert_array_equal(metrics.top_k_from_scores(scores, 3), [[1, 3, 2]])


def test_module_distance_and_fractions():
    centres = np.array([[np.nan] * 3, [0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 150.0]])
    d = metrics.module_distance_mm(np.array([1, 2, 3, 0, -1]), np.array([1, 1, 1, 1, 1]), centres)
    np.testing.assert_allclose(d[:3], [0.0, 5.0, 150.0])
    assert np.isinf(d[3]) and np.isinf(d[4])  # special token / no prediction: never "close"
    assert metrics.fraction_within(d, 20.0) == pytest.approx(2 / 5)
    assert metrics.fraction_within(d, 150.0) == pytest.approx(3 / 5)
    assert metrics.median_distance_mm(d) == 150.0


def test_mean_and_quantiles_of_distances_and_the_position_summary():
    d = np.array([0.0, 0.0, 10.0, 50.0, np.inf])
    assert metrics.mean_distance_mm(d) == 15.0  # the one without a prediction (inf) left out
    assert np.isnan(metrics.mean_distance_mm(np.array([np.inf])))
    assert metrics.quantile_distance_mm(d, 0.5) == 10.0
    # linear between order statistics: 0.9 of the way from the 4th to the 5th of 0, 10, ..., 40
    assert metrics.quantile_distance_mm(np.arange(0.0, 41.0, 10.0), 0.9) == pytest.approx(36.0)
    assert metrics.position_summary(np.arange(101.0)) == {"median": 50.0, "q68": 68.0, "q95": 95.0}
    assert np.isinf(metrics.position_summary(np.array([1.0, np.nan]))["q95"])  # nan: no position
    assert np.isnan(metrics.position_summary(np.array([]))["median"])


def test_position_names_and_grouping():
    names = metrics.position_names(np.array([0, 2, 4, 3, 0]), np.array([5, 5, 5, 4, 4]))
    assert names.tolist() == ["first", "middle", "last", "last", "first"]
    correct = np.array([True, False, True, False, False])
    grouped = metrics.grouped_mean(correct, names, metrics.POSITION_NAMES)
    assert grouped == {"first": 0.5, "middle": 0.0, "last": 0.5}
    by_length = metrics.grouped_mean(correct, np.array([5, 5, 5, 4, 4]), [4, 5, 6])
    assert by_length["4"] == 0.0 and by_length["5"] == pytest.approx(2 / 3)
    assert np.isnan(by_length["6"])


def test_roc_auc_hand_computed_with_ties():
    # positives 0.8, 0.5; negatives 0.5, 0.2: pairs (0.8>0.5), (0.8>0.2), (0.5=0.5 -> 1/2), (0.5>0.2)
    scores = np.array([0.8, 0.5, 0.5, 0.2])
    labels = np.array([1, 1, 0, 0])
    assert metrics.roc_auc(scores, labels) == pytest.approx(3.5 / 4)
    assert metrics.roc_auc(np.zeros(6), np.array([0, 1, 0, 1, 1, 0])) == pytest.approx(0.5)
    assert metrics.roc_auc(-scores, labels) == pytest.approx(0.5 / 4)
    assert np.isnan(metrics.roc_auc(scores, np.ones(4)))


def test_roc_curve_area_matches_auc_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 200).astype(float)  # many ties
    labels = rng.random(200) < 0.3 + 0.1 * scores
    fpr, tpr = metrics.roc_curve(scores, labels)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)
    assert area == pytest.approx(metrics.roc_auc(scores, labels))


def test_binary_accuracy_uses_logit_sign():
    assert metrics.binary_accuracy(np.array([2.0, -1.0, 0.5, -0.1]), np.array([1, 0, 0, 1])) == 0.5


def test_masked_module_summary_schema_and_values():
    true = np.array([5, 6, 7, 8])
    pred = np.array([5, 6, 9, 8])
    summary = metrics.masked_module_summary(
        pred,
        true,
        distances_mm=np.array([0.0, 0.0, 30.0, 0.0]),
        position_name=np.array(["first", "middle", "last", "last"]),
        lengths=np.array([4, 4, 8, 8]),
        ranked=np.stack([pred, pred, pred, pred, true], axis=1),
        side=np.array(["A", "B", "A", "B"]),
    )
    assert summary["accuracy"] == 0.75 and summary["top5_accuracy"] == 1.0
    assert summary["within_20mm"] == 0.75 and summary["within_100mm"] == 1.0
    assert summary["median_distance_mm"] == 0.0 and summary["mean_distance_mm"] == 7.5
    assert summary["q90_distance_mm"] == pytest.approx(21.0)  # 0.7 of the way from 0 to 30
    assert summary["by_position"] == {"first": 1.0, "middle": 1.0, "last": 0.5}
    assert summary["by_length"]["4"] == 1.0 and summary["by_length"]["8"] == 0.5
    assert summary["by_track"] == {"A": 0.5, "B": 1.0}
    assert metrics.json_ready({"x": float("nan"), "y": np.float32(0.5)}) == {"x": None, "y": 0.5}


def test_json_ready_makes_plain_json_of_every_result():
    value = {
        "auc": np.float64("nan"),
        "n": np.int64(3),
        "history": [{"step": 1, "val_loss": float("inf")}],
        "pair": (np.float32(0.25), -np.inf),
        4: True,
        "none": None,
    }
    assert metrics.json_ready(value) == {
        "auc": None,
        "n": 3,
        "history": [{"step": 1, "val_loss": None}],
        "pair": [0.25, None],
        "4": True,
        "none": None,
    }
    assert type(metrics.json_ready(np.int64(3))) is int


def test_accuracy_and_ranks_flatten_and_check_shapes():
    assert metrics.exact_accuracy(np.array([[1], [2]]), np.array([1, 0])) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        metrics.exact_accuracy(np.array([1, 2, 3]), np.array([1, 2]))
    with pytest.raises(ValueError):
        metrics.roc_auc(np.array([0.1, 0.2]), np.array([1, 0, 1]))
    np.testing.assert_array_equal(metrics.average_ranks(np.array([2.0, 2.0, 2.0])), [2, 2, 2])
