"""Exact and near-duplicate rows, from 64-bit tokens of canonical cells.

Each canonical cell becomes a token (a hash of its number, or of its lower-cased
text); a row is its vector of tokens, one per column in sorted column order. Exact
duplicates share every token. Near-duplicates differ in at most ``max_diff`` columns.

Finding near-duplicates is locality-sensitive hashing over columns ("bands"): two rows
are compared only when they agree on every column of some band. MinHash over
``column=value`` tokens, the usual choice for text, fails on tables: low-cardinality
columns (sex, race, country) make unrelated rows collide: on UCI Adult, MinHash with 32
bands of 4 proposes 4*10^8 candidate pairs for its 48.8k distinct rows. Here every band
is built from the columns' measured agreement probabilities so that two unrelated
rows collide with probability below ``1/n``, and bands are added until every set of
``max_diff`` columns is avoided by at least one band: any two rows that differ in at
most ``max_diff`` columns share a band, so recall is exact, and every candidate pair
is verified by counting its differing columns, so precision is too.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sslops.data.canonicalize import parse_numbers, text_array

_TOKEN_KEY = "sslops-token-v01"  # 16 characters: pandas' SipHash key  # a hash key, not a secret  # nosec B105
_NUMBER_SALT = np.uint64(0x5BD1E9955BD1E995)
MISSING_TOKEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
MAX_BUCKET = 5000  # rows agreeing on a whole band beyond this are not compared pairwise


def mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer: a bijective scramble of uint64 values."""
    z = values.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def cell_tokens(values: pd.Series, lower: bool = True) -> np.ndarray:
    """One uint64 per cell: numbers hash by value ("7" == "7.0"), text by its (lower-cased) form."""
    if pd.api.types.is_float_dtype(values):
        return value_tokens(pd.Series(values.to_numpy(np.float64)), values, lower)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct = pd.Series(np.asarray(uniques, dtype=object), dtype=object)
    tokens = value_tokens(distinct, parse_numbers(distinct)[0], lower)
    return np.append(tokens, MISSING_TOKEN)[codes]


def value_tokens(
    values: pd.Series | pa.Array, numbers: pd.Series | np.ndarray, lower: bool = True
) -> np.ndarray:
    """Tokens of ``values`` given their parsed ``numbers`` (NaN where not a number)."""
    parsed = np.asarray(numbers, dtype=np.float64)
    is_number = ~np.isnan(parsed)
    if isinstance(values, pa.Array):
        is_text = ~is_number & pc.is_valid(values).to_numpy(zero_copy_only=False)
    else:
        is_text = ~is_number & values.notna().to_numpy()
    tokens = np.full(len(values), MISSING_TOKEN, dtype=np.uint64)
    if is_number.any():
        tokens[is_number] = pd.util.hash_array(parsed[is_number]) ^ _NUMBER_SALT
    if is_text.any():
        if isinstance(values, pa.Array):
            text = values.filter(pa.array(is_text))
        else:
            text = text_array(values.to_numpy(object)[is_text])
        text = pc.utf8_lower(text) if lower else text
        tokens[is_text] = pd.util.hash_array(
            text.to_numpy(zero_copy_only=False), hash_key=_TOKEN_KEY, categorize=False
        )
    return tokens


def combine(tokens: np.ndarray, key: int = 0) -> np.ndarray:
    """A 64-bit hash per row of a (rows x columns) token matrix; column order matters."""
    h = mix(np.full(tokens.shape[0], key, dtype=np.uint64))
    for j in range(tokens.shape[1]):
        h = mix(h + tokens[:, j])
    return h


def first_occurrences(row_hash: np.ndarray) -> np.ndarray:
    """True for the first row of each group of identical hashes (in input order)."""
    return ~pd.Series(row_hash).duplicated(keep="first").to_numpy()


def agreement_probabilities(tokens: np.ndarray) -> np.ndarray:
    """Per column, the chance that two random rows have the same token."""
    probabilities = []
    for j in range(tokens.shape[1]):
        _, counts = np.unique(tokens[:, j], return_counts=True)
        share = counts / counts.sum()
        probabilities.append(float((share * share).sum()))
    return np.array(probabilities)


def plan_bands(agreement: np.ndarray, max_diff: int, eps: float) -> list[list[int]]:
    """Column bands so that every set of ``max_diff`` columns misses at least one band."""
    k = len(agreement)
    if k <= max_diff:
        return []
    by_selectivity = sorted(range(k), key=lambda j: (agreement[j], j))
    uncovered = set(itertools.combinations(range(k), max_diff))
    bands: list[list[int]] = []
    while uncovered:
        avoid = set(min(uncovered))
        band, probability = [], 1.0
        for j in by_selectivity:
            if j in avoid:
                continue
            band.append(j)
            probability *= agreement[j]
            if probability <= eps:
                break
        bands.append(sorted(band))
        members = set(band)
        uncovered = {s for s in uncovered if members & set(s)}
    return bands


def pairs_with_equal_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Every pair of rows with equal keys (buckets above MAX_BUCKET rows are skipped)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    skipped = int(sizes[sizes > MAX_BUCKET].sum())
    sizes[sizes > MAX_BUCKET] = 1
    size_of = np.repeat(sizes, np.diff(np.r_[starts, len(keys)]))
    position = np.arange(len(keys)) - np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
    live = np.flatnonzero(size_of > 1)
    first, second = [], []
    offset = 1
    while len(live):
        live = live[position[live] + offset < size_of[live]]
        first.append(order[live])
        second.append(order[live + offset])
        offset += 1
    if not first:
        return np.empty(0, np.int64), np.empty(0, np.int64), skipped
    return np.concatenate(first), np.concatenate(second), skipped


def near_duplicate_pairs(tokens: np.ndarray, max_diff: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Pairs of row indices (i < j) differing in at most max_diff columns (exact copies must
    be removed first), and how many rows were not compared."""
    n = tokens.shape[0]
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64), 0
    eps = float(np.clip(1.0 / n, 1e-12, 1e-3))
    bands = plan_bands(agreement_probabilities(tokens), max_diff, eps)
    found: list[np.ndarray] = []
    skipped = 0
    for band in bands:
        a, b, missed = pairs_with_equal_keys(combine(tokens[:, band]))
        skipped = max(skipped, missed)
        for start in range(0, len(a), 1 << 20):
            i, j = a[start : start + (1 << 20)], b[start : start + (1 << 20)]
            differing = (tokens[i] != tokens[j]).sum(axis=1)
            keep = differing <= max_diff  # exact copies are gone: 0 means equal by tolerance
            low, high = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
            found.append(low.astype(np.int64) * n + high)
    pairs = np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
    return pairs // n, pairs % n, skipped


def clusters_from_pairs(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Connected components: a cluster id per row (singletons get their own id)."""
    graph = coo_matrix((np.ones(len(first), np.int8), (first, second)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)
