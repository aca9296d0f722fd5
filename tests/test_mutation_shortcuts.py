"""Permutation reliance and the counterfactual flip with a known scorer, recomputed from the
inputs the scorer was given (no pipeline run): each shuffle's flip rate, score change and ROC
AUC drop, their means and spread, the flag at its threshold, and each value's counterfactual
share, worked out by hand."""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from sslops.data.encoding import TabularEncoding
from sslops.evaluate.shortcuts import counterfactual_flip, permutation_reliance


class _Recording:
    """A score of 0.5 (exactly the threshold) where ``planted`` is "tick", else 0.25, plus
    0.0 for the ``age`` column (ignored); every matrix it is given is kept."""

    def __init__(self, encoding: TabularEncoding) -> None:
        self.tick = encoding.feature_names.index("planted=tick")
        self.calls: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(x.copy())
        return self.score(x)

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.where(x[:, self.tick] == 1.0, 0.5, 0.25)


def _frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 60
    planted = np.where(rng.random(n) < 0.4, "tick", "cross")
    y = np.where(rng.random(n) < 0.85, planted == "tick", planted != "tick").astype(int)
    frame = pd.DataFrame({"planted": planted, "age": rng.integers(20, 70, n).astype(float)})
    return frame, y


def test_permutation_reliance_is_the_mean_over_the_shuffles_the_model_was_given() -> None:
    frame, y = _frame()
    encoding = TabularEncoding.fit(frame, ["planted", "age"], max_categories=10)
    scorer = _Recording(encoding)
    repeats = 5
    out = permutation_reliance(scorer, frame, encoding, y, ["planted", "age"], threshold=0.5,
                               flag_above=0.0, seed=3, repeats=repeats)  # fmt: skip
    base, *shuffles = scorer.calls
    assert len(shuffles) == 2 * repeats  # one scoring of each shuffle of each column
    base_score = scorer.score(base)
    base_pred = base_score >= 0.5  # inclusive: "tick" rows score exactly 0.5
    assert base_pred.sum() == (frame["planted"] == "tick").sum() > 0
    flips, changes, drops = [], [], []
    for x in shuffles[:repeats]:
        # a shuffle of the planted column only: the same ticks, rearranged; age unchanged
        assert x[:, scorer.tick].sum() == base[:, scorer.tick].sum()
        assert np.array_equal(x[:, 0], base[:, 0])
        s = scorer.score(x)
        flips.append(float(np.mean((s >= 0.5) != base_pred)))
        changes.append(float(np.mean(np.abs(s - base_score))))
        drops.append(roc_auc_score(y, base_score) - roc_auc_score(y, s))
    assert len({tuple(x[:, scorer.tick]) for x in shuffles[:repeats]}) > 1  # shuffles differ
    planted = out["planted"]
    assert planted["prediction_flip_rate"] == pytest.approx(statistics.mean(flips), abs=1e-12)
    assert planted["prediction_flip_rate_sd"] == pytest.approx(statistics.stdev(flips), abs=1e-12)
    assert planted["mean_abs_score_change"] == pytest.approx(statistics.mean(changes), abs=1e-12)
    assert planted["roc_auc_drop"] == pytest.approx(statistics.mean(drops), abs=1e-12)
    assert planted["repeats"] == repeats and planted["flagged"] is True
    assert statistics.mean(flips) != statistics.median(flips)  # the mean, not the median
    assert max(drops) > statistics.mean(drops) > 0
    # age: the model ignores it; no flip, exactly at flag_above 0.0, is not flagged
    assert out["age"] == {
        "prediction_flip_rate": 0.0, "prediction_flip_rate_sd": 0.0,
        "prediction_flip_rate_interval": [0.0, 0.0], "mean_abs_score_change": 0.0,
        "roc_auc_drop": 0.0, "repeats": repeats, "flagged": False, "flag_uncertain": False,
    }  # fmt: skip


