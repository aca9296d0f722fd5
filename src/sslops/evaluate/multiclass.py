"""Metrics of a K-class model (images, series) on one split: overall, per group, intervals.

Fairness gaps for K classes, each in [0, 1]; when K = 2 (class index 1 is then the
positive class: ``data.positive`` when set, else the second label in sorted order; prepare
orders ``schema["classes"]`` so) they are the tabular gaps of
:func:`sslops.gaps.rate_gaps`, and so fairlearn's where every group has both classes. A
rate is taken over the groups where it is defined: a group without rows of class c has
no true-positive rate for c (none outside c, no false-positive rate) and is left out of
that difference; with fewer than two groups where it is defined that class's difference
is undefined and left out of the largest. A gap with no class's difference defined (one
group in the test split, say) is undefined: NaN (null in metrics.json, "undefined" in
metrics.md, n/a on the model card, a failed gate; :func:`class_gap_notes` says why), as
the tabular gaps are, never 0, which read as a measured absence of a gap.

- ``dp_difference``: the largest, over classes c, between-group difference of
  P(predicted = c);
- ``eo_difference``: the largest, over classes c, of the larger of the between-group
  differences of the one-vs-rest true-positive rate P(pred = c | y = c) and
  false-positive rate P(pred = c | y != c);
- ``eopp_difference``: the same with the true-positive rate only (K = 2: class 1 only);
- ``accuracy_parity_difference``: best minus worst group accuracy.

ROC AUC is macro one-vs-rest over the classes present in the rows (with K = 2, the AUC
of class 1's probability); ECE is the top-label expected calibration error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from sslops.evaluate.metrics import expected_calibration_error, percentile_bounds
from sslops.gaps import gap_notes

SUMMARY = (
    "accuracy",
    "roc_auc",
    "ece",
    "dp_difference",
    "eo_difference",
    "eopp_difference",
    "accuracy_parity_difference",
)
GAP_OF = {
    "demographic_parity": "dp_difference",
    "equalized_odds": "eo_difference",
    "equal_opportunity": "eopp_difference",
}


def macro_auc(y: np.ndarray, proba: np.ndarray) -> float:
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1])) if len(np.unique(y)) == 2 else float("nan")
    scores = [
        roc_auc_score(y == c, proba[:, c])
        for c in range(proba.shape[1])
        if 0 < np.sum(y == c) < len(y)
    ]
    return float(np.mean(scores)) if scores else float("nan")


def top_label_ece(y: np.ndarray, proba: np.ndarray) -> float:
    predicted = proba.argmax(1)
    return expected_calibration_error((predicted == y).astype(float), proba.max(1))


def _spread(rates: list[float]) -> float:
    return float(max(rates) - min(rates)) if len(rates) > 1 else math.nan


def _larger(*values: float) -> float:
    """The largest defined value; NaN when none is."""
    return float(np.fmax.reduce(np.asarray(values, dtype=float)))


def class_gaps(
    y: np.ndarray, predicted: np.ndarray, groups: np.ndarray, k: int
) -> dict[str, float]:
    """dp / eo / eopp / accuracy-parity differences between the groups (see the module doc);
    NaN where undefined."""
    levels = [groups == g for g in np.unique(groups)]
    dp, eo, eopp = math.nan, math.nan, math.nan
    for c in range(k):
        hit = predicted == c
        dp = _larger(dp, _spread([hit[m].mean() for m in levels if m.any()]))
        tpr = _spread([hit[m & (y == c)].mean() for m in levels if (m & (y == c)).any()])
        fpr = _spread([hit[m & (y != c)].mean() for m in levels if (m & (y != c)).any()])
        eo = _larger(eo, tpr, fpr)
        if k > 2 or c == 1:
            eopp = _larger(eopp, tpr)
    accuracy = [float(np.mean(predicted[m] == y[m])) for m in levels if m.any()]
    return {
        "dp_difference": dp,
        "eo_difference": eo,
        "eopp_difference": eopp,
        "accuracy_parity_difference": _spread(accuracy),
    }


# Each gap of class_gaps: its name and the rates it compares, for class_gap_notes.
_GAP_NAMES = {
    "dp_difference": ("demographic-parity difference", "selection rates"),
    "eo_difference": ("equalized-odds difference", "true- and false-positive rates"),
    "eopp_difference": ("equal-opportunity difference", "true-positive rates"),
    "accuracy_parity_difference": ("accuracy-parity difference", "accuracies"),
}


def class_gap_notes(y: np.ndarray, groups: np.ndarray, k: int) -> dict[str, str]:
    """Why a gap of :func:`class_gaps` is undefined, keyed as class_gaps; empty when every
    one is defined. Two classes: :func:`sslops.gaps.gap_notes` (class 1 positive), which
    also notes an equalized-odds difference that is one of its halves alone."""
    y, values = np.asarray(y), np.asarray(groups, dtype=str)
    found = sorted(set(values.tolist()))
    if len(found) < 2:
        which = f"only {found[0]!r} has rows" if found else "none has rows"
        return {key: f"{name} undefined: it compares the groups' {rates}, and of the groups "
                f"compared {which}" for key, (name, rates) in _GAP_NAMES.items()}  # fmt: skip
    if k == 2:
        return gap_notes(y, values)
    if any(len(set(values[y == c].tolist())) > 1 for c in range(k)):
        return {}
    return {"eopp_difference": "equal-opportunity difference undefined: it compares the "
            "groups' true-positive rates of a class, and no class has rows in two groups or "
            "more of those compared"}  # fmt: skip


def summary(y: np.ndarray, proba: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    predicted = proba.argmax(1)
    return {
        "accuracy": float(np.mean(predicted == y)),
        "roc_auc": macro_auc(y, proba),
        "ece": top_label_ece(y, proba),
        **class_gaps(y, predicted, groups, proba.shape[1]),
    }


def group_table(y: np.ndarray, proba: np.ndarray, groups: np.ndarray) -> dict[str, dict]:
    predicted = proba.argmax(1)
    table = {}
    for g in np.unique(groups):
        m = groups == g
        row = {
            "count": float(m.sum()),
            "accuracy": float(np.mean(predicted[m] == y[m])),
            "roc_auc": macro_auc(y[m], proba[m]),
            "ece": top_label_ece(y[m], proba[m]),
        }
        if proba.shape[1] == 2:
            row["selection_rate"] = float(np.mean(predicted[m] == 1))
        table[str(g)] = row
    return table


def bootstrap(
    y: np.ndarray, proba: np.ndarray, groups: np.ndarray, resamples: int, seed: int
) -> dict[str, list[float]]:
    """Percentile 95% intervals of the summary over row resamples."""
    if resamples == 0:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in SUMMARY}
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        for k, v in summary(y[rows], proba[rows], groups[rows]).items():
            draws[k].append(v)
    return {k: percentile_bounds(v) for k, v in draws.items()}


def group_intervals(
    y: np.ndarray, proba: np.ndarray, groups: np.ndarray, resamples: int, seed: int
) -> dict[str, dict[str, list[float]]]:
    """Percentile 95% intervals of each group's table row (but its count) over the resamples
    of :func:`bootstrap` with the same seed; draws where a value is undefined are left out,
    and a value undefined in more than 5% of its draws has no interval (NaN)."""
    rng = np.random.default_rng(seed)
    draws: dict[str, dict[str, list[float]]] = {}
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        for g, row in group_table(y[rows], proba[rows], groups[rows]).items():
            for k, v in row.items():
                if k != "count":
                    draws.setdefault(g, {}).setdefault(k, []).append(v)
    return {
        str(g): {k: percentile_bounds(v) for k, v in draws[str(g)].items()}
        for g in np.unique(groups)
        if str(g) in draws
    }


def multiclass_metrics(
    y: np.ndarray, proba: np.ndarray, groups: dict[str, np.ndarray], *, resamples: int = 0,
    seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Overall metrics with gaps for the first group attribute, and per-group tables for each."""
    first = next(iter(groups.values()))
    result: dict[str, Any] = summary(y, proba, first)
    if proba.shape[1] == 2:
        result["selection_rate"] = float(np.mean(proba.argmax(1) == 1))
    result["by_group"] = {name: group_table(y, proba, g) for name, g in groups.items()}
    result["gaps"] = {
        name: class_gaps(y, proba.argmax(1), g, proba.shape[1]) for name, g in groups.items()
    }
    notes = {name: class_gap_notes(y, g, proba.shape[1]) for name, g in groups.items()}
    if any(notes.values()):  # as the tabular metrics: column -> gap -> why
        result["gap_notes"] = {name: n for name, n in notes.items() if n}
    result["worst_group_accuracy"] = min(
        r["accuracy"] for r in result["by_group"][next(iter(groups))].values()
    )
    result["intervals"] = bootstrap(y, proba, first, resamples, seed)
    if resamples:
        result["group_intervals"] = {
            name: group_intervals(y, proba, g, resamples, seed) for name, g in groups.items()
        }
    return result
