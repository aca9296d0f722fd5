"""The shadow stage: a candidate ONNX model scored beside the incumbent on daily batches.

Read-only: both models score copies of the batches, nothing is sent back, no decision
changes. The artifact holds ``shadow.json`` (every number), ``shadow.md``,
``shadow.html`` (self-contained, PNGs embedded), ``scores.csv`` (both models' score
and decision per row) and the plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sslops.artifacts import replacing, timed_stage, write_artifact, write_json
from sslops.config import Config, DataConfig, KpiConfig, ShadowConfig
from sslops.data.canonicalize import label_hits
from sslops.data.readers import TABLE_SUFFIXES
from sslops.errors import DataError
from sslops.evaluate.metrics import SUMMARY, model_metrics, paired_delta_intervals
from sslops.shadow.drift import column_drift, flag, numeric_drift, quoted
from sslops.shadow.kpi import (
    cost_verdict,
    decision_costs,
    labels_saved,
    read_label_efficiency,
)
from sslops.shadow.report import write_report
from sslops.shadow.scoring import (
    DEFAULT_NA,
    Batch,
    OnnxClassifier,
    PredictionLog,
    batch_files,
    load_model,
    read_batch,
)


def _labels(batch: Batch, data: DataConfig | None) -> np.ndarray:
    """1/0 per row where the batch has the label, NaN elsewhere."""
    y = np.full(len(batch.frame), np.nan)
    if data is None or data.label not in batch.frame.columns:
        return y
    column = batch.frame[data.label]
    known = column.notna().to_numpy()
    hit = label_hits(column, data.positive).to_numpy(dtype=bool)
    y[known] = hit[known]
    return y


def wilson(hits: int, n: int, z: float = 1.959963984540054) -> list[float] | None:
    """Wilson score 95% interval of a proportion (sane for a dozen rows and for 0 or 1)."""
    if not n:
        return None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(centre - half, 0.0)), float(min(centre + half, 1.0))]


def _shown(values: list[Any], limit: int = 20, quote: bool = False) -> str:
    """Up to ``limit`` values for a message, then how many there are in all."""
    text = [repr(v) if quote else str(v) for v in values[:limit]]
    more = f", ... ({len(values)} in all)" if len(values) > limit else ""
    return ", ".join(text) + more


def _check_sensitive(batches: list[Batch], sensitive: list[str]) -> None:
    """Every configured data.sensitive column is in every batch: a missing one would turn
    the fairness section into a single group (or a "nan" group) without a word."""
    for column in sensitive:
        lacking = [b for b in batches if column not in b.frame.columns]
        if not lacking:
            continue
        seen = list(dict.fromkeys(c for b in batches for c in b.frame.columns))
        if len(lacking) == len(batches):
            raise DataError(
                f"data.sensitive column {column!r} is in none of the batches "
                f"(columns: {_shown(seen)}); expected each data.sensitive column in every batch"
            )
        having = next(b for b in batches if column in b.frame.columns)
        raise DataError(
            f"data.sensitive column {column!r} is missing from batch {lacking[0].path} "
            f"(columns: {_shown(list(lacking[0].frame.columns))}); expected it in every "
            f"batch, as in {having.path}"
        )


def _not_read(data: Path, fmt: str) -> list[str]:
    """Files of the folder in the other table format, which data.format leaves out: a
    Parquet day among CSV days was skipped without a word (the report said 10 batches of
    a folder of 11 days)."""
    if not data.is_dir():
        return []
    fmt = fmt if fmt in TABLE_SUFFIXES else "csv"  # as batch_files reads the folder
    other = tuple(s for f, suffixes in TABLE_SUFFIXES.items() if f != fmt for s in suffixes)
    return sorted(p.name for p in data.iterdir() if p.is_file() and p.name.endswith(other))


def _check_unique_ids(batches: list[Batch], id_column: str | None) -> None:
    """Row ids are unique across the batches when the incumbent is a prediction log: it is
    looked up by row id, so a day that reused another day's ids was given that day's
    incumbent scores and decisions without a word."""
    column = f"column {id_column!r}" if id_column else "'<file stem>:<row number>'"
    seen: dict[str, Batch] = {}
    for batch in batches:
        ids = pd.Series(batch.row_ids)
        repeated = ids[ids.duplicated()]
        if len(repeated):
            raise DataError(
                f"--data {batch.path}: row id {repeated.iloc[0]!r} ({column}) "
                f"appears more than once ({repeated.nunique()} id(s) repeated); expected "
                "unique row ids (a prediction log is looked up by row id)"
            )
        clash = [i for i in batch.row_ids if i in seen]
        if clash:
            raise DataError(
                f"--data {batch.path}: row id {clash[0]!r} ({column}) is also in "
                f"{seen[clash[0]].path} ({len(clash)} id(s) shared); expected row ids unique "
                "across the batches (a prediction log is looked up by row id)"
            )
        seen.update(dict.fromkeys(batch.row_ids, batch))


def _check_positive(batches: list[Batch], labels: list[np.ndarray], data: DataConfig) -> None:
    """data.positive occurs in the label column of the labelled batches taken together (one
    batch with only negatives is fine); without it every label would read as negative."""
    labelled = [(b, y) for b, y in zip(batches, labels, strict=True) if (~np.isnan(y)).any()]
    if not labelled or any(np.nansum(y) > 0 for _, y in labelled):
        return
    seen = list(
        dict.fromkeys(v for b, _ in labelled for v in b.frame[data.label].dropna().tolist())
    )
    raise DataError(
        f"data.positive {data.positive!r} does not occur in label column {data.label!r} of "
        f"the batches; values seen: {_shown(seen, limit=10, quote=True)}"
    )


def _profile(rows: pd.DataFrame, frame: pd.DataFrame, features: list[str]) -> list[dict]:
    """Each feature in disagreeing vs agreeing rows, largest difference first."""
    disagree = (rows["candidate_decision"] != rows["incumbent_decision"]).to_numpy()
    out = []
    for name in features:
        column = frame[name]
        a, d = column[~disagree], column[disagree]
        if pd.api.types.is_numeric_dtype(column):
            spread = float(column.std()) or 1.0
            effect = (float(d.mean()) - float(a.mean())) / spread if len(d) and len(a) else 0.0
            out.append({"feature": name, "kind": "numeric", "agree_mean": float(a.mean()),
                        "disagree_mean": float(d.mean()) if len(d) else None,
                        "effect": effect, "effect_name": "standardized mean difference"})  # fmt: skip
        else:
            shares_a = a.astype(str).value_counts(normalize=True)
            shares_d = d.astype(str).value_counts(normalize=True)
            diff = shares_d.subtract(shares_a, fill_value=0.0)
            top = str(diff.abs().idxmax()) if len(diff) else ""
            held = int((column.astype(str) == top).sum())
            out.append({"feature": name, "kind": "categorical", "level": quoted(top, held),
                        "agree_share": float(shares_a.get(top, 0.0)),
                        "disagree_share": float(shares_d.get(top, 0.0)),
                        "effect": float(0.5 * diff.abs().sum()) if len(d) else 0.0,
                        "effect_name": "total variation distance"})  # fmt: skip
    return sorted(out, key=lambda r: -abs(r["effect"]))


def _fairness(cand: dict, inc: dict, labelled: bool) -> dict[str, Any]:
    keys = ("selection_rate", "tpr", "fpr") if labelled else ("selection_rate",)
    gaps = ("dp_difference", "eo_difference") if labelled else ("dp_difference",)
    out: dict[str, Any] = {}
    for column, groups in cand["by_group"].items():
        by_group = {
            g: {k: {"candidate": v[k], "incumbent": inc["by_group"][column][g][k],
                    "delta": v[k] - inc["by_group"][column][g][k]} for k in keys}
            for g, v in groups.items()
        }  # fmt: skip
        gap = {
            k: {"candidate": cand["gaps"][column][k], "incumbent": inc["gaps"][column][k],
                "delta": cand["gaps"][column][k] - inc["gaps"][column][k]} for k in gaps
        }  # fmt: skip
        out[column] = {"by_group": by_group, "gaps": gap}
    return out


def _metrics(
    rows: pd.DataFrame, groups: dict[str, np.ndarray], thresholds: dict, resamples: int,
    seed: int,
) -> dict:  # fmt: skip
    """Both models' metrics and candidate - incumbent; on labelled rows each summary delta
    gets a paired 95% interval over ``resamples`` row resamples drawn from ``seed`` (the
    rows of the cost intervals: :func:`sslops.shadow.kpi.decision_costs` draws the same)."""
    labelled = rows["y"].notna().to_numpy()
    if labelled.sum() == 0:
        # No labels: selection rates per group only (model_metrics needs a y; it is ignored).
        y = np.zeros(len(rows), dtype=int)
        cand = model_metrics(y, rows["candidate_score"].to_numpy(), thresholds["candidate"],
                             groups, predicted=rows["candidate_decision"].to_numpy(),
                             group_table="counts")  # fmt: skip
        inc = model_metrics(y, rows["incumbent_score"].to_numpy(), thresholds["incumbent"],
                            groups, predicted=rows["incumbent_decision"].to_numpy(),
                            group_table="counts")  # fmt: skip
        return {"labelled_rows": 0, "fairness": _fairness(cand, inc, labelled=False)}
    sub = rows[labelled]
    y = sub["y"].to_numpy().astype(int)
    part = {k: v[labelled] for k, v in groups.items()}
    result = {}
    for model in ("candidate", "incumbent"):
        result[model] = model_metrics(
            y, sub[f"{model}_score"].to_numpy(), thresholds[model], part,
            predicted=sub[f"{model}_decision"].to_numpy(), group_table="counts",
        )  # fmt: skip
    cand, inc = result["candidate"], result["incumbent"]
    intervals = paired_delta_intervals(
        y, (sub["candidate_score"].to_numpy(), sub["incumbent_score"].to_numpy()),
        (sub["candidate_decision"].to_numpy(), sub["incumbent_decision"].to_numpy()),
        part[next(iter(part))], resamples, seed,
    )  # fmt: skip
    overall = {
        k: {"candidate": cand[k], "incumbent": inc[k], "delta": cand[k] - inc[k],
            "delta_interval_95": intervals.get(k)}
        for k in SUMMARY
    }  # fmt: skip
    return {"labelled_rows": int(labelled.sum()), "overall": overall,
            "fairness": _fairness(cand, inc, labelled=True)}  # fmt: skip


def _drift(
    reference: pd.DataFrame, ref_scores: dict[str, np.ndarray | None], batches: list[Batch],
    rows: pd.DataFrame, features: list[str], settings: ShadowConfig, reference_name: str,
) -> dict[str, Any]:  # fmt: skip
    alpha = settings.p_value / max(len(features), 1)
    out: dict[str, Any] = {
        "reference": reference_name, "psi_threshold": settings.psi_threshold,
        "alpha_per_feature": alpha, "alpha": settings.p_value, "batches": {},
    }  # fmt: skip
    for batch in batches:
        if batch.frame is reference:  # the first batch is the reference: nothing to test
            continue
        per_feature = {}
        for name in features:
            result = column_drift(reference[name], batch.frame[name], settings.bins)
            per_feature[name] = {**result, "drifted": flag(result, settings.psi_threshold, alpha)}
        scores = {}
        here = rows[rows["batch"] == batch.name]
        for model, ref in ref_scores.items():
            if ref is not None:
                result = numeric_drift(ref, here[f"{model}_score"].to_numpy(), settings.bins)
                scores[model] = {**result, "drifted": flag(result, settings.psi_threshold, alpha)}
        drifted = sorted(n for n, r in per_feature.items() if r["drifted"])
        noise = max((r["psi_noise"] for r in per_feature.values()), default=0.0)
        out["batches"][batch.name] = {
            "rows": len(batch.frame), "features": per_feature, "scores": scores,
            "drifted_features": drifted, "drifted": bool(drifted),
            # Sampling noise alone reaches the PSI threshold: PSI says nothing here.
            "psi_noise": noise, "psi_meaningful": noise < settings.psi_threshold,
        }  # fmt: skip
    out["drifted_batches"] = [b for b, r in out["batches"].items() if r["drifted"]]
    return out


@timed_stage("shadow")
def shadow(
    candidate: Path, incumbent: Path, data: Path, out_dir: Path, cfg: Config | None = None,
    *, reference: Path | None = None, label_efficiency: Path | None = None,
) -> Path:  # fmt: skip
    """Score every batch with both models and write the shadow report artifact."""
    candidate, incumbent, data = Path(candidate), Path(incumbent), Path(data)
    # Before any work: OUT may not replace the user's files nor lie inside an input (the
    # export artifact holding --candidate, the --data folder, ...), which it would modify;
    # held to the end, so a second command writing OUT meanwhile is refused.
    with replacing(Path(out_dir), "shadow", "shadow artifact", stage="shadow",
                   inputs=[candidate, incumbent, data, reference, label_efficiency]):  # fmt: skip
        return _shadow(candidate, incumbent, data, Path(out_dir), cfg, reference=reference,
                       label_efficiency=label_efficiency)  # fmt: skip


def _shadow(
    candidate: Path, incumbent: Path, data: Path, out_dir: Path, cfg: Config | None,
    *, reference: Path | None, label_efficiency: Path | None,
) -> Path:  # fmt: skip
    settings = cfg.shadow if cfg else ShadowConfig()
    kpi = cfg.kpi if cfg else KpiConfig()
    na = cfg.data.na_values if cfg else DEFAULT_NA
    threshold = cfg.evaluate.threshold if cfg else 0.5
    if not candidate.name.endswith(".onnx"):
        raise DataError(f"--candidate {candidate}: expected an ONNX model (.onnx)")
    if not candidate.is_file():
        raise DataError(f"--candidate {candidate}: no such file; expected an ONNX model")
    cand_model = OnnxClassifier(candidate, threshold, "--candidate")
    inc_model = load_model(incumbent, threshold, "--incumbent")
    fmt = cfg.data.format if cfg else "csv"
    files = batch_files(data, fmt)
    curve = read_label_efficiency(Path(label_efficiency)) if label_efficiency else None
    # The models' text inputs stay text as written (a code 02134 is not the number 2134).
    texts = [i.name for m in (cand_model, inc_model) if isinstance(m, OnnxClassifier)
             for i in m.inputs if i.type == "tensor(string)"]  # fmt: skip
    batches = [read_batch(f, na, settings.id_column, "--data", texts) for f in files]
    ref_batch = (
        read_batch(Path(reference), na, None, "--reference", texts) if reference else batches[0]
    )
    model_columns = list(cand_model.columns)
    if isinstance(inc_model, OnnxClassifier):
        model_columns += [c for c in inc_model.columns if c not in model_columns]
    absent = [c for c in model_columns if c not in ref_batch.frame.columns]
    if reference and absent:  # refused before any batch is scored (a first batch is checked then)
        raise DataError(
            f"--reference {ref_batch.path}: missing column {absent[0]!r}; expected every column "
            f"the models read ({', '.join(model_columns)}), as in the batches"
        )
    if isinstance(inc_model, PredictionLog):
        _check_unique_ids(batches, settings.id_column)
    features = [c for c in model_columns if c in ref_batch.frame.columns]
    labels = [_labels(batch, cfg.data if cfg else None) for batch in batches]
    if cfg:
        _check_sensitive(batches, cfg.data.sensitive)
        _check_positive(batches, labels, cfg.data)

    parts, frames = [], []
    for batch, y in zip(batches, labels, strict=True):
        c, i = cand_model.score(batch), inc_model.score(batch)
        parts.append(pd.DataFrame({
            "batch": batch.name, "row_id": batch.row_ids,
            "candidate_score": c.score, "candidate_decision": c.decision,
            "incumbent_score": i.score, "incumbent_decision": i.decision,
            "y": y,
        }))  # fmt: skip
        frames.append(batch.frame)
    rows = pd.concat(parts, ignore_index=True)
    frame = pd.concat(frames, ignore_index=True)

    sensitive = cfg.data.sensitive if cfg else []  # in every batch (_check_sensitive)
    groups = {c: frame[c].astype(str).to_numpy() for c in sensitive} or {
        "all rows": np.array(["all"] * len(frame))
    }
    thresholds = {"candidate": cand_model.threshold, "incumbent": inc_model.threshold}
    agree = rows["candidate_decision"] == rows["incumbent_decision"]
    per_batch = {}
    models = (("candidate", cand_model), ("incumbent", inc_model))
    for batch in batches:
        here = rows["batch"] == batch.name
        entry: dict[str, Any] = {
            "rows": int(here.sum()), "agreement": float(agree[here].mean()),
            "agreement_interval_95": wilson(int(agree[here].sum()), int(here.sum())),
            "candidate_selection_rate": float(rows.loc[here, "candidate_decision"].mean()),
            "incumbent_selection_rate": float(rows.loc[here, "incumbent_decision"].mean()),
        }  # fmt: skip
        if batch.empty_rows:
            entry["empty_rows_skipped"] = batch.empty_rows
        # Text values a model never saw in training: it scores them as its "other" level.
        unseen = {
            m: model.unseen(batch) for m, model in models if isinstance(model, OnnxClassifier)
        }
        unseen = {m: counts for m, counts in unseen.items() if counts}
        if unseen:
            entry["unseen_levels"] = unseen
        known = here & rows["y"].notna()
        entry["labelled_rows"] = int(known.sum())
        if known.any():
            y = rows.loc[known, "y"].to_numpy()
            for model in ("candidate", "incumbent"):
                entry[f"{model}_accuracy"] = float(
                    np.mean(rows.loc[known, f"{model}_decision"].to_numpy() == y)
                )
        per_batch[batch.name] = entry

    ref_scores: dict[str, np.ndarray | None] = {}
    if reference:
        ref_scores["candidate"] = cand_model.score(ref_batch).score
        is_log = isinstance(inc_model, PredictionLog)
        ref_scores["incumbent"] = None if is_log else inc_model.score(ref_batch).score
    else:
        first = rows["batch"] == batches[0].name
        for model in ("candidate", "incumbent"):
            ref_scores[model] = rows.loc[first, f"{model}_score"].to_numpy()
    ref_name = str(reference) if reference else f"first batch ({batches[0].name})"
    labelled = rows["y"].notna().to_numpy()
    report: dict[str, Any] = {
        "read_only": True,
        "candidate": {
            "path": str(candidate),
            "threshold": cand_model.threshold,
            "inputs": cand_model.columns,
        },
        "incumbent": {
            "path": str(incumbent),
            "threshold": inc_model.threshold,
            "kind": "predictions" if isinstance(inc_model, PredictionLog) else "onnx",
        },
        "batches": [str(f) for f in files],
        "files_not_read": {"data_format": fmt, "files": _not_read(data, fmt)},
        "rows": len(rows),
        "agreement": {"overall": float(agree.mean()), "by_batch": per_batch},
        "disagreement_rows": int((~agree).sum()),
        "disagreement_profile": _profile(rows, frame, features),
        "metrics": _metrics(rows, groups, thresholds, kpi.bootstrap, cfg.seed if cfg else 0),
        "drift": _drift(ref_batch.frame, ref_scores, batches, rows, features, settings, ref_name),
        "kpi": {
            "decision_costs": decision_costs(
                rows.loc[labelled, "y"].to_numpy().astype(int),
                rows.loc[labelled, "candidate_decision"].to_numpy(),
                rows.loc[labelled, "incumbent_decision"].to_numpy(),
                kpi,
                cfg.seed if cfg else 0,
            )
            if labelled.any()
            else None,
            "labels_saved": labels_saved(curve, kpi) if curve else None,
        },
    }
    report["kpi"]["cost_verdict"] = cost_verdict(report["kpi"]["decision_costs"])
    sources = {f"data.{i}": f for i, f in enumerate(files)} | {
        "candidate": candidate,
        "incumbent": incumbent,
    }
    if reference:
        sources["reference"] = Path(reference)
    config = {"config": cfg.model_dump(mode="json") if cfg else None,
              "label_efficiency": str(label_efficiency) if label_efficiency else None}  # fmt: skip
    with write_artifact(out_dir, "shadow", config, sources=sources) as tmp:
        rows.rename(columns={"y": "label"}).to_csv(tmp / "scores.csv", index=False)
        write_json(tmp / "shadow.json", report)
        write_report(tmp, report, rows, kpi)
    return Path(out_dir)
