"""Finetune for images and series: linear probe on frozen embeddings, group mitigation, baseline.

Three exportable :class:`ArrayClassifier` s come out (plus ``probe``, the same as
``ssl``, which evaluation's label-efficiency curve starts from):

- ``ssl``: multinomial logistic regression on the standardized frozen embeddings of
  the pretrained backbone, trained on ``finetune.label_fraction`` of the training
  labels (a stratified, seeded draw);
- ``mitigated``: the candidate the fairness policy selects on the validation split from
  a sweep of :class:`GroupDROLogisticRegression` (group-DRO style exponentiated group
  reweighting; strengths from ``finetune.fairness.penalties``) and, for two-class tasks,
  fairlearn ExponentiatedGradient reductions (``finetune.fairness.reductions``);
- ``baseline``: logistic regression on the normalized raw pixels / series, same labels.

Groups are the derived attribute(s) named in ``data.sensitive`` (see
:mod:`sslops.data.attributes`), bucketed with tercile edges from the training split;
the edges are written to ``finetune.json`` so evaluation buckets the same way. With
``data.attributes_file`` they are columns of the user's metadata, which prepare stored
beside each item (:mod:`sslops.data.group_metadata`); their edges are ``None``.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from sslops.artifacts import write_artifact, write_json
from sslops.config import Config
from sslops.data.attributes import ATTRIBUTES, MEASURES, bucket, tercile_edges
from sslops.errors import ConfigError, DataError
from sslops.evaluate.multiclass import GAP_OF, class_gaps
from sslops.finetune._sklearn import FLOAT_DTYPES, sensitive_rows
from sslops.finetune.estimators import DistilledExponentiatedGradient
from sslops.finetune.pareto import (
    MECHANISMS,
    Candidate,
    class_gap_upper_bounds,
    largest_gap,
    mark_front,
    plot_front,
    select,
    selection_rule,
    undefined_gap_note,
)
from sslops.finetune.stage import check_label_classes, stratified_label_subset
from sslops.models.arrays import (
    ArrayClassifier,
    model_input,
    save_array_classifier,
    save_backbone,
    set_head,
)
from sslops.prepare.dataset import PreparedData, Split
from sslops.pretrain.stage import load_backbone
from sslops.pretrain.tasks import feature_dim

MODELS = ("ssl", "mitigated", "baseline")
EMBED_BATCH = 256


def group_attributes(cfg: Config) -> list[str]:
    """The derived group attributes: ``data.sensitive``, else the modality's first one."""
    return list(cfg.data.sensitive) or [ATTRIBUTES[cfg.modality][0]]


