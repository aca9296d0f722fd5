"""Evaluate for images and series: every model on the test split and on a shifted copy of it,
per derived group with intervals, counterfactual shortcut tests and the label-efficiency curve.

Metric and gap definitions for K classes: :mod:`sslops.evaluate.multiclass`. The OOD
split and the counterfactual edits: :mod:`sslops.evaluate.corruptions`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from sslops.artifacts import read_meta, write_artifact
from sslops.config import Config
from sslops.evaluate.corruptions import counterfactuals, shifted_images, shifted_series
from sslops.evaluate.multiclass import macro_auc, multiclass_metrics
from sslops.evaluate.report import roc_points, write_reports
from sslops.finetune.arrays import MODELS, embed, fit_multinomial, groups_of
from sslops.finetune.stage import stratified_label_subset
from sslops.models.arrays import (
    ArrayClassifier,
    load_array_classifier,
    load_backbone_from,
    model_input,
)
from sslops.prepare.dataset import PreparedData

NOT_APPLICABLE = {
    "permutation_reliance": "not applicable: images and series have no feature columns to "
    "permute; the counterfactual edits of the group attribute take its place",
    "planted_shortcut": "not applicable: no planted feature column exists for arrays; not run",
}


class _Scorer:
    """Probabilities of every model for a batch of raw arrays; the backbone runs once per batch."""

    def __init__(self, models: dict[str, ArrayClassifier], modality: str) -> None:
        self.models, self.modality = models, modality
        self.with_backbone = next(m for m in models.values() if m.backbone is not None)

    def __call__(self, values: np.ndarray) -> dict[str, np.ndarray]:
        return self.with_embeddings(values)[0]

    def with_embeddings(self, values: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        x = model_input(self.modality, values)
        z = torch.from_numpy(embed(self.with_backbone, x))
        out = {}
        with torch.inference_mode():
            for name, model in self.models.items():
                if model.backbone is not None:
                    out[name] = model.head_probabilities(z).numpy().astype(np.float64)
                else:
                    out[name] = model(x).numpy().astype(np.float64)
        return out, z.numpy().astype(np.float64)


def _curve(y: np.ndarray, proba: np.ndarray, points: int = 101) -> dict[str, list[float]]:
    """Micro-averaged one-vs-rest ROC curve (every class's probability against its indicator)."""
    return roc_points(np.eye(proba.shape[1])[y].ravel(), proba.ravel(), points)


def _markdown(metrics: dict[str, dict[str, Any]], attribute: str, constrained: str) -> str:
    lines = [
        f"| model | accuracy | ROC AUC (macro OvR) | ECE | DP diff. ({attribute}) | "
        f"EO diff. ({attribute}) | worst-group accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in metrics.items():
        ci = m.get("intervals", {}).get("accuracy")
        acc = f"{m['accuracy']:.4f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        lines.append(
            f"| {name} | {acc} | {m['roc_auc']:.4f} | {m['ece']:.4f} | {m['dp_difference']:.4f} "
            f"| {m['eo_difference']:.4f} | {m['worst_group_accuracy']:.4f} |"
        )
    lines += [
        "",
        f"The fairness policy constrains: {constrained}. Gaps over K classes: DP = max over "
        "classes c of the between-group difference in P(pred = c); EO = max over c of the "
        "larger of the between-group one-vs-rest TPR and FPR differences.",
    ]
    return "\n".join(lines) + "\n"


def _label_efficiency(
    cfg: Config, data: PreparedData, finetuned_dir: Path, baseline: ArrayClassifier,
    z_test: np.ndarray, x_test_raw: np.ndarray,
) -> dict[str, Any]:  # fmt: skip
    """SSL linear probe vs logistic regression on the raw inputs, same label draws."""
    le = cfg.evaluate.label_efficiency
    assert le is not None
    z = np.load(finetuned_dir / "train_embeddings.npy").astype(np.float64)
    shift, scale = z.mean(0), np.maximum(z.std(0), 1e-6)
    zs, zs_test = (z - shift) / scale, (z_test - shift) / scale
    raw = embed(baseline, model_input(data.modality, data.train.features)).astype(np.float64)
    classes, c = len(data.schema["classes"]), cfg.finetune.regularization
    y, y_test = data.train.target, data.test.target
    rows: list[dict[str, Any]] = []
    for fraction in sorted(le.fractions):
        for draw in range(le.draws):
            idx = stratified_label_subset(y, fraction, cfg.seed + draw)
            for model, (x, x_test) in {"ssl_linear_probe": (zs, zs_test),
                                       "logistic_regression": (raw, x_test_raw)}.items():  # fmt: skip
                coef, intercept = fit_multinomial(x[idx], y[idx], c, classes)
                logits = x_test @ coef.T + intercept
                proba = np.exp(logits - logits.max(1, keepdims=True))
                proba /= proba.sum(1, keepdims=True)
                rows.append({
                    "fraction": fraction, "labels": len(idx), "draw": draw, "model": model,
                    "roc_auc": macro_auc(y_test, proba),
                    "accuracy": float(np.mean(proba.argmax(1) == y_test)),
                })  # fmt: skip
    means: dict[str, dict[str, float]] = {}
    for model in ("ssl_linear_probe", "logistic_regression"):
        for fraction in sorted(le.fractions):
            values = [
                r["roc_auc"] for r in rows if r["model"] == model and r["fraction"] == fraction
            ]
            means.setdefault(model, {})[str(fraction)] = float(np.mean(values))
    fractions = [str(f) for f in sorted(le.fractions)]
    at_least = [means["ssl_linear_probe"][f] >= means["logistic_regression"][f] for f in fractions]
    first = next((f for i, f in enumerate(fractions) if all(at_least[i:])), None)
    return {
        "metric": "test ROC AUC (macro one-vs-rest)",
        "rows": rows,
        "mean": means,
        "crossings": {"ssl_linear_probe": {"logistic_regression": first}},
        "not_run": "SSL full fine-tuning and HistGradientBoosting are tabular-only here",
    }


def evaluate_arrays(cfg: Config, prepared_dir: Path, finetuned_dir: Path, out_dir: Path) -> Path:
    """The evaluate stage for images and series; returns the artifact directory."""
    ec = cfg.evaluate
    data = PreparedData(prepared_dir)
    read_meta(finetuned_dir, "finetune")
    report = json.loads((finetuned_dir / "finetune.json").read_text(encoding="utf-8"))
    edges = {a: g["edges"] for a, g in report["groups"].items()}
    backbone = load_backbone_from(finetuned_dir)
    models = {n: load_array_classifier(finetuned_dir, n, backbone)[0] for n in MODELS}
    score = _Scorer(models, data.modality)
    test, y = data.test, data.test.target
    attribute = next(iter(edges))

    def evaluate_on(values: np.ndarray, seed: int) -> tuple[dict, dict, np.ndarray]:
        proba, z = score.with_embeddings(values)
        groups = groups_of(values, edges)
        return proba, {n: multiclass_metrics(y, p, groups, resamples=ec.bootstrap, seed=seed)
                       for n, p in proba.items()}, z  # fmt: skip

    proba, metrics, z_test = evaluate_on(test.features, cfg.seed)
    shift = shifted_images if data.modality == "image" else shifted_series
    _, ood, _ = evaluate_on(shift(test.features, cfg.seed), cfg.seed)

    deployed = cfg.export.model
    base = proba[deployed].argmax(1)
    edits: dict[str, Any] = {}
    for a in edges:
        for edit, values in counterfactuals(a, test.features).items():
            changed = score(values)[deployed].argmax(1) != base
            moved = groups_of(values, {a: edges[a]})[a] != groups_of(test.features, edges)[a]
            edits[f"{a}: {edit}"] = {
                "attribute": a,
                "prediction_change_share": float(changed.mean()),
                "group_change_share": float(moved.mean()),
                "flagged": bool(changed.mean() > ec.reliance_threshold),
            }  # fmt: skip
    shortcuts = {
        "model": deployed,
        "reliance_threshold": ec.reliance_threshold,
        "counterfactual": edits,
        "flagged": [k for k, v in edits.items() if v["flagged"]],
        "not_applicable": NOT_APPLICABLE,
    }
    efficiency = None
    if ec.label_efficiency is not None:
        x_test = model_input(data.modality, test.features)
        raw_test = embed(models["baseline"], x_test).astype(np.float64)
        efficiency = _label_efficiency(cfg, data, finetuned_dir, models["baseline"], z_test,
                                       raw_test)  # fmt: skip

    classes = [str(c) for c in data.schema["classes"]]
    curves = {n: _curve(y, p) for n, p in proba.items()}
    confusion = {
        n: confusion_matrix(y, p.argmax(1), labels=list(range(len(classes)))).tolist()
        for n, p in proba.items()
    }
    inputs = {"prepared": prepared_dir, "finetuned": finetuned_dir}
    with write_artifact(out_dir, "evaluate", cfg.model_dump(mode="json"), inputs) as tmp:
        payload = {
            "split": "test",
            "rows": len(y),
            "modality": data.modality,
            "decision": "argmax of the class probabilities",
            "threshold": "none (argmax of the class probabilities)",
            "classes": classes,
            "sensitive": attribute,
            "group_edges": edges,
            "constrained_gap": report["fairness"]["constraint"],
            "models": metrics,
            "roc_curves": curves,
            "confusion_matrices": confusion,
        }
        ood_report = {
            "split": "test under seeded corruptions",
            "rows": len(y),
            "corruptions": "Gaussian pixel noise (sigma 32/255) + 1-2 pixel translation"
            if data.modality == "image"
            else "Gaussian noise (0.1 sd) + smooth time warp (<= 8%)",
            "models": ood,
        }
        write_reports(
            tmp, payload, shortcuts, _markdown(metrics, attribute, report["fairness"]["constraint"]),
            ood=ood_report, efficiency=efficiency,
            roc_title="ROC (micro one-vs-rest), test split",
            bars=("group_accuracy.png", "accuracy", "accuracy",
                  f"Accuracy by {attribute} bucket, test split"),
        )  # fmt: skip
    return Path(out_dir)
