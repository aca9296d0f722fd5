"""MinHash-LSH for free text: near-duplicate texts by the Jaccard similarity of word shingles.

Signatures are computed per distinct text, vectorized with numpy over all shingles of a
chunk (the per-shard half); the LSH join over signatures runs in the merge. Near-duplicate
texts then count as equal when rows are compared (:mod:`sslops.data.dedup`), so a row
whose note was lightly edited is still a near-copy of the original.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from sslops.data.dedup import clusters_from_pairs, combine, mix, pairs_with_equal_keys

NUM_PERM = 64
_WORD = re.compile(r"\w+")


def _seeds(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**63, NUM_PERM, dtype=np.uint64)


def shingles(texts: list[str | None], size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the word ``size``-grams of each text (lower-cased), flat, with row offsets.

    A text with fewer words than ``size`` contributes its words; an empty one, nothing.
    """
    grams: list[str] = []
    offsets = [0]
    for text in texts:
        words = _WORD.findall(text.lower()) if text else []
        if len(words) >= size:
            words = [" ".join(words[i : i + size]) for i in range(len(words) - size + 1)]
        grams.extend(dict.fromkeys(words))
        offsets.append(len(grams))
    hashes = pd.util.hash_array(np.array(grams, dtype=object), categorize=False)
    return hashes, np.array(offsets, dtype=np.int64)


def signatures(hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(texts x NUM_PERM) uint32 MinHash signatures; an empty text gets all-ones."""
    n = len(offsets) - 1
    out = np.full((n, NUM_PERM), np.iinfo(np.uint32).max, dtype=np.uint32)
    sizes = np.diff(offsets)
    filled = np.flatnonzero(sizes > 0)
    if not len(filled):
        return out
    starts = offsets[:-1][filled]
    for p, seed in enumerate(_seeds()):
        # SplitMix64 of (shingle hash ^ seed) acts as one random permutation of shingles.
        permuted = mix(hashes ^ seed) >> np.uint64(32)
        out[filled, p] = np.minimum.reduceat(permuted, starts).astype(np.uint32)
    return out


def bands_for(threshold: float) -> tuple[int, int]:
    """(bands, rows) with bands * rows == NUM_PERM and the S-curve's midpoint nearest
    ``threshold`` (leaning to more bands: recall over candidate count)."""
    options = [(b, NUM_PERM // b) for b in (4, 8, 16, 32) if NUM_PERM % b == 0]
    return min(options, key=lambda br: abs((1 / br[0]) ** (1 / br[1]) - (threshold - 0.1)))


def text_clusters(sig: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster id per text: connected components of pairs with estimated Jaccard >= threshold."""
    n = len(sig)
    if n < 2:
        return np.arange(n, dtype=np.int64)
    bands, rows = bands_for(threshold)
    empty = (sig == np.iinfo(np.uint32).max).all(axis=1)
    found = []
    for band in range(bands):
        keys = combine(sig[:, band * rows : (band + 1) * rows].astype(np.uint64), key=band)
        keys[empty] = np.arange(int(empty.sum()), dtype=np.uint64)  # empty texts match nothing
        first, second, _ = pairs_with_equal_keys(keys)
        similar = (sig[first] == sig[second]).mean(axis=1) >= threshold
        found.append(np.minimum(first, second)[similar] * n + np.maximum(first, second)[similar])
    pairs = np.unique(np.concatenate(found))
    return clusters_from_pairs(n, pairs // n, pairs % n)
