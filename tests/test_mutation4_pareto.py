"""Mutation round 4 of the selection policy, the Pareto front and the gap bounds: cases
the earlier tests left open (each fails on a hand-made mutant of ``finetune/pareto.py``).
Expected values are worked out by hand in the comments."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from sslops.finetune.pareto import (
    Candidate,
    class_gap_upper_bounds,
    fairness_gap,
    gap_upper_bound,
    select,
)

DP = "demographic_parity"


def test_an_undefined_column_makes_the_largest_gap_undefined_whatever_the_column_order() -> None:
    # y = 1 rows 0, 1, 4, 5. Column "a": group a finds 1 of its 2 positives, b 2 of 2
    # (TPR gap 0.5). Column "b": every positive row is in group x, so only one group has a
    # true-positive rate: that gap is undefined, and so is the largest of the two.
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    predicted = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    a = np.array(["a"] * 4 + ["b"] * 4)
    b = np.array(["x", "x", "x", "y", "x", "x", "y", "y"])
    assert fairness_gap("equal_opportunity", y, predicted, {"a": a}) == 0.5
    for columns in ({"a": a, "b": b}, {"b": b, "a": a}):
        assert math.isnan(fairness_gap("equal_opportunity", y, predicted, columns))
        assert math.isnan(gap_upper_bound("equal_opportunity", y, predicted, columns, 0.9))


def test_k_class_equalized_odds_bound_covers_a_false_positive_rate_gap() -> None:
    # Three classes, groups a and b of 30 rows each, 10 rows of each class per group. Every
    # class's true-positive rate is 1.0 in both groups (each row of class c is predicted c),
    # except that group b predicts class 2 for 6 of its 10 class-0 rows: class 0's TPR gap
    # 0.6, class 2's false-positive rate 0 in a and 6/20 = 0.3 in b. Equalized odds is the
    # larger of each class's TPR and FPR bounds; its TPR halves are the binary bound of each
    # class against the rest (class_gap_upper_bounds' documented contract).
    y = np.tile(np.repeat([0, 1, 2], 10), 2)
    predicted = y.copy()
    predicted[30:36] = 2  # group b, class-0 rows 0-5 -> class 2
    groups = np.repeat(["a", "b"], 30)
    z = NormalDist().inv_cdf(0.9)

    def bound(gap: float, ka: int, na: int, kb: int, nb: int) -> float:
        qa, qb = (ka + 1) / (na + 2), (kb + 1) / (nb + 2)
        return gap + z * math.sqrt(qa * (1 - qa) / na + qb * (1 - qb) / nb)

    tpr0 = bound(0.6, 10, 10, 4, 10)  # class 0: a 10 of 10, b 4 of 10
    fpr2 = bound(0.3, 6, 20, 0, 20)  # class 2 among the 20 non-class-2 rows: b 6, a 0
    upper = class_gap_upper_bounds(y, predicted, groups, 3, 0.9)
    assert upper["equal_opportunity"] == pytest.approx(tpr0)
    assert upper["equalized_odds"] == pytest.approx(max(tpr0, fpr2))
    # ... and where every class's TPR is the same in both groups (each misses 4 of its 10
    # class-0 rows, a into class 1, b into class 2) only the FPR halves differ: class 1's
    # FPR is 4/20 in a and 0 in b, class 2's 0 in a and 4/20 in b. Equalized odds is then
    # that FPR bound, above every TPR bound (the largest, class 0's: a 6 of 10, b 6 of 10).
    predicted = y.copy()
    predicted[0:4], predicted[30:34] = 1, 2
    fpr = bound(0.2, 4, 20, 0, 20)
    tpr0 = bound(0.0, 6, 10, 6, 10)
    assert tpr0 < fpr
    upper = class_gap_upper_bounds(y, predicted, groups, 3, 0.9)
    assert upper["equal_opportunity"] == pytest.approx(tpr0)
    assert upper["equalized_odds"] == pytest.approx(fpr)


def test_only_one_class_candidates_over_the_bound_still_give_the_fairest() -> None:
    # every candidate predicts one class; their measured gaps are 0 but their upper bounds
    # (gap_confidence) exceed max_gap: the policy is not met and the smallest bound is
    # taken, not an error
    pool = [
        Candidate(name, "penalty", 0.0, accuracy, {DP: 0.0}, upper={DP: bound}, selection_rate=rate)
        for name, accuracy, bound, rate in (("never", 0.9, 0.08, 0.0), ("always", 0.1, 0.06, 1.0))
    ]
    assert select(pool, DP, 0.05) == (pool[1], False)


def test_an_unknown_gap_is_refused_naming_the_gaps() -> None:
    y = predicted = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"unknown gap 'parity'; expected one of \['demographic"):
        gap_upper_bound("parity", y, predicted, {"g": np.array(list("aabb"))}, 0.9)
