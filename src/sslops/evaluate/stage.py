"""Evaluate: every model on the test split (and the out-of-distribution split when prepare made
one) — overall and per group with intervals, shortcut tests, and the label-efficiency curve.

Post-processed predictions (ThresholdOptimizer) are evaluated too, under the name
``ssl+threshold_optimizer`` and flagged: they need the sensitive attribute at
prediction time and are never the deployed model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from sslops.artifacts import check_lineage, read_meta, timed_stage, write_artifact
from sslops.config import Config
from sslops.data.split import predicate_columns
from sslops.evaluate.label_efficiency import label_efficiency
from sslops.evaluate.metrics import auc, majority_accuracy, majority_note, model_metrics
from sslops.evaluate.report import (
    gap_cell,
    group_markdown,
    models_gap_note_lines,
    roc_points,
    write_reports,
)
from sslops.evaluate.shift import compare_with_test, domain_auc
from sslops.evaluate.shortcuts import counterfactual_flip, permutation_reliance
from sslops.finetune.estimators import GroupThresholdPostprocessor, groups_1d
from sslops.finetune.pareto import GAPS, largest_gap
from sslops.finetune.stage import MODELS
from sslops.models.tabular import TabularClassifier, load_classifier
from sslops.optim import callers_generators
from sslops.prepare.dataset import PreparedData, Split, check_same_data

POSTPROCESSED = "ssl+threshold_optimizer"
POSTPROCESSED_INTERVALS = (
    "bootstrap intervals resample the test rows with each row's randomized decision kept as "
    "drawn (the config's seed); the spread between draws is not in them"
)


def _ood_comparison(
    cfg: Config, data: PreparedData, test: Split, ood: Split, models: dict[str, TabularClassifier]
) -> dict[str, Any]:
    """``ood.json``'s shift measure (domain-classifier ROC AUC on the encoded features, with
    and without the columns ``prepare.ood`` names, and the positive rate of each split) and
    every model's accuracy and ROC AUC on test vs OOD, the difference with its interval."""
    assert cfg.prepare.ood is not None
    ec, enc = cfg.evaluate, data.encoding
    names = [c.name for c in enc.numeric] + [c.name for c in enc.categorical]
    defining = set(predicate_columns(cfg.prepare.ood))
    rest = [k for k, col in enumerate(enc.column_of) if names[col] not in defining]
    shift = {
        "measure": "out-of-fold ROC AUC of a logistic regression telling OOD from test rows "
        "(encoded features; 0.5: no shift)",
        "domain_auc": domain_auc(test.features, ood.features, cfg.seed),
        "predicate_columns": sorted(defining),
        "domain_auc_without_predicate": domain_auc(
            test.features[:, rest], ood.features[:, rest], cfg.seed
        ),
        "positive_rate": {"test": float(test.target.mean()), "ood": float(ood.target.mean())},
    }

    def accuracy(y: np.ndarray, s: np.ndarray) -> float:
        return float(np.mean((s >= ec.threshold) == y))

    on = {
        key: {n: (split.target, _scorer(m)(split.features)) for n, m in models.items()}
        for key, split in (("test", test), ("ood", ood))
    }
    compared = compare_with_test(
        {"accuracy": accuracy, "roc_auc": auc}, on["test"], on["ood"], paired=False,
        resamples=ec.bootstrap, seed=cfg.seed,
    )  # fmt: skip
    return {"shift": shift, "paired": False, "compared_with_test": compared}


