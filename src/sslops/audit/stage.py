"""Audit: the compliance bundle a team files, signed, with gates checked first.

The audit artifact folder holds ``bundle/`` (what is filed and verified),
``bundle.zip`` (the same files), copies of the card's HTML and Markdown next to
them, and the usual ``meta.json``::

    bundle/
      model_card.md / .html / .pdf     the card (HTML self-contained, under 1 MB)
      model.onnx, model.int8.onnx      the deployable models
      evidence/<stage>/...             every JSON/Markdown/PNG result of the earlier stages
      lineage.json                     raw-data hashes -> splits -> SSL checkpoint -> model -> ONNX
      config.json, configs/<stage>.json  the resolved config (a stage's own where a key it
                                       reads differs)
      environment.json, sbom.cdx.json  Python and package versions; CycloneDX SBOM
      run.json                         KFP run id and container image, when present
      gates.json                       policy-gate results and accepted overrides
      compliance.json                  EU AI Act (Annex IV, Art. 10, 12-15) / NIST AI RMF map
      changelog.json                   metric changes against audit.previous_bundle
      manifest.json, signature.json    sha256 of every file; Ed25519 signature over it

Gates are evaluated and the signing key is loaded before anything is written, so a
failing gate or a missing key leaves no output.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from sslops.artifacts import (
    META,
    check_lineage,
    null_as_nan,
    read_meta,
    sha256_file,
    timed_stage,
    write_artifact,
    write_json,
)
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
from sslops.audit.environment import environment_record, image_record, sbom_json
from sslops.audit.gates import evaluate_gates, gated_columns, measured_values
from sslops.audit.pdf import render_pdf
from sslops.audit.registry import (
    LATEST,
    check_registry_path,
    file_bundle,
    latest_bundle,
    model_slug,
)  # fmt: skip
from sslops.config import Config
from sslops.errors import ArtifactError, ConfigError
from sslops.pipeline.stage_cache import scoped
from sslops.prepare.dataset import check_same_data

_STAGES = ("prepare", "pretrain", "finetune", "evaluate", "export")
CARD_COPIES = ("model_card.html", "model_card.md")
_EVIDENCE_SUFFIXES = {".json", ".md", ".png", ".csv", ".txt"}
_EVIDENCE_MAX_BYTES = 5_000_000


def _stage_times(meta: dict[str, Any]) -> dict[str, Any]:
    """When a stage ran, from its meta.json, and where that time comes from: ``stage``, the
    stage's own clock (its function's start in the process that wrote the artifact, and the
    seconds to the finished artifact); ``artifact`` (an artifact written before sslops kept
    that), only when its files were written, at the stage's end: no duration is known. The
    task times ``sslops run`` prints and keeps in summary.json are measured outside the
    tasks and written after the audit task has run, so the bundle cannot hold them."""
    if "stage_started" in meta:
        return {"started": meta["stage_started"], "ended": meta["ended"],
                "seconds": meta["stage_seconds"], "time_source": "stage"}  # fmt: skip
    return {"started": meta["started"], "ended": meta["ended"], "seconds": None,
            "time_source": "artifact"}  # fmt: skip


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
            **_stage_times(meta),
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
    image = os.environ.get("SSLOPS_IMAGE")
    return {
        "executed_by": "command line",
        "kfp_run_id": None,
        **image_record(image, "SSLOPS_IMAGE" if image else "none: not run in a container"),
    }


KEY_PATH_REDACTED = "(set; its path is not recorded)"


def _without_key_path(config: dict[str, Any]) -> dict[str, Any]:
    """The config as the bundle keeps it: where the signing key file lies is not shipped
    with every bundle (the key's fingerprint, in signature.json, says which key signed)."""
    signing = config.get("audit", {}).get("signing", {})
    if not signing.get("key_file"):
        return config
    audit = {**config["audit"], "signing": {**signing, "key_file": KEY_PATH_REDACTED}}
    return {**config, "audit": audit}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); re-run that stage") from None