def test_permutation_reliance_interval_resamples_the_rows_of_the_shuffles() -> None:
    """The flip rate's 95% interval: each row's share of the shuffles that flipped it,
    its mean over 200 bootstrap draws of the rows; the flag is uncertain when the interval
    holds the threshold (another test sample could have decided the other way)."""
    frame, y = _frame()
    encoding = TabularEncoding.fit(frame, ["planted", "age"], max_categories=10)
    scorer = _Recording(encoding)
    out = permutation_reliance(scorer, frame, encoding, y, ["planted"], 0.5, 0.0, seed=3,
                               repeats=4, resamples=200)["planted"]  # fmt: skip
    base, *shuffles = scorer.calls
    before = scorer.score(base) >= 0.5
    per_row = np.mean([(scorer.score(x) >= 0.5) != before for x in shuffles], axis=0)
    assert per_row.mean() == pytest.approx(out["prediction_flip_rate"], abs=1e-12)
    draws = np.random.default_rng([3, 1])
    means = [per_row[draws.integers(0, 60, 60)].mean() for _ in range(200)]
    low, high = out["prediction_flip_rate_interval"]
    assert (low, high) == pytest.approx((np.percentile(means, 2.5), np.percentile(means, 97.5)))
    assert 0 < low < out["prediction_flip_rate"] < high
    assert out["flagged"] is True and out["flag_uncertain"] is False  # low > 0.0
    at_mean = permutation_reliance(_Recording(encoding), frame, encoding, y, ["planted"], 0.5,
                                   out["prediction_flip_rate"], seed=3, repeats=4)["planted"]  # fmt: skip
    assert at_mean["flagged"] is False and at_mean["flag_uncertain"] is True
    none = permutation_reliance(_Recording(encoding), frame, encoding, y, ["planted"], 0.5, 0.0,
                                seed=3, repeats=4, resamples=0)["planted"]  # fmt: skip
    assert none["prediction_flip_rate_interval"] is None and none["flag_uncertain"] is False


def test_one_shuffle_has_no_spread() -> None:
    frame, y = _frame()
    encoding = TabularEncoding.fit(frame, ["planted", "age"], max_categories=10)
    out = permutation_reliance(_Recording(encoding), frame, encoding, y, ["planted"], 0.5, 0.5,
                               seed=1, repeats=1)  # fmt: skip
    assert out["planted"]["prediction_flip_rate_sd"] == 0.0 and out["planted"]["repeats"] == 1


def test_counterfactual_flip_hand_computed() -> None:
    # scores F 0.9, M 0.2, X 0.5 (exactly the threshold: decided 1)
    frame = pd.DataFrame({"sex": ["F", "F", "M", "X", "M"], "city": ["a", "b", "a", "b", "a"]})
    encoding = TabularEncoding.fit(frame, ["sex", "city"], max_categories=10)
    names = encoding.feature_names
    f, x = names.index("sex=F"), names.index("sex=X")

    def score(m: np.ndarray) -> np.ndarray:
        return np.where(m[:, f] == 1.0, 0.9, np.where(m[:, x] == 1.0, 0.5, 0.2))

    # decisions 1 1 0 1 0. Set to F: rows 2, 3, 4 decide 1 1 1 (rows 2 and 4 change: 2/3);
    # to M: rows 0, 1, 3 decide 0 (all change); to X: rows 0, 1, 2, 4 decide 1 (rows 2, 4:
    # 2/4). Every row changes for some value.
    result = counterfactual_flip(score, frame, encoding, "sex", 0.5)
    assert result["changed_share_when_set_to"] == pytest.approx({"F": 2 / 3, "M": 1.0, "X": 0.5})
    assert result["changed_share"] == pytest.approx(1.0)
    # a column the model ignores changes nothing
    ignored = counterfactual_flip(score, frame, encoding, "city", 0.5)
    assert ignored["changed_share"] == 0.0
    assert ignored["changed_share_when_set_to"] == {"a": 0.0, "b": 0.0}
    assert ignored["model_input"] is True  # an input it ignores, not a column it never sees


def test_counterfactual_changed_share_is_the_union_over_the_values() -> None:
    # scores F 0.9, M 0.2, X 0.2: setting to M or X changes the F rows; setting to F the others
    frame = pd.DataFrame({"sex": ["F", "M", "M", "X"]})
    encoding = TabularEncoding.fit(frame, ["sex"], max_categories=10)
    f = encoding.feature_names.index("sex=F")

    def score(m: np.ndarray) -> np.ndarray:
        return np.where(m[:, f] == 1.0, 0.9, 0.2)

    result = counterfactual_flip(score, frame, encoding, "sex", 0.5)
    # to F: rows 1, 2, 3 change (3/3); to M: row 0 of 0, 3 (1/2); to X: row 0 of 0, 1, 2 (1/3)
    assert result["changed_share_when_set_to"] == pytest.approx({"F": 1.0, "M": 0.5, "X": 1 / 3})
    assert result["changed_share"] == pytest.approx(1.0)
    # only M and X rows, the model treats them alike: nothing changes
    alike = frame.iloc[[1, 2, 3]].reset_index(drop=True)
    result = counterfactual_flip(score, alike, encoding, "sex", 0.5)
    assert result["changed_share"] == 0.0
    assert result["changed_share_when_set_to"] == {"M": 0.0, "X": 0.0}


