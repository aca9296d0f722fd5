"""Batch scoring throughput: ``sslops predict`` vs a bare pandas + onnxruntime script.

Both score the same CSV (the shipped Adult test file repeated ``--copies`` times, with an
``id`` column) with the same exported ``model.onnx`` and write one row per input row
(row id, probability, decision). The anchor is the least a user would write by hand:
``pandas.read_csv`` with the training missing marker ``?``, the raw columns as the model's
inputs, one ``InferenceSession.run``, ``DataFrame.to_csv``. ``sslops predict`` adds what
the anchor skips: canonical cell values as in training (whitespace, number parsing), a
clear error for a missing or non-numeric column, duplicate-id and non-finite checks, and
an atomic write. Each is run in a fresh process (start-up included, as a user pays it),
interleaved, median of ``--rounds``; the two outputs are compared row by row. Peak
resident memory of each process is recorded too: ``sslops predict`` streams the rows
``--chunk-rows`` at a time (default 20,000), the anchor holds the whole file.

    .venv/bin/python benchmarks/predict_bench.py --run runs/demo --copies 10
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT / "src" / "sslops" / "datasets" / "adult" / "test.csv.gz"

ANCHOR = """
import sys
import numpy as np, onnxruntime as ort, pandas as pd
model, data, out = sys.argv[1:4]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
frame = pd.read_csv(data, na_values=["?"], skipinitialspace=True)
feed = {}
for spec in session.get_inputs():
    column = frame[spec.name]
    if spec.type == "tensor(string)":
        feed[spec.name] = column.fillna("").astype(str).to_numpy(dtype=object)
    else:
        feed[spec.name] = column.to_numpy(dtype=np.float32)
score = session.run(["probability"], feed)[0]
pd.DataFrame({"row_id": frame["id"], "score": score, "label": (score >= 0.5).astype(int)}).to_csv(
    out, index=False)
"""


def _timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of one fresh process."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert child.stderr is not None
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{argv[0]} failed ({child.returncode}): {err.decode()[-500:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo",
                        help="an sslops run folder (its export/model.onnx)")  # fmt: skip
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "predict_bench.json")
    args = parser.parse_args()
    model = args.run / "export" / "model.onnx"
    if not model.is_file():
        sys.exit(f"{model}: not found; run `make demo` (or sslops run) first")
    with gzip.open(TEST, "rt", encoding="utf-8") as fh:
        base = pd.read_csv(fh, dtype=str, keep_default_na=False)
    frame = pd.concat([base] * args.copies, ignore_index=True)
    frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.csv"
        frame.to_csv(data, index=False)
        csv_mb = round(data.stat().st_size / 1e6, 1)
        script = Path(tmp) / "anchor.py"
        script.write_text(ANCHOR)
        ours = [str(Path(sys.executable).with_name("sslops")), "predict", "--model", str(model),
                "--data", str(data), "--out", f"{tmp}/sslops.csv", "--config",
                str(ROOT / "configs" / "adult.yaml"), "--id-column", "id"]  # fmt: skip
        anchor = [sys.executable, str(script), str(model), str(data), f"{tmp}/anchor.csv"]
        times: dict[str, list[float]] = {"sslops predict": [], "pandas + onnxruntime": []}
        peaks: dict[str, list[float]] = {"sslops predict": [], "pandas + onnxruntime": []}
        for _ in range(args.rounds):
            for name, argv in (("sslops predict", ours), ("pandas + onnxruntime", anchor)):
                seconds, peak = _timed(argv)
                times[name].append(seconds)
                peaks[name].append(peak)
        a = pd.read_csv(f"{tmp}/sslops.csv")
        b = pd.read_csv(f"{tmp}/anchor.csv")
    same_ids = bool((a["row_id"] == b["row_id"]).all())
    result = {
        "rows": len(frame),
        "csv_mb": csv_mb,
        "seconds_median": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "seconds_all": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "peak_rss_mib_max": {k: round(max(v), 1) for k, v in peaks.items()},
        "rows_per_second": {k: round(len(frame) / statistics.median(v)) for k, v in times.items()},
        "ratio_sslops_over_anchor_time": round(
            statistics.median(times["sslops predict"])
            / statistics.median(times["pandas + onnxruntime"]),
            3,
        ),
        "same_row_ids": same_ids,
        "max_abs_score_diff": float(np.max(np.abs(a["score"] - b["score"]))),
        "labels_identical": bool((a["label"] == b["label"]).all()),
        "model": str(model),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
