"""Numeric columns a 32-bit model can read: checked before and after the encoding is fitted.

Every model sslops trains, and the exported ONNX graph, read a numeric column as a 32-bit
float standardized in 32-bit arithmetic (:meth:`sslops.data.encoding.TabularEncoding.transform`).
A value beyond ±3.4e38 (finite in the file, ``1e300``) becomes inf there, and a column whose
values all lie below float32's smallest normal number (``1e-50``) has a standard deviation
of 0 there: both made the column's features NaN in every row or some, silently, and the run
failed in pretraining with advice about the learning rate. Such columns are refused here,
naming the column, the split and a value, with what to do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sslops.data.encoding import TabularEncoding
from sslops.errors import DataError

FLOAT32_MAX = float(np.finfo(np.float32).max)
RESCALE = "rescale the column in the data (e.g. in thousands, or as a logarithm)"


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[column].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)


def check_float32_range(frames: dict[str, pd.DataFrame], columns: list[str]) -> None:
    """Refuse a value of a numeric feature column beyond ±3.4e38 in any split (the model
    reads it as a 32-bit float, where it would be inf)."""
    for column in columns:
        for split, frame in frames.items():
            if column not in frame or not pd.api.types.is_numeric_dtype(frame[column]):
                continue
            values = _numbers(frame, column)
            beyond = np.abs(values) > FLOAT32_MAX
            if beyond.any():
                raise DataError(
                    f"column {column!r}: {int(beyond.sum())} value(s) of the {split} split lie "
                    f"beyond ±3.4e+38 (e.g. {values[beyond][0]:g}), the largest 32-bit float "
                    f"(the model reads numbers as 32-bit floats); {RESCALE}"
                )


def check_standardized(encoding: TabularEncoding, frames: dict[str, pd.DataFrame]) -> None:
    """Refuse a numeric column the fitted ``encoding`` turns into NaN or inf in any split: a
    standard deviation of 0 or inf in 32 bits (values all below 1.2e-38, or spread over
    more than float32's range), or a value whose distance from the mean overflows."""
    for column in encoding.numeric:
        for split, frame in frames.items():
            with np.errstate(all="ignore"):  # the encoding's own arithmetic, checked after
                scaled = TabularEncoding(numeric=[column]).transform(frame) if len(frame) else None
            if scaled is None or np.isfinite(scaled).all():
                continue
            row = int(np.flatnonzero(~np.isfinite(scaled[:, 0]))[0])
            value = _numbers(frame, column.name)[row]
            raise DataError(
                f"column {column.name!r}: standardized as 32-bit floats, the {split} split's "
                f"value {value:g} becomes {scaled[row, 0]} (training mean {column.mean:g}, "
                f"standard deviation {column.std:g}: {np.float32(column.std)} in 32 bits); "
                f"values must lie between 1.2e-38 and 3.4e+38 in size, and their spread "
                f"within that range; {RESCALE}"
            )
