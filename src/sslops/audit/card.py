"""The model card: one :class:`Document` built from the files in the bundle.

Known results get their own sections (metrics, fairness, per-group tables, ONNX
parity and quantization, gates, lineage). Every other JSON result of the evaluate
and finetune stages is rendered generically (its top-level numbers, and each list of
flat records as a table) and every PNG is shown, so results added to those stages
later appear in the card without a change here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sslops import __version__
from sslops.artifacts import null_as_nan
from sslops.audit.compliance import ANNEX_IV, DISCLAIMER, NIST, STATUS
from sslops.audit.document import UNDEFINED, Document
from sslops.config import FEW_VALIDATION_ROWS, SMALL_VALIDATION, AuditConfig, Config
from sslops.data.datacard import few_class_note, label_note
from sslops.gaps import WORST_OFF, lowest_rate

SPECIFIC = {
    "evidence/evaluate/metrics.json", "evidence/finetune/finetune.json",
    "evidence/pretrain/summary.json", "evidence/export/export.json",
    "evidence/prepare/datacard.json",
}  # fmt: skip
# Each figure's caption is also its alternative text: it says what is plotted, not the file.
_CAPTIONS = {
    "evidence/evaluate/roc.png": "ROC curves on the test split",
    "evidence/evaluate/selection_rate.png": "Selection rate by {sensitive}, test split",
    "evidence/evaluate/label_efficiency.png": "Label efficiency: test ROC AUC by share of "
    "training labels used, SSL models and supervised baselines",
    "evidence/finetune/pareto.png": "Fairness candidates: validation accuracy against the "
    "fairness gap, with the Pareto front, the policy limit and the selected candidate",
    "evidence/pretrain/loss.png": "Self-supervised pretraining loss",
    "evidence/pretrain/knn.png": "Online kNN accuracy of the embedding during pretraining",
    "evidence/prepare/datacard_groups.png": "Positive-label rate by sensitive group, "
    "training split",
    "evidence/prepare/datacard_missing.png": "Share of missing values by column, training split",
}
_MAX_ROWS = 40
DEFAULT_INTENDED_USE = AuditConfig.model_fields["intended_use"].default


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return "0" if value == 0 else f"{value:.4f}" if abs(value) >= 1e-3 else f"{value:.2e}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _undefined_in_figure(cfg: Config, name: str) -> str:
    """Why a figure's numbers hold n/a: a group's value is undefined, not zero."""
    if name == "evidence/evaluate/selection_rate.png":
        return (f"{UNDEFINED} in these numbers: the group has fewer than "
                f"{cfg.evaluate.min_group_rows} test rows (evaluate.min_group_rows), so no rate "
                "is measured for it (it would be noise; 'not shown' in the per-group tables "
                "above) and no bar is drawn.")  # fmt: skip
    return f"{UNDEFINED} in these numbers: undefined (no rows to measure it on), and not drawn."


def _names(value: Any) -> str:
    """'sex' or ['sex', 'race'] as the card's text: 'sex', 'race'."""
    items = value if isinstance(value, list) else [value]
    return ", ".join(f"'{item}'" for item in items)


def _load(bundle: Path, name: str) -> dict[str, Any]:
    path = bundle / name
    if not path.is_file():
        return {}
    found = json.loads(path.read_text(encoding="utf-8"))
    return null_as_nan(found) if name.startswith("evidence/evaluate/") else found


def _is_flat(record: Any) -> bool:
    return isinstance(record, dict) and all(
        isinstance(v, str | int | float | bool) or v is None for v in record.values()
    )


def _generic_json(doc: Document, name: str, payload: Any) -> None:
    """Top-level scalars as one table; each list (or mapping) of flat records as another."""
    doc.heading(f"Result: {name.removeprefix('evidence/')}")
    if not isinstance(payload, dict):
        doc.paragraph(f"{type(payload).__name__} with {len(payload)} entries; see the file.")
        return
    scalars = [[k, _fmt(v)] for k, v in payload.items() if _is_flat({k: v})]
    if scalars:
        doc.table(["field", "value"], scalars[:_MAX_ROWS])
    for key, value in payload.items():
        records = list(value.values()) if isinstance(value, dict) else value
        labels = list(value) if isinstance(value, dict) else None
        if isinstance(records, list) and records and all(_is_flat(r) for r in records):
            header = list(dict.fromkeys(k for r in records for k in r))
            rows = [[_fmt(r.get(h)) for h in header] for r in records[:_MAX_ROWS]]
            if labels:
                header, rows = (
                    [key, *header],
                    [[lab, *r] for lab, r in zip(labels, rows, strict=False)],
                )
            doc.paragraph(
                f"{key}:"
                + (f" first {_MAX_ROWS} of {len(records)}" if len(records) > _MAX_ROWS else "")
            )
            doc.table(header, rows)


POSTPROCESSING = "evidence/finetune/postprocessing.json"


