"""The evaluate stage's metrics of one model, recomputed with numpy and scikit-learn only.

A second implementation for ``sslops audit reproduce``: it must run where fairlearn,
torch and the rest of sslops' training stack are not installed, and it must not
share code with :mod:`sslops.evaluate.metrics`, so that a bug there would show up as a
disagreement rather than be repeated. It reproduces the same definitions:

- overall: accuracy, ROC AUC, selection rate and, across the groups of the first
  sensitive column, the demographic-parity difference (selection rates), the
  equalized-odds difference (the larger of the TPR and FPR differences) and the
  equal-opportunity difference (TPR), each the largest minus the smallest rate over the
  groups of at least ``min_group_rows`` rows (of the split) where it is defined: a group without positives has no TPR and one without
  negatives no FPR, and is left out of that difference (undefined, NaN, with fewer than
  two groups; equalized odds is the defined one of its two differences);
- per group of each sensitive column (and their intersection when configured):
  rows, accuracy, selection rate, TPR and FPR (NaN where undefined, as above), ROC AUC
  (undefined with one class) and the expected calibration error over ten equal-width bins;
- the bootstrap 95% intervals of the overall numbers, of each column's gaps and of each
  group's table row (groups of at least ``min_group_rows`` rows): the same row draws
  (numpy's default generator seeded with the config's seed), every number as above over
  the rows of the draw; a draw where a number is undefined (NaN) is left out of its
  interval, and an interval is undefined when its number is in fewer than 95% of the
  draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

_BINS = 10


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    if len(np.unique(y)) < 2:  # one class (all positive too: min(initial=0) missed that)
        return float("nan")
    return float(roc_auc_score(y, score))


def _rate(hits: np.ndarray, rows: np.ndarray) -> float:
    """Mean of ``hits`` over ``rows`` (a mask); NaN (undefined) for no rows."""
    n = int(rows.sum())
    return float(hits[rows].sum() / n) if n else float("nan")


def _calibration_error(y: np.ndarray, score: np.ndarray) -> float:
    if len(y) == 0:
        return float("nan")
    bins = np.minimum(np.floor(score * _BINS).astype(int), _BINS - 1)
    gaps = [
        abs(float(y[bins == b].mean()) - float(score[bins == b].mean())) * int((bins == b).sum())
        for b in np.unique(bins)
    ]
    return float(sum(gaps) / len(y))


def group_rates(y: np.ndarray, score: np.ndarray, label: np.ndarray, rows: np.ndarray) -> dict:
    """One group's table row."""
    yg, sg, lg = y[rows], score[rows], label[rows]
    return {
        "accuracy": float(np.mean(lg == yg)) if len(yg) else float("nan"),
        "selection_rate": _rate(lg, np.ones(len(lg), dtype=bool)),
        "tpr": _rate(lg, yg == 1),
        "fpr": _rate(lg, yg == 0),
        "count": float(len(yg)),
        "roc_auc": _auc(yg, sg),
        "ece": _calibration_error(yg, sg),
    }


def _spread(values: list[float]) -> float:
    """Largest minus smallest of the defined (non-NaN) values; NaN (undefined) with fewer
    than two."""
    defined = [v for v in values if v == v]
    return max(defined) - min(defined) if len(defined) > 1 else float("nan")


def _bounds(draws: list[float]) -> list[float]:
    """A 95% interval: the 2.5th and 97.5th percentiles of the draws where the number is
    defined, when it is in at least 95% of them; else undefined (NaN), not an interval
    narrower than the rows support (a group's TPR on one positive row: [1.0, 1.0])."""
    defined = [v for v in draws if v == v]
    if not defined or len(defined) < 0.95 * len(draws):
        return [float("nan"), float("nan")]
    return [float(np.percentile(defined, 2.5)), float(np.percentile(defined, 97.5))]


def fairness_gaps(
    y: np.ndarray, label: np.ndarray, groups: np.ndarray, left_out: frozenset[str] = frozenset()
) -> dict[str, float]:
    """The gaps over the groups of ``groups`` but those ``left_out`` (too small: the groups of
    fewer than ``min_group_rows`` rows of the whole split, not of a resample)."""
    sel, tpr, fpr = [], [], []
    for g in np.unique(groups):
        if str(g) in left_out:
            continue
        rows = groups == g
        sel.append(_rate(label, rows))
        tpr.append(_rate(label, rows & (y == 1)))
        fpr.append(_rate(label, rows & (y == 0)))
    return {
        "dp_difference": _spread(sel),
        "eo_difference": float(np.fmax(_spread(tpr), _spread(fpr))),  # the defined one
        "eopp_difference": _spread(tpr),
    }


