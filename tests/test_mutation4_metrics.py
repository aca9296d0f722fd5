"""Mutation round 4 of ``evaluate/metrics.py``: the majority-class note at its edge, the
calibration error's top bin, the intervals at the 95%-defined edge. Expected values by hand."""

from __future__ import annotations

import math

import numpy as np

from sslops.evaluate.metrics import GROUP_METRICS, group_intervals, majority_note


def _model(rate: float, accuracy: float, auc: float = math.nan) -> dict[str, float]:
    return {"selection_rate": rate, "accuracy": accuracy, "roc_auc": auc}


def test_accuracy_equal_to_the_majority_s_is_no_better_and_gets_the_note() -> None:
    note = majority_note(_model(0.3, 0.8, 0.75), 0.8, 0.5)
    assert note is not None
    assert "accuracy 0.8000 is no better than always predicting the majority class (0.8000)" in note
    assert "predicts positive for 30.00% of the rows" in note
    assert "its ROC AUC (0.7500) is that of its ranking" in note
    assert majority_note(_model(0.3, 0.8001), 0.8, 0.5) is None


def test_the_note_says_which_class_a_one_class_model_predicts() -> None:
    negative = majority_note(_model(0.0, 0.98), 0.98, 0.5)
    positive = majority_note(_model(1.0, 0.6), 0.6, 0.5)
    assert negative is not None and positive is not None
    assert "it predicts negative for every row" in negative
    assert "it predicts positive for every row" in positive
    assert "ROC AUC" not in negative  # undefined (NaN): not printed


def test_a_group_missing_from_a_resample_has_no_calibration_error_there() -> None:
    # 30 rows; group "x" is row 29 alone. In a resample that leaves row 29 out, x has no
    # rows, so none of its metrics is defined, its ECE included (a 0 there would put 0 in
    # its interval); one such resample of one: NaN intervals throughout.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 30)
    score = rng.random(30)
    groups = np.array(["a"] * 29 + ["x"])
    seed = next(s for s in range(100) if 29 not in np.random.default_rng(s).integers(0, 30, 30))
    x = group_intervals(y, score, (score >= 0.5).astype(int), groups, 1, seed)["x"]
    assert set(x) == set(GROUP_METRICS)
    for metric, bounds in x.items():
        assert all(math.isnan(b) for b in bounds), metric
