"""Audit: the compliance bundle a team files, signed, with gates checked first.

The audit artifact folder holds ``bundle/`` (what is filed and verified),
``bundle.zip`` (the same files), copies of the card's HTML and Markdown next to
them, and the usual ``meta.json``::

    bundle/
      model_card.md / .html / .pdf     the card (HTML self-contained, under 1 MB)
      model.onnx, model.int8.onnx      the deployable models
      evidence/<stage>/...             every JSON/Markdown/PNG result of the earlier stages
      lineage.json                     raw-data hashes -> splits -> SSL checkpoint -> model -> ONNX
      config.json, configs/<stage>.json  the resolved config (per stage when one differs)
      environment.json, sbom.cdx.json  Python and package versions; CycloneDX SBOM
      run.json                         KFP run id and container image, when present
      gates.json                       policy-gate results and accepted overrides
      compliance.json                  EU AI Act Annex IV / NIST AI RMF MEASURE mapping
      changelog.json                   metric changes against audit.previous_bundle
      manifest.json, signature.json    sha256 of every file; Ed25519 signature over it

Gates are evaluated and the signing key is loaded before anything is written, so a
failing gate or a missing key leaves no output.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from sslops.artifacts import META, check_lineage, read_meta, sha256_file, write_artifact, write_json
from sslops.audit.bundle import (
    BUNDLE_DIR,
    MANIFEST,
    SIGNATURE,
    ZIP_NAME,
    fingerprint,
    load_signing_key,
    sign_manifest,
    write_manifest,
    write_zip,
)  # fmt: skip
from sslops.audit.card import build_card
from sslops.audit.changelog import build_changelog
from sslops.audit.compliance import compliance_map
from sslops.audit.environment import environment_record, sbom_json
from sslops.audit.gates import evaluate_gates, measured_values
from sslops.audit.pdf import render_pdf
from sslops.config import Config

_STAGES = ("prepare", "pretrain", "finetune", "evaluate", "export")
CARD_COPIES = ("model_card.html", "model_card.md")
_EVIDENCE_SUFFIXES = {".json", ".md", ".png", ".csv", ".txt"}
_EVIDENCE_MAX_BYTES = 5_000_000


def build_lineage(artifacts: dict[str, Path], deployed: str) -> dict[str, Any]:
    """Each stage's artifact hash, inputs and payload hashes, and the chain from data to ONNX."""
    lineage: dict[str, Any] = {"stages": []}
    metas = {}
    for stage in _STAGES:
        path = artifacts[stage]
        meta = metas[stage] = read_meta(path, stage)  # verifies every file's hash
        lineage["stages"].append({
            "stage": stage,
            "meta_sha256": sha256_file(path / META),
            "inputs": {k: v["meta_sha256"] for k, v in meta["inputs"].items()},
            "sources": {k: v["sha256"] for k, v in meta.get("sources", {}).items()},
            "files": meta["files"],
            "started": meta["started"], "ended": meta["ended"],
            "git_commit": meta["git_commit"], "versions": meta["versions"],
        })  # fmt: skip

    def pick(stage: str, suffix: str, prefer: str | None = None) -> dict[str, str]:
        files = {k: v for k, v in metas[stage]["files"].items() if k.endswith(suffix)}
        preferred = {k: v for k, v in files.items() if prefer and k.startswith(prefer)}
        return preferred or files

    lineage["chain"] = {
        "raw data": {k: v["sha256"] for k, v in metas["prepare"].get("sources", {}).items()},
        "prepared splits": pick("prepare", ".parquet"),
        "SSL checkpoint": pick("pretrain", ".safetensors"),
        "fine-tuned model": pick("finetune", ".safetensors", prefer=f"{deployed}."),
        "ONNX": pick("export", ".onnx"),
    }
    return lineage


def _gate_context(finetuned: Path, metrics: dict[str, Any]) -> str:
    """How much data stands behind the measured values: a failing gate on a model that saw
    a handful of labels should say so."""
    report = json.loads((finetuned / "finetune.json").read_text(encoding="utf-8"))
    used, rows = report.get("labels_used"), report.get("train_rows")
    if used is None or rows is None:
        return ""
    hint = " (raise finetune.label_fraction)" if used < 50 and used < rows else ""
    return (
        f"the model was fitted on {used:,} labels of {rows:,} training rows{hint} and "
        f"measured on {metrics.get('rows', 0):,} test rows"
    )


