"""Two sensitive columns at once (sex and race on Adult): what the fairness policy bounds,
what the reports say it bounds, and the post-processor that needs both columns (found by
the multisens review)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference

from sslops.config import Config
from sslops.prepare.dataset import PreparedData


def _fairlearn_dp(predicted: np.ndarray, groups: pd.Series, least: int) -> float:
    """fairlearn's demographic-parity difference over the groups of ``least`` rows or more
    (smaller ones are left out of every gap, as evaluate.min_group_rows says)."""
    kept = groups.map(groups.value_counts()).to_numpy() >= least
    return float(demographic_parity_difference(
        np.zeros(int(kept.sum())), predicted[kept], sensitive_features=groups[kept]
    ))  # fmt: skip


def test_a_policy_on_two_columns_bounds_each_and_the_reports_say_so(
    small_config: Config, stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """finetune.fairness.sensitive [sex, race]: the gap the selection compares is the larger
    of the two columns' (checked by hand with fairlearn on the selected model's validation
    and held-out predictions), and evaluate's metrics.md / metrics.json name both columns and
    each model's test figure of that gap, not the gap by sex alone."""
    from sslops.evaluate import evaluate
    from sslops.finetune import finetune
    from sslops.finetune.stage import _gap_holdout, _predict
    from sslops.models.tabular import load_classifier

    cfg = small_config.model_copy(deep=True)
    cfg.finetune.fairness.sensitive = ["sex", "race"]
    cfg.finetune.fairness.postprocessing = False
    out = finetune(cfg, stage_artifacts["prepare"], stage_artifacts["pretrain"], tmp_path / "ft")
    report = json.loads((out / "finetune.json").read_text())["fairness"]
    assert report["sensitive"] == ["sex", "race"]
    chosen = next(c for c in report["candidates"] if c["name"] == report["selected"])

    data = PreparedData(stage_artifacts["prepare"])
    val, pool = data.validation, data.pretraining
    held, _ = _gap_holdout(cfg, len(pool.target), np.load(out / "labeled_rows.npy"))
    model, _ = load_classifier(out, "mitigated")
    predicted = np.concatenate(
        [_predict(model, val.features), _predict(model, pool.features[held])]
    ) >= cfg.evaluate.threshold  # fmt: skip
    by_column = {
        c: _fairlearn_dp(predicted, pd.Series(np.concatenate(
            [val.groups(c).to_numpy(), pool.groups(c).to_numpy()[held]]).astype(str)),
            cfg.evaluate.min_group_rows)
        for c in ("sex", "race")
    }  # fmt: skip
    assert chosen["demographic_parity_difference"] == round(max(by_column.values()), 5)

    ev = evaluate(cfg, stage_artifacts["prepare"], out, tmp_path / "ev")
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["policy"]["sensitive"] == ["sex", "race"]
    assert metrics["policy"]["gap"] == "dp_difference"
    for m in metrics["models"].values():
        gaps = {c: m["gaps"][c]["dp_difference"] for c in ("sex", "race")}
        assert m["policy_gap"] == max(gaps.values())
        assert m["policy_gap_column"] == max(gaps, key=lambda c: gaps[c])
    text = (ev / "metrics.md").read_text()
    assert ("The fairness policy constrains: demographic_parity, its largest difference over "
            "sex, race (each column on its own; their crossing is reported, not "
            "constrained), <= 0.02 on validation.") in text  # fmt: skip
    mitigated = metrics["models"]["mitigated"]
    assert (f"- mitigated: {mitigated['policy_gap']:.4f} ({mitigated['policy_gap_column']})"
            in text)  # fmt: skip


def test_a_policy_on_one_column_is_named_in_the_report(stage_artifacts: dict[str, Path]) -> None:
    """The default policy (data.sensitive[0], sex): metrics.md names the column it bounds."""
    metrics = json.loads((stage_artifacts["evaluate"] / "metrics.json").read_text())
    assert metrics["policy"]["sensitive"] == ["sex"]
    for m in metrics["models"].values():
        assert m["policy_gap"] == m["gaps"]["sex"]["dp_difference"] == m["dp_difference"]
        assert m["policy_gap_column"] == "sex"
    text = (stage_artifacts["evaluate"] / "metrics.md").read_text()
    assert "The fairness policy constrains: demographic_parity, its difference by sex, <=" in text