def check_export(cfg: Config, exported_dir: Path, exported: dict[str, Any]) -> None:
    """The config deploys the model that was exported, and the ONNX files are the ones the
    export stage wrote (a replaced model.onnx whose hash was rewritten in meta.json only)."""
    model = exported.get("model")
    if model != cfg.export.model:
        raise ConfigError(
            f"export.model is {cfg.export.model!r} but {exported_dir} holds the {model!r} model; "
            "pass the config the chain ran with"
        )
    quant = exported.get("quantization") or {}
    for name, expected in (("model.onnx", exported.get("onnx_sha256")),
                           (quant.get("file"), quant.get("sha256"))):  # fmt: skip
        if not name or not expected:
            continue
        file = exported_dir / str(name)
        actual = sha256_file(file) if file.is_file() else "(missing)"
        if actual != expected:
            raise ArtifactError(
                f"{file} has sha256 {actual}, but {exported_dir / 'export.json'} records "
                f"{expected}: the model was replaced after export; re-run export"
            )


def check_metrics(evaluation: Path, metrics: Any, deployed: str) -> None:
    models = metrics.get("models") if isinstance(metrics, dict) else None
    if not isinstance(models, dict) or not isinstance(models.get(deployed), dict):
        has = ", ".join(sorted(models)) if isinstance(models, dict) and models else "none"
        raise ArtifactError(
            f"{evaluation / 'metrics.json'} has no metrics for the deployed model {deployed!r} "
            f"(it has: {has}); re-run evaluate on the finetune artifact that was exported"
        )


@timed_stage("audit")
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
    check_same_data(cfg, artifacts["prepare"])
    lineage = build_lineage(artifacts, cfg.export.model)
    metrics = null_as_nan(_read_json(artifacts["evaluate"] / "metrics.json"))
    exported = _read_json(artifacts["export"] / "export.json")
    check_export(cfg, artifacts["export"], exported)
    check_metrics(artifacts["evaluate"], metrics, cfg.export.model)
    shortcuts_file = artifacts["evaluate"] / "shortcuts.json"
    shortcuts = null_as_nan(_read_json(shortcuts_file)) if shortcuts_file.is_file() else None
    gates = evaluate_gates(  # raises on a failing gate
        cfg, measured_values(metrics, exported, shortcuts, gated_columns(cfg.model_dump())),
        _gate_context(artifacts["finetune"], metrics),
    )  # fmt: skip
    key = load_signing_key(cfg.audit.signing)
    registry = _registry(cfg, Path(out_dir))
    config = cfg.model_dump(mode="json")
    with write_artifact(out_dir, "audit", config, artifacts) as tmp:
        bundle = tmp / BUNDLE_DIR
        bundle.mkdir()
        evidence = _copy_evidence(artifacts, bundle)
        for model in sorted(artifacts["export"].glob("*.onnx")):
            shutil.copy2(model, bundle / model.name)
        write_json(bundle / "config.json", _without_key_path(config))
        for stage, meta_path in ((s, artifacts[s]) for s in _STAGES):
            stage_config = _without_key_path(read_meta(meta_path, verify=False)["config"])
            # Only the keys the stage reads: one `sslops run` reused from a run with another
            # gate or report setting saw this config's settings, as config.json says.
            if scoped(stage, stage_config) != scoped(stage, config):
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
        previous = _previous_bundle(cfg, registry)
        if previous is not None:
            context["changelog"] = build_changelog(previous, bundle)
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
        if registry is not None:  # last: a failure here leaves no audit artifact either
            filed = file_bundle(tmp / ZIP_NAME, registry, model=cfg.audit.model_name, key=key)
            print(
                f"audit: {filed['status']} in the registry {registry} as {filed['bundle']} "
                f"(model {filed['model']})",
                file=sys.stderr,
            )
    return Path(out_dir)


def _previous_bundle(cfg: Config, registry: Path | None) -> Path | None:
    """``audit.previous_bundle``: a path, or ``registry:latest``, the bundle filed last under
    this model (none on its first filing)."""
    previous = cfg.audit.previous_bundle
    if previous == LATEST and registry is not None:
        return latest_bundle(registry, cfg.audit.model_name or model_slug(cfg.audit.title))
    return Path(previous) if previous else None


def _registry(cfg: Config, out_dir: Path) -> Path | None:
    """``audit.registry``, checked before anything is written: a registry or a folder that
    can become one, and not inside the artifact being written."""
    if not cfg.audit.registry:
        return None
    registry = Path(cfg.audit.registry)
    if registry.resolve().is_relative_to(out_dir.resolve()):
        raise ConfigError(
            f"audit.registry {registry} lies inside the audit artifact {out_dir}; the registry "
            "keeps bundles across runs: give a folder outside it"
        )
    check_registry_path(registry)
    return registry
