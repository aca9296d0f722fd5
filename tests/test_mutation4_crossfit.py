"""Mutation round 4 of ``finetune/crossfit.py``: too few rows of a class for two folds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from sslops.finetune.crossfit import CrossFit, gap_crossfit


@pytest.mark.parametrize(
    ("y", "folds"), [(np.array([0, 0, 0, 0, 1]), 5), (np.array([0, 0, 1, 1, 0, 1]), 1)]
)
def test_fewer_than_two_folds_is_refused_saying_why(y: np.ndarray, folds: int) -> None:
    # one positive row (or one fold asked for): no row could be scored by a head fitted
    # without it on rows of both classes
    with pytest.raises(ValueError, match="cross-fitting needs at least 2 labeled rows of each"):
        CrossFit(y, folds, seed=0)


def test_two_rows_of_the_rarer_class_give_two_folds() -> None:
    crossfit = CrossFit(np.array([0, 0, 0, 0, 1, 1]), 5, seed=0)
    assert crossfit.folds == 2 and len(crossfit.splits) == 2


def test_no_cross_fitting_without_two_folds_of_each_class() -> None:
    # one positive row, or one fold asked for: the gap is measured on validation rows only
    # (None), rather than failing the sweep
    one_positive = np.array([0] * 20 + [1])
    assert gap_crossfit("equalized_odds", 5, one_positive, 0) is None
    assert gap_crossfit("equal_opportunity", 1, np.array([0, 1] * 10), 0) is None


def test_the_folds_are_scikit_learn_s_stratified_shuffle_of_the_seed() -> None:
    y = np.array([0, 1] * 30)
    for seed in (1, 2):
        expected = StratifiedKFold(4, shuffle=True, random_state=seed).split(np.zeros(60), y)
        for (fit, held), (fit_e, held_e) in zip(CrossFit(y, 4, seed).splits, expected, strict=True):
            assert np.array_equal(fit, fit_e) and np.array_equal(held, held_e)
