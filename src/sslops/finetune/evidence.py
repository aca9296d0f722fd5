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
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.utils import Tags
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from sslops.finetune._sklearn import binary_target
from sslops.finetune.crossfit import CrossFit
from sslops.models.tabular import MLPEncoder
from sslops.models.trees import BoostedStackClassifier


def _tolerance(value: np.ndarray | float) -> np.ndarray:
    """How far a value may move under float32 re-standardization (the ONNX graph's) and still
    count as itself: about 1e-6, relative; far below the spacing of distinct values in data."""
    return np.maximum(np.abs(value), 1.0) * 2.0**-20


class _Column:
    """How one raw column maps rows to bins.

    Categorical: the level set in its one-hot block (the last bin: none set). Numeric: the
    atoms first (a value within ``_tolerance`` of an atom takes its bin), then the intervals
    cut by ``edges``, which sit midway between distinct training values so no value of the
    data lies on one.
    """

    def __init__(self, features: list[int], atoms: np.ndarray, edges: np.ndarray) -> None:
        self.features, self.atoms, self.edges = features, atoms, edges

    @property
    def numeric(self) -> bool:
        return len(self.features) == 1

    @property
    def n_bins(self) -> int:
        if self.numeric:
            return len(self.atoms) + len(self.edges) + 1
        return len(self.features) + 1

    def codes(self, x: np.ndarray) -> np.ndarray:
        if not self.numeric:
            block = x[:, self.features]
            return np.where(block.max(1) > 0.5, block.argmax(1), len(self.features))
        values = x[:, self.features[0]]
        codes = len(self.atoms) + np.searchsorted(self.edges, values, side="left")
        for i, atom in enumerate(self.atoms):
            codes = np.where(np.abs(values - atom) <= _tolerance(atom), i, codes)
        return codes


def _numeric(feature: int, values: np.ndarray, n_bins: int) -> _Column:
    unique, counts = np.unique(values, return_counts=True)
    atoms = unique[counts >= len(values) / n_bins]
    rest = values[~np.isin(values, atoms)]
    quantiles = np.linspace(0, 1, n_bins + 1)[1:-1]
    cuts = np.unique(np.quantile(rest, quantiles)) if len(rest) else np.empty(0)
    # each cut moves to the midpoint below the first value at or above it
    at = np.searchsorted(unique, cuts, side="left")
    inside = (at > 0) & (at < len(unique))
    edges = np.unique((unique[at[inside] - 1] + unique[at[inside]]) / 2)
    return _Column([feature], atoms, edges)


