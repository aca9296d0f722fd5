"""Canonicalization, deduplication, stable splits and the feature encoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sslops.data.canonicalize import canonicalize, label_hits
from sslops.data.datacard import datacard_markdown, label_note, label_values
from sslops.data.encoding import MISSING, OTHER, TabularEncoding
from sslops.data.split import assign_splits, drop_exact_duplicates, row_hashes

NA = ["?", ""]

# --- canonicalize ---------------------------------------------------------------------------


def test_canonicalize_text_nfkc_strip_and_na_markers() -> None:
    frame = pd.DataFrame({"sex": ["Ｍale", " Female ", "?", " ? ", "", None, "Male"]})
    out, report = canonicalize(frame, NA)
    assert out["sex"].tolist()[:2] == ["Male", "Female"]
    assert out["sex"].isna().tolist() == [False, False, True, True, True, True, False]
    assert out["sex"].iloc[6] == "Male"
    assert str(out["sex"].dtype) == "string"
    info = report["columns"]["sex"]
    assert info["dtype"] == "categorical"
    assert info["missing"] == 4
    # 'Ｍale', ' Female ', '?' and ' ? ' changed; '' and None were already empty
    assert info["normalized_text"] == 4
    assert "cast_to_numeric" not in info


def test_canonicalize_nfkc_folds_compatibility_characters() -> None:
    frame = pd.DataFrame({"c": ["ﬁsh", "Ｂａｃｈｅｌｏｒｓ", "\u00a0x\u3000"]})
    out, _ = canonicalize(frame, NA)
    assert out["c"].tolist() == ["fish", "Bachelors", "x"]


def test_canonicalize_casts_numeric_strings_and_drops_infinities() -> None:
    frame = pd.DataFrame({"n": ["1", " 2.5", "?", "3", "inf", "-inf"]})
    out, report = canonicalize(frame, NA)
    assert out["n"].dtype == np.float64
    assert out["n"].iloc[:2].tolist() == [1.0, 2.5]
    assert out["n"].iloc[3] == 3.0
    assert out["n"].isna().tolist() == [False, False, True, False, True, True]
    info = report["columns"]["n"]
    assert info == {
        "dtype": "numeric",
        "missing": 3,
        "normalized_text": 2,
        "cast_to_numeric": True,
        "infinite_to_missing": 2,
    }


def test_canonicalize_numeric_column_infinities_and_int_to_float() -> None:
    frame = pd.DataFrame({"x": [1.0, np.inf, 2.0, -np.inf], "i": [1, 2, 3, 4]})
    out, report = canonicalize(frame, NA)
    assert out["x"].isna().tolist() == [False, True, False, True]
    assert out["i"].dtype == np.float64
    assert out["i"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert report["columns"]["x"] == {"dtype": "numeric", "missing": 2, "infinite_to_missing": 2}
    assert report["columns"]["i"] == {"dtype": "numeric", "missing": 0}


def test_canonicalize_a_wide_table_builds_its_frame_at_once() -> None:
    """135 columns (sslops predict on a wide table) raised a pandas PerformanceWarning per
    numeric column past about 100, inserted one by one; pytest turns warnings into errors."""
    frame = pd.DataFrame(
        {f"c{i}": [str(i), " x ", "?"] if i % 10 == 1 else ["1", "2.5", ""] for i in range(135)},
        index=[7, 7, 3],  # a repeated index keeps each row where it was
    )
    out, report = canonicalize(frame, NA, casefold=True)
    assert list(out.columns) == list(frame.columns) and out.index.tolist() == [7, 7, 3]
    assert out["c1"].tolist()[:2] == ["1", "x"] and out["c1"].isna().tolist() == [False] * 2 + [
        True
    ]
    assert out["c0"].tolist()[:2] == [1.0, 2.5] and str(out["c1"].dtype) == "string"
    assert len(report["columns"]) == 135


def test_canonicalize_mixed_column_stays_categorical() -> None:
    frame = pd.DataFrame({"m": ["a", "1", "2", "?"]})
    out, report = canonicalize(frame, NA)
    assert str(out["m"].dtype) == "string"
    assert out["m"].iloc[:3].tolist() == ["a", "1", "2"]
    assert report["columns"]["m"]["dtype"] == "categorical"
    assert report["columns"]["m"]["missing"] == 1


def test_canonicalize_all_missing_column_is_categorical() -> None:
    frame = pd.DataFrame({"e": ["?", "", " "]})
    out, report = canonicalize(frame, NA)
    assert out["e"].isna().all()
    assert report["columns"]["e"]["dtype"] == "categorical"
    assert report["columns"]["e"]["missing"] == 3


def test_canonicalize_custom_na_markers() -> None:
    frame = pd.DataFrame({"c": ["NA", "n/a", "x", "?"]})
    out, _ = canonicalize(frame, ["NA", " n/a "])
    assert out["c"].isna().tolist() == [True, True, False, False]


def test_canonicalize_keeps_index_and_column_order() -> None:
    frame = pd.DataFrame({"b": ["1", "2"], "a": ["x", "y"]}, index=[10, 20])
    out, report = canonicalize(frame, NA)
    assert out.columns.tolist() == ["b", "a"]
    assert out.index.tolist() == [10, 20]
    assert list(report["columns"]) == ["b", "a"]


# --- deduplication --------------------------------------------------------------------------


def test_drop_exact_duplicates_counts_and_keeps_first() -> None:
    frame = pd.DataFrame(
        {
            "a": [1.0, 1.0, 2.0, 1.0, np.nan, np.nan],
            "b": ["x", "x", "x", "y", "z", "z"],
        },
        index=[5, 6, 7, 8, 9, 10],
    )
    out, dropped = drop_exact_duplicates(frame)
    assert dropped == 2
    assert out.index.tolist() == [0, 1, 2, 3]
    assert out["a"].tolist()[:3] == [1.0, 2.0, 1.0]
    assert out["b"].tolist() == ["x", "x", "y", "z"]


def test_drop_exact_duplicates_without_duplicates() -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["1", "2", "3"]})
    out, dropped = drop_exact_duplicates(frame)
    assert dropped == 0
    pd.testing.assert_frame_equal(out, frame)


def test_row_hashes_ignore_column_order_and_index() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    moved = frame[["b", "a"]].set_axis([7, 3])
    np.testing.assert_array_equal(row_hashes(frame), row_hashes(moved))
    assert not np.array_equal(row_hashes(frame, seed=0), row_hashes(frame, seed=1))


# --- splits ---------------------------------------------------------------------------------


def synthetic(rows: int, start: int = 0) -> pd.DataFrame:
    ids = np.arange(start, start + rows)
    return pd.DataFrame(
        {
            "age": (ids % 73).astype("float64"),
            "job": pd.array([f"job-{i}" for i in ids], dtype="string"),
            "hours": (ids * 0.5).astype("float64"),
        }
    )


def test_split_fractions_roughly_right() -> None:
    splits = assign_splits(synthetic(20_000), validation_fraction=0.1, test_fraction=0.2)
    shares = {name: float((splits == name).mean()) for name in ("train", "validation", "test")}
    assert shares["test"] == pytest.approx(0.2, abs=0.015)
    assert shares["validation"] == pytest.approx(0.1, abs=0.015)
    assert shares["train"] == pytest.approx(0.7, abs=0.015)


def test_split_without_test_fraction_has_no_test_rows() -> None:
    splits = assign_splits(synthetic(2000), validation_fraction=0.1, test_fraction=0.0)
    assert set(splits) == {"train", "validation"}


def test_appending_rows_never_moves_existing_rows() -> None:
    old = synthetic(3000)
    before = assign_splits(old, 0.1, 0.2, seed=3)
    grown = pd.concat([old, synthetic(2000, start=3000)], ignore_index=True)
    after = assign_splits(grown, 0.1, 0.2, seed=3)
    np.testing.assert_array_equal(after[:3000], before)
    # Prepending and shuffling do not move them either: the split is a function of the row.
    shuffled = grown.sample(frac=1.0, random_state=1)
    again = assign_splits(shuffled.reset_index(drop=True), 0.1, 0.2, seed=3)
    by_row = pd.Series(again, index=shuffled.index).sort_index().to_numpy()
    np.testing.assert_array_equal(by_row, after)


def test_split_depends_on_seed() -> None:
    frame = synthetic(2000)
    a = assign_splits(frame, 0.1, 0.2, seed=0)
    b = assign_splits(frame, 0.1, 0.2, seed=1)
    np.testing.assert_array_equal(a, assign_splits(frame, 0.1, 0.2, seed=0))
    assert (a != b).mean() > 0.2


# --- encoding -------------------------------------------------------------------------------


@pytest.fixture
def train_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [20.0, 30.0, np.nan, 50.0],
            "color": pd.array(["red", "blue", "red", None], dtype="string"),
            "size": pd.array(["S", "M", "L", "S"], dtype="string"),
        }
    )


def test_encoding_fit_statistics(train_frame: pd.DataFrame) -> None:
    enc = TabularEncoding.fit(train_frame, ["age", "color", "size"], max_categories=50)
    (age,) = enc.numeric
    assert age.name == "age"
    assert age.median == 30.0
    filled = np.array([20.0, 30.0, 30.0, 50.0])
    assert age.mean == pytest.approx(filled.mean())
    assert age.std == pytest.approx(filled.std())
    assert [c.name for c in enc.categorical] == ["color", "size"]
    assert enc.categorical[0].categories == ["blue", "red", MISSING, OTHER]
    assert enc.categorical[1].categories == ["L", "M", "S", MISSING, OTHER]


def test_encoding_feature_names_and_column_of(train_frame: pd.DataFrame) -> None:
    enc = TabularEncoding.fit(train_frame, ["color", "age", "size"], max_categories=50)
    assert enc.feature_names == [
        "age",
        "color=blue",
        "color=red",
        f"color={MISSING}",
        f"color={OTHER}",
        "size=L",
        "size=M",
        "size=S",
        f"size={MISSING}",
        f"size={OTHER}",
    ]
    assert enc.column_of == [0, 1, 1, 1, 1, 2, 2, 2, 2, 2]
    assert enc.n_columns == 3
    assert enc.transform(train_frame).shape == (4, len(enc.feature_names))


def test_encoding_transform_new_rows(train_frame: pd.DataFrame) -> None:
    enc = TabularEncoding.fit(train_frame, ["age", "color", "size"], max_categories=50)
    new = pd.DataFrame(
        {
            "age": [30.0, np.nan, 80.0],
            "color": pd.array(["green", None, "blue"], dtype="string"),
            "size": pd.array(["M", "XL", None], dtype="string"),
        }
    )
    x = enc.transform(new)
    assert x.dtype == np.float32
    names = enc.feature_names
    mean, std = enc.numeric[0].mean, enc.numeric[0].std
    # numeric: standardized with the train statistics; missing -> train median (30)
    expected = (np.array([30.0, 30.0, 80.0]) - mean) / std
    np.testing.assert_allclose(x[:, names.index("age")], expected, rtol=1e-6)

    def hot(row: int, prefix: str) -> list[str]:
        return [n for n, v in zip(names, x[row], strict=True) if n.startswith(prefix) and v == 1.0]

    assert hot(0, "color=") == [f"color={OTHER}"]  # unknown category
    assert hot(1, "color=") == [f"color={MISSING}"]
    assert hot(2, "color=") == ["color=blue"]
    assert hot(0, "size=") == ["size=M"]
    assert hot(1, "size=") == [f"size={OTHER}"]
    assert hot(2, "size=") == [f"size={MISSING}"]
    one_hot = x[:, 1:]
    assert set(np.unique(one_hot)) == {0.0, 1.0}
    assert one_hot.sum(axis=1).tolist() == [2.0, 2.0, 2.0]


def test_encoding_train_numeric_is_standardized(train_frame: pd.DataFrame) -> None:
    enc = TabularEncoding.fit(train_frame, ["age"], max_categories=50)
    column = enc.transform(train_frame)[:, 0]
    assert column.mean() == pytest.approx(0.0, abs=1e-6)
    assert column.std() == pytest.approx(1.0, abs=1e-6)


def test_encoding_constant_numeric_gets_unit_std() -> None:
    frame = pd.DataFrame({"k": [5.0, 5.0, 5.0]})
    enc = TabularEncoding.fit(frame, ["k"], max_categories=50)
    assert enc.numeric[0].std == 1.0
    np.testing.assert_array_equal(enc.transform(frame)[:, 0], [0.0, 0.0, 0.0])


def test_encoding_all_missing_numeric_is_zero() -> None:
    frame = pd.DataFrame({"k": [np.nan, np.nan]})
    enc = TabularEncoding.fit(frame, ["k"], max_categories=50)
    assert enc.numeric[0].median == 0.0
    np.testing.assert_array_equal(enc.transform(frame)[:, 0], [0.0, 0.0])


def test_encoding_rare_categories_fold_into_other() -> None:
    values = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e"]
    frame = pd.DataFrame({"c": pd.array(values, dtype="string")})
    enc = TabularEncoding.fit(frame, ["c"], max_categories=4)
    assert enc.categorical[0].categories == ["a", "b", MISSING, OTHER]
    x = enc.transform(frame)
    other = enc.feature_names.index(f"c={OTHER}")
    assert x[:, other].sum() == 6  # c, c, c, d, d, e


def test_encoding_min_count_folds_levels_and_stores_none_of_them() -> None:
    values = ["a"] * 5 + ["b"] * 4 + ["id-1", "id-2", "id-3"]
    frame = pd.DataFrame({"c": pd.array(values, dtype="string")})
    enc = TabularEncoding.fit(frame, ["c"], max_categories=50, min_count=4)
    assert enc.categorical[0].categories == ["a", "b", MISSING, OTHER]
    other = enc.feature_names.index(f"c={OTHER}")
    assert enc.transform(frame)[:, other].sum() == 3
    assert TabularEncoding.fit(frame, ["c"], max_categories=50).categorical[0].categories == [
        "a", "b", "id-1", "id-2", "id-3", MISSING, OTHER
    ]  # fmt: skip


def test_encoding_save_load_round_trip(tmp_path: Path, train_frame: pd.DataFrame) -> None:
    enc = TabularEncoding.fit(train_frame, ["age", "color", "size"], max_categories=50)
    path = tmp_path / "encoding.json"
    enc.save(path)
    loaded = TabularEncoding.load(path)
    assert loaded == enc
    assert loaded.feature_names == enc.feature_names
    assert loaded.column_of == enc.column_of
    np.testing.assert_array_equal(loaded.transform(train_frame), enc.transform(train_frame))


def test_encoding_without_columns() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    enc = TabularEncoding.fit(frame, [], max_categories=50)
    x = enc.transform(frame)
    assert x.shape == (2, 0)
    assert x.dtype == np.float32


@pytest.mark.parametrize(
    ("values", "dtype", "positive", "expected"),
    [
        ([">50K", "<=50K", None], "str", ">50K", [True, False, False]),
        ([1, 0, 1], "int64", 1, [True, False, True]),
        ([1.0, 0.0, 1.0], "float64", "1", [True, False, True]),
        ([1, 0, 1], "int64", True, [True, False, True]),  # True counts as 1
        ([True, False, None], "boolean", True, [True, False, False]),  # a Parquet boolean
        (["true", "false", "True"], "str", True, [True, False, True]),  # booleans read as text
        ([True, False, True], "bool", "false", [False, True, False]),
        ([1, 0, 1], "int64", "yes", [False, False, False]),
        ([">50K", ">50K.", "<=50K."], "str", [">50K", ">50K."], [True, True, False]),  # a list
        ([1, 2, 3], "int64", [1, "3"], [True, False, True]),
    ],
)
def test_label_hits_compare_numbers_numerically_and_booleans_in_any_case(
    values: list[Any], dtype: str, positive: Any, expected: list[bool]
) -> None:
    assert label_hits(pd.Series(values, dtype=dtype), positive).tolist() == expected


@pytest.mark.parametrize(
    "values",
    [[True, False], [27.0, 2.5, 0.1, 1e20, 123456789.0, -3.0], [5, -12], ["x", "27"]],
)
def test_cell_text_is_what_prepare_wrote_for_a_typed_column(values: list[Any]) -> None:
    """Serving feeds (ONNX, shadow) turn a request's value into the category text that
    prepare got from Arrow's cast of the same typed column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from sslops.data.canonicalize import cell_text, cell_texts

    arrow = pc.cast(pa.array(values), pa.string()).to_pylist()
    assert [cell_text(v) for v in values] == arrow
    assert [cell_text(v) for v in pd.Series([*values, None]).to_numpy(dtype=object)] == [*arrow, ""]
    # the column-wise version (factorized: each distinct value converted once), repeats and
    # missing cells included, typed and as an object column
    column = pd.Series([*values, None, *values[::-1]])
    expected = [*arrow, "", *arrow[::-1]]
    assert cell_texts(column).tolist() == expected
    assert cell_texts(column.astype(object)).tolist() == expected