def _threshold_rule(operation: Any) -> Any:
    """fairlearn's ThresholdOperation text, ``[>0.30711116590620846]``, with its number as
    the card's others: ``score > 0.3071``; any other value as it is."""
    text = str(operation)
    if len(text) > 3 and text[0] == "[" and text[1] in "<>" and text[-1] == "]":
        try:
            return f"score {text[1]} {_fmt(float(text[2:-1]))}"
        except ValueError:
            pass
    return operation


def _postprocessing_json(doc: Document, payload: Any) -> None:
    """The ThresholdOptimizer's rules per group, rounded as the card's other tables; the
    artifact's file keeps them exact for evaluate, which replays them."""
    rules = payload.get("thresholds") if isinstance(payload, dict) else None
    if not isinstance(rules, dict) or not rules:
        _generic_json(doc, POSTPROCESSING, payload)
        return
    rounded = {
        group: {k: _threshold_rule(v) if k.startswith("operation") else v for k, v in rule.items()}
        if isinstance(rule, dict) else rule
        for group, rule in rules.items()
    }  # fmt: skip
    _generic_json(doc, POSTPROCESSING, {**payload, "thresholds": rounded})
    doc.paragraph(
        f"The rules' thresholds are rounded here; evaluate replays the exact ones in {POSTPROCESSING}."
    )


def _metrics_sections(doc: Document, cfg: Config, metrics: dict[str, Any], deployed: str) -> None:
    sensitive = metrics.get("sensitive", cfg.data.sensitive[0] if cfg.data.sensitive else "")
    doc.heading(f"Test metrics ({_fmt(metrics.get('rows', 0))} rows)")
    doc.table(
        ["model", "accuracy", "ROC AUC", f"DP diff. ({sensitive})", f"EO diff. ({sensitive})"],
        [[n + (f" ({m['flag']})" if m.get("flag") else ""),
          *(_fmt(m.get(k)) for k in ("accuracy", "roc_auc", "dp_difference", "eo_difference"))]
         for n, m in metrics.get("models", {}).items()],
    )  # fmt: skip
    majority = metrics.get("majority_class_accuracy")
    doc.paragraph(
        "Both fairness gaps are shown for every model: when base rates differ between groups, "
        "demographic parity and equalized odds cannot both be near zero."
        + (f" Always predicting the majority class scores accuracy {_fmt(majority)} here."
           if isinstance(majority, float) else "")
    )  # fmt: skip
    model = metrics.get("models", {}).get(deployed, {})
    every = model.get("group_intervals", {})
    for column, groups in model.get("by_group", {}).items():
        if not isinstance(groups, dict):
            continue
        doc.heading(f"Per-group metrics of '{deployed}' by {column}")
        least = cfg.evaluate.min_group_rows
        keys = [k for k in _GROUP_COLUMNS if any(k in r for r in groups.values())]
        intervals = every.get(column, {}) if isinstance(every, dict) else {}
        doc.table(
            ["group", "rows", *(_GROUP_COLUMNS[k] for k in keys)],
            [[g, _fmt(int(r.get("count", 0))),
              *([f"not shown (< {least} rows)"] * len(keys) if r.get("count", 0) < least else
                [_fmt(r.get(k)) + _interval(intervals.get(g, {}), k) for k in keys])]
             for g, r in groups.items()],
        )  # fmt: skip
    if every:
        doc.paragraph("Test split; 95% bootstrap intervals in brackets, over the same row "
                      "resamples as the overall intervals.")  # fmt: skip


_GROUP_COLUMNS = {"accuracy": "accuracy", "roc_auc": "ROC AUC", "selection_rate": "selection rate",
                  "tpr": "TPR", "fpr": "FPR", "ece": "calibration error"}  # fmt: skip
_GAP_KEYS = {
    "demographic_parity": ("dp_difference", "demographic_parity_difference"),
    "equalized_odds": ("eo_difference", "equalized_odds_difference"),
    "equal_opportunity": ("eopp_difference", "equal_opportunity_difference"),
}
SMALL_GROUP_ROWS = 50


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, float) and value == value else _fmt(value)


def _interval(intervals: dict[str, Any], key: str) -> str:
    bounds = intervals.get(key)
    if not bounds or any(not isinstance(b, float) or b != b for b in bounds):
        return ""  # none measured, or undefined in more than 5% of the resamples
    return f" [{_fmt(bounds[0])}, {_fmt(bounds[1])}]"


def _worst_off(groups: dict[str, Any], key: str, min_rows: int) -> str:
    low = lowest_rate(groups, key, min_rows)
    return "n/a" if low is None else f"{low[0]} ({_fmt(low[1])})"


# A group's calibration error this much above the unmitigated model's is reported.
CALIBRATION_WORSE = 0.02


