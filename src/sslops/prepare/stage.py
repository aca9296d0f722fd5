"""Prepare: raw CSV -> canonical, deduplicated, identifier-free splits + encoding + data card."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from sslops.artifacts import write_artifact
from sslops.config import Config
from sslops.data.canonicalize import canonicalize
from sslops.data.datacard import build_datacard, datacard_markdown
from sslops.data.encoding import TabularEncoding
from sslops.data.readers import read_csv, read_header, resolve_path
from sslops.data.split import assign_splits, drop_exact_duplicates
from sslops.errors import DataError
from sslops.prepare.dataset import SCHEMA, SPLITS, target_of

_SOURCE = "__sslops_source__"


def check_inputs(cfg: Config) -> None:
    """Fail fast, before any work, when a file or a configured column is missing."""
    sources = {"data.train": cfg.data.train}
    if cfg.data.test:
        sources["data.test"] = cfg.data.test
    needed = {
        "data.label": [cfg.data.label],
        "data.sensitive": cfg.data.sensitive,
        "data.identifiers": cfg.data.identifiers,
    }
    for key, spec in sources.items():
        header = read_header(spec, key)
        for role, columns in needed.items():
            for column in columns:
                if column not in header:
                    raise DataError(
                        f"{role}: column {column!r} not found in {key} ({spec}); "
                        f"columns are: {', '.join(header)}"
                    )


def _read_sources(cfg: Config) -> pd.DataFrame:
    frames = [
        read_csv(cfg.data.train, cfg.data.na_values, "data.train").assign(**{_SOURCE: "train"})
    ]
    if cfg.data.test:
        test = read_csv(cfg.data.test, cfg.data.na_values, "data.test")
        missing = sorted(set(frames[0].columns) - {_SOURCE} - set(test.columns))
        if missing:
            raise DataError(
                f"data.test ({cfg.data.test}) lacks columns {missing} present in data.train"
            )
        frames.append(
            test[[c for c in frames[0].columns if c != _SOURCE]].assign(**{_SOURCE: "test"})
        )
    # Canonicalize train and test together so a column gets one dtype in both.
    return pd.concat(frames, ignore_index=True)


def prepare(cfg: Config, out_dir: Path) -> Path:
    """Run the prepare stage; returns the artifact directory."""
    check_inputs(cfg)
    raw = _read_sources(cfg)
    raw_rows = raw[_SOURCE].value_counts().to_dict()
    source = raw.pop(_SOURCE)
    canonical, report = canonicalize(raw, cfg.data.na_values)
    # The data card describes what the pipeline keeps; identifiers are only named as dropped.
    report["columns"] = {
        c: v for c, v in report["columns"].items() if c not in cfg.data.identifiers
    }
    canonical = canonical.drop(columns=cfg.data.identifiers)
    canonical[_SOURCE] = source.to_numpy()

    label = cfg.data.label
    unlabeled = canonical[label].isna()
    canonical = canonical.loc[~unlabeled].reset_index(drop=True)
    target_of(canonical, label, cfg.data.positive, require_positive=True)

    parts: dict[str, pd.DataFrame] = {}
    duplicates: dict[str, int] = {}
    for name, part in canonical.groupby(_SOURCE):
        deduped, dropped = drop_exact_duplicates(part.drop(columns=_SOURCE), cfg.seed)
        parts[str(name)], duplicates[str(name)] = deduped, dropped

    test_fraction = 0.0 if "test" in parts else cfg.prepare.test_fraction
    train_pool = parts["train"]
    assigned = assign_splits(train_pool, cfg.prepare.validation_fraction, test_fraction, cfg.seed)
    splits = {name: train_pool.loc[assigned == name].reset_index(drop=True) for name in SPLITS}
    if "test" in parts:
        splits["test"] = parts["test"]
    for name, frame in splits.items():
        if len(frame) == 0:
            raise DataError(
                f"the {name} split is empty; provide more rows or adjust prepare.*_fraction"
            )
    targets = {name: target_of(frame, label, cfg.data.positive) for name, frame in splits.items()}
    if targets["train"].nunique() < 2:
        raise DataError(f"data.label {label!r}: the train split has only one class; need both")

    excluded = {label, *([] if cfg.prepare.sensitive_as_features else cfg.data.sensitive)}
    features = [c for c in splits["train"].columns if c not in excluded]
    encoding = TabularEncoding.fit(splits["train"], features, cfg.prepare.max_categories)
    card = build_datacard(
        splits,
        targets,
        label=label,
        positive=cfg.data.positive,
        sensitive=cfg.data.sensitive,
        dropped_identifiers=cfg.data.identifiers,
        duplicates_dropped=duplicates,
        raw_rows={str(k): int(v) for k, v in raw_rows.items()},
        canonicalization=report,
    )
    card["rows_without_label_dropped"] = int(unlabeled.sum())
    schema = {
        "label": label,
        "positive": cfg.data.positive,
        "sensitive": cfg.data.sensitive,
        "features": features,
        "encoded_features": encoding.feature_names,
    }

    sources = {"data.train": resolve_path(cfg.data.train, "data.train")}
    if cfg.data.test:
        sources["data.test"] = resolve_path(cfg.data.test, "data.test")
    with write_artifact(out_dir, "prepare", cfg.model_dump(mode="json"), sources=sources) as tmp:
        for name, frame in splits.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        encoding.save(tmp / "encoding.json")
        (tmp / SCHEMA).write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
        (tmp / "datacard.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        (tmp / "datacard.md").write_text(datacard_markdown(card), encoding="utf-8")
    return Path(out_dir)
