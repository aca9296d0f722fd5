"""Generated Parquet files against the prepare stage (``data.format: parquet``), in-process.

A bank's table (tests/test_own_data.py) written by pyarrow with columns replaced: lists,
structs, maps, bytes, dictionary-encoded or large strings, all-null columns, timestamps with
and without a zone, dates, decimals, booleans, half floats, unsigned and 62-bit integers, a
label or sensitive column with nulls or as floats; a duplicated or unnamed column; zero
rows; snappy, zstd or no compression, row groups of any size; the bytes damaged or cut. Each
ends in an artifact whose files match its ``meta.json``, or one :class:`SslopsError` (on
one line) and no output folder. A file whose changes only re-encode the same values
(dictionary encoding, large strings, compression, row groups) prepares exactly as the plain
file does.

Derandomized, as the other fuzzers (``SSLOPS_FUZZ_RANDOM=1`` / ``SSLOPS_FUZZ_SCALE``).
"""

from __future__ import annotations

import io
import shutil
import struct
import tempfile
from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sslops.artifacts import read_meta
from sslops.errors import DataError, SslopsError
from sslops.prepare import prepare
from tests.fuzzing import damaged_bytes, fuzz
from tests.test_own_data import credit, credit_config

SPLITS = ("train.parquet", "validation.parquet", "test.parquet")
# Changes that keep every value: the file must prepare as the plain one does.
SAME_VALUES = ("dictionary", "large_string")


def _column(kind: str, n: int, old: pa.ChunkedArray) -> pa.Array:
    """A column of ``n`` values of the kind named."""
    if kind == "dictionary":
        return old.combine_chunks().dictionary_encode()
    if kind == "large_string":
        return pa.array([None if v is None else str(v) for v in old.to_pylist()],
                        pa.large_string())  # fmt: skip
    if kind == "all_null":
        return pa.nulls(n, old.type if not pa.types.is_dictionary(old.type) else pa.string())
    made = {
        "list": lambda: pa.array([[i, i + 1] for i in range(n)]),
        "struct": lambda: pa.array([{"a": i, "b": str(i)} for i in range(n)]),
        "map": lambda: pa.array([[("k", i)] for i in range(n)], pa.map_(pa.string(), pa.int64())),
        "binary": lambda: pa.array([bytes([i % 256, 0xFF]) for i in range(n)]),
        "timestamp": lambda: pa.array(pd.date_range("2020-01-01", periods=n, freq="h")),
        "timestamp_tz": lambda: pa.array(
            pd.date_range("2020-03-29", periods=n, freq="h", tz="Europe/Berlin")
        ),
        "date": lambda: pa.array([date(2020, 1, 1 + i % 28) for i in range(n)]),
        "decimal": lambda: pa.array(
            [Decimal(i * 1429).scaleb(-4) if i % 5 else None for i in range(n)],
            pa.decimal128(12, 4),
        ),
        "bool": lambda: pa.array([i % 3 == 0 for i in range(n)]),
        "float16": lambda: pa.array(np.arange(n, dtype=np.float16)),
        "uint64": lambda: pa.array(np.arange(n, dtype=np.uint64) + np.uint64(2**63)),
        "int62": lambda: pa.array([2**62 + i for i in range(n)]),
    }  # fmt: skip
    return made[kind]()


COLUMN_KINDS = ("dictionary", "large_string", "all_null", "list", "struct", "map", "binary",
                "timestamp", "timestamp_tz", "date", "decimal", "bool", "float16", "uint64",
                "int62")  # fmt: skip


