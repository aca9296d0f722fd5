"""Input checks shared by the finetune estimators, with scikit-learn's conventions.

One message per mistake, naming what is wrong and what was expected: a non-binary target,
``sensitive_features`` missing or of the wrong length. ``X`` itself goes through
:func:`sklearn.utils.validation.validate_data` (NaN, inf, sparse, complex, object dtype,
the number of features at prediction, ``n_features_in_`` / ``feature_names_in_``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.multiclass import check_classification_targets

# float64 and float32 pass through unchanged (the fitted numbers do not depend on the check);
# anything else numeric becomes float64.
FLOAT_DTYPES = (np.float64, np.float32)


def binary_target(estimator: BaseEstimator, y: Any) -> np.ndarray:
    """Set ``estimator.classes_`` (the two sorted labels) and return ``y`` as 0/1 codes.

    Labels of any type work (strings, {-1, 1}, {False, True}); ``classes_[1]`` is the
    positive class, the one ``predict_proba[:, 1]`` and ``decision_function`` score.
    """
    check_classification_targets(y)  # 'Unknown label type: continuous' for a float target
    classes, codes = np.unique(np.asarray(y), return_inverse=True)
    if len(classes) != 2:
        shown = ", ".join(repr(c) for c in classes[:5].tolist())
        raise ValueError(
            f"Only binary classification is supported. {type(estimator).__name__} needs y "
            f"with exactly 2 classes, got {len(classes)} class"
            f"{'' if len(classes) == 1 else 'es'} ({shown})"
        )
    estimator.classes_ = classes
    return np.asarray(codes, dtype=np.int64)


def sensitive_rows(
    estimator: BaseEstimator, sensitive_features: Any, n_samples: int,
    name: str = "sensitive_features", rows_of: str = "X",
) -> np.ndarray:  # fmt: skip
    """``sensitive_features`` as an array of one row per sample (one column per attribute).

    Raises a ValueError when it is missing (``None``) or its length is not ``n_samples``.
    """
    owner = type(estimator).__name__
    if sensitive_features is None:
        raise ValueError(
            f"{owner} needs {name}= (one group label per row of {rows_of}); got None. In a "
            f"Pipeline or a search, route it with set_fit_request({name}=True) under "
            "sklearn.set_config(enable_metadata_routing=True)"
        )
    array = np.asarray(sensitive_features)
    if array.ndim not in (1, 2) or array.shape[0] != n_samples:
        got = f"shape {array.shape}" if array.ndim != 1 else f"{array.shape[0]} rows"
        raise ValueError(
            f"{owner}: {name} has {got}; expected one row per row of {rows_of} "
            f"({n_samples} rows), as a 1-D array or a 2-D array of attribute columns"
        )
    return array
