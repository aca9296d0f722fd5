"""Latency and throughput of the deployed Adult model: torch eager vs ONNX Runtime fp32 vs int8.

One run, 2 threads each, batch 1 and 256, on the UCI Adult test split:

- ``torch eager``: :class:`RawColumnModel` under ``torch.inference_mode`` on the numeric
  matrix and level codes (the same computation as the ONNX graph minus the string
  lookup, which favours torch);
- ``torch eager + pandas``: the Python serving path, ``TabularEncoding.transform`` of a
  DataFrame then the classifier (for context);
- ``onnxruntime fp32`` / ``int8``: ``model.onnx`` / ``model.int8.onnx`` fed raw columns.

It also reports the accuracy of fp32 and int8 on the whole test split.

    python benchmarks/onnx_bench.py                      # trains the Adult model (configs/adult.yaml)
    python benchmarks/onnx_bench.py --run runs/demo      # reuses an `sslops run` output folder
    python benchmarks/onnx_bench.py --set pretrain.epochs=5   # config overrides for the build
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslops.config import load_config
from sslops.export import raw_inputs
from sslops.export.graph import RawColumnModel, level_codes, numeric_matrix
from sslops.export.quantize import session
from sslops.models.tabular import load_classifier
from sslops.prepare.dataset import PreparedData

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2


def build(config: Path, work: Path, overrides: list[str]) -> dict[str, Path]:
    from sslops.export import export
    from sslops.finetune import finetune
    from sslops.prepare import prepare
    from sslops.pretrain import pretrain

    cfg = load_config(config, [f"pretrain.threads={THREADS}", *overrides])
    a = {"prepare": prepare(cfg, work / "prepare")}
    a["pretrain"] = pretrain(cfg, a["prepare"], work / "pretrain")
    a["finetune"] = finetune(cfg, a["prepare"], a["pretrain"], work / "finetune")
    a["export"] = export(cfg, a["prepare"], a["finetune"], work / "export")
    return a


def timed(fn: Callable[[int], Any], calls: int, warmup: int = 50) -> list[float]:
    for i in range(warmup):
        fn(i)
    seconds = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        seconds.append(time.perf_counter() - start)
    return seconds


def summarize(seconds: list[float], batch: int) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": 1e3 * statistics.median(ordered),
        "p90_ms": 1e3 * ordered[int(0.9 * (len(ordered) - 1))],
        # From the median: other work on a shared 2-core machine shows up as outliers.
        "rows_per_s": batch / statistics.median(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an `sslops run` folder to reuse")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "adult.yaml")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "onnx-bench")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--calls", type=int, default=2000, help="timed calls at batch 1")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    torch.set_num_threads(THREADS)
    a = {s: args.run / s for s in ("prepare", "finetune", "export")} if args.run else None
    a = a or build(args.config, args.work, args.overrides)
    report = json.loads((a["export"] / "export.json").read_text(encoding="utf-8"))
    data = PreparedData(a["prepare"])
    classifier, _ = load_classifier(a["finetune"], report["model"])
    model = RawColumnModel(data.encoding, classifier).eval()
    frame = data.test.frame
    numeric = torch.from_numpy(numeric_matrix(data.encoding, frame))
    codes = torch.from_numpy(level_codes(data.encoding, frame))
    feed = raw_inputs(data.encoding, frame)
    files = {"onnxruntime fp32": "model.onnx", "onnxruntime int8": "model.int8.onnx"}
    rows = len(frame)
    results: dict[str, Any] = {}
    # One path at a time, each ONNX Runtime session created just before it is timed and
    # dropped after: an idle session's thread pool spins and would steal the 2 cores.
    paths = ["torch eager", "torch eager + pandas", *files]
    for name in paths:
        sess = session(a["export"] / files[name], THREADS) if name in files else None
        for batch, calls in ((1, args.calls), (256, max(50, args.calls // 20))):
            starts = [(i * batch) % (rows - batch) for i in range(calls + 100)]

            def run(
                i: int, s: list[int] = starts, b: int = batch, name: str = name, sess: Any = sess
            ) -> None:
                lo, hi = s[i], s[i] + b
                if name == "torch eager":
                    with torch.inference_mode():
                        model(numeric[lo:hi], codes[lo:hi])
                elif name == "torch eager + pandas":
                    x = data.encoding.transform(frame.iloc[lo:hi])
                    with torch.inference_mode():
                        classifier(torch.from_numpy(x))
                else:
                    assert sess is not None
                    sess.run(None, {k: v[lo:hi] for k, v in feed.items()})

            n = calls if name != "torch eager + pandas" else max(20, calls // 10)
            results.setdefault(name, {})[str(batch)] = summarize(timed(run, n), batch)
        sess = None  # release its thread pool before the next path

    target = data.test.target
    scores = {n: session(a["export"] / f).run(None, feed)[0] for n, f in files.items()}
    accuracy = {n: float(np.mean((p >= 0.5) == target)) for n, p in scores.items()}
    eager_b1 = results["torch eager"]["1"]["median_ms"]
    out = {
        "machine": f"{platform.processor() or platform.machine()}, torch threads {THREADS}, "
        f"ORT intra-op threads {THREADS}",
        "model": report["model"],
        "test_rows": rows,
        "latency": results,
        "speedup_fp32_vs_eager_batch1": eager_b1 / results["onnxruntime fp32"]["1"]["median_ms"],
        "speedup_int8_vs_eager_batch1": eager_b1 / results["onnxruntime int8"]["1"]["median_ms"],
        "accuracy": accuracy,
        "int8_accuracy_change_points": 100
        * (accuracy["onnxruntime int8"] - accuracy["onnxruntime fp32"]),
        "onnx_parity_max_abs_diff": report["parity"]["max_abs_diff"],
        "onnx_bytes": report["bytes"],
        "int8_bytes": report["quantization"]["bytes"],
    }
    print("| path | batch | median ms | p90 ms | rows/s |")
    print("|---|---:|---:|---:|---:|")
    for name, by_batch in results.items():
        for batch_size, r in by_batch.items():
            print(
                f"| {name} | {batch_size} | {r['median_ms']:.4f} | {r['p90_ms']:.4f} | "
                f"{r['rows_per_s']:,.0f} |"
            )
    print(json.dumps({k: v for k, v in out.items() if k != "latency"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
