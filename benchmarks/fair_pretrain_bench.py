"""Fairness-aware pretraining on UCI Adult: how much of `sex` the SCARF embedding gives away.

Anchor: plain SCARF (``pretrain.fairness.method: none``), rerun in the same process with
the same seed, epochs and batch. Against it: ``adversarial`` and ``penalty`` at several
weights. For every encoder:

- sensitive probe: logistic regression and gradient boosting (HGB) predict `sex` from
  the frozen embedding (fitted on 5,000 train rows, ROC AUC on 5,000 test rows) — the
  pretrain stage's own ``sensitive_probe_auc``;
- downstream: the finetune stage with configs/adult.yaml's settings (1% of the labels,
  demographic-parity policy, max_gap 0.02): test accuracy, ROC AUC, demographic-parity
  and equalized-odds differences for `sex`, of the unmitigated `ssl` model (the SSL ensemble: linear probe on the
  embedding averaged with the evidence head) and
  of the policy-selected `mitigated` model.

Two preparations: `sex` as an encoder input (the default, ``prepare.sensitive_as_features:
true``) and not (``false``: the encoder can only learn `sex` from proxies such as
relationship and marital status).

    .venv/bin/python benchmarks/fair_pretrain_bench.py --out runs/fair-pretrain --epochs 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from sklearn.metrics import roc_auc_score

from sslops.config import load_config
from sslops.finetune import finetune
from sslops.models.tabular import load_classifier
from sslops.prepare import PreparedData, prepare
from sslops.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]


def downstream(tuned: Path, data: PreparedData, name: str) -> dict[str, float]:
    model, _ = load_classifier(tuned, name)
    test = data.test
    with torch.no_grad():
        scores = model(torch.from_numpy(test.features)).numpy()
    predicted = (scores >= 0.5).astype(int)
    groups = test.groups("sex").to_numpy()
    y = test.target
    return {
        "accuracy": round(float(np.mean(predicted == y)), 4),
        "roc_auc": round(float(roc_auc_score(y, scores)), 4),
        "dp_difference": round(
            float(demographic_parity_difference(y, predicted, sensitive_features=groups)), 4
        ),
        "eo_difference": round(
            float(equalized_odds_difference(y, predicted, sensitive_features=groups)), 4
        ),
    }


def run(args: argparse.Namespace, variant: str, method: str, weight: float) -> dict[str, Any]:
    as_features = variant == "sex_input"
    overrides = [
        f"prepare.sensitive_as_features={str(as_features).lower()}",
        f"pretrain.epochs={args.epochs}",
        f"pretrain.threads={args.threads}",
        "pretrain.knn_every=0",
        "pretrain.fairness.probe=[logistic, hgb]",
        f"pretrain.fairness.method={method}",
        f"pretrain.fairness.weight={weight}",
    ]
    cfg = load_config(ROOT / "configs" / "adult.yaml", overrides)
    prepared = args.out / f"prepared-{variant}"
    if not prepared.exists():
        prepare(cfg, prepared)
    tag = f"{variant}-{method}-{weight:g}"
    started = time.perf_counter()
    encoder = pretrain(cfg, prepared, args.out / f"pretrain-{tag}")
    summary = json.loads((encoder / "summary.json").read_text())
    tuned = finetune(cfg, prepared, encoder, args.out / f"finetune-{tag}")
    data = PreparedData(prepared)
    report = json.loads((tuned / "finetune.json").read_text())
    row = {
        "variant": variant,
        "method": method,
        "weight": weight,
        "epochs": args.epochs,
        "pretrain_seconds": summary["seconds"],
        "final_loss": round(summary["final_loss"], 4),
        "probe_auc": summary["sensitive_probe_auc"]["sex"],
        "ssl": downstream(tuned, data, "ssl"),
        "mitigated": downstream(tuned, data, "mitigated"),
        "mitigated_selected": report["fairness"]["selected"],
        "policy_met_on_validation": report["fairness"]["policy_met_on_validation"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| prepare | method | λ | probe AUC LR | probe AUC HGB | ssl acc | ssl AUC | ssl DP | "
        "ssl EO | mitigated acc | mitigated AUC | mitigated DP | mitigated EO |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        s, m, p = r["ssl"], r["mitigated"], r["probe_auc"]
        weight = "–" if r["method"] == "none" else f"{r['weight']:g}"
        lines.append(
            f"| {r['variant']} | {r['method']} | {weight} | {p['logistic']:.3f} | "
            f"{p['hgb']:.3f} | {s['accuracy']:.4f} | {s['roc_auc']:.4f} | "
            f"{s['dp_difference']:.4f} | {s['eo_difference']:.4f} | {m['accuracy']:.4f} | "
            f"{m['roc_auc']:.4f} | {m['dp_difference']:.4f} | {m['eo_difference']:.4f} |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/fair-pretrain"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["sex_input", "sex_not_input"])
    parser.add_argument("--adversarial", type=float, nargs="*", default=[10.0])
    parser.add_argument("--penalty", type=float, nargs="*", default=[10.0, 100.0])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in args.variants:
        rows.append(run(args, variant, "none", 1.0))
        rows += [run(args, variant, "adversarial", w) for w in args.adversarial]
        rows += [run(args, variant, "penalty", w) for w in args.penalty]
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "results.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