def _calibration_by_group(
    doc: Document, cfg: Config, metrics: dict[str, Any], deployed: str, base: str = "ssl"
) -> list[str]:
    """The groups (of every column and the crossing, with evaluate.min_group_rows rows or
    more) whose test calibration error under the deployed model is more than
    :data:`CALIBRATION_WORSE` above the unmitigated ``base`` model's: a mitigation that
    moves scores to close a gap can leave one group's scores far from its outcome rates,
    and the card said nothing of it."""
    models = metrics.get("models", {})
    if deployed == base or base not in models or deployed not in models:
        return []
    mine, theirs = models[deployed].get("by_group", {}), models[base].get("by_group", {})
    worse = []
    for column, groups in mine.items():
        for group, row in groups.items() if isinstance(groups, dict) else ():
            before = theirs.get(column, {}).get(group, {}).get("ece")
            after = row.get("ece")
            if (row.get("count", 0) >= cfg.evaluate.min_group_rows
                    and isinstance(after, float) and isinstance(before, float)
                    and after - before > CALIBRATION_WORSE):  # fmt: skip
                worse.append(f"{group} by {column}: {_fmt(before)} -> {_fmt(after)}")
    if not worse:
        doc.paragraph(
            f"Calibration within groups: no group's test calibration error (ECE) under "
            f"'{deployed}' is more than {CALIBRATION_WORSE:g} above the unmitigated '{base}' "
            "model's."
        )
        return []
    text = (
        f"Calibration within groups: mitigation worsened the test calibration error (ECE, "
        f"'{base}' -> '{deployed}', by more than {CALIBRATION_WORSE:g}) of {len(worse)} "
        f"group(s): {'; '.join(worse)}. Scores of these groups are further from their outcome "
        "rates; do not read them as probabilities."
    )
    doc.paragraph(text)
    return [text]


def _policy_test_gap(
    metrics: dict[str, Any], model: dict[str, Any], fairness: dict[str, Any], metric_key: str
) -> tuple[list[str], str, Any, dict[str, Any]]:
    """The policy's columns (``finetune.fairness.sensitive``), the one whose test gap is the
    largest, that gap and its intervals: the selection compared the largest gap over every
    policy column, and the card showed the first data.sensitive column's whatever the policy
    named (a policy on race was reported with the gap by sex)."""
    first = str(metrics.get("sensitive", ""))
    named = fairness.get("sensitive")
    policy_columns = [str(c) for c in named] if isinstance(named, list) and named else [first]
    gaps, every = model.get("gaps", {}), model.get("gap_intervals", {})
    measured = [c for c in policy_columns if isinstance(gaps.get(c, {}).get(metric_key), float)]
    if not measured:  # no per-column gaps: the overall (first column's) figures
        return policy_columns, first, model.get(metric_key), model.get("intervals", {})
    # A policy column whose gap is undefined (null or NaN: fewer than two groups to compare)
    # leaves the largest unknown, as in the selection: the card had shown the largest of the
    # others as the policy's, 'holding for each' (found by the multisens review).
    undefined = [c for c in policy_columns if c in gaps
                 and not _is_number(gaps[c].get(metric_key))]  # fmt: skip
    if undefined:
        return policy_columns, undefined[0], float("nan"), {}
    column = max(measured, key=lambda c: gaps[c][metric_key])
    intervals = every.get(column) or (model.get("intervals", {}) if column == first else {})
    return policy_columns, column, gaps[column][metric_key], intervals


def _is_number(value: Any) -> bool:
    """A defined figure: a float that is not NaN (null in the JSON is undefined)."""
    return isinstance(value, float) and value == value


