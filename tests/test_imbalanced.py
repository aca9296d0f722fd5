"""A rare positive class (fraud, disease screening: 1-3% positives) and small groups.

What was found on UCI Adult with its positives subsampled to 2% (the ``rare_positive``
fixture builds that data): fine-tuning at 1% of the labels drew 2 positives and said
nothing; every candidate, and so the selected ``mitigated`` model, predicted "no" for every
validation row, a gap of 0 and accuracy 0.984 — the policy "met" by a constant; with
equal opportunity, the true-positive-rate gap was 0 for every candidate because one group
had no validation positive; and a bootstrap draw that left a group's one positive row out
counted as a gap of 0, so a measured gap of 0.8 got the interval [0.0, 0.96].
"""

from __future__ import annotations

import numpy as np
import pytest

from sslops.evaluate.metrics import model_metrics


def _one_positive_in_a_group() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group a: 20 positives, 4 selected (TPR 0.2); group b: 1 positive, selected (TPR 1)."""
    groups = np.array(["a"] * 200 + ["b"] * 200)
    y = np.zeros(400, dtype=np.int64)
    y[:20] = y[200] = 1
    predicted = np.zeros(400, dtype=np.int64)
    predicted[:4] = predicted[200] = 1
    return y, predicted, groups


def test_a_gap_undefined_in_many_resamples_gets_no_interval() -> None:
    y, predicted, groups = _one_positive_in_a_group()
    m = model_metrics(y, 0.2 + 0.6 * predicted, 0.5, {"s": groups}, resamples=200, seed=0)
    assert m["eopp_difference"] == pytest.approx(0.8)
    # The old draws counted a resample without b's positive as a gap of 0: [0.0, 0.96].
    for intervals in (m["intervals"], m["gap_intervals"]["s"]):
        assert np.isnan(intervals["eopp_difference"]).all()
        low, high = intervals["eo_difference"]  # the FPR gap stands in where TPR's is undefined
        assert low <= m["eo_difference"] <= high
        low, high = intervals["dp_difference"]  # selection rates: defined in every draw
        assert 0.0 <= low <= m["dp_difference"] <= high


def test_a_gap_defined_in_every_resample_keeps_its_interval() -> None:
    rng = np.random.default_rng(1)
    groups = np.repeat(["a", "b"], 300)
    y = (rng.random(600) < 0.3).astype(np.int64)
    predicted = ((rng.random(600) < 0.5) & (y == 1) | (rng.random(600) < 0.1)).astype(np.int64)
    m = model_metrics(y, 0.2 + 0.6 * predicted, 0.5, {"s": groups}, resamples=100, seed=0)
    for key in ("dp_difference", "eo_difference", "eopp_difference"):
        low, high = m["gap_intervals"]["s"][key]
        assert 0.0 <= low <= high <= 1.0  # both groups hold both classes in every draw
        assert m["intervals"][key] == m["gap_intervals"]["s"][key]
