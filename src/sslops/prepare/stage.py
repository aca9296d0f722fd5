"""Prepare: raw data -> canonical, deduplicated, PII-free splits + encoding + data card.

Tables go through two steps that also run as separate KFP tasks in shard mode
(:mod:`sslops.pipeline.prepare_shards`): :func:`scan_file` per input file, then
:func:`finish_tabular` over all scans. Images and time series are prepared by
:mod:`sslops.prepare.arrays`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from sslops.artifacts import timed_stage, write_artifact, write_json
from sslops.config import Config
from sslops.data.canonicalize import canonical_column_name, column_report, label_hits
from sslops.data.datacard import (
    build_datacard,
    datacard_figures,
    datacard_markdown,
    few_class_note,
    identifier_like,
    label_note,
    label_values,
)
from sslops.data.encoding import TabularEncoding
from sslops.data.readers import header_hint, read_header, resolve_sources
from sslops.data.split import SPLIT_NAMES, predicate_columns
from sslops.errors import DataError
from sslops.prepare.dataset import SCHEMA, UNLABELED, target_of
from sslops.prepare.merge import Plan, plan, write_splits
from sslops.prepare.ranges import check_float32_range, check_standardized
from sslops.prepare.scan import read_scan, roles_for, scan_file

TABLE_FORMATS = ("csv", "parquet")
MAX_SENSITIVE_GROUPS = 50  # more distinct values than this is a measurement, not a grouping


def input_files(cfg: Config) -> list[tuple[str, str, Path]]:
    """(source, config key, path) of every input file, train files first, in sorted order."""
    specs = [("train", "data.train", cfg.data.train)]
    if cfg.data.test:
        specs.append(("test", "data.test", cfg.data.test))
    return [
        (source, key, path)
        for source, key, spec in specs
        for path in resolve_sources(spec, key, cfg.data.format)
    ]


def source_names(files: list[tuple[str, str, Path]]) -> dict[str, Path]:
    """Keys for meta.json's raw sources: ``data.train``, or ``data.train[i]`` for shards."""
    counts = pd.Series([key for _, key, _ in files]).value_counts()
    named: dict[str, Path] = {}
    seen: dict[str, int] = {}
    for _, key, path in files:
        index = seen.get(key, 0)
        seen[key] = index + 1
        named[key if counts[key] == 1 else f"{key}[{index}]"] = path
    return named


def check_inputs(cfg: Config) -> None:
    """Fail fast, before any work, when a file or a configured column is missing."""
    if cfg.data.format not in TABLE_FORMATS:
        from sslops.prepare.arrays import check_array_inputs

        check_array_inputs(cfg)
        return
    needed = {
        "data.label": [cfg.data.label],
        "data.sensitive": cfg.data.sensitive,
        "data.identifiers": cfg.data.identifiers,
        "data.text": cfg.data.text,
        "data.categorical": cfg.data.categorical,
        "prepare.split_key": cfg.prepare.split_key,
        "prepare.ood": predicate_columns(cfg.prepare.ood) if cfg.prepare.ood else [],
        "prepare.pii.skip_columns": cfg.prepare.pii.skip_columns,
    }
    specs = {"data.train": cfg.data.train}
    if cfg.data.test:
        specs["data.test"] = cfg.data.test
    for key, spec in specs.items():
        raw_header = read_header(spec, key, cfg.data.format)
        header = [canonical_column_name(h) for h in raw_header]
        for role, columns in needed.items():
            for column in columns:
                if column not in header:
                    raise DataError(
                        f"{role}: column {column!r} not found in {key} ({spec}); "
                        f"columns are: {', '.join(header)}{header_hint(raw_header)}"
                    )


def train_columns(cfg: Config) -> list[str]:
    header = read_header(cfg.data.train, "data.train", cfg.data.format)
    return [canonical_column_name(h) for h in header]


