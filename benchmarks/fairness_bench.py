"""Fairness and label-efficiency benchmark on UCI Adult (test split, sensitive attribute `sex`).

Anchors, rerun in the same process on the same prepared data:
- fairlearn ExponentiatedGradient(DemographicParity / EqualizedOdds, bound 0.01) over
  logistic regression on the raw encoded features, 100% of the labels;
- logistic regression and HistGradientBoosting with 1% of the labels (5 draws).

sslops: the finetune stage's policy-selected `mitigated` model for each constraint with
max_gap 0.02 (100% of the labels), and the label-efficiency curve at 1% (5 draws): the SSL
probe, joint probe, ensemble and fine-tune against the supervised baselines.

    .venv/bin/python benchmarks/fairness_bench.py --out runs/fairness-bench
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from fairlearn.reductions import DemographicParity, EqualizedOdds, ExponentiatedGradient
from sklearn.linear_model import LogisticRegression

from sslops.artifacts import read_meta
from sslops.config import Config, load_config
from sslops.evaluate.label_efficiency import curve_markdown, label_efficiency
from sslops.finetune import finetune
from sslops.models.tabular import load_classifier
from sslops.prepare import PreparedData, prepare
from sslops.pretrain import pretrain
from sslops.pretrain.stage import load_encoder

ROOT = Path(__file__).resolve().parents[1]


def _scores(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _report(y: np.ndarray, predicted: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": round(float(np.mean(predicted == y)), 4),
        "dp_difference": round(
            float(demographic_parity_difference(y, predicted, sensitive_features=groups)), 4
        ),
        "eo_difference": round(
            float(equalized_odds_difference(y, predicted, sensitive_features=groups)), 4
        ),
    }


def fairlearn_anchor(data: PreparedData, constraint: str) -> dict[str, float]:
    moment = DemographicParity(difference_bound=0.01) if constraint == "demographic_parity" else (
        EqualizedOdds(difference_bound=0.01)
    )  # fmt: skip
    train, test = data.train, data.test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reduction = ExponentiatedGradient(LogisticRegression(max_iter=2000), moment)
        reduction.fit(
            train.features, train.target, sensitive_features=train.groups("sex").to_numpy()
        )
        predicted = reduction.predict(test.features, random_state=0)
    return _report(test.target, np.asarray(predicted), test.groups("sex").to_numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "fairness-bench")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "adult.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument(
        "--fractions", default="0.01", help="Label fractions of the curve, comma-separated."
    )
    parser.add_argument("--transfer", default="full", choices=["full", "linear_probe"])
    parser.add_argument(
        "--constraints", nargs="+", default=["demographic_parity", "equalized_odds"],
        choices=["demographic_parity", "equalized_odds"],
    )  # fmt: skip
    parser.add_argument("--skip-label-efficiency", action="store_true", help="Fairness part only.")
    parser.add_argument("--skip-fairness", action="store_true", help="Label-efficiency part only.")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    out: Path = args.out
    started = time.perf_counter()
    prepared = out / "prepare"
    if not prepared.is_dir():
        prepare(cfg, prepared)
    pretrained = out / "pretrain"
    if not pretrained.is_dir():
        pretrain(cfg, prepared, pretrained)
    data = PreparedData(prepared)
    test = data.test
    groups = test.groups("sex").to_numpy()
    results: dict[str, dict] = {
        "artifacts": {stage: _provenance(out / stage, stage, cfg) for stage in STAGES},
        "fairness": {},
        "label_efficiency": {},
    }
    for constraint in [] if args.skip_fairness else args.constraints:
        run_cfg = load_config(args.config, [
            *args.overrides, "finetune.label_fraction=1.0", f"finetune.transfer={args.transfer}",
            f"finetune.fairness.constraint={constraint}", "finetune.fairness.max_gap=0.02",
            "finetune.fairness.postprocessing=false",
        ])  # fmt: skip
        tuned = finetune(run_cfg, prepared, pretrained, out / f"finetune-{constraint}")
        model, _ = load_classifier(tuned, "mitigated")
        predicted = (_scores(model, test.features) >= 0.5).astype(int)
        report = json.loads((tuned / "finetune.json").read_text())["fairness"]
        results["fairness"][constraint] = {
            "sslops_mitigated": {**_report(test.target, predicted, groups),
                                 "selected": report["selected"],
                                 "policy_met_on_validation": report["policy_met_on_validation"],
                                 "validation": _selected_row(report)},
            "fairlearn_exponentiated_gradient_lr": fairlearn_anchor(data, constraint),
        }  # fmt: skip
        print(constraint, json.dumps(results["fairness"][constraint]), flush=True)

    if args.skip_label_efficiency:
        _finish(results, out, started)
        return
    le_cfg = load_config(args.config, [
        *args.overrides, f"evaluate.label_efficiency.fractions=[{args.fractions}]",
        f"evaluate.label_efficiency.draws={args.draws}",
    ])  # fmt: skip
    curve = label_efficiency(le_cfg, data, load_encoder(pretrained).eval())
    by_point: dict[str, dict[str, list[float]]] = {}
    for row in curve["rows"]:
        by_point.setdefault(str(row["fraction"]), {}).setdefault(row["model"], [])
        by_point[str(row["fraction"])][row["model"]].append(row["roc_auc"])
    results["label_efficiency"] = {
        "mean_roc_auc_by_fraction": {
            fraction: {
                model: {"mean_roc_auc": round(float(np.mean(v)), 4), "min": round(min(v), 4),
                        "max": round(max(v), 4), "draws": len(v)}
                for model, v in models.items()
            }
            for fraction, models in by_point.items()
        },
        "crossings": curve["crossings"],
    }  # fmt: skip
    print(curve_markdown(curve), flush=True)
    _finish(results, out, started)


STAGES = ("prepare", "pretrain")


def _provenance(path: Path, stage: str, cfg: Config) -> dict[str, object]:
    """Which code made a (possibly reused) artifact, and whether its settings are today's.

    A reused ``prepare/`` or ``pretrain/`` from an older checkout keeps its old behaviour
    (another split, other rows): the figures would not be the current code's. Said on
    stderr and kept in the results.
    """
    meta = read_meta(path, stage)
    made_with = {"seed": meta["config"].get("seed"), stage: meta["config"].get(stage)}
    today = {"seed": cfg.seed, stage: getattr(cfg, stage).model_dump(mode="json")}
    current = made_with == today
    if not current:
        print(
            f"warning: {path} was made with other {stage} settings (commit "
            f"{meta.get('git_commit')}); delete it to rebuild with this code",
            file=sys.stderr,
        )
    return {"git_commit": meta.get("git_commit"), "settings_match_config": current}


def _selected_row(report: dict) -> dict[str, float]:
    """The selected candidate's figures as the policy saw them (see the report's gap_rows)."""
    row = next(c for c in report["candidates"] if c["name"] == report["selected"])
    return {
        k.removeprefix("validation_"): v
        for k, v in row.items()
        if k == "validation_accuracy" or k.endswith("_difference")
    }


def _finish(results: dict, out: Path, started: float) -> None:
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2))
    (out / "fairness_bench.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
