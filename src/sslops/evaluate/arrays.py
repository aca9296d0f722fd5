"""Evaluate for images and series: every model on the test split and on a shifted copy of it,
per derived group with intervals, counterfactual shortcut tests and the label-efficiency curve.

Metric and gap definitions for K classes: :mod:`sslops.evaluate.multiclass`. The OOD
split and the counterfactual edits: :mod:`sslops.evaluate.corruptions`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from sslops.artifacts import read_meta, write_artifact
from sslops.config import Config
from sslops.data.attributes import MEASURES
from sslops.evaluate.corruptions import counterfactuals, shifted_images, shifted_series
from sslops.evaluate.metrics import majority_accuracy
from sslops.evaluate.multiclass import macro_auc, multiclass_metrics
from sslops.evaluate.report import (
    gap_cell,
    group_markdown,
    models_gap_note_lines,
    roc_points,
    write_reports,
)
from sslops.evaluate.shift import compare_with_test, domain_auc
from sslops.evaluate.shortcuts import mean_interval
from sslops.finetune.arrays import MODELS, embed, fit_multinomial, groups_of, measured
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


UNREACHABLE_TOLERANCE = 1e-4
"""An edit that changes the model's normalized input (values of order 1), or, where that step
is not known, any predicted probability, by less than this never reached the model: float32
round-off of a z-normalized series is ~1e-6 at the input and up to ~1e-5 at the output of a
trained 1-D ResNet, a real edit changes both by orders of magnitude more."""
_INVISIBLE = {
    "timeseries": "the model normalizes each series to mean 0 and sd 1, so amplitude and "
    "level are invisible to it",
}


def counterfactual_tests(
    predict: Callable[[np.ndarray], np.ndarray], values: np.ndarray,
    edges: dict[str, list[float]], threshold: float, modality: str, *,
    base: np.ndarray | None = None, seen: Callable[[np.ndarray], np.ndarray] | None = None,
    resamples: int = 200, seed: int = 0,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each counterfactual edit of each group attribute, scored by ``predict`` (raw arrays in,
    class probabilities out; ``base`` = its output on ``values`` when already known).

    ``seen`` is the model's fixed input step (raw arrays in, what the network sees out). An
    edit that changes the attribute but not what the model sees (or, without ``seen``, no
    predicted probability) by ``UNREACHABLE_TOLERANCE`` or more cannot reach the model: the
    series model z-normalizes each series, which undoes scaling and shifting exactly. Such a
    test cannot show reliance either way; it is reported with ``applicable: false``,
    ``flagged: null`` and the reason, not as "not flagged". ``prediction_change_low`` and
    ``_high``: the share's 95% interval over ``resamples`` bootstrap draws of the rows.
    """
    before_proba = predict(values) if base is None else base
    before = before_proba.argmax(1)
    before_seen = seen(values) if seen is not None else None
    groups = groups_of(values, edges)
    edits: dict[str, dict[str, Any]] = {}
    for a in edges:
        for edit, edited in counterfactuals(a, values).items():
            proba = predict(edited)
            changed = proba.argmax(1) != before
            moved = groups_of(edited, {a: edges[a]})[a] != groups[a]
            share, moved_share = float(changed.mean()), float(moved.mean())
            output = float(np.max(np.abs(proba - before_proba), initial=0.0))
            inputs = (
                None if seen is None or before_seen is None
                else float(np.max(np.abs(seen(edited) - before_seen), initial=0.0))
            )  # fmt: skip
            bounds = mean_interval(changed.astype(float), resamples, np.random.default_rng(seed))
            low, high = bounds if bounds else (None, None)
            result: dict[str, Any] = {
                "attribute": a,
                "prediction_change_share": share,
                # two scalars, not a list: the card shows these records as a flat table
                "prediction_change_low": low,
                "prediction_change_high": high,
                "group_change_share": moved_share,
                "max_probability_change": output,
                "max_input_change": inputs,
                "applicable": True,
                "flagged": bool(share > threshold),
            }
            measure = MEASURES[a]
            attribute_moved = not np.allclose(measure(edited), measure(values))
            reach = output if inputs is None else inputs
            if attribute_moved and reach < UNREACHABLE_TOLERANCE:
                why = _INVISIBLE.get(modality, "the model does not respond to this edit")
                what = (
                    f"no predicted probability by {UNREACHABLE_TOLERANCE:g} or more"
                    if inputs is None
                    else f"what the model sees by at most {inputs:.1e} and no predicted "
                    f"probability by more than {output:.1e}"
                )
                result |= {
                    "applicable": False,
                    "flagged": None,
                    "reason": f"not applicable: {why} (the edit changed {a} and moved "
                    f"{moved_share:.0%} of the rows to another bucket, yet changed {what}), "
                    f"so this test cannot show whether the model relies on {a}",
                }
            edits[f"{a}: {edit}"] = result
    return edits