def _scorer(model: TabularClassifier) -> Any:
    def score(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy().astype(np.float64)

    return score


def policy_gaps(
    metrics: dict[str, dict[str, Any]], fairness: dict[str, Any], first: str
) -> dict[str, Any] | None:
    """What the fairness policy bounds and each model's test figure of it, or None without a
    policy (constraint ``none``): the constrained gap's largest value over the policy's
    columns (``finetune.fairness.sensitive``), each column on its own, not their crossing,
    as the finetune selection compares it on validation; NaN when a column's is undefined
    (the largest is then unknown, as there). Each model's ``policy_gap`` and the column that
    attains it (``policy_gap_column``) are set in ``metrics``. The report named the gap alone
    and its table showed data.sensitive[0]'s, so a policy on race (or on sex and race) was
    read off the gaps by sex (found by the multisens review)."""
    constraint = fairness.get("constraint")
    if constraint not in GAPS:
        return None
    key = GAPS[constraint]
    columns = [str(c) for c in fairness.get("sensitive") or [first]]
    for m in metrics.values():
        by_column = {c: float(m.get("gaps", {}).get(c, {}).get(key, math.nan)) for c in columns}
        value = largest_gap(by_column.values())
        m["policy_gap"] = value
        m["policy_gap_column"] = (
            None if math.isnan(value) else max(by_column, key=lambda c: by_column[c])
        )
    return {
        "constraint": constraint,
        "gap": key,
        "sensitive": columns,
        "max_gap": fairness.get("max_gap"),
        "compared": "the largest over the columns, each on its own (not their crossing)"
        if len(columns) > 1
        else f"over {columns[0]}",
    }


def _policy_lines(metrics: dict[str, dict[str, Any]], policy: dict[str, Any]) -> list[str]:
    """The policy in words below the first table, with each model's test figure of it."""
    columns = policy["sensitive"]
    over = (
        f"its largest difference over {', '.join(columns)} (each column on its own; their "
        "crossing is reported, not constrained)"
        if len(columns) > 1
        else f"its difference by {columns[0]}"
    )
    lines = [
        f"The fairness policy constrains: {policy['constraint']}, {over}, <= "
        f"{policy['max_gap']} on validation. On this test split:"
    ]
    for name, m in metrics.items():
        attained = f" ({m['policy_gap_column']})" if len(columns) > 1 and m.get(
            "policy_gap_column") else ""  # fmt: skip
        lines.append(f"- {name}: {gap_cell(m['policy_gap'])}{attained}")
    return lines


def _metrics_markdown(
    metrics: dict[str, dict[str, Any]], sensitive: str, constrained: str, majority: float,
    policy: dict[str, Any] | None = None,
) -> str:  # fmt: skip
    lines = [
        f"| model | accuracy | ROC AUC | DP diff. ({sensitive}) | EO diff. ({sensitive}) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in metrics.items():
        ci = m.get("intervals", {}).get("accuracy")
        acc = f"{m['accuracy']:.4f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        flag = " (needs sensitive attribute at prediction)" if name == POSTPROCESSED else ""
        roc = "n/a" if m["roc_auc"] != m["roc_auc"] else f"{m['roc_auc']:.4f}"
        lines.append(
            f"| {name}{flag} | {acc} | {roc} | "
            f"{gap_cell(m['dp_difference'])} | {gap_cell(m['eo_difference'])} |"
        )
    notes = models_gap_note_lines(metrics, sensitive)
    if notes:
        lines += ["", *notes]
    drawn = [f"- {name}: {m['intervals_note']}." for name, m in metrics.items()
             if m.get("intervals_note")]  # fmt: skip
    if drawn:
        lines += ["", *drawn]
    lines += ["", f"Always predicting the majority class: accuracy {majority:.4f}."]
    lines += [f"- {name}: {m['majority_note']}." for name, m in metrics.items()
              if m.get("majority_note")]  # fmt: skip
    lines += [
        "",
        *(
            _policy_lines(metrics, policy)
            if policy
            else [f"The fairness policy constrains: {constrained}."]
        ),
    ]
    left_out = {
        c: names for m in metrics.values() for c, names in m.get("small_groups", {}).items()
    }
    if left_out:
        lines += ["", "Left out of the gaps (fewer than evaluate.min_group_rows test rows): "
                  + "; ".join(f"{', '.join(n)} by {c}" for c, n in left_out.items()) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _scores(models: dict[str, TabularClassifier], split: Split) -> dict[str, np.ndarray]:
    """Each model's scores of ``split``: computed once, for the metrics, curves and matrices."""
    return {name: _scorer(model)(split.features) for name, model in models.items()}


def _evaluate_split(
    cfg: Config, split: Split, scores: dict[str, np.ndarray], columns: list[str],
    post: dict[str, Any] | None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every model's :func:`model_metrics` from its ``scores`` of ``split`` (:func:`_scores`),
    and the post-processed row when ``post`` is given."""
    ec = cfg.evaluate
    groups = {c: split.groups(c).to_numpy() for c in columns}
    out: dict[str, dict[str, Any]] = {}
    for name, score in scores.items():
        out[name] = model_metrics(
            split.target, score, ec.threshold, groups,
            intersections=ec.intersections, resamples=ec.bootstrap, seed=cfg.seed,
            min_group_rows=ec.min_group_rows,
        )  # fmt: skip
    if post is not None:
        thresholder = GroupThresholdPostprocessor(constraint=post["constraint"])
        thresholder.thresholds_ = post["thresholds"]
        thresholder.n_sensitive_features_in_ = len(post["sensitive"])  # crossed: all of them
        thresholder.sensitive_features_names_in_ = [str(c) for c in post["sensitive"]]
        score = scores[post["base_model"]]
        sens = split.group_matrix(post["sensitive"])
        predicted = thresholder.predict(score, sensitive_features=sens, seed=cfg.seed)
        metrics = model_metrics(
            split.target, score, ec.threshold, groups, intersections=ec.intersections,
            resamples=ec.bootstrap, seed=cfg.seed, predicted=predicted,
            min_group_rows=ec.min_group_rows,
        )  # fmt: skip
        # Its decisions are group thresholds (randomized between two), not a ranking of the
        # base score: that score's ROC AUC is not this classifier's, nor its interval. The
        # intervals resample rows with their drawn decisions kept (the spread of the draw
        # itself is not in them; POSTPROCESSED_INTERVALS says so in the report).
        metrics["roc_auc"] = float("nan")
        metrics.get("intervals", {}).pop("roc_auc", None)
        for table in metrics.get("by_group", {}).values():
            for row in table.values():
                row["roc_auc"] = float("nan")
        for table in metrics.get("group_intervals", {}).values():
            for bounds in table.values():
                bounds.pop("roc_auc", None)
        if metrics.get("intervals"):
            metrics["intervals_note"] = POSTPROCESSED_INTERVALS
        unseen = ~np.isin(groups_1d(sens), list(thresholder.thresholds_))
        metrics["rows_in_groups_without_threshold"] = int(unseen.sum())  # decided 0
        metrics["flag"] = post["flag"]
        out[POSTPROCESSED] = metrics
    return out


@callers_generators()  # the modules built to load weights into draw from them
@timed_stage("evaluate")
def evaluate(cfg: Config, prepared_dir: Path, finetuned_dir: Path, out_dir: Path) -> Path:
    """Run the evaluate stage; returns the artifact directory."""
    check_lineage(prepared_dir, finetuned_dir)
    check_same_data(cfg, prepared_dir)
    if cfg.modality != "tabular":  # images and series: sslops.evaluate.arrays
        from sslops.evaluate.arrays import evaluate_arrays

        return evaluate_arrays(cfg, prepared_dir, finetuned_dir, out_dir)
    ec = cfg.evaluate
    data = PreparedData(prepared_dir)
    read_meta(finetuned_dir, "finetune")
    finetune_report = json.loads((finetuned_dir / "finetune.json").read_text(encoding="utf-8"))
    post_path = finetuned_dir / "postprocessing.json"
    post = json.loads(post_path.read_text(encoding="utf-8")) if post_path.is_file() else None
    models = {name: load_classifier(finetuned_dir, name)[0] for name in MODELS}
    test = data.test
    columns = data.sensitive
    scores = _scores(models, test)
    metrics = _evaluate_split(cfg, test, scores, columns, post)
    majority = majority_accuracy(test.target)
    for m in metrics.values():  # a model no better than a constant "no" says so
        note = majority_note(m, majority, ec.threshold)
        if note:
            m["majority_note"] = note
    # prepare writes an out-of-distribution split when the config names a predicate for it.
    ood_split = data.split("ood") if (data.path / "ood.parquet").is_file() else None
    ood = (
        _evaluate_split(cfg, ood_split, _scores(models, ood_split), columns, None)
        if ood_split is not None
        else None
    )

    deployed = models[cfg.export.model]
    score = _scorer(deployed)
    as_is = score(data.encoding.transform(test.frame))  # the shortcut tests' unchanged rows
    checked = list(dict.fromkeys([*columns, *ec.proxies, *ec.shortcut_columns]))
    missing = [c for c in checked if c not in test.frame.columns]
    checked = [c for c in checked if c not in missing]
    reliance = permutation_reliance(
        score, test.frame, data.encoding, test.target, checked, ec.threshold,
        ec.reliance_threshold, cfg.seed, ec.permutation_repeats, ec.bootstrap, base=as_is,
    )  # fmt: skip
    shortcuts: dict[str, Any] = {
        "model": cfg.export.model,
        "reliance_threshold": ec.reliance_threshold,
        "permutation": reliance,
        "counterfactual": {
            c: counterfactual_flip(score, test.frame, data.encoding, c, ec.threshold, base=as_is)
            for c in columns
        },
        "columns_not_in_data": missing,
    }  # fmt: skip
    shortcuts["flagged"] = [c for c, r in reliance.items() if r["flagged"]]
    efficiency = None
    if ec.label_efficiency is not None:
        probe, _ = load_classifier(finetuned_dir, "probe")
        assert probe.encoder is not None
        efficiency = label_efficiency(cfg, data, probe.encoder)

    curves, confusion = {}, {}
    for name, s in scores.items():
        curves[name] = roc_points(test.target, s)
        confusion[name] = confusion_matrix(
            test.target, (s >= ec.threshold).astype(int), labels=[0, 1]
        ).tolist()

    sensitive = columns[0]
    constrained = finetune_report["fairness"]["constraint"]
    policy = policy_gaps(metrics, finetune_report["fairness"], sensitive)
    inputs = {"prepared": prepared_dir, "finetuned": finetuned_dir}
    with write_artifact(out_dir, "evaluate", cfg.model_dump(mode="json"), inputs) as tmp:
        payload = {
            "split": "test",
            "rows": len(test.target),
            "threshold": ec.threshold,
            "majority_class_accuracy": majority,
            "sensitive": sensitive,
            "constrained_gap": constrained,
            **({"policy": policy} if policy else {}),
            "models": metrics,
            "roc_curves": curves,
            "confusion_matrices": confusion,
        }
        ood_report = None
        if ood is not None and ood_split is not None:
            ood_report = {"split": "ood", "rows": len(ood_split.target), "models": ood,
                          **_ood_comparison(cfg, data, test, ood_split, models)}  # fmt: skip
        write_reports(
            tmp, payload, shortcuts, _metrics_markdown(metrics, sensitive, constrained, majority, policy)
            + group_markdown(cfg.export.model, metrics[cfg.export.model], ec.min_group_rows),
            ood=ood_report, efficiency=efficiency, roc_title="ROC, test split",
            bars=("selection_rate.png", "selection_rate", "selection rate",
                  f"Selection rate by {sensitive}, test split"),
        )  # fmt: skip
    return Path(out_dir)
