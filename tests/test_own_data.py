"""A bank's own table, not Adult-shaped: an integer customer id, a 0/1 label, a gender with
a missing value, a postcode of hundreds of values, heavy-tailed numbers. Seconds each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sslops.config import Config, validate_config
from sslops.prepare import prepare


def credit(rows: int = 800, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    utilization = rng.beta(2, 5, rows)
    late = rng.poisson(0.5, rows)
    z = -2.5 + 3 * utilization + 0.7 * late
    return pd.DataFrame({
        "customer_id": rng.choice(10**16, rows, replace=False) + 10**15,  # 16 digits
        "gender": rng.choice(np.array(["F", "M", "X", None], dtype=object), rows,
                             p=[0.45, 0.45, 0.05, 0.05]),
        "postcode": [f"PC{i}" for i in rng.integers(1000, 1300, rows)],
        "income": np.exp(rng.normal(10.5, 0.8, rows)).round(2),
        "utilization": utilization.round(4),
        "late_payments": late,
        "default": (rng.random(rows) < 1 / (1 + np.exp(-z))).astype(int),
    })  # fmt: skip


def credit_config(path: Path, **data: Any) -> Config:
    raw: dict[str, Any] = {
        "data": {
            "train": str(path), "label": "default", "positive": 1, "sensitive": ["gender"],
            "identifiers": ["customer_id"], "na_values": [""],
            "format": "parquet" if path.suffix == ".parquet" else "csv", **data,
        },
        "prepare": {"test_fraction": 0.2},
    }  # fmt: skip
    return validate_config(raw)


def test_a_parquet_integer_id_beyond_float_precision_is_dropped_not_a_crash(
    tmp_path: Path,
) -> None:
    frame = credit()
    frame["account_no"] = frame["customer_id"] + 1  # undeclared: read as a number, as in a CSV
    frame.to_parquet(tmp_path / "credit.parquet", index=False)
    out = prepare(credit_config(tmp_path / "credit.parquet"), tmp_path / "out")
    schema = json.loads((out / "schema.json").read_text())
    assert "customer_id" not in schema["features"]
    train = pd.read_parquet(out / "train.parquet")
    assert "customer_id" not in train.columns
    assert pd.api.types.is_float_dtype(train["account_no"])


def test_the_data_card_counts_the_rows_max_categories_folds_into_other(tmp_path: Path) -> None:
    credit().to_csv(tmp_path / "credit.csv", index=False)
    raw = credit_config(tmp_path / "credit.csv").model_dump(mode="json")
    raw["prepare"].update(max_categories=12, min_category_count=2)
    out = prepare(validate_config(raw), tmp_path / "out")
    card = json.loads((out / "datacard.json").read_text())
    encoding = json.loads((out / "encoding.json").read_text())
    kept = next(c["categories"] for c in encoding["categorical"] if c["name"] == "postcode")
    train = pd.read_parquet(out / "train.parquet")
    folded = card["folded_into_other_train"]["postcode"]
    assert folded["levels"] == len(kept) - 2 == 10
    assert folded["rows"] == int((~train["postcode"].isin(kept)).sum()) > len(train) // 2
    assert folded["distinct"] == train["postcode"].nunique()
    assert "gender" not in card["folded_into_other_train"]  # 3 values and missing: all kept
    markdown = (out / "datacard.md").read_text()
    assert "encoded as `__other__`" in markdown and "| `postcode` | " in markdown


def test_a_column_the_pii_scan_made_constant_is_not_a_model_input(tmp_path: Path) -> None:
    # Every date reads as a possible date of birth and becomes one placeholder in training;
    # a model reading the column would see raw dates at prediction time, all unseen.
    frame = credit()
    days = np.random.default_rng(1).integers(0, 900, len(frame))
    frame["application_date"] = (pd.Timestamp("2021-01-01") + pd.to_timedelta(days, "D")).strftime(
        "%Y-%m-%d"
    )
    frame.to_csv(tmp_path / "credit.csv", index=False)
    out = prepare(credit_config(tmp_path / "credit.csv"), tmp_path / "out")
    schema = json.loads((out / "schema.json").read_text())
    encoding = json.loads((out / "encoding.json").read_text())
    assert "application_date" not in schema["features"]
    assert "application_date" not in {c["name"] for c in encoding["categorical"]}
    assert schema["features"] == ["gender", "postcode", "income", "utilization", "late_payments"]
    card = json.loads((out / "datacard.json").read_text())
    assert card["constant_columns_dropped"] == ["application_date"]
    assert "Left out of the features" in (out / "datacard.md").read_text()


def test_a_split_with_few_rows_of_the_positive_class_is_noted(tmp_path: Path, capsys: Any) -> None:
    frame = credit(2000)
    frame["default"] = (np.arange(len(frame)) % 30 == 0).astype(int)  # 3.3%, as a bank's defaults
    frame.to_csv(tmp_path / "credit.csv", index=False)
    out = prepare(credit_config(tmp_path / "credit.csv"), tmp_path / "out")
    card = json.loads((out / "datacard.json").read_text())
    validation = pd.read_parquet(out / "validation.parquet")
    positives = int(validation["default"].sum())
    assert 0 < positives < 10
    assert card["few_class_rows"]["validation"] == {
        "positive": positives, "negative": len(validation) - positives
    }  # fmt: skip
    expected = f"validation {positives} positive / {len(validation) - positives:,} negative"
    assert expected in capsys.readouterr().err
    assert expected in (out / "datacard.md").read_text()
    # a balanced label: nothing to note
    frame["default"] = np.arange(len(frame)) % 3 == 0
    frame["default"] = frame["default"].astype(int)
    frame.to_csv(tmp_path / "balanced.csv", index=False)
    balanced = prepare(credit_config(tmp_path / "balanced.csv"), tmp_path / "out3")
    assert json.loads((balanced / "datacard.json").read_text())["few_class_rows"] == {}


def test_every_row_labeled_finetunes_with_postprocessing(tmp_path: Path) -> None:
    """The README's advice for a fully labeled table (finetune.label_fraction=1.0) left no
    held-out rows, and the ThresholdOptimizer candidate scored an empty array: a traceback."""
    from sslops.config import load_config
    from sslops.finetune import finetune
    from sslops.pretrain import pretrain
    from tests.conftest import FAST_OVERRIDES, ROOT, adult_sample

    train = adult_sample(tmp_path / "train.csv", "train", 600)
    overrides = [o for o in FAST_OVERRIDES if not o.startswith("finetune.label_fraction")]
    cfg = load_config(ROOT / "configs" / "adult.yaml", [
        *overrides, f"data.train={train}", "data.test=null", "finetune.label_fraction=1.0",
        "finetune.fairness.postprocessing=true",
    ])  # fmt: skip
    prepare(cfg, tmp_path / "prepared")
    pretrain(cfg, tmp_path / "prepared", tmp_path / "pretrained")
    finetune(cfg, tmp_path / "prepared", tmp_path / "pretrained", tmp_path / "finetuned")
    report = json.loads((tmp_path / "finetuned" / "finetune.json").read_text())
    names = [c["name"] for c in report["fairness"]["candidates"]]
    assert report["unlabeled_rows"] == 0 and "ssl+threshold_optimizer" in names
