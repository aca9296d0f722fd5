"""Data card: what a reviewer needs to know about the prepared data, as JSON and Markdown."""

from __future__ import annotations

from typing import Any

import pandas as pd


def _group_table(frame: pd.DataFrame, column: str, target: pd.Series) -> list[dict[str, Any]]:
    rows = []
    for value, part in frame.groupby(frame[column].astype("string").fillna("(missing)")):
        rows.append(
            {
                "group": str(value),
                "rows": len(part),
                "positive_rate": round(float(target.loc[part.index].mean()), 4),
            }
        )
    return sorted(rows, key=lambda r: -r["rows"])


def build_datacard(
    splits: dict[str, pd.DataFrame],
    targets: dict[str, pd.Series],
    *,
    label: str,
    positive: Any,
    sensitive: list[str],
    dropped_identifiers: list[str],
    duplicates_dropped: dict[str, int],
    raw_rows: dict[str, int],
    canonicalization: dict[str, Any],
) -> dict[str, Any]:
    train = splits["train"]
    return {
        "label": label,
        "positive": str(positive),
        "raw_rows": raw_rows,
        "exact_duplicates_dropped": duplicates_dropped,
        "dropped_identifier_columns": dropped_identifiers,
        "splits": {
            name: {"rows": len(frame), "positive_rate": round(float(targets[name].mean()), 4)}
            for name, frame in splits.items()
        },
        "schema": canonicalization["columns"],
        "missing_share_train": {
            c: round(float(train[c].isna().mean()), 4)
            for c in train.columns
            if train[c].isna().any()
        },
        "sensitive_groups_train": {c: _group_table(train, c, targets["train"]) for c in sensitive},
    }


def datacard_markdown(card: dict[str, Any]) -> str:
    lines = ["# Data card", ""]
    lines += [f"- Label: `{card['label']}` (positive class `{card['positive']}`)"]
    raw = ", ".join(f"{k}: {v:,}" for k, v in card["raw_rows"].items())
    dups = ", ".join(f"{k}: {v:,}" for k, v in card["exact_duplicates_dropped"].items())
    lines += [f"- Raw rows: {raw}", f"- Exact duplicates dropped: {dups}"]
    dropped = ", ".join(f"`{c}`" for c in card["dropped_identifier_columns"]) or "none"
    lines += [f"- Identifier columns dropped: {dropped}", ""]
    lines += ["## Splits", "", "| split | rows | positive rate |", "|---|---:|---:|"]
    for name, info in card["splits"].items():
        lines.append(f"| {name} | {info['rows']:,} | {info['positive_rate']:.3f} |")
    lines += ["", "## Columns", "", "| column | type | missing (all raw rows) |", "|---|---|---:|"]
    for name, info in card["schema"].items():
        lines.append(f"| `{name}` | {info['dtype']} | {info['missing']:,} |")
    for column, groups in card["sensitive_groups_train"].items():
        lines += ["", f"## Sensitive attribute `{column}` (train split)", ""]
        lines += ["| group | rows | positive rate |", "|---|---:|---:|"]
        lines += [f"| {g['group']} | {g['rows']:,} | {g['positive_rate']:.3f} |" for g in groups]
    return "\n".join(lines) + "\n"
