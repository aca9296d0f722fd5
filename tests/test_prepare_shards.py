"""Shard mode through kfp.local: ParallelFor over Parquet shards, one merge, the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sslops.artifacts import read_meta
from sslops.config import validate_config
from sslops.prepare import prepare
from tests.conftest import ADULT, ROOT


def test_sharded_pipeline_equals_single_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # kfp.local writes a local_outputs folder in the cwd
    frame = pd.read_csv(ADULT / "train.csv.gz", dtype=str, keep_default_na=False).head(2400)
    frame = pd.concat([frame, frame.iloc[:40]], ignore_index=True)  # exact copies across shards
    (tmp_path / "train").mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[rows].to_parquet(tmp_path / "train" / f"part-{i}.parquet", index=False)
    test = pd.read_csv(ADULT / "test.csv.gz", dtype=str, keep_default_na=False).head(800)
    test.to_parquet(tmp_path / "test.parquet", index=False)
    raw = yaml.safe_load((ROOT / "configs" / "adult.yaml").read_text())
    raw["data"] |= {"train": str(tmp_path / "train"), "test": str(tmp_path / "test.parquet"),
                    "format": "parquet"}  # fmt: skip
    cfg = validate_config(raw)

    from sslops.pipeline.prepare_shards import run_prepare_sharded_locally

    sharded = run_prepare_sharded_locally(cfg, tmp_path / "sharded")
    single = prepare(cfg, tmp_path / "single")
    assert read_meta(sharded, "prepare")["files"] == read_meta(single)["files"]
    assert read_meta(sharded)["sources"] == read_meta(single)["sources"]
    card = json.loads((sharded / "datacard.json").read_text())
    assert card["exact_duplicates_dropped"]["train"] >= 40
    assert set(card["raw_rows"]) == {"train", "test"}


def test_sharded_pipeline_compiles(tmp_path: Path) -> None:
    from sslops.pipeline.prepare_shards import compile_prepare_sharded

    spec = yaml.safe_load(compile_prepare_sharded(tmp_path / "p.yaml").read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert {"list-input-shards", "for-loop-1", "merge-scans"} <= set(tasks)
