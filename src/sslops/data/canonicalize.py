"""Canonical form of a raw table: trimmed NFKC strings, one missing marker, numeric dtypes."""

from __future__ import annotations

import unicodedata
from typing import Any

import pandas as pd


def _canonical_text(value: Any) -> Any:
    if isinstance(value, str):
        text = unicodedata.normalize("NFKC", value).strip()
        return text if text else pd.NA
    return value


def canonicalize(frame: pd.DataFrame, na_values: list[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Return the canonical frame and a report of what changed, per column."""
    out = pd.DataFrame(index=frame.index)
    report: dict[str, Any] = {"columns": {}}
    markers = {unicodedata.normalize("NFKC", v).strip() for v in na_values}
    for column in frame.columns:
        series = frame[column]
        changes: dict[str, Any] = {}
        if not pd.api.types.is_numeric_dtype(series):
            before = series.copy()
            series = series.map(_canonical_text)
            series = series.mask(series.isin(markers))
            changes["normalized_text"] = int(
                (before.astype("string").fillna("") != series.astype("string").fillna("")).sum()
            )
            numeric = pd.to_numeric(series, errors="coerce")
            if series.notna().any() and numeric.notna().sum() == series.notna().sum():
                series = numeric
                changes["cast_to_numeric"] = True
            else:
                series = series.astype("string")
        if pd.api.types.is_numeric_dtype(series):
            series = series.astype("float64")
            infinite = series.isin([float("inf"), float("-inf")])
            if infinite.any():
                changes["infinite_to_missing"] = int(infinite.sum())
                series = series.mask(infinite)
        out[column] = series
        report["columns"][column] = {
            "dtype": "numeric" if pd.api.types.is_numeric_dtype(series) else "categorical",
            "missing": int(series.isna().sum()),
            **{k: v for k, v in changes.items() if v},
        }
    return out, report
