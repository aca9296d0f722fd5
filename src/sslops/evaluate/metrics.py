"""Metrics of one model on one split: overall, per group, intervals.

Per group: accuracy, ROC AUC, selection rate, true- and false-positive rates, expected
calibration error and the row count, for each sensitive column and (optionally) their
intersection. Overall metrics, fairness gaps and every per-group metric get bootstrap
95% intervals, all over the same row resamples (a draw where a group has no rows, or a rate
no rows to be taken over, leaves that draw out of that interval; a metric undefined in
more than 5% of the draws has no interval: NaN).

A group's true-positive rate is undefined when it has no positive rows, and its
false-positive rate when it has no negative rows: the group table reports NaN and the
gaps leave the group out (:func:`sslops.gaps.rate_gaps`); a gap with fewer than two groups
left is NaN, with a note why (:func:`sslops.gaps.gap_notes`). fairlearn's confusion-matrix
rates count such a rate as 0, which made a group without positives look like one whose
positives are all missed; where every group has both classes the numbers are fairlearn's.

The evaluate stage's per-group tables are fairlearn ``MetricFrame.by_group``
(:func:`metric_frame_table`). Bootstrap resamples, and ``sslops shadow``'s tables over
days of hundreds of thousands of rows (``group_table="counts"``; MetricFrame took 120 s of
a 480,000-row shadow run), count instead: bincounts over integer group codes, which the
tests hold equal to MetricFrame (with the undefined rates above as NaN) to 1e-12.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from fairlearn.metrics import MetricFrame, count, selection_rate
from sklearn.metrics import accuracy_score, roc_auc_score

from sslops.gaps import (
    gap_notes,
    group_codes,
    rate_gaps,
    small_groups,
    without_small_groups,
)

GROUP_METRICS = ("accuracy", "selection_rate", "tpr", "fpr", "roc_auc", "ece")
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


def majority_accuracy(y: np.ndarray) -> float:
    """Test accuracy of always predicting the most frequent class: the floor a model must beat."""
    counts = np.bincount(np.asarray(y, dtype=np.int64))
    return float(counts.max() / counts.sum()) if counts.sum() else float("nan")


def majority_note(model: dict[str, Any], majority: float, threshold: float) -> str | None:
    """What a model's accuracy says when it is no better than always predicting the majority
    class (a rare positive class at the default threshold: a constant "no" scores 98% on 2%
    positives), else None. ``model`` is one :func:`model_metrics` result."""
    rate, accuracy, ranked = model["selection_rate"], model["accuracy"], model["roc_auc"]
    if 0.0 < rate < 1.0 and accuracy > majority:
        return None
    said = (
        f"predicts {'negative' if rate == 0.0 else 'positive'} for every row, so its "
        "fairness gaps are 0 because it decides the same for everyone"
        if rate in (0.0, 1.0)
        else f"predicts positive for {rate:.2%} of the rows"
    )
    ranking = "" if ranked != ranked else f"; its ROC AUC ({ranked:.4f}) is that of its ranking"
    return (
        f"accuracy {accuracy:.4f} is no better than always predicting the majority class "
        f"({majority:.4f}): at the decision threshold {threshold:g} it {said}{ranking}; "
        "with a rare positive class, lower evaluate.threshold"
    )


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
        **rate_gaps(y, predicted, groups, float("nan")),
    }


def dense_ranks(score: np.ndarray) -> tuple[np.ndarray, int]:
    """Each score's dense rank (ties share one) and the number of distinct scores."""
    levels, ranks = np.unique(np.asarray(score, dtype=float), return_inverse=True)
    return ranks.reshape(-1), len(levels)


def _group_table(
    y: np.ndarray, score: np.ndarray, predicted: np.ndarray, groups: np.ndarray
) -> dict:
    """Each group's accuracy, selection rate, TPR, FPR, row count, ROC AUC and ECE (groups
    as strings, sorted): fairlearn ``MetricFrame.by_group`` of those metrics (the tests hold
    them equal to 1e-12), from one pass of bincounts. MetricFrame called every metric once
    per group through pandas: 120 s of a 480,000-row shadow test; this takes under a second."""
    names, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    if len(names) == 0:
        return {}
    codes = codes.reshape(-1)
    table = _GroupCells(y, score, predicted, codes, len(names)).measure(np.ones(len(codes)))
    keys = ("accuracy", "selection_rate", "tpr", "fpr", "count", "roc_auc", "ece")
    return {str(g): {k: float(table[k][i]) for k in keys} for i, g in enumerate(names)}


