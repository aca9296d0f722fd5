"""Metrics at scale: the group table and bootstrap intervals on 480,000 rows, old vs new.

Both paths run in one process on the same rows: UCI Adult (train + test, package data)
resampled with replacement to ``--rows`` rows, scored by two logistic regressions (fit on
5,000 rows, one on more columns than the other), groups ``sex``, ``race`` and their
crossing. The old path is ``src/sslops/evaluate/metrics.py`` as committed at ``--old``
(default: the last commit before the counted tables), loaded from git: fairlearn ``MetricFrame`` per group table, and a
bootstrap resample that indexes every array by the drawn rows and sorts the scores for
sklearn's ROC AUC. The new one is the working tree's: the group table from bincounts, and
resamples as row weights over cells coded once. Figures: seconds per step (median of
``--rounds``) and the largest absolute difference between the two paths' numbers.

    .venv/bin/python benchmarks/scale_metrics.py --rows 480000 --resamples 200
    .venv/bin/python benchmarks/scale_metrics.py --days /tmp/days   # the shadow test's input

With ``--days DIR`` it also writes what `sslops shadow` reads at that size: ten daily CSVs
of the resampled rows, ``candidate.onnx``, ``incumbent.onnx`` and ``shadow.yaml``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import statistics
import subprocess
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sslops.data.canonicalize import canonicalize
from sslops.data.readers import read_csv
from sslops.evaluate import metrics as new
from sslops.shadow.incumbent import logistic_regression_onnx

ROOT = Path(__file__).resolve().parents[1]
ADULT = ROOT / "src" / "sslops" / "datasets" / "adult"
OLD = "c460074"  # the last commit whose metrics.py has MetricFrame tables and indexed resamples
COLUMNS = ["age", "hours-per-week", "education", "sex", "workclass", "marital-status", "race"]


def old_metrics(ref: str) -> types.ModuleType:
    """``sslops.evaluate.metrics`` as committed at ``ref``."""
    source = subprocess.run(
        ["git", "show", f"{ref}:src/sslops/evaluate/metrics.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="old_metrics_"))
    path = folder / "metrics_at_{}.py".format(ref.replace("/", "_"))
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def adult_rows(rows: int, seed: int) -> pd.DataFrame:
    parts = [read_csv(str(ADULT / f"{s}.csv.gz"), ["?", ""], key="data") for s in ("train", "test")]
    adult = canonicalize(pd.concat(parts, ignore_index=True), ["?", ""])[0]
    drawn = np.random.default_rng(seed).integers(0, len(adult), rows)
    return adult.iloc[drawn].reset_index(drop=True)


def scored(frame: pd.DataFrame, models: Path) -> dict[str, np.ndarray]:
    """Both models' scores (ONNX, as `sslops shadow` runs them), labels and groups."""
    from sslops.shadow.scoring import Batch, OnnxClassifier

    y = frame["income"].str.startswith(">50K").to_numpy().astype(int)
    train = frame.iloc[:5000]
    paths = {
        "candidate": logistic_regression_onnx(train, y[:5000], COLUMNS, models / "candidate.onnx"),
        "incumbent": logistic_regression_onnx(train, y[:5000], COLUMNS[:4],
                                              models / "incumbent.onnx", regularization=0.003),
    }  # fmt: skip
    ids = np.arange(len(frame)).astype(str)
    batch = Batch(name="all", path=models, frame=frame, row_ids=ids)
    out = {"y": y, "sex": frame["sex"].astype(str).to_numpy(),
           "race": frame["race"].astype(str).to_numpy()}  # fmt: skip
    for name, path in paths.items():
        out[name] = OnnxClassifier(path, 0.5, name).score(batch).score
    return out


