"""Scan one input table file: canonical cells, PII redacted, identifiers removed, row tokens.

This is the per-shard half of the tabular prepare stage (the merge is
:mod:`sslops.prepare.merge`). It streams the file in chunks and writes a scan folder:

- ``rows.parquet``: the canonical, redacted cells (text, or numbers for numeric Parquet
  columns); identifier columns are absent, or replaced by their keyed hash
- ``tokens.npy``: one uint64 token per content cell (columns in sorted order)
- ``keys.npy``: the keyed hash of each row's split key
- ``scan.json``: counts only (rows, PII findings per kind and column, text changes),
  which columns were all-numeric, and category spellings for case unification

No raw identifier or PII value reaches the scan folder, so it may be a KFP artifact.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sslops.artifacts import json_text
from sslops.config import Config
from sslops.data.canonicalize import canonical_column_name, canonical_text, parse_number_array
from sslops.data.dedup import MISSING_TOKEN, combine, value_tokens
from sslops.data.minhash import shingles, signatures
from sslops.data.pii import (
    keyed_hash,
    load_key,
    redact_array,
    require_key,
    siphash_key,
    value_shape,
)
from sslops.data.readers import iter_table_chunks, scalar_cells
from sslops.data.split import split_key
from sslops.errors import DataError

SCAN = "scan.json"


@dataclass
class Roles:
    """Which columns play which part, shared by the scans and the merge."""

    columns: list[str]  # every input column, in file order
    identifiers: list[str]
    hashed: list[str]  # identifiers kept as keyed hashes
    content: list[str]  # sorted: the columns that define a row's content
    key_columns: list[str]  # sorted: the split key (defaults to the content)
    text: list[str] = field(default_factory=list)

    @property
    def output(self) -> list[str]:
        """Columns written to the prepared splits, in input order."""
        return [c for c in self.columns if c not in self.identifiers or c in self.hashed]


def roles_for(cfg: Config, columns: list[str]) -> Roles:
    identifiers = list(cfg.data.identifiers)
    hashed = identifiers if cfg.prepare.pii.identifiers == "hash" else []
    content = sorted(c for c in columns if c not in identifiers)
    keys = sorted(cfg.prepare.split_key) or content
    return Roles(columns, identifiers, hashed, content, keys, list(cfg.data.text))


def split_secret(cfg: Config, roles: Roles) -> str:
    """A split key built from identifier columns is keyed by the secret, so it reveals nothing."""
    if not set(roles.key_columns) & set(roles.identifiers):
        return ""
    key = require_key(
        load_key(cfg.prepare.pii.key_file, cfg.prepare.pii.key_env),
        "prepare.split_key on identifier columns",
        cfg.prepare.pii.key_env,
    )
    return siphash_key(key, "split")


def _check_columns(found: list[str], expected: list[str], path: Path, key: str) -> None:
    missing = [c for c in expected if c not in found]
    if missing:
        raise DataError(
            f"{key}: {path} lacks columns {missing}; every file must have: {', '.join(expected)}"
        )


def scan_file(
    cfg: Config, source: str, path: Path, columns: list[str], out: Path, key: str
) -> Path:
    """Scan ``path`` (a ``source`` file: 'train' or 'test') into the folder ``out``."""
    roles = roles_for(cfg, columns)
    secret = split_secret(cfg, roles)
    pii_key = None
    if roles.hashed:
        pii_key = require_key(
            load_key(cfg.prepare.pii.key_file, cfg.prepare.pii.key_env),
            "prepare.pii.identifiers=hash",
            cfg.prepare.pii.key_env,
        )
    out.mkdir(parents=True, exist_ok=True)
    stats: dict[str, Any] = {
        "source": source,
        "file": str(path),
        "key": key,
        "rows": 0,
        "pii": {},
        "normalized_text": Counter(),
        "numeric": {c: True for c in roles.content},
        "has_value": {c: False for c in roles.content},
        "spellings": {c: Counter() for c in roles.content if c not in roles.text},
        "_mixed": {},
    }
    token_parts, key_parts, minhash_parts = [], [], []
    minhash_columns = [c for c in roles.content if c in roles.text]
    if cfg.prepare.near_duplicates.text_jaccard is None:
        minhash_columns = []
    writer: pq.ParquetWriter | None = None
    try:
        for chunk in iter_table_chunks(path, cfg.data.format, cfg.prepare.chunk_rows, key):
            chunk = chunk.rename_columns([canonical_column_name(c) for c in chunk.column_names])
            _check_columns(chunk.column_names, columns, path, key)
            stats["rows"] += chunk.num_rows
            cells: dict[str, pa.Array] = {}
            content: dict[str, np.ndarray] = {}
            keys: dict[str, np.ndarray] = {}
            for column in columns:
                # Identifiers as text, as a CSV holds them: a Parquet id of 16+ digits
                # does not fit a float, and its digits are what identifies the row.
                as_text = column in cfg.data.category_columns or column in roles.identifiers
                array = scalar_cells(chunk.column(column), column, key, path, as_text)
                cells[column], content[column], keys[column] = _scan_column(
                    cfg, roles, column, array, stats
                )
            token_parts.append(np.stack([content[c] for c in roles.content], axis=1))
            if minhash_columns:
                minhash_parts.append(
                    np.stack([_minhash(cells[c]) for c in minhash_columns], axis=1)
                )
            key_tokens = np.stack([keys[c] for c in roles.key_columns], axis=1)
            key_parts.append(combine(key_tokens, split_key(cfg.seed, secret)))
            for column in roles.hashed:
                ids = pd.Series(cells[column].to_pylist(), dtype=object)
                cells[column] = pa.array(
                    keyed_hash(ids, pii_key or b"").to_numpy(object), pa.string()
                )
            table = pa.table({c: cells[c] for c in roles.output})
            if writer is None:
                writer = pq.ParquetWriter(out / "rows.parquet", table.schema)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
    _check_mixed(stats.pop("_mixed"), cfg, path, key)
    np.save(out / "tokens.npy", np.concatenate(token_parts).reshape(-1, len(roles.content)))
    np.save(out / "keys.npy", np.concatenate(key_parts))
    if minhash_columns:
        np.save(out / "text_minhash.npy", np.concatenate(minhash_parts))
    stats["minhash_columns"] = minhash_columns
    stats["spellings"] = {c: dict(s) for c, s in stats["spellings"].items() if s}
    stats["normalized_text"] = dict(stats["normalized_text"])
    stats["pii"] = {c: dict(v) for c, v in stats["pii"].items()}
    (out / SCAN).write_text(json_text(stats, indent=1) + "\n", encoding="utf-8")
    return out


def _scan_column(
    cfg: Config, roles: Roles, column: str, array: pa.Array, stats: dict[str, Any]
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """One column of a chunk (numbers or text): canonical cells, content tokens and
    split-key tokens.

    The work happens once per distinct value (Arrow dictionary encoding); the results are
    then spread to the rows.
    """
    casefold = cfg.prepare.casefold_categories and column not in roles.text
    if pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
        # Unsafe: an integer beyond 2**53 is read as the nearest float, as a CSV's is.
        values = pc.cast(array, pa.float64(), safe=False)
        numbers = values.to_numpy(zero_copy_only=False)
        stats["has_value"].setdefault(column, False)
        stats["has_value"][column] |= bool((~np.isnan(numbers)).any())
        tokens = value_tokens(pd.Series(numbers, dtype=object), pd.Series(numbers))
        return values, tokens, tokens
    encoded = array.dictionary_encode()
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    weights = np.bincount(codes[codes >= 0], minlength=len(encoded.dictionary))
    distinct, changed = canonical_text(encoded.dictionary, cfg.data.na_values)
    stats["normalized_text"][column] += int(weights[changed].sum())
    if column in roles.identifiers:
        key_tokens = _spread(_tokens(distinct, casefold=True), codes)
        return _take(distinct, codes), key_tokens, key_tokens
    if cfg.prepare.pii.scan and column not in cfg.prepare.pii.skip_columns:
        distinct, found = redact_array(distinct, weights)
        for kind, count in found.items():
            stats["pii"].setdefault(column, Counter())[kind] += int(count)
    numbers = parse_number_array(distinct)
    present = pc.is_valid(distinct).to_numpy(zero_copy_only=False)
    all_numeric = bool((~np.isnan(numbers) | ~present).all())
    stats["numeric"][column] &= all_numeric
    stats["has_value"][column] |= bool((present & (weights > 0)).any())
    if column not in roles.text and column not in cfg.data.category_columns:
        mixed = stats["_mixed"].setdefault(column, _Mixed())
        _count_mixed(mixed, distinct, numbers, present, weights, codes, stats["rows"] - len(codes))
    if casefold and not all_numeric:
        for value, weight in zip(distinct.to_pylist(), weights.tolist(), strict=True):
            if weight and value is not None and any(ch.isalpha() for ch in value):
                stats["spellings"][column][value] += weight
    tokens = _spread(_tokens(distinct, casefold, numbers), codes)
    key_tokens = tokens if casefold else _spread(_tokens(distinct, True, numbers), codes)
    return _take(distinct, codes), tokens, key_tokens


@dataclass
class _Example:
    """A text found in a number column: its first data row (1-based) and the rows of its
    chunk that hold it."""

    text: str
    row: int
    rows: int


@dataclass
class _Mixed:
    """Rows of one column that hold a number or text, and the first few texts (in memory
    only: ``scan.json`` keeps counts, never values)."""

    numbers: int = 0
    texts: int = 0
    examples: list[_Example] = field(default_factory=list)
    formatted: int = 0  # texts that are numbers written for people: 177,119 / $40 / 12,5 / 40%
    formatted_examples: list[_Example] = field(default_factory=list)


def _count_mixed(
    mixed: _Mixed, distinct: pa.Array, numbers: np.ndarray, present: np.ndarray,
    weights: np.ndarray, codes: np.ndarray, before: int,
) -> None:  # fmt: skip
    """Add a chunk's counts; ``codes`` index ``distinct`` per row, ``before`` rows of the file
    came in earlier chunks."""
    is_text = present & np.isnan(numbers) & (weights > 0)
    formatted = is_text & pc.fill_null(
        pc.match_substring_regex(distinct, _FORMATTED_NUMBER), False
    ).to_numpy(zero_copy_only=False)
    mixed.numbers += int(weights[present & ~np.isnan(numbers)].sum())
    mixed.texts += int(weights[is_text].sum())
    mixed.formatted += int(weights[formatted].sum())
    for examples, rows in ((mixed.examples, is_text), (mixed.formatted_examples, formatted)):
        for index in np.flatnonzero(rows)[: 3 - len(examples)]:
            row = before + int(np.flatnonzero(codes == index)[0]) + 1
            examples.append(_Example(str(distinct[int(index)].as_py()), row, int(weights[index])))


def _shown(examples: list[_Example], quotable: int) -> str:
    """The examples for an error message: a text held by at least ``quotable`` rows (a
    marker such as 'unknown') quoted, a rarer one (a name typed into the wrong column) by
    its row and its shape only, as error messages end up in logs and tickets."""
    shown = [
        repr(e.text[:30]) if e.rows >= quotable else f"data row {e.row:,}: {value_shape(e.text)!r}"
        for e in examples
    ]
    note = (
        f"; a text in fewer than {quotable} rows (prepare.min_category_count) is not quoted: "
        "letters are shown as a/A, digits as 9"
    )
    return ", ".join(shown) + (note if any(e.rows < quotable for e in examples) else "")


# A number with a currency sign, digit grouping (1,234 / 1.234.567 / 1 234), a decimal comma
# or a percent sign: what a spreadsheet writes when a cell is formatted for reading.
_FORMATTED_NUMBER = (
    r"^[+-]?[$€£¥]?\s?(?:\d{1,3}(?:[,.' \x{a0}\x{202f}]\d{3})+|\d+)(?:[.,]\d+)?\s?%?$"
)


MIXED_NUMERIC_SHARE = 0.95


def _check_mixed(mixed: dict[str, _Mixed], cfg: Config, path: Path, key: str) -> None:
    """A column of numbers with a few texts in it would silently become a category (its
    order lost, its values folded): name the texts and the two ways to say what they are."""
    for column, m in mixed.items():
        code = column if column.isprintable() else json.dumps(column)
        quotable = cfg.prepare.min_category_count
        if m.formatted and m.numbers + m.formatted >= MIXED_NUMERIC_SHARE * (m.numbers + m.texts):
            examples = _shown(m.formatted_examples, quotable)
            raise DataError(
                f"{key}: column {column!r} in {path} holds numbers written with separators, "
                f"a currency or a percent sign in {m.formatted:,} rows (e.g. {examples}); "
                "sslops reads plain numbers (177119, 40, 12.5), so it would take the column for "
                "text: write the numbers plain in the file (a spreadsheet's General format), or "
                f"list the column in data.categorical (--set 'data.categorical=[{code}]') to "
                "read its values as categories"
            )
        if m.texts and m.numbers >= MIXED_NUMERIC_SHARE * (m.numbers + m.texts):
            examples = _shown(m.examples, quotable)
            # A marker of a missing value repeats; a text in fewer rows is not put in the hint.
            repeated = [e.text[:30] for e in m.examples if e.rows >= quotable]
            values = list(dict.fromkeys([*cfg.data.na_values, *repeated]))
            # JSON escapes are YAML escapes: a marker that cannot be typed (a control or
            # line-break character from a damaged file) is written as \uXXXX, which --set
            # reads back as that character
            typed = all(v.isprintable() for v in values)
            markers = json.dumps(values, ensure_ascii=not typed)
            hint = f" (--set 'data.na_values={markers}')" if repeated else ""
            raise DataError(
                f"{key}: column {column!r} in {path} holds numbers in {m.numbers:,} rows and "
                f"text in {m.texts:,} (e.g. {examples}); if the text marks a missing value, add "
                f"it to data.na_values{hint}; if the column is a "
                f"code, list it in data.categorical (--set 'data.categorical=[{code}]'); "
                "otherwise correct the file"
            )


def _tokens(distinct: pa.Array, casefold: bool, numbers: np.ndarray | None = None) -> np.ndarray:
    if numbers is None:
        numbers = parse_number_array(distinct)
    return value_tokens(distinct, numbers, casefold)


def _minhash(cells: pa.Array) -> np.ndarray:
    """MinHash signature of each cell's text, computed once per distinct text."""
    encoded = cells.dictionary_encode()
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    per_value = signatures(*shingles(encoded.dictionary.to_pylist()))
    empty = np.full((1, per_value.shape[1]), np.iinfo(np.uint32).max, dtype=np.uint32)
    return np.concatenate([per_value, empty])[codes]


def _spread(per_value: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return np.append(per_value, MISSING_TOKEN)[codes]


def _take(distinct: pa.Array, codes: np.ndarray) -> pa.Array:
    indices = pa.array(codes, mask=codes < 0, type=pa.int64())
    return distinct.take(indices)


def read_scan(folder: Path) -> dict[str, Any]:
    stats: dict[str, Any] = json.loads((folder / SCAN).read_text(encoding="utf-8"))
    return stats
