"""Benchmark of `sslops prepare`: duplicate and PII quality, throughput against pandas.

Run:  .venv/bin/python benchmarks/prepare_bench.py [--rows 200000] [--throughput-rows 1000000]

1. Quality, on a generated Adult-like table (each column drawn from UCI Adult's
   marginals, plus an identifier and a free-text note) with 2% exact duplicates, 2%
   near-duplicates (one or two fields perturbed) and 1,000 planted PII values in the
   notes: exact-duplicate recall, near-duplicate pair recall and precision (against
   the planted pairs), PII recall and a scan of every output file for planted values.
2. Throughput, same generator at 1,000,000 rows, CSV in and Parquet splits out, both
   in this process one after the other: `sslops.prepare.prepare` (exact dedup + PII
   redaction + split, near-duplicates off, plus canonicalization, encoding and data
   card) against a straightforward pandas baseline (`read_csv`, `drop_duplicates`, the
   same PII patterns and checksums through `Series.str.replace`, a hash split,
   `to_parquet`). Then sslops once more with near-duplicate detection on.
3. MNIST-5k and GunPoint through `sslops prepare` with configs/mnist.yaml, gunpoint.yaml.

Prints a Markdown report; ``--json`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from sslops.config import load_config, validate_config
from sslops.data.pii import KINDS, PATTERNS, PLACEHOLDER, _is_finding
from sslops.prepare import prepare
from sslops.prepare.merge import plan
from sslops.prepare.scan import roles_for, scan_file
from sslops.prepare.stage import train_columns

ROOT = Path(__file__).resolve().parents[1]
ADULT = ROOT / "src" / "sslops" / "datasets" / "adult" / "train.csv.gz"
WORDS = np.array(
    [
        "account",
        "balance",
        "branch",
        "called",
        "card",
        "claim",
        "complaint",
        "delivery",
        "email",
        "fee",
        "form",
        "internet",
        "letter",
        "loan",
        "manager",
        "meeting",
        "mortgage",
        "office",
        "online",
        "payment",
        "phone",
        "policy",
        "refund",
        "renewal",
        "request",
        "savings",
        "service",
        "statement",
        "transfer",
        "visit",
        "wire",
    ]
)


# --- data generation -------------------------------------------------------------------------


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def _iban(rng: np.random.Generator) -> str:
    bban = "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), 4)) + "".join(
        map(str, rng.integers(0, 10, 14))
    )
    digits = "".join(str(int(ch, 36)) for ch in bban + "GB00")
    return f"GB{98 - int(digits) % 97:02d}{bban}"


def planted_values(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """``count`` distinct PII values, cycling through the seven kinds."""
    makers = {
        "email": lambda i: f"person.{i}{rng.integers(100, 999)}@example{i % 7}.com",
        "phone": lambda i: f"({rng.integers(201, 989)}) {rng.integers(200, 999)}-{i % 10000:04d}",
        "ssn": lambda i: f"{rng.integers(100, 665)}-{rng.integers(10, 99)}-{1000 + i:04d}",
        "payment_card": lambda i: (
            lambda body: f"{body[:4]} {body[4:8]} {body[8:12]} {body[12:15]}{_luhn_digit(body)}"
        )("4" + "".join(map(str, rng.integers(0, 10, 14)))),
        "iban": lambda i: _iban(rng),
        "ip_address": lambda i: f"10.{i % 250}.{rng.integers(0, 255)}.{rng.integers(1, 255)}",
        "date_of_birth": lambda i: (
            f"{rng.integers(1940, 2005)}-{rng.integers(1, 12):02d}-{rng.integers(1, 28):02d}"
        ),
    }
    values: dict[str, str] = {}
    i = 0
    while len(values) < count:
        kind = KINDS[i % len(KINDS)]
        value = makers[kind](i)
        values.setdefault(value, kind)
        i += 1
    return [(kind, value) for value, kind in values.items()]


def generate(rows: int, seed: int, pii: int) -> tuple[pd.DataFrame, dict[str, object]]:
    """Adult-like rows: 96% unique, 2% exact copies, 2% near-copies; planted PII in notes."""
    rng = np.random.default_rng(seed)
    adult = pd.read_csv(ADULT, dtype=str, keep_default_na=False)
    n_exact = n_near = rows // 50
    n_base = rows - n_exact - n_near
    base = pd.DataFrame(
        {c: adult[c].to_numpy()[rng.integers(0, len(adult), n_base)] for c in adult.columns}
    )
    base["fnlwgt"] = rng.integers(10_000, 1_500_000, n_base).astype(str)
    # A third high-entropy column (as real tables have: amounts, timestamps). Without it,
    # rows drawn independently from Adult's concentrated marginals agree on every column but
    # fnlwgt and the note at ~1.3e-7 per pair: ~2,600 coincidental pairs at 200k rows that
    # any detector tolerating two differing fields must (rightly) report.
    base["balance"] = np.round(rng.lognormal(8, 1.5, n_base), 2).astype(str)
    w = WORDS[rng.integers(0, len(WORDS), (n_base, 3))]
    base["note"] = [
        f"{a} about {b} and {c}, ref {r}" for a, b, c, r in
        zip(w[:, 0], w[:, 1], w[:, 2], rng.integers(10, 99, n_base), strict=True)
    ]  # fmt: skip
    base.insert(0, "customer_id", [f"C{i:09d}" for i in range(n_base)])
    planted = planted_values(rng, pii)
    holders = rng.choice(n_base, len(planted), replace=False)
    notes = base["note"].to_numpy(object)
    expected = []
    for row, (kind, value) in zip(holders, planted, strict=True):
        expected.append(f"customer wrote {PLACEHOLDER[kind]} in the {notes[row]}")
        notes[row] = f"customer wrote {value} in the {notes[row]}"
    base["note"] = notes

    sources = rng.permutation(n_base)
    exact_src, near_src = sources[:n_exact], sources[n_exact : n_exact + n_near]
    exact = base.iloc[exact_src].copy()
    near = base.iloc[near_src].copy()
    perturbable = ["age", "workclass", "education", "occupation", "hours-per-week", "note"]
    fields = [rng.choice(perturbable, rng.integers(1, 3), replace=False) for _ in range(n_near)]
    values = near.to_numpy(object)
    index = {c: near.columns.get_loc(c) for c in perturbable}
    for r, chosen in enumerate(fields):
        for column in chosen:
            old = values[r, index[column]]
            values[r, index[column]] = (
                str(int(old) + int(rng.integers(1, 4))) if old.isdigit() else f"{old} (edited)"
            )
    near = pd.DataFrame(values, columns=near.columns)
    near["customer_id"] = [f"N{i:09d}" for i in range(n_near)]
    table = pd.concat([base, exact, near], ignore_index=True)
    order = rng.permutation(len(table))
    table = table.iloc[order].reset_index(drop=True)
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order))
    truth = {
        "exact_pairs": np.stack([position[n_base : n_base + n_exact], position[exact_src]], 1),
        "near_pairs": np.stack([position[n_base + n_exact :], position[near_src]], axis=1),
        "planted": planted,
        "expected_notes": expected,
    }
    return table, truth


def bench_config(path: Path, near: bool, max_diff: int = 2):
    return validate_config(
        {
            "data": {
                "train": str(path), "label": "income", "positive": ">50K",
                "sensitive": ["sex", "race"], "identifiers": ["customer_id"], "text": ["note"],
            },
            "prepare": {"test_fraction": 0.2, "near_duplicates": {
                "enabled": near, "max_differing_fields": max_diff}},
        }
    )  # fmt: skip


# --- 1. quality ------------------------------------------------------------------------------


def quality(rows: int, work: Path) -> dict[str, object]:
    table, truth = generate(rows, seed=0, pii=1000)
    path = work / "quality.csv"
    table.to_csv(path, index=False)
    cfg = bench_config(path, near=True)
    scan = scan_file(cfg, "train", path, train_columns(cfg), work / "scan", "data.train")
    decided = plan(cfg, roles_for(cfg, train_columns(cfg)), [scan])
    dropped = decided.split == ""
    copy, original = truth["exact_pairs"].T
    exact_hit = (dropped[copy] ^ dropped[original]).mean()  # one of each pair kept
    first, second = decided.near_pairs
    found = {tuple(sorted(p)) for p in zip(first.tolist(), second.tolist(), strict=True)}
    planted_pairs = {tuple(sorted(p)) for p in truth["near_pairs"].tolist()}
    near_recall = len(found & planted_pairs) / len(planted_pairs)
    near_precision = len(found & planted_pairs) / max(len(found), 1)
    copy, original = truth["near_pairs"].T
    kept = (decided.split[copy] != "") & (decided.split[original] != "")
    same_side = (decided.split[copy][kept] == decided.split[original][kept]).mean()

    out = prepare(cfg, work / "quality-out")
    card = json.loads((out / "datacard.json").read_text())
    counted = card["pii_findings_redacted"]["by_column"].get("note", {})
    planted = truth["planted"]
    per_kind = Counter(kind for kind, _ in planted)
    notes = set(
        pd.concat(pd.read_parquet(p, columns=["note"]) for p in out.glob("*.parquet"))["note"]
    )
    redacted = [(kind, note in notes) for (kind, _), note in
                zip(planted, truth["expected_notes"], strict=True)]  # fmt: skip
    leaks = _scan_outputs(out, [value for _, value in planted])
    return {
        "rows": rows,
        "exact_duplicate_recall": float(exact_hit),
        "near_duplicate_pairs_planted": len(planted_pairs),
        "near_duplicate_pairs_found": len(found),
        "near_duplicate_recall": near_recall,
        "near_duplicate_precision": near_precision,
        "planted_pairs_on_one_side_of_the_split": float(same_side),
        "pii_planted": len(planted),
        "pii_planted_by_kind": dict(per_kind),
        "pii_redacted_in_place_by_kind": dict(Counter(k for k, ok in redacted if ok)),
        "pii_findings_in_data_card_by_kind": {k: int(counted.get(k, 0)) for k in per_kind},
        "pii_recall": sum(ok for _, ok in redacted) / len(planted),
        "planted_values_found_in_outputs": leaks,
        "output_files_scanned": len([p for p in out.rglob("*") if p.is_file()]),
    }  # fmt: skip


def _scan_outputs(out: Path, values: list[str]) -> int:
    needles = [v.encode() for v in values] + [v.replace(" ", "").encode() for v in values]
    leaks = 0
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        blobs = [path.read_bytes()]
        if path.suffix == ".parquet":
            blobs.append(pq.read_table(path).to_pandas().to_csv().encode())
        leaks += sum(any(n in blob for blob in blobs) for n in needles)
    return leaks


# --- 2. throughput ---------------------------------------------------------------------------


def pandas_baseline(path: Path, out: Path) -> None:
    """read_csv, drop_duplicates, the same PII patterns via str.replace, hash split, parquet."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    content = [c for c in frame.columns if c != "customer_id"]
    frame = frame.drop_duplicates(subset=content).drop(columns=["customer_id"])
    for kind, pattern in PATTERNS.items():
        compiled = re.compile(pattern)

        def replace(match: re.Match[str], kind: str = kind) -> str:
            return f"[{kind.upper()}]" if _is_finding(kind, match.group()) else match.group()

        frame["note"] = frame["note"].str.replace(compiled, replace, regex=True)
    uniform = pd.util.hash_pandas_object(frame, index=False).to_numpy() / 2.0**64
    split = np.where(uniform < 0.2, "test", np.where(uniform < 0.3, "validation", "train"))
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train", "validation", "test"):
        frame[split == name].to_parquet(out / f"{name}.parquet", index=False)


