"""Mutation round 4 of ``finetune/evidence.py``: where the numeric bins' edges and atoms sit,
a value exactly on an edge, and bins that no labeled row falls in."""

from __future__ import annotations

import numpy as np
import pytest

from sslops.finetune.evidence import BinnedEvidenceLogisticRegression


def _rising(values: np.ndarray, seed: int = 0) -> np.ndarray:
    """Labels whose positive rate rises with the value."""
    rng = np.random.default_rng(seed)
    ranks = np.argsort(np.argsort(values)) / len(values)
    return (rng.random(len(values)) < 0.1 + 0.8 * ranks).astype(int)


def test_edges_sit_midway_between_neighbouring_training_values() -> None:
    x = np.random.default_rng(1).permutation(np.arange(100.0))[:, None] * 0.37
    head = BinnedEvidenceLogisticRegression().fit(x, _rising(x[:, 0]))
    edges, values = head.columns_[0].edges, np.unique(x)
    assert len(edges) == 6  # 7 bins, no atom
    for edge in edges:
        below, above = values[values < edge].max(), values[values > edge].min()
        assert edge == (below + above) / 2 and edge not in values


def test_a_value_on_an_edge_is_scored_as_the_exported_stumps_score_it() -> None:
    # integers 1..140: the edges are at halves, exact in float32 as in the stump tables.
    # A value exactly on an edge takes the bin below, as the stump "x > edge" does.
    x = np.arange(1.0, 141.0)[:, None]
    head = BinnedEvidenceLogisticRegression().fit(x, _rising(x[:, 0]))
    edges = head.columns_[0].edges
    assert np.all(edges % 1 == 0.5)
    coef, tables, constant = head.additive_parts()
    on = edges[:, None]
    above = on[:, tables["feature"][:, 0]] > tables["threshold"][:, 0]
    stumps = (above * tables["value"][:, 2]).sum(1) + on @ coef + constant
    np.testing.assert_allclose(head.decision_function(on), stumps, atol=1e-5)
    below = head.decision_function(on - 0.25)
    np.testing.assert_allclose(head.decision_function(on), below, atol=1e-12)


def test_a_value_filling_exactly_one_bin_s_share_of_the_rows_is_an_atom() -> None:
    # 70 rows, 7 bins: a value on 10 rows (70 / 7) keeps its own bin; one on 9 does not
    values = np.concatenate([np.full(10, 3.0), np.full(9, 40.0), np.arange(100.0, 151.0)])
    head = BinnedEvidenceLogisticRegression().fit(values[:, None], _rising(values))
    assert head.columns_[0].atoms.tolist() == [3.0]


def test_a_bin_that_no_labeled_row_falls_in_is_still_scored() -> None:
    # the edges come from the unlabeled rows (0..199); the labeled rows hold 0..99 only,
    # so the upper bins have no labeled row: they get the prior's evidence, not an error
    labeled = np.arange(100.0)[:, None]
    unlabeled = np.arange(200.0)[:, None]
    head = BinnedEvidenceLogisticRegression().fit(
        labeled, _rising(labeled[:, 0]), X_unlabeled=unlabeled
    )
    assert head.columns_[0].edges.max() > 100
    scores = head.decision_function(np.array([[150.0], [199.0], [1e6]]))
    assert np.all(np.isfinite(scores))


def _woe(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    return np.log(pos / pos.sum()) - np.log(neg / neg.sum())


def test_evidence_with_an_imbalanced_prior_by_hand() -> None:
    # a 2-level categorical column; level a: 3 positives of 4, level b: 1 of 6 (prior 0.4).
    # Each bin (a, b, none set) gets 2 * alpha * prior pseudo-positives and 2 * alpha *
    # (1 - prior) pseudo-negatives (alpha 1)
    x = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 6)
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])  # a: 3 of 4, b: 1 of 6
    head = BinnedEvidenceLogisticRegression(column_of=[0, 0], n_numeric=0).fit(x, y)
    table = _woe(np.array([3, 1, 0]) + 0.8, np.array([1, 5, 0]) + 1.2)
    got = head.transform(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))[:, 0]
    np.testing.assert_allclose(got, table, rtol=1e-12)


def test_numeric_evidence_is_smoothed_across_neighbouring_intervals_not_the_atom() -> None:
    # 12 rows, 3 bins: 0.0 on 4 rows (12 / 3: an atom), then 1..8 cut at 3.5 and 5.5.
    # Counts per bin (atom, <= 3.5, <= 5.5, above) plus the prior's pseudo-counts (5 of 12
    # positive); the intervals' counts (not the atom's) are smoothed with weights
    # 1/4, 1/2, 1/4, the end intervals repeating themselves.
    values = np.array([0.0] * 4 + [1, 2, 3, 4, 5, 6, 7, 8])
    y = np.array([1, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 0])  # atom, 1-3, 4-5, 6-8
    head = BinnedEvidenceLogisticRegression(n_bins=3).fit(values[:, None], y)
    assert head.columns_[0].atoms.tolist() == [0.0]
    assert head.columns_[0].edges.tolist() == [3.5, 5.5]

    def smoothed(counts: list[float], pseudo: float) -> np.ndarray:
        c = np.array(counts) + pseudo
        i = c[1:]
        padded = np.concatenate([i[:1], i, i[-1:]])
        return np.concatenate([c[:1], 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]])

    table = _woe(smoothed([1, 1, 1, 2], 10 / 12), smoothed([3, 2, 1, 1], 14 / 12))
    got = head.transform(np.array([[0.0], [2.0], [5.0], [8.0]]))[:, 0]
    np.testing.assert_allclose(got, table, rtol=1e-12)
    unsmoothed = BinnedEvidenceLogisticRegression(n_bins=3, smooth=False).fit(values[:, None], y)
    got = unsmoothed.transform(np.array([[0.0], [2.0], [5.0], [8.0]]))[:, 0]
    expected = _woe(np.array([1, 1, 1, 2]) + 10 / 12, np.array([3, 2, 1, 1]) + 14 / 12)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_unlabeled_rows_of_another_width_are_refused_naming_both() -> None:
    x = np.arange(40.0).reshape(20, 2)
    with pytest.raises(ValueError, match="X_unlabeled has 3 features; expected 2, as X"):
        BinnedEvidenceLogisticRegression().fit(x, np.arange(20) % 2, X_unlabeled=np.ones((5, 3)))


def test_a_cut_at_the_smallest_value_adds_no_edge() -> None:
    # 5.0 fills 50 of 70 rows (an atom); of the other 20, 1.0 (the smallest value) holds
    # 9 (under 70 / 7: no atom), so the lowest quantile cuts of those 20 fall on 1.0:
    # no edge below it, and every edge lies midway between neighbouring values
    values = np.concatenate([np.ones(9), np.full(50, 5.0), [2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13.5]])
    head = BinnedEvidenceLogisticRegression().fit(values[:, None], _rising(values))
    column, distinct = head.columns_[0], np.unique(values)
    assert column.atoms.tolist() == [5.0]
    for edge in column.edges:
        below, above = distinct[distinct < edge].max(), distinct[distinct > edge].min()
        assert edge == (below + above) / 2 and edge not in distinct
