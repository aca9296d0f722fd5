"""Exact values for the fairness gaps, per-group metrics, calibration error and bootstrap
intervals, computed by hand or with scikit-learn / fairlearn: each test kills mutants of
:mod:`sslops.gaps` and :mod:`sslops.evaluate.metrics` that the other tests let through
(a boundary ``<`` for ``<=``, an unclipped calibration bin, a shifted percentile, ...)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    equal_opportunity_difference,
    equalized_odds_difference,
)
from sklearn.metrics import accuracy_score, roc_auc_score

from sslops.evaluate.metrics import (
    bootstrap_intervals,
    expected_calibration_error,
    group_intervals,
    majority_accuracy,
    model_metrics,
    percentile_bounds,
)
from sslops.gaps import EXCLUDED, rate_gaps, small_groups, without_small_groups

# Seven rows whose calibration error is worked out by hand over ten bins (bin = floor(10 s),
# a score of 1.0 in the last bin):
#   bin 0: 0.05 (y 0)          1 * |0 - 0.05|      = 0.05
#   bin 1: 0.15 (y 0)          1 * |0 - 0.15|      = 0.15
#   bin 5: 0.55 (y 0)          1 * |0 - 0.55|      = 0.55
#   bin 6: 0.62 (1), 0.68 (0)  2 * |0.5 - 0.65|    = 0.30
#   bin 9: 0.95 (1), 1.0 (0)   2 * |0.5 - 0.975|   = 0.95
# total 2.00 over 7 rows.
ECE_Y = np.array([0, 0, 1, 0, 0, 1, 0])
ECE_SCORE = np.array([0.05, 0.15, 0.95, 1.0, 0.55, 0.62, 0.68])
ECE_EXPECTED = 2.0 / 7


def _ece_oracle(y: np.ndarray, score: np.ndarray) -> float:
    """Ten equal-width bins, [0, 0.1), ..., [0.9, 1.0]: a plain loop over the bins."""
    total = 0.0
    for b in range(10):
        low, high = b / 10, (b + 1) / 10
        inside = (score >= low) & ((score < high) if b < 9 else (score <= high))
        if inside.any():
            total += inside.sum() * abs(y[inside].mean() - score[inside].mean())
    return total / len(y)


def test_calibration_error_hand_computed() -> None:
    assert expected_calibration_error(ECE_Y, ECE_SCORE) == pytest.approx(ECE_EXPECTED, abs=1e-12)
    assert _ece_oracle(ECE_Y, ECE_SCORE) == pytest.approx(ECE_EXPECTED, abs=1e-12)
    # perfectly calibrated: every bin's mean score equals its share of positives
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    score = np.array([0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75])
    assert expected_calibration_error(y, score) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(expected_calibration_error(np.array([]), np.array([])))


def test_the_group_table_reports_each_group_s_hand_computed_calibration_error() -> None:
    y = np.concatenate([ECE_Y, [1, 0, 1]])
    score = np.concatenate([ECE_SCORE, [0.8, 0.3, 0.45]])
    groups = np.array(["a"] * 7 + ["b"] * 3)
    table = model_metrics(y, score, 0.5, {"g": groups})["by_group"]["g"]
    assert table["a"]["ece"] == pytest.approx(ECE_EXPECTED, abs=1e-12)
    # b: bins 8 (y 1, 0.8), 3 (y 0, 0.3), 4 (y 1, 0.45): (0.2 + 0.3 + 0.55) / 3
    assert table["b"]["ece"] == pytest.approx(1.05 / 3, abs=1e-12)


def test_majority_class_accuracy() -> None:
    assert majority_accuracy(np.array([0, 0, 0, 1, 1])) == pytest.approx(0.6)
    assert majority_accuracy(np.array([1, 1, 1, 0])) == pytest.approx(0.75)
    assert math.isnan(majority_accuracy(np.array([], dtype=int)))


def test_percentile_bounds_are_the_2_5th_and_97_5th_of_the_defined_draws() -> None:
    # 41 draws 0..40: linear interpolation puts the 2.5th percentile at position
    # 0.025 * 40 = 1 and the 97.5th at 39; the NaN draw is left out
    draws = [float(i) for i in range(41)] + [float("nan")]
    assert percentile_bounds(draws) == [1.0, 39.0]
    assert all(math.isnan(b) for b in percentile_bounds([float("nan")] * 3))


# --- the min_group_rows boundary -------------------------------------------------------------
# a (4 rows): y 1 0 1 0, predicted 1 1 0 0: selection 0.5, TPR 0.5, FPR 0.5
# b (3 rows): y 0 0 1,   predicted 1 1 0:   selection 2/3, TPR 0,   FPR 1
# c (5 rows): y 1 1 0 0 1, predicted 1 1 0 0 1: selection 0.6, TPR 1, FPR 0
BOUNDARY_Y = np.array([1, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1])
BOUNDARY_SCORE = np.array([0.9, 0.6, 0.2, 0.1, 0.99, 0.98, 0.01, 0.8, 0.7, 0.3, 0.4, 0.9])
BOUNDARY_GROUPS = np.array(["a"] * 4 + ["b"] * 3 + ["c"] * 5)


def test_a_group_of_exactly_min_group_rows_is_kept_and_one_row_fewer_is_not() -> None:
    assert small_groups(BOUNDARY_GROUPS, 4) == ["b"]
    assert small_groups(BOUNDARY_GROUPS, 3) == []
    masked = without_small_groups(BOUNDARY_GROUPS, 4)
    assert list(masked) == ["a"] * 4 + [EXCLUDED] * 3 + ["c"] * 5
    result = model_metrics(BOUNDARY_Y, BOUNDARY_SCORE, 0.5, {"g": BOUNDARY_GROUPS},
                           resamples=20, seed=0, min_group_rows=4)  # fmt: skip
    assert result["small_groups"] == {"g": ["b"]}
    table = result["by_group"]["g"]
    assert table["a"]["count"] == 4 and table["a"]["selection_rate"] == pytest.approx(0.5)
    assert table["a"]["tpr"] == pytest.approx(0.5) and table["a"]["fpr"] == pytest.approx(0.5)
    assert table["b"]["count"] == 3 and math.isnan(table["b"]["selection_rate"])
    # the gaps are a's and c's: dp 0.6 - 0.5, TPR 1 - 0.5, FPR 0.5 - 0
    expected = {"dp_difference": 0.1, "eo_difference": 0.5, "eopp_difference": 0.5}
    assert result["gaps"]["g"] == pytest.approx(expected, abs=1e-12)
    assert {k: result[k] for k in expected} == pytest.approx(expected, abs=1e-12)
    assert set(result["group_intervals"]["g"]) == {"a", "c"}
    # with b compared too: dp 2/3 - 0.5, TPR 1 - 0, FPR 1 - 0
    every = model_metrics(BOUNDARY_Y, BOUNDARY_SCORE, 0.5, {"g": BOUNDARY_GROUPS})
    assert every["gaps"]["g"] == pytest.approx(
        {"dp_difference": 1 / 6, "eo_difference": 1.0, "eopp_difference": 1.0}, abs=1e-12
    )


def test_one_column_has_no_crossing_table() -> None:
    result = model_metrics(BOUNDARY_Y, BOUNDARY_SCORE, 0.5, {"g": BOUNDARY_GROUPS},
                           intersections=True)  # fmt: skip
    assert set(result["by_group"]) == {"g"} and set(result["gaps"]) == {"g"}


def test_gaps_hand_computed_with_three_groups() -> None:
    # p: y 1 1 0 0, predicted 1 0 1 0: selection 0.5,  TPR 0.5, FPR 0.5
    # q: y 1 0 0,   predicted 1 0 0:   selection 1/3,  TPR 1,   FPR 0
    # r: y 1 1 1 0, predicted 0 0 1 1: selection 0.5,  TPR 1/3, FPR 1
    y = np.array([1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0])
    predicted = np.array([1, 0, 1, 0, 1, 0, 0, 0, 0, 1, 1])
    groups = np.array(list("ppppqqqrrrr"))
    gaps = rate_gaps(y, predicted, groups)
    assert gaps == pytest.approx(
        {"dp_difference": 1 / 6, "eo_difference": 1.0, "eopp_difference": 2 / 3}, abs=1e-12
    )
    fair = {
        "dp_difference": demographic_parity_difference(y, predicted, sensitive_features=groups),
        "eo_difference": equalized_odds_difference(y, predicted, sensitive_features=groups),
        "eopp_difference": equal_opportunity_difference(y, predicted, sensitive_features=groups),
    }
    assert gaps == pytest.approx(fair, abs=1e-12)


# --- one resample, recomputed with scikit-learn ----------------------------------------------


def _one_resample(n: int, seed: int) -> np.ndarray:
    """The rows of the first resample: "drawn from seed, the same rows for every caller with
    the same seed" (the audit's re-measurement draws them the same way)."""
    return np.random.default_rng(seed).integers(0, n, n)