def _conditional_rate(label: int) -> Callable[[np.ndarray, np.ndarray], float]:
    """P(decision 1 | y = label); NaN without such rows (fairlearn's rates would say 0)."""

    def rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        rows = np.asarray(y_true) == label
        return float(np.mean(np.asarray(y_pred)[rows] == 1)) if rows.any() else float("nan")

    return rate


def metric_frame_table(
    y: np.ndarray, score: np.ndarray, predicted: np.ndarray, groups: np.ndarray
) -> dict:
    """:func:`_group_table`'s numbers by fairlearn ``MetricFrame.by_group``: the evaluate
    stage's report (the reference implementation a reviewer knows)."""
    decided = MetricFrame(
        metrics={"accuracy": accuracy_score, "selection_rate": selection_rate,
                 "tpr": _conditional_rate(1), "fpr": _conditional_rate(0), "count": count},
        y_true=y, y_pred=predicted, sensitive_features=groups,
    )  # fmt: skip
    scored = MetricFrame(
        metrics={"roc_auc": auc, "ece": expected_calibration_error},
        y_true=y, y_pred=score, sensitive_features=groups,
    )  # fmt: skip
    table = decided.by_group.join(scored.by_group)
    return {str(g): {k: float(v) for k, v in row.items()} for g, row in table.iterrows()}


