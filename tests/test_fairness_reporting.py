"""What the reports say about fairness: the policy's gap on the columns the policy names, every
column's gaps with intervals and the worst-off group, and what the counterfactual test cannot
show (found by the fairness review)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sslops.config import Config
from sslops.data.encoding import TabularEncoding
from sslops.evaluate.shortcuts import counterfactual_flip

_GAPS = {
    "sex": {"dp_difference": 0.01, "eo_difference": 0.03, "eopp_difference": 0.02},
    "race": {"dp_difference": 0.05, "eo_difference": 0.04, "eopp_difference": 0.04},
    "sex x race": {"dp_difference": 0.30, "eo_difference": 0.25, "eopp_difference": 0.2},
}
_INTERVALS = {
    "sex": {"dp_difference": [0.0, 0.015], "eo_difference": [0.01, 0.05],
            "eopp_difference": [0.0, 0.04]},
    "race": {"dp_difference": [0.03, 0.08], "eo_difference": [0.02, 0.06],
             "eopp_difference": [0.01, 0.07]},
    "sex x race": {"dp_difference": [0.2, 0.4], "eo_difference": [0.1, 0.3],
                   "eopp_difference": [0.1, 0.3]},
}  # fmt: skip
_BY_GROUP = {
    "sex": {"Female": {"count": 400.0, "selection_rate": 0.10, "tpr": 0.5},
            "Male": {"count": 600.0, "selection_rate": 0.11, "tpr": 0.52}},
    "race": {"Black": {"count": 100.0, "selection_rate": 0.07, "tpr": 0.45},
             "White": {"count": 900.0, "selection_rate": 0.12, "tpr": 0.55}},
    "sex x race": {"Female | Black": {"count": 40.0, "selection_rate": 0.02, "tpr": 0.3},
                   "Female | Other": {"count": 3.0, "selection_rate": 0.0, "tpr": 0.0},
                   "Male | White": {"count": 557.0, "selection_rate": 0.32, "tpr": 0.6}},
}  # fmt: skip


def _model() -> dict:
    return {
        "dp_difference": 0.01, "eo_difference": 0.03, "eopp_difference": 0.02,
        "intervals": {"dp_difference": [0.0, 0.015]},
        "gaps": _GAPS, "gap_intervals": _INTERVALS, "by_group": _BY_GROUP,
    }  # fmt: skip


def _card(cfg: Config, policy_columns: list[str]) -> tuple[str, list[str]]:
    from sslops.audit.card import _fairness_section
    from sslops.audit.document import Document

    finetune = {"fairness": {
        "constraint": "demographic_parity", "max_gap": 0.02, "sensitive": policy_columns,
        "selected": "m1", "candidates": [{"name": "m1", "demographic_parity_difference": 0.015}],
    }}  # fmt: skip
    doc = Document("t")
    limits = _fairness_section(
        doc, cfg, {"models": {"m": _model()}, "sensitive": "sex"}, finetune, {}, "m"
    )
    return " ".join(doc.markdown().split()), limits


def test_the_card_reports_the_policy_on_the_column_it_names(small_config: Config) -> None:
    """A policy on race was reported as 'on sex' with the gap by sex (0.01, interval within
    0.02), hiding a test gap by race of 0.05 whose interval reaches 0.08."""
    text, limits = _card(small_config, ["race"])
    assert "Policy: demographic_parity difference <= 0.02 on 'race'." in text
    assert "on the test split 0.0500 (95% bootstrap interval [0.0300, 0.0800])" in text
    assert "that the policy holds on new data is not established" in text
    assert any("(test interval on 'race' up to 0.0800)" in line for line in limits)


def test_the_card_takes_the_largest_gap_over_every_policy_column(small_config: Config) -> None:
    text, limits = _card(small_config, ["sex", "race"])
    assert "on 'sex', 'race'." in text
    assert "on the test split 0.0500 (the largest over sex, race" in text
    assert "'race' attains it" in text
    text, limits = _card(small_config, ["sex"])  # within the policy and its interval too
    assert "on the test split 0.0100 (95% bootstrap interval [0, 0.0150])" in text
    assert not any("not established" in line for line in limits)


def test_the_card_names_the_worst_off_group_of_every_column(small_config: Config) -> None:
    text, _ = _card(small_config, ["sex"])
    # The crossing's lowest rates, leaving out the 3-row group (evaluate.min_group_rows 10).
    assert "| sex x race | 0.3000 [0.2000, 0.4000] |" in text
    assert "| Female \\| Black (0.0200) | Female \\| Black (0.3000) |" in text
    assert "| race | 0.0500 [0.0300, 0.0800] | 0.0400 [0.0200, 0.0600] | 0.0400 " in text
    assert "Black (0.0700) | Black (0.4500) |" in text


def test_metrics_md_shows_every_columns_gaps_with_intervals_and_the_worst_off_group() -> None:
    """metrics.md showed the DP and EO differences of the first column only, without
    intervals: not the crossing's, not equal opportunity, and no group named."""
    from sslops.evaluate.report import gap_markdown, group_markdown

    text = gap_markdown("mitigated", _model(), min_rows=10)
    assert "Fairness gaps of 'mitigated' by every sensitive column" in text
    assert (
        "| sex x race | 0.3000 [0.200, 0.400] | 0.2500 [0.100, 0.300] | 0.2000 [0.100, 0.300] | "
        "Female \\| Black (0.0200) | Female \\| Black (0.3000) |" in text
    )
    assert "| race | 0.0500 [0.030, 0.080] |" in text
    assert text in group_markdown("mitigated", _model(), 10)  # what the stage writes
    assert gap_markdown("m", {"by_group": _BY_GROUP}) == ""  # no gaps measured: no table


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    sex = rng.choice(["Female", "Male"], 200)
    proxy = np.where(sex == "Male", "Husband", "Wife")  # the attribute, under another name
    return pd.DataFrame({"x": rng.normal(size=200), "sex": sex, "relationship": proxy})


