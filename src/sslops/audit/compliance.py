"""Where each item of EU AI Act Annex IV and NIST AI RMF MEASURE is evidenced in the bundle.

The mapping is data: each row names the requirement, the bundle files (glob
patterns) that evidence it and what the organisation must still supply itself.
Rows are resolved against the files the bundle really holds, so a result that is
absent (say, no OOD evaluation was run) shows up as a gap instead of a claim.
docs/audit.md explains the choices.
"""

from __future__ import annotations

from fnmatch import fnmatch
from typing import Any

# (framework, id, requirement, evidence patterns, what the organisation supplies)
_ROWS: list[tuple[str, str, str, list[str], str]] = [
    ("EU AI Act Annex IV", "1", "General description: intended purpose, provider, versions, "
     "software it runs on, instructions for use",
     ["model_card.*", "environment.json", "sbom.cdx.json", "run.json", "evidence/export/export.json"],
     "provider identity, placing on the market, user instructions beyond the card"),
    ("EU AI Act Annex IV", "2(a)", "Development methods and steps, pre-trained components used",
     ["lineage.json", "config.json", "evidence/pretrain/*", "evidence/finetune/*"], ""),
    ("EU AI Act Annex IV", "2(b)", "Design choices, what the system optimises, trade-offs",
     ["model_card.*", "config.json", "evidence/finetune/finetune.json"],
     "the business rationale for the chosen trade-off"),
    ("EU AI Act Annex IV", "2(c)", "System architecture and computational resources",
     ["evidence/pretrain/*", "evidence/finetune/*.json", "environment.json", "lineage.json"], ""),
    ("EU AI Act Annex IV", "2(d)", "Data requirements: provenance, scope, characteristics, "
     "cleaning, labelling",
     ["evidence/prepare/datacard.*", "lineage.json"], "labelling procedure of the source data"),
    ("EU AI Act Annex IV", "2(e)", "Human oversight measures (Article 14)", ["model_card.*"],
     "the oversight process around the decision threshold"),
    ("EU AI Act Annex IV", "2(f)", "Pre-determined changes and continuous compliance",
     ["changelog.json", "gates.json"], "the change-management procedure"),
    ("EU AI Act Annex IV", "2(g)", "Validation and testing: data, metrics (accuracy, robustness, "
     "discriminatory impact), dated and signed test logs",
     ["evidence/evaluate/*", "gates.json", "evidence/export/export.json", "manifest.json",
      "signature.json"], ""),
    ("EU AI Act Annex IV", "2(h)", "Cybersecurity measures",
     ["manifest.json", "signature.json", "sbom.cdx.json"], "deployment hardening, access control"),
    ("EU AI Act Annex IV", "3", "Capabilities and limitations, accuracy for groups of persons, "
     "foreseeable risks, input data specification",
     ["model_card.*", "evidence/evaluate/metrics.json", "evidence/export/export.json"], ""),
    ("EU AI Act Annex IV", "4", "Appropriateness of the performance metrics",
     ["model_card.*", "gates.json"], "why these metrics suit the use case"),
    ("EU AI Act Annex IV", "5", "Risk management system (Article 9)", ["gates.json"],
     "the risk-management process; gates are one control in it"),
    ("EU AI Act Annex IV", "6", "Relevant changes through the lifecycle", ["changelog.json"], ""),
    ("EU AI Act Annex IV", "7", "Harmonised standards applied", [],
     "list of standards (none is applied by sslops itself)"),
    ("EU AI Act Annex IV", "8", "EU declaration of conformity", [], "the declaration"),
    ("EU AI Act Annex IV", "9", "Post-market monitoring plan (Article 72)", [],
     "the monitoring plan; bundles of later runs feed the change log"),
    ("NIST AI RMF", "MEASURE 1.1", "Approaches and metrics for the most significant risks are "
     "selected and documented", ["config.json", "gates.json"], ""),
    ("NIST AI RMF", "MEASURE 1.3", "Internal or independent assessors review the measurements",
     ["manifest.json", "signature.json"], "the reviewers"),
    ("NIST AI RMF", "MEASURE 2.1", "Test sets, metrics and tools are documented",
     ["evidence/evaluate/*", "evidence/prepare/datacard.*", "environment.json"], ""),
    ("NIST AI RMF", "MEASURE 2.3", "Performance is measured in conditions like deployment",
     ["evidence/export/export.json"], "a shadow test on production traffic"),
    ("NIST AI RMF", "MEASURE 2.5", "Validity and reliability are demonstrated",
     ["evidence/evaluate/*", "evidence/export/export.json"], ""),
    ("NIST AI RMF", "MEASURE 2.7", "Security and resilience are evaluated",
     ["signature.json", "sbom.cdx.json"], "penetration and adversarial testing"),
    ("NIST AI RMF", "MEASURE 2.8", "Transparency and accountability risks are examined",
     ["model_card.*", "lineage.json", "gates.json"], ""),
    ("NIST AI RMF", "MEASURE 2.9", "The model is explained, validated and documented",
     ["model_card.*", "evidence/evaluate/*"], ""),
    ("NIST AI RMF", "MEASURE 2.10", "Privacy risk is examined", ["evidence/prepare/datacard.*"],
     "a privacy impact assessment"),
    ("NIST AI RMF", "MEASURE 2.11", "Fairness and bias are evaluated and documented",
     ["evidence/evaluate/metrics.json", "evidence/finetune/finetune.json", "gates.json"], ""),
    ("NIST AI RMF", "MEASURE 2.12", "Environmental impact is assessed", ["lineage.json"],
     "energy figures (the lineage holds stage times only)"),
    ("NIST AI RMF", "MEASURE 2.13", "Effectiveness of the measurement is evaluated",
     ["changelog.json"], ""),
    ("NIST AI RMF", "MEASURE 3.1", "Risks are tracked over time", ["changelog.json", "gates.json"],
     "monitoring in production"),
    ("NIST AI RMF", "MEASURE 4.2", "Measurement results are checked against domain experts' "
     "expectations", [], "expert review"),
]  # fmt: skip


def compliance_map(bundle_files: set[str]) -> list[dict[str, Any]]:
    """Each requirement with the bundle files that evidence it and its coverage."""
    rows = []
    for framework, ident, requirement, patterns, supplied in _ROWS:
        found = sorted(n for n in bundle_files if any(fnmatch(n, p) for p in patterns))
        matched = [p for p in patterns if any(fnmatch(n, p) for n in bundle_files)]
        if not patterns:
            coverage = "organisation"
        elif len(matched) == len(patterns) and not supplied:
            coverage = "covered"
        elif matched:
            coverage = "partial"
        else:
            coverage = "missing"
        rows.append({
            "framework": framework, "id": ident, "requirement": requirement,
            "evidence": matched, "evidence_files": found, "coverage": coverage,
            "organisation_supplies": supplied,
        })  # fmt: skip
    return rows
