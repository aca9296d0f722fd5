"""Shard mode of the tabular prepare stage: list input shards, scan one, merge all scans.

The same three steps the single-process :func:`sslops.prepare.prepare` runs in a loop;
:mod:`sslops.pipeline.prepare_shards` runs them as KFP tasks (``ParallelFor`` over the
shards, then one merge). A shard is one input file: give ``data.train`` (and
``data.test``) as a folder or a glob of Parquet or CSV files.
"""

from __future__ import annotations

import json
from pathlib import Path

from sslops.artifacts import json_text
from sslops.config import Config
from sslops.errors import DataError
from sslops.prepare.scan import read_scan, scan_file
from sslops.prepare.stage import (
    TABLE_FORMATS,
    check_inputs,
    finish_tabular,
    input_files,
    source_names,
    train_columns,
)


def list_shards(cfg: Config) -> list[str]:
    """One JSON string per input file: its position, source, config key and path."""
    if cfg.modality != "tabular" or cfg.data.format not in TABLE_FORMATS:
        raise DataError(
            f"shard mode prepares tables (data.format csv or parquet), not {cfg.data.format!r}"
        )
    check_inputs(cfg)
    return [
        json.dumps({"index": i, "source": source, "key": key, "path": str(path)})
        for i, (source, key, path) in enumerate(input_files(cfg))
    ]


def scan_shard(cfg: Config, shard: str, out: Path) -> Path:
    spec = json.loads(shard)
    folder = scan_file(
        cfg, spec["source"], Path(spec["path"]), train_columns(cfg), out, spec["key"]
    )
    stats = read_scan(folder)
    stats["index"] = spec["index"]
    (folder / "scan.json").write_text(json_text(stats, indent=1) + "\n", encoding="utf-8")
    return folder


def merge_shards(cfg: Config, scans: list[Path], out: Path) -> Path:
    """Merge scans (in shard order, whatever order they arrive in) into the prepare artifact."""
    ordered = sorted(scans, key=lambda folder: read_scan(folder)["index"])
    files = [(s["source"], s["key"], Path(s["file"])) for s in map(read_scan, ordered)]
    return finish_tabular(cfg, ordered, out, source_names(files))
