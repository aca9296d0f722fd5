"""Mutation round 4 of ``finetune/crossfit.py``: too few rows of a class for two folds."""

from __future__ import annotations

import numpy as np
import pytest

from sslops.finetune.crossfit import CrossFit


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
