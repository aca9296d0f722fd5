"""Mutation round 4 of the in-training fairness penalties (``finetune/fairness.py``): which
rows each constraint compares, several sensitive columns, minibatches, unlabeled rows. Each
penalty is worked out by hand: the variance (mean of squared deviations) across groups of
the group-conditional mean probability, summed over the rates and the columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslops.finetune.fairness import FairnessPenalty

# Groups a (rows 0-3) and b (rows 4-7); rows 0, 1, 4, 5 positive.
Y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
G = np.array(["a"] * 4 + ["b"] * 4)
P = torch.tensor([0.9, 0.7, 0.1, 0.3, 0.5, 0.3, 0.6, 0.8], dtype=torch.float64)
TPR_VARIANCE = 0.04  # positives: a 0.8, b 0.4 -> (0.2^2 + 0.2^2) / 2
FPR_VARIANCE = 0.0625  # negatives: a 0.2, b 0.7 -> (0.25^2 + 0.25^2) / 2
DP_VARIANCE = 0.025**2  # all rows: a 0.5, b 0.55


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        ("demographic_parity", DP_VARIANCE),
        ("equal_opportunity", TPR_VARIANCE),
        ("equalized_odds", TPR_VARIANCE + FPR_VARIANCE),
    ],
)
def test_each_constraint_compares_its_own_rows(constraint: str, expected: float) -> None:
    penalty = FairnessPenalty(constraint, G, Y)  # type: ignore[arg-type]
    assert penalty(P).item() == pytest.approx(expected, abs=1e-12)


def test_demographic_parity_counts_the_unlabeled_rows_too() -> None:
    # Group a's rows unlabeled (-1): the parity penalty is that of all rows all the same.
    y = np.array([-1, -1, -1, -1, 1, 1, 0, 0])
    penalty = FairnessPenalty("demographic_parity", G, y)
    assert penalty(P).item() == pytest.approx(DP_VARIANCE, abs=1e-12)
    # equal opportunity: only group b has labeled positives, so there is nothing to compare
    assert FairnessPenalty("equal_opportunity", G, y)(P).item() == 0.0


def test_a_group_without_positives_is_left_out_of_the_true_positive_rate() -> None:
    # group a has no positives: the TPR term compares one group (0), not a's empty mean;
    # the FPR term has a's negatives (mean 0.2) against b's one negative (0.7):
    # (0.25^2 + 0.25^2) / 2
    y = np.array([0, 0, 0, 0, 1, 1, 1, 0])
    p = torch.tensor([0.1, 0.3, 0.2, 0.2, 0.9, 0.7, 0.5, 0.7], dtype=torch.float64)
    for constraint, expected in (("equal_opportunity", 0.0), ("equalized_odds", 0.0625)):
        value = FairnessPenalty(constraint, G, y)(p).item()  # type: ignore[arg-type]
        assert value == pytest.approx(expected, abs=1e-12), constraint


def test_the_columns_penalties_are_summed() -> None:
    # second column: u for even rows, v for odd. All rows: u (0.9+0.1+0.5+0.6)/4 = 0.525,
    # v (0.7+0.3+0.3+0.8)/4 = 0.525 -> 0; positives: u (0.9+0.5)/2 = 0.7, v 0.5 -> 0.01;
    # negatives: u 0.35, v 0.55 -> 0.01.
    second = np.array(["u", "v"] * 4)
    both = np.stack([G, second], axis=1)
    expected = {
        "demographic_parity": DP_VARIANCE + 0.0,
        "equal_opportunity": TPR_VARIANCE + 0.01,
        "equalized_odds": TPR_VARIANCE + FPR_VARIANCE + 0.01 + 0.01,
    }
    for constraint, value in expected.items():
        penalty = FairnessPenalty(constraint, both, Y)  # type: ignore[arg-type]
        assert penalty(P).item() == pytest.approx(value, abs=1e-12), constraint


def test_a_minibatch_is_penalised_on_its_own_rows() -> None:
    # rows 0, 2, 4, 6: positives a 0.9 and b 0.5 -> 0.04; negatives a 0.1, b 0.6 -> 0.0625
    rows = torch.tensor([0, 2, 4, 6])
    penalty = FairnessPenalty("equalized_odds", G, Y)
    assert penalty(P[rows], rows).item() == pytest.approx(0.04 + 0.0625, abs=1e-12)


def test_an_unknown_constraint_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"demographic_parity.*equalized_odds.*equal_opportunity"):
        FairnessPenalty("parity", G, Y)  # type: ignore[arg-type]
