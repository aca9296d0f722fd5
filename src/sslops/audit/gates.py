"""Policy gates: the deployed model's measured values against the limits in ``audit.gates``.

Each gate passes, fails, is skipped (switched off or nothing to measure) or is
overridden: failed, but accepted by ``audit.overrides.<gate>`` with a written
justification and an approver, both recorded in the bundle. Any failure that is not
overridden raises :class:`GateError`, naming every failing gate with its value and
limit, before the audit stage writes anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sslops.errors import GateError

if TYPE_CHECKING:  # audit reproduce imports this module where sslops.config cannot be
    from sslops.config import Config

GATE_FAILED = "policy gate failed"  # how its error line starts (sslops run tells it by this)

# gate -> (what is measured, "min" or "max")
GATES: dict[str, tuple[str, str]] = {
    "min_accuracy": ("test accuracy", "min"),
    "min_auc": ("test ROC AUC", "min"),
    "max_dp_difference": ("demographic-parity difference", "max"),
    "max_eo_difference": ("equalized-odds difference", "max"),
    "max_onnx_abs_diff": ("max abs. difference ONNX vs torch", "max"),
    "max_int8_accuracy_drop": ("int8 accuracy loss (points)", "max"),
    "max_sensitive_reliance": (
        "share of decisions changed by setting only a sensitive attribute to another value",
        "max",
    ),
}


def measured_values(
    metrics: dict[str, Any],
    exported: dict[str, Any],
    shortcuts: dict[str, Any] | None = None,
    sensitive: list[str] | None = None,
) -> dict[str, float | None]:
    """What each gate looks at, for the model that was exported (``shortcuts``: the evaluate
    stage's shortcuts.json; its counterfactual test, the largest share over the columns).
    The fairness gates take the largest gap over the ``sensitive`` columns
    (:func:`gated_columns`), each on its own; undefined in one column makes it undefined (a
    policy on ``[sex, race]`` was gated on sex alone: found by the multi-sensitive review)."""
    deployed = metrics["models"][exported["model"]]  # present: audit's check_metrics
    parity = exported["parity"]
    worst = max([parity["max_abs_diff"], *parity.get("batch_max_abs_diff", {}).values()])
    quant = exported.get("quantization")
    return {
        "min_accuracy": deployed["accuracy"],
        "min_auc": deployed["roc_auc"],
        "max_dp_difference": largest_gap(deployed, "dp_difference", sensitive),
        "max_eo_difference": largest_gap(deployed, "eo_difference", sensitive),
        "max_onnx_abs_diff": worst,
        "max_int8_accuracy_drop": -quant["accuracy_change_points"] if quant else None,
        "max_sensitive_reliance": _sensitive_reliance(
            shortcuts if isinstance(shortcuts, dict) else {}, exported["model"]
        ),
    }


def gated_columns(config: dict[str, Any]) -> list[str]:
    """The columns the fairness gates bound: those the fine-tuning policy constrains
    (``finetune.fairness.sensitive``, default ``data.sensitive[0]``), from a config dump."""
    chosen = config.get("finetune", {}).get("fairness", {}).get("sensitive")
    return list(chosen or config["data"]["sensitive"][:1])


def largest_gap(deployed: dict[str, Any], gap: str, sensitive: list[str] | None) -> Any:
    """``gap`` of the first column (the summary's), or the largest over ``sensitive`` where
    each was measured (``deployed["gaps"]``); NaN when one is undefined. What the fairness
    gates measure, and what ``audit reproduce`` measures again."""
    gaps = deployed.get("gaps")
    if not sensitive or not isinstance(gaps, dict) or not all(
        isinstance(gaps.get(c), dict) and gap in gaps[c] for c in sensitive
    ):  # fmt: skip
        return deployed[gap]
    values = [gaps[c][gap] for c in sensitive]
    if any(v is None or v != v for v in values):
        return float("nan")
    return max(values)


def _sensitive_reliance(shortcuts: dict[str, Any], model: str) -> float | None:
    counterfactual = shortcuts.get("counterfactual")
    if shortcuts.get("model") != model or not isinstance(counterfactual, dict):
        return None
    shares = [c["changed_share"] for c in counterfactual.values()
              if isinstance(c, dict) and isinstance(c.get("changed_share"), float)]  # fmt: skip
    return max(shares) if shares else None


def evaluate_gates(
    cfg: Config, values: dict[str, float | None], context: str = ""
) -> dict[str, Any]:
    """Every gate's result; raises GateError when one fails without an override (its
    message ends with ``context``, e.g. how many labels the model saw)."""
    limits = cfg.audit.gates.model_dump()
    results, failures = [], []
    for gate, (what, kind) in GATES.items():
        limit, value = limits[gate], values[gate]
        override = cfg.audit.overrides.get(gate)
        row: dict[str, Any] = {"gate": gate, "measures": what, "limit": limit, "value": value}
        if limit is None or value is None:
            row["status"] = "skipped"
            row["reason"] = "gate switched off" if limit is None else "nothing to measure"
        else:
            passed = value >= limit if kind == "min" else value <= limit
            value_is_nan = value != value
            passed = passed and not value_is_nan
            row["status"] = "passed" if passed else "overridden" if override else "failed"
            if not passed:
                sign = "<" if kind == "min" else ">"
                text = f"{gate}: {what} = {value:.4g} {sign} limit {limit:g}" if not value_is_nan \
                    else f"{gate}: {what} is undefined (NaN), limit {limit:g}"  # fmt: skip
                row["finding"] = text
                if not override:
                    failures.append(text)
        if override is not None:
            row["override"] = override.model_dump()
        results.append(row)
    if failures:
        raise GateError(
            f"{GATE_FAILED} for model "
            f"{cfg.export.model!r}: {'; '.join(failures)} (to accept a failure, set "
            "audit.overrides.<gate>.justification and .approved_by)"
            + (f"; {context}" if context else "")
        )
    overridden = any(r["status"] == "overridden" for r in results)
    return {
        "model": cfg.export.model,
        "overall": "passed with overrides" if overridden else "passed",
        "results": results,
    }
