"""Evaluation metrics against sklearn / fairlearn, and the demographic-parity penalty."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from sklearn.metrics import accuracy_score, roc_auc_score

from sslops.evaluate import model_metrics
from sslops.finetune.fairness import DemographicParityPenalty
from sslops.gaps import rate_gaps

Y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 1])
SCORE = np.array([0.1, 0.9, 0.6, 0.4, 0.3, 0.7, 0.2, 0.8, 0.55, 0.45])
SEX = np.array(["a"] * 5 + ["b"] * 5)
RACE = np.array(["x", "x", "y", "y", "z", "z", "x", "y", "z", "z"])


@pytest.fixture(scope="module")
def metrics() -> dict:
    return model_metrics(Y, SCORE, 0.5, {"sex": SEX, "race": RACE})


def test_overall_metrics_match_sklearn_and_fairlearn(metrics: dict) -> None:
    predicted = (SCORE >= 0.5).astype(int)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(Y, predicted))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(Y, SCORE))
    assert metrics["selection_rate"] == pytest.approx(predicted.mean())
    assert metrics["dp_difference"] == pytest.approx(
        demographic_parity_difference(Y, predicted, sensitive_features=SEX)
    )
    assert metrics["eo_difference"] == pytest.approx(
        equalized_odds_difference(Y, predicted, sensitive_features=SEX)
    )


def test_overall_metrics_hand_computed(metrics: dict) -> None:
    # predictions: a -> [0, 1, 1, 0, 0], b -> [1, 0, 1, 1, 0]
    assert metrics["accuracy"] == pytest.approx(0.7)
    assert metrics["selection_rate"] == pytest.approx(0.5)
    assert metrics["dp_difference"] == pytest.approx(0.2)  # 0.6 - 0.4
    # TPR a = 2/3, b = 2/3; FPR a = 0/2, b = 1/2
    assert metrics["eo_difference"] == pytest.approx(0.5)
    assert metrics["roc_auc"] == pytest.approx(19 / 24)


def test_fairness_gaps_use_first_group_column() -> None:
    predicted = (SCORE >= 0.5).astype(int)
    swapped = model_metrics(Y, SCORE, 0.5, {"race": RACE, "sex": SEX})
    assert swapped["dp_difference"] == pytest.approx(
        demographic_parity_difference(Y, predicted, sensitive_features=RACE)
    )
    assert swapped["eo_difference"] == pytest.approx(
        equalized_odds_difference(Y, predicted, sensitive_features=RACE)
    )


def test_per_group_tables(metrics: dict) -> None:
    predicted = (SCORE >= 0.5).astype(int)
    for column, values in (("sex", SEX), ("race", RACE)):
        table = metrics["by_group"][column]
        assert set(table) == set(values)
        for group, row in table.items():
            m = values == group
            assert row["count"] == m.sum()
            assert row["accuracy"] == pytest.approx(accuracy_score(Y[m], predicted[m]))
            assert row["selection_rate"] == pytest.approx(predicted[m].mean())
            assert row["roc_auc"] == pytest.approx(roc_auc_score(Y[m], SCORE[m]))
        assert metrics["gaps"][column]["dp_difference"] == pytest.approx(
            demographic_parity_difference(Y, predicted, sensitive_features=values)
        )
    row = metrics["by_group"]["sex"]["a"]
    assert {k: row[k] for k in ("accuracy", "selection_rate", "count", "roc_auc")} == pytest.approx(
        {"accuracy": 0.8, "selection_rate": 0.4, "count": 5.0, "roc_auc": 5 / 6}
    )


def test_threshold_is_inclusive() -> None:
    y = np.array([0, 1, 0, 1])
    score = np.array([0.5, 0.5, 0.2, 0.9])
    groups = {"g": np.array(["p", "p", "q", "q"])}
    result = model_metrics(y, score, 0.5, groups)
    assert result["selection_rate"] == pytest.approx(0.75)
    assert result["accuracy"] == pytest.approx(0.75)
    assert model_metrics(y, score, 0.6, groups)["selection_rate"] == pytest.approx(0.25)


def test_single_class_group_gets_nan_auc() -> None:
    y = np.array([0, 1, 1, 0, 1, 1, 1, 1])
    score = np.linspace(0.1, 0.9, 8)
    groups = np.array(["a"] * 4 + ["b"] * 4)  # group b has only positives
    result = model_metrics(y, score, 0.5, {"sex": groups})
    assert math.isnan(result["by_group"]["sex"]["b"]["roc_auc"])
    assert result["by_group"]["sex"]["a"]["roc_auc"] == pytest.approx(
        roc_auc_score(y[:4], score[:4])
    )
    assert result["roc_auc"] == pytest.approx(roc_auc_score(y, score))
    assert result["by_group"]["sex"]["b"]["accuracy"] == pytest.approx(1.0)


def test_single_class_overall_gets_nan_auc() -> None:
    y = np.ones(4, dtype=int)
    result = model_metrics(y, np.array([0.2, 0.6, 0.7, 0.9]), 0.5, {"g": np.array(list("aabb"))})
    assert math.isnan(result["roc_auc"])
    assert result["accuracy"] == pytest.approx(0.75)


# --- DemographicParityPenalty ---------------------------------------------------------------


def test_penalty_zero_when_group_means_equal() -> None:
    penalty = DemographicParityPenalty(np.array(["a", "a", "b", "b", "b"]))
    probs = torch.tensor([0.2, 0.6, 0.4, 0.1, 0.7])  # both means 0.4
    assert penalty(probs).item() == pytest.approx(0.0, abs=1e-7)


def test_penalty_hand_computed_two_groups() -> None:
    penalty = DemographicParityPenalty(np.array(["a", "a", "b", "b"]))
    # rates 0.3 and 0.7 around a mean of 0.5: ((-0.2)^2 + 0.2^2) / 2 = 0.04
    value = penalty(torch.tensor([0.2, 0.4, 0.6, 0.8]))
    assert value.item() == pytest.approx(0.04, abs=1e-7)


def test_penalty_hand_computed_three_unbalanced_groups() -> None:
    groups = np.array([2, 0, 0, 1, 2, 2])  # non-string labels are accepted too
    penalty = DemographicParityPenalty(groups)
    assert int(penalty.codes.max()) + 1 == 3
    probs = torch.tensor([0.9, 0.1, 0.3, 0.5, 0.6, 0.9])
    rates = [0.2, 0.5, 0.8]  # groups 0, 1, 2
    expected = sum((r - 0.5) ** 2 for r in rates) / 3  # 0.06
    assert penalty(probs).item() == pytest.approx(expected, abs=1e-7)
    assert expected == pytest.approx(0.06)


def test_penalty_positive_and_differentiable() -> None:
    penalty = DemographicParityPenalty(np.array(["m", "f", "m", "f"]))
    logits = torch.tensor([2.0, -1.0, 1.0, 0.0], requires_grad=True)
    value = penalty(torch.sigmoid(logits))
    assert value.item() > 0
    value.backward()
    assert logits.grad is not None
    # raising a favoured-group logit widens the gap; raising the other group's narrows it
    assert logits.grad[0] > 0 and logits.grad[1] < 0


def test_penalty_single_group_is_zero() -> None:
    penalty = DemographicParityPenalty(np.array(["only"] * 3))
    assert penalty(torch.tensor([0.1, 0.5, 0.9])).item() == 0.0


# --- groups where a rate is undefined --------------------------------------------------------


def _no_positive_group(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """400 rows in three groups; group "c" (40 rows) has no positives."""
    rng = np.random.default_rng(seed)
    groups = np.array(["a"] * 200 + ["b"] * 160 + ["c"] * 40)
    y = np.concatenate([rng.random(200) < 0.4, rng.random(160) < 0.2, np.zeros(40, bool)])
    score = np.clip(0.35 * y + rng.random(400) * 0.75, 0, 1)
    return y.astype(int), score, groups


def test_group_without_positives_has_no_tpr_and_is_left_out_of_the_gaps() -> None:
    from fairlearn.metrics import MetricFrame, equal_opportunity_difference, false_positive_rate

    y, score, groups = _no_positive_group()
    predicted = (score >= 0.5).astype(int)
    result = model_metrics(y, score, 0.5, {"g": groups})
    row = result["by_group"]["g"]["c"]
    assert math.isnan(row["tpr"])
    assert row["fpr"] == pytest.approx(predicted[groups == "c"].mean())
    assert row["selection_rate"] == pytest.approx(predicted[groups == "c"].mean())
    # the true-positive-rate gap is over "a" and "b" only; the false-positive one over all three
    both = groups != "c"
    tpr_gap = equal_opportunity_difference(
        y[both], predicted[both], sensitive_features=groups[both]
    )
    fpr_gap = MetricFrame(
        metrics=false_positive_rate, y_true=y, y_pred=predicted, sensitive_features=groups
    ).difference()
    assert result["eopp_difference"] == pytest.approx(tpr_gap)
    assert result["eo_difference"] == pytest.approx(max(tpr_gap, fpr_gap))
    assert result["dp_difference"] == pytest.approx(
        demographic_parity_difference(y, predicted, sensitive_features=groups)
    )
    # fairlearn counts the missing rate as 0, which would make the gap the largest TPR
    assert equal_opportunity_difference(y, predicted, sensitive_features=groups) > tpr_gap + 0.3
    assert result["gaps"]["g"] == {
        k: result[k] for k in ("dp_difference", "eo_difference", "eopp_difference")
    }


def test_point_estimates_lie_in_their_intervals_with_a_group_without_positives() -> None:
    y, score, groups = _no_positive_group(1)
    result = model_metrics(y, score, 0.5, {"g": groups}, resamples=300, seed=2)
    for key in ("dp_difference", "eo_difference", "eopp_difference"):
        low, high = result["intervals"][key]
        assert low <= result[key] <= high, key
    # the small example of the review: group B has no positives
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0])
    score = np.array([0.9, 0.8, 0.2, 0.6, 0.1, 0.2, 0.3, 0.7])
    small = model_metrics(y, score, 0.5, {"g": np.array(["A"] * 4 + ["B"] * 4)}, resamples=200)
    assert small["eo_difference"] == pytest.approx(0.25)
    assert math.isnan(small["eopp_difference"])  # undefined, not 0 (the recompute review)
    # B has no positives, so the TPR gap is never defined: no interval (it was [0, 0], as if
    # measured), and no point estimate either. EO then rests on the FPR gap,
    # undefined in the ~10% of draws without A's two negatives: no interval either.
    for key in ("eo_difference", "eopp_difference"):
        assert np.isnan(small["intervals"][key]).all(), key


def test_group_without_negatives_has_no_fpr() -> None:
    y = np.array([0, 1, 0, 1, 1, 1, 1])
    score = np.array([0.6, 0.7, 0.2, 0.4, 0.9, 0.3, 0.8])
    groups = np.array(["a"] * 4 + ["b"] * 3)  # b: positives only
    result = model_metrics(y, score, 0.5, {"g": groups})
    assert math.isnan(result["by_group"]["g"]["b"]["fpr"])
    assert result["by_group"]["g"]["b"]["tpr"] == pytest.approx(2 / 3)
    # TPR a = 1/2, b = 2/3; FPR only a has one: nothing to compare, 0
    assert result["eopp_difference"] == pytest.approx(1 / 6)
    assert result["eo_difference"] == pytest.approx(1 / 6)


def test_gaps_and_rates_equal_fairlearn_when_every_group_has_both_classes() -> None:
    from fairlearn.metrics import (
        equal_opportunity_difference,
        false_positive_rate,
        true_positive_rate,
    )

    rng = np.random.default_rng(5)
    groups = rng.choice(["p", "q", "r", "s"], 300)
    y = rng.integers(0, 2, 300)
    score = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    predicted = (score >= 0.5).astype(int)
    result = model_metrics(y, score, 0.5, {"g": groups})
    expected = {
        "dp_difference": demographic_parity_difference(y, predicted, sensitive_features=groups),
        "eo_difference": equalized_odds_difference(y, predicted, sensitive_features=groups),
        "eopp_difference": equal_opportunity_difference(y, predicted, sensitive_features=groups),
    }
    assert result["gaps"]["g"] == pytest.approx(expected)
    for group, row in result["by_group"]["g"].items():
        m = groups == group
        assert row["tpr"] == pytest.approx(true_positive_rate(y[m], predicted[m]))
        assert row["fpr"] == pytest.approx(false_positive_rate(y[m], predicted[m]))


def test_audit_remeasure_agrees_on_a_group_without_positives() -> None:
    """The audit's second implementation gives the same gaps, NaN rates and intervals."""
    from sslops.audit.remeasure import remeasure

    y, score, groups = _no_positive_group(3)
    race = np.where(np.arange(400) % 3 == 0, "u", "v")
    ours = model_metrics(y, score, 0.5, {"g": groups, "r": race}, intersections=True,
                         resamples=100, seed=4)  # fmt: skip
    theirs = remeasure(y, score, 0.5, {"g": groups, "r": race}, intersections=True,
                       resamples=100, seed=4)  # fmt: skip
    for key in ("dp_difference", "eo_difference", "eopp_difference"):
        assert theirs[key] == pytest.approx(ours[key], abs=1e-12)
        assert theirs["intervals"][key] == pytest.approx(ours["intervals"][key], abs=1e-12)
    for column, table in ours["gaps"].items():
        assert theirs["gaps"][column] == pytest.approx(table, abs=1e-12)
        for group, row in ours["by_group"][column].items():
            for rate in ("tpr", "fpr"):
                assert theirs["by_group"][column][group][rate] == pytest.approx(
                    row[rate], abs=1e-12, nan_ok=True
                )
    assert math.isnan(theirs["by_group"]["g"]["c"]["tpr"])


