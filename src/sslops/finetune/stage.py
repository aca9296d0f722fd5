"""Finetune: heads fitted on few labels.

Three models come out, all exportable ``TabularClassifier`` s:

- ``ssl``: logistic-regression head on the frozen, standardized SSL embedding;
- ``mitigated``: the same head refitted with a demographic-parity penalty for
  ``data.sensitive[0]``; the penalty weight is chosen by the policy
  ``finetune.fairness.max_gap`` on the validation split, using only predictions and
  group membership there (no validation labels), so the label budget stays honest;
- ``baseline``: logistic regression on the raw encoded features, same labels.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fairlearn.metrics import demographic_parity_difference
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from sslops.artifacts import write_artifact
from sslops.config import Config
from sslops.errors import DataError
from sslops.finetune.fairness import DemographicParityPenalty, fit_penalized_head
from sslops.models.tabular import TabularClassifier, save_classifier
from sslops.prepare.dataset import PreparedData
from sslops.pretrain.stage import load_encoder

MODELS = ("ssl", "mitigated", "baseline")


def stratified_label_subset(target: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of ``fraction`` of the rows, drawn per class, at least 2 per class."""
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(target):
        rows = np.flatnonzero(target == cls)
        k = min(len(rows), max(2, round(fraction * len(rows))))
        chosen.append(rng.choice(rows, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def _logistic(x: np.ndarray, y: np.ndarray, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = LogisticRegression(C=c, max_iter=5000).fit(x, y)
    return torch.tensor(fitted.coef_[0], dtype=torch.float32), torch.tensor(
        fitted.intercept_[0], dtype=torch.float32
    )


def _set_head(model: TabularClassifier, w: torch.Tensor, b: torch.Tensor) -> TabularClassifier:
    with torch.no_grad():
        model.head.weight.copy_(w[None, :])
        model.head.bias.copy_(b.reshape(1))
    return model.eval()


def finetune(cfg: Config, prepared_dir: Path, pretrained_dir: Path, out_dir: Path) -> Path:
    """Run the finetune stage; returns the artifact directory."""
    torch.manual_seed(cfg.seed)
    fc, fairness = cfg.finetune, cfg.finetune.fairness
    data = PreparedData(prepared_dir)
    encoder = load_encoder(pretrained_dir)
    train, validation = data.train, data.validation
    labeled = stratified_label_subset(train.target, fc.label_fraction, cfg.seed)
    if len(np.unique(train.target[labeled])) < 2:
        raise DataError("finetune.label_fraction selects labels of only one class; raise it")

    with torch.no_grad():
        z_train = encoder(torch.from_numpy(train.features))
        z_val = encoder(torch.from_numpy(validation.features))
    shift, scale = z_train.mean(0), z_train.std(0).clamp(min=1e-6)
    zs_train, zs_val = (z_train - shift) / scale, (z_val - shift) / scale
    y_labeled = train.target[labeled]

    def ssl_model(w: torch.Tensor, b: torch.Tensor) -> TabularClassifier:
        model = TabularClassifier(encoder, z_train.shape[1])
        model.shift.copy_(shift)
        model.scale.copy_(scale)
        return _set_head(model, w, b)

    w_ssl, b_ssl = _logistic(zs_train[labeled].numpy(), y_labeled, fc.regularization)
    baseline = _set_head(
        TabularClassifier(None, train.features.shape[1]),
        *_logistic(train.features[labeled], y_labeled, fc.regularization),
    )

    column = data.sensitive[0]
    val_groups = validation.groups(column).to_numpy()
    threshold = cfg.evaluate.threshold
    sweep: list[dict[str, Any]] = []
    chosen = (w_ssl, b_ssl, 0.0)
    if fairness.constraint == "demographic_parity":
        penalty = DemographicParityPenalty(train.groups(column).to_numpy())
        y_t = torch.tensor(y_labeled, dtype=torch.float32)
        candidates = []
        for weight in sorted(fairness.penalties):
            w, b = fit_penalized_head(
                zs_train[labeled], y_t, zs_train, penalty, weight, (w_ssl, b_ssl),
                fc.regularization, fairness.steps,
            )  # fmt: skip
            predicted = (torch.sigmoid(zs_val @ w + b) >= threshold).numpy().astype(int)
            gap = float(
                demographic_parity_difference(predicted, predicted, sensitive_features=val_groups)
            )
            sweep.append({"penalty": weight, "validation_dp_difference": round(gap, 5)})
            candidates.append((gap, weight, w, b))
        within = [c for c in candidates if c[0] <= fairness.max_gap]
        # The weakest penalty that meets the policy keeps the most accuracy; else the fairest.
        gap, weight, w, b = within[0] if within else min(candidates, key=lambda c: c[0])
        chosen = (w, b, weight)

    models = {
        "ssl": ssl_model(w_ssl, b_ssl),
        "mitigated": ssl_model(chosen[0], chosen[1]),
        "baseline": baseline,
    }
    report = {
        "labels_used": len(labeled),
        "label_fraction": fc.label_fraction,
        "train_rows": len(train.target),
        "fairness": {
            "constraint": fairness.constraint,
            "sensitive": column,
            "max_gap": fairness.max_gap,
            "selected_penalty": chosen[2],
            "policy_met_on_validation": bool(
                fairness.constraint == "none" or any(
                    s["validation_dp_difference"] <= fairness.max_gap for s in sweep
                )
            ),
            "sweep": sweep,
        },
    }  # fmt: skip
    inputs = {"prepared": prepared_dir, "pretrained": pretrained_dir}
    with write_artifact(out_dir, "finetune", cfg.model_dump(mode="json"), inputs) as tmp:
        for name, model in models.items():
            save_classifier(model, tmp, name, {"threshold": threshold})
        np.save(tmp / "labeled_rows.npy", labeled)
        (tmp / "finetune.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return Path(out_dir)
