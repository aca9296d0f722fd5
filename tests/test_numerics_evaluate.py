"""Metrics that are undefined in many bootstrap draws, or on a whole split, are reported as
such (found by the numerics review): a group with one positive row had the TPR interval
[1.0, 1.0] (from the ~63% of draws that hold the row: certainty no row supports), and an
out-of-distribution split of one class printed ROC AUC "nan" and "+nan" in metrics.md."""

from __future__ import annotations

import math

import numpy as np

from sslops.evaluate.metrics import auc, model_metrics, percentile_bounds
from sslops.evaluate.shift import comparison_markdown, split_difference


def _one_positive_group() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    score = np.clip(0.6 * y + 0.5 * rng.random(400), 0, 1)
    groups = np.array(["a"] * 360 + ["b"] * 40)
    y[360:] = 0
    y[365], score[365] = 1, 0.9  # group b's one positive row, decided positive
    return y, score, groups


def test_a_rate_undefined_in_many_draws_has_no_interval() -> None:
    y, score, groups = _one_positive_group()
    m = model_metrics(y, score, 0.5, {"g": groups}, resamples=200, seed=0, min_group_rows=10)
    b = m["group_intervals"]["g"]["b"]
    assert m["by_group"]["g"]["b"]["tpr"] == 1.0  # the point estimate stays
    assert all(math.isnan(v) for v in b["tpr"] + b["roc_auc"])  # was [1.0, 1.0], [0.85, 1.0]
    assert all(math.isfinite(v) for v in b["accuracy"] + b["fpr"] + b["selection_rate"])
    a = m["group_intervals"]["g"]["a"]
    assert all(math.isfinite(v) for k in ("tpr", "roc_auc") for v in a[k])


def test_percentile_bounds_need_the_metric_defined_in_95_percent_of_the_draws() -> None:
    defined = [float(i) for i in range(95)]
    assert percentile_bounds(defined + [math.nan] * 5) == percentile_bounds(defined)
    assert all(math.isnan(b) for b in percentile_bounds(defined + [math.nan] * 6))
    assert percentile_bounds(defined + [math.nan] * 6, defined_share=0.0) == (
        percentile_bounds(defined)
    )


def test_an_ood_split_of_one_positive_row_has_no_difference_interval() -> None:
    rng = np.random.default_rng(1)
    y_test = rng.integers(0, 2, 200)
    test = (y_test, np.clip(0.5 * y_test + 0.5 * rng.random(200), 0, 1))
    y_ood = np.zeros(30, dtype=int)
    y_ood[0] = 1  # ROC AUC defined only in the ~64% of OOD draws that hold row 0

    result = split_difference(auc, test, (y_ood, rng.random(30)), paired=False, resamples=100,
                              seed=0)  # fmt: skip
    assert math.isfinite(result["difference"])
    assert all(math.isnan(b) for b in result["difference_interval"])


def test_an_ood_split_of_one_class_shows_n_a_not_nan() -> None:
    undefined = {"test": 0.88, "ood": math.nan, "difference": math.nan,
                 "difference_interval": [math.nan, math.nan], "paired": False}  # fmt: skip
    measured = {"test": 0.82, "ood": 1.0, "difference": 0.18,
                "difference_interval": [0.16, 0.2], "paired": False}  # fmt: skip
    ood = {
        "split": "ood", "rows": 59, "paired": False,
        "shift": {"positive_rate": {"test": 0.2645, "ood": 0.0}},
        "compared_with_test": {"ssl": {"accuracy": measured, "roc_auc": undefined}},
    }  # fmt: skip
    text = comparison_markdown(ood)
    assert "nan" not in text.lower().replace("n/a", "")
    assert "| ssl | 0.8200 | 1.0000 | +0.1800 [+0.160, +0.200] | 0.8800 | n/a | n/a |" in text
    assert "n/a: roc_auc not defined on that split (positive rate: test 0.2645, OOD 0.0000" in text