def _one_group_without_positives() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """200 rows: 120 of "Male" with both classes, 80 of "Female" without a positive row."""
    rng = np.random.default_rng(0)
    sex = np.array(["Male"] * 120 + ["Female"] * 80)
    y = np.concatenate([rng.integers(0, 2, 120), np.zeros(80, dtype=int)])
    score = np.clip(rng.random(200) * 0.6 + 0.4 * y, 0, 1)
    return y, score, sex


def test_an_undefined_gap_is_nan_with_its_reason_everywhere_never_zero() -> None:
    """With one group of two without positives there is no TPR difference to measure: it was
    reported 0.0000 in metrics.json, metrics.md, summary.json and the model card, as if the
    groups' positives were found alike (found by the recompute review)."""
    from sslops.audit.reevaluate import compare, flatten
    from sslops.audit.remeasure import remeasure
    from sslops.evaluate.report import group_markdown
    from sslops.evaluate.stage import _metrics_markdown
    from sslops.pipeline.local import _summary_numbers

    y, score, sex = _one_group_without_positives()
    predicted = (score >= 0.5).astype(int)
    result = model_metrics(y, score, 0.5, {"sex": sex}, resamples=20, seed=0)
    assert math.isnan(result["eopp_difference"])
    assert math.isnan(result["gaps"]["sex"]["eopp_difference"])
    male, female = sex == "Male", sex == "Female"
    fpr = abs(predicted[male & (y == 0)].mean() - predicted[female].mean())
    assert result["eo_difference"] == pytest.approx(fpr)  # the FPR difference alone
    notes = result["gap_notes"]["sex"]
    assert "only 'Male' has positive rows" in notes["eopp_difference"]
    assert "false-positive-rate difference alone" in notes["eo_difference"]
    assert "dp_difference" not in notes
    overall = _metrics_markdown({"mitigated": result}, "sex", "demographic_parity", 0.5)
    assert notes["eo_difference"] in overall
    table = group_markdown("mitigated", result, 10)
    gap_row = next(line for line in table.splitlines() if line.startswith("| sex |"))
    assert gap_row.split(" | ")[3] == "undefined"  # the equal-opportunity cell
    assert notes["eopp_difference"] in table
    # summary.json: null (the bare NaN json.dumps writes is no JSON), and why
    summary = _summary_numbers(result, "sex")
    assert summary["eo_difference"] == pytest.approx(fpr)
    assert summary["gap_notes"]["eo_difference"] == notes["eo_difference"]
    apart = (sex == "Male").astype(int)  # TPR only for Male, FPR only for Female: no EO
    split = _summary_numbers(model_metrics(apart, score, 0.5, {"sex": sex}), "sex")
    assert split["eo_difference"] is None
    assert split["gap_notes"]["eo_difference"].startswith("equalized-odds difference undefined")
    nobody = _summary_numbers(model_metrics(0 * y, score, 0.5, {"sex": sex}), "sex")
    assert nobody["roc_auc"] is None  # one class
    json.dumps([split, nobody], allow_nan=False)
    from sslops.cli import _cell  # the table `sslops run` prints from summary.json

    assert (_cell(split["eo_difference"]), _cell(0.0)) == ("undefined", "0.0000")
    # the audit's second implementation agrees, so that `audit reproduce` passes
    again = remeasure(y, score, 0.5, {"sex": sex}, intersections=False, resamples=20, seed=0)
    assert math.isnan(again["eopp_difference"])
    checks = compare(flatten(result, None), flatten(again, None))
    assert [c["metric"] for c in checks if not c["passed"]] == []