def test_the_unchanged_rows_scored_once_by_the_caller_give_the_same_results() -> None:
    """The evaluate stage scores the unchanged rows once and hands them to both tests (the
    perf review): neither scores them again, and every figure is the one each test gets by
    scoring them itself."""
    frame, y = _frame()
    frame["sex"] = np.where(np.arange(len(frame)) % 3 == 0, "F", "M")
    encoding = TabularEncoding.fit(frame, ["planted", "age", "sex"], max_categories=10)
    own, given = _Recording(encoding), _Recording(encoding)
    base = given.score(encoding.transform(frame))
    args = (frame, encoding, y, ["planted", "age"], 0.5, 0.0, 3, 4)
    assert permutation_reliance(given, *args, base=base) == permutation_reliance(own, *args)
    assert len(given.calls) == len(own.calls) - 1 == 2 * 4  # the shuffles only
    for column in ("planted", "sex"):
        own.calls.clear()
        given.calls.clear()
        flip = counterfactual_flip(given, frame, encoding, column, 0.5, base=base)
        assert flip == counterfactual_flip(own, frame, encoding, column, 0.5)
        assert len(given.calls) == len(own.calls) - 1 == frame[column].nunique()


def test_two_shuffles_have_the_sample_spread_of_their_flip_rates() -> None:
    # two shuffles: the spread is the sample standard deviation of the two flip rates,
    # |a - b| / sqrt(2), as for more (mutation round 4)
    frame, y = _frame()
    encoding = TabularEncoding.fit(frame, ["planted", "age"], max_categories=10)
    scorer = _Recording(encoding)
    out = permutation_reliance(scorer, frame, encoding, y, ["planted"], 0.5, 0.5, seed=3,
                               repeats=2)["planted"]  # fmt: skip
    base, *shuffles = scorer.calls
    before = scorer.score(base) >= 0.5
    a, b = (float(np.mean((scorer.score(x) >= 0.5) != before)) for x in shuffles)
    assert a != b
    assert out["prediction_flip_rate_sd"] == pytest.approx(abs(a - b) / np.sqrt(2), abs=1e-12)


def test_a_threshold_at_the_interval_s_lower_end_makes_the_flag_uncertain() -> None:
    # flagged (the mean is above it), but a test sample at the interval's lower end would
    # flip no more than the threshold and not be flagged: uncertain (mutation round 4)
    frame, y = _frame()
    encoding = TabularEncoding.fit(frame, ["planted", "age"], max_categories=10)

    def run(flag_above: float) -> dict:
        return permutation_reliance(_Recording(encoding), frame, encoding, y, ["planted"], 0.5,
                                    flag_above, seed=3, repeats=4)["planted"]  # fmt: skip

    low, high = run(0.0)["prediction_flip_rate_interval"]
    assert 0 < low < high
    at_low = run(low)
    assert at_low["flagged"] is True and at_low["flag_uncertain"] is True
    at_high = run(high)
    assert at_high["flagged"] is False and at_high["flag_uncertain"] is False


def test_a_column_with_one_observed_value_changes_no_decision() -> None:
    # every row is "F": there is no other value to set, so no row is counted as changed
    # (not 1.0, not NaN; mutation round 4)
    frame = pd.DataFrame({"sex": ["F"] * 4, "city": ["a", "b", "a", "b"]})
    encoding = TabularEncoding.fit(frame, ["sex", "city"], max_categories=10)
    result = counterfactual_flip(lambda m: m[:, 0] * 0.0 + 0.9, frame, encoding, "sex", 0.5)
    assert result["changed_share"] == 0.0
    assert result["changed_share_when_set_to"] == {"F": 0.0}


def test_a_missing_value_is_not_a_value_to_set() -> None:
    # scores: F 0.9, else 0.2 (missing too). Only the observed values are set: F changes
    # rows 1, 2, 3 (the missing one included) of 3; M changes row 0 of rows 0, 1 (1/2)
    frame = pd.DataFrame({"sex": ["F", None, "M", "M"], "city": ["a", "b", "a", "b"]})
    encoding = TabularEncoding.fit(frame, ["sex", "city"], max_categories=10)
    f = encoding.feature_names.index("sex=F")
    result = counterfactual_flip(lambda m: np.where(m[:, f] == 1.0, 0.9, 0.2), frame, encoding,
                                 "sex", 0.5)  # fmt: skip
    assert result["changed_share_when_set_to"] == pytest.approx({"F": 1.0, "M": 0.5})
    assert result["changed_share"] == 1.0
