"""Every JSON file and ``--json`` output sslops writes parses with a strict parser (Go's
encoding/json, jq, JavaScript's JSON.parse refuse the bare ``NaN`` Python's json writes):
an undefined value is null, and the readers inside sslops take null as undefined (found by
the strict-JSON review)."""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sslops.artifacts import json_text, null_as_nan, strict_json, write_json
from sslops.config import Config
from tests.test_audit import _UPSTREAM, _with


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is no JSON")


def _strict(text: str) -> Any:
    return json.loads(text, parse_constant=_refuse)


def _json_texts(root: Path) -> dict[str, str]:
    """Every .json / .jsonl file below ``root``, and those inside its .zip files."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            found[str(path)] = path.read_text(encoding="utf-8")
        elif path.is_file() and path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                for name in z.namelist():
                    if name.endswith((".json", ".jsonl")):
                        found[f"{path}!{name}"] = z.read(name).decode("utf-8")
    return found


def _check_strict(texts: dict[str, str]) -> None:
    for name, text in texts.items():
        lines = text.splitlines() if name.endswith(".jsonl") else [text]
        for line in lines:
            try:
                _strict(line)
            except ValueError as exc:
                raise AssertionError(f"{name}: {exc}") from None


def test_the_writer_writes_null_for_an_undefined_value_and_nothing_else_changes(
    tmp_path: Path,
) -> None:
    payload = {"auc": math.nan, "gaps": [0.1, math.inf, -math.inf], "n": 3, "ok": True,
               "none": None, "nested": {"x": (math.nan, "a")}}  # fmt: skip
    write_json(tmp_path / "p.json", payload)
    assert _strict((tmp_path / "p.json").read_text()) == {
        "auc": None, "gaps": [0.1, None, None], "n": 3, "ok": True, "none": None,
        "nested": {"x": [None, "a"]},
    }  # fmt: skip
    assert json_text({"a": 1.5}, sort_keys=True) == json.dumps({"a": 1.5}, sort_keys=True)
    assert strict_json([math.nan]) == [None]
    back = null_as_nan({"auc": None, "ci": [None, 0.2], "name": "x"})
    assert math.isnan(back["auc"]) and math.isnan(back["ci"][0]) and back["ci"][1] == 0.2


def test_every_json_file_of_the_stages_and_the_bundle_is_strict(
    stage_artifacts: dict[str, Path],
) -> None:
    """metrics.json and headline.json held a bare NaN on every run with the threshold
    optimizer (no scores: no ROC AUC per group); the bundle carries them (folder and zip)."""
    texts: dict[str, str] = {}
    for folder in stage_artifacts.values():
        texts |= _json_texts(folder)
    for family in ("evaluate/metrics.json", "evaluate/headline.json", "evaluate/shortcuts.json",
                   "finetune/finetune.json", "/meta.json", "bundle/manifest.json",
                   "bundle/gates.json", "bundle.zip!evidence/evaluate/metrics.json",
                   "pretrain/metrics.jsonl"):  # fmt: skip
        assert any(family in name for name in texts), family
    _check_strict(texts)
    metrics = _strict((stage_artifacts["evaluate"] / "metrics.json").read_text())
    by_sex = metrics["models"]["ssl+threshold_optimizer"]["by_group"]["sex"]
    assert all(row["roc_auc"] is None for row in by_sex.values())  # undefined: null
    headline = _strict((stage_artifacts["evaluate"] / "headline.json").read_text())
    assert headline["models"]["ssl+threshold_optimizer"]["roc_auc"] is None


def test_an_undefined_gate_value_is_null_in_the_bundle_and_the_registry_and_listed_undefined(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A gate on an undefined value (accepted by an override) wrote a bare NaN into
    gates.json, the registry's index.json copied it, and ``sslops audit list`` printed
    "nan". The value is made undefined here (a ROC AUC of one class needs a test split of
    one class, which prepare refuses)."""
    from sslops.audit import audit
    from sslops.audit import stage as audit_stage
    from sslops.audit.registry import file_bundle
    from sslops.cli import main

    measured = audit_stage.measured_values
    monkeypatch.setattr(audit_stage, "measured_values",
                        lambda *a: {**measured(*a), "min_auc": math.nan})  # fmt: skip
    cfg = _with(small_config, gates={**small_config.audit.gates.model_dump(), "min_auc": 0.5},
                overrides={"min_auc": {"justification": "accepted in a test of strict JSON",
                                       "approved_by": "the test"}})  # fmt: skip
    out = audit(cfg, {s: stage_artifacts[s] for s in _UPSTREAM}, tmp_path / "audit")
    gates = _strict((out / "bundle" / "gates.json").read_text())
    row = next(r for r in gates["results"] if r["gate"] == "min_auc")
    assert (row["value"], row["status"]) == (None, "overridden")
    assert "undefined" in row["finding"]
    registry = tmp_path / "registry"
    file_bundle(out, registry, model="income")
    _check_strict(_json_texts(out) | _json_texts(registry))
    [entry] = _strict((registry / "models" / "income" / "index.json").read_text())["entries"]
    assert entry["metrics"]["roc_auc"] is None
    capsys.readouterr()
    assert main(["audit", "list", "--registry", str(registry), "--verify"]) == 0
    listed = capsys.readouterr().out
    header, line = listed.strip().splitlines()
    assert line[header.index("ROC_AUC") :].split()[0] == "undefined"  # aligned columns
    assert "nan" not in listed
    assert main(["audit", "list", "--registry", str(registry), "--json"]) == 0
    [listed_row] = _strict(capsys.readouterr().out)
    assert listed_row["metrics"]["roc_auc"] is None
    assert main(["audit", "verify", str(out / "bundle"), "--json", "--integrity-only"]) == 0
    _strict(capsys.readouterr().out)