def test_audit_reproduce_agrees_when_a_gap_is_undefined_in_some_bootstrap_draws() -> None:
    """Group b holds two positive rows, both left out of ~13% of the draws: evaluate gives the
    equal-opportunity gap no interval (undefined in over 5% of the draws), while the audit's
    re-measure counted those draws as a gap of 0 ([0.0, 0.22]), so `audit reproduce` failed
    an untouched bundle (found by the recompute review)."""
    from sslops.audit.reevaluate import compare, flatten
    from sslops.audit.remeasure import remeasure

    rng = np.random.default_rng(0)
    g = np.array(["a"] * 150 + ["b"] * 50)
    y = np.concatenate([rng.integers(0, 2, 150), [1, 1], np.zeros(48, dtype=int)])
    score = np.clip(rng.random(200) * 0.6 + 0.4 * y, 0, 1)
    ours = model_metrics(y, score, 0.5, {"g": g}, resamples=200, seed=0)
    theirs = remeasure(y, score, 0.5, {"g": g}, intersections=False, resamples=200, seed=0)
    assert np.isnan(ours["intervals"]["eopp_difference"]).all()
    assert np.isnan(theirs["gap_intervals"]["g"]["eopp_difference"]).all()
    assert [c["metric"] for c in compare(flatten(ours, None), flatten(theirs, None))
            if not c["passed"]] == []  # fmt: skip


