"""Metrics of one model on one split: overall, per group (fairlearn MetricFrame), intervals.

Per group: accuracy, ROC AUC, selection rate, true- and false-positive rates, expected
calibration error and the row count, for each sensitive column and (optionally) their
intersection. Overall metrics and fairness gaps get bootstrap 95% intervals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, roc_auc_score

SUMMARY = (
    "accuracy",
    "roc_auc",
    "selection_rate",
    "dp_difference",
    "eo_difference",
    "eopp_difference",
)


def auc(y_true: np.ndarray, score: np.ndarray) -> float:
    # A group with a single class has no ROC AUC; NaN is reported, not an error.
    return float(roc_auc_score(y_true, score)) if len(np.unique(y_true)) == 2 else float("nan")


def expected_calibration_error(y_true: np.ndarray, score: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width probability bins, weighted by bin size."""
    y_true, score = np.asarray(y_true), np.asarray(score)
    if len(y_true) == 0:
        return float("nan")
    edges = np.minimum((score * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(edges):
        rows = edges == b
        total += rows.sum() * abs(float(y_true[rows].mean()) - float(score[rows].mean()))
    return total / len(y_true)


def _summary(y: np.ndarray, score: np.ndarray, predicted: np.ndarray, groups: np.ndarray) -> dict:
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "roc_auc": auc(y, score),
        "selection_rate": float(predicted.mean()),
        "dp_difference": float(
            demographic_parity_difference(y, predicted, sensitive_features=groups)
        ),
        "eo_difference": float(equalized_odds_difference(y, predicted, sensitive_features=groups)),
        "eopp_difference": float(
            equal_opportunity_difference(y, predicted, sensitive_features=groups)
        ),
    }


def _group_table(
    y: np.ndarray, score: np.ndarray, predicted: np.ndarray, groups: np.ndarray
) -> dict:
    frame = MetricFrame(
        metrics={
            "accuracy": accuracy_score, "selection_rate": selection_rate,
            "tpr": true_positive_rate, "fpr": false_positive_rate, "count": count,
        },
        y_true=y, y_pred=predicted, sensitive_features=groups,
    )  # fmt: skip
    scored = MetricFrame(
        metrics={"roc_auc": auc, "ece": expected_calibration_error},
        y_true=y, y_pred=score, sensitive_features=groups,
    )  # fmt: skip
    table = frame.by_group.join(scored.by_group)
    return {str(g): {k: float(v) for k, v in row.items()} for g, row in table.iterrows()}


def _rate_gap(hit: np.ndarray, codes: np.ndarray, mask: np.ndarray, n_groups: int) -> float:
    total = np.bincount(codes[mask], minlength=n_groups)
    hits = np.bincount(codes[mask], weights=hit[mask], minlength=n_groups)
    rates = hits[total > 0] / total[total > 0]
    return float(rates.max() - rates.min()) if len(rates) else 0.0


def _fast_summary(
    y: np.ndarray, score: np.ndarray, predicted: np.ndarray, codes: np.ndarray
) -> dict:
    """The same numbers as ``_summary`` with bincounts (fast enough to bootstrap)."""
    n_groups = int(codes.max()) + 1
    everyone = np.ones(len(y), dtype=bool)
    tpr_gap = _rate_gap(predicted, codes, y == 1, n_groups)
    fpr_gap = _rate_gap(predicted, codes, y == 0, n_groups)
    return {
        "accuracy": float(np.mean(predicted == y)),
        "roc_auc": auc(y, score),
        "selection_rate": float(predicted.mean()),
        "dp_difference": _rate_gap(predicted, codes, everyone, n_groups),
        "eo_difference": max(tpr_gap, fpr_gap),
        "eopp_difference": tpr_gap,
    }


def bootstrap_intervals(
    y: np.ndarray,
    score: np.ndarray,
    threshold: float,
    groups: np.ndarray,
    resamples: int,
    seed: int,
) -> dict[str, list[float]]:
    """Percentile 95% intervals of the summary metrics over row resamples."""
    if resamples == 0:
        return {}
    rng = np.random.default_rng(seed)
    _, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    draws: dict[str, list[float]] = {k: [] for k in SUMMARY}
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        values = _fast_summary(
            y[rows], score[rows], (score[rows] >= threshold).astype(int), codes[rows]
        )
        for k, v in values.items():
            draws[k].append(v)
    return {
        k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]
        for k, v in draws.items()
    }


def model_metrics(
    y: np.ndarray, score: np.ndarray, threshold: float, groups: dict[str, np.ndarray],
    *, intersections: bool = False, resamples: int = 0, seed: int = 0,
    predicted: np.ndarray | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Overall metrics with gaps for the first group column, and per-group tables for each.

    ``predicted`` overrides thresholding (for randomized post-processing).
    """
    predicted = (score >= threshold).astype(int) if predicted is None else predicted
    first = next(iter(groups.values()))
    result: dict[str, Any] = _summary(y, score, predicted, first)
    result["by_group"] = {}
    result["gaps"] = {}
    tables = dict(groups)
    if intersections and len(groups) > 1:
        tables[" x ".join(groups)] = np.array(
            [" | ".join(parts) for parts in zip(*groups.values(), strict=True)]
        )
    for column, values in tables.items():
        result["by_group"][column] = _group_table(y, score, predicted, values)
        result["gaps"][column] = {
            k: v
            for k, v in _summary(y, score, predicted, values).items()
            if k.endswith("difference")
        }
    result["intervals"] = bootstrap_intervals(y, score, threshold, first, resamples, seed)
    return result