def _copy_evidence(artifacts: dict[str, Path], bundle: Path) -> list[str]:
    """Every result file of the earlier stages, discovered, under evidence/<stage>/."""
    copied = []
    for stage in _STAGES:
        root = artifacts[stage]
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or rel == META or path.suffix not in _EVIDENCE_SUFFIXES:
                continue
            if path.stat().st_size > _EVIDENCE_MAX_BYTES:
                continue  # large tables stay in the stage artifact; the lineage has their hash
            target = bundle / "evidence" / stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(f"evidence/{stage}/{rel}")
    return copied


def _run_record(run_context: dict[str, Any] | None) -> dict[str, Any]:
    if run_context:
        return {"executed_by": "kfp", **run_context}
    return {
        "executed_by": "command line",
        "kfp_run_id": None,
        "image": os.environ.get("SSLOPS_IMAGE"),
    }


def audit(
    cfg: Config,
    artifacts: dict[str, Path],
    out_dir: Path,
    run_context: dict[str, Any] | None = None,
) -> Path:
    """Run the audit stage over the artifacts of the five earlier stages; returns its folder.

    ``run_context`` carries what only the caller knows (KFP run id, container image).
    """
    check_lineage(*artifacts.values())
    lineage = build_lineage(artifacts, cfg.export.model)
    metrics = json.loads((artifacts["evaluate"] / "metrics.json").read_text(encoding="utf-8"))
    exported = json.loads((artifacts["export"] / "export.json").read_text(encoding="utf-8"))
    gates = evaluate_gates(  # raises on a failing gate
        cfg, measured_values(metrics, exported), _gate_context(artifacts["finetune"], metrics)
    )
    key = load_signing_key(cfg.audit.signing)
    config = cfg.model_dump(mode="json")
    with write_artifact(out_dir, "audit", config, artifacts) as tmp:
        bundle = tmp / BUNDLE_DIR
        bundle.mkdir()
        evidence = _copy_evidence(artifacts, bundle)
        for model in sorted(artifacts["export"].glob("*.onnx")):
            shutil.copy2(model, bundle / model.name)
        write_json(bundle / "config.json", config)
        for stage, meta_path in ((s, artifacts[s]) for s in _STAGES):
            stage_config = read_meta(meta_path, verify=False)["config"]
            if stage_config != config:
                (bundle / "configs").mkdir(exist_ok=True)
                write_json(bundle / "configs" / f"{stage}.json", stage_config)
        write_json(bundle / "lineage.json", lineage)
        versions = {s["stage"]: s["versions"] for s in lineage["stages"]}
        write_json(bundle / "environment.json", environment_record(versions))
        (bundle / "sbom.cdx.json").write_text(
            sbom_json(f"{cfg.export.model} (model.onnx)", exported["onnx_sha256"],
                      lineage["chain"]["raw data"]),
            encoding="utf-8",
        )  # fmt: skip
        run = _run_record(run_context)
        write_json(bundle / "run.json", run)
        write_json(bundle / "gates.json", gates)
        context: dict[str, Any] = {"gates": gates, "lineage": lineage, "run": run}
        if cfg.audit.previous_bundle:
            context["changelog"] = build_changelog(Path(cfg.audit.previous_bundle), bundle)
            write_json(bundle / "changelog.json", context["changelog"])
        names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
        names |= {"model_card.md", "model_card.html", "model_card.pdf", "compliance.json", MANIFEST}
        if key is not None:
            names.add(SIGNATURE)
        context["compliance"] = compliance_map(names)
        write_json(bundle / "compliance.json", context["compliance"])
        context["signing"] = {
            "signed": key is not None,
            "key_fingerprint": fingerprint(key.public_key()) if key else None,
        }
        doc = build_card(cfg, bundle, context, evidence)
        (bundle / "model_card.md").write_text(doc.markdown(), encoding="utf-8")
        (bundle / "model_card.html").write_text(doc.html(), encoding="utf-8")
        render_pdf(doc, bundle / "model_card.pdf")
        write_manifest(bundle, key)
        if key is not None:
            sign_manifest(bundle, key)
        write_zip(bundle, tmp / ZIP_NAME)
        for name in CARD_COPIES:  # where DVC users and the KFP task look for the card
            shutil.copy2(bundle / name, tmp / name)
    return Path(out_dir)