def test_a_group_below_min_group_rows_keeps_its_count_and_no_metric() -> None:
    """A one-row group's accuracy, rates and ECE would be that person's label, decision and
    score; both implementations (evaluate and the audit's re-measurement) hide them alike."""
    from sslops.audit.remeasure import remeasure

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    score = rng.random(200)
    race = np.array(["A"] * 199 + ["Z"])
    groups = {"sex": np.array(["F", "M"] * 100), "race": race}
    for measure in (model_metrics, remeasure):
        kept = measure(y, score, 0.5, groups, intersections=True, resamples=0, seed=0,
                       min_group_rows=10)  # fmt: skip
        lone = kept["by_group"]["race"]["Z"]
        assert lone["count"] == 1 and all(math.isnan(v) for k, v in lone.items() if k != "count")
        crossing = kept["by_group"]["sex x race"]
        assert all(math.isnan(r["tpr"]) for g, r in crossing.items() if g.endswith("| Z"))
        assert not math.isnan(kept["by_group"]["race"]["A"]["accuracy"])
        shown = measure(y, score, 0.5, groups, intersections=True, resamples=0, seed=0)
        assert shown["by_group"]["race"]["Z"]["selection_rate"] == float(score[-1] >= 0.5)


def test_every_column_and_the_crossing_get_gap_intervals_and_the_audit_agrees() -> None:
    """Intervals for every sensitive column's and the crossing's gaps (not only the first
    column's), on the resamples of the overall intervals; the audit's re-measurement gives
    the same."""
    from sslops.audit.remeasure import remeasure

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 600)
    score = np.clip(y * 0.3 + rng.random(600) * 0.7, 0, 1)
    groups = {"sex": rng.choice(["F", "M"], 600), "race": rng.choice(["A", "B", "C"], 600)}
    ours = model_metrics(y, score, 0.5, groups, intersections=True, resamples=200, seed=3)
    assert set(ours["gap_intervals"]) == {"sex", "race", "sex x race"}
    for key in ("dp_difference", "eo_difference", "eopp_difference"):
        assert ours["gap_intervals"]["sex"][key] == ours["intervals"][key]  # same resamples
        for column, (low, high) in ((c, iv[key]) for c, iv in ours["gap_intervals"].items()):
            assert 0 <= low <= high <= 1, column
    crossing = ours["gap_intervals"]["sex x race"]["dp_difference"]
    assert (
        crossing[1] - crossing[0]
        > ours["intervals"]["dp_difference"][1] - ours["intervals"]["dp_difference"][0]
    )  # fmt: skip  (smaller groups, wider interval)
    theirs = remeasure(y, score, 0.5, {k: v.astype(str) for k, v in groups.items()},
                       intersections=True, resamples=200, seed=3)  # fmt: skip
    for column, intervals in ours["gap_intervals"].items():
        for key, bounds in intervals.items():
            assert theirs["gap_intervals"][column][key] == pytest.approx(bounds, abs=1e-12)


