"""The OOD split against the test split: the shift measure (a domain classifier's ROC AUC)
and each metric's OOD-minus-test difference with its bootstrap interval, worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sslops.config import Config
from sslops.evaluate.shift import comparison_markdown, domain_auc, split_difference


def _accuracy(y: np.ndarray, s: np.ndarray) -> float:
    return float(np.mean((s >= 0.5) == y))


def test_domain_auc_is_near_one_half_without_shift_and_high_with_it() -> None:
    rng = np.random.default_rng(0)
    a, same = rng.normal(size=(600, 4)), rng.normal(size=(400, 4))
    moved = rng.normal(size=(400, 4)) + np.array([1.5, 0.0, 0.0, 0.0])
    assert abs(domain_auc(a, same, seed=0) - 0.5) < 0.08  # type: ignore[operator]
    assert domain_auc(a, moved, seed=0) > 0.8  # type: ignore[operator]
    assert domain_auc(a[:3], moved, seed=0) is None  # fewer rows than folds
    assert domain_auc(a[:, :0], moved[:, :0], seed=0) is None  # no column to learn from


def test_split_difference_hand_computed_and_its_interval_covers_it() -> None:
    y_t, s_t = np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.1, 0.7])  # accuracy 3/4
    y_o, s_o = np.array([1, 0, 1, 0, 1]), np.array([0.2, 0.9, 0.6, 0.1, 0.4])  # 2/5
    r = split_difference(_accuracy, (y_t, s_t), (y_o, s_o), paired=False, resamples=0, seed=0)
    assert r["test"] == 0.75 and r["ood"] == 0.4 and r["difference"] == pytest.approx(-0.35)
    assert r["difference_interval"] is None and r["paired"] is False
    r = split_difference(_accuracy, (y_t, s_t), (y_o, s_o), paired=False, resamples=300, seed=1)
    low, high = r["difference_interval"]
    assert -1.0 <= low < r["difference"] < high <= 1.0
    with pytest.raises(ValueError, match="paired splits need as many rows: 4 vs 5"):
        split_difference(_accuracy, (y_t, s_t), (y_o, s_o), paired=True, resamples=5, seed=0)


def test_paired_draws_take_the_same_rows_of_both_splits() -> None:
    """A corrupted copy that changes no decision: every paired draw differs by exactly 0,
    where independent draws of the two splits would spread around 0."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    s = rng.random(200)
    paired = split_difference(_accuracy, (y, s), (y, s), paired=True, resamples=50, seed=3)
    assert paired["difference_interval"] == [0.0, 0.0]
    apart = split_difference(_accuracy, (y, s), (y, s), paired=False, resamples=50, seed=3)
    assert apart["difference_interval"][0] < 0 < apart["difference_interval"][1]


def test_comparison_markdown_shows_the_shift_and_every_difference_with_its_interval() -> None:
    row = {"test": 0.8, "ood": 0.7, "difference": -0.1, "difference_interval": [-0.15, -0.05]}
    ood = {"split": "ood", "rows": 321, "paired": False,
           "shift": {"domain_auc": 0.91, "domain_auc_without_predicate": 0.62},
           "compared_with_test": {"ssl": {"accuracy": row, "roc_auc": row}}}  # fmt: skip
    text = comparison_markdown(ood)
    assert "ROC AUC 0.910 (0.5: indistinguishable), 0.620 without the columns" in text
    assert "| ssl | 0.8000 | 0.7000 | -0.1000 [-0.150, -0.050] |" in text
    assert comparison_markdown({"split": "ood", "rows": 1, "models": {}}) == ""


def test_the_card_gives_the_shift_and_the_interval_of_each_ood_difference(
    small_config: Config,
) -> None:
    from sslops.audit.card import _ood_section
    from sslops.audit.document import Document

    cfg = small_config.model_copy(update={"prepare": small_config.prepare.model_copy(
        update={"ood": "native-country != United-States"})})  # fmt: skip
    row = {"test": 0.85, "ood": 0.8, "difference": -0.05, "difference_interval": [-0.08, -0.02]}
    ood = {"split": "ood", "rows": 900, "models": {"ssl": {"accuracy": 0.8}},
           "shift": {"domain_auc": 0.97, "domain_auc_without_predicate": 0.61},
           "compared_with_test": {"ssl": {"accuracy": row, "roc_auc": row}}}  # fmt: skip
    doc = Document("t")
    _ood_section(doc, cfg, {"models": {"ssl": {"accuracy": 0.85}}}, ood)
    text = " ".join(doc.markdown().split())
    assert "ROC AUC 0.970 (0.5: no shift), 0.610 without the columns that define" in text
    assert "ssl, OOD minus test (95% bootstrap interval): accuracy -0.0500 [-0.080, -0.020]" in text


def test_the_card_gives_the_permutation_interval_and_an_uncertain_flag(
    small_config: Config,
) -> None:
    from sslops.audit.card import _fairness_section
    from sslops.audit.document import Document

    perm = {"prediction_flip_rate": 0.052, "prediction_flip_rate_interval": [0.041, 0.063],
            "flagged": True, "flag_uncertain": True}  # fmt: skip
    shortcuts = {"reliance_threshold": 0.05, "permutation": {"planted": perm},
                 "counterfactual": {}}  # fmt: skip
    doc = Document("t")
    _fairness_section(doc, small_config, {"models": {"m": {}}}, {}, shortcuts, "m")
    text = " ".join(doc.markdown().split())
    assert "| planted | 5.2% [4.1%, 6.3%] | None | True (uncertain) |" in text
