"""checkov on what would be applied: the Helm chart rendered for every values file, every
kustomize overlay, and the Containerfile. No failed check; every skip is listed with its
reason in docs/security.md.

checkov lives in its own environment (.tools/checkov, `make checkov`); without it this test
skips, unless SSLOPS_REQUIRE_CHECKOV is set (as `make test` does), where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_k8s_audit_registry import build_component

pytestmark = pytest.mark.checkov

CHECKOV = Path(os.environ.get("SSLOPS_CHECKOV", ROOT / ".tools" / "checkov" / "bin" / "checkov"))
CHART = ROOT / "helm" / "sslops"
ENVIRONMENTS = ("onprem", "aws", "gcp", "azure")


def _listed_skips() -> dict[str, str]:
    text = (ROOT / "docs" / "security.md").read_text()
    table = text.split("<!-- checkov-skips: begin -->")[1].split("<!-- checkov-skips: end -->")[0]
    rows = re.findall(r"^\| (CKV2?_[A-Z0-9_]+) \| [^|]+ \| ([^|]+) \|$", table, flags=re.M)
    return {check: reason.strip() for check, reason in rows}


def _write_targets(target: Path) -> int:
    from sslops.k8s.render import render_helm, render_kustomize

    target.mkdir()
    (target / "helm-default.yaml").write_text(render_helm(CHART, []))
    for env in ENVIRONMENTS:
        (target / f"helm-{env}.yaml").write_text(render_helm(CHART, [CHART / f"values-{env}.yaml"]))
        overlay = ROOT / "manifests" / "overlays" / env
        (target / f"kustomize-{env}.yaml").write_text(render_kustomize(overlay))
    # The optional audit-registry CronJob (off in every preset), with the issuer's key.
    values = target.parent / "audit-registry.yaml"
    values.write_text(yaml.safe_dump({"auditRegistry": {"verify": {
        "enabled": True, "publicKey": {"configMap": "issuer-key"}}}}))  # fmt: skip
    (target / "helm-audit-registry.yaml").write_text(render_helm(CHART, [values]))
    (target / "kustomize-audit-registry.yaml").write_text(build_component(target.parent))
    # checkov recognises Dockerfiles by name.
    shutil.copyfile(ROOT / "Containerfile", target / "Dockerfile")
    return len(list(target.iterdir()))


def _reports(output: str) -> list[dict[str, Any]]:
    parsed = json.loads(output)
    return parsed if isinstance(parsed, list) else [parsed]


def test_checkov_reports_no_failed_check(tmp_path: Path) -> None:
    if not CHECKOV.is_file():
        message = f"checkov not found at {CHECKOV}: `make checkov` creates .tools/checkov"
        if os.environ.get("SSLOPS_REQUIRE_CHECKOV"):
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("helm_python")
    files = _write_targets(tmp_path / "scan")
    result = subprocess.run(
        [
            str(CHECKOV), "--directory", str(tmp_path / "scan"),
            "--framework", "kubernetes", "dockerfile",
            "--skip-download", "--output", "json", "--compact",
        ],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-2000:]
    reports = {r["check_type"]: r for r in _reports(result.stdout)}
    assert set(reports) == {"kubernetes", "dockerfile"}, (files, list(reports))
    failed = [
        f"{c['check_id']} {c['check_name']} on {c['resource']} ({c['file_path']})"
        for report in reports.values()
        for c in report["results"]["failed_checks"]
    ]
    assert failed == [], "checkov failed:\n" + "\n".join(failed)
    listed = _listed_skips()
    for report in reports.values():
        for c in report["results"]["skipped_checks"]:
            reason = c["check_result"].get("suppress_comment", "")
            assert listed.get(c["check_id"]) == reason, (
                f"{c['check_id']} on {c['resource']} is skipped ({reason!r}) but docs/security.md "
                f"lists {listed.get(c['check_id'])!r}"
            )
    assert reports["dockerfile"]["results"]["skipped_checks"] == []
    assert reports["dockerfile"]["summary"]["passed"] > 50
    assert reports["kubernetes"]["summary"]["passed"] > 400
    assert result.returncode == 0