def test_every_group_gets_intervals_that_the_audit_reproduces() -> None:
    """Per-group accuracy, selection rate, TPR, FPR, ROC AUC and calibration error get 95%
    intervals on the overall intervals' resamples; undefined draws are left out; a group
    below min_group_rows gets none; the audit's independent re-measurement agrees."""
    from sslops.audit.remeasure import remeasure

    rng = np.random.default_rng(11)
    n = 800
    y = rng.integers(0, 2, n)
    score = np.round(np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1), 2)  # ties inside groups
    race = rng.choice(np.array(["A", "B"]), n)
    race[:12], race[12:15] = "C", "Z"  # C: 12 rows, all positive; Z: 3 rows (hidden)
    y[:12] = 1
    groups = {"sex": rng.choice(np.array(["F", "M"]), n), "race": race}
    ours = model_metrics(y, score, 0.5, groups, intersections=True, resamples=150, seed=5,
                         min_group_rows=10)  # fmt: skip
    every = ours["group_intervals"]
    assert set(every) == {"sex", "race", "sex x race"}
    assert "Z" not in every["race"] and set(every["race"]) == {"A", "B", "C"}
    for column, table in every.items():
        for group, intervals in table.items():
            point = ours["by_group"][column][group]
            for key in ("accuracy", "selection_rate", "tpr", "roc_auc", "ece"):
                if group == "C" and key == "roc_auc":
                    continue
                low, high = intervals[key]
                assert 0 <= low <= high <= 1, (column, group, key)
                assert low - 0.05 <= point[key] <= high + 0.05, (column, group, key)
    assert all(math.isnan(b) for b in every["race"]["C"]["fpr"] + every["race"]["C"]["roc_auc"])
    small, large = every["race"]["C"]["tpr"], every["race"]["A"]["tpr"]
    assert small[1] - small[0] > large[1] - large[0]  # 12 rows: a wider interval
    theirs = remeasure(y, score, 0.5, groups, intersections=True, resamples=150, seed=5,
                       min_group_rows=10)  # fmt: skip
    assert set(theirs["group_intervals"]["race"]) == {"A", "B", "C"}
    for column, table in every.items():
        for group, intervals in table.items():
            for key, bounds in intervals.items():
                assert theirs["group_intervals"][column][group][key] == pytest.approx(
                    bounds, abs=1e-12, nan_ok=True
                ), (column, group, key)
    assert "group_intervals" not in model_metrics(y, score, 0.5, groups, resamples=0)