def _fairness_section(
    doc: Document, cfg: Config, metrics: dict[str, Any], finetune: dict[str, Any],
    shortcuts: dict[str, Any], deployed: str,
) -> list[str]:  # fmt: skip
    """Sensitive attributes, the policy against its test interval, every column's gaps and
    the shortcut tests of the deployed model; returns what belongs under Limitations."""
    limits: list[str] = []
    model = metrics.get("models", {}).get(deployed, {})
    columns = ", ".join(cfg.data.sensitive)
    doc.heading(f"Fairness and sensitive attributes of '{deployed}'")
    if cfg.modality == "tabular" and cfg.data.sensitive:
        if cfg.prepare.sensitive_as_features:
            text = (
                f"The deployed model takes the sensitive attributes ({columns}) as inputs "
                "(prepare.sensitive_as_features: true): it needs them at prediction time, as "
                "the post-processing (ThresholdOptimizer) rows do, and its decisions can differ "
                "between groups for the same other values (see the counterfactual test below). "
                "prepare.sensitive_as_features: false trains every model without them."
            )
            limits.append(f"The deployed model uses {columns} as inputs (disparate treatment "
                          "where the law forbids it).")  # fmt: skip
        else:
            text = (f"The sensitive attributes ({columns}) are not model inputs: they are used "
                    "only to train under the fairness policy and to evaluate.")  # fmt: skip
        doc.paragraph(text)
    fairness = finetune.get("fairness", {})
    constraint = fairness.get("constraint")
    if constraint in _GAP_KEYS and fairness.get("max_gap") is not None:
        metric_key, candidate_key = _GAP_KEYS[constraint]
        limit = float(fairness["max_gap"])
        chosen: dict[str, Any] = next((c for c in fairness.get("candidates", [])
                                       if c.get("name") == fairness.get("selected")), {})  # fmt: skip
        policy_columns, column, test_gap, intervals = _policy_test_gap(metrics, model, fairness,
                                                                       metric_key)  # fmt: skip
        bounds = intervals.get(metric_key)
        measured_on = fairness.get("gap_rows", {}).get(constraint, "validation")
        over = (f" (the largest over {', '.join(policy_columns)}: the policy holds for each, "
                f"and '{column}' attains it)" if len(policy_columns) > 1 else "")  # fmt: skip
        if len(policy_columns) > 1 and not _is_number(test_gap):
            over = (
                f" (undefined by '{column}': fewer than two of its groups have the rate "
                f"compared, so the largest over {', '.join(policy_columns)} is unknown)"
            )
        text = (
            f"Policy: {constraint} difference <= {limit:g} on "
            f"{', '.join(repr(c) for c in policy_columns)}. The deployed "
            f"candidate ({fairness.get('selected')}) measured "
            f"{_fmt(null_as_nan(chosen.get(candidate_key)))} "
            f"on {measured_on}; on the test split {_fmt(test_gap)}{over} (95% bootstrap interval"
            f"{_interval(intervals, metric_key) or ': n/a'})."
        )
        if bounds and bounds[1] > limit:
            text += (f" The interval reaches past {limit:g}: that the policy holds on new data "
                     "is not established at 95% confidence.")  # fmt: skip
            limits.append(f"The {constraint} policy ({limit:g}) is not established at 95% "
                          f"confidence on new data (test interval on '{column}' up to "
                          f"{_fmt(bounds[1])}).")  # fmt: skip
        doc.paragraph(text)
        other = [k for k in ("dp_difference", "eo_difference") if k != metric_key]
        of_column = model.get("gaps", {}).get(column) or model
        for key in other:
            if isinstance(of_column.get(key), float) and of_column[key] > 2 * limit:
                limits.append(f"The policy constrains {constraint}; the other gap "
                              f"({key.removesuffix('_difference').upper()}) on '{column}' is "
                              f"{_fmt(of_column[key])} (when base rates differ both cannot be "
                              "near zero).")  # fmt: skip
    gaps = model.get("gaps", {})
    if gaps:
        first = metrics.get("sensitive")
        every = model.get("gap_intervals", {})
        least = cfg.evaluate.min_group_rows
        doc.table(
            ["sensitive column", "DP difference", "EO difference", "equal-opportunity difference",
             *WORST_OFF.values()],
            [[column, *(_fmt(g.get(k)) + _interval(every.get(column) or (
                model.get("intervals", {}) if column == first else {}), k)
                        for k in ("dp_difference", "eo_difference", "eopp_difference")),
              *(_worst_off(model.get("by_group", {}).get(column, {}), key, least)
                for key in WORST_OFF)]
             for column, g in gaps.items()],
        )  # fmt: skip
        doc.paragraph("Test split; 95% bootstrap intervals in brackets. Each difference is the "
                      "largest minus the smallest group rate (EO: the larger of the TPR and FPR "
                      "differences); the last columns name the group with the lowest rate. "
                      "Per-group rates: the tables below.")  # fmt: skip
        undefined = [f"{column}: {text}" for column, notes in (model.get("gap_notes") or {}).items()
                     for text in notes.values()]  # fmt: skip
        if undefined:  # a gap shown n/a: why, so that no reader takes it for no gap
            doc.paragraph("Gaps not measured as such (n/a: fewer than two groups to compare): "
                          + "; ".join(undefined) + ".")  # fmt: skip
        left_out = model.get("small_groups") or {}
        if left_out:
            doc.paragraph(
                f"Left out of every gap (fewer than {cfg.evaluate.min_group_rows} test rows, "
                "evaluate.min_group_rows; their rates are noise and would decide the gap): "
                + "; ".join(f"{', '.join(names)} by {column}" for column, names in left_out.items())
                + ". The fine-tuning selection leaves such groups out of its validation gaps too."
            )  # fmt: skip
    small = [(column, group, int(r.get("count", 0)))
             for column, groups in model.get("by_group", {}).items() if isinstance(groups, dict)
             for group, r in groups.items() if int(r.get("count", 0)) < SMALL_GROUP_ROWS]  # fmt: skip
    if small:
        limits.append(f"{len(small)} group(s) have fewer than {SMALL_GROUP_ROWS} test rows "
                      f"(e.g. {small[0][1]} by {small[0][0]}: {small[0][2]}); their metrics are "
                      "uncertain.")  # fmt: skip
    limits += _calibration_by_group(doc, cfg, metrics, deployed)
    permutation, counterfactual = shortcuts.get("permutation"), shortcuts.get("counterfactual")
    if isinstance(permutation, dict) and isinstance(counterfactual, dict):
        threshold = shortcuts.get("reliance_threshold")
        rows = []
        for column in dict.fromkeys([*permutation, *counterfactual]):
            perm, flip = permutation.get(column, {}), counterfactual.get(column, {})
            bounds = perm.get("prediction_flip_rate_interval")
            ranged = f" [{_pct(bounds[0])}, {_pct(bounds[1])}]" if bounds else ""
            rows.append([column, _pct(perm.get("prediction_flip_rate")) + ranged,
                         _pct(flip.get("changed_share")), _fmt(perm.get("flagged"))
                         + (" (uncertain)" if perm.get("flag_uncertain") else "")])  # fmt: skip
            if perm.get("flagged"):
                limits.append(
                    f"The model relies on '{column}': shuffling it changes "
                    f"{_pct(perm.get('prediction_flip_rate'))} of decisions (flag above "
                    f"{_pct(threshold)})"
                    + (f"; setting only '{column}' to another value changes "
                       f"{_pct(flip['changed_share'])}." if "changed_share" in flip else ".")
                )  # fmt: skip
            elif (isinstance(flip.get("changed_share"), float) and isinstance(threshold, float)
                  and flip["changed_share"] > threshold):  # fmt: skip
                # A shuffle seldom moves a row out of a majority group (85% White on Adult):
                # the permutation flag missed a model whose decisions change for 15.6% of the
                # rows when only race is set to another value.
                limits.append(
                    f"The model's decisions depend directly on '{column}': setting only "
                    f"'{column}' to another value changes {_pct(flip['changed_share'])} of "
                    f"decisions (above {_pct(threshold)}), though shuffling it changes "
                    f"{_pct(perm.get('prediction_flip_rate'))} (a shuffle seldom moves a row "
                    "out of a majority group); disparate treatment where the law forbids it."
                )
        doc.paragraph(
            "Shortcut tests on the test split: the share of decisions that change when the "
            "column is shuffled across rows (permutation, with its 95% bootstrap interval "
            f"over test rows; flagged above {_pct(threshold)}, uncertain when the interval "
            "holds that threshold), and when only a sensitive attribute is set to another value "
            "with everything else kept (counterfactual). The counterfactual measures direct "
            "use of the attribute only: its correlated proxies keep their values, so use "
            "through them is not measured. Not flagged means only that these edits changed "
            "few decisions; it is not evidence that the model is fair (the gaps above are "
            "the outcome measures)."
        )
        doc.table(["column", "permutation: decisions changed", "counterfactual: decisions "
                   "changed", "flagged (permutation)"], rows)  # fmt: skip
        unused = [c for c, flip in counterfactual.items()
                  if isinstance(flip, dict) and flip.get("model_input") is False]  # fmt: skip
        if unused:
            doc.paragraph(
                f"{', '.join(unused)}: not model input(s), so their counterfactual share is 0 by "
                "construction and says nothing about proxies among the inputs (the permutation "
                "rows of evaluate.proxies do)."
            )  # fmt: skip
    return limits


