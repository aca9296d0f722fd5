"""A boosted-tree score as a feature for the fairness heads, cross-fitted so training rows are honest.

:class:`CrossFittedBoostingScore` fits a ``HistGradientBoostingClassifier`` and returns its
log-odds as one column. ``fit_transform`` returns *out-of-fold* log-odds for the training
rows (each row scored by a booster that did not see it), like scikit-learn's
``TargetEncoder``: a head trained on in-sample scores would learn from scores far more
confident than those of new rows, and its fairness gaps would not carry over.
``transform`` scores new rows with the booster fitted on all rows; that booster is what
:class:`sslops.models.trees.BoostedStackClassifier` exports.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.validation import check_is_fitted, validate_data

from sslops.finetune._sklearn import binary_target
from sslops.models.trees import booster_trees


class CrossFittedBoostingScore(TransformerMixin, BaseEstimator):
    """Log-odds of a HistGradientBoostingClassifier; out-of-fold in ``fit_transform``.

    ``fit_transform`` differs from ``fit(...).transform`` by design (out-of-fold versus
    full-booster scores), as scikit-learn's ``TargetEncoder``. Binary labels only;
    ``classes_`` holds them, and the score is the log-odds of ``classes_[1]``.
    """

    def __init__(
        self, *, max_iter: int = 100, learning_rate: float = 0.1, max_leaf_nodes: int = 31,
        folds: int = 5, random_state: int = 0,
    ) -> None:  # fmt: skip
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.folds = folds
        self.random_state = random_state

    def _booster(self) -> HistGradientBoostingClassifier:
        # No early stopping: it would hold out rows at random and make the trees depend on it.
        return HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes, early_stopping=False,
            random_state=self.random_state,
        )  # fmt: skip

    def fit(self, X: np.ndarray, y: np.ndarray) -> CrossFittedBoostingScore:
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: np.ndarray, y: np.ndarray, **_: object) -> np.ndarray:
        """Out-of-fold log-odds of ``X`` (keyword arguments, such as the ``X_unlabeled`` the
        evidence score takes, are ignored)."""
        X, y = validate_data(self, X, y, dtype=np.float32)
        binary_target(self, y)  # classes_, or a ValueError for other than two classes
        classes = self.classes_
        folds = min(self.folds, int(np.min(np.bincount(np.searchsorted(classes, y)))))
        if folds < 2:
            raise ValueError("CrossFittedBoostingScore needs at least 2 rows of each class")
        out_of_fold = np.zeros(len(y))
        split = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        for fit_rows, held_out in split.split(X, y):
            booster = self._booster().fit(X[fit_rows], y[fit_rows])
            out_of_fold[held_out] = booster.decision_function(X[held_out])
        self.booster_ = self._booster().fit(X, y)
        self.n_iter_ = self.booster_.n_iter_
        return out_of_fold[:, None]

    def transform(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "booster_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return self.booster_.decision_function(X)[:, None]

    def stack_trees(self) -> dict[str, Any]:
        """The full booster as :meth:`BoostedStackClassifier.from_tables` takes its trees."""
        check_is_fitted(self, "booster_")
        return booster_trees(self.booster_)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.array(["boosted_log_odds"], dtype=object)
