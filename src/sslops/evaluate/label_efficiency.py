"""Label-efficiency curve: test ROC AUC of SSL transfer and supervised baselines vs labels used.

For each label fraction and draw (seed), the same stratified label subset trains:

- SSL: the linear probe on the standardized embedding; the joint probe on [raw encoded
  features | standardized embedding]; the SSL ensemble, the joint probe's and a binned
  weight-of-evidence head's logits averaged (the head bins the numeric columns at
  quantiles of all training rows, labels not needed, so it bends with age or hours where
  a linear model cannot); full fine-tuning (optional);
- supervised baselines on the raw encoded features: logistic regression,
  HistGradientBoosting, and the binned weight-of-evidence head alone (so the ensemble's
  gain over its own raw-feature member is on the curve).

The report says, per baseline, from which fraction on an SSL curve is at least as good.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier

from sslops.config import Config
from sslops.evaluate.metrics import auc
from sslops.finetune.stage import fit_ensemble, linear_model, logistic, stratified_label_subset
from sslops.finetune.transfer import FineTuneSettings, fine_tune
from sslops.models.tabular import MLPEncoder
from sslops.plots import line_plot
from sslops.prepare.dataset import PreparedData
from sslops.progress import task_progress

SSL_MODELS = ("ssl_linear_probe", "ssl_joint_probe", "ssl_ensemble", "ssl_full_fine_tune")
BASELINES = ("logistic_regression", "hist_gradient_boosting", "binned_evidence_lr")


def _scores(model: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy().astype(np.float64)


def label_efficiency(cfg: Config, data: PreparedData, encoder: MLPEncoder) -> dict[str, Any]:
    le = cfg.evaluate.label_efficiency
    assert le is not None
    train, test = data.train, data.test
    # As the finetune stage: the embedding's statistics and the evidence bins come from every
    # training row, labeled or not (data.pretraining: the training split first, same row
    # numbers, then the rows without a label); labels are drawn from the training split.
    x_train = torch.from_numpy(data.pretraining.features)
    with torch.no_grad():
        z = encoder(x_train)
    shift, scale = z.mean(0), z.std(0).clamp(min=1e-6)
    zs = ((z - shift) / scale).numpy()
    with torch.no_grad():
        zs_test = ((encoder(torch.from_numpy(test.features)) - shift) / scale).numpy()
    f = cfg.finetune.full
    settings = FineTuneSettings(
        epochs=f.epochs, freeze_epochs=f.freeze_epochs, learning_rate=f.learning_rate,
        layer_decay=f.layer_decay, weight_decay=f.weight_decay, batch_size=f.batch_size,
    )  # fmt: skip
    c = cfg.finetune.regularization
    rows: list[dict[str, Any]] = []
    steps = [(fraction, draw) for fraction in sorted(le.fractions) for draw in range(le.draws)]
    with task_progress("evaluate (label efficiency)", len(steps)) as progress:
        for step, (fraction, draw) in enumerate(steps, 1):
            seed = cfg.seed + draw
            idx = stratified_label_subset(train.target, fraction, seed)
            y = train.target[idx]
            probe = linear_model(encoder, *logistic(zs[idx], y, c), shift, scale)
            results = {"ssl_linear_probe": _scores(probe, test.features)}
            if le.full_fine_tune:
                tuned = fine_tune(probe, x_train[idx], torch.tensor(y, dtype=torch.float32),
                                  settings, seed=seed)  # fmt: skip
                results["ssl_full_fine_tune"] = _scores(tuned, test.features)
            lr = linear_model(None, *logistic(train.features[idx], y, c))
            results["logistic_regression"] = _scores(lr, test.features)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                hgb = HistGradientBoostingClassifier(random_state=seed).fit(train.features[idx], y)
            results["hist_gradient_boosting"] = hgb.predict_proba(test.features)[:, 1]
            if le.ensemble:
                results.update(_ensemble(data, encoder, zs, zs_test, shift, scale, idx,
                                         cfg.finetune.joint_regularization))  # fmt: skip
            for model, score in results.items():
                rows.append({
                    "fraction": fraction, "labels": len(idx), "draw": draw, "model": model,
                    "positive_labels": int(y.sum()),  # 2 of 36 at 2% positives: noise
                    "roc_auc": auc(test.target, score),
                    # at the evaluate stage's threshold, as its accuracy (0.5 was fixed)
                    "accuracy": float(np.mean((score >= cfg.evaluate.threshold) == test.target)),
                })  # fmt: skip
            best = max(rows[-len(results) :], key=lambda row: row["roc_auc"])
            progress.update(step, f"{fraction * 100:g}% of the labels ({len(idx)}), draw {draw + 1}: "
                            f"best {best['model']} ROC AUC {best['roc_auc']:.4f}")  # fmt: skip
    return {"rows": rows, "mean": _means(rows), "crossings": _crossings(_means(rows))}


def _ensemble(
    data: PreparedData,
    encoder: MLPEncoder,
    zs: np.ndarray,
    zs_test: np.ndarray,
    shift: torch.Tensor,
    scale: torch.Tensor,
    idx: np.ndarray,
    c: float,
) -> dict[str, np.ndarray]:
    """The SSL ensemble (the exportable classifier ``finetune.transfer: ensemble`` deploys)
    and its two members."""
    train, test = data.train, data.test
    model, joint, evidence = fit_ensemble(
        encoder, data.pretraining.features, zs, shift.numpy(), scale.numpy(), idx, data.encoding,
        train.target[idx], c,
    )  # fmt: skip
    joint_logit = joint.decision_function(np.hstack([test.features, zs_test]))
    return {
        "ssl_joint_probe": expit(joint_logit),
        "ssl_ensemble": _scores(model, test.features),
        "binned_evidence_lr": expit(evidence.decision_function(test.features)),
    }


def _means(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        out.setdefault(row["model"], {}).setdefault(str(row["fraction"]), 0.0)
    for model, by_fraction in out.items():
        for fraction in by_fraction:
            values = [
                r["roc_auc"] for r in rows if r["model"] == model and str(r["fraction"]) == fraction
            ]
            by_fraction[fraction] = float(np.mean(values))
    return out


def _crossings(means: dict[str, dict[str, float]]) -> dict[str, dict[str, str | None]]:
    """Per SSL model and baseline: the smallest fraction from which SSL is at least as good."""
    out: dict[str, dict[str, str | None]] = {}
    for ssl in (m for m in SSL_MODELS if m in means):
        out[ssl] = {}
        for base in (b for b in BASELINES if b in means):
            fractions = sorted(means[ssl], key=float)
            at_least = [means[ssl][f] >= means[base][f] for f in fractions]
            first = next((f for i, f in enumerate(fractions) if all(at_least[i:])), None)
            out[ssl][base] = first
    return out


def curve_markdown(curve: dict[str, Any]) -> str:
    """The curve's means as a table (models x label fractions) and where SSL catches up."""
    means = curve["mean"]
    fractions = sorted({f for v in means.values() for f in v}, key=float)
    labels = {str(r["fraction"]): r["labels"] for r in curve["rows"]}
    for r in curve["rows"]:  # the positives each fraction's draws hold (tabular curves)
        if "positive_labels" in r:
            labels[str(r["fraction"])] = f"{r['labels']}; {r['positive_labels']} positive"
    kind = {m: "SSL" for m in SSL_MODELS} | {m: "baseline" for m in BASELINES}
    lines = [
        "## Label efficiency (test ROC AUC, mean over label draws)",
        "",
        "| model | kind | " + " | ".join(f"{100 * float(f):g}% ({labels.get(f, '?')})"
                                         for f in fractions) + " |",
        "|---|---|" + "---:|" * len(fractions),
    ]  # fmt: skip
    order = [m for m in (*SSL_MODELS, *BASELINES) if m in means]
    for model in order + [m for m in means if m not in order]:
        by_fraction = means[model]
        cells = " | ".join(f"{by_fraction[f]:.4f}" if f in by_fraction else "" for f in fractions)
        lines.append(f"| {model} | {kind.get(model, '')} | {cells} |")
    lines.append("")
    lines.append("Where each SSL model is at least as good as each baseline (crossing: from "
                 "that fraction on, at every larger one):")  # fmt: skip
    for ssl, bases in curve.get("crossings", {}).items():
        said = []
        for base, first in bases.items():
            at = [f for f in fractions if means[ssl].get(f, -1.0) >= means[base].get(f, 2.0)]
            where = ", ".join(f"{100 * float(f):g}%" for f in at) or "no fraction"
            cross = f"from {100 * float(first):g}%" if first is not None else "no crossing"
            said.append(f"{base}: at {where} ({cross})")
        lines.append(f"- {ssl} vs " + "; ".join(said) + ".")
    return "\n".join(lines) + "\n"


def plot_curve(path: Path, means: dict[str, dict[str, float]]) -> None:
    series = {
        model: (
            [100 * float(f) for f in sorted(v, key=float)],
            [v[f] for f in sorted(v, key=float)],
        )
        for model, v in means.items()
    }
    line_plot(path, series, "labels used (% of training rows)", "test ROC AUC",
              "Label efficiency (dashed: supervised baselines)", log_x=True,
              dashed=BASELINES, x_format="{:g}%")  # fmt: skip
