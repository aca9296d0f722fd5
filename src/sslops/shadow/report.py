"""The shadow report as Markdown and self-contained HTML (PNGs embedded), plus its plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

from sslops.audit.document import Document
from sslops.config import KpiConfig
from sslops.plots import OKABE_ITO, default_style, save, subplots
from sslops.shadow.kpi import describe_labels_saved

READ_ONLY = (
    "Read-only shadow test: both models scored copies of the batches; no decision was "
    "changed, delayed or sent anywhere. The incumbent's decisions stand as they were."
)


def _f(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if digits < 0 else f"{value:.{digits}f}"


def _interval(value: float, interval: list[float] | None) -> str:
    if interval is None:
        return _f(value)
    # Bounds to 3 decimals, as in metrics.md (a value keeps 4).
    return f"{value:.4f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _d(value: float | None) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:+.4f}"


def _delta(entry: dict[str, Any]) -> str:
    """A delta and its paired 95% interval, where there is one."""
    interval = entry.get("delta_interval_95")
    if interval is None or any(np.isnan(v) for v in interval):
        return _d(entry["delta"])
    return f"{_d(entry['delta'])} [{interval[0]:+.4f}, {interval[1]:+.4f}]"


def _saved(value: float | None, spec: str = ",") -> str:
    """A saving; none when the SSL curve never gets there or needs more than the baseline."""
    if value is None:
        return "n/a"
    return format(value, spec) if value >= 0 else f"none ({format(-value, spec)} more)"


@default_style()
def plot_agreement(path: Path, report: dict[str, Any]) -> None:
    by_batch = report["agreement"]["by_batch"]
    drifted = set(report["drift"]["drifted_batches"])
    names = list(by_batch)
    fig, ax = subplots(figsize=(7, 3.4), dpi=100)
    # Drifted batches differ by hatch as well as colour: the report is printed in greyscale.
    for drift in (False, True):
        at = [i for i, n in enumerate(names) if (n in drifted) == drift]
        if not at:
            continue  # a legend entry for bars that are not there would mislead
        ax.bar(at, [by_batch[names[i]]["agreement"] for i in at], edgecolor="black",
               color=OKABE_ITO[1] if drift else OKABE_ITO[0], hatch="//" if drift else "",
               linewidth=0.6, label="input drift flagged" if drift else "no drift flagged")  # fmt: skip
    ax.axhline(report["agreement"]["overall"], color="black", linestyle="--", label="overall")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=9)
    ax.set(ylabel="decision agreement (share of rows)", title="Agreement per batch", ylim=(0, 1))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    fig.tight_layout()
    save(fig, path)


@default_style()
def plot_psi(path: Path, drift: dict[str, Any]) -> None:
    names = list(drift["batches"])
    features = list(next(iter(drift["batches"].values()))["features"]) if names else []
    grid = np.array([[drift["batches"][b]["features"][f]["psi"] for f in features] for b in names])
    # Batches too small for PSI are grey: their noise would set the colour scale.
    noisy = np.array([not drift["batches"][b]["psi_meaningful"] for b in names], dtype=bool)
    fig, ax = subplots(
        figsize=(max(5, 0.5 * len(features) + 2), max(2.5, 0.35 * len(names) + 1.5)), dpi=100
    )
    if names:
        shown = np.ma.masked_array(grid, mask=np.repeat(noisy[:, None], len(features), axis=1))
        top = float(shown.max()) if shown.count() else 0.0
        cmap = matplotlib.colormaps["Reds"].with_extremes(bad="#d0d7de")
        image = ax.imshow(shown, aspect="auto", cmap=cmap, vmin=0, vmax=max(0.5, top))
        fig.colorbar(image, ax=ax, label="PSI")
        for i, b in enumerate(names):
            for j, f in enumerate(features):
                if drift["batches"][b]["features"][f]["drifted"]:
                    ax.text(j, i, "x", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(features)), features, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), [f"{n} (few rows)" if k else n
                                          for n, k in zip(names, noisy, strict=True)], fontsize=8)  # fmt: skip
    ax.set_title(f"PSI vs {drift['reference']} (x: flagged; grey: too few rows)", fontsize=9)
    fig.tight_layout()
    save(fig, path)


@default_style()
def plot_scores(path: Path, rows: pd.DataFrame) -> None:
    fig, (left, right) = subplots(1, 2, figsize=(9, 3.4), dpi=100)
    bins = np.linspace(0, 1, 41)
    for model, colour, style in (
        ("candidate", OKABE_ITO[0], "-"),
        ("incumbent", OKABE_ITO[1], "--"),
    ):
        left.hist(rows[f"{model}_score"], bins=bins, histtype="step", label=model, density=True,
                  color=colour, linestyle=style, linewidth=1.5)  # fmt: skip
    left.set(xlabel="score", ylabel="density", title="Score distributions")
    left.legend()
    names = list(dict.fromkeys(rows["batch"]))
    right.boxplot([rows.loc[rows["batch"] == n, "candidate_score"] for n in names],
                  showfliers=False)  # fmt: skip
    right.set_xticks(range(1, len(names) + 1), names, rotation=45, ha="right", fontsize=8)
    right.set(ylabel="candidate score", title="Candidate score per batch")
    fig.tight_layout()
    save(fig, path)


def _drift_section(doc: Document, drift: dict[str, Any]) -> None:
    doc.heading("Drift between batches")
    doc.paragraph(
        f"Reference: {drift['reference']}. A feature drifts in a batch when its PSI is at "
        f"least {drift['psi_threshold']:g} and its two-sample test (Kolmogorov-Smirnov for "
        f"numeric, chi-square for categorical columns) has p < {drift['alpha']:g} / number "
        f"of features = {drift['alpha_per_feature']:.2g} (Bonferroni). A batch is flagged "
        "when any input feature drifts."
    )
    flagged = drift["drifted_batches"]
    doc.paragraph(f"Flagged batches: {', '.join(flagged) if flagged else 'none'}.")
    tested = len(drift["batches"])
    doc.paragraph(
        f"The Bonferroni correction is per batch, not across the {tested} batches tested: "
        f"the chance that some batch's test passes by chance alone is up to {tested} x "
        f"{drift['alpha']:g}; a flag also needs the PSI condition, which noise rarely meets."
    )
    noisy = [(n, b) for n, b in drift["batches"].items() if not b["psi_meaningful"]]
    if noisy:
        doc.paragraph(
            "Too few rows for PSI (sampling noise alone gives a PSI at or above "
            f"{drift['psi_threshold']:g}; grey in the heatmap, not evidence of drift): "
            + ", ".join(
                f"{n} ({b['rows']:,} rows, noise up to {b['psi_noise']:.2f})" for n, b in noisy
            )
            + "."
        )
    rows = []
    for name, b in drift["batches"].items():
        worst = max(b["features"].items(), key=lambda kv: kv[1]["psi"])
        scores = ", ".join(f"{m} {s['psi']:.3f}" for m, s in b["scores"].items())
        rows.append([name, f"{b['rows']:,}", "yes" if b["drifted"] else "no",
                     ", ".join(b["drifted_features"]) or "-",
                     f"{worst[0]} {worst[1]['psi']:.3f}", scores or "-",
                     f"{b['psi_noise']:.3f}" + ("" if b["psi_meaningful"] else " (too few rows)")])  # fmt: skip
    doc.table(["batch", "rows", "drifted", "drifted features", "largest PSI", "score PSI",
               "PSI noise level"], rows)  # fmt: skip


def _kpi_section(doc: Document, kpi_report: dict[str, Any], kpi: KpiConfig) -> None:
    doc.heading("Business KPIs")
    costs = kpi_report["decision_costs"]
    cur = kpi.currency
    c = kpi.costs
    doc.paragraph(
        f"Cost matrix ({cur}): false positive {c.false_positive:g}, false negative "
        f"{c.false_negative:g}, true positive {c.true_positive:g}, true negative "
        f"{c.true_negative:g}; {kpi.cost_per_label:g} {cur} per label."
    )
    if costs is None:
        doc.paragraph("No labels in the batches: expected decision costs cannot be measured.")
    else:
        rows = []
        for name in ("candidate", "incumbent", "difference"):
            v = costs[name]
            ci = v["interval_95"]
            rows.append([name if name != "difference" else "candidate - incumbent",
                         f"{v['per_1000']:,.1f}",
                         f"[{ci[0]:,.1f}, {ci[1]:,.1f}]" if ci else "n/a"])  # fmt: skip
        doc.paragraph(
            f"Expected cost per 1,000 decisions on {costs['rows']:,} labelled rows, with "
            f"paired bootstrap 95% intervals ({costs['resamples']} resamples):"
        )
        doc.table(["model", f"{cur} per 1,000 decisions", "95% interval"], rows)
    saved = kpi_report["labels_saved"]
    if saved is None:
        doc.paragraph("Labels saved: no label-efficiency curve given (--label-efficiency).")
        return
    doc.paragraph(describe_labels_saved(saved))
    doc.table(
        ["baseline budget", "baseline", "baseline ROC AUC", "SSL labels needed", "labels saved",
         f"cost saved ({cur})"],
        [[f"{r['baseline_labels']:,} ({r['fraction']:g})", r["baseline"],
          f"{r['baseline_roc_auc']:.4f}",
          f"{r['ssl_labels_needed']:,}" if r["reached"] else "never reached",
          _saved(r["labels_saved"]), _saved(r["cost_saved"], ",.2f")]
         for r in saved["by_baseline_budget"]],
    )  # fmt: skip


VERDICTS = {
    "candidate_costlier": "the interval excludes 0: the candidate costs more",
    "candidate_cheaper": "the interval excludes 0: the candidate costs less",
    "no_difference_shown": "the interval includes 0: no cost difference shown on these rows",
}


def _summary(doc: Document, report: dict[str, Any]) -> None:
    """What the numbers say, first: the cost difference and its interval, the quality deltas,
    the days on another population. Promotion itself is the team's decision."""
    doc.heading("Summary")
    items = []
    costs, verdict = report["kpi"]["decision_costs"], report["kpi"]["cost_verdict"]
    if costs is None:
        items.append("No labelled rows: cost and quality cannot be compared; agreement and "
                     "drift only.")  # fmt: skip
    else:
        d = costs["difference"]
        ci = d["interval_95"]
        between = f" (95% interval {ci[0]:+,.1f} to {ci[1]:+,.1f})" if ci else ""
        items.append(
            f"Cost, candidate - incumbent: {d['per_1000']:+,.1f} {costs['currency']} per "
            f"1,000 decisions on {costs['rows']:,} labelled rows{between}"
            + (f"; {VERDICTS[verdict]}." if verdict else ".")
        )
        overall = report["metrics"]["overall"]
        paired = overall["accuracy"].get("delta_interval_95") is not None
        items.append(
            f"Accuracy {_delta(overall['accuracy'])}, ROC AUC {_delta(overall['roc_auc'])} "
            "(candidate - incumbent"
            + ("; paired 95% intervals over the resamples of the cost interval)." if paired
               else "; no intervals: kpi.bootstrap is 0).")
        )  # fmt: skip
    flagged = report["drift"]["drifted_batches"]
    items.append(
        f"Input drift flagged in {', '.join(flagged)}: those days' numbers are on a different "
        "population."
        if flagged
        else "No input drift flagged."
    )
    items.append(f"Decisions agree on {report['agreement']['overall']:.1%} of rows.")
    doc.bullets(items)
    doc.paragraph("This report does not decide promotion; it states what the shadow rows show.")