@timed_stage("prepare")
def prepare(cfg: Config, out_dir: Path) -> Path:
    """Run the prepare stage; returns the artifact directory."""
    check_inputs(cfg)
    if cfg.data.format not in TABLE_FORMATS:
        from sslops.prepare.arrays import prepare_arrays

        return prepare_arrays(cfg, Path(out_dir))
    files = input_files(cfg)
    columns = train_columns(cfg)
    with tempfile.TemporaryDirectory(prefix="sslops-scan-") as work:
        folders = [
            scan_file(cfg, source, path, columns, Path(work) / f"{i:05d}", key)
            for i, (source, key, path) in enumerate(files)
        ]
        return finish_tabular(cfg, folders, Path(out_dir), source_names(files))


def finish_tabular(
    cfg: Config, folders: list[Path], out_dir: Path, sources: dict[str, Path]
) -> Path:
    """Merge the scans, write the splits, fit the encoding and write the data card."""
    columns = list(pd.read_parquet(folders[0] / "rows.parquet").columns) if folders else []
    roles = roles_for(cfg, _all_columns(cfg, folders, columns))
    decided = plan(cfg, roles, folders)
    names = [*SPLIT_NAMES, *(["ood"] if cfg.prepare.ood else [])]
    pretrain_only = [UNLABELED] if (decided.split == UNLABELED).any() else []
    with write_artifact(out_dir, "prepare", cfg.model_dump(mode="json"), sources=sources) as tmp:
        write_splits(folders, roles, decided, tmp, [*names, *pretrain_only])
        splits = {name: pd.read_parquet(tmp / f"{name}.parquet") for name in names}
        notes = _write_metadata(cfg, roles.output, folders, decided, splits, tmp, pretrain_only)
    for note in notes:  # console lines, like the run summary's (the data card shows them too)
        print(f"note: {note}", file=sys.stderr, flush=True)
    return out_dir


def _all_columns(cfg: Config, folders: list[Path], output: list[str]) -> list[str]:
    """The input columns: the scanned output plus the dropped identifiers, in input order."""
    dropped = [c for c in cfg.data.identifiers if c not in output]
    return output + dropped


def _not_scanned(cfg: Config, train: pd.DataFrame, output: list[str]) -> list[str]:
    """The text columns the personal-data scan left alone, as configured."""
    pii = cfg.prepare.pii
    return [
        c for c in output
        if c not in cfg.data.identifiers and not pd.api.types.is_numeric_dtype(train[c])
        and (not pii.scan or c in pii.skip_columns)
    ]  # fmt: skip


def _check_sensitive_groups(
    train: pd.DataFrame,
    sensitive: list[str],
    ood: pd.DataFrame | None = None,
    predicate: str | None = None,
) -> None:
    """Fairness is measured per group: a sensitive column needs a few values, not an age in
    years or an income, whose per-value groups are too small to measure anything. ``ood``
    holds the rows ``prepare.ood`` (``predicate``) moved out of the other splits."""
    for column in sensitive:
        distinct = int(train[column].nunique())
        if distinct < 2:
            cause = ""
            if ood is not None and len(ood):
                kept = set(train[column].dropna().astype(str))
                gone = sorted(set(ood[column].dropna().astype(str)) - kept)
                took = f"group{'s' * (len(gone) > 1)} {', '.join(map(repr, gone))}"
                cause = f" after prepare.ood removed {len(ood):,} rows ({predicate})" + (
                    f", which took {took} out of it: the rule removes a whole group" if gone else ""
                )
            raise DataError(
                f"data.sensitive column {column!r} has {distinct} distinct value(s) in the "
                f"training split{cause}; fairness compares groups, so it needs at least 2"
            )
        if distinct > MAX_SENSITIVE_GROUPS:
            # Read as a category (see DataConfig.category_columns): numbers in every row
            # mean a quantity such as an age, which is banded rather than merged.
            values = train[column].dropna()
            numeric = bool(pd.to_numeric(values, errors="coerce").notna().all())
            hint = (
                f"add a banded copy of it to the data (e.g. '{column}_band' with values like "
                "'<30', '30-50', '50+') and list that in data.sensitive instead"
                if numeric
                else "merge its values into fewer groups, or list another column"
            )
            raise DataError(
                f"data.sensitive column {column!r} has {distinct:,} distinct values in the "
                f"training split; fairness groups need at most {MAX_SENSITIVE_GROUPS}: {hint}"
            )


