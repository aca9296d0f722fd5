"""prepare's empty-split error names the cause when data.test holds data.train's rows (the
errmsg review): it said to provide more rows, though the file had plenty."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sslops.cli import main


@pytest.fixture
def table(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = 400
    path = tmp_path / "train.csv"
    pd.DataFrame({
        "age": rng.integers(18, 80, rows), "hours": rng.integers(1, 60, rows),
        "sex": rng.choice(["M", "F"], rows), "job": rng.choice(["x", "y", "z"], rows),
        "y": rng.choice(["yes", "no"], rows),
    }).drop_duplicates().to_csv(path, index=False)  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("copies", "said"),
    [
        ("same", "{n} rows of data.train copy rows of data.test ({n} exactly)"),
        ("age_spelled_otherwise", "{n} rows of data.train copy rows of data.test (0 exactly, "
                                  "{n} in all but at most 1 feature column(s), "
                                  "prepare.near_duplicates.max_differing_fields)"),
    ],
)  # fmt: skip
def test_a_test_file_holding_the_training_rows_is_named_as_the_cause(
    table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], copies: str, said: str
) -> None:
    test = table
    if copies == "age_spelled_otherwise":  # each row differs from its training row in age
        test = tmp_path / "test.csv"
        frame = pd.read_csv(table)
        frame.assign(age=frame["age"].astype(str) + "y").to_csv(test, index=False)
    out = tmp_path / "prepared"
    code = main(["prepare", "--out", str(out), "--set", f"data.train={table}",
                 "--set", f"data.test={test}", "--set", "data.label=y",
                 "--set", "data.positive=yes", "--set", "data.sensitive=[sex]"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: the train split is empty; ")
    assert said.format(n=len(pd.read_csv(table))) in err
    assert err.endswith("expected a data.test that holds other rows than data.train")
    assert "provide more rows" not in err
    assert not out.exists()


def test_a_column_name_repeated_in_the_header_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table, out = tmp_path / "rows.csv", tmp_path / "prepared"
    table.write_text("age,sex,age,y\n40,M,41,yes\n30,F,31,no\n")
    code = main(["prepare", "--out", str(out), "--set", f"data.train={table}",
                 "--set", "data.label=y", "--set", "data.positive=yes",
                 "--set", "data.sensitive=[sex]"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err == (f"error: data.train: {table} has duplicate column names ['age']; expected "
                   "each column named once: rename or delete the repeats")  # fmt: skip
    assert not out.exists()
