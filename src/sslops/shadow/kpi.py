"""Business KPIs from the ``kpi`` config section, for the shadow report and the audit card.

- :func:`decision_costs`: expected cost per 1,000 decisions of a candidate and an
  incumbent on the same labelled rows, with paired bootstrap 95% intervals (the same row
  resample for both models and their difference);
- :func:`labels_saved`: how many labels (and their cost) the SSL model needed fewer than
  the best supervised baseline to reach that baseline's test ROC AUC, read off the
  label-efficiency curve of ``sslops evaluate`` (``label_efficiency.json``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sslops.config import KpiConfig
from sslops.errors import DataError


def row_costs(y: np.ndarray, decision: np.ndarray, kpi: KpiConfig) -> np.ndarray:
    """The cost of every decision under the cost matrix."""
    c = kpi.costs
    y, d = np.asarray(y).astype(bool), np.asarray(decision).astype(bool)
    return np.select(
        [d & ~y, ~d & y, d & y],
        [c.false_positive, c.false_negative, c.true_positive],
        default=c.true_negative,
    ).astype(np.float64)


def decision_costs(
    y: np.ndarray, candidate: np.ndarray, incumbent: np.ndarray, kpi: KpiConfig, seed: int = 0
) -> dict[str, Any]:
    """Cost per 1,000 decisions of both models and candidate - incumbent, with 95% intervals."""
    costs = {"candidate": row_costs(y, candidate, kpi), "incumbent": row_costs(y, incumbent, kpi)}
    costs["difference"] = costs["candidate"] - costs["incumbent"]
    result: dict[str, Any] = {
        "currency": kpi.currency,
        "rows": len(y),
        "resamples": kpi.bootstrap,
        "cost_matrix": kpi.costs.model_dump(),
    }
    rng = np.random.default_rng(seed)
    # One resample at a time, the same rows for the three (paired): holding all of them
    # took resamples x rows x 8 bytes (3.8 GB for 30 days of 16,000 rows).
    means: dict[str, list[float]] = {name: [] for name in costs}
    for _ in range(kpi.bootstrap if len(y) else 0):
        rows = rng.integers(0, len(y), len(y))
        for name, values in costs.items():
            means[name].append(1000 * values[rows].mean())
    for name, values in costs.items():
        per_1000 = 1000 * values.mean() if len(values) else float("nan")
        drawn = means[name]
        interval = (
            [float(np.percentile(drawn, 2.5)), float(np.percentile(drawn, 97.5))] if drawn else None
        )
        result[name] = {"per_1000": float(per_1000), "interval_95": interval}
    return result


def cost_verdict(costs: dict[str, Any] | None) -> str | None:
    """What the paired interval of candidate - incumbent says: ``candidate_costlier`` or
    ``candidate_cheaper`` when it excludes 0, else ``no_difference_shown``; None without
    labels or without resamples."""
    if costs is None or costs["difference"]["interval_95"] is None:
        return None
    low, high = costs["difference"]["interval_95"]
    if low > 0:
        return "candidate_costlier"
    if high < 0:
        return "candidate_cheaper"
    return "no_difference_shown"


def _curve(mean: dict[str, dict[str, float]], labels: dict[str, float], models: tuple) -> dict:
    """Per fraction: the best model of ``models`` there (the upper envelope)."""
    out = {}
    for fraction in sorted(labels, key=float):
        present = [(mean[m][fraction], m) for m in models if fraction in mean.get(m, {})]
        if present:
            value, model = max(present)
            out[fraction] = {"labels": labels[fraction], "roc_auc": value, "model": model}
    return out


def labels_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """Smallest label count at which the curve (labels, quality) first reaches ``target``.

    Linear interpolation in log(labels) between the two points that straddle the target
    (the curve is near-linear on a log axis); ``None`` when no point reaches it; the first
    point's count when that already does (nothing is extrapolated below the curve).
    """
    for i, (labels, value) in enumerate(points):
        if value >= target:
            if i == 0:
                return labels
            l0, v0 = points[i - 1]
            t = (target - v0) / (value - v0)
            return math.exp(math.log(l0) + t * (math.log(labels) - math.log(l0)))
    return None


def read_label_efficiency(path: Path) -> dict[str, Any]:
    file = path / "label_efficiency.json" if path.is_dir() else path
    if not file.is_file():
        where = f"the folder holds no {file.name}" if path.is_dir() else "no such file"
        raise DataError(f"--label-efficiency {path}: {where}; expected sslops evaluate's "
                        "label_efficiency.json or the evaluate artifact holding it")  # fmt: skip
    try:
        data: Any = json.loads(file.read_text(encoding="utf-8"))  # a list, a number: refused below
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"--label-efficiency {file}: not a readable JSON file ({exc})") from None
    problem = _curve_problem(data)
    if problem is not None:
        raise DataError(
            f"--label-efficiency {file}: {problem}expected sslops evaluate's "
            "label_efficiency.json (keys 'rows' and 'mean')"
        )
    return data


def _curve_problem(data: Any) -> str | None:
    """What makes ``data`` no label-efficiency curve labels_saved can read (ending in '; ',
    or '' where the expected keys say it), None when it is one: checked when the file is
    read, not after every batch has been scored."""
    if not isinstance(data, dict) or "rows" not in data or "mean" not in data:
        return ""
    rows, mean = data["rows"], data["mean"]
    if not isinstance(rows, list):
        return f"'rows' is {type(rows).__name__}, not a list; "
    for number, row in enumerate(rows, 1):
        values = [row.get(key) if isinstance(row, dict) else None for key in ("fraction", "labels")]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return f"row {number} of 'rows' has no numeric 'fraction' and 'labels'; "
    if not isinstance(mean, dict) or not all(
        isinstance(by, dict) and all(isinstance(v, int | float) for v in by.values())
        for by in mean.values()
    ):
        return "'mean' is not model -> label fraction -> ROC AUC; "
    return None


def labels_saved(curve: dict[str, Any], kpi: KpiConfig) -> dict[str, Any]:
    """Labels (and cost) the SSL curve needed fewer than the best baseline, per baseline budget.

    ``headline`` is the comparison at the baseline's largest label budget: the quality of
    the fullest supervised baseline on the curve.
    """
    # Imported here: label_efficiency trains models (torch); a shadow test without
    # --label-efficiency spent its start-up importing it.
    from sslops.evaluate.label_efficiency import BASELINES, SSL_MODELS

    labels: dict[str, list[float]] = {}
    for row in curve["rows"]:
        labels.setdefault(str(row["fraction"]), []).append(float(row["labels"]))
    mean_labels = {f: float(np.mean(v)) for f, v in labels.items()}
    ssl = _curve(curve["mean"], mean_labels, SSL_MODELS)
    base = _curve(curve["mean"], mean_labels, BASELINES)
    if not ssl or not base:
        raise DataError(
            "the label-efficiency curve (--label-efficiency) has no SSL or no supervised-"
            "baseline points: expected the mean ROC AUC of an SSL model "
            f"({', '.join(SSL_MODELS)}) and of a baseline ({', '.join(BASELINES)}) at the "
            "label fractions of its rows, as sslops evaluate writes it"
        )
    points = [(p["labels"], p["roc_auc"]) for p in ssl.values()]
    rows = []
    for fraction, point in base.items():
        needed = labels_to_reach(points, point["roc_auc"])
        saved = None if needed is None else int(point["labels"]) - math.ceil(needed)
        rows.append({
            "baseline": point["model"], "fraction": float(fraction),
            "baseline_labels": int(point["labels"]), "baseline_roc_auc": point["roc_auc"],
            "ssl_labels_needed": None if needed is None else math.ceil(needed),
            "labels_saved": saved,
            "cost_saved": None if saved is None else saved * kpi.cost_per_label,
            "reached": needed is not None,
        })  # fmt: skip
    return {
        "metric": "roc_auc",
        "currency": kpi.currency,
        "cost_per_label": kpi.cost_per_label,
        "ssl_curve": {f: p for f, p in ssl.items()},
        "by_baseline_budget": rows,
        "headline": rows[-1],
    }


def describe_labels_saved(saved: dict[str, Any]) -> str:
    h, cur = saved["headline"], saved["currency"]
    target = f"{h['baseline']} with {h['baseline_labels']:,} labels (ROC AUC {h['baseline_roc_auc']:.4f})"
    if not h["reached"]:
        best = max(p["roc_auc"] for p in saved["ssl_curve"].values())
        return (
            f"The SSL curve never reaches the best supervised baseline's quality, {target}: "
            f"its best ROC AUC is {best:.4f}. No labels are saved at that quality."
        )
    if h["labels_saved"] <= 0:
        return (
            f"The SSL model needs {h['ssl_labels_needed']:,} labels to reach {target}: "
            "no saving at that quality."
        )
    return (
        f"The SSL model reaches {target} with about {h['ssl_labels_needed']:,} labels: "
        f"{h['labels_saved']:,} labels saved, {h['cost_saved']:,.2f} {cur} at "
        f"{saved['cost_per_label']:g} {cur} per label."
    )