def test_cell_texts_keeps_true_and_1_apart_in_an_object_column() -> None:
    from sslops.data.canonicalize import cell_texts

    mixed = pd.Series([True, 1, 1.0, None, "1"], dtype=object)
    assert cell_texts(mixed).tolist() == ["true", "1", "1", "", "1"]


# --- label values -----------------------------------------------------------------------------


def test_label_values_by_class_and_the_note_only_for_more_than_two() -> None:
    labels = pd.Series([">50K"] * 5 + ["<=50K"] * 9 + ["unknown"] * 2 + [None] * 3)
    values = label_values(labels, ">50K")
    assert values == {"positive": {">50K": 5}, "negative": {"<=50K": 9, "unknown": 2}}
    assert label_note("income", values) == (
        "label 'income' has 3 values: positive '>50K' (5); negative '<=50K' (9), 'unknown' (2) "
        "— a value meaning 'not labeled yet' should be empty instead"
    )
    assert label_note("income", label_values(labels[labels != "unknown"], ">50K")) is None
    # values listed in data.positive were named: no note for them
    assert label_note("income", label_values(labels, [">50K", "unknown"])) is None
    assert label_note("income", {}) is None  # a data card written before label values
    # numbers as prepare writes them (1.0 -> '1'); a list of positive values; ties by value
    coded = label_values(pd.Series([1.0, 2.0, 2.0, 3.0, 3.0, 4.0]), [2, 4])
    assert coded == {"positive": {"2": 2, "4": 1}, "negative": {"3": 2, "1": 1}}
    many = label_values(pd.Series([f"v{i:02d}" for i in range(30)] + ["yes"] * 2), "yes")
    note = label_note("y", many) or ""
    assert "31 values" in note and "'v09' (1) and 20 more —" in note and "'v10'" not in note


def test_the_data_card_lists_every_label_value_of_a_one_vs_rest_label() -> None:
    card = {
        "label": "income", "positive": ">50K", "raw_rows": {}, "exact_duplicates_dropped": {},
        "train_rows_dropped_as_copies_of_test_rows": {"exact": 0, "near": 0},
        "near_duplicates": {}, "rows_without_label_dropped": 0, "dropped_identifier_columns": [],
        "hashed_identifier_columns": [], "ood": None, "splits": {},
        "pii_findings_redacted": {"by_column": {}}, "schema": {}, "sensitive_groups_train": {},
        "sensitive_intersections_train": {}, "rare_categories_train": {},
        "numeric_edges_train": {},
    }  # fmt: skip
    two = {"positive": {">50K": 501}, "negative": {"<=50K": 1376}}
    assert "Label values" not in datacard_markdown({**card, "label_values": two})
    three = {"positive": {">50K": 501}, "negative": {"<=50K": 1376, "unknown": 196}}
    text = datacard_markdown({**card, "label_values": three})
    assert (
        "- Label values (rows of every split), trained one-vs-rest: positive `>50K` (501); "
        "negative `<=50K` (1,376), `unknown` (196)." in text
    )
