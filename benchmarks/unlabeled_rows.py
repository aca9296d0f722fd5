"""Rows without a label in the training file: pretrained on (sslops now) vs dropped (before).

UCI Adult's training file with the label left empty in all but ``--labeled`` of its rows (a
seeded draw per label draw), the test file as shipped. Both variants run the real stages
(`prepare`, `pretrain`, `finetune`) with configs/adult.yaml and `finetune.label_fraction=1.0`
(every label the file has); only `prepare.unlabeled` differs: `pretrain` keeps the unlabeled
rows for self-supervised pretraining, `drop` is what sslops did before (the encoder then sees
the labeled rows only). Fairness mitigation is off (`finetune.fairness.constraint=none`):
this measures the encoder. Reported per variant, mean over the draws: rows pretrained on and
test ROC AUC of the SSL linear probe (the encoder alone), the `ssl` model (the SSL ensemble)
and the `baseline` (logistic regression on the raw features, the same labels).

``--fairness``: the same with configs/adult.yaml's policy (demographic parity, max_gap 0.02)
on, to measure what the rows without a label do for fairness-aware fine-tuning: they feed
the demographic-parity penalties and half of them join the 10% validation split (about 30
labeled rows here) in estimating each candidate's gap. Adds the deployed `mitigated` model's
test accuracy and demographic-parity difference (`sex`), its validation-side estimate and the
rows that estimate was measured on.

    .venv/bin/python benchmarks/unlabeled_rows.py --out runs/bench/unlabeled --draws 3
    .venv/bin/python benchmarks/unlabeled_rows.py --out runs/bench/unlabeled-fair --draws 3 --fairness
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fairlearn.metrics import demographic_parity_difference
from sklearn.metrics import roc_auc_score

from sslops.config import load_config
from sslops.finetune import finetune
from sslops.models.tabular import load_classifier
from sslops.prepare import PreparedData, prepare
from sslops.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
ADULT = ROOT / "src" / "sslops" / "datasets" / "adult"
VARIANTS = ("pretrain", "drop")
MODELS = ("probe", "ssl", "baseline")


def partly_labeled(path: Path, labeled: int, seed: int) -> Path:
    """Adult's training file with every label but ``labeled`` (seeded) left empty."""
    with gzip.open(ADULT / "train.csv.gz", "rt", encoding="utf-8") as fh:
        frame = pd.read_csv(fh, dtype=str, keep_default_na=False)
    keep = np.random.default_rng(seed).choice(len(frame), size=labeled, replace=False)
    blank = np.ones(len(frame), dtype=bool)
    blank[keep] = False
    frame.loc[blank, "income"] = ""
    frame.to_csv(path, index=False)
    return path


def run(
    train: Path, variant: str, seed: int, out: Path, threads: int, fairness: bool = False,
    extra: tuple[str, ...] = (),
) -> dict[str, float]:  # fmt: skip
    overrides = [
        f"data.train={train}", f"prepare.unlabeled={variant}", f"seed={seed}",
        "finetune.label_fraction=1.0", "finetune.fairness.postprocessing=false",
        f"pretrain.threads={threads}",
    ]  # fmt: skip
    if not fairness:
        overrides.append("finetune.fairness.constraint=none")
    overrides += extra
    cfg = load_config(ROOT / "configs" / "adult.yaml", overrides)
    started = time.perf_counter()
    prepared = prepare(cfg, out / "prepare")
    pretrained = pretrain(cfg, prepared, out / "pretrain")
    tuned = finetune(cfg, prepared, pretrained, out / "finetune")
    data = PreparedData(prepared)
    row: dict[str, float] = {
        "labeled_train_rows": len(data.train.target),
        "rows_pretrained_on": json.loads((pretrained / "summary.json").read_text())["rows"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    for name in MODELS:
        model, _ = load_classifier(tuned, name)
        with torch.no_grad():
            score = model(torch.from_numpy(data.test.features)).numpy()
        row[f"{name}_roc_auc"] = round(float(roc_auc_score(data.test.target, score)), 4)
    if fairness:
        report = json.loads((tuned / "finetune.json").read_text())["fairness"]
        chosen = next(c for c in report["candidates"] if c["name"] == report["selected"])
        model, meta = load_classifier(tuned, "mitigated")
        with torch.no_grad():
            score = model(torch.from_numpy(data.test.features)).numpy()
        predicted = (score >= meta.get("threshold", 0.5)).astype(int)
        row["mitigated_accuracy"] = round(float(np.mean(predicted == data.test.target)), 4)
        row["mitigated_test_dp"] = round(float(demographic_parity_difference(
            data.test.target, predicted, sensitive_features=data.test.groups("sex"))), 4)  # fmt: skip
        row["mitigated_estimated_dp"] = round(chosen["demographic_parity_difference"], 4)
        rows_text = report["gap_rows"]["demographic_parity"]
        row["dp_estimate_rows"] = sum(
            int(w) for w in rows_text.replace("(", " ").split() if w.isdigit()
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "unlabeled")
    parser.add_argument("--labeled", type=int, default=326, help="labels kept (1%% of 32,561)")
    parser.add_argument("--draws", type=int, default=3, help="label draws (seeds 0..N-1)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="a further config override for every run (as sslops --set)",
    )
    parser.add_argument(
        "--fairness", action="store_true", help="the demographic-parity policy on (see above)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for draw in range(args.draws):
        train = partly_labeled(args.out / f"train-{draw}.csv", args.labeled, draw)
        for variant in args.variants:
            row = run(train, variant, draw, args.out / f"{variant}-{draw}", args.threads,
                      args.fairness, tuple(args.overrides))  # fmt: skip
            rows.append({"draw": draw, "variant": variant, **row})
            print(json.dumps(rows[-1]), flush=True)
    summary = {
        variant: {
            key: round(float(np.mean([r[key] for r in rows if r["variant"] == variant])), 4)
            for key in rows[0]
            if key not in ("draw", "variant")
        }
        for variant in args.variants
    }
    result = {"labeled": args.labeled, "draws": args.draws, "fairness": args.fairness,
              "overrides": args.overrides, "rows": rows, "mean": summary}  # fmt: skip
    (args.out / "unlabeled_rows.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| prepare.unlabeled | rows pretrained on | SSL probe | ssl (ensemble) | baseline |")
    print("|---|---:|---:|---:|---:|")
    for variant, m in summary.items():
        print(f"| {variant} | {m['rows_pretrained_on']:,.0f} | {m['probe_roc_auc']:.4f} | "
              f"{m['ssl_roc_auc']:.4f} | {m['baseline_roc_auc']:.4f} |")  # fmt: skip
    if args.fairness:
        print(
            "\n| prepare.unlabeled | DP estimated on (rows) | estimate | test DP | test accuracy |"
        )
        print("|---|---:|---:|---:|---:|")
        for variant, m in summary.items():
            print(f"| {variant} | {m['dp_estimate_rows']:,.0f} | {m['mitigated_estimated_dp']:.4f} "
                  f"| {m['mitigated_test_dp']:.4f} | {m['mitigated_accuracy']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