def test_a_gate_on_a_value_metrics_json_holds_as_null_fails_as_undefined(
    small_config: Config,
) -> None:
    """Read back from strict JSON, an undefined gap is None, which the gates took for
    "nothing to measure" and skipped: a gap nobody could measure passed its gate."""
    from sslops.audit.gates import evaluate_gates, measured_values
    from sslops.errors import GateError

    metrics = _strict(json_text({"models": {"mitigated": {
        "accuracy": 0.8, "roc_auc": 0.9, "dp_difference": 0.01, "eo_difference": math.nan}}}))  # fmt: skip
    assert metrics["models"]["mitigated"]["eo_difference"] is None
    exported = {"model": "mitigated", "parity": {"max_abs_diff": 0.0}}
    cfg = _with(small_config, gates={**small_config.audit.gates.model_dump(),
                                     "max_eo_difference": 0.1})  # fmt: skip
    with pytest.raises(GateError, match="equalized-odds difference is undefined"):
        evaluate_gates(cfg, measured_values(null_as_nan(metrics), exported))


def test_the_registry_chain_of_an_index_filed_before_strict_json_still_verifies() -> None:
    """An index written with a bare NaN chained its next entry to the digest of those bytes;
    read back (NaN), or rewritten strict by a later filing (null), it must still verify,
    and a changed metric must still break the chain."""
    from sslops.audit.registry import _index_problems

    first = {"kind": "filed", "manifest_sha256": "a" * 64, "bundle": f"bundles/{'a' * 64}.zip",
             "filed": "2026-01-01T00:00:00Z", "metrics": {"roc_auc": math.nan, "accuracy": 0.8,
             "dp_difference": None}, "previous": None}  # fmt: skip
    legacy = json.dumps(first, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    second = {**first, "manifest_sha256": "b" * 64, "bundle": f"bundles/{'b' * 64}.zip",
              "metrics": {}, "previous": hashlib.sha256(legacy.encode()).hexdigest()}  # fmt: skip
    as_read = json.loads(json.dumps([first, second]))  # the old index: NaN
    rewritten = _strict(json_text([first, second]))  # rewritten strict: null
    assert rewritten[0]["metrics"]["roc_auc"] is None
    assert _index_problems("m", as_read) == []
    assert _index_problems("m", rewritten) == []
    rewritten[0]["metrics"]["accuracy"] = 0.9
    assert "the chain of digests breaks" in _index_problems("m", rewritten)[0]


def test_the_evaluate_task_logs_no_kfp_metric_for_an_undefined_value(tmp_path: Path) -> None:
    """The KFP evaluate task read metrics.json and took math.isfinite of each value: with
    null (strict JSON) that raised TypeError."""
    from sslops.pipeline import tasks

    logged: dict[str, float] = {}

    class _Metrics:
        def log_metric(self, name: str, value: float) -> None:
            logged[name] = value

    class _Classification:
        def log_roc_curve(self, *curve: Any) -> None: ...

        def log_confusion_matrix(self, *matrix: Any) -> None: ...

    out = tmp_path / "evaluation"
    out.mkdir()
    write_json(out / "metrics.json", {
        "models": {"mitigated": {"accuracy": 0.8, "roc_auc": math.nan, "dp_difference": 0.1,
                                 "eo_difference": math.nan}},
        "roc_curves": {"mitigated": {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0],
                                     "thresholds": [1.0, 0.0]}},
        "confusion_matrices": {"mitigated": [[1, 0], [0, 1]]},
    })  # fmt: skip
    (out / "metrics.md").write_text("metrics\n")
    report = tmp_path / "report.md"
    tasks.log_evaluation(out, _Metrics(), _Classification(), report, "mitigated")
    assert logged == {"mitigated_accuracy": 0.8, "mitigated_dp_difference": 0.1}