@st.composite
def parquet_file(draw: st.DrawFn, base: pd.DataFrame) -> tuple[bool, bytes]:
    """(whether every value is the plain file's, the file's bytes)."""
    table = pa.Table.from_pandas(base, preserve_index=False)
    same, damage = True, None
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from([*COLUMN_KINDS, "label", "sensitive", "duplicate",
                                     "unnamed", "zero_rows", "damaged", "cut"]))  # fmt: skip
        at = draw(st.integers(0, table.num_columns - 1))  # an index: names may repeat
        name = table.column_names[at]
        same = same and kind in SAME_VALUES
        if kind in COLUMN_KINDS and table.num_rows:
            table = table.set_column(at, name, _column(kind, table.num_rows, table.column(at)))
        elif kind == "label" and "default" in table.column_names:  # nulls, or 0.0/1.0
            label = base["default"]
            values = draw(st.sampled_from([
                pa.array([None if i % 4 == 0 else v for i, v in enumerate(label)], pa.int64()),
                pa.array(label.astype(float)),
            ]))  # fmt: skip
            table = table.set_column(table.column_names.index("default"), "default",
                                     values.slice(0, table.num_rows))  # fmt: skip
        elif kind == "sensitive" and "gender" in table.column_names:
            table = table.set_column(table.column_names.index("gender"), "gender",
                                     pa.nulls(table.num_rows, pa.string()))  # fmt: skip
        elif kind == "duplicate":
            table = table.append_column(name, table.column(at))
        elif kind == "unnamed":
            table = table.rename_columns([
                "" if i == at else c for i, c in enumerate(table.column_names)
            ])  # fmt: skip
        elif kind == "zero_rows":
            table = table.slice(0, 0)
        elif kind in ("damaged", "cut"):
            damage = kind
    buffer = io.BytesIO()
    pq.write_table(
        table, buffer, compression=draw(st.sampled_from(["snappy", "zstd", "none"])),
        use_dictionary=draw(st.booleans()), row_group_size=draw(st.sampled_from([7, 64, None])),
    )  # fmt: skip
    data = buffer.getvalue()
    if damage == "damaged":
        data = draw(damaged_bytes(data, ("flip", "overwrite", "insert")))
    elif damage == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return same and damage is None, data


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict[str, bytes]]:
    """The table, and what prepare makes of it written plainly (each split's bytes)."""
    base = credit(150)
    root = tmp_path_factory.mktemp("fuzz-parquet")
    base.to_parquet(root / "plain.parquet", index=False)
    out = prepare(credit_config(root / "plain.parquet"), root / "prepare")
    return base, {name: (out / name).read_bytes() for name in SPLITS}


def test_a_generated_parquet_file_is_prepared_or_refused_in_one_error(
    plain: tuple[pd.DataFrame, dict[str, bytes]],
) -> None:
    base, reference = plain

    @fuzz(8)
    @given(generated=parquet_file(base))
    def case(generated: tuple[bool, bytes]) -> None:
        same, data = generated
        work = Path(tempfile.mkdtemp(prefix="sslops-fuzz-"))
        try:
            (work / "bank.parquet").write_bytes(data)
            out = work / "prepare"
            try:
                prepare(credit_config(work / "bank.parquet"), out)
            except SslopsError as exc:
                assert str(exc).strip() and "\n" not in str(exc), str(exc)
                assert not out.exists()
                assert not same, str(exc)
            else:
                read_meta(out)  # every file there, each matching its sha256
                if same:
                    assert {n: (out / n).read_bytes() for n in SPLITS} == reference
            assert sorted(p.name for p in work.iterdir()) in (
                ["bank.parquet", "prepare"], ["bank.parquet"]
            )  # fmt: skip
        finally:
            shutil.rmtree(work, ignore_errors=True)

    case()


def test_a_parquet_footer_that_does_not_deserialize_is_one_line(tmp_path: Path) -> None:
    """pyarrow's Thrift error ends in a line break, which the message carried (a log reader
    saw two lines; found by the fuzz review)."""
    credit(150).to_parquet(tmp_path / "bank.parquet", index=False)
    data = bytearray((tmp_path / "bank.parquet").read_bytes())
    footer = struct.unpack("<i", data[-8:-4])[0]
    data[len(data) - 8 - footer] ^= 0xFF  # the footer's first byte
    (tmp_path / "bank.parquet").write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        prepare(credit_config(tmp_path / "bank.parquet"), tmp_path / "out")
    assert str(info.value) == (
        f"data.train: {tmp_path / 'bank.parquet'} is not a readable Parquet file (Couldn't "
        "deserialize thrift: TProtocolException: Invalid data)"
    )
