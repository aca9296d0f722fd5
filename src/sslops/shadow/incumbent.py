"""A stand-in incumbent: logistic regression on the raw columns, as one ONNX model.

Pilots rarely have the production model's code; they have its inputs and its log. For a
demo or a test, this fits the classic incumbent (median imputation, standardization,
one-hot, logistic regression) and exports it through the same raw-column graph as
``sslops export`` (:func:`sslops.export.graph.export_raw_column_onnx`), so it is fed
exactly like the candidate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pandas as pd

from sslops.data.encoding import TabularEncoding
from sslops.export.graph import export_raw_column_onnx
from sslops.finetune.stage import linear_model, logistic


def logistic_regression_onnx(
    frame: pd.DataFrame, y: np.ndarray, columns: list[str], path: Path,
    *, regularization: float = 1.0, max_categories: int = 64, threshold: float = 0.5,
) -> Path:  # fmt: skip
    """Fit on ``frame[columns]`` (canonical) and ``y`` (0/1); write the ONNX model to ``path``."""
    encoding = TabularEncoding.fit(frame, columns, max_categories)
    coef, intercept = logistic(encoding.transform(frame), np.asarray(y), regularization)
    export_raw_column_onnx(encoding, linear_model(None, coef, intercept), path, opset=18)
    proto = onnx.load(str(path))
    proto.metadata_props.add(key="decision_threshold", value=str(threshold))
    proto.metadata_props.add(key="model", value="logistic_regression_raw_columns")
    onnx.save(proto, str(path))
    return path