def throughput(rows: int, work: Path) -> dict[str, object]:
    table, _ = generate(rows, seed=1, pii=1000)
    path = work / "throughput.csv"
    table.to_csv(path, index=False)
    del table
    timings: dict[str, float] = {}
    runs = [
        ("pandas_baseline", lambda: pandas_baseline(path, work / "baseline")),
        ("sslops_exact_pii_split", lambda: prepare(bench_config(path, False), work / "exact")),
        ("sslops_with_near_duplicates", lambda: prepare(bench_config(path, True), work / "near")),
    ]
    for name, run in runs:
        # Wall time, and CPU time of this process (less sensitive to other load on the host).
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        timings[f"{name}_s"] = time.perf_counter() - wall
        timings[f"{name}_cpu_s"] = time.process_time() - cpu
    card = json.loads((work / "near" / "datacard.json").read_text())
    return {"rows": rows, **timings, "near_duplicates": card["near_duplicates"]}


# --- 3. other modalities ---------------------------------------------------------------------


def modalities(work: Path) -> dict[str, object]:
    results = {}
    for name in ("mnist", "gunpoint"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        start = time.perf_counter()
        out = prepare(cfg, work / name)
        card = json.loads((out / "datacard.json").read_text())
        results[name] = {
            "seconds": time.perf_counter() - start,
            "raw": card["raw_rows"],
            "splits": {k: v["rows"] for k, v in card["splits"].items()},
            "exact_duplicates_dropped": card["exact_duplicates_dropped"],
            "near_duplicates": card["near_duplicates"],
            "train_dropped_as_copies_of_test": card["train_rows_dropped_as_copies_of_test_rows"],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--throughput-rows", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--only", choices=["quality", "throughput", "modalities"], help="run one part only"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sslops-prepare-bench-"))
    try:
        parts = {
            "quality": lambda: quality(args.rows, work),
            "throughput": lambda: throughput(args.throughput_rows, work),
            "modalities": lambda: modalities(work),
        }
        results: dict[str, object] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_average_at_start": os.getloadavg(),
        }
        for name, run in parts.items():
            if args.only in (None, name):
                results[name] = run()
        results["load_average_at_end"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2, default=float))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
