"""The evaluate artifact's files, shared by the tabular and the image / time-series stages.

Both write the same set: ``metrics.json`` and ``metrics.md`` (the table plus the
label-efficiency curve when it was measured), ``shortcuts.json``, ``ood.json`` when an
out-of-distribution split was scored, ``label_efficiency.json`` / ``.png``, the ROC
plot and one bar chart per group of the sensitive attribute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from sslops.artifacts import write_json
from sslops.evaluate.label_efficiency import curve_markdown, plot_curve
from sslops.evaluate.shift import comparison_markdown
from sslops.gaps import WORST_OFF, lowest_rate
from sslops.markdown import md_cell
from sslops.plots import grouped_bars, line_plot


def roc_points(y: np.ndarray, score: np.ndarray, points: int = 101) -> dict[str, list[float]]:
    """The ROC curve of ``score`` against the 0/1 ``y``, thinned to at most ``points`` points."""
    fpr, tpr, thr = roc_curve(y, score)
    keep = np.unique(np.linspace(0, len(fpr) - 1, points).round().astype(int))
    thr = np.clip(thr, 0.0, 1.0)  # the first threshold is +inf
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(), "thresholds": thr[keep].tolist()}


GROUP_COLUMNS = {"accuracy": "accuracy", "roc_auc": "ROC AUC", "selection_rate": "selection rate",
                 "tpr": "TPR", "fpr": "FPR", "ece": "ECE"}  # fmt: skip


def _number(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def _with_interval(value: Any, bounds: Any) -> str:
    """``value`` to 4 decimals, then its ``[low, high]`` to 3 when measured."""
    low, high = bounds if bounds else (None, None)
    ranged = "" if low is None or low != low else f" [{_number(low, 3)}, {_number(high, 3)}]"
    return _number(value) + ranged


GAP_COLUMNS = {"dp_difference": "DP diff.", "eo_difference": "EO diff.",
               "eopp_difference": "equal-opp. diff."}  # fmt: skip


def gap_cell(value: Any, bounds: Any = None) -> str:
    """A gap as a table cell: :func:`_with_interval`, or "undefined" where fewer than two
    groups have its rate (NaN; the note below the table says why), never 0.0000."""
    return "undefined" if value is None or value != value else _with_interval(value, bounds)


def gap_note_lines(notes: dict[str, dict[str, str]], name: str = "") -> list[str]:
    """One line per undefined (or partly defined) gap of ``notes`` (column -> gap -> why:
    :func:`sslops.gaps.gap_notes`), for below a table that shows gaps."""
    who = f"'{name}', " if name else ""
    return [f"- {who}{md_cell(column)}: {md_cell(text)}."
            for column, by_gap in notes.items() for text in by_gap.values()]  # fmt: skip


def models_gap_note_lines(models: dict[str, dict[str, Any]], column: str) -> list[str]:
    """:func:`gap_note_lines` of each model's gaps over ``column``, for below the table of
    every model's overall metrics."""
    return [line for name, m in models.items()
            for line in gap_note_lines({column: m.get("gap_notes", {}).get(column, {})}, name)]  # fmt: skip


def worst_off_cells(groups: dict[str, Any], min_rows: int = 0) -> list[str]:
    """One cell per :data:`WORST_OFF` rate: the group it is lowest for, with the rate."""
    cells = []
    for key in WORST_OFF:
        low = lowest_rate(groups, key, min_rows)
        cells.append("n/a" if low is None else f"{md_cell(low[0])} ({_number(low[1])})")
    return cells


def gap_markdown(name: str, model: dict[str, Any], min_rows: int = 0) -> str:
    """Every sensitive column's (and the crossing's) gaps of one model with their 95%
    intervals, and the worst-off group of each: the overall table shows the first column's."""
    gaps, every = model.get("gaps", {}), model.get("gap_intervals", {})
    if not gaps:
        return ""
    lines = ["", f"Fairness gaps of '{name}' by every sensitive column (largest minus smallest "
             "group rate" + ("; 95% bootstrap intervals in brackets" if every else "") + "):", "",
             "| sensitive column | " + " | ".join(GAP_COLUMNS.values()) + " | "
             + " | ".join(WORST_OFF.values()) + " |",
             "|---|" + "---:|" * len(GAP_COLUMNS) + "---|" * len(WORST_OFF)]  # fmt: skip
    for column, values in gaps.items():
        cells = []
        for key in GAP_COLUMNS:
            cells.append(gap_cell(values.get(key), every.get(column, {}).get(key)))
        cells += worst_off_cells(model.get("by_group", {}).get(column, {}), min_rows)
        lines.append(f"| {md_cell(column)} | " + " | ".join(cells) + " |")
    notes = gap_note_lines(model.get("gap_notes", {}))
    if notes:
        lines += ["", "Gaps not measured as such (undefined: fewer than two groups to compare):",
                  "", *notes]  # fmt: skip
    return "\n".join(lines) + "\n"