def _auc_from_counts(negatives: np.ndarray, positives: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney: ties count one half) from the negatives and positives at each
    distinct score, in score order; NaN with one class."""
    pairs = positives.sum() * negatives.sum()
    if pairs == 0:
        return float("nan")
    below = np.cumsum(negatives) - negatives
    return float((positives * (below + 0.5 * negatives)).sum() / pairs)


def _spread(rates: np.ndarray, rows: np.ndarray) -> float:
    """Largest minus smallest of the rates defined (over some rows); NaN with fewer than two
    (a resample where the gap is undefined: :func:`sslops.gaps.code_gaps` with NaN)."""
    defined = rates[rows > 0]
    return float(defined.max() - defined.min()) if len(defined) > 1 else float("nan")


class _ResampledGaps:
    """:func:`sslops.gaps.code_gaps` on row resamples given as row weights (how often each
    row was drawn), from one bincount per resample over each row's (group, label, decision)
    cell, coded once (rows coded -1, a small group's, in a last cell no gap counts). Counts
    are integers, so every rate, and so every gap, is that of the indexed rows exactly.
    Labels and decisions are 0/1, as everywhere in this module."""

    def __init__(self, y: np.ndarray, decided: np.ndarray, codes: np.ndarray) -> None:
        y, decided = np.asarray(y).astype(np.int64), np.asarray(decided).astype(np.int64)
        self.groups = int(codes.max()) + 1 if len(codes) else 0
        group = np.where(codes < 0, self.groups, codes)  # the left-out rows: a last cell
        self.cells = (group * 2 + y) * 2 + decided

    def counts(self, weights: np.ndarray) -> np.ndarray:
        """The weighted rows of each (group, label, decision) cell, the left-out rows last."""
        counts = np.bincount(self.cells, weights=weights, minlength=(self.groups + 1) * 4)
        return counts.reshape(self.groups + 1, 2, 2)

    def gaps(self, cell: np.ndarray) -> dict[str, float]:
        """The gaps of :meth:`counts`' cells; NaN where fewer than two groups have the rate."""
        kept = cell[: self.groups]
        rows, positives, negatives = kept.sum(axis=(1, 2)), kept[:, 1].sum(1), kept[:, 0].sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            tpr_gap = _spread(kept[:, 1, 1] / positives, positives)
            fpr_gap = _spread(kept[:, 0, 1] / negatives, negatives)
            dp = _spread(kept[:, :, 1].sum(1) / rows, rows)
        return {
            "dp_difference": dp,
            "eo_difference": float(np.fmax(tpr_gap, fpr_gap)),  # the larger defined one
            "eopp_difference": tpr_gap,
        }


class _Resampled(_ResampledGaps):
    """``_summary``'s numbers on row resamples given as row weights: the gaps of
    :class:`_ResampledGaps` and a second bincount per resample, over each row's (score rank,
    label) cell, coded once. Indexing every array by the drawn rows and masking per rate
    took 0.35 s a resample of 480,000 rows; counts are integers, so the numbers are those
    of the indexed rows exactly (ROC AUC to 1e-12)."""

    def __init__(self, y: np.ndarray, score: np.ndarray, decided: np.ndarray,
                 codes: np.ndarray) -> None:  # fmt: skip
        super().__init__(y, decided, codes)
        ranks, self.levels = dense_ranks(score)
        self.scored = ranks * 2 + np.asarray(y).astype(np.int64)

    def summary(self, weights: np.ndarray) -> dict[str, float]:
        cell = self.counts(weights)  # group, label, decision
        by_rank = np.bincount(self.scored, weights=weights, minlength=self.levels * 2)
        by_rank = by_rank.reshape(self.levels, 2)
        total = cell.sum()
        return {
            "accuracy": float((cell[:, 0, 0].sum() + cell[:, 1, 1].sum()) / total),
            "roc_auc": _auc_from_counts(by_rank[:, 0], by_rank[:, 1]),
            "selection_rate": float(cell[:, :, 1].sum() / total),
            **self.gaps(cell),
        }


# A metric is undefined in a resample without the rows it is taken over (a group's TPR with
# none of its positive rows drawn, a gap with fewer than two groups having the rate): a 95%
# interval needs it defined in this share of the draws.
DEFINED_SHARE = 0.95


def percentile_bounds(draws: list[float], defined_share: float = DEFINED_SHARE) -> list[float]:
    """2.5th and 97.5th percentiles of the defined draws; NaN bounds when none is defined,
    or fewer than ``defined_share`` of them."""
    values = np.asarray(draws, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0 or len(values) < defined_share * len(draws):
        return [float("nan"), float("nan")]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def _percentile_intervals(
    n: int, resamples: int, seed: int, measure: Callable[[np.ndarray], dict[Any, float]]
) -> dict[Any, list[float]]:
    """Percentile 95% intervals of ``measure(rows)`` over ``resamples`` row resamples (drawn
    from ``seed``: the same rows for every caller with the same seed). An interval is NaN
    when its metric is undefined in more than 5% of the draws: the draws where it is
    defined would make an interval narrower than the rows support (one positive row in a
    group gave a gap [0.75, 0.96] from the 63% of draws that hold it, and that group's TPR
    [1.0, 1.0]), and counting the others as no gap gave a lower bound of 0 no draw
    measured. Found for rates and ROC AUC by the numerics review; gaps had it before."""
    if resamples == 0:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[Any, list[float]] = {}
    for _ in range(resamples):
        for k, v in measure(rng.integers(0, n, n)).items():
            draws.setdefault(k, []).append(v)
    return {k: percentile_bounds(v) for k, v in draws.items()}


class _GroupCells:
    """Every per-group metric at once on a sample given as row weights (how often each row
    was drawn; ones for the rows as they are), from bincounts over cells coded once: each
    row's (group, label, decision), (group, score rank, label) and (group, ECE bin). NaN for
    a group without rows, and for a rate (or ROC AUC) without the rows it is taken over.
    A group's ROC AUC is Mann-Whitney's: its positives against its negatives of lower score
    (ties count one half), counted within the group's cells in score order. Ranking the
    drawn rows within their groups took most of a resample of 480,000 rows."""

    def __init__(self, y: np.ndarray, score: np.ndarray, predicted: np.ndarray,
                 codes: np.ndarray, n_groups: int, bins: int = 10) -> None:  # fmt: skip
        y, predicted = np.asarray(y).astype(np.int64), np.asarray(predicted).astype(np.int64)
        self.groups, self.bins = n_groups, bins
        self.y, self.score = y.astype(float), np.asarray(score, dtype=float)
        self.outcome = (codes * 2 + y) * 2 + predicted
        ranks, levels = dense_ranks(self.score)
        cells, ranked = np.unique(codes * levels + ranks, return_inverse=True)
        self.cells, self.cell_group = len(cells), cells // levels  # cells in (group, score) order
        self.ranked = ranked.reshape(-1) * 2 + y
        self.first = np.searchsorted(self.cell_group, np.arange(n_groups))  # each group's first
        self.calibration = codes * bins + np.minimum((self.score * bins).astype(int), bins - 1)

    def measure(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        g = self.groups
        outcome = np.bincount(self.outcome, weights=weights, minlength=g * 4).reshape(g, 2, 2)
        rows = outcome.sum(axis=(1, 2))
        positives, negatives = outcome[:, 1].sum(1), outcome[:, 0].sum(1)
        chosen, hits = outcome[:, :, 1].sum(1), outcome[:, 1, 1]
        by_cell = np.bincount(self.ranked, weights=weights, minlength=self.cells * 2)
        cell_negatives, cell_positives = by_cell[0::2], by_cell[1::2]
        below = np.cumsum(cell_negatives) - cell_negatives  # negatives before, all groups
        first = np.minimum(self.first, self.cells - 1)  # a group without cells has no AUC
        below -= below[first][self.cell_group]  # ... less those of the groups before
        u = np.bincount(self.cell_group, weights=cell_positives * (below + 0.5 * cell_negatives),
                        minlength=g)  # fmt: skip
        size = g * self.bins
        drift = np.abs(
            np.bincount(self.calibration, weights=weights * self.y, minlength=size)
            - np.bincount(self.calibration, weights=weights * self.score, minlength=size)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            return {
                "accuracy": (outcome[:, 0, 0] + outcome[:, 1, 1]) / rows,
                "selection_rate": chosen / rows,
                "tpr": hits / positives,
                "fpr": (chosen - hits) / negatives,
                "roc_auc": np.where(
                    (positives > 0) & (negatives > 0), u / (positives * negatives), np.nan
                ),
                "ece": drift.reshape(g, self.bins).sum(axis=1) / rows,
                "count": rows,
            }


def group_intervals(
    y: np.ndarray, score: np.ndarray, predicted: np.ndarray, groups: np.ndarray,
    resamples: int, seed: int, *, min_group_rows: int = 0,
) -> dict[str, dict[str, list[float]]]:  # fmt: skip
    """Percentile 95% intervals of each group's metrics (:data:`GROUP_METRICS`) over the row
    resamples of :func:`bootstrap_intervals` with the same seed. A group of fewer than
    ``min_group_rows`` rows gets none (its table row keeps only its count)."""
    names, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    codes = codes.reshape(-1)
    cells = _GroupCells(y, score, predicted, codes, len(names))
    shown = [i for i, name in enumerate(names) if (codes == i).sum() >= min_group_rows]

    def measure(rows: np.ndarray) -> dict[Any, float]:
        table = cells.measure(np.bincount(rows, minlength=len(y)).astype(float))
        return {(i, k): float(table[k][i]) for i in shown for k in GROUP_METRICS}

    bounds = _percentile_intervals(len(y), resamples, seed, measure)
    return (
        {str(names[i]): {k: bounds[(i, k)] for k in GROUP_METRICS} for i in shown} if bounds else {}
    )


def bootstrap_intervals(
    y: np.ndarray,
    score: np.ndarray,
    threshold: float,
    groups: np.ndarray,
    resamples: int,
    seed: int,
    predicted: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """Percentile 95% intervals of the summary metrics over row resamples; ``predicted``,
    where given, is the decision (as :func:`model_metrics` takes it), else score >= threshold."""
    decided = (score >= threshold).astype(int) if predicted is None else np.asarray(predicted)
    resampled = _Resampled(y, score, decided, group_codes(groups))
    return _percentile_intervals(
        len(y), resamples, seed, lambda rows: resampled.summary(np.bincount(rows, minlength=len(y)))
    )


def paired_delta_intervals(
    y: np.ndarray, scores: tuple[np.ndarray, np.ndarray],
    decisions: tuple[np.ndarray, np.ndarray], groups: np.ndarray, resamples: int, seed: int,
) -> dict[str, list[float]]:  # fmt: skip
    """Percentile 95% intervals of the first model's summary metrics (:data:`SUMMARY`) minus
    the second's, both taken on the same row resample each time (paired: the rows both
    models scored, so what the two have in common cancels). ``groups`` gives the gaps, as
    the first column of :func:`model_metrics`; the resamples are those of
    :func:`bootstrap_intervals` with the same seed."""
    codes = group_codes(groups)
    first, second = (
        _Resampled(y, score, decided, codes)
        for score, decided in zip(scores, decisions, strict=True)
    )

    def measure(rows: np.ndarray) -> dict[Any, float]:
        weights = np.bincount(rows, minlength=len(y))
        a, b = first.summary(weights), second.summary(weights)
        return {k: a[k] - b[k] for k in SUMMARY}

    return _percentile_intervals(len(y), resamples, seed, measure)


def gap_intervals(
    y: np.ndarray, predicted: np.ndarray, groups: np.ndarray, resamples: int, seed: int
) -> dict[str, list[float]]:
    """Percentile 95% intervals of one column's gaps over row resamples: the same rows as
    :func:`bootstrap_intervals` with the same seed, so the first column's equal those. Each
    resample's gaps are :func:`sslops.gaps.code_gaps` of the drawn rows, counted
    (:class:`_ResampledGaps`) rather than indexed: the same numbers, without copying every
    array per resample (most of ``model_metrics``' time on 480,000 rows)."""
    resampled = _ResampledGaps(y, predicted, group_codes(groups))
    return _percentile_intervals(
        len(y),
        resamples,
        seed,
        lambda rows: resampled.gaps(resampled.counts(np.bincount(rows, minlength=len(y)))),
    )


def model_metrics(
    y: np.ndarray, score: np.ndarray, threshold: float, groups: dict[str, np.ndarray],
    *, intersections: bool = False, resamples: int = 0, seed: int = 0,
    predicted: np.ndarray | None = None, min_group_rows: int = 0,
    group_table: Literal["fairlearn", "counts"] = "fairlearn",
) -> dict[str, Any]:  # fmt: skip
    """Overall metrics with gaps for the first group column, and per-group tables for each
    (``group_table``: by fairlearn MetricFrame, or counted, equal to it, for large data).

    ``predicted`` overrides thresholding (for randomized post-processing). A group of fewer
    than ``min_group_rows`` rows keeps its row count and no metric (NaN): with one row, its
    accuracy and rates would be that person's label and decision, its ECE their score. It is
    left out of the gaps too (``small_groups`` names it): a 3-row group's rate is noise, and
    it decided a gap of 0.20 where the other groups differed by 0.02. A gap with fewer than
    two groups to compare (say, the TPR difference where one group has no positive rows) is
    NaN, not 0.0, and ``gap_notes`` (column -> gap -> text) says why.
    """
    predicted = (score >= threshold).astype(int) if predicted is None else predicted
    tables = dict(groups)
    if intersections and len(groups) > 1:
        tables[" x ".join(groups)] = np.array(
            [" | ".join(parts) for parts in zip(*groups.values(), strict=True)]
        )
    compared = {c: without_small_groups(v, min_group_rows) for c, v in tables.items()}
    first = compared[next(iter(groups))]
    result: dict[str, Any] = _summary(y, score, predicted, first)
    result["by_group"] = {}
    result["gaps"] = {}
    small = {c: small_groups(v, min_group_rows) for c, v in tables.items()}
    result["small_groups"] = {c: names for c, names in small.items() if names}
    for column, values in tables.items():
        table = (metric_frame_table if group_table == "fairlearn" else _group_table)(
            y, score, predicted, values
        )
        for row in table.values():
            if row["count"] < min_group_rows:
                row.update({k: float("nan") for k in row if k != "count"})
        result["by_group"][column] = table
        result["gaps"][column] = rate_gaps(y, predicted, compared[column], float("nan"))
        notes = gap_notes(y, compared[column])
        if notes:
            result.setdefault("gap_notes", {})[column] = notes
    result["intervals"] = bootstrap_intervals(
        y, score, threshold, first, resamples, seed, predicted
    )  # the decisions the point estimates are of
    if resamples:  # every column's and the crossing's gaps, not only the first column's
        result["gap_intervals"] = {
            column: gap_intervals(y, predicted, compared[column], resamples, seed)
            for column in tables
        }
        result["group_intervals"] = {
            column: group_intervals(y, score, predicted, values, resamples, seed,
                                    min_group_rows=min_group_rows)
            for column, values in tables.items()
        }  # fmt: skip
    return result
