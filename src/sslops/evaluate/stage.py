"""Evaluate: accuracy, ROC AUC and fairness gaps, overall and per sensitive group (MetricFrame)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    equalized_odds_difference,
    selection_rate,
)
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score, roc_curve

from sslops.artifacts import read_meta, write_artifact
from sslops.config import Config
from sslops.finetune.stage import MODELS
from sslops.models.tabular import load_classifier
from sslops.plots import grouped_bars, line_plot
from sslops.prepare.dataset import PreparedData


def _auc(y_true: np.ndarray, score: np.ndarray) -> float:
    # A group with a single class has no ROC AUC; NaN is reported, not an error.
    return float(roc_auc_score(y_true, score)) if len(np.unique(y_true)) == 2 else float("nan")


def model_metrics(
    y: np.ndarray, score: np.ndarray, threshold: float, groups: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Overall metrics, fairness gaps for the first group column, and a per-group table for each."""
    predicted = (score >= threshold).astype(int)
    first = next(iter(groups.values()))
    result: dict[str, Any] = {
        "accuracy": float(accuracy_score(y, predicted)),
        "roc_auc": _auc(y, score),
        "selection_rate": float(predicted.mean()),
        "dp_difference": float(
            demographic_parity_difference(y, predicted, sensitive_features=first)
        ),
        "eo_difference": float(equalized_odds_difference(y, predicted, sensitive_features=first)),
        "by_group": {},
    }
    for column, values in groups.items():
        frame = MetricFrame(
            metrics={"accuracy": accuracy_score, "selection_rate": selection_rate, "count": count},
            y_true=y,
            y_pred=predicted,
            sensitive_features=values,
        )
        auc = MetricFrame(metrics=_auc, y_true=y, y_pred=score, sensitive_features=values).by_group
        table = frame.by_group.assign(roc_auc=auc)
        result["by_group"][column] = {
            str(group): {k: float(v) for k, v in row.items()} for group, row in table.iterrows()
        }
        result["by_group"][column + ":dp_difference"] = float(
            demographic_parity_difference(y, predicted, sensitive_features=values)
        )
    return result


def _metrics_markdown(metrics: dict[str, dict[str, Any]], sensitive: str) -> str:
    lines = [f"| model | accuracy | ROC AUC | DP diff. ({sensitive}) | EO diff. ({sensitive}) |"]
    lines.append("|---|---:|---:|---:|---:|")
    for name, m in metrics.items():
        lines.append(
            f"| {name} | {m['accuracy']:.4f} | {m['roc_auc']:.4f} | "
            f"{m['dp_difference']:.4f} | {m['eo_difference']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _curve(y: np.ndarray, score: np.ndarray, points: int = 101) -> dict[str, list[float]]:
    fpr, tpr, thr = roc_curve(y, score)
    keep = np.unique(np.linspace(0, len(fpr) - 1, points).round().astype(int))
    thr = np.clip(thr, 0.0, 1.0)  # the first threshold is +inf
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(), "thresholds": thr[keep].tolist()}


def evaluate(cfg: Config, prepared_dir: Path, finetuned_dir: Path, out_dir: Path) -> Path:
    """Run the evaluate stage; returns the artifact directory."""
    data = PreparedData(prepared_dir)
    read_meta(finetuned_dir, "finetune")
    test = data.test
    groups = {c: test.groups(c).to_numpy() for c in data.sensitive}
    threshold = cfg.evaluate.threshold
    metrics: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    confusion: dict[str, list[list[int]]] = {}
    with torch.no_grad():
        for name in MODELS:
            model, _ = load_classifier(finetuned_dir, name)
            score = model(torch.from_numpy(test.features)).numpy().astype(np.float64)
            metrics[name] = model_metrics(test.target, score, threshold, groups)
            curves[name] = _curve(test.target, score)
            predicted = (score >= threshold).astype(int)
            confusion[name] = confusion_matrix(test.target, predicted, labels=[0, 1]).tolist()

    sensitive = data.sensitive[0]
    inputs = {"prepared": prepared_dir, "finetuned": finetuned_dir}
    with write_artifact(out_dir, "evaluate", cfg.model_dump(mode="json"), inputs) as tmp:
        payload = {
            "split": "test",
            "rows": len(test.target),
            "threshold": threshold,
            "sensitive": sensitive,
            "models": metrics,
            "roc_curves": curves,
            "confusion_matrices": confusion,
        }
        (tmp / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        (tmp / "metrics.md").write_text(_metrics_markdown(metrics, sensitive), encoding="utf-8")
        line_plot(
            tmp / "roc.png",
            {n: (c["fpr"], c["tpr"]) for n, c in curves.items()},
            "false positive rate", "true positive rate", "ROC, test split",
        )  # fmt: skip
        levels = list(metrics["ssl"]["by_group"][sensitive])
        grouped_bars(
            tmp / "selection_rate.png",
            levels,
            {n: [m["by_group"][sensitive][g]["selection_rate"] for g in levels] for n, m in metrics.items()},
            "selection rate", f"Selection rate by {sensitive}, test split",
        )  # fmt: skip
    return Path(out_dir)