def _check_positive_spelling(labels: pd.Series, positive: Any, label: str) -> None:
    """A label value that is the positive one written another way (Adult's test file has
    '>50K.' where the training file has '>50K') would silently count as the negative class."""
    values = list(positive) if isinstance(positive, list) else [positive]
    loose = {_loose(v): v for v in values}
    missed = labels[~label_hits(labels, positive)].dropna().astype(str)
    for value, rows in missed.value_counts().items():
        meant = loose.get(_loose(value))
        if meant is not None:
            both = json.dumps([*values, value], ensure_ascii=not str(value).isprintable())
            raise DataError(
                f"data.label {label!r}: {rows:,} rows hold {value!r}, the positive value "
                f"{meant!r} written another way, and would count as the negative class; if it "
                f"is the same class, list both: --set 'data.positive={both}'; otherwise "
                "correct the file"
            )


def _loose(value: Any) -> str:
    return str(value).strip().casefold().rstrip(".")


def _empty_split_advice(report: dict[str, Any]) -> str:
    """What to do about an empty split: most often data.test holds data.train's rows (the
    same file given twice), which prepare drops from training so no test row is trained on."""
    copies = report.get("train_rows_dropped_as_copies_of_test_rows") or {}
    exact, near = int(copies.get("exact", 0)), int(copies.get("near", 0))
    if not exact + near:
        return "provide more rows or adjust prepare.*_fraction"
    fields = (report.get("near_duplicates") or {}).get("max_differing_fields")
    how = f"{exact:,} exactly"
    if near:
        how += (f", {near:,} in all but at most {fields} feature column(s), "
                "prepare.near_duplicates.max_differing_fields")  # fmt: skip
    return (
        f"{exact + near:,} rows of data.train copy rows of data.test ({how}) and were dropped "
        "so that no test row is trained on; expected a data.test that holds other rows than "
        "data.train"
    )


