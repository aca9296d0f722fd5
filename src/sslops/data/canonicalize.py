"""Canonical form of raw cells: NFKC text, collapsed whitespace, one missing marker, numbers.

Work happens per distinct value (a column of 10^6 rows usually has far fewer), through
pyarrow's vectorized string kernels. A column becomes numeric only when every
non-missing value in the *whole* data set parses as a number; with chunked input that
decision is taken when the chunks are merged (:mod:`sslops.prepare.merge`), so a chunk's
result never depends on which chunk it is.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def canonical_column_name(name: Any) -> str:
    """NFKC, whitespace collapsed and trimmed; case kept so configs can name columns as written."""
    return " ".join(unicodedata.normalize("NFKC", str(name)).split())


def label_hits(column: pd.Series, positive: Any) -> pd.Series:
    """Where a label column equals the positive value (or one of a list of them): numerically
    when the column holds numbers (``True`` counts as 1), as text otherwise; a boolean value
    or column compares as true / false in any case, so ``positive: true`` finds a Parquet
    boolean label. Prepare, shadow scoring and the audit's re-evaluation share it."""
    if isinstance(positive, list):
        hit = pd.Series(False, index=column.index)
        for value in positive:
            hit |= label_hits(column, value)
        return hit
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        try:
            return column == float(positive)
        except (TypeError, ValueError):
            return pd.Series(False, index=column.index)
    text = column.astype("string")
    if isinstance(positive, bool) or pd.api.types.is_bool_dtype(column):
        return (text.str.lower() == str(positive).lower()).fillna(False).astype(bool)
    return (text == str(positive)).fillna(False).astype(bool)


def cell_text(value: Any) -> str:
    """A category cell as ``prepare`` wrote it when it read the value from a typed column
    (Arrow's cast to text): missing as "", booleans as true / false, a whole float without
    its ".0". Serving feeds (ONNX export, shadow scoring) use it so that a request holding
    ``True`` or ``27.0`` finds the category the model learned."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        number = float(value)
        return str(int(number)) if number.is_integer() and abs(number) < 1e16 else repr(number)
    return str(value)


def cell_texts(column: pd.Series) -> np.ndarray:
    """:func:`cell_text` of every cell, as an object array (what an ONNX string input takes).

    A typed column is factorized first, so each distinct value is converted once (a few
    dozen categories instead of a call per row); an object column, where ``True`` and ``1``
    would hash alike, is converted cell by cell."""
    if column.dtype == object:
        return np.array([cell_text(v) for v in column.to_numpy(dtype=object)], dtype=object)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    table = np.array([*(cell_text(u) for u in uniques), ""], dtype=object)
    return table[codes]  # missing (code -1) -> the last entry, ""


def canonical_strings(
    values: pd.Series, na_values: list[str], weights: np.ndarray | None = None
) -> tuple[pd.Series, int]:
    """Text cells in canonical form (object dtype, None = missing) and how many cells changed
    (each cell counting ``weights[i]`` times when given, e.g. for a column's distinct values).

    Numeric input columns are returned as float64 with infinities kept (the caller decides).
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64"), 0
    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
    canon, changed_unique = canonical_text(text_array(uniques), na_values)
    present = codes >= 0
    counts = np.bincount(
        codes[present],
        weights=None if weights is None else weights[present],
        minlength=len(uniques),
    )
    table = np.array([*canon.to_pylist(), None], dtype=object)
    out = pd.Series(table[codes], index=values.index, dtype=object)
    return out, int(counts[changed_unique].sum())


def canonical_text(raw: pa.Array, na_values: list[str]) -> tuple[pa.Array, np.ndarray]:
    """Canonical form of distinct text values (null = missing) and which of them changed
    (an empty cell becoming missing is not a change)."""
    text = _normal_form(raw)
    markers = _normal_form(pa.array(na_values, type=pa.string())).unique()  # as cells are
    missing = pc.or_(pc.is_in(text, value_set=markers), pc.equal(pc.utf8_length(text), 0))
    canon = pc.if_else(missing, pa.scalar(None, pa.string()), text)
    changed = pc.fill_null(pc.not_equal(canon, raw), True).to_numpy(zero_copy_only=False)
    was_empty = pc.fill_null(pc.equal(pc.utf8_length(raw), 0), True)
    return canon, changed & ~was_empty.to_numpy(zero_copy_only=False)


def _normal_form(text: pa.Array) -> pa.Array:
    """NFKC, runs of whitespace as one space, no space at either end."""
    text = pc.utf8_normalize(text, "NFKC")
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))