def unreachable_attributes(edits: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``{"counterfactual: <attribute>": reason}`` for each attribute none of whose edits
    reached the model (the entries of ``shortcuts.json``'s ``not_applicable``)."""
    out: dict[str, str] = {}
    for a in dict.fromkeys(e["attribute"] for e in edits.values()):
        mine = [e for e in edits.values() if e["attribute"] == a]
        if not any(e["applicable"] for e in mine):
            out[f"counterfactual: {a}"] = mine[0]["reason"]
    return out


def record_attribute_tests(edges: dict[str, list[float] | None]) -> dict[str, dict[str, Any]]:
    """A counterfactual entry, not applicable, for each group column of data.attributes_file:
    no edit of an image or series changes a patient's recorded sex or site. Written as the
    unreachable edits are (``applicable: false``, ``flagged: null``, a ``reason``), so
    ``shortcuts.json``, ``metrics.md`` and the model card say why there is no test."""
    return {
        f"{a}: any edit of the input": {
            "attribute": a,
            "prediction_change_share": None,
            "prediction_change_low": None,
            "prediction_change_high": None,
            "group_change_share": None,
            "max_probability_change": None,
            "max_input_change": None,
            "applicable": False,
            "flagged": None,
            "reason": f"not applicable: {a} comes from data.attributes_file (the records), "
            "not from the input, so no edit of the input changes it; the per-group metrics "
            "and gaps measure it",
        }
        for a, e in edges.items()
        if e is None
    }


def counterfactual_markdown(shortcuts: dict[str, Any]) -> str:
    """The counterfactual tests as lines of ``metrics.md``."""
    lines = [
        f"Counterfactual edits of the group attribute (model '{shortcuts['model']}', flagged "
        f"when more than {shortcuts['reliance_threshold']:g} of its predictions change):",
        "",
    ]
    for name, e in shortcuts["counterfactual"].items():
        if not e["applicable"]:
            lines.append(f"- {name}: {e['reason']}")
        else:
            verdict = "flagged" if e["flagged"] else "not flagged"
            low, high = e.get("prediction_change_low"), e.get("prediction_change_high")
            ranged = "" if low is None else f" [95% interval {low:.1%}, {high:.1%}]"
            lines.append(
                f"- {name}: {e['prediction_change_share']:.1%}{ranged} of the predictions change "
                f"({e['group_change_share']:.1%} of the rows change {e['attribute']} bucket): "
                f"{verdict}"
            )
    return "\n".join(lines) + "\n"


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


def _positive(schema: dict[str, Any], classes: list[str]) -> dict[str, str]:
    """Which class the two-class metrics take as positive (index 1), and why."""
    if len(classes) != 2:
        return {}
    return {
        "positive_class": str(schema.get("positive_class", classes[1])),
        "positive_class_source": schema.get(
            "positive_class_source", "default: the second class in sorted label order"
        ),
    }


def _cell(value: Any) -> str:
    """A metric as a table cell: "n/a" where it is undefined (a class or group absent from
    the test split gives NaN: null in metrics.json), never "nan"."""
    return "n/a" if value is None or value != value else f"{value:.4f}"


def _markdown(
    metrics: dict[str, dict[str, Any]], attribute: str, constrained: str, positive: dict[str, str]
) -> str:
    lines = [
        f"| model | accuracy | ROC AUC (macro OvR) | ECE | DP diff. ({attribute}) | "
        f"EO diff. ({attribute}) | worst-group accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in metrics.items():
        ci = m.get("intervals", {}).get("accuracy")
        acc = f"{m['accuracy']:.4f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        roc, ece, worst = (_cell(m[k]) for k in ("roc_auc", "ece", "worst_group_accuracy"))
        lines.append(
            f"| {name} | {acc} | {roc} | {ece} | {gap_cell(m['dp_difference'])} "
            f"| {gap_cell(m['eo_difference'])} | {worst} |"
        )
    notes = models_gap_note_lines(metrics, attribute)
    if notes:  # "undefined" above: why, so that no reader takes it for no gap
        lines += ["", "Gaps not measured as such (undefined: fewer than two groups to compare):",
                  "", *notes]  # fmt: skip
    lines += [
        "",
        f"The fairness policy constrains: {constrained}. Gaps over K classes: DP = max over "
        "classes c of the between-group difference in P(pred = c); EO = max over c of the "
        "larger of the between-group one-vs-rest TPR and FPR differences.",
    ]
    if positive:
        lines += [
            "",
            f"Positive class (two classes: equal opportunity, ROC AUC, selection rate): "
            f"'{positive['positive_class']}' ({positive['positive_class_source']}).",
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
        groups = groups_of(values, edges, test)  # the shifted copy: the same rows
        return proba, {n: multiclass_metrics(y, p, groups, resamples=ec.bootstrap, seed=seed)
                       for n, p in proba.items()}, z  # fmt: skip

    proba, metrics, z_test = evaluate_on(test.features, cfg.seed)
    shift = shifted_images if data.modality == "image" else shifted_series
    proba_ood, ood, z_ood = evaluate_on(shift(test.features, cfg.seed), cfg.seed)
    compared = compare_with_test(
        {"accuracy": lambda t, p: float(np.mean(p.argmax(1) == t)), "roc_auc": macro_auc},
        {n: (y, p) for n, p in proba.items()}, {n: (y, p) for n, p in proba_ood.items()},
        paired=True, resamples=ec.bootstrap, seed=cfg.seed,
    )  # fmt: skip
    drift = {
        "measure": "out-of-fold ROC AUC of a logistic regression telling the corrupted copy "
        "from the test items (backbone embeddings; 0.5: no shift)",
        "domain_auc": domain_auc(z_test, z_ood, cfg.seed),
    }

    deployed = cfg.export.model

    def seen(values: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = models[deployed].normalize(model_input(data.modality, values))
        return x.numpy().astype(np.float64)

    edits = counterfactual_tests(
        lambda values: score(values)[deployed], test.features, measured(edges),
        ec.reliance_threshold,
        data.modality, base=proba[deployed], seen=seen, resamples=ec.bootstrap, seed=cfg.seed,
    ) | record_attribute_tests(edges)  # fmt: skip
    shortcuts = {
        "model": deployed,
        "reliance_threshold": ec.reliance_threshold,
        "unreachable_tolerance": UNREACHABLE_TOLERANCE,
        "counterfactual": edits,
        "flagged": [k for k, v in edits.items() if v["flagged"]],
        "not_applicable": {**NOT_APPLICABLE, **unreachable_attributes(edits)},
    }
    efficiency = None
    if ec.label_efficiency is not None:
        x_test = model_input(data.modality, test.features)
        raw_test = embed(models["baseline"], x_test).astype(np.float64)
        efficiency = _label_efficiency(cfg, data, finetuned_dir, models["baseline"], z_test,
                                       raw_test)  # fmt: skip

    classes = [str(c) for c in data.schema["classes"]]
    positive = _positive(data.schema, classes)
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
            "majority_class_accuracy": majority_accuracy(y),
            "classes": classes,
            **positive,
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
            "shift": drift,
            "paired": True,
            "compared_with_test": compared,
        }
        write_reports(
            tmp, payload, shortcuts,
            _markdown(metrics, attribute, report["fairness"]["constraint"], positive)
            + group_markdown(deployed, metrics[deployed]) + "\n"
            + counterfactual_markdown(shortcuts),
            ood=ood_report, efficiency=efficiency,
            roc_title="ROC (micro one-vs-rest), test split",
            bars=("group_accuracy.png", "accuracy", "accuracy",
                  f"Accuracy by {attribute} {'group' if edges[attribute] is None else 'bucket'}, "
                  "test split"),
        )  # fmt: skip
    return Path(out_dir)
