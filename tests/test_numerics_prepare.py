"""Numeric columns a 32-bit model cannot read are refused by prepare (found by the numerics
review). Before, a value beyond ±3.4e38 (``1e300`` in a file) or a column of values all
below float32's smallest normal number (``1e-50``) was prepared, its features were NaN in
every row or some, and pretraining failed with "every step ... had a non-finite loss ...
lower pretrain.learning_rate" (or a scikit-learn traceback for a value in the test split).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sslops.config import Config, validate_config
from sslops.errors import DataError
from sslops.prepare import PreparedData, prepare
from tests.test_prepare_tabular import adult, assert_fails_cleanly


def config(path: Path) -> Config:
    data = {"train": str(path), "label": "income", "positive": ">50K", "sensitive": ["sex"]}
    return validate_config({"data": data, "prepare": {"test_fraction": 0.2}})


def _with(tmp_path: Path, values: list[str] | str) -> Path:
    frame = adult(400)
    frame["fnlwgt"] = values
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("first", "rest", "needles"),
    [
        ("1e300", None, ["column 'fnlwgt': ", " split lie beyond ±3.4e+38 "
                         "(e.g. 1e+300), the largest 32-bit float", "rescale the column"]),
        ("-3.5e38", None, ["(e.g. -3.5e+38)"]),
        # all below 1.2e-38: 0 in 32 bits, so a standard deviation of 0 and 0/0 = NaN
        (None, "tiny", ["column 'fnlwgt': standardized as 32-bit floats, the train split's "
                        "value ", "becomes nan", "0.0 in 32 bits", "rescale the column"]),
        # within range, but one value's distance from the mean is not
        ("-3e38", "3e38", ["column 'fnlwgt': standardized as 32-bit floats, the ",
                           "value -3e+38 becomes -inf (training mean 2.9"]),
    ],
)  # fmt: skip
def test_a_numeric_column_a_32_bit_model_cannot_read_is_refused(
    tmp_path: Path, first: str | None, rest: str | None, needles: list[str]
) -> None:
    weights = adult(400)["fnlwgt"].astype(float)
    scale = 1e-60 if rest == "tiny" else 1.0
    values = [f"{w * scale:g}" if rest in (None, "tiny") else rest for w in weights]
    if first is not None:
        values[:10] = [first] * 10  # some in the training split, whichever rows it draws
    assert_fails_cleanly(config(_with(tmp_path, values)), tmp_path / "out", *needles)


def test_large_values_within_range_are_prepared_and_finite(tmp_path: Path) -> None:
    weights = adult(400)["fnlwgt"].astype(float)
    out = prepare(config(_with(tmp_path, [f"{w * 1e30:g}" for w in weights])), tmp_path / "out")
    for split in ("train", "validation", "test"):
        features = PreparedData(out).split(split).features
        assert np.isfinite(features).all() and features.std() > 0, split


def test_the_range_is_checked_in_every_split(tmp_path: Path) -> None:
    from sslops.prepare.ranges import check_float32_range

    fine = pd.DataFrame({"x": [1.0, 2.0]})
    check_float32_range({"train": fine, "test": fine}, ["x"])
    with pytest.raises(DataError, match=r"1 value\(s\) of the unlabeled split lie beyond"):
        check_float32_range({"train": fine, "unlabeled": pd.DataFrame({"x": [1e39]})}, ["x"])
