"""Out-of-fold scores of the labeled training rows, for the gaps that need labels.

Equalized odds and equal opportunity compare true- and false-positive rates across groups,
so they are measured on labeled rows only. On a validation split of a few thousand rows the
smaller group holds few positives (110 women with income >50K among Adult's 3,280
validation rows), a per-group true-positive rate is measured to about ±0.05, and a 0.02
policy picks among noise. The labeled training rows are many more, but a head cannot be
judged on rows it was fitted on. So each linear-head candidate is refitted on ``folds``
folds of the labeled rows and every labeled row is scored by the head fitted without it
(cross-fitting, as :class:`sslops.finetune.boosting.CrossFittedBoostingScore` does for the
trees); the candidate's gap is measured on the validation split plus these out-of-fold
predictions. Every candidate is split by the same folds, so their estimates compare.

Opt-in (``finetune.fairness.gap_crossfit``): on one of two Adult splits measured (docs/
benchmarks.md) the penalized heads' out-of-fold gaps were 0.01-0.02 while the same heads
measured 0.07-0.09 on the validation and test splits, so pooling can under-state a gap.

Demographic parity needs no labels and is estimated on held-out unlabeled rows instead
(``finetune.fairness.gap_holdout``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

LABELED_GAPS = ("equalized_odds", "equal_opportunity")

# fit(fold, rows) -> an estimator with decision_function, fitted on those labeled rows only.
FoldFit = Callable[[int, np.ndarray], Any]


class CrossFit:
    """Stratified folds of the labeled rows, shared by every candidate of one sweep."""

    def __init__(self, y: np.ndarray, folds: int, seed: int) -> None:
        counts = np.bincount(np.unique(y, return_inverse=True)[1])
        self.folds = min(folds, int(counts.min()))
        if self.folds < 2:
            raise ValueError("cross-fitting needs at least 2 labeled rows of each class")
        split = StratifiedKFold(self.folds, shuffle=True, random_state=seed)
        self.splits = list(split.split(np.zeros(len(y)), y))

    def decision(self, fit: FoldFit, x: np.ndarray) -> np.ndarray:
        """Out-of-fold decision values: row i scored by the head fitted without i's fold."""
        out = np.empty(len(x), dtype=np.float64)
        for fold, (fit_rows, held_out) in enumerate(self.splits):
            out[held_out] = fit(fold, fit_rows).decision_function(x[held_out])
        return out


def gap_crossfit(constraint: str, folds: int, y: np.ndarray, seed: int) -> CrossFit | None:
    """The folds when the constrained gap needs labels and cross-fitting is on, else None."""
    if constraint not in LABELED_GAPS or folds < 2:
        return None
    counts = np.bincount(np.unique(y, return_inverse=True)[1])
    if len(counts) < 2 or counts.min() < 2:
        return None
    return CrossFit(y, folds, seed)
