"""The selection policy, the Pareto front and the gap bounds at their edges: a gap exactly at
max_gap, ties in accuracy or gap, a non-deployable candidate that is the fairest, several
sensitive columns. Expected picks and values are worked out by hand."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from sslops.finetune.pareto import (
    Candidate,
    fairness_gap,
    gap_upper_bound,
    mark_front,
    plot_floor,
    select,
)

DP = "demographic_parity"


def _pool(rows: list[tuple[str, float, float]], not_deployable: tuple[str, ...] = ()) -> list:
    """Candidates from (name, accuracy, gap) rows."""
    return [
        Candidate(name, "penalty", 0.0, accuracy, {DP: gap}, deployable=name not in not_deployable)
        for name, accuracy, gap in rows
    ]


def test_a_gap_exactly_at_max_gap_is_within_the_policy() -> None:
    chosen, met = select(_pool([("at", 0.90, 0.25), ("under", 0.80, 0.125)]), DP, 0.25)
    assert (chosen.name, met) == ("at", True)


def test_equal_accuracy_within_the_gap_picks_the_smaller_gap() -> None:
    pool = _pool([("wide", 0.80, 0.04), ("narrow", 0.80, 0.01), ("worse", 0.70, 0.0)])
    assert select(pool, DP, 0.05) == (pool[1], True)
    assert select(list(reversed(pool)), DP, 0.05) == (pool[1], True)


def test_nothing_within_picks_the_fairest_deployable_and_on_a_tie_the_more_accurate() -> None:
    pool = _pool([("less", 0.70, 0.30), ("more", 0.75, 0.30), ("far", 0.95, 0.50)])
    assert select(pool, DP, 0.1) == (pool[1], False)
    assert select(list(reversed(pool)), DP, 0.1) == (pool[1], False)


def test_a_non_deployable_candidate_is_never_picked_even_when_it_is_the_fairest() -> None:
    pool = _pool([("post", 0.90, 0.01), ("ssl", 0.85, 0.30)], not_deployable=("post",))
    assert select(pool, DP, 0.1) == (pool[1], False)  # post would be within: not deployable
    assert select(pool, DP, 0.001) == (pool[1], False)  # nothing within: still not post


def test_the_policy_compares_the_upper_bound_at_the_edge() -> None:
    pool = _pool([("bound_at", 0.90, 0.05), ("bound_over", 0.95, 0.05)])
    pool[0].upper, pool[1].upper = {DP: 0.125}, {DP: 0.25}
    assert select(pool, DP, 0.125) == (pool[0], True)
    assert select(pool, DP, 0.1) == (pool[0], False)  # both over: the smaller bound


def test_front_with_ties_in_accuracy_or_gap() -> None:
    pool = _pool([
        ("a", 0.80, 0.10),  # dominated by b: as accurate, fairer
        ("b", 0.80, 0.05),
        ("c", 0.85, 0.20),
        ("d", 0.82, 0.20),  # dominated by c: as fair, more accurate
        ("e", 0.85, 0.20),  # c's twin: neither dominates the other
    ])  # fmt: skip
    mark_front(pool, DP)
    assert {c.name for c in pool if c.on_front} == {"b", "c", "e"}


def test_the_plot_floor_keeps_a_pick_that_is_off_the_front() -> None:
    # the non-deployable "post" dominates the pick "a", which is off the front
    # "edge" lies exactly on the floor (0.02 below the pick): shown, not counted as hidden
    pool = _pool([("post", 0.90, 0.01), ("a", 0.75, 0.02), ("low", 0.50, 0.5),
                  ("edge", 0.75 - 0.02, 0.6)], not_deployable=("post",))  # fmt: skip
    mark_front(pool, DP)
    chosen, _ = select(pool, DP, 0.05)
    assert chosen.name == "a" and not chosen.on_front
    floor, hidden = plot_floor(pool, chosen)
    assert floor == pytest.approx(0.73) and [c.name for c in hidden] == ["low"]


def test_the_report_row_keeps_five_decimals() -> None:
    row = Candidate("x", "penalty", 1.0, 0.8123456, {DP: 0.0123456}, upper={DP: 0.0456789}).row()
    assert row["validation_accuracy"] == 0.81235
    assert row["demographic_parity_difference"] == 0.01235
    assert row["demographic_parity_upper_bound"] == 0.04568


def test_the_gap_and_its_bound_are_the_largest_over_the_columns() -> None:
    # column "sex": f selects 6 of 10, m 4 of 10 (gap 0.2); column "race": u 5 of 10,
    # v 5 of 10 (gap 0.0)
    predicted = np.array([1] * 6 + [0] * 4 + [1] * 4 + [0] * 6)
    sex = np.array(["f"] * 10 + ["m"] * 10)
    race = np.array(["u", "v"] * 10)
    y = np.zeros(20, dtype=int)
    for columns in ({"sex": sex, "race": race}, {"race": race, "sex": sex}):
        assert fairness_gap(DP, y, predicted, columns) == pytest.approx(0.2, abs=1e-12)
        qf, qm = 7 / 12, 5 / 12  # (k + 1) / (n + 2)
        z = NormalDist().inv_cdf(0.9)
        expected = 0.2 + z * np.sqrt(qf * (1 - qf) / 10 + qm * (1 - qm) / 10)
        assert gap_upper_bound(DP, y, predicted, columns, 0.9) == pytest.approx(expected)


def test_one_group_has_no_gap_and_no_bound() -> None:
    """Undefined (NaN), not 0.0: a 0.0 met every max_gap (the strict-JSON review)."""
    y, predicted = np.array([0, 1, 0, 1]), np.array([1, 1, 0, 0])
    only = {"g": np.array(["a"] * 4)}
    for name in ("demographic_parity", "equalized_odds", "equal_opportunity"):
        assert math.isnan(fairness_gap(name, y, predicted, only))
        assert math.isnan(gap_upper_bound(name, y, predicted, only, 0.95))
    # a second column where the gap is measured does not make the largest known
    two = {**only, "h": np.array(["a", "a", "b", "b"])}
    assert math.isnan(fairness_gap("demographic_parity", y, predicted, two))


def test_equalized_odds_bound_is_the_larger_of_the_tpr_and_fpr_bounds() -> None:
    # positives: a finds 8 of 10, b 2 of 10 (TPR gap 0.6); negatives: a 1 of 10, b 2 of 10
    # (FPR gap 0.1): the equalized-odds bound is the TPR one
    y = np.array([1] * 10 + [0] * 10 + [1] * 10 + [0] * 10)
    predicted = np.concatenate([np.arange(10) < 8, np.arange(10) < 1,
                                np.arange(10) < 2, np.arange(10) < 2]).astype(int)  # fmt: skip
    groups = {"g": np.array(["a"] * 20 + ["b"] * 20)}
    z = NormalDist().inv_cdf(0.95)
    qa, qb = 9 / 12, 3 / 12
    tpr = 0.6 + z * np.sqrt(qa * (1 - qa) / 10 + qb * (1 - qb) / 10)
    assert gap_upper_bound("equal_opportunity", y, predicted, groups, 0.95) == pytest.approx(tpr)
    assert gap_upper_bound("equalized_odds", y, predicted, groups, 0.95) == pytest.approx(tpr)
    assert fairness_gap("equalized_odds", y, predicted, groups) == pytest.approx(0.6)
