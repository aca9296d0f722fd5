"""Merge the scans of every input file: global duplicate join, clusters, splits, split files.

Everything that needs all rows at once happens here, on the scans' tokens and keys
(8 bytes per cell), never on raw data: exact duplicates (first occurrence in input
order wins), near-duplicate clusters, copies of test rows in the training data, the
out-of-distribution predicate, the split of each cluster, and the global column types
and category spellings. Then the canonical rows stream from the scans into one Parquet
file per split. The result depends only on the rows and their order, not on how they
were divided into files or chunks, so a sharded run equals a single-process one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sslops.config import Config
from sslops.data.canonicalize import parse_number_array, preferred_spellings
from sslops.data.dedup import (
    MISSING_TOKEN,
    clusters_from_pairs,
    combine,
    first_occurrences,
    mix,
    near_duplicate_pairs,
)
from sslops.data.minhash import text_clusters
from sslops.data.split import (
    cluster_key_hashes,
    evaluate_predicate,
    predicate_columns,
    require_ood_rows,
    split_by_uniform,
    uniform_of,
)
from sslops.errors import DataError
from sslops.prepare.dataset import UNLABELED
from sslops.prepare.scan import Roles, read_scan

ROW_GROUP = 65_536


@dataclass
class Plan:
    """What the merge decided for every scanned row, in scan order."""

    split: np.ndarray  # '' = dropped
    numeric: dict[str, bool]
    preferred: dict[str, dict[str, str]]
    report: dict[str, Any]
    case_unified: Counter[str] = field(default_factory=Counter)
    cluster: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    near_pairs: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.int64), np.empty(0, np.int64))


def _load(folders: list[Path], name: str) -> np.ndarray:
    return np.concatenate([np.load(f / name) for f in folders])


def _read_columns(folders: list[Path], columns: list[str]) -> pa.Table:
    rows = sum(read_scan(f)["rows"] for f in folders)
    if not columns:
        return pa.table({"__row": pa.nulls(rows)})
    return pa.concat_tables(
        [pq.read_table(f / "rows.parquet", columns=columns) for f in folders]
    ).combine_chunks()


def convert(
    table: pa.Table,
    numeric: dict[str, bool],
    preferred: dict[str, dict[str, str]],
    kept: np.ndarray | None = None,
    changed: Counter[str] | None = None,
) -> pa.Table:
    """Apply the global decisions to canonical cells: numeric columns (float64, infinities
    missing), one spelling per category (``changed`` counts the ``kept`` cells respelled)."""
    columns: dict[str, pa.Array] = {}
    for name in table.column_names:
        array = table.column(name).combine_chunks()
        if numeric.get(name):
            if pa.types.is_string(array.type):
                values = parse_number_array(array)
            else:
                values = array.to_numpy(zero_copy_only=False).astype(np.float64)
            values[np.isinf(values)] = np.nan
            columns[name] = pa.array(values, mask=np.isnan(values), type=pa.float64())
            continue
        if not pa.types.is_string(array.type):
            array = pc.cast(array, pa.string())
        mapping = preferred.get(name)
        if mapping:
            target = pa.array(list(mapping.values()), pa.string()).take(
                pc.index_in(pc.utf8_lower(array), value_set=pa.array(list(mapping), pa.string()))
            )
            change = pc.fill_null(pc.not_equal(target, array), False)
            array = pc.if_else(change, target, array)
            if changed is not None:
                mask = change.to_numpy(zero_copy_only=False)
                changed[name] += int((mask if kept is None else mask & kept).sum())
        columns[name] = array
    return pa.table(columns)


def plan(cfg: Config, roles: Roles, folders: list[Path]) -> Plan:
    scans = [read_scan(f) for f in folders]
    source = np.concatenate([np.full(s["rows"], s["source"]) for s in scans])
    numeric = {
        c: all(s["numeric"][c] for s in scans)
        and any(s["has_value"][c] for s in scans)
        and c not in cfg.data.category_columns
        for c in roles.content
    }
    spellings: dict[str, Counter[str]] = {}
    for s in scans:
        for column, counts in s["spellings"].items():
            spellings.setdefault(column, Counter()).update(counts)
    preferred = {
        c: preferred_spellings(counts)
        for c, counts in spellings.items()
        if not numeric.get(c) and cfg.prepare.casefold_categories
    }
    tokens = _load(folders, "tokens.npy")
    keys = _load(folders, "keys.npy")
    label = cfg.data.label
    needed = sorted({label, *(predicate_columns(cfg.prepare.ood) if cfg.prepare.ood else [])})
    values = convert(_read_columns(folders, needed), numeric, preferred).to_pandas()

    labeled = values[label].notna().to_numpy()
    content_hash = combine(tokens)
    # Copies and near-copies are judged on the features alone: with the label compared, which
    # training rows count as copies of a test row would depend on the test labels (a row
    # agreeing with a test row's label dropped, one contradicting it kept).
    label_at = roles.content.index(label)
    alive = labeled.copy()
    unlabeled = _unlabeled_kept(cfg, roles, tokens, labeled, source)
    exact: dict[str, int] = {}
    for name in dict.fromkeys(source):
        member = alive & (source == name)
        first = np.zeros(len(source), dtype=bool)
        first[member] = first_occurrences(content_hash[member])
        exact[str(name)] = int(member.sum() - first[member].sum())
        alive &= first | ~member
    copies_of_test = 0
    if "test" in exact:
        feature_hash = combine(np.delete(tokens, label_at, axis=1))
        in_test = np.isin(feature_hash, feature_hash[alive & (source == "test")])
        copy = alive & (source == "train") & in_test
        copies_of_test, alive = int(copy.sum()), alive & ~copy

    index = np.flatnonzero(alive)
    cluster = np.arange(len(source), dtype=np.int64)
    near: dict[str, Any] = {"enabled": cfg.prepare.near_duplicates.enabled}
    near_pairs = (np.empty(0, np.int64), np.empty(0, np.int64))
    if cfg.prepare.near_duplicates.enabled and len(index) > 1:
        max_diff = cfg.prepare.near_duplicates.max_differing_fields
        compared = _with_text_clusters(cfg, roles, folders, tokens, index)
        compared = np.delete(compared, label_at, axis=1)
        _check_near_columns(max_diff, compared.shape[1])
        first_i, second_i, skipped = near_duplicate_pairs(compared, max_diff)
        labels = clusters_from_pairs(len(index), first_i, second_i)
        cluster[index] = labels + len(source)
        near_pairs = (index[first_i], index[second_i])
        sizes = np.bincount(labels)
        near |= {
            "max_differing_fields": max_diff,
            "pairs": len(first_i),
            "clusters": int((sizes > 1).sum()),
            "rows_in_clusters": int(sizes[sizes > 1].sum()),
            "largest_cluster": int(sizes.max()),
            "rows_not_compared_in_oversized_buckets": skipped,
        }
    near_copies_of_test = 0
    if "test" in exact:
        test_clusters = np.unique(cluster[alive & (source == "test")])
        drop = alive & (source == "train") & np.isin(cluster, test_clusters)
        near_copies_of_test, alive = int(drop.sum()), alive & ~drop

    split = np.full(len(source), "", dtype=object)
    test_fraction = 0.0 if "test" in exact else cfg.prepare.test_fraction
    uniform = uniform_of(cluster_key_hashes(keys, cluster))
    chosen = split_by_uniform(uniform, cfg.prepare.validation_fraction, test_fraction)
    train_rows = alive & (source == "train")
    if near.get("largest_cluster", 0) > 1:
        _check_split_shares(cfg, chosen[train_rows], test_fraction, near, compared.shape[1])
    split[train_rows] = chosen[train_rows]
    split[alive & (source == "test")] = "test"
    ood_rows = 0
    if cfg.prepare.ood:
        hit = evaluate_predicate(cfg.prepare.ood, values)
        require_ood_rows(cfg.prepare.ood, values[alive], hit[alive],
                         cfg.prepare.min_category_count)  # fmt: skip
        whole = alive & np.isin(cluster, np.unique(cluster[alive & hit]))
        split[whole] = "ood"
        ood_rows = int(whole.sum())
        unlabeled &= ~hit  # the ood split is data no model has seen, pretraining included
    # An unlabeled row near-copying a validation, test or ood row would show the encoder that
    # row before it is scored: dropped, like the training rows that copy test rows.
    scored = np.isin(split, ["validation", "test", "ood"])
    near_scored = _near_scored(cfg, roles, folders, tokens, scored, unlabeled)
    split[unlabeled & ~near_scored] = UNLABELED
    kept = int((split == UNLABELED).sum())
    report = {
        "rows_without_label_dropped": int((~labeled).sum()) - kept,
        "rows_without_label_kept": kept,
        "unlabeled_rows_dropped_as_near_copies_of_scored_rows": int(near_scored.sum()),
        "exact_duplicates_dropped": exact,
        "train_rows_dropped_as_copies_of_test_rows": {
            "exact": copies_of_test,
            "near": near_copies_of_test,
        },
        "near_duplicates": near,
        "ood": {"predicate": cfg.prepare.ood, "rows": ood_rows} if cfg.prepare.ood else None,
    }
    return Plan(split, numeric, preferred, report, cluster=cluster, near_pairs=near_pairs)


def _unlabeled_kept(
    cfg: Config, roles: Roles, tokens: np.ndarray, labeled: np.ndarray, source: np.ndarray
) -> np.ndarray:
    """Rows of data.train without a label that pretraining may read: ``prepare.unlabeled`` is
    'pretrain', the row holds a value (a spreadsheet's row of commas does not), and its
    features are not those of a labeled row (in any file) or of an earlier unlabeled row."""
    if cfg.prepare.unlabeled != "pretrain" or labeled.all():
        return np.zeros(len(labeled), dtype=bool)
    cells = np.delete(tokens, roles.content.index(cfg.data.label), axis=1)
    features = combine(cells)
    candidate = ~labeled & (source == "train") & (cells != MISSING_TOKEN).any(axis=1)
    first = np.zeros(len(labeled), dtype=bool)
    first[candidate] = first_occurrences(features[candidate])
    return first & ~np.isin(features, features[labeled])


def _near_scored(
    cfg: Config, roles: Roles, folders: list[Path], tokens: np.ndarray, scored: np.ndarray,
    unlabeled: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """The ``unlabeled`` rows within ``prepare.near_duplicates.max_differing_fields`` feature
    values of a ``scored`` (validation, test, ood) row; the label is not compared."""
    near = np.zeros(len(unlabeled), dtype=bool)
    if not (cfg.prepare.near_duplicates.enabled and scored.any() and unlabeled.any()):
        return near
    index = np.concatenate([np.flatnonzero(scored), np.flatnonzero(unlabeled)])
    is_scored = scored[index]
    compared = _with_text_clusters(cfg, roles, folders, tokens, index)
    compared = np.delete(compared, roles.content.index(cfg.data.label), axis=1)
    # One scored row per feature vector: scored rows may differ in their label only, and
    # near_duplicate_pairs expects no exact copies (unlabeled copies are already gone).
    keep = ~is_scored
    keep[is_scored] = first_occurrences(combine(compared[is_scored]))
    index, compared, is_scored = index[keep], compared[keep], is_scored[keep]
    a, b, _ = near_duplicate_pairs(compared, cfg.prepare.near_duplicates.max_differing_fields)
    near[index[b[is_scored[a] & ~is_scored[b]]]] = True
    near[index[a[is_scored[b] & ~is_scored[a]]]] = True
    return near


def _check_near_columns(max_diff: int, columns: int) -> None:
    """Rows that may differ in every compared column are all near-copies of each other:
    refuse rather than report no near-duplicates (or put every row in one cluster)."""
    if columns <= max_diff:
        raise DataError(
            f"prepare.near_duplicates.max_differing_fields {max_diff}: the data has "
            f"{columns} feature column(s) to compare, so every row would be a near-copy of "
            f"every other; expected fewer than {columns} (or set "
            "prepare.near_duplicates.enabled=false: exact duplicates are still removed)"
        )


def _check_split_shares(
    cfg: Config, chosen: np.ndarray, test_fraction: float, near: dict[str, Any], columns: int
) -> None:
    """Every near-duplicate cluster goes to one split, so clusters that chain most rows
    together (a table with few, coarse columns) leave a split far from its share: refuse that
    rather than evaluate on a sliver of the data."""
    rows = len(chosen)
    asked = {"validation": cfg.prepare.validation_fraction, "test": test_fraction}
    for name, share in asked.items():
        if not share or not rows:
            continue
        expected, got = rows * share, int((chosen == name).sum())
        noise = 4 * np.sqrt(rows * share * (1 - share))
        if (got < expected / 2 or got > expected * 2) and abs(got - expected) > noise:
            raise DataError(
                f"prepare: the {name} split got {got:,} of {rows:,} rows ({got / rows:.1%}) "
                f"where prepare.{name}_fraction asks for {share:.0%}: near-duplicate clusters "
                f"(rows differing in at most {near['max_differing_fields']} of {columns} "
                f"compared columns) chain together here, the largest holding "
                f"{near['largest_cluster']:,} rows, and each cluster stays in one split. With "
                "this few columns set prepare.near_duplicates.enabled=false (exact duplicates "
                "are still removed)"
            )


def _with_text_clusters(
    cfg: Config, roles: Roles, folders: list[Path], tokens: np.ndarray, index: np.ndarray
) -> np.ndarray:
    """Tokens of the rows ``index``, where each text column's token is replaced by the id of
    its near-duplicate text cluster (MinHash-LSH), so lightly edited texts compare equal."""
    compared = tokens[index]
    threshold = cfg.prepare.near_duplicates.text_jaccard
    columns = read_scan(folders[0])["minhash_columns"] if folders else []
    if threshold is None or not columns:
        return compared
    minhash = _load(folders, "text_minhash.npy")[index]
    for j, column in enumerate(columns):
        signature = minhash[:, j, :]
        clustered = mix(text_clusters(signature, threshold).astype(np.uint64) + np.uint64(0x51ED))
        # Texts without words (missing, punctuation only) keep their exact token.
        wordless = (signature == np.iinfo(np.uint32).max).all(axis=1)
        where = roles.content.index(column)
        compared[:, where] = np.where(wordless, compared[:, where], clustered)
    return compared


class _SplitWriter:
    """Parquet output in fixed-size row groups, so the bytes do not depend on input chunking."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: pq.ParquetWriter | None = None
        self.buffered = 0
        self.pending_tables: list[pa.Table] = []

    def add(self, table: pa.Table) -> None:
        self.pending_tables.append(table)
        self.buffered += table.num_rows
        while self.buffered >= ROW_GROUP:
            self._flush(ROW_GROUP)

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self.pending_tables).combine_chunks()
        head, rest = table.slice(0, rows), table.slice(rows)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, head.schema)
        writer = self.writer
        writer.write_table(head, row_group_size=ROW_GROUP)
        self.pending_tables, self.buffered = [rest], rest.num_rows

    def close(self, schema: pa.Schema) -> None:
        if self.buffered or self.writer is None:
            if not self.pending_tables or not self.buffered:
                self.pending_tables = [schema.empty_table()]
            self._flush(self.buffered)
        if self.writer is not None:
            self.writer.close()


def write_splits(
    folders: list[Path], roles: Roles, decided: Plan, out: Path, names: list[str]
) -> None:
    writers = {name: _SplitWriter(out / f"{name}.parquet") for name in names}
    offset = 0
    schema: pa.Schema | None = None
    for folder in folders:
        rows = pq.ParquetFile(folder / "rows.parquet")
        for batch in rows.iter_batches(batch_size=ROW_GROUP, columns=roles.output):
            split = decided.split[offset : offset + batch.num_rows]
            offset += batch.num_rows
            table = convert(
                pa.Table.from_batches([batch]), decided.numeric, decided.preferred,
                split != "", decided.case_unified,
            )  # fmt: skip
            schema = schema or table.schema
            for name, writer in writers.items():
                mask = split == name
                if mask.any():
                    writer.add(table.filter(pa.array(mask)).cast(schema))
    for writer in writers.values():
        writer.close(schema if schema is not None else pa.schema([]))
