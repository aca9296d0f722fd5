"""Data card: what a reviewer needs to know about the prepared data, as JSON, Markdown, PNG.

Counts, rates and column statistics only: the card never quotes a row, and free-text
columns are described by counts, never by their values. A sensitive group (or crossing) of
fewer than ``evaluate.min_group_rows`` training rows shows its count and no positive rate:
with all of its few rows of one class, the rate would be each member's label.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sslops.data.canonicalize import cell_text, label_hits
from sslops.data.encoding import MISSING, OTHER
from sslops.markdown import md_cell

FEW_CLASS_ROWS = 10  # fewer rows of a class in a split (evaluate.min_group_rows): noise
RARE_SHARE = 0.001  # a category below this share of the train rows (or 5 rows) is rare
IDENTIFIER_SHARE = 0.5  # a column with at least this share of distinct values looks like an id
IDENTIFIER_MIN_ROWS = 20
FIGURES = ("datacard_groups.png", "datacard_missing.png")
NOTED_LABEL_VALUES = 10  # the console note names at most this many negative label values
LISTED_LABEL_VALUES = 50  # the data card's Markdown, at most this many of each class


def _rate(target: pd.Series) -> float:
    return round(float(target.mean()), 4) if len(target) else 0.0


def _group_table(
    frame: pd.DataFrame, columns: list[str], target: pd.Series, min_rows: int
) -> list[dict[str, Any]]:
    """Rows and positive rate per group; a group of fewer than ``min_rows`` rows has a
    ``positive_rate`` of None (a small cell: its rate would disclose its members' labels)."""
    keys = [frame[c].astype("string").fillna("(missing)") for c in columns]
    rows = []
    for value, part in target.groupby(keys):
        names = value if isinstance(value, tuple) else (value,)
        group = " & ".join(str(v) for v in names)
        rate = _rate(part) if len(part) >= min_rows else None
        rows.append({"group": group, "rows": len(part), "positive_rate": rate})
    return sorted(rows, key=lambda r: (-r["rows"], r["group"]))


def label_values(labels: pd.Series, positive: Any) -> dict[str, dict[str, int]]:
    """Each distinct non-missing label value with its rows, by the class it is trained as:
    ``{"positive": {value: rows}, "negative": {value: rows}}``, the most frequent first.
    A label of more than two values is trained one-vs-rest: every other value is negative."""
    present = labels.dropna()
    hit = label_hits(present, positive).to_numpy(bool)

    def counts(values: pd.Series) -> dict[str, int]:
        found: dict[str, int] = {}
        for value, rows in values.value_counts().items():
            text = cell_text(value)
            found[text] = found.get(text, 0) + int(rows)
        return dict(sorted(found.items(), key=lambda item: (-item[1], item[0])))

    return {"positive": counts(present[hit]), "negative": counts(present[~hit])}


def one_vs_rest(values: dict[str, dict[str, int]] | None) -> bool:
    """Whether a label has more values than the two classes and some become the negative
    class unnamed: every value but ``data.positive`` does (values listed in
    ``data.positive`` were named, so two of them and one other value need no note)."""
    return len((values or {}).get("negative", {})) > 1


def label_note(label: str, values: dict[str, dict[str, int]] | None) -> str | None:
    """One line naming the values that count as the negative class, when more than one does
    (a third value such as 'unknown' or 'pending' would silently be a negative)."""
    if not values or not one_vs_rest(values):
        return None
    total = len(values["positive"]) + len(values["negative"])
    return (
        f"label {label!r} has {total:,} values: positive {_listed(values['positive'])}; "
        f"negative {_listed(values['negative'], NOTED_LABEL_VALUES)} — a value meaning "
        "'not labeled yet' should be empty instead"
    )


def few_class_rows(targets: dict[str, pd.Series]) -> dict[str, dict[str, int]]:
    """The splits (not ``ood``) holding fewer than :data:`FEW_CLASS_ROWS` rows of a class,
    with both counts: a hashed split is not stratified, so a rare class can nearly vanish
    from the validation split that model selection measures on."""
    few = {}
    for name, target in targets.items():
        positive = int(target.sum())
        counts = {"positive": positive, "negative": len(target) - positive}
        if name != "ood" and min(counts.values()) < FEW_CLASS_ROWS:
            few[name] = counts
    return few


def few_class_note(label: str, few: dict[str, dict[str, int]] | None) -> str | None:
    if not few:
        return None
    held = ", ".join(
        f"{name} {c['positive']:,} positive / {c['negative']:,} negative" for name, c in few.items()
    )
    return (
        f"label {label!r}: few rows of a class ({held}); the metrics and fairness gaps measured "
        "there (on validation: the model selection) rest on those rows; more labeled rows or a "
        "larger prepare.validation_fraction / prepare.test_fraction give the split more"
    )


def _listed(counts: dict[str, int], limit: int | None = None, form: str = "{!r}") -> str:
    """``'a' (1,376), 'b' (196)``: the first ``limit`` values and how many more there are."""
    shown = list(counts.items())[:limit]
    text = ", ".join(f"{form.format(value)} ({rows:,})" for value, rows in shown)
    more = len(counts) - len(shown)
    return text + (f" and {more:,} more" if more else "")


def _rare_categories(frame: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    limit = max(5, int(RARE_SHARE * len(frame)))
    rare = {}
    for column in columns:
        counts = frame[column].dropna().astype(str).value_counts()
        small = counts[counts < limit]
        if len(small):
            # Counts only: a level this rare is as good as a row, so its value is not quoted.
            rare[column] = {"levels": len(small), "rows": int(small.sum())}
    return rare


def _folded(frame: pd.DataFrame, levels: dict[str, list[str]]) -> dict[str, Any]:
    """Per categorical feature, the training rows whose value the encoding has no level for
    (seen in fewer than ``prepare.min_category_count`` rows, or beyond the
    ``prepare.max_categories`` most frequent): the model sees them all as ``__other__``."""
    folded = {}
    for column, kept in levels.items():
        values = frame[column].dropna().astype(str)
        other = ~values.isin(kept)
        if other.any():
            folded[column] = {
                "distinct": int(values.nunique()),
                "levels": len([v for v in kept if v not in (MISSING, OTHER)]),
                "rows": int(other.sum()),
                "share": round(float(other.sum()) / max(len(frame), 1), 4),
            }
    return folded


def identifier_like(frame: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    """Categorical columns whose values are (nearly) all distinct: an undeclared identifier or
    free text, which helps no model and carries personal data into one (the prepare stage
    leaves such a column out of the features, so no model reads it or stores its values)."""
    found = {}
    for column in columns:
        values = frame[column].dropna()
        distinct = int(values.nunique())
        if len(values) >= IDENTIFIER_MIN_ROWS and distinct >= IDENTIFIER_SHARE * len(values):
            found[column] = {"distinct": distinct, "rows": len(values)}
    return found


def _numeric_edges(frame: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    edges = {}
    for column in columns:
        values = frame[column].dropna().to_numpy(np.float64)
        if not len(values):
            continue
        median = float(np.median(values))
        mad = float(np.median(np.abs(values - median))) or float(values.std()) or 1.0
        # Percentiles, not the minimum and maximum: an extreme value is one person's (the
        # oldest patient's age, the largest claim), and the card is filed and shared.
        edges[column] = {
            "p01": float(np.percentile(values, 1, method="lower")),
            "median": median,
            "p99": float(np.percentile(values, 99, method="higher")),
            "outliers_robust_z_over_5": int((np.abs(values - median) / (1.4826 * mad) > 5).sum()),
            "share_at_mode": round(
                float(pd.Series(values).value_counts().iloc[0] / len(values)), 4
            ),
        }
    return edges


def build_datacard(
    splits: dict[str, pd.DataFrame],
    targets: dict[str, pd.Series],
    *,
    label: str,
    positive: Any,
    sensitive: list[str],
    text: list[str],
    dropped_identifiers: list[str],
    hashed_identifiers: list[str],
    raw_rows: dict[str, int],
    canonicalization: dict[str, Any],
    merge_report: dict[str, Any],
    pii: dict[str, dict[str, int]],
    pii_not_scanned: list[str] | None = None,
    labels: dict[str, dict[str, int]] | None = None,
    encoded_levels: dict[str, list[str]] | None = None,
    constant_dropped: list[str] | None = None,
    min_group_rows: int,
) -> dict[str, Any]:
    train = splits["train"]
    numeric = [c for c in train.columns if pd.api.types.is_numeric_dtype(train[c])]
    categorical = [c for c in train.columns if c not in numeric and c not in text]
    features = [c for c in train.columns if c not in {label, *text, *hashed_identifiers}]
    totals: dict[str, int] = {}
    for counts in pii.values():
        for kind, count in counts.items():
            totals[kind] = totals.get(kind, 0) + count
    return {
        "label": label,
        "positive": str(positive),
        # every label value of the prepared rows (all splits), by the class it is trained as
        "label_values": labels or {},
        "raw_rows": raw_rows,
        "exact_duplicates_dropped": merge_report["exact_duplicates_dropped"],
        "rows_without_label_dropped": merge_report["rows_without_label_dropped"],
        "rows_without_label_kept": merge_report["rows_without_label_kept"],
        "unlabeled_rows_dropped_as_near_copies_of_scored_rows": merge_report[
            "unlabeled_rows_dropped_as_near_copies_of_scored_rows"
        ],
        "train_rows_dropped_as_copies_of_test_rows": merge_report[
            "train_rows_dropped_as_copies_of_test_rows"
        ],
        "near_duplicates": merge_report["near_duplicates"],
        "ood": merge_report["ood"],
        "dropped_identifier_columns": dropped_identifiers,
        "hashed_identifier_columns": hashed_identifiers,
        "pii_findings_redacted": {
            "total_by_kind": totals,
            "by_column": pii,
            "columns_not_scanned": list(pii_not_scanned or []),
        },
        "splits": {
            name: {"rows": len(frame), "positive_rate": _rate(targets[name])}
            for name, frame in splits.items()
        },
        "few_class_rows": few_class_rows(targets),
        "label_balance": {
            name: {str(k): int(v) for k, v in frame[label].astype(str).value_counts().items()}
            for name, frame in splits.items()
        },
        "schema": canonicalization,
        "missing_share_train": {
            c: round(float(train[c].isna().mean()), 4)
            for c in train.columns
            if train[c].isna().any()
        },
        "small_group_rows": min_group_rows,  # fewer: count only, no positive rate
        "sensitive_groups_train": {
            c: _group_table(train, [c], targets["train"], min_group_rows) for c in sensitive
        },
        "sensitive_intersections_train": {
            " x ".join(pair): _group_table(train, list(pair), targets["train"], min_group_rows)
            for pair in combinations(sensitive, 2)
        },
        "rare_categories_train": _rare_categories(train, [c for c in categorical if c != label]),
        "folded_into_other_train": _folded(train, encoded_levels or {}),
        "identifier_like_train": identifier_like(train, [c for c in categorical if c in features]),
        "constant_columns_train": [c for c in features if train[c].nunique() <= 1],
        "constant_columns_dropped": list(constant_dropped or []),
        "numeric_edges_train": _numeric_edges(train, numeric),
    }


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(map(md_cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(md_cell, row)) + " |" for row in rows]


def _group_rate(group: dict[str, Any], least: int) -> str:
    rate = group["positive_rate"]
    return f"not shown (< {least} rows)" if rate is None else f"{rate:.3f}"


def datacard_markdown(card: dict[str, Any]) -> str:
    lines = ["# Data card", ""]
    lines += [f"- Label: `{card['label']}` (positive class `{card['positive']}`)"]
    values = card.get("label_values") or {}
    if one_vs_rest(values):
        positives, negatives = (
            _listed(values[k], LISTED_LABEL_VALUES, "`{}`") for k in ("positive", "negative")
        )
        lines.append(
            f"- Label values (rows of every split), trained one-vs-rest: positive {positives}; "
            f"negative {negatives}. A value meaning 'not labeled yet' should be an empty cell "
            "instead: such rows are dropped or, with `prepare.unlabeled: pretrain`, used for "
            "pretraining only"
        )
    raw = ", ".join(f"{k}: {v:,}" for k, v in card["raw_rows"].items())
    dups = ", ".join(f"{k}: {v:,}" for k, v in card["exact_duplicates_dropped"].items())
    lines += [f"- Raw rows: {raw}", f"- Exact duplicates dropped: {dups}"]
    copies = card["train_rows_dropped_as_copies_of_test_rows"]
    if copies["exact"] or copies["near"]:
        lines.append(
            f"- Training rows dropped as copies of test rows (features compared, not the "
            f"label): {copies['exact']:,} exact, {copies['near']:,} near"
        )
    near = card["near_duplicates"]
    if near.get("clusters") is not None:
        lines.append(
            f"- Near-duplicate clusters (rows differing in at most "
            f"{near['max_differing_fields']} feature column(s), the label not compared): "
            f"{near['clusters']:,} holding "
            f"{near['rows_in_clusters']:,} rows, the largest {near['largest_cluster']:,}; each "
            "cluster lies within one split"
        )
    lines.append(f"- Rows without a label dropped: {card['rows_without_label_dropped']:,}")
    if card.get("rows_without_label_kept"):
        lines.append(
            f"- Rows without a label kept for self-supervised pretraining only (the "
            f"`unlabeled` split): {card['rows_without_label_kept']:,}; dropped among them: "
            "copies of labeled rows, and "
            f"{card['unlabeled_rows_dropped_as_near_copies_of_scored_rows']:,} near-copies of "
            "validation, test or ood rows (pretraining must not see the rows models are scored on)"
        )
    dropped = ", ".join(f"`{c}`" for c in card["dropped_identifier_columns"]) or "none"
    lines.append(f"- Identifier columns dropped: {dropped}")
    if card["hashed_identifier_columns"]:
        hashed = ", ".join(f"`{c}`" for c in card["hashed_identifier_columns"])
        lines.append(f"- Identifier columns replaced by a keyed hash: {hashed}")
    if card["ood"]:
        lines.append(f"- Out-of-distribution split: `{card['ood']['predicate']}`")
    lines += ["", "## Splits", ""]
    lines += _table(
        ["split", "rows", "positive rate"],
        [[n, f"{i['rows']:,}", f"{i['positive_rate']:.3f}"] for n, i in card["splits"].items()],
    )
    few = few_class_note(card["label"], card.get("few_class_rows"))
    if few:
        lines += ["", f"Note: {few}."]
    pii = card["pii_findings_redacted"]
    lines += ["", "## Personal data found and redacted", ""]
    if pii["by_column"]:
        kinds = sorted(pii["total_by_kind"])
        rows = [
            [f"`{c}`", *(f"{v.get(k, 0):,}" for k in kinds)] for c, v in pii["by_column"].items()
        ]
        lines += _table(["column", *kinds], rows)
    else:
        lines.append("None found.")
    if pii.get("columns_not_scanned"):
        skipped = ", ".join(f"`{c}`" for c in pii["columns_not_scanned"])
        lines += ["", f"Not scanned, as configured (`prepare.pii`): {skipped}."]
    lines += ["", "## Columns", "", "Counts are over all prepared rows (every split).", ""]
    lines += _table(
        ["column", "type", "missing", "text normalized", "case unified"],
        [
            [f"`{n}`", i["dtype"], f"{i['missing']:,}", f"{i.get('normalized_text', 0):,}",
             f"{i.get('case_unified', 0):,}"]
            for n, i in card["schema"].items()
        ],
    )  # fmt: skip
    least = card.get("small_group_rows", 0)
    tables = [
        *((f"Sensitive attribute `{c}`", g) for c, g in card["sensitive_groups_train"].items()),
        *((f"Intersection {p}", g) for p, g in card["sensitive_intersections_train"].items()),
    ]
    for title, groups in tables:
        lines += ["", f"## {title} (train split)", ""]
        lines += _table(
            ["group", "rows", "positive rate"],
            [[g["group"], f"{g['rows']:,}", _group_rate(g, least)] for g in groups],
        )
        if any(g["positive_rate"] is None for g in groups):
            lines += ["", f"A group of fewer than {least} rows (`evaluate.min_group_rows`) "
                      "shows no rate: with so few people, it would tell their labels."]  # fmt: skip
    if card["rare_categories_train"]:
        lines += ["", "## Rare categories (train split)", ""]
        lines += _table(
            ["column", "rare levels", "rows"],
            [[f"`{c}`", i["levels"], i["rows"]] for c, i in card["rare_categories_train"].items()],
        )
    if card.get("folded_into_other_train"):
        lines += ["", "## Category values encoded as `__other__` (train split)", ""]
        lines += [
            "The encoding keeps a level for the values seen in at least "
            "`prepare.min_category_count` training rows, at most `prepare.max_categories` "
            "levels per column (the most frequent); every other value is one level, "
            "`__other__`, so the model cannot tell these rows' values apart. Many rows here "
            "mean the column's information is mostly lost: raise `prepare.max_categories`, or "
            "add a coarser copy of the column (a region for a postcode).",
            "",
        ]
        lines += _table(
            ["column", "distinct values", "levels kept", "rows as `__other__`", "share"],
            [[f"`{c}`", f"{i['distinct']:,}", f"{i['levels']:,}", f"{i['rows']:,}",
              f"{i['share']:.1%}"] for c, i in card["folded_into_other_train"].items()],
        )  # fmt: skip
    if card.get("identifier_like_train"):
        lines += ["", "## Columns that look like identifiers or free text (train split)", ""]
        lines += [
            "Nearly every value occurs once: declare such a column in `data.identifiers` "
            "(dropped or hashed) or `data.text`. Such a column is left out of the features: "
            "no model reads it, and none of its values, not even one repeated in many rows "
            "(a patient's name over their visits), is stored in the encoding or the "
            "exported model.",
            "",
        ]
        lines += _table(
            ["column", "distinct values", "rows"],
            [[f"`{c}`", f"{i['distinct']:,}", f"{i['rows']:,}"]
             for c, i in card["identifier_like_train"].items()],
        )  # fmt: skip
    if card.get("constant_columns_train"):
        constant = ", ".join(f"`{c}`" for c in card["constant_columns_train"])
        lines += ["", "## Constant columns (train split)", ""]
        lines += [f"One value (or none) in every training row, so no information: {constant}."]
        if card.get("constant_columns_dropped"):
            lines += [
                "Left out of the features (no model reads them, nor does the exported ONNX "
                "model): " + ", ".join(f"`{c}`" for c in card["constant_columns_dropped"]) + "."
            ]
        redacted = [c for c in card["constant_columns_train"] if c in pii["by_column"]]
        if redacted:
            lines += [
                "",
                "The personal-data scan replaced the values of "
                + ", ".join(f"`{c}`" for c in redacted)
                + " by placeholders. If such a column holds no personal data (say, an "
                "application date rather than a date of birth), list it in "
                "`prepare.pii.skip_columns`.",
            ]
    if card["numeric_edges_train"]:
        lines += [
            "",
            "## Numeric columns: spread and outliers (train split; no minimum or maximum: "
            "an extreme value is one person's)",
            "",
        ]
        lines += _table(
            ["column", "1st percentile", "median", "99th percentile", "robust z > 5",
             "share at mode"],
            [
                [f"`{c}`", f"{i['p01']:g}", f"{i['median']:g}", f"{i['p99']:g}",
                 i["outliers_robust_z_over_5"], f"{i['share_at_mode']:.3f}"]
                for c, i in card["numeric_edges_train"].items()
            ],
        )  # fmt: skip
    lines += ["", "## Figures", "", "![positive rate by group](datacard_groups.png)", ""]
    lines += ["![missing values](datacard_missing.png)"]
    return "\n".join(lines) + "\n"


def datacard_figures(card: dict[str, Any], out: Path) -> None:
    """Positive rate per sensitive group and missing share per column, as PNG."""
    from sslops.plots import default_style, save, subplots

    with default_style():  # the figures' bytes depend on the data only
        groups = [
            (c, g)
            for c, rows in card["sensitive_groups_train"].items()
            for g in [g for g in rows if g["positive_rate"] is not None][:8]
        ]
        fig, ax = subplots(figsize=(7, 0.3 * len(groups) + 1.2), dpi=100)
        ax.barh([f"{c}: {g['group']}" for c, g in groups], [g["positive_rate"] for c, g in groups])
        ax.invert_yaxis()
        ax.set(xlabel="positive rate (train split)", title="Label balance by sensitive group")
        fig.tight_layout()
        save(fig, out / FIGURES[0])
        missing = card["missing_share_train"] or {"(none)": 0.0}
        fig, ax = subplots(figsize=(7, 0.3 * len(missing) + 1.2), dpi=100)
        ax.barh(list(missing), list(missing.values()))
        ax.invert_yaxis()
        ax.set(xlabel="share of train rows missing", title="Missing values")
        fig.tight_layout()
        save(fig, out / FIGURES[1])
