"""Audit: a model card (Markdown + self-contained HTML), lineage back to the raw data, a manifest.

The bundle is a directory a compliance team can file as is: the card, the data
card, metrics, the resolved config, the ONNX model, the lineage from raw-file
hashes through every stage to the ONNX bytes, and ``manifest.json`` with the
sha256 of every file in the bundle.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sslops import __version__
from sslops.artifacts import META, read_meta, sha256_file, write_artifact
from sslops.audit.document import Document
from sslops.config import Config

MANIFEST = "manifest.json"
_STAGES = ("prepare", "pretrain", "finetune", "evaluate", "export")


def build_lineage(artifacts: dict[str, Path]) -> dict[str, Any]:
    """Each stage's artifact hash, its inputs' hashes and its payload hashes, in pipeline order."""
    lineage: dict[str, Any] = {"stages": []}
    for stage in _STAGES:
        path = artifacts[stage]
        meta = read_meta(path, stage)
        lineage["stages"].append(
            {
                "stage": stage,
                "meta_sha256": sha256_file(path / META),
                "inputs": {k: v["meta_sha256"] for k, v in meta["inputs"].items()},
                "sources": {k: v["sha256"] for k, v in meta.get("sources", {}).items()},
                "files": meta["files"],
                "started": meta["started"],
                "ended": meta["ended"],
                "git_commit": meta["git_commit"],
                "versions": meta["versions"],
            }
        )
    return lineage


def _fmt(value: float) -> str:
    return "n/a" if value != value else f"{value:.4f}"  # NaN-safe


def _model_card(cfg: Config, a: dict[str, Path], bundle: Path, lineage: dict[str, Any]) -> Document:
    metrics = json.loads((a["evaluate"] / "metrics.json").read_text(encoding="utf-8"))
    finetune = json.loads((a["finetune"] / "finetune.json").read_text(encoding="utf-8"))
    pretrain = json.loads((a["pretrain"] / "summary.json").read_text(encoding="utf-8"))
    exported = json.loads((a["export"] / "export.json").read_text(encoding="utf-8"))
    card = json.loads((a["prepare"] / "datacard.json").read_text(encoding="utf-8"))
    sensitive, deployed = metrics["sensitive"], exported["model"]
    fairness = finetune["fairness"]

    doc = Document(cfg.audit.title)
    doc.bullets([
        f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} by sslops {__version__}",
        f"Owner: {cfg.audit.owner}",
        f"Intended use: {cfg.audit.intended_use}",
        f"Deployed model: '{deployed}' (ONNX sha256 {exported['onnx_sha256'][:16]}…)",
        f"Decision threshold: {metrics['threshold']}",
    ])  # fmt: skip
    doc.heading("Training")
    doc.bullets([
        f"Self-supervised pretraining: {pretrain['objective'].upper()} on {pretrain['rows']:,} "
        f"unlabeled training rows ({pretrain['features']} encoded features, {pretrain['steps']:,} "
        f"steps, final loss {pretrain['final_loss']:.4f}, {pretrain['skipped_nonfinite_steps']} "
        "non-finite steps skipped).",
        f"Fine-tuning used {finetune['labels_used']:,} labels "
        f"({finetune['label_fraction']:.1%} of {finetune['train_rows']:,} training rows).",
        "Baseline: logistic regression on the raw encoded features with the same labels.",
    ])  # fmt: skip
    doc.heading(f"Test metrics ({metrics['rows']:,} rows)")
    doc.table(
        ["model", "accuracy", "ROC AUC", f"DP diff. ({sensitive})", f"EO diff. ({sensitive})"],
        [
            [n, _fmt(m["accuracy"]), _fmt(m["roc_auc"]), _fmt(m["dp_difference"]),
             _fmt(m["eo_difference"])]
            for n, m in metrics["models"].items()
        ],
    )  # fmt: skip
    constrained = {"demographic_parity": "demographic parity", "none": "no fairness constraint"}
    doc.paragraph(
        f"The policy constrains {constrained[fairness['constraint']]} for '{sensitive}' "
        f"(max gap {fairness['max_gap']}); both gaps are shown for every model because, when base "
        "rates differ between groups, demographic parity and equalized odds cannot both be near zero."
    )
    if fairness["sweep"]:
        doc.heading("Fairness mitigation")
        doc.paragraph(
            "A demographic-parity penalty on the head's predicted probabilities, computed over all "
            "training rows (no labels needed), was swept; the weakest penalty whose validation gap "
            f"met the policy was selected: {fairness['selected_penalty']}"
            f" (policy met on validation: {fairness['policy_met_on_validation']})."
        )
        doc.table(
            ["penalty weight", "validation DP difference"],
            [[str(s["penalty"]), _fmt(s["validation_dp_difference"])] for s in fairness["sweep"]],
        )
    for column in cfg.data.sensitive:
        doc.heading(f"Per-group metrics of '{deployed}' by {column}")
        groups = metrics["models"][deployed]["by_group"][column]
        doc.table(
            ["group", "rows", "accuracy", "ROC AUC", "selection rate"],
            [
                [g, f"{int(r['count']):,}", _fmt(r["accuracy"]), _fmt(r["roc_auc"]),
                 _fmt(r["selection_rate"])]
                for g, r in groups.items()
            ],
        )  # fmt: skip
    doc.image(bundle / "roc.png", "ROC curves on the test split")
    doc.image(bundle / "selection_rate.png", f"Selection rate by {sensitive}")
    doc.image(bundle / "loss.png", "Self-supervised pretraining loss")
    doc.heading("Data")
    doc.table(
        ["split", "rows", "positive rate"],
        [[n, f"{s['rows']:,}", f"{s['positive_rate']:.3f}"] for n, s in card["splits"].items()],
    )
    doc.bullets([
        "Exact duplicates dropped: "
        + ", ".join(f"{k} {v:,}" for k, v in card["exact_duplicates_dropped"].items()),
        "Identifier columns dropped: " + (", ".join(card["dropped_identifier_columns"]) or "none"),
        "Full data card: datacard.md / datacard.json in this bundle.",
    ])  # fmt: skip
    doc.heading("ONNX export")
    parity = exported["parity"]
    doc.paragraph(
        f"model.onnx (opset {exported['opset']}, {exported['bytes']:,} bytes) matches the torch "
        f"model on {parity['rows']:,} test rows: max |difference| {parity['max_abs_diff']:.2e}, "
        f"identical labels: {parity['labels_identical']}."
    )
    doc.heading("Lineage")
    rows = []
    for s in lineage["stages"]:
        rows.append([s["stage"], s["meta_sha256"][:16] + "…", ", ".join(
            f"{k} {v[:12]}…" for k, v in {**s["sources"], **s["inputs"]}.items()
        )])  # fmt: skip
    doc.table(["stage", "artifact (sha256 of meta.json)", "built from"], rows)
    doc.heading("Limitations")
    doc.bullets([
        "Metrics are measured on one test split; they do not cover populations absent from it.",
        "Fairness is assessed only for the configured sensitive columns and their listed groups.",
        "The sensitive attribute is not a model input at prediction time; it may still be "
        "inferable from other features.",
    ])  # fmt: skip
    return doc


def audit(cfg: Config, artifacts: dict[str, Path], out_dir: Path) -> Path:
    """Run the audit stage over the artifacts of the five earlier stages; returns the bundle."""
    lineage = build_lineage(artifacts)  # verifies every upstream artifact's hashes
    copies = {
        "evaluate": ["metrics.json", "metrics.md", "roc.png", "selection_rate.png"],
        "prepare": ["datacard.json", "datacard.md"],
        "pretrain": ["loss.png"],
        "finetune": ["finetune.json"],
        "export": ["model.onnx", "export.json"],
    }
    with write_artifact(out_dir, "audit", cfg.model_dump(mode="json"), artifacts) as tmp:
        for stage, names in copies.items():
            for name in names:
                shutil.copy2(artifacts[stage] / name, tmp / name)
        (tmp / "config.json").write_text(
            json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8"
        )
        (tmp / "lineage.json").write_text(json.dumps(lineage, indent=2) + "\n", encoding="utf-8")
        doc = _model_card(cfg, artifacts, tmp, lineage)
        (tmp / "model_card.md").write_text(doc.markdown(), encoding="utf-8")
        (tmp / "model_card.html").write_text(doc.html(), encoding="utf-8")
        manifest = {
            "bundle_format": 1,
            "files": {
                p.relative_to(tmp).as_posix(): sha256_file(p)
                for p in sorted(tmp.rglob("*")) if p.is_file()
            },
        }  # fmt: skip
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Path(out_dir)