def test_policy_gap_is_undefined_when_a_column_s_is() -> None:
    """A policy column whose gap is undefined (NaN) leaves the largest unknown, as in the
    finetune selection: NaN and no column, 'undefined' in the report."""
    from sslops.evaluate.stage import _metrics_markdown, policy_gaps

    def model(sex: float, race: float) -> dict[str, Any]:
        return {"accuracy": 0.8, "roc_auc": 0.9, "dp_difference": sex, "eo_difference": 0.1,
                "gaps": {"sex": {"dp_difference": sex}, "race": {"dp_difference": race}}}  # fmt: skip

    metrics = {"ssl": model(0.1, 0.3), "mitigated": model(0.01, math.nan)}
    policy = policy_gaps(metrics, {"constraint": "demographic_parity", "max_gap": 0.02,
                                   "sensitive": ["sex", "race"]}, "sex")  # fmt: skip
    assert policy is not None and policy["sensitive"] == ["sex", "race"]
    assert (metrics["ssl"]["policy_gap"], metrics["ssl"]["policy_gap_column"]) == (0.3, "race")
    assert math.isnan(metrics["mitigated"]["policy_gap"])
    assert metrics["mitigated"]["policy_gap_column"] is None
    text = _metrics_markdown(metrics, "sex", "demographic_parity", 0.75, policy)
    assert "- ssl: 0.3000 (race)\n- mitigated: undefined\n" in text
    assert policy_gaps(metrics, {"constraint": "none", "sensitive": None}, "sex") is None


def test_the_run_summary_names_the_policy_columns_and_each_model_s_policy_gap() -> None:
    from sslops.pipeline.local import _summary_numbers, summary_fairness

    fairness = {"constraint": "equalized_odds", "max_gap": 0.05, "selected": "penalty=10",
                "selected_mechanism": "penalty", "selected_description": "a head",
                "policy_met_on_validation": True, "sensitive": ["sex", "race"]}  # fmt: skip
    assert summary_fairness(fairness, "sex")["sensitive"] == ["sex", "race"]
    assert summary_fairness({**fairness, "sensitive": None}, "sex")["sensitive"] == ["sex"]
    numbers = {"accuracy": 0.8, "roc_auc": 0.9, "dp_difference": 0.01, "eo_difference": 0.02}
    row = _summary_numbers({**numbers, "policy_gap": 0.2, "policy_gap_column": "race"}, "sex")
    assert (row["eo_difference"], row["policy_gap"], row["policy_gap_column"]) == (
        0.02, 0.2, "race")  # fmt: skip
    assert _summary_numbers({**numbers, "policy_gap": None, "policy_gap_column": None},
                            "sex")["policy_gap"] is None  # fmt: skip
    assert "policy_gap" not in _summary_numbers(numbers, "sex")  # images and series


def test_kfp_metrics_carry_each_model_s_policy_gap(tmp_path: Path) -> None:
    from unittest.mock import Mock

    from sslops.artifacts import write_json
    from sslops.pipeline import tasks

    out = tmp_path / "evaluation"
    out.mkdir()
    model = {"accuracy": 0.8, "roc_auc": 0.9, "dp_difference": 0.01, "eo_difference": 0.1}
    write_json(out / "metrics.json", {
        "models": {"mitigated": {**model, "policy_gap": 0.04},
                   "ssl": {**model, "policy_gap": math.nan}},  # undefined: null, not logged
        "roc_curves": {"mitigated": {"fpr": [0, 1], "tpr": [0, 1], "thresholds": [1, 0]}},
        "confusion_matrices": {"mitigated": [[1, 0], [0, 1]]},
    })  # fmt: skip
    (out / "metrics.md").write_text("metrics\n")
    metrics = Mock()
    tasks.log_evaluation(out, metrics, Mock(), tmp_path / "r.md", "mitigated")
    logged = {c.args[0]: c.args[1] for c in metrics.log_metric.call_args_list}
    assert logged["mitigated_policy_gap"] == 0.04 and "ssl_policy_gap" not in logged