def _ood_section(doc: Document, cfg: Config, metrics: dict[str, Any], ood: dict[str, Any]) -> None:
    """Each model on the out-of-distribution split beside the test split, or why there is none."""
    doc.heading("Out-of-distribution split")
    if not ood.get("models"):
        doc.paragraph(
            "Not evaluated: no out-of-distribution split is configured (prepare.ood, a row "
            "predicate such as `native-country != United-States`, holds such rows out of training and scores them "
            "apart)." if cfg.modality == "tabular" else "Not evaluated: no out-of-distribution "
            "split is configured."
        )  # fmt: skip
        return
    test = metrics.get("models", {})
    keys = ("accuracy", "roc_auc", "dp_difference", "eo_difference")
    rows = []
    sensitive = metrics.get("sensitive", "")
    undefined = []
    for name, m in ood["models"].items():
        before = test.get(name, {})
        rows.append([name, *(
            _fmt(m.get(k)) + (f" ({m[k] - before[k]:+.4f})" if _defined(m.get(k))
                              and _defined(before.get(k)) else "")
            for k in keys)])  # fmt: skip
        notes = (m.get("gap_notes") or {}).get(sensitive, {})
        undefined += [f"{name}: {notes[k]}" for k in keys if k in notes]
    what = (f"{ood['split']}: {ood['corruptions']}" if ood.get("corruptions")
            else f"prepare.ood: `{cfg.prepare.ood}`")  # fmt: skip
    doc.paragraph(f"{_fmt(ood.get('rows'))} rows ({what}); change against the test split in "
                  "brackets.")  # fmt: skip
    doc.table(["model", "accuracy", "ROC AUC", f"DP diff. ({sensitive})",
               f"EO diff. ({sensitive})"], rows)  # fmt: skip
    if undefined:  # n/a, or one half of EO: why (a split of few rows often lacks a group)
        doc.paragraph("Gaps not measured as such on this split: " + "; ".join(undefined) + ".")
    shift, compared = ood.get("shift") or {}, ood.get("compared_with_test") or {}
    notes = []
    if isinstance(shift.get("domain_auc"), float):
        notes.append(f"A classifier tells these rows from the test rows with ROC AUC "
                     f"{shift['domain_auc']:.3f} (0.5: no shift)" + (
                         f", {shift['domain_auc_without_predicate']:.3f} without the columns "
                         "that define the split" if isinstance(
                             shift.get("domain_auc_without_predicate"), float) else "") + ".")  # fmt: skip
    for name, row in compared.items():
        parts = [f"{key.replace('roc_auc', 'ROC AUC')} {r['difference']:+.4f} "
                 f"[{r['difference_interval'][0]:+.3f}, {r['difference_interval'][1]:+.3f}]"
                 for key, r in row.items()
                 if r.get("difference_interval") and r["difference_interval"][0] == r["difference_interval"][0]]  # fmt: skip
        if parts:
            notes.append(f"{name}, OOD minus test (95% bootstrap interval): {', '.join(parts)}.")
    if notes:
        doc.paragraph(" ".join(notes))


