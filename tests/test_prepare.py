"""The prepare stage: outputs, identifier removal, and clean failures on bad input files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sslops.artifacts import META, read_meta, sha256_file
from sslops.config import Config, validate_config
from sslops.data.encoding import TabularEncoding
from sslops.data.readers import read_csv
from sslops.errors import DataError
from sslops.prepare import PreparedData, prepare

IDENTIFIER = "fnlwgt"
PAYLOAD = {
    "train.parquet",
    "validation.parquet",
    "test.parquet",
    "encoding.json",
    "schema.json",
    "datacard.json",
    "datacard.md",
    "datacard_groups.png",
    "datacard_missing.png",
}


def with_data(cfg: Config, **data: Any) -> Config:
    raw = cfg.model_dump(mode="json")
    raw["data"].update(data)
    return validate_config(raw)


def with_prepare(cfg: Config, **options: Any) -> Config:
    raw = cfg.model_dump(mode="json")
    raw["prepare"].update(options)
    return validate_config(raw)


@pytest.fixture(scope="module")
def prepared(small_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = with_data(small_config, identifiers=[IDENTIFIER])
    return prepare(cfg, tmp_path_factory.mktemp("prepare") / "prepared")


@pytest.fixture(scope="module")
def raw_lines(small_data: dict[str, Path]) -> list[str]:
    return small_data["train"].read_text(encoding="utf-8").splitlines()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- a successful run -----------------------------------------------------------------------


def test_prepare_writes_every_output(prepared: Path) -> None:
    assert {p.name for p in prepared.iterdir()} == PAYLOAD | {META}
    meta = read_meta(prepared, "prepare")
    assert set(meta["files"]) == PAYLOAD
    assert not [p for p in prepared.parent.iterdir() if p.name.startswith(".")]


def test_prepare_records_sources(prepared: Path, small_data: dict[str, Path]) -> None:
    meta = read_meta(prepared, "prepare")
    assert meta["sources"] == {
        "data.train": {
            "path": str(small_data["train"]),
            "sha256": sha256_file(small_data["train"]),
        },
        "data.test": {"path": str(small_data["test"]), "sha256": sha256_file(small_data["test"])},
    }
    assert meta["config"]["data"]["identifiers"] == [IDENTIFIER]


def test_prepare_schema_and_encoding(prepared: Path, small_config: Config) -> None:
    schema = json.loads((prepared / "schema.json").read_text(encoding="utf-8"))
    assert schema["label"] == small_config.data.label == "income"
    assert schema["positive"] == ">50K"
    assert schema["sensitive"] == ["sex", "race"]
    assert "income" not in schema["features"]
    assert {"sex", "race", "age"} <= set(schema["features"])
    encoding = TabularEncoding.load(prepared / "encoding.json")
    assert schema["encoded_features"] == encoding.feature_names
    assert {c.name for c in encoding.numeric} | {c.name for c in encoding.categorical} == set(
        schema["features"]
    )


def test_prepare_splits_are_consistent(prepared: Path) -> None:
    frames = {
        n: pd.read_parquet(prepared / f"{n}.parquet") for n in ("train", "validation", "test")
    }
    card = json.loads((prepared / "datacard.json").read_text(encoding="utf-8"))
    for name, frame in frames.items():
        assert len(frame) == card["splits"][name]["rows"] > 0
        assert frame["income"].notna().all()
        assert set(frame["income"]) <= {"<=50K", ">50K"}
    # with data.test given, test comes from the test file and train is cut ~90/10
    assert card["raw_rows"] == {"train": 3000, "test": 1000}
    assert len(frames["test"]) == 1000 - card["exact_duplicates_dropped"]["test"]
    share = len(frames["validation"]) / (len(frames["train"]) + len(frames["validation"]))
    assert share == pytest.approx(0.1, abs=0.03)
    # no row is in both train and validation
    keys = [frames[n].astype("string").fillna("").agg("|".join, axis=1) for n in frames]
    assert not set(keys[0]) & set(keys[1])


def test_prepare_datacard_markdown(prepared: Path) -> None:
    md = (prepared / "datacard.md").read_text(encoding="utf-8")
    assert md.startswith("# Data card\n")
    assert "- Label: `income` (positive class `>50K`)" in md
    assert "## Sensitive attribute `sex` (train split)" in md
    assert "## Sensitive attribute `race` (train split)" in md


def test_the_datacard_publishes_percentiles_not_one_person_s_extreme_value(
    prepared: Path,
) -> None:
    import json

    card = json.loads((prepared / "datacard.json").read_text())
    ages = PreparedData(prepared).train.frame["age"].dropna()
    edges = card["numeric_edges_train"]["age"]
    assert set(edges) >= {"p01", "median", "p99"} and not {"min", "max"} & set(edges)
    assert ages.min() <= edges["p01"] < edges["p99"] <= ages.max()
    assert edges["p99"] < ages.max()  # the oldest person's age is not on the card
    md = (prepared / "datacard.md").read_text(encoding="utf-8")
    assert "| `age` |" in md and f"| {ages.max():g} |" not in md


def test_prepared_data_reader(prepared: Path) -> None:
    data = PreparedData(prepared)
    assert data.sensitive == ["sex", "race"]
    train = data.train
    assert train.features.shape == (len(train.frame), len(data.encoding.feature_names))
    assert set(train.target.tolist()) == {0, 1}
    assert train.target.tolist() == (train.frame["income"] == ">50K").astype(int).tolist()
    assert set(train.groups("sex")) <= {"Male", "Female", "(missing)"}


def test_identifier_column_reaches_no_data_file(prepared: Path) -> None:
    for name in ("train.parquet", "validation.parquet", "test.parquet"):
        assert IDENTIFIER not in pd.read_parquet(prepared / name).columns
    for name in ("train.parquet", "validation.parquet", "test.parquet", "encoding.json"):
        assert IDENTIFIER.encode() not in (prepared / name).read_bytes(), name
    schema = (prepared / "schema.json").read_text(encoding="utf-8")
    assert IDENTIFIER not in schema


def test_identifier_name_only_in_config_and_dropped_list(prepared: Path) -> None:
    meta = json.loads((prepared / META).read_text(encoding="utf-8"))
    del meta["config"]
    assert IDENTIFIER not in json.dumps(meta)
    card = json.loads((prepared / "datacard.json").read_text(encoding="utf-8"))
    assert card["dropped_identifier_columns"] == [IDENTIFIER]
    md = (prepared / "datacard.md").read_text(encoding="utf-8")
    assert f"- Identifier columns dropped: `{IDENTIFIER}`" in md


def test_datacard_does_not_describe_identifier_columns(prepared: Path) -> None:
    card = json.loads((prepared / "datacard.json").read_text(encoding="utf-8"))
    del card["dropped_identifier_columns"]
    assert IDENTIFIER not in json.dumps(card)
    md = (prepared / "datacard.md").read_text(encoding="utf-8")
    mentions = [line for line in md.splitlines() if IDENTIFIER in line]
    assert mentions == [f"- Identifier columns dropped: `{IDENTIFIER}`"]


def test_identifier_values_reach_no_output_file(
    prepared: Path, small_data: dict[str, Path]
) -> None:
    values: list[str] = []
    for split in ("train", "test"):
        column = pd.read_csv(small_data[split], dtype=str)[IDENTIFIER]
        values += [v for v in column.unique() if len(v) >= 6][:4]
    assert len(values) == 8
    for path in prepared.iterdir():
        data = path.read_bytes()
        for value in values:
            assert value.encode() not in data, (path.name, value)


def test_prepare_is_deterministic(small_config: Config, prepared: Path, tmp_path: Path) -> None:
    again = prepare(with_data(small_config, identifiers=[IDENTIFIER]), tmp_path / "again")
    assert read_meta(again)["files"] == read_meta(prepared)["files"]


def test_prepare_without_test_file_cuts_a_test_split(small_config: Config, tmp_path: Path) -> None:
    cfg = with_prepare(with_data(small_config, test=None), test_fraction=0.2)
    out = prepare(cfg, tmp_path / "p")
    card = json.loads((out / "datacard.json").read_text(encoding="utf-8"))
    assert card["raw_rows"] == {"train": 3000}
    rows = {name: info["rows"] for name, info in card["splits"].items()}
    total = sum(rows.values())
    assert total == 3000 - card["exact_duplicates_dropped"]["train"]
    assert rows["test"] / total == pytest.approx(0.2, abs=0.04)
    assert rows["validation"] / total == pytest.approx(0.1, abs=0.03)


def test_prepare_sensitive_not_features(small_config: Config, tmp_path: Path) -> None:
    out = prepare(with_prepare(small_config, sensitive_as_features=False), tmp_path / "p")
    schema = json.loads((out / "schema.json").read_text(encoding="utf-8"))
    assert not {"sex", "race", "income"} & set(schema["features"])
    assert not [f for f in schema["encoded_features"] if f.startswith(("sex=", "race="))]
    # the columns stay in the frames: evaluation needs the groups
    data = PreparedData(out)
    assert {"sex", "race"} <= set(data.test.frame.columns)


def test_prepare_replaces_previous_output(small_config: Config, tmp_path: Path) -> None:
    out = prepare(small_config, tmp_path / "p")  # an earlier prepare artifact ...
    (out / "stale.txt").write_text("old")  # ... with a file it no longer makes
    prepare(small_config, out)
    assert not (out / "stale.txt").exists()  # (a folder that is no artifact: test_artifacts)
    read_meta(out, "prepare")


# --- bad inputs: DataError naming the file or column, and no output at all ------------------


def assert_fails_cleanly(cfg: Config, root: Path, *needles: str) -> DataError:
    out = root / "artifacts" / "prepared"
    with pytest.raises(DataError) as info:
        prepare(cfg, out)
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)
    assert not out.exists()
    parent = out.parent
    assert not parent.exists() or list(parent.iterdir()) == []
    assert not list(root.rglob("*.partial-*"))
    return info.value


def test_missing_label_column(small_config: Config, raw_lines: list[str], tmp_path: Path) -> None:
    frame = pd.read_csv(write_lines(tmp_path / "full.csv", raw_lines[:300]), dtype=str)
    path = tmp_path / "nolabel.csv"
    frame.drop(columns=["income"]).to_csv(path, index=False)
    cfg = with_data(small_config, train=str(path), test=None)
    assert_fails_cleanly(cfg, tmp_path, "'income'", str(path), "data.label")


def test_missing_label_column_in_test_file(small_config: Config, tmp_path: Path) -> None:
    test = pd.read_csv(small_config.data.test, dtype=str).drop(columns=["income"])
    path = tmp_path / "test-nolabel.csv"
    test.to_csv(path, index=False)
    assert_fails_cleanly(with_data(small_config, test=str(path)), tmp_path, "'income'", str(path))


def test_missing_sensitive_column(small_config: Config, tmp_path: Path) -> None:
    cfg = with_data(small_config, sensitive=["sex", "ethnicity"])
    assert_fails_cleanly(cfg, tmp_path, "'ethnicity'", "data.sensitive")


def test_missing_identifier_column(small_config: Config, tmp_path: Path) -> None:
    cfg = with_data(small_config, identifiers=["ssn"])
    assert_fails_cleanly(cfg, tmp_path, "'ssn'", "data.identifiers")


def test_positive_value_absent(small_config: Config, tmp_path: Path) -> None:
    cfg = with_data(small_config, positive=">60K")
    error = assert_fails_cleanly(cfg, tmp_path, "'>60K'", "'income'")
    assert "<=50K" in str(error)  # shows what was seen


def test_missing_file(small_config: Config, tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    assert_fails_cleanly(with_data(small_config, train=str(path)), tmp_path, str(path), "not found")


def test_empty_csv(small_config: Config, tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    cfg = with_data(small_config, train=str(path), test=None)
    assert_fails_cleanly(cfg, tmp_path, str(path), "empty")


def test_header_only_csv(small_config: Config, raw_lines: list[str], tmp_path: Path) -> None:
    path = write_lines(tmp_path / "header.csv", raw_lines[:1])
    cfg = with_data(small_config, train=str(path), test=None)
    assert_fails_cleanly(cfg, tmp_path, str(path), "no rows")


def test_row_with_too_many_fields(
    small_config: Config, raw_lines: list[str], tmp_path: Path
) -> None:
    lines = list(raw_lines[:400])
    lines[200] += ",extra,fields"
    path = write_lines(tmp_path / "ragged.csv", lines)
    cfg = with_data(small_config, train=str(path), test=None)
    assert_fails_cleanly(cfg, tmp_path, str(path), "well-formed")


def test_first_row_with_one_extra_field(raw_lines: list[str], tmp_path: Path) -> None:
    lines = list(raw_lines[:400])
    lines[1] += ",extra"
    path = write_lines(tmp_path / "ragged-first.csv", lines)
    with pytest.raises(DataError, match="well-formed"):
        read_csv(str(path), ["?", ""])


@pytest.mark.parametrize("where", ["early", "late"])
def test_non_utf8_file(
    small_config: Config, raw_lines: list[str], tmp_path: Path, where: str
) -> None:
    lines = list(raw_lines)
    row = 2 if where == "early" else len(lines) - 1  # late: past the header reader's first chunk
    lines[row] = lines[row].replace(",", ",\xe9", 1)
    path = tmp_path / f"latin-{where}.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    cfg = with_data(small_config, train=str(path), test=None)
    error = assert_fails_cleanly(cfg, tmp_path, str(path), "data.train")
    assert "utf-8" in str(error).lower()


def test_non_utf8_test_file(small_config: Config, tmp_path: Path) -> None:
    path = tmp_path / "test-latin.csv"
    path.write_bytes(Path(small_config.data.test).read_bytes() + "1,caf\xe9\n".encode("latin-1"))
    assert_fails_cleanly(with_data(small_config, test=str(path)), tmp_path, str(path), "data.test")


def test_single_class_train_split(small_config: Config, tmp_path: Path) -> None:
    frame = pd.read_csv(small_config.data.train, dtype=str)
    path = tmp_path / "oneclass.csv"
    frame[frame["income"] == "<=50K"].to_csv(path, index=False)
    test = pd.read_csv(small_config.data.test, dtype=str)
    test_path = tmp_path / "test.csv"
    test.to_csv(test_path, index=False)
    cfg = with_data(small_config, train=str(path), test=str(test_path))
    assert_fails_cleanly(cfg, tmp_path, "'income'")
