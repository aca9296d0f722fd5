"""The per-column gap intervals of ``model_metrics``, old vs new, at the evaluate stage's size.

Old: ``src/sslops/evaluate/metrics.py`` as committed at ``--old`` (default: the last commit
before the counted gap intervals), loaded from git: each resample indexes the labels,
decisions and group codes by the drawn rows (:func:`sslops.gaps.code_gaps`). New: the working
tree's, one bincount per resample over (group, label, decision) cells coded once. Both run
in one process on the same rows (UCI Adult resampled to ``--rows``, default the test split's
16,276; scored as :mod:`scale_metrics` scores them), interleaved old, new, old, new, so that
load on a shared machine falls on both alike. Figures: the median CPU seconds (process time,
less sensitive to other processes than wall time) of ``gap_intervals`` over ``sex``, ``race``
and their crossing, and of the whole ``model_metrics``, and whether the two give the same
numbers exactly (``json.dumps`` equal, NaN included).

    .venv/bin/python benchmarks/gap_intervals_bench.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scale_metrics import adult_rows, old_metrics, scored

from sslops.evaluate import metrics as new

OLD = "147e71a"  # the last commit whose gap_intervals indexes the drawn rows


def cpu_seconds(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.process_time()
    result = call()
    return time.process_time() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16_276)
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repeats (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--old", default=OLD, help="git ref of the old metrics.py")
    args = parser.parse_args()
    old = old_metrics(args.old)
    with tempfile.TemporaryDirectory() as models:
        data = scored(adult_rows(args.rows, args.seed), Path(models))
    y, score = data["y"], data["candidate"]
    decided = (score >= 0.5).astype(int)
    columns = {"sex": data["sex"], "race": data["race"]}
    crossing = zip(data["sex"], data["race"], strict=True)
    columns["sex x race"] = np.array([f"{s} | {r}" for s, r in crossing])
    steps: dict[str, Callable[[Any], Any]] = {
        "gap_intervals, sex, race and the crossing": lambda m: [
            m.gap_intervals(y, decided, m.without_small_groups(v, 10), args.resamples, args.seed)
            for v in columns.values()
        ],
        "model_metrics, sex, race and the crossing": lambda m: m.model_metrics(
            y, score, 0.5, {"sex": data["sex"], "race": data["race"]}, intersections=True,
            resamples=args.resamples, seed=args.seed, min_group_rows=10,
        ),
    }  # fmt: skip
    report: dict[str, Any] = {"rows": args.rows, "resamples": args.resamples, "old": args.old}
    for name, step in steps.items():
        seconds: dict[str, list[float]] = {"old": [], "new": []}
        results: dict[str, Any] = {}
        for _ in range(args.rounds):
            for label, module in (("old", old), ("new", new)):
                spent, results[label] = cpu_seconds(partial(step, module))
                seconds[label].append(spent)
        same = json.dumps(results["old"]) == json.dumps(results["new"])
        report[name] = {k: statistics.median(v) for k, v in seconds.items()} | {"identical": same}
        print(f"{name}: old {report[name]['old']:.3f} s, new {report[name]['new']:.3f} s CPU "
              f"(median of {args.rounds}), identical: {same}")  # fmt: skip
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
