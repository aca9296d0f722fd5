"""The policy gates without a pipeline run: a value exactly at its limit, the direction of
each gate, what each gate reads from metrics.json / export.json / shortcuts.json, skipped and
overridden gates."""

from __future__ import annotations

from typing import Any

import pytest

from sslops.audit.gates import GATES, evaluate_gates, measured_values
from sslops.config import Config, load_config
from sslops.errors import GateError

_DATA = ["data.train=t.csv", "data.label=y", "data.positive=1", "data.sensitive=[sex]"]
_OFF = [f"audit.gates.{gate}=null" for gate in GATES]


def _config(*settings: str) -> Config:
    return load_config(None, [*_DATA, *_OFF, *settings])


def _values(**given: float | None) -> dict[str, float | None]:
    return {gate: given.get(gate) for gate in GATES}


def _row(report: dict[str, Any], gate: str) -> dict[str, Any]:
    [row] = [r for r in report["results"] if r["gate"] == gate]
    return row


def test_a_value_exactly_at_its_limit_passes() -> None:
    cfg = _config("audit.gates.min_accuracy=0.75", "audit.gates.max_dp_difference=0.125",
                  "audit.gates.max_eo_difference=0.25")  # fmt: skip
    report = evaluate_gates(cfg, _values(min_accuracy=0.75, max_dp_difference=0.125,
                                         max_eo_difference=0.25))  # fmt: skip
    assert report["overall"] == "passed"
    for gate in ("min_accuracy", "max_dp_difference", "max_eo_difference"):
        assert _row(report, gate)["status"] == "passed", gate


@pytest.mark.parametrize(
    ("gate", "limit", "value", "text"),
    [
        ("min_accuracy", 0.8, 0.75, "min_accuracy: test accuracy = 0.75 < limit 0.8"),
        ("min_auc", 0.7, 0.625, "min_auc: test ROC AUC = 0.625 < limit 0.7"),
        ("max_dp_difference", 0.05, 0.125,
         "max_dp_difference: demographic-parity difference = 0.125 > limit 0.05"),
        ("max_eo_difference", 0.05, 0.25,
         "max_eo_difference: equalized-odds difference = 0.25 > limit 0.05"),
        ("max_onnx_abs_diff", 1e-4, 0.001,
         "max_onnx_abs_diff: max abs. difference ONNX vs torch = 0.001 > limit 0.0001"),
        ("max_int8_accuracy_drop", 0.5, 0.75,
         "max_int8_accuracy_drop: int8 accuracy loss (points) = 0.75 > limit 0.5"),
        ("max_sensitive_reliance", 0.01, 0.03125, "max_sensitive_reliance: share of decisions "
         "changed by setting only a sensitive attribute to another value = 0.03125 > limit 0.01"),
    ],
)  # fmt: skip
def test_each_gate_fails_on_its_side_of_the_limit_and_names_value_and_limit(
    gate: str, limit: float, value: float, text: str
) -> None:
    cfg = _config(f"audit.gates.{gate}={limit}")
    with pytest.raises(GateError) as info:
        evaluate_gates(cfg, _values(**{gate: value}))
    assert text in str(info.value)
    # the other side of the limit passes
    kind = GATES[gate][1]
    other = limit + (0.01 if kind == "min" else -limit / 2)
    assert _row(evaluate_gates(cfg, _values(**{gate: other})), gate)["status"] == "passed"


def test_an_undefined_value_fails_and_says_so() -> None:
    cfg = _config("audit.gates.min_auc=0.6")
    with pytest.raises(GateError, match=r"min_auc: test ROC AUC is undefined \(NaN\), limit 0.6"):
        evaluate_gates(cfg, _values(min_auc=float("nan")))


def test_switched_off_and_unmeasured_gates_are_skipped_with_their_reason() -> None:
    cfg = _config("audit.gates.min_auc=0.6")
    report = evaluate_gates(cfg, _values(min_accuracy=0.1))
    assert _row(report, "min_accuracy")["status"] == "skipped"
    assert _row(report, "min_accuracy")["reason"] == "gate switched off"
    assert _row(report, "min_auc")["status"] == "skipped"
    assert _row(report, "min_auc")["reason"] == "nothing to measure"
    assert report["overall"] == "passed"


def test_an_overridden_failure_is_recorded_and_does_not_stop_the_audit() -> None:
    why = "accepted for the pilot, the ROC AUC floor is reviewed in the next release"
    cfg = _config("audit.gates.min_auc=0.9", "audit.gates.min_accuracy=0.5",
                  f"audit.overrides.min_auc.justification={why}",
                  "audit.overrides.min_auc.approved_by=risk office")  # fmt: skip
    report = evaluate_gates(cfg, _values(min_auc=0.75, min_accuracy=0.8))
    assert report["overall"] == "passed with overrides"
    row = _row(report, "min_auc")
    assert row["status"] == "overridden"
    assert row["finding"] == "min_auc: test ROC AUC = 0.75 < limit 0.9"
    assert row["override"] == {"justification": why, "approved_by": "risk office"}
    assert "override" not in _row(report, "min_accuracy")
    # another gate failing is not covered by that override
    with pytest.raises(GateError) as info:
        evaluate_gates(cfg, _values(min_auc=0.75, min_accuracy=0.25))
    assert "min_accuracy" in str(info.value) and "min_auc:" not in str(info.value)


def _metrics() -> dict[str, Any]:
    deployed = {"accuracy": 0.8125, "roc_auc": 0.875, "dp_difference": 0.0625,
                "eo_difference": 0.1875}  # fmt: skip
    other = dict.fromkeys(deployed, 0.5)
    return {"models": {"ssl": other, "mitigated": deployed}}


def test_measured_values_read_the_deployed_model_and_the_worst_parity_batch() -> None:
    exported = {
        "model": "mitigated",
        "parity": {"max_abs_diff": 2e-6, "batch_max_abs_diff": {"1": 5e-6, "64": 3e-6}},
        "quantization": {"accuracy_change_points": -0.75},
    }
    shortcuts = {"model": "mitigated", "counterfactual": {
        "sex": {"changed_share": 0.03125, "changed_share_when_set_to": {}},
        "race": {"changed_share": 0.0625, "changed_share_when_set_to": {}},
    }}  # fmt: skip
    assert measured_values(_metrics(), exported, shortcuts) == {
        "min_accuracy": 0.8125,
        "min_auc": 0.875,
        "max_dp_difference": 0.0625,
        "max_eo_difference": 0.1875,
        "max_onnx_abs_diff": 5e-6,
        "max_int8_accuracy_drop": 0.75,  # an accuracy change of -0.75 points is a 0.75 drop
        "max_sensitive_reliance": 0.0625,  # the largest over the columns
    }
    # an int8 model more accurate than fp32 has a negative drop
    exported["quantization"] = {"accuracy_change_points": 0.25}
    assert measured_values(_metrics(), exported, shortcuts)["max_int8_accuracy_drop"] == -0.25


def test_reliance_of_another_model_or_no_quantization_is_nothing_to_measure() -> None:
    exported: dict[str, Any] = {"model": "mitigated", "parity": {"max_abs_diff": 1e-6}}
    shortcuts = {"model": "ssl", "counterfactual": {"sex": {"changed_share": 0.5}}}
    values = measured_values(_metrics(), exported, shortcuts)
    assert values["max_sensitive_reliance"] is None
    assert values["max_int8_accuracy_drop"] is None
    assert values["max_onnx_abs_diff"] == 1e-6
    assert measured_values(_metrics(), exported, None)["max_sensitive_reliance"] is None
