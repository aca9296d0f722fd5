"""Evaluation metrics against sklearn / fairlearn, and the demographic-parity penalty."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from sklearn.metrics import accuracy_score, roc_auc_score

from sslops.evaluate import model_metrics
from sslops.finetune.fairness import DemographicParityPenalty

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