def build_document(report: dict[str, Any], tmp: Path, kpi: KpiConfig) -> Document:
    doc = Document("Shadow test: candidate vs incumbent")
    doc.paragraph(READ_ONLY)
    inc = report["incumbent"]
    doc.bullets([
        f"Candidate: {report['candidate']['path']} (threshold {report['candidate']['threshold']:g})",
        f"Incumbent: {inc['path']} ({inc['kind']}, threshold {inc['threshold']:g})",
        f"Batches: {len(report['batches'])}, {report['rows']:,} rows",
    ])  # fmt: skip
    _summary(doc, report)
    skipped_files = report["files_not_read"]["files"]
    if skipped_files:
        doc.paragraph(
            f"Not read (data.format: {report['files_not_read']['data_format']} reads only its "
            f"own files in a folder): {', '.join(skipped_files)}. Convert them, or give them "
            "as --data one at a time."
        )
    doc.heading("Agreement")
    agreement = report["agreement"]
    doc.paragraph(
        f"Overall decision agreement {agreement['overall']:.4f}; "
        f"{report['disagreement_rows']:,} rows disagree."
    )
    labelled = any("candidate_accuracy" in b for b in agreement["by_batch"].values())
    header = ["batch", "rows", "agreement [95% interval]", "candidate positive rate",
              "incumbent positive rate"]  # fmt: skip
    header += ["labelled rows", "candidate accuracy", "incumbent accuracy"] if labelled else []
    doc.table(header, [
        [name, f"{b['rows']:,}", _interval(b["agreement"], b["agreement_interval_95"]),
         f"{b['candidate_selection_rate']:.4f}", f"{b['incumbent_selection_rate']:.4f}"]
        + ([f"{b['labelled_rows']:,}", _f(b.get("candidate_accuracy")),
            _f(b.get("incumbent_accuracy"))] if labelled else [])
        for name, b in agreement["by_batch"].items()
    ])  # fmt: skip
    doc.paragraph(
        "Intervals are Wilson 95% intervals of the batch's agreement; accuracy is on the "
        "batch's labelled rows only (labels that have not arrived yet are not counted)."
    )
    unseen = {n: b["unseen_levels"] for n, b in agreement["by_batch"].items()
              if b.get("unseen_levels")}  # fmt: skip
    if unseen:
        doc.paragraph(
            "Values a model never saw in training (scored as its 'other' level), rows per "
            "batch: "
            + "; ".join(
                f"{n} "
                + ", ".join(f"{m} {c} {k:,}" for m, cols in u.items() for c, k in cols.items())
                for n, u in unseen.items()
            )
            + "."
        )
    skipped = {n: b["empty_rows_skipped"] for n, b in agreement["by_batch"].items()
               if b.get("empty_rows_skipped")}  # fmt: skip
    if skipped:
        doc.paragraph(
            "Rows without a value in any cell were skipped (not scored): "
            + ", ".join(f"{n} {k:,}" for n, k in skipped.items())
            + "."
        )
    doc.image(tmp / "agreement.png", "Decision agreement per batch", "agreement.png")
    doc.heading("Who the models disagree on")
    doc.table(["feature", "agreeing rows", "disagreeing rows", "difference"], [
        [p["feature"],
         _f(p["agree_mean"], 2) if p["kind"] == "numeric" else f"{p['level']}: {p['agree_share']:.3f}",
         _f(p["disagree_mean"], 2) if p["kind"] == "numeric" else f"{p['level']}: {p['disagree_share']:.3f}",
         f"{p['effect']:+.3f} ({p['effect_name']})"]
        for p in report["disagreement_profile"][:10]
    ])  # fmt: skip
    metrics = report["metrics"]
    doc.heading("Metric deltas (candidate - incumbent)")
    if metrics["labelled_rows"]:
        doc.paragraph(f"On {metrics['labelled_rows']:,} labelled rows.")
        doc.table(["metric", "candidate", "incumbent", "delta [paired 95% interval]"], [
            [k, _f(v["candidate"]), _f(v["incumbent"]), _delta(v)]
            for k, v in metrics["overall"].items()
        ])  # fmt: skip
    else:
        doc.paragraph("No labels in the batches: quality metrics cannot be compared.")
    doc.heading("Fairness deltas per sensitive group")
    for column, table in metrics["fairness"].items():
        rows = [[f"{column}={g}", k, _f(v["candidate"]), _f(v["incumbent"]), _d(v["delta"])]
                for g, by in table["by_group"].items() for k, v in by.items()]  # fmt: skip
        rows += [[column, k, _f(v["candidate"]), _f(v["incumbent"]), _d(v["delta"])]
                 for k, v in table["gaps"].items()]  # fmt: skip
        doc.table(["group", "metric", "candidate", "incumbent", "delta"], rows)
    _drift_section(doc, report["drift"])
    doc.image(tmp / "psi.png", "PSI per batch and feature", "psi.png")
    doc.image(tmp / "scores.png", "Score distributions", "scores.png")
    _kpi_section(doc, report["kpi"], kpi)
    return doc


def write_report(tmp: Path, report: dict[str, Any], rows: pd.DataFrame, kpi: KpiConfig) -> None:
    plot_agreement(tmp / "agreement.png", report)
    plot_psi(tmp / "psi.png", report["drift"])
    plot_scores(tmp / "scores.png", rows)
    doc = build_document(report, tmp, kpi)
    (tmp / "shadow.md").write_text(doc.markdown(), encoding="utf-8")
    (tmp / "shadow.html").write_text(doc.html(), encoding="utf-8")
