"""Exact deduplication and stable, keyed-hash split assignment.

A row's split depends only on its canonical content and the split key, never on
its position or on the other rows, so appending data never moves an existing row
between splits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# pandas' hash_pandas_object takes a 16-character key.
_KEY_BASE = "sslops-split-v1:"


def row_hashes(frame: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """A 64-bit hash per row of the canonical values (column order and index ignored)."""
    key = (_KEY_BASE + str(seed))[-16:].rjust(16, "0")
    ordered = frame[sorted(frame.columns)].astype("string").fillna("\x00<NA>")
    return pd.util.hash_pandas_object(ordered, index=False, hash_key=key).to_numpy(np.uint64)


def drop_exact_duplicates(frame: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, int]:
    """Keep the first of each group of identical rows; return the frame and how many were dropped."""
    duplicated = pd.Series(row_hashes(frame, seed)).duplicated().to_numpy()
    return frame.loc[~duplicated].reset_index(drop=True), int(duplicated.sum())


def assign_splits(
    frame: pd.DataFrame, validation_fraction: float, test_fraction: float, seed: int = 0
) -> np.ndarray:
    """'train' / 'validation' / 'test' per row from a uniform number derived from its hash."""
    uniform = row_hashes(frame, seed).astype(np.float64) / float(2**64)
    return np.where(
        uniform < test_fraction,
        "test",
        np.where(uniform < test_fraction + validation_fraction, "validation", "train"),
    )