def _data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 240
    # scores on a 0.05 grid (ties, and rows exactly at the 0.5 threshold), a few at 1.0;
    # labels drawn at the score's rate, so that a bin may hold more or fewer positives
    # than its scores add up to
    score = np.round(rng.random(n) * 20) / 20
    y = (rng.random(n) < score).astype(int)
    groups = rng.choice(np.array(["f", "m", "x"]), n)
    return y, score, groups


def test_one_resample_s_summary_intervals_equal_scikit_learn_and_fairlearn_on_its_rows() -> None:
    y, score, groups = _data(1)
    assert (score == 0.5).sum() > 5 and (score == 1.0).sum() > 0
    rows = _one_resample(len(y), 9)
    ys, ss, gs = y[rows], score[rows], groups[rows]
    predicted = (ss >= 0.5).astype(int)  # the threshold is inclusive
    expected = {
        "accuracy": accuracy_score(ys, predicted),
        "roc_auc": roc_auc_score(ys, ss),
        "selection_rate": predicted.mean(),
        "dp_difference": demographic_parity_difference(ys, predicted, sensitive_features=gs),
        "eo_difference": equalized_odds_difference(ys, predicted, sensitive_features=gs),
        "eopp_difference": equal_opportunity_difference(ys, predicted, sensitive_features=gs),
    }
    intervals = bootstrap_intervals(y, score, 0.5, groups, 1, 9)
    assert set(intervals) == set(expected)
    for key, value in expected.items():
        assert intervals[key] == pytest.approx([value, value], abs=1e-12), key


