"""Stable, keyed-hash split assignment; near-duplicate clusters stay whole; OOD predicates.

A row's split is a function of its own key (the canonical row, or the configured key
columns) and the split key, never of its position or the other rows, so appending
data never moves an existing row between splits. A near-duplicate cluster takes the
split of its member with the smallest key hash, so all near-copies land together; a
row moves only when a new near-copy of it with a smaller hash arrives.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from sslops.data.dedup import cell_tokens, combine, first_occurrences, mix
from sslops.errors import ConfigError, DataError

SPLIT_NAMES = ("train", "validation", "test")


def split_key(seed: int, secret: str = "") -> int:  # no secret is the default, not a password  # nosec B107
    """The 64-bit key of the split hash: from the seed, and a secret when ids are hashed."""
    digest = hashlib.blake2b(f"sslops-split-v2:{seed}:{secret}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def row_hashes(frame: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """A keyed 64-bit hash per row of the canonical values (column order and index ignored)."""
    columns = sorted(frame.columns)
    tokens = np.stack([cell_tokens(frame[c]) for c in columns], axis=1)
    return combine(tokens.reshape(len(frame), len(columns)), split_key(seed))


def drop_exact_duplicates(frame: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, int]:
    """Keep the first of each group of identical rows; return the frame and how many were dropped."""
    keep = first_occurrences(row_hashes(frame, seed))
    return frame.loc[keep].reset_index(drop=True), int((~keep).sum())


def uniform_of(key_hash: np.ndarray) -> np.ndarray:
    return mix(key_hash).astype(np.float64) / float(2**64)


def split_by_uniform(
    uniform: np.ndarray, validation_fraction: float, test_fraction: float
) -> np.ndarray:
    return np.where(
        uniform < test_fraction,
        "test",
        np.where(uniform < test_fraction + validation_fraction, "validation", "train"),
    )


def assign_splits(
    frame: pd.DataFrame, validation_fraction: float, test_fraction: float, seed: int = 0
) -> np.ndarray:
    """'train' / 'validation' / 'test' per row from a uniform number derived from its hash."""
    return split_by_uniform(uniform_of(row_hashes(frame, seed)), validation_fraction, test_fraction)


def cluster_key_hashes(key_hash: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """Each row's cluster's smallest key hash: the whole cluster then shares one split."""
    return (
        pd.Series(key_hash).groupby(cluster).transform("min").to_numpy(np.uint64)
        if len(key_hash)
        else key_hash
    )


# --- out-of-distribution predicates ---------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<=": operator.le, ">=": operator.ge,
    "<": operator.lt, ">": operator.gt,
}  # fmt: skip
_CLAUSE = re.compile(r"^\s*(?P<column>.+?)\s*(?P<op>==|!=|<=|>=|<|>)\s*(?P<value>.+?)\s*$")


def parse_predicate(text: str) -> list[list[tuple[str, str, str]]]:
    """``a == x and b > 3 or c != y`` -> OR of ANDs of (column, op, value); no parentheses."""
    alternatives = []
    for part in re.split(r"\s+or\s+", text.strip()):
        clauses = []
        for clause in re.split(r"\s+and\s+", part):
            match = _CLAUSE.match(clause)
            if not match:
                raise ConfigError(
                    f"prepare.ood: cannot read {clause.strip()!r} in {text!r}; expected "
                    "COLUMN OP VALUE with OP one of ==, !=, <, <=, >, >= (joined by and / or)"
                )
            value = match["value"].strip().strip("\"'")
            clauses.append((match["column"].strip().strip("`"), match["op"], value))
        alternatives.append(clauses)
    return alternatives


def predicate_columns(text: str) -> list[str]:
    return sorted({column for part in parse_predicate(text) for column, _, _ in part})


def evaluate_predicate(text: str, frame: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the rows matching the predicate (missing values never match)."""
    result = np.zeros(len(frame), dtype=bool)
    for part in parse_predicate(text):
        mask = np.ones(len(frame), dtype=bool)
        for column, op, value in part:
            series = frame[column]
            if pd.api.types.is_numeric_dtype(series):
                try:
                    target: object = float(value)
                except ValueError:
                    raise ConfigError(
                        f"prepare.ood: column {column!r} is numeric; {value!r} is not a number"
                    ) from None
            else:
                series, target = series.astype("string").str.lower(), value.lower()
            mask &= _OPS[op](series, target).fillna(False).to_numpy(dtype=bool)
        result |= mask
    return result


def require_ood_rows(text: str, frame: pd.DataFrame, selected: np.ndarray, min_count: int) -> None:
    """An OOD predicate that selects none of the rows kept (a value spelt otherwise than in the
    data, most often) is refused here: left empty, the split passed prepare and training and
    evaluate then failed on it. The message shows each named text column's commonest values
    held by at least ``min_count`` rows (``prepare.min_category_count``), as other errors do."""
    if selected.any():
        return
    seen = []
    for column in predicate_columns(text):
        series = frame[column] if column in frame.columns else None
        if series is None or pd.api.types.is_numeric_dtype(series):
            continue
        counts = series.dropna().astype(str).value_counts()
        common = [repr(v) for v in counts[counts >= min_count].index[:5]]
        if common:
            seen.append(f"{column!r}: {', '.join(common)}")
    hint = f" (commonest values: {'; '.join(seen)})" if seen else ""
    raise DataError(
        f"prepare.ood {text!r} holds for no row of the data, so there is no out-of-distribution "
        f"split to evaluate; expected a predicate that some rows meet{hint} (values compare "
        "case-insensitively), or leave prepare.ood unset"
    )