def fit_multinomial(
    x: np.ndarray, y: np.ndarray, c: float, classes: int, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression as a softmax head: ``(classes, dim)`` weights and ``(classes,)`` bias.

    Two classes: scikit-learn's single logit s becomes logits (0, s), whose softmax is
    exactly its sigmoid.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = LogisticRegression(C=c, max_iter=2000).fit(x, y, sample_weight=sample_weight)
    if len(fitted.classes_) != classes:
        # The stages never get here: check_label_classes refuses a training split without
        # 2 rows of every class, and stratified_label_subset draws rows of every class.
        missing = sorted(set(range(classes)) - {int(c) for c in fitted.classes_})
        raise ValueError(
            f"y holds {len(fitted.classes_)} of the {classes} class codes 0..{classes - 1} "
            f"(missing: {missing}); a softmax head needs rows of every class"
        )
    if classes == 2:
        coef = np.vstack([np.zeros_like(fitted.coef_[0]), fitted.coef_[0]])
        return coef, np.array([0.0, fitted.intercept_[0]])
    return fitted.coef_, fitted.intercept_


class GroupDROLogisticRegression(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression with group-DRO style exponentiated group weights.

    Rows are weighted ``q_g / n_g`` (so every group weighs ``q_g`` in total). Starting from
    uniform ``q`` (group-balanced training), each of ``rounds`` rounds fits the model,
    measures each group's mean log-loss and sets ``q_g ∝ q_g * exp(step * loss_g)``: groups
    the model serves worst gain weight. The final model is fitted with the average ``q``
    of the rounds (multiplicative weights). ``step = 0`` is plain group balancing.

    ``fit`` needs ``sensitive_features=`` (one group per row; with metadata routing,
    ``set_fit_request(sensitive_features=True)``). ``classes=`` (the task's number of
    classes) takes ``y`` as integer codes ``0 .. classes - 1`` and raises when the rows miss
    one; left at ``None``, ``y`` holds labels of any type. ``classes_`` holds the labels
    ``predict`` returns and ``predict_proba``'s columns follow.
    """

    def __init__(self, *, step: float = 1.0, rounds: int = 8, C: float = 1.0) -> None:
        self.step = step
        self.rounds = rounds
        self.C = C

    def fit(
        self, X: Any, y: Any, *, sensitive_features: Any = None, classes: int | None = None
    ) -> GroupDROLogisticRegression:
        X, y = validate_data(self, X, y, dtype=FLOAT_DTYPES)
        check_classification_targets(y)
        if classes is None:
            self.classes_, y = np.unique(y, return_inverse=True)
            classes = len(self.classes_)
        else:
            if (
                not np.issubdtype(np.asarray(y).dtype, np.integer)
                or y.min() < 0
                or y.max() >= classes
            ):
                raise ValueError(
                    f"with classes={classes}, y must hold integer codes 0..{classes - 1}; "
                    "leave classes=None for labels of any type"
                )
            self.classes_ = np.arange(classes)
        sensitive = sensitive_rows(self, sensitive_features, len(y))
        _, codes = np.unique(np.asarray(sensitive, dtype=str), return_inverse=True)
        counts = np.bincount(codes).astype(float)
        log_q = np.zeros(len(counts))
        history = []
        for _ in range(self.rounds if self.step > 0 else 0):
            q = np.exp(log_q - log_q.max())
            history.append(q / q.sum())
            coef, intercept = self._fit(X, y, codes, counts, history[-1], classes)
            logits = X @ coef.T + intercept
            logits -= logits.max(1, keepdims=True)
            log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
            loss = -log_p[np.arange(len(y)), y]
            log_q = log_q + self.step * np.bincount(codes, weights=loss) / counts
        # Multiplicative weights: the average of the rounds' group weights approaches the
        # minimax (worst-group) weighting; the last round alone can overshoot.
        q = np.mean(history, axis=0) if history else np.full(len(counts), 1 / len(counts))
        self.coef_, self.intercept_ = self._fit(X, y, codes, counts, q, classes)
        self.group_weights_ = q.tolist()
        return self

    def _fit(
        self, X: np.ndarray, y: np.ndarray, codes: np.ndarray, counts: np.ndarray,
        q: np.ndarray, classes: int,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        weight = q[codes] / counts[codes] * len(y)
        return fit_multinomial(X, y, self.C, classes, sample_weight=weight)

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=FLOAT_DTYPES, reset=False)
        logits = X @ self.coef_.T + self.intercept_
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        best = self.predict_proba(X).argmax(1)
        return np.asarray(self.classes_[best])


def embed(model: ArrayClassifier, x: torch.Tensor) -> np.ndarray:
    """``model.features`` of every row, in batches, without gradients."""
    with torch.inference_mode():
        parts = [model.features(x[i : i + EMBED_BATCH]) for i in range(0, len(x), EMBED_BATCH)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, model.head.in_features), np.float32)


def group_edges(cfg: Config, data: PreparedData) -> dict[str, list[float] | None]:
    """Tercile edges of each measured attribute on the training split; ``None`` for a group
    column of data.attributes_file, which prepare stored beside each item."""
    stored = data.schema.get("group_columns", [])
    absent = [a for a in group_attributes(cfg) if a not in stored and a not in MEASURES]
    if absent:
        raise DataError(
            f"data.sensitive {absent} are not group columns of the prepared data "
            f"({', '.join(stored) or 'none'}): prepare again with data.attributes_file "
            "holding them"
        )
    return {
        a: None if a in stored else tercile_edges(MEASURES[a](data.train.features))
        for a in group_attributes(cfg)
    }


def measured(edges: dict[str, list[float] | None]) -> dict[str, list[float]]:
    """The attributes computed from the arrays (which counterfactual edits can move)."""
    return {a: e for a, e in edges.items() if e is not None}


def groups_of(
    values: np.ndarray, edges: Mapping[str, list[float] | None], split: Split | None = None
) -> dict[str, np.ndarray]:
    """Each row's group: a measured attribute bucketed by its edges, a stored one (edges
    ``None``) read from ``split``, the prepared rows ``values`` are (or are an edit of)."""
    return {
        a: bucket(a, MEASURES[a](values), e) if e is not None
        else _stored(split, a).to_numpy(dtype=object)
        for a, e in edges.items()
    }  # fmt: skip


def _stored(split: Split | None, column: str) -> pd.Series:
    if split is None:
        raise ValueError(f"group {column!r} comes from data.attributes_file: pass the split")
    return split.groups(column)


def finetune_arrays(cfg: Config, prepared_dir: Path, pretrained_dir: Path, out_dir: Path) -> Path:
    """The finetune stage for images and series (seeded by ``finetune``); returns the
    artifact directory."""
    fc, fair = cfg.finetune, cfg.finetune.fairness
    if fc.transfer != "linear_probe":
        raise ConfigError(
            f"finetune.transfer {fc.transfer!r} is implemented for tabular data only; images "
            "and series use 'linear_probe'"
        )
    data = PreparedData(prepared_dir)
    modality, classes = data.modality, len(data.schema["classes"])  # checked by finetune()
    backbone = load_backbone(pretrained_dir)
    spec = json.loads((pretrained_dir / "backbone.json").read_text(encoding="utf-8"))
    train, val = data.train, data.validation
    x_train, x_val = model_input(modality, train.features), model_input(modality, val.features)
    channels, dim = x_train.shape[1], feature_dim(backbone)

    def classifier(with_backbone: bool) -> ArrayClassifier:
        in_dim = dim if with_backbone else int(np.prod(x_train.shape[1:]))
        return ArrayClassifier(modality, channels, backbone if with_backbone else None, in_dim,
                               classes)  # fmt: skip

    labeled = stratified_label_subset(train.target, fc.label_fraction, cfg.seed)
    labels = check_label_classes(train.target, labeled, str(data.schema.get("label", "label")),
                                 fc.label_fraction, data.schema["classes"])  # fmt: skip
    if "few_labels_note" in labels:
        print(f"warning: {labels['few_labels_note']}", file=sys.stderr, flush=True)
    y_lab = train.target[labeled]
    z_train, z_val = embed(classifier(True), x_train), embed(classifier(True), x_val)
    shift, scale = z_train.mean(0), np.maximum(z_train.std(0), 1e-6)
    zs_train, zs_val = (z_train - shift) / scale, (z_val - shift) / scale
    c = fc.regularization
    ssl = set_head(classifier(True), *fit_multinomial(zs_train[labeled], y_lab, c, classes),
                   shift, scale)  # fmt: skip
    raw_lab = embed(classifier(False), x_train[labeled])
    baseline = set_head(classifier(False), *fit_multinomial(raw_lab, y_lab, c, classes))

    edges = group_edges(cfg, data)
    columns = fair.sensitive or group_attributes(cfg)[:1]
    unknown = [a for a in columns if a not in edges]
    if unknown:
        raise ConfigError(
            f"finetune.fairness.sensitive {unknown} must also be listed in data.sensitive "
            f"({', '.join(edges)})"
        )
    train_groups = groups_of(train.features, edges, train)
    val_groups = groups_of(val.features, edges, val)

    def candidate(name: str, mechanism: str, strength: float, coef: np.ndarray,
                  intercept: np.ndarray, extra: dict | None = None) -> Candidate:  # fmt: skip
        predicted = (zs_val @ coef.T + intercept).argmax(1)
        acc = float(np.mean(predicted == val.target))
        # the largest over the columns; undefined (NaN) when one column's is, as for tables
        found = [class_gaps(val.target, predicted, val_groups[a], classes) for a in columns]
        keys = {**GAP_OF, "accuracy_parity": "accuracy_parity_difference"}
        gaps = {name: largest_gap(f[key] for f in found) for name, key in keys.items()}
        upper: dict[str, float] = {}
        if fair.gap_confidence is not None:
            bounds = [class_gap_upper_bounds(val.target, predicted, val_groups[a], classes,
                                             fair.gap_confidence) for a in columns]  # fmt: skip
            upper = {name: largest_gap(b[name] for b in bounds) for name in GAP_OF}
        return Candidate(name, mechanism, strength, acc, gaps, upper=upper,
                         extra={"head": (coef, intercept), **(extra or {})})  # fmt: skip

    head = ssl.head.weight.detach().numpy(), ssl.head.bias.detach().numpy()
    candidates = [candidate("ssl", "none", 0.0, *head)]
    if fair.constraint != "none":
        sens = np.array(["|".join(p) for p in zip(*(train_groups[a][labeled] for a in columns),
                                                    strict=True)])  # fmt: skip
        for step in sorted(set(fair.penalties)):
            dro = GroupDROLogisticRegression(step=step, C=c).fit(
                zs_train[labeled], y_lab, sensitive_features=sens, classes=classes
            )
            candidates.append(candidate(
                f"group_dro(step={step:g})", "reweighting", step, dro.coef_, dro.intercept_,
                {"group_weights": dro.group_weights_},
            ))  # fmt: skip
        if classes == 2:
            for eps in sorted(fair.reductions):
                red = DistilledExponentiatedGradient(constraint=fair.constraint, eps=eps, C=c).fit(
                    zs_train[labeled], y_lab, sensitive_features=sens
                )
                coef = np.vstack([np.zeros_like(red.coef_), red.coef_])
                candidates.append(candidate(f"exponentiated_gradient(eps={eps:g})", "reduction",
                                            eps, coef, np.array([0.0, red.intercept_])))  # fmt: skip
    constraint = fair.constraint if fair.constraint != "none" else "demographic_parity"
    mark_front(candidates, constraint)
    chosen, policy_met = (
        select(candidates, constraint, fair.max_gap - fair.selection_margin)
        if fair.constraint != "none"
        else (candidates[0], True)
    )  # fmt: skip
    undefined = (undefined_gap_note(chosen, constraint, "the validation items", "label more "
                 "items of the missing group or class") if fair.constraint != "none" else None)  # fmt: skip
    if undefined:
        print(f"warning: {undefined}", file=sys.stderr, flush=True)
    coef, intercept = chosen.extra["head"]
    mitigated = set_head(classifier(True), coef, intercept, shift, scale)

    report: dict[str, Any] = {
        "modality": modality,
        "classes": data.schema["classes"],
        "labels_used": len(labeled),
        **labels,  # labels_by_class, and few_labels_note when a class has few
        "label_fraction": fc.label_fraction,
        "train_rows": len(train.target),
        "transfer": "linear_probe",
        "groups": {
            a: {
                "edges": e,
                "source": "computed from the input"
                if e is not None
                else f"data.attributes_file column {a!r}",
                "buckets": sorted(set(train_groups[a])),
                "train_counts": {
                    str(k): int(v)
                    for k, v in zip(*np.unique(train_groups[a], return_counts=True), strict=True)
                },
            }
            for a, e in edges.items()
        },
        "fairness": {
            "constraint": fair.constraint,
            "sensitive": columns,
            "max_gap": fair.max_gap,
            "gap_definitions": "multi-class: max over classes of the between-group difference "
            "(see sslops.evaluate.multiclass); for two classes the tabular gaps (fairlearn's "
            "where every group has both classes; a group without positives or negatives is "
            "left out of the TPR or FPR difference)",
            "selected": chosen.name,
            "selected_mechanism": chosen.mechanism,
            "selected_description": MECHANISMS.get(chosen.mechanism, chosen.mechanism),
            "selected_strength": chosen.strength,
            "policy_met_on_validation": policy_met,
            **({"selection_caveats": [undefined]} if undefined else {}),
            "selection_margin": fair.selection_margin,
            "gap_confidence": fair.gap_confidence,
            "selection_rule": selection_rule(fair.gap_confidence),
            "postprocessing": "not applied to images and series (ThresholdOptimizer needs the "
            "group at prediction time and is binary-only)",
            "candidates": [
                {
                    **cand.row(),
                    **(
                        {"group_weights": cand.extra["group_weights"]}
                        if "group_weights" in cand.extra
                        else {}
                    ),
                }
                for cand in candidates
            ],
        },
    }
    models = {"ssl": ssl, "mitigated": mitigated, "baseline": baseline, "probe": ssl}
    info: dict[str, dict[str, Any]] = {
        "ssl": {"transfer": "linear_probe"},
        "mitigated": {"mechanism": chosen.mechanism, "strength": chosen.strength},
        "baseline": {"kind": "logistic regression on normalized raw inputs"},
        "probe": {"transfer": "linear_probe"},
    }
    inputs = {"prepared": prepared_dir, "pretrained": pretrained_dir}
    with write_artifact(out_dir, "finetune", cfg.model_dump(mode="json"), inputs) as tmp:
        save_backbone(backbone, spec, tmp)
        for name, model in models.items():
            save_array_classifier(model, tmp, name, {"decision": "argmax", **info[name]})
        np.save(tmp / "labeled_rows.npy", labeled)
        # Evaluation's label-efficiency curve reuses them instead of a second forward pass.
        np.save(tmp / "train_embeddings.npy", z_train.astype(np.float32))
        write_json(tmp / "finetune.json", report)
        if fair.constraint != "none":
            plot_front(tmp / "pareto.png", candidates, constraint, fair.max_gap, chosen)
    return Path(out_dir)