def timed(rounds: int, call: Callable[[], Any]) -> tuple[float, Any]:
    seconds, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def largest_difference(a: Any, b: Any) -> float:
    """Largest |a - b| over the numbers of two nested results of the same shape; NaN must
    meet NaN (inf when it does not, or when the shapes differ)."""
    if isinstance(a, dict):
        if list(a) != list(b):
            return math.inf
        return max((largest_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            return math.inf
        return max((largest_difference(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    if isinstance(a, float | int) and isinstance(b, float | int):
        if math.isnan(a) or math.isnan(b):
            return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
        return abs(float(a) - float(b))
    return 0.0 if a == b else math.inf


def write_days(frame: pd.DataFrame, models: Path, days: Path, resamples: int) -> None:
    days.mkdir(parents=True, exist_ok=True)
    raw = frame.astype(object).where(frame.notna(), "?")
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 10)):
        raw.iloc[part].to_csv(days / f"day{i:02d}.csv", index=False)
    for name in ("candidate.onnx", "incumbent.onnx"):
        (days.parent / name).write_bytes((models / name).read_bytes())
    config = yaml.safe_load((ROOT / "configs" / "adult.yaml").read_text())
    config["kpi"] = {
        "bootstrap": resamples,
        "costs": {"false_positive": 5.0, "false_negative": 20.0},
    }
    (days.parent / "shadow.yaml").write_text(yaml.safe_dump(config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=480_000)
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples")
    parser.add_argument("--rounds", type=int, default=1, help="timed repeats (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--old", default=OLD, help="git ref of the old metrics.py")
    parser.add_argument("--days", type=Path, help="also write the shadow test's input here")
    parser.add_argument("--out", type=Path, default=Path("runs/scale_metrics.json"))
    args = parser.parse_args()

    old = old_metrics(args.old)
    frame = adult_rows(args.rows, args.seed)
    models = args.out.parent / "scale_metrics_models"
    models.mkdir(parents=True, exist_ok=True)
    data = scored(frame, models)
    if args.days:
        write_days(frame, models, args.days, args.resamples)
    y, cand, inc = data["y"], data["candidate"], data["incumbent"]
    groups = {"sex": data["sex"], "race": data["race"]}
    crossing = np.char.add(np.char.add(data["sex"], " | "), data["race"])
    result: dict[str, Any] = {
        "rows": args.rows, "resamples": args.resamples, "old": args.old,
        "machine": f"{platform.processor() or platform.machine()}, shared",
        "steps": {},
    }  # fmt: skip
    decided, r = (cand >= 0.5).astype(int), args.resamples
    steps: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "group table, sex x race": (
            lambda: old._group_table(y, cand, decided, crossing),
            lambda: new._group_table(y, cand, decided, crossing),
        ),
        f"summary intervals, {args.resamples} resamples": (
            lambda: old.bootstrap_intervals(y, cand, 0.5, groups["sex"], args.resamples, 0),
            lambda: new.bootstrap_intervals(y, cand, 0.5, groups["sex"], args.resamples, 0),
        ),
        f"model_metrics, intersections, {args.resamples} resamples": (
            lambda: old.model_metrics(y, cand, 0.5, groups, intersections=True, resamples=r),
            lambda: new.model_metrics(
                y, cand, 0.5, groups, intersections=True, resamples=r, group_table="counts"
            ),  # as sslops shadow calls it
        ),
    }
    for name, (before, after) in steps.items():
        old_s, old_result = timed(args.rounds, before)
        new_s, new_result = timed(args.rounds, after)
        result["steps"][name] = {
            "old_s": round(old_s, 2), "new_s": round(new_s, 2),
            "speedup": round(old_s / new_s, 1),
            "largest_difference": largest_difference(old_result, new_result),
        }  # fmt: skip
        print(f"{name}: old {old_s:.2f} s, new {new_s:.2f} s "
              f"(largest difference {result['steps'][name]['largest_difference']:.1e})")  # fmt: skip
    # Shadow's quality-delta intervals have no old path; kpi.bootstrap defaults to 1,000.
    paired_s, _ = timed(args.rounds, lambda: new.paired_delta_intervals(
        y, (cand, inc), (decided, (inc >= 0.5).astype(int)), groups["sex"], 1000, 0
    ))  # fmt: skip
    result["steps"]["shadow quality-delta intervals, 1000 resamples"] = {
        "new_s": round(paired_s, 2)
    }
    print(f"shadow quality-delta intervals, 1000 resamples: {paired_s:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
