"""Mutation round 4 of ``evaluate/shift.py``: the domain classifier's row cap."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

import sslops.evaluate.shift as shift


def test_the_domain_classifier_takes_at_most_domain_rows_of_each_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[int, int]] = []

    class Recording(StratifiedKFold):
        def split(self, x: Any, y: Any = None, groups: Any = None) -> Any:
            seen.append((int(np.sum(y == 0)), int(np.sum(y == 1))))
            return super().split(x, y, groups)

    monkeypatch.setattr(shift, "StratifiedKFold", Recording)
    rng = np.random.default_rng(0)
    big, small = rng.normal(size=(shift.DOMAIN_ROWS + 700, 2)), rng.normal(size=(300, 2)) + 1.0
    assert shift.domain_auc(big, small, seed=0) > 0.6  # type: ignore[operator]
    assert shift.domain_auc(small, big, seed=0) > 0.6  # type: ignore[operator]
    assert seen == [(shift.DOMAIN_ROWS, 300), (300, shift.DOMAIN_ROWS)]


def _accuracy(y: np.ndarray, s: np.ndarray) -> float:
    return float(np.mean((s >= 0.5) == y))


def test_every_model_draws_the_rows_of_the_one_seed() -> None:
    # one paired draw: its rows are the seed's first draw, the same for both models, so
    # each interval is the difference on those rows, computed here by hand
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 40)
    test = {m: (y, rng.random(40)) for m in ("ssl", "baseline")}
    ood = {m: (y, rng.random(40)) for m in ("ssl", "baseline")}
    out = shift.compare_with_test({"accuracy": _accuracy}, test, ood, paired=True, resamples=1,
                                  seed=7)  # fmt: skip
    rows = np.random.default_rng(7).integers(0, 40, 40)
    for m in ("ssl", "baseline"):
        d = _accuracy(y[rows], ood[m][1][rows]) - _accuracy(y[rows], test[m][1][rows])
        assert out[m]["accuracy"]["difference_interval"] == pytest.approx([d, d], abs=1e-12)


@pytest.mark.parametrize(
    ("paired", "said"), [(True, "(paired: the same rows)"), (False, "(each split resampled)")]
)
def test_the_table_says_how_the_rows_were_drawn(paired: bool, said: str) -> None:
    row = {"test": 0.8, "ood": 0.7, "difference": -0.1, "difference_interval": [-0.15, -0.05]}
    ood = {"split": "ood", "rows": 12, "paired": paired,
           "compared_with_test": {"ssl": {"accuracy": row}}}  # fmt: skip
    assert f"OOD minus test with its 95% bootstrap interval {said}:" in shift.comparison_markdown(
        ood
    )
