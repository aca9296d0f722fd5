"""Acceptance demo of `sslops shadow` on UCI Adult (issue 8).

- candidate: the ONNX model that `sslops run` exports (SSL-pretrained, fairness-mitigated,
  1% of the training labels, configs/adult.yaml);
- incumbent: logistic regression on the raw columns (imputed, standardized, one-hot)
  trained on 10% of the training labels, exported to ONNX over the same raw columns;
- data: the Adult test file cut into 10 "daily" batches (shuffled, seed 0), with drift
  injected into two of them: day04 is ten years older (`age` + 10), day08 has half of its
  rows' `occupation` replaced by "Exec-managerial";
- the label-efficiency curve of the run's evaluate stage for the labels-saved KPI.

The report must flag exactly day04 and day08. Figures go to OUT/shadow_adult.json.

    .venv/bin/python benchmarks/shadow_adult.py --out runs/shadow-adult              # builds a run
    .venv/bin/python benchmarks/shadow_adult.py --out runs/shadow-adult --run runs/demo  # reuses one
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sslops.cli import main as sslops_main
from sslops.config import load_config, read_yaml
from sslops.data.readers import resolve_path
from sslops.finetune.stage import stratified_label_subset
from sslops.prepare import PreparedData
from sslops.shadow.incumbent import logistic_regression_onnx
from sslops.shadow.scoring import OnnxClassifier

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "adult.yaml"
# Small settings for a run built here: fewer epochs, one thread, no full fine-tuning in the
# label-efficiency curve (the probe and the baselines are kept).
SMALL = [
    "pretrain.epochs=10",
    "pretrain.threads=1",
    "evaluate.bootstrap=50",
    "evaluate.label_efficiency.full_fine_tune=false",
]
# Illustrative business KPIs (a marketing offer to predicted high earners): a wasted offer
# costs 10, a missed customer 25, a label 2.
KPI = {
    "currency": "EUR",
    "cost_per_label": 2.0,
    "costs": {"false_positive": 10.0, "false_negative": 25.0},
    "bootstrap": 1000,
}
DRIFTED = ("day04", "day08")


def build_run(out: Path) -> Path:
    from sslops.pipeline.local import run_local

    run_local(load_config(CONFIG, SMALL), out)
    return out


def make_batches(directory: Path, seed: int) -> list[Path]:
    raw = pd.read_csv(resolve_path("package:adult/test.csv.gz", "data.test"), dtype=str,
                      keep_default_na=False)  # fmt: skip
    shuffled = raw.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(shuffled)), 10), start=1):
        batch = shuffled.iloc[part].copy()
        name = f"day{i:02d}"
        if name == "day04":
            batch["age"] = (batch["age"].astype(int) + 10).astype(str)
        if name == "day08":
            batch.loc[batch.index[: len(batch) // 2], "occupation"] = "Exec-managerial"
        paths.append(directory / f"{name}.csv")
        batch.to_csv(paths[-1], index=False)
    return paths


def build_incumbent(run: Path, candidate: Path, path: Path, seed: int) -> dict:
    data = PreparedData(run / "prepare")
    train = data.train
    rows = stratified_label_subset(train.target, 0.10, seed)
    columns = OnnxClassifier(candidate, 0.5, "--candidate").columns
    cfg = load_config(CONFIG)
    logistic_regression_onnx(
        train.frame.iloc[rows], train.target[rows], columns, path,
        regularization=cfg.finetune.regularization, max_categories=cfg.prepare.max_categories,
    )  # fmt: skip
    return {"labels": len(rows), "fraction": 0.10, "train_rows": len(train.target)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "shadow-adult")
    parser.add_argument("--run", type=Path, help="an `sslops run` folder to reuse")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run = args.run.resolve() if args.run else build_run(out / "run")
    built = time.perf_counter() - started
    candidate = run / "export" / "model.onnx"
    incumbent = out / "incumbent.onnx"
    labels = build_incumbent(run, candidate, incumbent, args.seed)
    make_batches(out / "batches", args.seed)
    config = out / "shadow.yaml"
    raw = read_yaml(CONFIG.read_text(encoding="utf-8"))
    raw["kpi"] = KPI
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    command = [
        "shadow", "--candidate", str(candidate), "--incumbent", str(incumbent),
        "--data", str(out / "batches"), "--out", str(out / "report"), "--config", str(config),
        "--label-efficiency", str(run / "evaluate"),
    ]  # fmt: skip
    print("sslops " + " ".join(command))
    t = time.perf_counter()
    if sslops_main(command) != 0:
        raise SystemExit("sslops shadow failed")
    shadow_s = time.perf_counter() - t
    report = json.loads((out / "report" / "shadow.json").read_text(encoding="utf-8"))
    metrics = report["metrics"]
    flagged = report["drift"]["drifted_batches"]
    summary = {
        "run": str(run), "run_build_s": round(built, 1) if not args.run else None,
        "shadow_s": round(shadow_s, 1), "incumbent": labels, "rows": report["rows"],
        "agreement": report["agreement"]["overall"],
        "agreement_by_batch": {k: v["agreement"] for k, v in report["agreement"]["by_batch"].items()},
        "metrics": metrics["overall"],
        "fairness_gaps": {c: t["gaps"] for c, t in metrics["fairness"].items()},
        "decision_costs": report["kpi"]["decision_costs"],
        "labels_saved": report["kpi"]["labels_saved"],
        "flagged_batches": flagged,
        "drifted_features": {b: report["drift"]["batches"][b]["drifted_features"] for b in flagged},
        "injected": list(DRIFTED),
        "acceptance_flags_exactly_the_injected_batches": flagged == list(DRIFTED),
    }  # fmt: skip
    (out / "shadow_adult.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in summary.items() if k != "labels_saved"}, indent=2))
    if summary["labels_saved"]:
        print(json.dumps(summary["labels_saved"]["by_baseline_budget"], indent=2))


if __name__ == "__main__":
    main()
