"""Binned weight-of-evidence logistic regression: a low-variance additive model for few labels.

Each raw column becomes one feature, the log-odds of the label in the column's bin
(weight of evidence, as in a naive Bayes model or a credit scorecard); a logistic
regression then weighs the columns. Numeric columns are cut at quantiles of all the
training rows (no labels needed), values that fill a bin on their own (the zeros of a
capital-gain column, a 40-hour week) keep their own bin, and neighbouring bins share
counts; categorical columns (one-hot groups of the encoded matrix) use their levels.

With a few hundred labels this has about one parameter per column yet bends with each
numeric column (age, hours) where a linear model on standardized values cannot. The
evidence the regression is fitted on is cross-fitted: each labeled row's evidence comes
from the other folds, so the weights are not learned on evidence that saw the row.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold


class _Column:
    """How one raw column maps rows to bins; ``ordered`` bins are smoothed with neighbours."""

    def __init__(self, features: list[int], atoms: np.ndarray, edges: np.ndarray) -> None:
        self.features, self.atoms, self.edges = features, atoms, edges

    @property
    def numeric(self) -> bool:
        return len(self.features) == 1

    @property
    def n_bins(self) -> int:
        if self.numeric:
            return len(self.atoms) + len(self.edges) + 1
        return len(self.features) + 1  # the last: no level set

    def codes(self, x: np.ndarray) -> np.ndarray:
        if not self.numeric:
            block = x[:, self.features]
            return np.where(block.max(1) > 0.5, block.argmax(1), len(self.features))
        values = x[:, self.features[0]]
        codes = len(self.atoms) + np.searchsorted(self.edges, values, side="right")
        if len(self.atoms):
            at = np.clip(np.searchsorted(self.atoms, values), 0, len(self.atoms) - 1)
            hit = self.atoms[at] == values
            codes = np.where(hit, at, codes)
        return codes


def _numeric(feature: int, values: np.ndarray, n_bins: int) -> _Column:
    unique, counts = np.unique(values, return_counts=True)
    atoms = unique[counts >= len(values) / n_bins]
    rest = values[~np.isin(values, atoms)]
    quantiles = np.linspace(0, 1, n_bins + 1)[1:-1]
    edges = np.unique(np.quantile(rest, quantiles)) if len(rest) else np.empty(0)
    return _Column([feature], atoms, edges)


class BinnedEvidenceLogisticRegression(ClassifierMixin, BaseEstimator):
    """Logistic regression on cross-fitted per-column weight-of-evidence features.

    ``column_of`` gives, for each feature of the encoded matrix, the raw column it came
    from; the first ``n_numeric`` features are numeric columns (one feature each), the rest
    one-hot groups (``TabularEncoding.column_of`` is this layout). ``fit`` takes the labeled
    rows and, optionally, ``X_unlabeled``: rows whose feature values (not labels) place the
    bin edges. Binary labels only.
    """

    def __init__(
        self, *, column_of: Sequence[int], n_numeric: int, n_bins: int = 7, alpha: float = 1.0,
        smooth: bool = True, C: float = 1.0, cv: int = 5, random_state: int = 0,
    ) -> None:  # fmt: skip
        self.column_of = column_of
        self.n_numeric = n_numeric
        self.n_bins = n_bins
        self.alpha = alpha
        self.smooth = smooth
        self.C = C
        self.cv = cv
        self.random_state = random_state

    def _layout(self, reference: np.ndarray) -> list[_Column]:
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {self.n_bins}")
        column_of = np.asarray(self.column_of)
        if len(column_of) != reference.shape[1]:
            raise ValueError(
                f"column_of names {len(column_of)} features, the matrix has {reference.shape[1]}"
            )
        columns = [_numeric(j, reference[:, j], self.n_bins) for j in range(self.n_numeric)]
        for source in dict.fromkeys(column_of[self.n_numeric :].tolist()):
            features = np.flatnonzero(column_of == source).tolist()
            columns.append(_Column(features, np.empty(0), np.empty(0)))
        return columns

    def _tables(self, codes: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        """Per column: the smoothed log-odds of the positive class in each bin."""
        prior = float(np.mean(y))
        tables = []
        for c, column in enumerate(self.columns_):
            k = column.n_bins
            pos = np.bincount(codes[:, c], weights=y, minlength=k) + 2 * self.alpha * prior
            neg = np.bincount(codes[:, c], weights=1 - y, minlength=k) + 2 * self.alpha * (
                1 - prior
            )
            if self.smooth and column.numeric and len(column.edges):
                start = len(column.atoms)
                for counts in (pos, neg):
                    padded = np.pad(counts[start:], 1, mode="edge")
                    counts[start:] = np.convolve(padded, [0.25, 0.5, 0.25], mode="valid")
            tables.append(np.log(pos / pos.sum()) - np.log(neg / neg.sum()))
        return tables

    def _evidence(self, codes: np.ndarray, tables: list[np.ndarray]) -> np.ndarray:
        return np.stack([t[codes[:, c]] for c, t in enumerate(tables)], axis=1)

    def _codes(self, x: np.ndarray) -> np.ndarray:
        return np.stack([column.codes(x) for column in self.columns_], axis=1)

    def fit(
        self, X: np.ndarray, y: np.ndarray, X_unlabeled: np.ndarray | None = None
    ) -> BinnedEvidenceLogisticRegression:
        x = np.asarray(X, dtype=np.float64)
        self.classes_, target = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) != 2:
            raise ValueError(f"binary labels expected, got {len(self.classes_)} classes")
        reference = x if X_unlabeled is None else np.asarray(X_unlabeled, dtype=np.float64)
        self.columns_ = self._layout(reference)
        codes, yf = self._codes(x), target.astype(np.float64)
        folds = min(self.cv, int(np.bincount(target).min()))
        if folds >= 2:
            evidence = np.empty((len(x), len(self.columns_)))
            split = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
            for fit_rows, held_out in split.split(x, target):
                tables = self._tables(codes[fit_rows], yf[fit_rows])
                evidence[held_out] = self._evidence(codes[held_out], tables)
        else:
            evidence = self._evidence(codes, self._tables(codes, yf))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.regression_ = LogisticRegression(C=self.C, max_iter=5000).fit(evidence, target)
        self.tables_ = self._tables(codes, yf)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The weight-of-evidence features (one per raw column) of ``X``."""
        return self._evidence(self._codes(np.asarray(X, dtype=np.float64)), self.tables_)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.regression_.decision_function(self.transform(X)))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1 - p, p], axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes_[(self.decision_function(X) > 0).astype(int)])