def parse_number_array(text: pa.Array) -> np.ndarray:
    """float64 per text value: NaN where missing or not a number."""
    is_number = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False)
    parsed = np.full(len(text), np.nan)
    mask = is_number.to_numpy(zero_copy_only=False)
    if mask.any():
        parsed[mask] = pc.cast(text.filter(is_number), pa.float64()).to_numpy()
    return parsed


_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$|^(?i:[+-]?(?:inf|infinity))$"


def text_array(values: Any) -> pa.Array:
    """A pyarrow string array of non-missing values (vectorized when they are all str)."""
    array = np.asarray(values, dtype=object)
    try:
        return pa.array(array, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([str(v) for v in array], type=pa.string())


def parse_numbers(values: pd.Series) -> tuple[pd.Series, bool]:
    """float64 of each cell (NaN where missing or not a number) and whether all non-missing parse."""
    if pd.api.types.is_float_dtype(values):
        return values, True
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    parsed = parse_number_array(text_array(uniques))
    numbers = np.append(parsed, np.nan)[codes]
    return pd.Series(numbers, index=values.index), bool(not np.isnan(parsed).any())


def case_spellings(values: pd.Series) -> Counter[str]:
    """How often each spelling that contains a letter occurs (input for :func:`preferred_spellings`)."""
    counts = values.dropna().value_counts()
    keep = counts.index.astype(str).str.contains(r"[^\W\d_]", regex=True)
    return Counter(dict(zip(map(str, counts.index[keep]), map(int, counts[keep]), strict=True)))


def preferred_spellings(spellings: Counter[str]) -> dict[str, str]:
    """For each lower-cased value seen in several spellings, the most frequent one (ties: sorted)."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for value, count in spellings.items():
        groups.setdefault(value.lower(), []).append((-count, value))
    return {low: min(options)[1] for low, options in groups.items() if len(options) > 1}


def unify_case(values: pd.Series, preferred: dict[str, str]) -> tuple[pd.Series, int]:
    """Replace every case variant by its preferred spelling; returns the cells changed."""
    if not preferred:
        return values, 0
    lowered = values.str.lower()
    target = lowered.map(preferred)
    change = target.notna() & (target != values)
    return values.where(~change, target), int(change.sum())


def canonicalize(
    frame: pd.DataFrame, na_values: list[str], casefold: bool = False,
    text_columns: Sequence[str] = (),
) -> tuple[pd.DataFrame, dict[str, Any]]:  # fmt: skip
    """Canonicalize a whole in-memory frame; returns it and a report of what changed, per column.
    ``text_columns`` stay text even where every cell is a number (a code 02134)."""
    columns: dict[Any, pd.Series] = {}
    report: dict[str, Any] = {"columns": {}}
    for column in frame.columns:
        series, changed = canonical_strings(frame[column], na_values)
        changes: dict[str, Any] = {"normalized_text": changed}
        if column in text_columns:
            series = series.astype("string")
            columns[column] = series
            report["columns"][column] = column_report(series, changes)
            continue
        numbers, all_numeric = parse_numbers(series)
        if pd.api.types.is_float_dtype(series) or (series.notna().any() and all_numeric):
            if not pd.api.types.is_float_dtype(series):
                changes["cast_to_numeric"] = True
            infinite = np.isinf(numbers.to_numpy(np.float64))
            changes["infinite_to_missing"] = int(infinite.sum())
            series = numbers.mask(infinite)
        else:
            series = series.astype("string")
            if casefold:
                preferred = preferred_spellings(case_spellings(series))
                series, changes["case_unified"] = unify_case(series, preferred)
        columns[column] = series
        report["columns"][column] = column_report(series, changes)
    # One frame built at once: inserting a wide table's columns one by one fragments it
    # (pandas warns from about 100 columns on).
    return pd.DataFrame(columns, index=frame.index), report


def column_report(series: pd.Series, changes: dict[str, Any]) -> dict[str, Any]:
    return {
        "dtype": "numeric" if pd.api.types.is_numeric_dtype(series) else "categorical",
        "missing": int(series.isna().sum()),
        **{k: v for k, v in changes.items() if v},
    }