def test_groups_below_min_group_rows_are_left_out_of_the_gaps_alike() -> None:
    """Three rows of a third group decided a DP gap of 0.20 where the two large groups
    differed by 0.02: a group under min_group_rows is named and left out of every gap and
    its intervals, in evaluate and in the audit's re-measurement."""
    from sslops.audit.remeasure import remeasure

    rng = np.random.default_rng(2)
    n = 1000
    y = rng.integers(0, 2, n)
    score = rng.random(n)
    sex = rng.choice(np.array(["F", "M"]), n)
    sex[:3] = "X"
    score[:3] = 0.99  # all three selected: selection rate 1.0
    groups = {"sex": sex}
    kept = model_metrics(y, score, 0.5, groups, resamples=50, seed=1, min_group_rows=10)
    every = model_metrics(y, score, 0.5, groups, resamples=50, seed=1)
    large = sex != "X"
    expected = rate_gaps(y[large], (score[large] >= 0.5).astype(int), sex[large])
    assert kept["small_groups"] == {"sex": ["X"]} and every["small_groups"] == {}
    assert kept["gaps"]["sex"] == pytest.approx(expected) and kept[
        "dp_difference"
    ] == pytest.approx(expected["dp_difference"])
    assert every["dp_difference"] > 0.4 > kept["dp_difference"]
    assert kept["intervals"]["dp_difference"][1] < 0.2 < every["intervals"]["dp_difference"][1]
    theirs = remeasure(y, score, 0.5, groups, intersections=False, resamples=50, seed=1,
                       min_group_rows=10)  # fmt: skip
    assert theirs["gaps"]["sex"] == pytest.approx(kept["gaps"]["sex"], abs=1e-12)
    for key, bounds in kept["gap_intervals"]["sex"].items():
        assert theirs["gap_intervals"]["sex"][key] == pytest.approx(bounds, abs=1e-12)
        assert theirs["intervals"][key] == pytest.approx(kept["intervals"][key], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_group_table_equals_fairlearn_metric_frame(seed: int) -> None:
    # Groups of every awkward kind: one row, only positives, only negatives, tied scores
    # across classes, scores of exactly 0 and 1 (the ECE's last bin), and many rows.
    rng = np.random.default_rng(seed)
    n = 3000
    groups = rng.choice(np.array(["Amer-Indian", "Black", "White", "Other", "Z"]), n,
                        p=[0.05, 0.15, 0.6, 0.2, 0.0]).astype(object)  # fmt: skip
    y = (rng.random(n) < 0.3).astype(int)
    score = np.round(np.clip(0.3 * y + rng.random(n) * 0.8 - 0.05, 0, 1), 2)  # ties, 0 and 1
    groups[:1] = "one row"
    groups[1:40] = "positives only"
    y[1:40] = 1
    groups[40:70] = "negatives only"
    y[40:70] = 0
    predicted = (score >= 0.5).astype(int)
    predicted[rng.random(n) < 0.05] ^= 1  # randomized decisions: not a threshold of the score
    from sslops.evaluate.metrics import _group_table, metric_frame_table

    ours, theirs = (
        _group_table(y, score, predicted, groups),
        metric_frame_table(y, score, predicted, groups),
    )
    assert list(ours) == list(theirs)  # the same groups in the same order
    for group, row in theirs.items():
        assert list(ours[group]) == list(row)
        for key, value in row.items():
            if math.isnan(value):
                assert math.isnan(ours[group][key]), (group, key)
            else:
                assert ours[group][key] == pytest.approx(value, abs=1e-12, rel=0), (group, key)
    assert math.isnan(ours["positives only"]["fpr"]) and math.isnan(ours["one row"]["roc_auc"])
    assert math.isnan(ours["negatives only"]["tpr"])


def _two_models(seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    n = 600
    y = (rng.random(n) < 0.35).astype(int)
    groups = rng.choice(np.array(["a", "b", "c"]), n, p=[0.5, 0.4, 0.1])
    first = np.round(np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1), 2)  # tied scores
    second = np.round(np.clip(0.1 * y + rng.random(n) * 0.9, 0, 1), 2)
    return y, groups, first, second, (first >= 0.5).astype(int), (second >= 0.5).astype(int)


def test_paired_delta_intervals_are_those_of_each_resample_computed_by_hand() -> None:
    from sslops.evaluate.metrics import SUMMARY, paired_delta_intervals

    y, groups, first, second, d1, d2 = _two_models(0)
    result = paired_delta_intervals(y, (first, second), (d1, d2), groups, 300, 7)
    rng = np.random.default_rng(7)
    draws: dict[str, list[float]] = {k: [] for k in SUMMARY}
    for _ in range(300):
        rows = rng.integers(0, len(y), len(y))  # one resample, the same rows for both models
        both = []
        for score, decided in ((first, d1), (second, d2)):
            yr, dr = y[rows], decided[rows]
            both.append({"accuracy": accuracy_score(yr, dr), "roc_auc": roc_auc_score(yr, score[rows]),
                         "selection_rate": dr.mean(), **rate_gaps(yr, dr, groups[rows])})  # fmt: skip
        for k in SUMMARY:
            draws[k].append(both[0][k] - both[1][k])
    for k in SUMMARY:
        expected = [np.percentile(draws[k], 2.5), np.percentile(draws[k], 97.5)]
        assert result[k] == pytest.approx(expected, abs=1e-12), k
    # Paired: a model against itself differs by exactly 0 on every resample.
    same = paired_delta_intervals(y, (first, first), (d1, d1), groups, 50, 7)
    assert all(same[k] == [0.0, 0.0] for k in SUMMARY)
    assert paired_delta_intervals(y, (first, second), (d1, d2), groups, 0, 7) == {}


def test_bootstrap_intervals_are_those_of_each_resample_with_a_left_out_group() -> None:
    from sslops.evaluate.metrics import SUMMARY, bootstrap_intervals
    from sslops.gaps import without_small_groups

    y, groups, score, _, decided, _ = _two_models(1)
    compared = without_small_groups(groups, 80)  # "c" (about 60 rows) is left out of the gaps
    assert (compared != groups).any()
    result = bootstrap_intervals(y, score, 0.5, compared, 200, 3)
    rng = np.random.default_rng(3)
    draws: dict[str, list[float]] = {k: [] for k in SUMMARY}
    for _ in range(200):
        rows = rng.integers(0, len(y), len(y))
        yr, dr = y[rows], decided[rows]
        drawn = {"accuracy": accuracy_score(yr, dr), "roc_auc": roc_auc_score(yr, score[rows]),
                 "selection_rate": dr.mean(), **rate_gaps(yr, dr, compared[rows])}  # fmt: skip
        for k in SUMMARY:
            draws[k].append(drawn[k])
    for k in SUMMARY:
        expected = [np.percentile(draws[k], 2.5), np.percentile(draws[k], 97.5)]
        assert result[k] == pytest.approx(expected, abs=1e-12), k


def test_group_intervals_are_those_of_metric_frame_on_each_resample() -> None:
    from sslops.evaluate.metrics import (
        GROUP_METRICS,
        group_intervals,
        metric_frame_table,
        percentile_bounds,
    )

    y, groups, score, _, decided, _ = _two_models(2)
    y, groups, score, decided = y[:300], groups[:300], score[:300], decided[:300]
    result = group_intervals(y, score, decided, groups, 40, 9)
    rng = np.random.default_rng(9)
    draws: dict[tuple[str, str], list[float]] = {}
    for _ in range(40):
        rows = rng.integers(0, len(y), len(y))
        table = metric_frame_table(y[rows], score[rows], decided[rows], groups[rows])
        for group in np.unique(groups):  # a group absent from the draw: no value (NaN)
            for k in GROUP_METRICS:
                draws.setdefault((group, k), []).append(table.get(group, {}).get(k, math.nan))
    assert list(result) == sorted(np.unique(groups))
    for (group, k), values in draws.items():
        assert result[group][k] == pytest.approx(percentile_bounds(values), abs=1e-12), (group, k)


def test_the_evaluate_stage_tables_are_metric_frames_and_shadows_counted_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """model_metrics' default per-group tables come from fairlearn MetricFrame (the evaluate
    stage's report); group_table="counts" (sslops shadow, at scale) gives the same numbers."""
    import sslops.evaluate.metrics as metrics

    y, groups, score, *_ = _two_models(4)
    calls = []

    class Spy(metrics.MetricFrame):  # type: ignore[misc]
        def __init__(self, *args, **kwargs) -> None:
            calls.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(metrics, "MetricFrame", Spy)
    by_sex = {"sex": groups}
    fair = metrics.model_metrics(y, score, 0.5, by_sex, min_group_rows=5)
    assert len(calls) == 2  # decisions' and scores' frames, one column
    counted = metrics.model_metrics(y, score, 0.5, by_sex, min_group_rows=5, group_table="counts")
    assert len(calls) == 2
    assert list(fair["by_group"]["sex"]) == list(counted["by_group"]["sex"])
    for group, row in fair["by_group"]["sex"].items():
        assert counted["by_group"]["sex"][group] == pytest.approx(row, abs=1e-12, rel=0)


def test_gap_intervals_equal_code_gaps_of_the_indexed_rows_of_each_resample_exactly() -> None:
    """gap_intervals counts each resample's cells instead of indexing the drawn rows (the
    perf review): the bounds are those of code_gaps on the indexed rows, bit for bit, with a
    left-out small group and a group whose few positive rows some draws miss (NaN gaps)."""
    from sslops.evaluate.metrics import gap_intervals, percentile_bounds
    from sslops.gaps import code_gaps, group_codes, without_small_groups

    y, groups, _, _, decided, _ = _two_models(3)
    groups = groups.astype(object)
    groups[:5] = "tiny"  # left out of the gaps (fewer than 10 rows)
    y[groups == "c"] = 0  # no true-positive rate
    rare = np.flatnonzero(groups == "a")
    y[rare] = 0
    y[rare[:2]] = 1  # "a" keeps two positive rows: some draws have none, the TPR gap is NaN
    compared = without_small_groups(groups.astype(str), 10)
    codes = group_codes(compared)
    assert (codes < 0).sum() == 5
    for resamples, seed in ((150, 4), (1, 0)):
        result = gap_intervals(y, decided, compared, resamples, seed)
        rng = np.random.default_rng(seed)
        draws: dict[str, list[float]] = {
            k: [] for k in ("dp_difference", "eo_difference", "eopp_difference")
        }
        for _ in range(resamples):
            rows = rng.integers(0, len(y), len(y))
            for k, v in code_gaps(y[rows], decided[rows], codes[rows], math.nan).items():
                draws[k].append(v)
        assert any(math.isnan(v) for v in draws["eopp_difference"]) or resamples == 1
        expected = {k: percentile_bounds(v) for k, v in draws.items()}
        assert json.dumps(result) == json.dumps(expected)  # NaN meets NaN; floats exactly
    assert gap_intervals(y, decided, compared, 0, 4) == {}