def _too_small(groups: np.ndarray, min_group_rows: int) -> frozenset[str]:
    names, counts = np.unique(groups, return_counts=True)
    return frozenset(str(g) for g, n in zip(names, counts, strict=True) if n < min_group_rows)


def bootstrap(
    y: np.ndarray, score: np.ndarray, threshold: float, groups: np.ndarray, resamples: int,
    seed: int, left_out: frozenset[str] = frozenset(),
) -> dict[str, list[float]]:  # fmt: skip
    if resamples == 0:
        return {}
    rng = np.random.default_rng(seed)
    names = ("accuracy", "roc_auc", "selection_rate", "dp_difference", "eo_difference",
             "eopp_difference")  # fmt: skip
    draws: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        yr, sr, gr = y[rows], score[rows], groups[rows]
        label = (sr >= threshold).astype(int)
        draws["accuracy"].append(float(np.mean(label == yr)))
        draws["roc_auc"].append(_auc(yr, sr))
        draws["selection_rate"].append(float(label.mean()))
        for k, v in fairness_gaps(yr, label, gr, left_out).items():
            draws[k].append(v)
    return {k: _bounds(v) for k, v in draws.items()}


def gap_bootstrap(
    y: np.ndarray, label: np.ndarray, groups: np.ndarray, resamples: int, seed: int,
    left_out: frozenset[str] = frozenset(),
) -> dict[str, list[float]]:  # fmt: skip
    """95% percentile intervals of one column's gaps; the resamples of :func:`bootstrap`."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        for k, v in fairness_gaps(y[rows], label[rows], groups[rows], left_out).items():
            draws.setdefault(k, []).append(v)
    return {k: _bounds(v) for k, v in draws.items()}


def group_bootstrap(
    y: np.ndarray, score: np.ndarray, label: np.ndarray, groups: np.ndarray, resamples: int,
    seed: int, min_group_rows: int,
) -> dict[str, dict[str, list[float]]]:  # fmt: skip
    """95% percentile intervals of each group's table row (but its count); the resamples of
    :func:`bootstrap`. Groups of fewer than ``min_group_rows`` rows get none."""
    shown = [g for g in np.unique(groups) if int((groups == g).sum()) >= min_group_rows]
    rng = np.random.default_rng(seed)
    draws: dict[str, dict[str, list[float]]] = {str(g): {} for g in shown}
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        yr, sr, lr, gr = y[rows], score[rows], label[rows], groups[rows]
        for g in shown:
            for k, v in group_rates(yr, sr, lr, gr == g).items():
                if k != "count":
                    draws[str(g)].setdefault(k, []).append(v)
    return {g: {k: _bounds(v) for k, v in row.items()} for g, row in draws.items()}


def remeasure(
    y: np.ndarray, score: np.ndarray, threshold: float, groups: dict[str, np.ndarray], *,
    intersections: bool, resamples: int, seed: int, min_group_rows: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """The evaluate stage's record of one model (see the module docstring); ``groups`` are
    the sensitive columns as strings, missing values already named."""
    score = np.asarray(score, dtype=np.float64)
    label = (score >= threshold).astype(int)
    first = next(iter(groups.values()))
    tables = dict(groups)
    if intersections and len(groups) > 1:
        tables[" x ".join(groups)] = np.array(
            [" | ".join(parts) for parts in zip(*groups.values(), strict=True)]
        )
    small = {column: _too_small(values, min_group_rows) for column, values in tables.items()}
    first_small = small[next(iter(groups))]
    result: dict[str, Any] = {
        "accuracy": float(np.mean(label == y)),
        "roc_auc": _auc(y, score),
        "selection_rate": float(label.mean()),
        **fairness_gaps(y, label, first, first_small),
    }
    result["by_group"] = {
        column: {str(g): group_rates(y, score, label, values == g) for g in np.unique(values)}
        for column, values in tables.items()
    }
    for table in result["by_group"].values():  # small groups: the count only (privacy)
        for row in table.values():
            if row["count"] < min_group_rows:
                row.update({k: float("nan") for k in row if k != "count"})
    result["gaps"] = {
        column: fairness_gaps(y, label, values, small[column]) for column, values in tables.items()
    }
    result["intervals"] = bootstrap(y, score, threshold, first, resamples, seed, first_small)
    if resamples:
        result["gap_intervals"] = {
            column: gap_bootstrap(y, label, values, resamples, seed, small[column])
            for column, values in tables.items()
        }
        result["group_intervals"] = {
            column: group_bootstrap(y, score, label, values, resamples, seed, min_group_rows)
            for column, values in tables.items()
        }
    negatives, positives = y == 0, y == 1
    result["confusion_matrix"] = [
        [int((negatives & (label == 0)).sum()), int((negatives & (label == 1)).sum())],
        [int((positives & (label == 0)).sum()), int((positives & (label == 1)).sum())],
    ]
    return result