def test_threshold_optimizer_s_skip_reason_names_crossed_groups_plainly() -> None:
    """A crossed group (sex x race) absent from the labeled draw is named as written, not as
    numpy's np.str_('Male|Other') repr (seen in finetune.json with 1% of the labels)."""
    from sslops.finetune.stage import _threshold_optimizer_unfittable

    labeled = np.array([["Male", "White"], ["Female", "White"]] * 4)
    y = np.array([0, 1] * 4)
    y[::4], y[1::4] = 1, 0  # both classes in each labeled group
    scored = np.array([["Male", "White"], ["Male", "Other"]])
    reason = _threshold_optimizer_unfittable(y, labeled, [scored])
    assert reason == (
        "ThresholdOptimizer not fitted (reported model only): group(s) 'Male|Other' have no "
        "labeled row"
    )


def test_the_card_s_policy_gap_is_unknown_when_a_policy_column_s_is_undefined(
    small_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race's test gap undefined (null in metrics.json): the card showed sex's 0.0100 as 'the
    largest over sex, race: the policy holds for each', as if race's had been measured."""
    from tests import test_fairness_reporting as reporting

    race = {"dp_difference": None, "eo_difference": None, "eopp_difference": None}
    monkeypatch.setitem(reporting._GAPS, "race", race)
    text, _ = reporting._card(small_config, ["sex", "race"])
    assert (
        "on the test split n/a (undefined by 'race': fewer than two of its groups have "
        "the rate compared, so the largest over sex, race is unknown)" in text
    )
    assert "the policy holds for each" not in text
    monkeypatch.setitem(reporting._GAPS, "race", {**race, "dp_difference": float("nan")})
    assert "undefined by 'race'" in reporting._card(small_config, ["sex", "race"])[0]
    assert "0.0100 (95% bootstrap" in reporting._card(small_config, ["sex"])[0]  # sex alone


def test_the_fairness_gates_bound_every_sensitive_column() -> None:
    """audit.gates.max_dp_difference / max_eo_difference looked at data.sensitive[0] only, so
    a policy on [sex, race] deployed a model whose race gap broke the gate (left by the
    multisens review). They bound the policy's columns now, each on its own."""
    from sslops.audit.gates import evaluate_gates, gated_columns, measured_values
    from sslops.errors import GateError

    deployed = {
        "accuracy": 0.8, "roc_auc": 0.9, "dp_difference": 0.01, "eo_difference": 0.02,
        "gaps": {
            "sex": {"dp_difference": 0.01, "eo_difference": 0.02},
            "race": {"dp_difference": 0.06, "eo_difference": 0.015},
            "sex x race": {"dp_difference": 0.3, "eo_difference": 0.4},
        },
    }  # fmt: skip
    exported = {"model": "mitigated", "parity": {"max_abs_diff": 1e-7}}
    metrics = {"models": {"mitigated": deployed}}
    both = measured_values(metrics, exported, None, ["sex", "race"])
    assert (both["max_dp_difference"], both["max_eo_difference"]) == (
        0.06,
        0.02,
    )  # not the crossing
    one = measured_values(metrics, exported, None, ["sex"])
    assert (one["max_dp_difference"], one["max_eo_difference"]) == (0.01, 0.02)
    deployed["gaps"]["race"]["eo_difference"] = float("nan")
    assert math.isnan(
        measured_values(metrics, exported, None, ["sex", "race"])["max_eo_difference"]
    )

    cfg = Config.model_validate({
        "data": {"train": "t.csv", "test": "s.csv", "label": "y", "positive": "1",
                 "sensitive": ["sex", "race"]},
        "export": {"model": "mitigated"},
        "audit": {"gates": {"max_dp_difference": 0.05}},
    })  # fmt: skip
    assert gated_columns(cfg.model_dump()) == ["sex"]  # the policy's default column
    cfg.finetune.fairness.sensitive = ["sex", "race"]
    assert gated_columns(cfg.model_dump()) == ["sex", "race"]
    with pytest.raises(GateError, match=r"max_dp_difference: demographic-parity difference = "
                       r"0\.06 > limit 0\.05"):  # fmt: skip
        evaluate_gates(cfg, both)
