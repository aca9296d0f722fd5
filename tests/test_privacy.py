"""What of the raw data leaves the training boundary: no value of an identifier-like column
in the encoding or the exported model, no positive rate of a small sensitive group in the
data card, no rare cell quoted in an error message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sslops.config import Config, validate_config
from sslops.data.pii import value_shape
from sslops.errors import DataError
from sslops.export.graph import _front_end
from sslops.export.stage import input_schema
from sslops.prepare import PreparedData, prepare
from tests.conftest import ADULT

FREQUENT = [f"Frequent Patient{j:02d}" for j in range(20)]


def adult(rows: int, seed: int) -> pd.DataFrame:
    frame = pd.read_csv(ADULT / "train.csv.gz", dtype=str, keep_default_na=False)
    return frame.sample(n=rows, random_state=seed).reset_index(drop=True)


def config(path: Path, **sections: Any) -> Config:
    raw: dict[str, Any] = {
        "data": {"train": str(path), "label": "income", "positive": ">50K",
                 "sensitive": ["sex", "race"]},
        "prepare": {"test_fraction": 0.2},
        **sections,
    }  # fmt: skip
    return validate_config(raw)


@pytest.fixture(scope="module")
def patients(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Adult rows with an undeclared ``name`` column: most names once, 20 patients with six
    visits each (more than prepare.min_category_count rows)."""
    root = tmp_path_factory.mktemp("patients")
    frame = adult(1500, seed=1)
    names = [f"Patient Unique{i:04d}" for i in range(len(frame))]
    for j, name in enumerate(FREQUENT):
        names[j * 6 : j * 6 + 6] = [name] * 6
    frame["name"] = names
    frame.to_csv(root / "raw.csv", index=False)
    return root, prepare(config(root / "raw.csv"), root / "prepared")


def test_an_identifier_like_column_is_no_feature_and_no_value_of_it_is_stored(
    patients: tuple[Path, Path],
) -> None:
    """A patient's name over six visits was a level, so it was in encoding.json, the model's
    metadata (``inputs``) and its LabelEncoder: a model file that is shipped named patients,
    and every request to it had to send the name."""
    _, out = patients
    card = json.loads((out / "datacard.json").read_text())
    assert list(card["identifier_like_train"]) == ["name"]
    data = PreparedData(out)
    assert "name" not in data.schema["features"]
    assert "name" not in [c["name"] for c in input_schema(data)]
    shipped = json.dumps(input_schema(data)) + json.dumps(data.schema["encoded_features"])
    front = _front_end(data.encoding, 18, 8).SerializeToString()
    stored = b"".join(p.read_bytes() for p in out.iterdir() if p.suffix in {".json", ".md"})
    for text in FREQUENT:
        assert text not in shipped and text.encode() not in front + stored, text
    assert "left out of the features" in (out / "datacard.md").read_text()
    # Other categorical columns keep their levels.
    workclass = next(c for c in data.encoding.categorical if c.name == "workclass")
    assert "Private" in workclass.categories


def test_a_table_whose_only_feature_looks_like_an_identifier_is_refused(tmp_path: Path) -> None:
    frame = adult(1000, seed=3)[["income", "sex", "race"]]
    frame["visit"] = [f"V{i:05d}" for i in range(len(frame))]
    frame.to_csv(tmp_path / "raw.csv", index=False)
    prepare_options = {"sensitive_as_features": False, "near_duplicates": {"enabled": False}}
    cfg = config(tmp_path / "raw.csv", prepare=prepare_options)
    with pytest.raises(DataError, match=r"every feature column \('visit'\) has a distinct value"):
        prepare(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_small_sensitive_group_shows_its_count_and_no_positive_rate(
    patients: tuple[Path, Path],
) -> None:
    """With all of a group's five rows negative, a rate of 0.000 told each member's label."""
    _, out = patients
    card = json.loads((out / "datacard.json").read_text())
    assert card["small_group_rows"] == 10  # evaluate.min_group_rows
    tables = [*card["sensitive_groups_train"].values(),
              *card["sensitive_intersections_train"].values()]  # fmt: skip
    groups = [g for table in tables for g in table]
    small = [g for g in groups if g["rows"] < 10]
    assert small and all(g["positive_rate"] is None for g in small)
    assert all(isinstance(g["positive_rate"], float) for g in groups if g["rows"] >= 10)
    markdown = (out / "datacard.md").read_text()
    for g in small:
        assert f"| {g['group']} | {g['rows']} | not shown (< 10 rows) |" in markdown


def test_the_small_group_threshold_is_evaluate_min_group_rows(
    patients: tuple[Path, Path], tmp_path: Path
) -> None:
    root, _ = patients
    cfg = config(root / "raw.csv", evaluate={"min_group_rows": 3})
    card = json.loads((prepare(cfg, tmp_path / "out") / "datacard.json").read_text())
    assert card["small_group_rows"] == 3
    groups = [g for table in card["sensitive_intersections_train"].values() for g in table]
    assert any(3 <= g["rows"] < 10 and g["positive_rate"] is not None for g in groups)
    assert all(g["positive_rate"] is None for g in groups if g["rows"] < 3)


def test_a_name_in_a_number_column_is_named_by_its_row_not_quoted(tmp_path: Path) -> None:
    """The error went to the console, the KFP log and the ticket, with the name, and its hint
    proposed the name as a missing-value marker: a config (filed in every artifact, the
    ONNX metadata's preprocessing) that held a patient's name."""
    frame = adult(600, seed=2)
    frame.loc[5, "age"] = "Jane Doe"
    frame.loc[::40, "hours-per-week"] = "unknown"  # a marker: repeated, so quoted
    frame.to_csv(tmp_path / "raw.csv", index=False)
    with pytest.raises(DataError) as caught:
        prepare(config(tmp_path / "raw.csv"), tmp_path / "out")
    message = str(caught.value)
    assert "Jane" not in message and "Doe" not in message
    assert "column 'age'" in message and "data row 6: 'Aaaa Aaa'" in message
    assert "is not quoted" in message and "data.na_values=" not in message
    assert not (tmp_path / "out").exists()
    frame.loc[5, "age"] = "39"
    frame.to_csv(tmp_path / "raw.csv", index=False)
    with pytest.raises(DataError) as caught:
        prepare(config(tmp_path / "raw.csv"), tmp_path / "out")
    message = str(caught.value)
    assert "(e.g. 'unknown')" in message and "not quoted" not in message
    assert """--set 'data.na_values=["?", "", "unknown"]'""" in message


@pytest.mark.parametrize(
    ("text", "shape"),
    [("Jane Doe", "Aaaa Aaa"), ("$40,000", "$99,999"), ("12.5%", "99.9%"), ("Zoë 3", "Aaa 9"),
     ("x" * 40, "a" * 30)],
)  # fmt: skip
def test_value_shape_keeps_the_form_not_the_text(text: str, shape: str) -> None:
    assert value_shape(text) == shape