class BinnedEvidenceLogisticRegression(ClassifierMixin, TransformerMixin, BaseEstimator):
    """Logistic regression on cross-fitted per-column weight-of-evidence features.

    ``column_of`` gives, for each feature of the encoded matrix, the raw column it came
    from; the first ``n_numeric`` features are numeric columns (one feature each), the rest
    one-hot groups (``TabularEncoding.column_of`` is this layout). Left at ``None``, every
    feature is a numeric column of its own. ``fit`` takes the labeled rows and, optionally,
    ``X_unlabeled``: rows whose feature values (not labels) place the bin edges. Binary
    labels only, of any type: ``classes_`` holds the two, and ``decision_function`` /
    ``predict_proba[:, 1]`` score ``classes_[1]``. ``X`` may not hold NaN or inf (the
    tabular encoding imputes missing values before).
    """

    def __init__(
        self, *, column_of: Sequence[int] | None = None, n_numeric: int | None = None,
        n_bins: int = 7, alpha: float = 1.0, smooth: bool = True, C: float = 1.0, cv: int = 5,
        random_state: int = 0,
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
        n_features = reference.shape[1]
        column_of = np.arange(n_features) if self.column_of is None else np.asarray(self.column_of)
        if len(column_of) != n_features:
            raise ValueError(
                f"column_of names {len(column_of)} features, the matrix has {n_features}"
            )
        n_numeric = len(column_of) if self.n_numeric is None else self.n_numeric
        columns = [_numeric(j, reference[:, j], self.n_bins) for j in range(n_numeric)]
        for source in dict.fromkeys(column_of[n_numeric:].tolist()):
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

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        assert tags.classifier_tags is not None
        tags.classifier_tags.multi_class = False  # binary labels only
        return tags

    def fit(self, X: Any, y: Any, X_unlabeled: Any = None) -> BinnedEvidenceLogisticRegression:
        x, y = validate_data(self, X, y, dtype=np.float64)
        target = binary_target(self, y)
        reference = x
        if X_unlabeled is not None:
            reference = check_array(X_unlabeled, dtype=np.float64, input_name="X_unlabeled")
            if reference.shape[1] != x.shape[1]:
                raise ValueError(
                    f"X_unlabeled has {reference.shape[1]} features; expected {x.shape[1]}, as X"
                )
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

    def transform(self, X: Any) -> np.ndarray:
        """The weight-of-evidence features (one per raw column) of ``X``."""
        check_is_fitted(self, "tables_")
        x = validate_data(self, X, dtype=np.float64, reset=False)
        return self._evidence(self._codes(x), self.tables_)

    def decision_function(self, X: Any) -> np.ndarray:
        """Log-odds of ``classes_[1]``."""
        evidence = self.transform(X)  # NotFittedError before fit
        return np.asarray(self.regression_.decision_function(evidence))

    def predict_proba(self, X: Any) -> np.ndarray:
        p = expit(self.decision_function(X))
        return np.stack([1 - p, p], axis=1)

    def predict(self, X: Any) -> np.ndarray:
        positive = self.decision_function(X) > 0
        return np.asarray(self.classes_[positive.astype(int)])

    def additive_parts(self) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
        """The decision function as ``X @ coef + stumps(X) + constant``: ``(coef, stump node
        tables, constant)``.

        A categorical column's evidence is linear in its one-hot block; a numeric column's is
        a step function: one stump (a depth-1 tree, ``x > threshold`` adds its value) per
        interval edge, and two per atom (up at just below it, back down at just above).
        The tables are :func:`sslops.models.trees.tree_tables`' layout.
        """
        coef, stumps, constant = self._parts()
        return coef, _stump_tables(stumps), constant

    def as_stumps(self) -> tuple[dict[str, np.ndarray], float]:
        """The whole decision function as ``stumps(X) + constant``: as :meth:`additive_parts`,
        with each one-hot feature's (0 or 1) linear term as one more stump, at 0.5."""
        coef, stumps, constant = self._parts()
        stumps += [(int(f), 0.5, float(coef[f])) for f in np.flatnonzero(coef)]
        return _stump_tables(stumps), constant

    def _parts(self) -> tuple[np.ndarray, list[tuple[int, float, float]], float]:
        check_is_fitted(self, "tables_")
        weights = self.regression_.coef_[0]
        coef = np.zeros(self.n_features_in_)
        constant = float(self.regression_.intercept_[0])
        stumps: list[tuple[int, float, float]] = []  # (feature, threshold, value above)
        for column, table, w in zip(self.columns_, self.tables_, weights, strict=True):
            if not column.numeric:
                none = table[len(column.features)]
                constant += w * none
                coef[column.features] += w * (table[: len(column.features)] - none)
                continue
            feature, start = column.features[0], len(column.atoms)
            constant += w * table[start]
            for k, edge in enumerate(column.edges):
                stumps.append((feature, edge, w * (table[start + k + 1] - table[start + k])))
            for i, atom in enumerate(column.atoms):
                interval = table[start + np.searchsorted(column.edges, atom, side="left")]
                step = w * (table[i] - interval)
                stumps.append((feature, atom - _tolerance(atom), step))
                stumps.append((feature, atom + _tolerance(atom), -step))
        return coef, stumps, constant


def _stump_tables(stumps: list[tuple[int, float, float]]) -> dict[str, np.ndarray]:
    """Node tables of depth-1 trees, one per ``(feature, threshold, value above)``."""
    stumps = stumps or [(0, np.inf, 0.0)]  # nothing to add: one stump that adds nothing
    n = len(stumps)
    return {
        "feature": np.array([[f, 0, 0] for f, _, _ in stumps], np.int64),
        "threshold": np.array([[t, np.inf, np.inf] for _, t, _ in stumps], np.float32),
        "left": np.tile(np.array([1, 1, 2], np.int64), (n, 1)),
        "right": np.tile(np.array([2, 1, 2], np.int64), (n, 1)),
        "value": np.array([[0.0, 0.0, v] for _, _, v in stumps], np.float32),
    }


class CrossFittedEvidenceScore(TransformerMixin, BaseEstimator):
    """The evidence head's log-odds as one column; out-of-fold in ``fit_transform``.

    The counterpart of :class:`sslops.finetune.boosting.CrossFittedBoostingScore` for the
    stacked fairness heads: each labeled row is scored by a head fitted on the other folds,
    new rows by the head fitted on all of them, whose :meth:`stack_trees` are its stumps.
    With few labels it is the stronger score (the head needs about one weight per column).

    ``column_of`` / ``n_numeric`` are :class:`BinnedEvidenceLogisticRegression`'s (``None``:
    every feature numeric). ``fit_transform`` differs from ``fit(...).transform`` by design
    (out-of-fold versus full-head scores), as scikit-learn's ``TargetEncoder``. Binary labels
    only; ``classes_`` holds them, and the score is the log-odds of ``classes_[1]``.
    """

    def __init__(
        self, *, column_of: Sequence[int] | None = None, n_numeric: int | None = None,
        folds: int = 5, random_state: int = 0,
    ) -> None:  # fmt: skip
        self.column_of = column_of
        self.n_numeric = n_numeric
        self.folds = folds
        self.random_state = random_state

    def _head(self) -> BinnedEvidenceLogisticRegression:
        return BinnedEvidenceLogisticRegression(
            column_of=self.column_of, n_numeric=self.n_numeric, random_state=self.random_state
        )

    def fit(self, X: Any, y: Any, X_unlabeled: Any = None) -> CrossFittedEvidenceScore:
        self.fit_transform(X, y, X_unlabeled=X_unlabeled)
        return self

    def fit_transform(self, X: Any, y: Any, X_unlabeled: Any = None) -> np.ndarray:
        """Out-of-fold log-odds of the labeled ``X``; ``X_unlabeled`` (features only) joins
        ``X`` in placing the bin edges, for every fold alike."""
        x, target = validate_data(self, X, y, dtype=np.float64)
        binary_target(self, target)  # classes_, or a ValueError for other than two classes
        reference = x
        if X_unlabeled is not None:
            reference = check_array(X_unlabeled, dtype=np.float64, input_name="X_unlabeled")
        try:
            folds = CrossFit(target, self.folds, self.random_state)
        except ValueError:
            raise ValueError(
                "CrossFittedEvidenceScore needs at least 2 rows of each class"
            ) from None
        out_of_fold = folds.decision(
            lambda _, rows: self._head().fit(x[rows], target[rows], X_unlabeled=reference), x
        )
        self.head_ = self._head().fit(x, target, X_unlabeled=reference)
        return out_of_fold[:, None]

    def transform(self, X: Any) -> np.ndarray:
        """Log-odds of ``X`` by the head fitted on every labeled row."""
        check_is_fitted(self, "head_")
        x = validate_data(self, X, dtype=np.float64, reset=False)
        return self.head_.decision_function(x)[:, None]

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "head_")
        return np.array(["evidence_log_odds"], dtype=object)

    def stack_trees(self) -> dict[str, Any]:
        """The fitted head as :meth:`BoostedStackClassifier.from_tables` takes its trees."""
        check_is_fitted(self, "head_")
        tables, constant = self.head_.as_stumps()
        return {"tables": tables, "depth": 1, "n_inputs": self.n_features_in_,
                "baseline": constant}  # fmt: skip