def _defined(value: Any) -> bool:
    """A float that is a number (not NaN): a change against it means something."""
    return isinstance(value, float) and value == value


def _export_section(doc: Document, exported: dict[str, Any]) -> None:
    doc.heading("ONNX export")
    parity = exported["parity"]
    batches = ", ".join(f"{b}: {d:.1e}" for b, d in parity.get("batch_max_abs_diff", {}).items())
    takes = (
        f"takes {exported['inputs_description']}" if "inputs_description" in exported
        else f"takes the raw columns ({len(exported.get('inputs', []))} inputs; imputation, "
        "one-hot and scaling inside the graph)"
    )  # fmt: skip
    doc.paragraph(
        f"model.onnx (opset {exported['opset']}, {exported['bytes']:,} bytes) {takes} "
        f"and matches the torch model on {parity['rows']:,} test rows: max "
        f"|difference| {parity['max_abs_diff']:.2e}, identical labels: "
        f"{parity['labels_identical']}; per batch size {batches}."
    )
    quant = exported.get("quantization")
    if quant:
        doc.table(
            ["file", "method", "accuracy fp32", "accuracy int8", "change (points)", "labels agree"],
            [[quant["file"], quant["method"], _fmt(quant["accuracy_fp32"]),
              _fmt(quant["accuracy_int8"]), f"{quant['accuracy_change_points']:+.2f}",
              _fmt(quant["label_agreement"])]],
        )  # fmt: skip


def _gates_section(doc: Document, gates: dict[str, Any]) -> None:
    doc.heading(f"Policy gates: {gates['overall']}")
    rows = []
    for r in gates["results"]:
        note = r.get("reason", "")
        if r.get("override") and r["status"] == "overridden":
            o = r["override"]
            note = f"accepted by {o['approved_by']}: {o['justification']}"
        rows.append(
            [r["gate"], r["measures"], _fmt(r["limit"]), _fmt(r["value"]), r["status"], note]
        )
    doc.table(["gate", "measures", "limit", "value", "status", "note"], rows)


def _baseline_limits(metrics: dict[str, Any], finetune: dict[str, Any], deployed: str) -> list[str]:
    """A deployed model no more accurate than a constant answer, and a selection made on
    too few validation rows to tell candidates apart."""
    limits = []
    accuracy = metrics.get("models", {}).get(deployed, {}).get("accuracy")
    majority = metrics.get("majority_class_accuracy")
    if isinstance(accuracy, float) and isinstance(majority, float) and accuracy <= majority:
        limits.append(
            f"The deployed model's test accuracy ({_fmt(accuracy)}) is not above always "
            f"predicting the majority class ({_fmt(majority)}): as a classifier at this "
            "threshold it adds nothing over a constant answer."
        )
    rows = finetune.get("validation_rows")
    if isinstance(rows, int) and rows < FEW_VALIDATION_ROWS:
        limits.append(SMALL_VALIDATION.format(rows=_fmt(rows)).capitalize() + ".")
    return limits


def _image_line(run: dict[str, Any]) -> str:
    """The image and whether its reference pins it (run.json's ``image_pinned_by``)."""
    image = run.get("image")
    if not image:
        return "n/a (not run in a container)"
    pinned = {
        "digest": "pinned by digest: exactly this image",
        "tag": "a tag, not a digest: whatever was last pushed under it; pin image.digest",
    }.get(run.get("image_pinned_by") or "")
    return f"{image} ({pinned})" if pinned else str(image)


def _compliance_section(doc: Document, rows: list[dict[str, Any]]) -> None:
    """compliance.json as a table: what each file shows, what is absent and why, and what is
    to be provided by the provider, under a statement that this is no conformity finding."""
    doc.heading("EU AI Act and NIST AI RMF (MEASURE): where the evidence is")
    doc.paragraph(
        f"{DISCLAIMER} Status: " + "; ".join(f"{k}: {v}" for k, v in STATUS.items()) + "."
    )
    label = {ANNEX_IV: "Annex IV ", NIST: ""}
    doc.table(
        ["item", "status", "evidence in this bundle (what it shows)",
         "to be provided by the provider"],
        [[f"{label.get(r['framework'], '')}{r['id']}: {r['requirement']}", r["coverage"],
          "; ".join([*(f"{p}: {what}" for p, what in r["evidence_shows"].items()),
                     *(f"absent: {p} ({why})" for p, why in r["absent"].items())]) or "—",
          r["provider_supplies"] or "—"] for r in rows],
    )  # fmt: skip