def _write_metadata(
    cfg: Config,
    output: list[str],
    folders: list[Path],
    decided: Plan,
    splits: dict[str, pd.DataFrame],
    tmp: Path,
    pretrain_only: list[str],
) -> list[str]:
    """The checks, encoding, schema and data card of the labeled ``splits``; ``pretrain_only``
    names the split of unlabeled rows when there is one (in the schema, not checked).
    Returns the notes: on a label of more than two values, on a split with few rows of a
    class."""
    label = cfg.data.label
    labels = pd.concat([frame[label] for frame in splits.values()], ignore_index=True)
    target_of(labels.to_frame(), label, cfg.data.positive, require_positive=True)
    _check_positive_spelling(labels, cfg.data.positive, label)
    # One-vs-rest on a label of more values is legitimate, but it is made visible: the note
    # names every value trained as the negative class (the schema and data card record them).
    values = label_values(labels, cfg.data.positive)
    for name, frame in splits.items():
        if len(frame) == 0 and name != "ood":
            raise DataError(f"the {name} split is empty; {_empty_split_advice(decided.report)}")
    _check_sensitive_groups(splits["train"], cfg.data.sensitive, splits.get("ood"), cfg.prepare.ood)
    targets = {name: target_of(frame, label, cfg.data.positive) for name, frame in splits.items()}
    for name in ("train", "validation", "test"):
        if targets[name].nunique() < 2:
            which = "every" if targets[name].iloc[0] else "no"
            raise DataError(
                f"data.label {label!r}: {which} row of the {name} split has the positive value "
                f"{cfg.data.positive!r}; training, model selection and evaluation (ROC AUC, "
                f"TPR, FPR) need both classes in every split"
            )

    excluded = {label, *([] if cfg.prepare.sensitive_as_features else cfg.data.sensitive)}
    excluded |= set(cfg.data.text) | set(cfg.data.identifiers)
    features = [c for c in splits["train"].columns if c not in excluded]
    # The encoding needs no labels: fitted on the unlabeled rows too, when there are some.
    unlabeled = {name: pd.read_parquet(tmp / f"{name}.parquet") for name in pretrain_only}
    fitted_on = pd.concat([splits["train"], *unlabeled.values()], ignore_index=True)
    # A column of one value in every row (an application date the personal-data scan
    # replaced by its placeholder) carries no information; kept, the exported model would
    # read it raw, and every new row's value would be one it never saw in training.
    constant = [c for c in features if fitted_on[c].nunique(dropna=False) <= 1]
    if len(constant) < len(features):
        features = [c for c in features if c not in constant]
    else:
        constant = []
    # A text column whose values are nearly all distinct is an identifier or free text (the
    # data card flags it): left out of the features too. Kept, a value repeated in enough
    # rows (a patient's name over their visits) would be a level stored in the exported
    # model, and every request to that model would have to send the column.
    texts = [c for c in features if not pd.api.types.is_numeric_dtype(splits["train"][c])]
    suspects = list(identifier_like(splits["train"], texts))
    if suspects and len(suspects) == len(features):
        raise DataError(
            f"every feature column ({', '.join(map(repr, suspects))}) has a distinct value in "
            "nearly every training row, like an identifier or free text, which no model "
            "learns from; declare such columns in data.identifiers or data.text and provide "
            "columns with shared values"
        )
    features = [c for c in features if c not in suspects]
    check_float32_range({**splits, **unlabeled}, features)
    encoding = TabularEncoding.fit(
        fitted_on, features, cfg.prepare.max_categories, cfg.prepare.min_category_count
    )
    check_standardized(encoding, {**splits, **unlabeled})

    scans = [read_scan(f) for f in folders]
    raw_rows: dict[str, int] = {}
    pii: dict[str, dict[str, int]] = {}
    normalized: dict[str, int] = {}
    for scan in scans:
        raw_rows[scan["source"]] = raw_rows.get(scan["source"], 0) + scan["rows"]
        for column, counts in scan["pii"].items():
            for kind, count in counts.items():
                pii.setdefault(column, {})[kind] = pii.get(column, {}).get(kind, 0) + count
        for column, count in scan["normalized_text"].items():
            normalized[column] = normalized.get(column, 0) + count
    everything = pd.concat(list(splits.values()), ignore_index=True)
    canonical = {
        c: column_report(
            everything[c],
            {
                "normalized_text": normalized.get(c, 0),
                "case_unified": decided.case_unified.get(c, 0),
            },
        )
        for c in output
        if c not in cfg.data.identifiers
    }
    card = build_datacard(
        splits,
        targets,
        label=label,
        positive=cfg.data.positive,
        sensitive=cfg.data.sensitive,
        text=cfg.data.text,
        dropped_identifiers=[c for c in cfg.data.identifiers if c not in output],
        hashed_identifiers=[c for c in cfg.data.identifiers if c in output],
        raw_rows=raw_rows,
        canonicalization=canonical,
        merge_report=decided.report,
        pii=pii,
        pii_not_scanned=_not_scanned(cfg, splits["train"], output),
        labels=values,
        encoded_levels={c.name: c.categories for c in encoding.categorical},
        constant_dropped=constant,
        min_group_rows=cfg.evaluate.min_group_rows,
    )
    schema = {
        "modality": "tabular",
        "label": label,
        "positive": cfg.data.positive,
        "label_values": values,  # by class: every value not positive is trained as negative
        "sensitive": cfg.data.sensitive,
        "features": features,
        "encoded_features": encoding.feature_names,
        "splits": [*splits, *pretrain_only],
    }
    encoding.save(tmp / "encoding.json")
    write_json(tmp / SCHEMA, schema)
    write_json(tmp / "datacard.json", card)
    (tmp / "datacard.md").write_text(datacard_markdown(card), encoding="utf-8")
    datacard_figures(card, tmp)
    notes = (label_note(label, values), few_class_note(label, card["few_class_rows"]))
    return [note for note in notes if note]
