"""Cell tokens, exact and near-duplicate detection (rows, images, series), OOD predicates."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from sslops.data.canonicalize import canonicalize
from sslops.data.dedup import (
    cell_tokens,
    clusters_from_pairs,
    combine,
    first_occurrences,
    near_duplicate_pairs,
    plan_bands,
)
from sslops.data.images import near_duplicate_images, perceptual_hash
from sslops.data.series import canonical_series, near_duplicate_series
from sslops.data.split import cluster_key_hashes, evaluate_predicate, parse_predicate
from sslops.errors import ConfigError


def test_tokens_compare_numbers_by_value_and_text_without_case() -> None:
    tokens = cell_tokens(pd.Series(["7", "7.0", "07", " x", "X", "x", None, None], dtype=object))
    assert tokens[0] == tokens[1] == tokens[2]
    assert tokens[4] == tokens[5] != tokens[3]
    assert tokens[6] == tokens[7] != tokens[0]
    assert cell_tokens(pd.Series([7.0]))[0] == tokens[0]
    assert cell_tokens(pd.Series(["X"], dtype=object), lower=False)[0] != tokens[5]


def test_combine_is_order_sensitive() -> None:
    a = np.array([[1, 2]], dtype=np.uint64)
    assert combine(a)[0] != combine(a[:, ::-1])[0]
    assert combine(a, key=1)[0] != combine(a)[0]


@pytest.mark.parametrize("max_diff", [1, 2, 3])
def test_bands_avoid_every_set_of_differing_columns(max_diff: int) -> None:
    agreement = np.array([0.9, 0.5, 0.001, 0.3, 0.7, 0.2, 0.05, 0.6, 0.95, 0.4])
    bands = plan_bands(agreement, max_diff, eps=1e-4)
    for subset in itertools.combinations(range(len(agreement)), max_diff):
        assert any(not set(band) & set(subset) for band in bands), subset


def _random_table(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    cardinality = rng.integers(2, 60, size=columns)
    return np.stack([rng.integers(0, c, size=rows) for c in cardinality], axis=1)


@pytest.mark.parametrize("max_diff", [1, 2])
def test_near_duplicate_pairs_equal_brute_force(max_diff: int) -> None:
    rng = np.random.default_rng(max_diff)
    base = _random_table(rng, 400, 9)
    copies = base[rng.integers(0, 400, size=80)].copy()
    for row in copies:  # perturb 1..max_diff fields
        for column in rng.choice(9, size=rng.integers(1, max_diff + 1), replace=False):
            row[column] = rng.integers(1000, 2000)
    table = np.vstack([base, copies]).astype(np.uint64)
    table = table[np.unique(combine(table), return_index=True)[1]]  # exact copies out
    first, second, skipped = near_duplicate_pairs(table, max_diff)
    differing = (table[:, None, :] != table[None, :, :]).sum(axis=2)
    i, j = np.nonzero(np.triu((differing >= 1) & (differing <= max_diff), k=1))
    assert skipped == 0
    assert set(zip(first.tolist(), second.tolist(), strict=True)) == set(
        zip(i.tolist(), j.tolist(), strict=True)
    )
    assert len(i) >= 60


def test_clusters_and_cluster_split_keys() -> None:
    labels = clusters_from_pairs(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert labels[0] == labels[1] == labels[2] != labels[3]
    assert labels[4] == labels[5]
    keys = np.array([50, 10, 30, 40, 20, 60], dtype=np.uint64)
    assert cluster_key_hashes(keys, labels).tolist() == [10, 10, 10, 40, 20, 20]


def test_image_near_duplicates_equal_brute_force() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 16, 16, 1), dtype=np.uint8)
    hashes = perceptual_hash(images)
    flipped = hashes.copy()
    for i in range(0, 300, 3):  # flip 0..3 bits
        for bit in rng.choice(64, size=i % 4, replace=False):
            flipped[i] ^= np.uint64(1) << np.uint64(bit)
    both = np.concatenate([hashes, flipped])
    a, b = near_duplicate_images(both, max_hamming=3)
    xor = both[:, None] ^ both[None, :]
    distance = np.unpackbits(xor.view(np.uint8).reshape(600, 600, 8), axis=2).sum(axis=2)
    i, j = np.nonzero(np.triu(distance <= 3, k=1))
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == set(
        zip(i.tolist(), j.tolist(), strict=True)
    )
    assert len(i) >= 300


def test_series_near_duplicates_ignore_offset_and_scale() -> None:
    t = np.linspace(0, 6, 100)
    rng = np.random.default_rng(0)
    series = np.stack([np.sin(t), 3 * np.sin(t) + 5, np.cos(t), rng.normal(size=100)])
    series = np.vstack([series, np.sin(t) + rng.normal(0, 0.01, 100)])
    a, b = near_duplicate_series(series, 0.05)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == {(0, 1), (0, 4), (1, 4)}


def test_series_length_policies() -> None:
    raw = [np.arange(10.0), np.arange(5.0), np.array([1.0, np.nan, 3.0, 4, 5, 6, 7, 8, 9, 10])]
    resampled, report = canonical_series(raw, None, "resample")
    assert resampled.shape == (3, 10) and report["resampled"] == 1
    assert resampled[1, -1] == 4.0 and resampled[2, 1] == 2.0
    padded, report = canonical_series(raw, 8, "pad_crop")
    assert padded[0].tolist() == list(range(8)) and padded[1, -1] == 4.0
    assert report == {"target_length": 8, "interpolated": 1, "resampled": 0, "padded": 1,
                      "cropped": 2}  # fmt: skip


def test_canonicalize_unifies_case_to_the_most_frequent_spelling() -> None:
    frame = pd.DataFrame({"c": ["Male", "male", "Male", "MALE", "Female", "x1"]})
    out, report = canonicalize(frame, [], casefold=True)
    assert out["c"].tolist() == ["Male", "Male", "Male", "Male", "Female", "x1"]
    assert report["columns"]["c"]["case_unified"] == 2


def test_ood_predicate() -> None:
    frame = pd.DataFrame(
        {"country": pd.array(["US", "Peru", None, "us"], dtype="string"), "age": [20.0, 70, 40, 65]}
    )
    assert evaluate_predicate("country != US", frame).tolist() == [False, True, False, False]
    mask = evaluate_predicate("age >= 65 and country == us or country == Peru", frame)
    assert mask.tolist() == [False, True, False, True]
    assert parse_predicate("`native-country` != 'United-States'") == [
        [("native-country", "!=", "United-States")]
    ]
    with pytest.raises(ConfigError, match=r"prepare\.ood"):
        parse_predicate("age is old")
    with pytest.raises(ConfigError, match="numeric"):
        evaluate_predicate("age > old", frame)


def test_minhash_text_clusters() -> None:
    from sslops.data.minhash import shingles, signatures, text_clusters

    texts = [
        "the customer called about a refund for the card",
        "the customer called about a refund for the card today",
        "completely different words in this other note",
        "the customer called about a refund for the card",
        None,
        "",
    ]
    sig = signatures(*shingles(texts))
    assert (sig[0] == sig[3]).all()
    assert (sig[0] == sig[1]).mean() > 0.7 > (sig[0] == sig[2]).mean()
    labels = text_clusters(sig, 0.7)
    assert labels[0] == labels[1] == labels[3]
    assert len({labels[0], labels[2], labels[4], labels[5]}) == 4


def test_the_first_occurrence_in_input_order_is_the_one_kept() -> None:
    """prepare keeps the first of exact duplicates (prepare/merge.py: 'first occurrence in input
    order wins'); keeping the last instead changed no other test (found by the mutation2
    review)."""
    kept = first_occurrences(np.array([5, 7, 5, 5, 7, 9], dtype=np.uint64))
    assert kept.tolist() == [True, True, False, False, False, True]