def build_card(cfg: Config, bundle: Path, context: dict[str, Any], evidence: list[str]) -> Document:
    """``context`` holds gates, lineage, run, signing, changelog and compliance records."""
    metrics = _load(bundle, "evidence/evaluate/metrics.json")
    finetune = _load(bundle, "evidence/finetune/finetune.json")
    pretrain = _load(bundle, "evidence/pretrain/summary.json")
    exported = _load(bundle, "evidence/export/export.json")
    card = _load(bundle, "evidence/prepare/datacard.json")
    deployed = exported.get("model", cfg.export.model)
    signing = context["signing"]

    doc = Document(cfg.audit.title)
    doc.bullets([
        f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} by sslops {__version__}",
        f"Owner: {cfg.audit.owner}"
        + (" (set audit.owner: the person or team accountable for this model)"
           if cfg.audit.owner == "unspecified" else ""),
        f"Intended use: {cfg.audit.intended_use}"
        + (" (sslops' default text: set audit.intended_use to the intended purpose in the "
           "provider's words)" if cfg.audit.intended_use == DEFAULT_INTENDED_USE else ""),
        f"Deployed model: '{deployed}' (ONNX sha256 {exported.get('onnx_sha256', '?')[:16]}…)",
        f"Decision threshold: {metrics.get('threshold', cfg.evaluate.threshold)}",
        *([f"Positive class: '{metrics['positive_class']}' "
           f"({metrics.get('positive_class_source', '')})"] if "positive_class" in metrics
          else []),
        "Bundle signature: " + (f"Ed25519, key {signing['key_fingerprint']}" if signing["signed"]
                                else "none (no signing key configured); hashes only"),
    ])  # fmt: skip
    _gates_section(doc, context["gates"])
    if pretrain or finetune:
        doc.heading("Training")
        items = []
        if pretrain:
            # Pretraining reads the training split and the rows without a label (the counts
            # fine-tuning reports); it uses no label, but its rows need not lack one.
            rows, train_rows = pretrain.get("rows"), finetune.get("train_rows")
            unlabeled = finetune.get("unlabeled_rows") or 0
            if train_rows is not None and rows == train_rows + unlabeled:
                read = (
                    f"the {_fmt(rows)} training rows without their labels"
                    if not unlabeled
                    else f"{_fmt(rows)} rows ({_fmt(train_rows)} training rows without their "
                    f"labels and {_fmt(unlabeled)} rows without a label)"
                )
            else:
                read = f"{_fmt(rows)} rows without their labels"
            items.append(
                f"Self-supervised pretraining: {str(pretrain.get('objective', '?')).upper()} on "
                f"{read}, {_fmt(pretrain.get('steps'))} steps, "
                f"final loss {_fmt(pretrain.get('final_loss'))}."
            )
            fair = pretrain.get("fairness", {})
            method = fair.get("method", "none")
            how = method if method == "none" else f"{method}, weight {_fmt(fair.get('weight'))}"
            for column, aucs in (pretrain.get("sensitive_probe_auc") or {}).items():
                scores = ", ".join(f"{_fmt(v)} ({probe})" for probe, v in aucs.items())
                items.append(
                    f"Sensitive-attribute probe: '{column}' predicted from the frozen embedding "
                    f"with test ROC AUC {scores} (fairness-aware pretraining: {how})."
                )
        if finetune:
            items.append(
                f"Fine-tuning used {_fmt(finetune.get('labels_used'))} labels "
                f"({_fmt(finetune.get('label_fraction'))} of {_fmt(finetune.get('train_rows'))} "
                "training rows)"
                + (
                    f"; {_fmt(finetune['unlabeled_rows'])} rows without a label were used where "
                    "no label is needed (demographic-parity penalties and gap estimate, "
                    "evidence bins)."
                    if finetune.get("unlabeled_rows")
                    else "."
                )
            )
            fairness = finetune.get("fairness", {})
            if fairness:
                items.append(
                    f"Fairness policy: constraint {fairness.get('constraint')} for "
                    f"{_names(fairness.get('sensitive', ''))}, max gap {fairness.get('max_gap')}; "
                    "met on validation: "
                    f"{fairness.get('policy_met_on_validation')} (gap measured on "
                    f"{fairness.get('gap_rows', {}).get(fairness.get('constraint'), 'validation')}"
                    "). Deployed as "
                    f"'mitigated': {fairness.get('selected')} "
                    f"({fairness.get('selected_description') or fairness.get('selected_mechanism')})."
                    + (
                        f" Selected on the {fairness['gap_confidence']:.0%} upper confidence "
                        "bound of each candidate's gap, not the measured gap."
                        if fairness.get("gap_confidence")
                        else ""
                    )
                )
            if fairness.get("postprocessing_skipped"):
                items.append(fairness["postprocessing_skipped"] + ".")
        doc.bullets(items)
    shortcuts = _load(bundle, "evidence/evaluate/shortcuts.json")
    limits: list[str] = []
    if metrics:
        _metrics_sections(doc, cfg, metrics, deployed)
        limits = _fairness_section(doc, cfg, metrics, finetune, shortcuts, deployed)
        _ood_section(doc, cfg, metrics, _load(bundle, "evidence/evaluate/ood.json"))
    limits += _baseline_limits(metrics, finetune, deployed)
    sensitive = metrics.get("sensitive", "")
    order = ("evidence/evaluate/", "evidence/finetune/", "evidence/pretrain/", "evidence/")
    if any(name.endswith(".png") for name in evidence):
        doc.heading("Figures")  # not under the section before them
    for name in sorted(
        evidence, key=lambda n: next(i for i, p in enumerate(order) if n.startswith(p))
    ):
        if name.endswith(".png"):
            caption = _CAPTIONS.get(name, "").format(sensitive=sensitive) or (
                name.removeprefix("evidence/").removesuffix(".png").replace("_", " ")
            )
            doc.image(bundle / name, caption, ref=name)
            data = doc.blocks[-1][4]
            if data and any(UNDEFINED in row for row in data[1]):  # why, as for the gaps
                doc.paragraph(_undefined_in_figure(cfg, name))
    # A JSON beside a .safetensors of the same name describes weights, not results.
    weights = {
        f"evidence/{s['stage']}/{f.removesuffix('.safetensors')}.json"
        for s in context["lineage"]["stages"] for f in s["files"] if f.endswith(".safetensors")
    }  # fmt: skip
    for name in evidence:
        if (
            name.endswith(".json")
            and name not in SPECIFIC | weights
            and not (name == "evidence/evaluate/shortcuts.json" and cfg.modality == "tabular")
            and name != "evidence/evaluate/ood.json"
            and name.startswith(("evidence/evaluate/", "evidence/finetune/"))
        ):
            if name == POSTPROCESSING:
                _postprocessing_json(doc, _load(bundle, name))
            else:
                _generic_json(doc, name, _load(bundle, name))
    candidates = finetune.get("fairness", {}).get("candidates")
    if candidates:  # the sweep the policy chose from
        # null_as_nan: an undefined gap (null) shows n/a, not "None"
        _generic_json(doc, "evidence/finetune/finetune.json (fairness candidates)",
                      {"candidates": null_as_nan(candidates)})  # fmt: skip
    if card.get("splits"):
        doc.heading("Data")
        doc.table(
            ["split", "rows", "positive rate"],
            [
                [n, _fmt(s.get("rows")), _fmt(s.get("positive_rate"))]
                for n, s in card["splits"].items()
            ],
        )
        suspects = card.get("identifier_like_train") or {}
        if suspects:
            listed = ", ".join(
                f"'{c}' ({i['distinct']:,} distinct values in {i['rows']:,} rows)"
                for c, i in suspects.items()
            )
            doc.paragraph(
                f"Columns that look like identifiers or free text: {listed}. They were left "
                "out of the features (the model neither reads them nor stores their values); "
                "declare them in data.identifiers or data.text."
            )
        label = str(card.get("label", "?"))
        notes = (
            label_note(label, card.get("label_values")),  # more than two values: one-vs-rest
            few_class_note(label, card.get("few_class_rows")),  # a split with < 10 of a class
        )
        for note in filter(None, notes):
            doc.paragraph(note[0].upper() + note[1:] + ".")
        doc.paragraph("Full data card: evidence/prepare/datacard.md in this bundle.")
    if exported:
        _export_section(doc, exported)
    changelog = context.get("changelog")
    if changelog:
        doc.heading("Changes since the previous bundle")
        doc.paragraph(
            f"Previous bundle {changelog['previous']['path']} (manifest sha256 "
            f"{changelog['previous']['manifest_sha256'][:16]}…, verification: "
            f"{changelog['previous']['verification']})."
        )
        doc.table(
            ["model", "metric", "previous", "now", "change"],
            [[c["model"], c["metric"], _fmt(c["previous"]), _fmt(c["now"]), _fmt(c["change"])]
             for c in changelog["metrics"]],
        )  # fmt: skip
        if changelog["notes"]:
            doc.bullets(changelog["notes"])
    doc.heading("Lineage")
    doc.table(
        ["step", "sha256"],
        [[k, (v[:24] + "…") if isinstance(v, str) else ", ".join(f"{a} {b[:12]}…" for a, b in v.items())]
         for k, v in context["lineage"]["chain"].items()],
    )  # fmt: skip
    run = context["run"]
    doc.heading("Run and environment")
    doc.bullets([
        f"Executed by: {run['executed_by']}; KFP run id: {run.get('kfp_run_id') or 'n/a'}",
        f"Container image: {_image_line(run)}",
        "Environment: environment.json (Python and every package version); "
        "SBOM: sbom.cdx.json (CycloneDX 1.6).",
    ])  # fmt: skip
    _compliance_section(doc, context["compliance"])
    doc.heading("Limitations")
    doc.bullets([
        *limits,
        "Metrics are measured on one test split; they do not cover populations absent from it.",
        "Fairness is assessed only for the configured sensitive columns and their listed groups.",
        "Proxies of a sensitive attribute can remain among the other features.",
    ])  # fmt: skip
    return doc
