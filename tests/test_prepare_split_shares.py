"""prepare's refusal of near-duplicate clusters that leave a split far from its share, at its
edges (``merge._check_split_shares``).

tests/test_prepare_tabular.py shows it refusing a table whose clusters swallow a split; these
show the two halves of the rule that test does not reach: a split far *above* its share is
refused as one far below is, and a small split within sampling noise of its share (4 standard
deviations of a binomial count) is not refused however far off it is in ratio.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sslops.errors import DataError
from sslops.prepare.merge import _check_split_shares

NEAR = {"max_differing_fields": 1, "largest_cluster": 40}


def _chosen(validation: int, test: int, rows: int) -> np.ndarray:
    split = np.full(rows, "train", dtype=object)
    split[:validation] = "validation"
    split[validation : validation + test] = "test"
    return split


def _cfg(validation_fraction: float) -> SimpleNamespace:
    return SimpleNamespace(prepare=SimpleNamespace(validation_fraction=validation_fraction))


def test_a_split_more_than_twice_its_share_is_refused() -> None:
    # 1,000 rows, validation asked 10%: 300 is 3x the 100 expected, 200 beyond 4 sd (38)
    with pytest.raises(DataError, match=r"the validation split got 300 of 1,000 rows \(30\.0%\)"):
        _check_split_shares(_cfg(0.1), _chosen(300, 100, 1000), 0.1, NEAR, 5)


def test_a_split_below_half_its_share_is_refused() -> None:
    with pytest.raises(DataError, match=r"the test split got 40 of 1,000 rows"):
        _check_split_shares(_cfg(0.1), _chosen(100, 40, 1000), 0.1, NEAR, 5)


@pytest.mark.parametrize(("validation", "test"), [(0, 2), (5, 2), (2, 0), (2, 5)])
def test_a_small_split_within_sampling_noise_is_kept(validation: int, test: int) -> None:
    """20 rows at 10%: 2 expected, 4 sd = 5.4 rows, so 0 or 5 (beyond half or twice the
    share) is noise, not clusters chaining."""
    _check_split_shares(_cfg(0.1), _chosen(validation, test, 20), 0.1, NEAR, 5)
