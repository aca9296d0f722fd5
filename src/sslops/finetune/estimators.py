"""scikit-learn-style fairness estimators over a fixed feature matrix (e.g. frozen embeddings).

- :class:`FairnessPenalizedLogisticRegression`: logistic regression whose loss adds a
  differentiable fairness penalty (in-training mitigation).
- :class:`DistilledExponentiatedGradient`: fairlearn's ExponentiatedGradient reduction
  over logistic regression; its randomized mixture is distilled into one deterministic
  logistic regression (fitted to the mixture's expected prediction) so it exports.
- :class:`GridSearchLogisticRegression`: fairlearn's GridSearch reduction over logistic
  regression; every grid point is already one deterministic logistic regression, so each
  is a candidate as it is.
- :class:`GroupThresholdPostprocessor`: fairlearn's ThresholdOptimizer reduced to its
  per-group thresholds. It needs the sensitive attribute at prediction time, so reports
  flag it and the policy never deploys it.

Settings are keyword-only in ``__init__``; data and ``sensitive_features=`` go to
``fit``; learned state ends in ``_``.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from fairlearn.postprocessing import ThresholdOptimizer
from fairlearn.reductions import (
    DemographicParity,
    EqualizedOdds,
    ExponentiatedGradient,
    GridSearch,
    TruePositiveRateParity,
)
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from sslops.finetune.fairness import FairnessPenalty
from sslops.finetune.transfer import fit_linear_head

_MOMENTS = {
    "demographic_parity": DemographicParity,
    "equalized_odds": EqualizedOdds,
    "equal_opportunity": TruePositiveRateParity,
}
_THRESHOLD_CONSTRAINTS = {
    "demographic_parity": "demographic_parity",
    "equalized_odds": "equalized_odds",
    "equal_opportunity": "true_positive_rate_parity",
}


def groups_1d(sensitive_features: Any) -> np.ndarray:
    """One group label per row; several columns become their intersection."""
    array = np.asarray(sensitive_features, dtype=str)
    if array.ndim == 1:
        return array
    return np.array(["|".join(row) for row in array])


class _LinearProba(ClassifierMixin, BaseEstimator):
    coef_: np.ndarray
    intercept_: float

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X) @ self.coef_ + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.decision_function(X) >= 0).astype(int)


class FairnessPenalizedLogisticRegression(_LinearProba):
    """Mean log-loss + L2 (``1/(2 C n)``) + ``penalty`` * fairness penalty, by L-BFGS.

    For demographic parity ``X_unlabeled`` rows (with their sensitive features) join the
    penalty: parity of predictions needs no labels.
    """

    def __init__(
        self, *, constraint: str = "demographic_parity", penalty: float = 1.0, C: float = 1.0,
        max_iter: int = 300,
    ) -> None:  # fmt: skip
        self.constraint = constraint
        self.penalty = penalty
        self.C = C
        self.max_iter = max_iter

    def fit(
        self, X: np.ndarray, y: np.ndarray, *, sensitive_features: Any,
        X_unlabeled: np.ndarray | None = None, sensitive_features_unlabeled: Any = None,
        init: tuple[np.ndarray, float] | None = None,
    ) -> FairnessPenalizedLogisticRegression:  # fmt: skip
        x = torch.as_tensor(np.asarray(X), dtype=torch.float32)
        y_t = torch.as_tensor(np.asarray(y), dtype=torch.float32)
        groups = np.asarray(sensitive_features, dtype=str).reshape(len(y), -1)
        x_pen, y_pen, g_pen = x, np.asarray(y), groups
        if self.constraint == "demographic_parity" and X_unlabeled is not None and len(X_unlabeled):
            g_u = np.asarray(sensitive_features_unlabeled, dtype=str).reshape(len(X_unlabeled), -1)
            x_pen = torch.cat([x, torch.as_tensor(np.asarray(X_unlabeled), dtype=torch.float32)])
            y_pen = np.concatenate([y_pen, -np.ones(len(X_unlabeled), dtype=int)])
            g_pen = np.vstack([groups, g_u])
        start = None
        if init is not None:
            start = (torch.as_tensor(init[0], dtype=torch.float32), torch.tensor(float(init[1])))
        w, b = fit_linear_head(
            x, y_t, regularization=self.C, steps=self.max_iter,
            penalty=FairnessPenalty(self.constraint, g_pen, y_pen),  # type: ignore[arg-type]
            z_penalty=x_pen, weight=self.penalty, init=start,
        )  # fmt: skip
        self.coef_, self.intercept_ = w.numpy().astype(np.float64), float(b)
        return self


@contextlib.contextmanager
def _quiet_fairlearn() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # fairlearn 0.15 writes to a pandas Series in a way pandas 3 deprecates.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        with contextlib.suppress(AttributeError):
            warnings.simplefilter("ignore", pd.errors.Pandas4Warning)
        # GridSearch logs a warning whenever the grid is smaller than it recommends for the
        # number of groups; the grid size is a setting (finetune.fairness.grid_search).
        grid_log = logging.getLogger("fairlearn.reductions._grid_search._grid_generator")
        level = grid_log.level
        grid_log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            grid_log.setLevel(level)


class GridSearchLogisticRegression(_LinearProba):
    """fairlearn GridSearch over LogisticRegression: one deterministic linear model per point.

    Each grid point is a cost-sensitive logistic regression for one Lagrange multiplier
    vector of the constraint; ``coefs_`` / ``intercepts_`` / ``lambdas_`` hold every
    point's model (a Pareto-front sweep), ``coef_`` / ``intercept_`` GridSearch's own pick
    (``best_idx_``, its loss + ``constraint_weight`` * violation trade-off). A point whose
    relabelled targets had one class (fairlearn's constant DummyClassifier) becomes a linear
    model with zero weights and a saturated intercept.
    """

    def __init__(
        self, *, constraint: str = "demographic_parity", grid_size: int = 11, C: float = 1.0,
        constraint_weight: float = 0.5,
    ) -> None:  # fmt: skip
        self.constraint = constraint
        self.grid_size = grid_size
        self.C = C
        self.constraint_weight = constraint_weight

    def fit(
        self, X: np.ndarray, y: np.ndarray, *, sensitive_features: Any
    ) -> GridSearchLogisticRegression:
        groups = groups_1d(sensitive_features)
        if len(np.unique(groups)) < 2:
            raise ValueError(
                "GridSearchLogisticRegression needs at least 2 sensitive groups, got 1"
            )
        with _quiet_fairlearn():
            search = GridSearch(
                LogisticRegression(C=self.C, max_iter=2000), _MOMENTS[self.constraint](),
                grid_size=self.grid_size, constraint_weight=self.constraint_weight,
            )  # fmt: skip
            search.fit(np.asarray(X), np.asarray(y), sensitive_features=groups)
        dim = np.asarray(X).shape[1]
        coefs, intercepts = [], []
        for predictor in search.predictors_:
            if hasattr(predictor, "coef_"):
                coefs.append(np.asarray(predictor.coef_[0], dtype=np.float64))
                intercepts.append(float(predictor.intercept_[0]))
            else:  # DummyClassifier(strategy="constant")
                coefs.append(np.zeros(dim))
                intercepts.append(30.0 if int(predictor.constant) == 1 else -30.0)
        self.coefs_, self.intercepts_ = np.stack(coefs), np.array(intercepts)
        self.lambdas_ = search.lambda_vecs_.to_numpy().T  # one row per grid point
        # The net multiplier (lambda+ - lambda-) per constraint (event, group), nonzero only.
        lam = search.lambda_vecs_
        net = lam.xs("+", level="sign") - lam.xs("-", level="sign")
        self.multipliers_ = [
            {
                (f"{group}" if event == "all" else f"{event}, {group}"): float(value)
                for (event, group), value in net[point].items()
                if value != 0
            }
            for point in net.columns
        ]
        self.best_idx_ = int(search.best_idx_)
        self.coef_, self.intercept_ = (
            self.coefs_[self.best_idx_],
            float(self.intercepts_[self.best_idx_]),
        )
        return self

    def point(self, index: int) -> _LinearProba:
        """Grid point ``index`` as a fitted linear model."""
        model = _LinearProba()
        model.coef_, model.intercept_ = self.coefs_[index], float(self.intercepts_[index])
        return model


class DistilledExponentiatedGradient(_LinearProba):
    """fairlearn ExponentiatedGradient(LogisticRegression), distilled to one linear model."""

    def __init__(
        self, *, constraint: str = "demographic_parity", eps: float = 0.01, C: float = 1.0,
        max_iter: int = 50,
    ) -> None:  # fmt: skip
        self.constraint = constraint
        self.eps = eps
        self.C = C
        self.max_iter = max_iter

    def fit(
        self, X: np.ndarray, y: np.ndarray, *, sensitive_features: Any
    ) -> DistilledExponentiatedGradient:
        moment = _MOMENTS[self.constraint](difference_bound=self.eps)
        with _quiet_fairlearn():
            reduction = ExponentiatedGradient(
                LogisticRegression(C=self.C, max_iter=2000), moment,
                eps=self.eps, max_iter=self.max_iter,
            )  # fmt: skip
            reduction.fit(X, y, sensitive_features=groups_1d(sensitive_features))
        soft = reduction._pmf_predict(X)[:, 1]  # the mixture's expected prediction
        self.n_predictors_ = int(np.sum(np.asarray(reduction.weights_) > 0))
        x = torch.as_tensor(np.asarray(X), dtype=torch.float32)
        w, b = fit_linear_head(
            x, torch.as_tensor(soft, dtype=torch.float32), regularization=self.C * 10
        )
        self.coef_, self.intercept_ = w.numpy().astype(np.float64), float(b)
        return self


class GroupThresholdPostprocessor(BaseEstimator):
    """Per-group thresholds from fairlearn's ThresholdOptimizer over fixed scores.

    ``thresholds_`` maps each group to fairlearn's interpolation (two thresholds and the
    probability of using the first), which is JSON-serializable and replayed by
    :meth:`predict` with a seeded generator. Requires the sensitive attribute at
    prediction time.
    """

    requires_sensitive_at_prediction = True

    @staticmethod
    def unfittable_groups(y: np.ndarray, sensitive_features: Any) -> list[str]:
        """Groups with one class only, for which ThresholdOptimizer has no threshold to pick
        (fairlearn raises "Degenerate labels" on them): few labels and small groups."""
        groups = groups_1d(sensitive_features)
        target = np.asarray(y)
        return [str(g) for g in np.unique(groups) if len(np.unique(target[groups == g])) < 2]

    def __init__(self, *, constraint: str = "demographic_parity") -> None:
        self.constraint = constraint

    def fit(
        self, scores: np.ndarray, y: np.ndarray, *, sensitive_features: Any
    ) -> GroupThresholdPostprocessor:
        class _Scores(BaseEstimator):
            """The scores are already computed: column 0 of X is the prediction."""

            def __init__(self) -> None:
                self.fitted_ = True  # satisfies fairlearn's prefit check

            def fit(self, X: Any, y: Any) -> _Scores:
                return self

            def predict(self, X: np.ndarray) -> np.ndarray:
                return np.asarray(X)[:, 0]

        optimizer = ThresholdOptimizer(
            estimator=_Scores(), constraints=_THRESHOLD_CONSTRAINTS[self.constraint],
            prefit=True, predict_method="predict",
        )  # fmt: skip
        optimizer.fit(
            np.asarray(scores)[:, None], y, sensitive_features=groups_1d(sensitive_features)
        )
        table = optimizer.interpolated_thresholder_.interpolation_dict
        self.thresholds_ = {
            str(g): {k: float(v) if k.startswith("p") else str(v) for k, v in d.items()}
            for g, d in table.items()
        }
        return self

    def predict(self, scores: np.ndarray, *, sensitive_features: Any, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        groups = groups_1d(sensitive_features)
        out = np.zeros(len(scores), dtype=int)
        for group, rule in self.thresholds_.items():
            rows = groups == group
            first = rng.random(rows.sum()) < rule["p0"]
            decided = np.where(
                first,
                _apply(scores[rows], rule["operation0"]),
                _apply(scores[rows], rule["operation1"]),
            )
            # Equalized odds may mix in a constant prediction with probability p_ignore.
            ignore = rng.random(rows.sum()) < rule.get("p_ignore", 0.0)
            constant = (rng.random(rows.sum()) < rule.get("prediction_constant", 0.0)).astype(int)
            out[rows] = np.where(ignore, constant, decided)
        return out


def _apply(scores: np.ndarray, operation: Any) -> np.ndarray:
    """Replay a fairlearn ThresholdOperation given as text like '[>0.42]' or '[<0.1]'."""
    text = str(operation).strip("[]")
    op, value = text[0], float(text[1:])
    return (scores > value).astype(int) if op == ">" else (scores < value).astype(int)