def test_the_counterfactual_says_it_measures_direct_use_only() -> None:
    frame = _frame()
    encoding = TabularEncoding.fit(frame, ["x", "sex", "relationship"], max_categories=10)
    names = encoding.feature_names

    def through_proxy(x: np.ndarray) -> np.ndarray:  # decides on the proxy alone
        return x[:, names.index("relationship=Husband")]

    result = counterfactual_flip(through_proxy, frame, encoding, "sex", 0.5)
    # Every decision differs by sex, and the counterfactual changes none of them.
    assert result["changed_share"] == 0.0 and result["model_input"] is True
    assert "direct use of 'sex' only" in result["scope"]
    assert "proxies" in result["scope"] and "not evidence that the model is fair" in result["scope"]


def test_the_counterfactual_of_a_column_the_model_does_not_read_says_so() -> None:
    frame = _frame()
    encoding = TabularEncoding.fit(frame, ["x", "relationship"], max_categories=10)
    result = counterfactual_flip(lambda x: x[:, 0], frame, encoding, "sex", 0.0)
    assert result["changed_share"] == 0.0 and result["model_input"] is False
    assert "'sex' is not a model input" in result["scope"]


def test_the_card_says_what_the_counterfactual_and_not_flagged_cannot_show(
    small_config: Config,
) -> None:
    from sslops.audit.card import _fairness_section
    from sslops.audit.document import Document

    shortcuts = {
        "reliance_threshold": 0.05,
        "permutation": {"sex": {"prediction_flip_rate": 0.0, "flagged": False}},
        "counterfactual": {"sex": {"changed_share": 0.0, "model_input": False}},
    }
    doc = Document("t")
    _fairness_section(doc, small_config, {"models": {"m": {}}}, {}, shortcuts, "m")
    text = " ".join(doc.markdown().split())
    assert "The counterfactual measures direct use of the attribute only" in text
    assert "it is not evidence that the model is fair" in text
    assert "| flagged (permutation) |" in text
    assert "sex: not model input(s), so their counterfactual share is 0 by construction" in text


def test_the_card_says_when_mitigation_worsens_a_groups_calibration(small_config: Config) -> None:
    """The card compared no calibration between the mitigated and the unmitigated model: a
    group whose ECE rose from 0.03 to 0.08 went unmentioned."""
    from sslops.audit.card import _fairness_section
    from sslops.audit.document import Document

    def model(female: float, male: float, tiny: float) -> dict:
        return {"by_group": {
            "sex": {"Female": {"count": 400.0, "ece": female}, "Male": {"count": 600.0, "ece": male}},
            "race": {"Other": {"count": 3.0, "ece": tiny}},  # under min_group_rows: not judged
        }}  # fmt: skip

    def card(deployed: dict) -> tuple[str, list[str]]:
        doc = Document("t")
        metrics = {"models": {"ssl": model(0.03, 0.04, 0.0), "mitigated": deployed}}
        limits = _fairness_section(doc, small_config, metrics, {}, {}, "mitigated")
        return " ".join(doc.markdown().split()), limits

    text, limits = card(model(0.08, 0.045, 0.5))
    assert "mitigation worsened the test calibration error (ECE, 'ssl' -> 'mitigated'" in text
    assert "of 1 group(s): Female by sex: 0.0300 -> 0.0800." in text
    assert any("Female by sex: 0.0300 -> 0.0800" in line for line in limits)
    text, limits = card(model(0.035, 0.04, 0.5))
    assert "no group's test calibration error (ECE) under 'mitigated' is more than 0.02" in text
    assert not any("calibration" in line for line in limits)


def test_the_card_lists_a_large_counterfactual_share_the_permutation_missed(
    small_config: Config,
) -> None:
    """Adult fast run: setting only race to another value changed 15.6% of decisions, a
    shuffle of race (85% White) 1.6%; race was 'flagged: False' and not under Limitations."""
    from sslops.audit.card import _fairness_section
    from sslops.audit.document import Document

    shortcuts = {
        "reliance_threshold": 0.05,
        "permutation": {"race": {"prediction_flip_rate": 0.016, "flagged": False},
                        "sex": {"prediction_flip_rate": 0.01, "flagged": False}},
        "counterfactual": {"race": {"changed_share": 0.156, "model_input": True},
                           "sex": {"changed_share": 0.02, "model_input": True}},
    }  # fmt: skip
    limits = _fairness_section(
        Document("t"), small_config, {"models": {"m": {}}}, {}, shortcuts, "m"
    )
    [line] = [x for x in limits if "depend directly" in x]
    assert "setting only 'race' to another value changes 15.6% of decisions (above 5.0%)" in line
    assert "shuffling it changes 1.6%" in line and "disparate treatment" in line
