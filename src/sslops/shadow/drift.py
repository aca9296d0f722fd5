"""Drift of one column between a reference sample and a batch: PSI and a two-sample test.

- numeric: PSI over the reference's quantile bins (plus a bin for missing values) and
  the two-sample Kolmogorov-Smirnov test;
- categorical: PSI over the categories seen in either sample (missing is a category)
  and the chi-square test of the 2 x k contingency table.

A column is flagged when PSI >= ``psi_threshold`` *and* the test's p-value is below
``alpha``: PSI says the shift is large enough to matter, the test that it is not noise.

``psi_noise`` is the PSI two samples of these sizes show with no shift at all, on
average: (k - 1) (1/n + 1/m) over the k bins either sample fills (n m / (n + m) PSI is
about chi-square with k - 1 degrees of freedom). A batch of a dozen rows has PSI near 1
on every feature from sampling alone; where ``psi_noise`` reaches the threshold, a PSI
is no evidence of drift.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

EPSILON = 1e-4  # floor on a bin's share so an empty bin does not make PSI infinite
# A category value is quoted in shadow.json and the report only when at least this many of
# the rows compared hold it (prepare.min_category_count's default keeps rarer values out of
# a model too): a value one row holds can be a person's name or record number.
MIN_NAMED_ROWS = 5


def quoted(level: str, rows: int) -> str:
    """``level`` itself when ``rows`` rows hold it, else a placeholder naming only the rule."""
    return level if rows >= MIN_NAMED_ROWS else f"(a value in fewer than {MIN_NAMED_ROWS} rows)"


def psi_from_counts(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index: sum over bins of (a - e) * ln(a / e), on shares."""
    e = np.maximum(expected / max(expected.sum(), 1), EPSILON)
    a = np.maximum(actual / max(actual.sum(), 1), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_noise(expected: np.ndarray, actual: np.ndarray) -> float:
    """The expected PSI of two samples of these sizes drawn from one distribution."""
    n, m = float(expected.sum()), float(actual.sum())
    if not n or not m:
        return float("inf")
    filled = int(np.count_nonzero((expected + actual) > 0))
    return float(max(filled - 1, 0) * (1 / n + 1 / m))


def _numeric_counts(reference: np.ndarray, batch: np.ndarray, bins: int) -> tuple:
    ref, cur = reference[~np.isnan(reference)], batch[~np.isnan(batch)]
    edges: np.ndarray = (
        np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1])) if len(ref) else np.array([])
    )
    # Bin i holds values <= edges[i] (right-closed), the last bin the rest; then missing.
    ref_counts = np.bincount(np.searchsorted(edges, ref), minlength=len(edges) + 1)
    cur_counts = np.bincount(np.searchsorted(edges, cur), minlength=len(edges) + 1)
    ref_counts = np.append(ref_counts, np.isnan(reference).sum())
    cur_counts = np.append(cur_counts, np.isnan(batch).sum())
    return ref_counts, cur_counts


def numeric_drift(reference: np.ndarray, batch: np.ndarray, bins: int) -> dict[str, Any]:
    reference, batch = reference.astype(np.float64), batch.astype(np.float64)
    ref_counts, cur_counts = _numeric_counts(reference, batch, bins)
    ref, cur = reference[~np.isnan(reference)], batch[~np.isnan(batch)]
    p = float(stats.ks_2samp(ref, cur).pvalue) if len(ref) and len(cur) else 1.0
    return {
        "kind": "numeric",
        "test": "ks",
        "psi": psi_from_counts(ref_counts, cur_counts),
        "psi_noise": psi_noise(ref_counts, cur_counts),
        "p_value": p,
        "reference_mean": float(ref.mean()) if len(ref) else None,
        "batch_mean": float(cur.mean()) if len(cur) else None,
    }


def categorical_drift(reference: pd.Series, batch: pd.Series) -> dict[str, Any]:
    ref = reference.astype(object).where(reference.notna(), "<missing>").astype(str)
    cur = batch.astype(object).where(batch.notna(), "<missing>").astype(str)
    ref_found, cur_found = ref.value_counts(), cur.value_counts()
    # The levels from the counts, not the cells: a set of 480,000 cells took 8 s.
    levels = sorted(set(ref_found.index) | set(cur_found.index))
    ref_counts = ref_found.reindex(levels, fill_value=0).to_numpy()
    cur_counts = cur_found.reindex(levels, fill_value=0).to_numpy()
    table = np.vstack([ref_counts, cur_counts])
    p = 1.0
    if len(levels) > 1:
        p = float(stats.chi2_contingency(table).pvalue)
    shares = cur_counts / max(cur_counts.sum(), 1) - ref_counts / max(ref_counts.sum(), 1)
    moved = int(np.argmax(np.abs(shares)))
    return {
        "kind": "categorical",
        "test": "chi-square",
        "psi": psi_from_counts(ref_counts, cur_counts),
        "psi_noise": psi_noise(ref_counts, cur_counts),
        "p_value": p,
        "largest_share_change": {
            "level": quoted(levels[moved], int(ref_counts[moved] + cur_counts[moved])),
            "change": float(shares[moved]),
        },
    }


def column_drift(reference: pd.Series, batch: pd.Series, bins: int) -> dict[str, Any]:
    if pd.api.types.is_numeric_dtype(reference) and pd.api.types.is_numeric_dtype(batch):
        return numeric_drift(
            reference.to_numpy(dtype=np.float64, na_value=np.nan),
            batch.to_numpy(dtype=np.float64, na_value=np.nan),
            bins,
        )
    return categorical_drift(reference, batch)


def flag(result: dict[str, Any], psi_threshold: float, alpha: float) -> bool:
    return bool(result["psi"] >= psi_threshold and result["p_value"] < alpha)