def ensemble_classifier(
    encoder: MLPEncoder, shift: np.ndarray, scale: np.ndarray, joint_coef: np.ndarray,
    joint_intercept: float, evidence: BinnedEvidenceLogisticRegression,
) -> BoostedStackClassifier:  # fmt: skip
    """The SSL ensemble as one exportable classifier: the mean of the joint probe's logit
    (``joint_coef`` over ``[x | (encoder(x) - shift) / scale]``) and the evidence head's.

    The head of a :class:`BoostedStackClassifier` sees ``[x | encoder(x) | stumps(x)]``:
    the joint probe and the evidence head's categorical part are linear in it, its numeric
    part is the stumps' sum.
    """
    coef_x, tables, constant = evidence.additive_parts()
    n_inputs = len(coef_x)
    coef = np.concatenate([
        0.5 * (joint_coef[:n_inputs] + coef_x), 0.5 * joint_coef[n_inputs:], [0.5],
    ])  # fmt: skip
    stack_shift = np.concatenate([np.zeros(n_inputs), np.asarray(shift), [0.0]])
    stack_scale = np.concatenate([np.ones(n_inputs), np.asarray(scale), [1.0]])
    return BoostedStackClassifier.from_tables(
        tables, 1, n_inputs, 0.0, coef, 0.5 * (joint_intercept + constant), encoder=encoder,
        shift=stack_shift, scale=stack_scale,
    )  # fmt: skip