def test_one_resample_s_group_intervals_equal_scikit_learn_on_its_rows() -> None:
    y, score, groups = _data(2)
    predicted = (score >= 0.5).astype(int)
    rows = _one_resample(len(y), 4)
    intervals = group_intervals(y, score, predicted, groups, 1, 4)
    assert set(intervals) == {"f", "m", "x"}
    for group, table in intervals.items():
        inside = rows[groups[rows] == group]
        yg, sg, pg = y[inside], score[inside], predicted[inside]
        expected = {
            "accuracy": accuracy_score(yg, pg),
            "selection_rate": pg.mean(),
            "tpr": pg[yg == 1].mean(),
            "fpr": pg[yg == 0].mean(),
            "roc_auc": roc_auc_score(yg, sg),
            "ece": _ece_oracle(yg, sg),
        }
        for key, value in expected.items():
            assert table[key] == pytest.approx([value, value], abs=1e-12), (group, key)


def test_a_group_named_by_the_empty_string_is_not_taken_for_the_excluded_rows() -> None:
    """group_codes found the excluded rows' label by its sort position (first); a group
    named "" sorts before it, and then the small group's rows were compared as a group."""
    from sslops.gaps import EXCLUDED, group_codes, rate_gaps

    groups = np.array([""] * 10 + ["a"] * 10 + [EXCLUDED] * 2, dtype=object)
    codes = group_codes(groups)
    assert codes.tolist() == [0] * 10 + [1] * 10 + [-1] * 2
    y = np.ones(22, dtype=int)
    predicted = np.array([1] * 10 + [1] * 5 + [0] * 5 + [0, 0])
    assert rate_gaps(y, predicted, groups)["dp_difference"] == pytest.approx(0.5)


def test_intervals_are_of_the_decisions_the_point_estimates_are_of() -> None:
    """model_metrics(predicted=...) took its point estimates from ``predicted`` but its
    intervals from score >= threshold: two decision rules in one row of the report."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    score = rng.random(400)
    groups = {"g": rng.choice(["a", "b"], 400)}
    flipped = (score < 0.5).astype(int)  # the opposite of thresholding at 0.5
    out = model_metrics(y, score, 0.5, groups, resamples=50, seed=1, predicted=flipped)
    low, high = out["intervals"]["accuracy"]
    assert low <= out["accuracy"] <= high
    assert out["accuracy"] == pytest.approx(accuracy_score(y, flipped))
    plain = model_metrics(y, score, 0.5, groups, resamples=50, seed=1)
    assert out["intervals"]["accuracy"] != plain["intervals"]["accuracy"]