def group_markdown(name: str, model: dict[str, Any], min_rows: int = 0) -> str:
    """Every column's gaps (:func:`gap_markdown`), then per-group tables of one model, each
    metric with its 95% interval when measured."""
    every = model.get("group_intervals", {})
    head = gap_markdown(name, model, min_rows).rstrip("\n")
    lines: list[str] = [head] if head else []
    for column, groups in model.get("by_group", {}).items():
        keys = [k for k in GROUP_COLUMNS if any(k in row for row in groups.values())]
        intervals = every.get(column, {})
        lines += ["", f"Per-group metrics of '{name}' by {md_cell(column)}"
                  + (" (95% bootstrap intervals in brackets)" if intervals else "") + ":", "",
                  "| group | rows | " + " | ".join(GROUP_COLUMNS[k] for k in keys) + " |",
                  "|---|---:|" + "---:|" * len(keys)]  # fmt: skip
        for group, row in groups.items():
            if row.get("count", 0) < min_rows:
                cells = [f"not shown (< {min_rows} rows)"] * len(keys)
            else:
                cells = [_with_interval(row.get(k), intervals.get(group, {}).get(k)) for k in keys]
            lines.append(f"| {md_cell(group)} | {int(row.get('count', 0))} | " + " | ".join(cells)
                         + " |")  # fmt: skip
    return "\n".join(lines) + "\n" if lines else ""


NOTATION = (
    "How to read the tables: accuracy, ROC AUC, rates and differences are shares from 0 to 1 "
    "(not percentages), given to 4 decimals. `[low, high]` after a value is its 95% "
    "bootstrap interval over resampled rows (3 decimals). TPR: true positive rate; FPR: false "
    "positive rate; ECE: expected calibration error over ten equal-width probability bins "
    "(each bin's |observed share - mean predicted probability|, weighted by its rows; tables: "
    "of the positive class's probability; images and series: of the top label); DP diff.: demographic parity difference "
    "(largest gap in selection rate between groups); EO diff.: equalized odds difference "
    "(the larger of the largest gaps in TPR and in FPR between groups); equal-opp. diff.: "
    "equal opportunity difference (largest gap in TPR between groups); n/a: not defined on "
    "these rows; undefined (a gap): fewer than two groups have the rate it compares (say, one "
    "group has no positive rows, so no TPR), with the reason below its table. Which gap the fairness policy constrains is said below the first table: when "
    "base rates differ between groups, DP and EO differences cannot both be near zero."
)


def metrics_title(payload: dict[str, Any]) -> str:
    """The top of ``metrics.md``: one title (the document's only level-1 heading) and how to
    read its numbers, so that the file stands alone when KFP or DVC shows it."""
    return f"# Evaluation metrics ({payload.get('split', 'test')} split)\n\n{NOTATION}\n\n"


def headline(payload: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json``'s scalars (per model: accuracy, ROC AUC, gaps, ...) without the groups,
    intervals and curves: a small, flat file for ``dvc metrics show`` / ``dvc metrics diff``."""
    scalar = (str, int, float, bool)
    out: dict[str, Any] = {k: v for k, v in payload.items() if isinstance(v, scalar)}
    out["models"] = {
        name: {k: v for k, v in model.items() if isinstance(v, scalar)}
        for name, model in payload["models"].items()
    }
    return out


def write_reports(
    tmp: Path,
    payload: dict[str, Any],
    shortcuts: dict[str, Any],
    markdown: str,
    *,
    ood: dict[str, Any] | None,
    efficiency: dict[str, Any] | None,
    roc_title: str,
    bars: tuple[str, str, str, str],
) -> None:
    """Write the evaluate artifact's files into ``tmp``.

    ``payload`` is ``metrics.json`` (its ``models`` and ``roc_curves`` feed the plots; its
    scalars also go to ``headline.json``, for ``dvc metrics``);
    ``bars`` is (file name, per-group metric key, axis label, title): one bar per model and
    group of ``payload["sensitive"]``.
    """
    write_json(tmp / "metrics.json", payload)
    write_json(tmp / "headline.json", headline(payload))
    write_json(tmp / "shortcuts.json", shortcuts)
    if ood is not None:
        write_json(tmp / "ood.json", ood)
        markdown += comparison_markdown(ood)
    if efficiency is not None:
        write_json(tmp / "label_efficiency.json", efficiency)
        plot_curve(tmp / "label_efficiency.png", efficiency["mean"])
        markdown += "\n" + curve_markdown(efficiency)
    (tmp / "metrics.md").write_text(metrics_title(payload) + markdown, encoding="utf-8")
    curves = payload["roc_curves"]
    line_plot(
        tmp / "roc.png", {n: (c["fpr"], c["tpr"]) for n, c in curves.items()},
        "false positive rate", "true positive rate", roc_title,
    )  # fmt: skip
    file_name, key, label, title = bars
    attribute, models = payload["sensitive"], payload["models"]
    levels = list(models["ssl"]["by_group"][attribute])
    grouped_bars(
        tmp / file_name, levels,
        {n: [m["by_group"][attribute][g][key] for g in levels] for n, m in models.items()},
        label, title,
    )  # fmt: skip
