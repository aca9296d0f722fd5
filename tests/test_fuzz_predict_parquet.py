"""Generated Parquet files against :func:`sslops.predict.predict`'s own reader (the chunked
one in :mod:`sslops.shadow.scoring` that ``sslops predict`` and ``sslops shadow`` share),
called in-process.

Thirty Adult rows written by pyarrow with columns replaced: dictionary-encoded or large
strings, nulls here and there or all null, rows with no value at all, numbers as text, text
as numbers, booleans, timestamps with and without a zone, dates, decimals, half floats,
unsigned and 62-bit integers, lists, structs, maps, bytes; a column dropped, duplicated or added; zero rows; snappy, zstd or no
compression, row groups of 1 to 64 rows; the bytes damaged or cut. Each ends in one
:class:`SslopsError` that names ``--data`` (not pyarrow's message alone) and neither the
predictions nor their record; or in predictions equal to scoring the rows pandas reads
from the same file (:func:`sslops.predict.predict_frame`, scores to float32 rounding). A
file whose changes only re-encode the same values is scored as the plain file is, in
chunks of any size.

Derandomized, as the other fuzzers (``SSLOPS_FUZZ_RANDOM=1`` / ``SSLOPS_FUZZ_SCALE``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sslops.config import Config
from sslops.errors import SslopsError
from sslops.predict import meta_path, predict, predict_frame
from tests.fuzzing import damaged_bytes, fuzz
from tests.predictions import assert_same_predictions
from tests.test_fuzz_parquet import COLUMN_KINDS as TYPED_KINDS
from tests.test_fuzz_parquet import _column as typed_column

# Changes that keep every value: the file must be scored as the plain one is.
SAME_VALUES = ("dictionary", "large_string", "layout")


def _column(kind: str, old: pa.ChunkedArray, n: int, at: int) -> pa.Array:
    """A column of ``n`` cells of the kind named (prepare's fuzzer makes the typed kinds)."""
    values = old.to_pylist()
    if kind == "some_null":
        return pa.array([None if i % 3 == at % 3 else v for i, v in enumerate(values)], old.type)
    if kind == "as_text":  # numbers written as text: "39"
        return pa.array([None if v is None else str(v) for v in values], pa.string())
    if kind == "float":
        return pa.array(np.linspace(-1, 1e6, n))
    if kind == "text":
        return pa.array([f"x{i}" for i in range(n)])
    return typed_column(kind, n, old)


COLUMN_KINDS = (*TYPED_KINDS, "some_null", "as_text", "float", "text")


class FileBytes(bytes):
    """A generated file: hypothesis shows its size and a digest, not 10 kB of bytes (a
    failing case is found again by the derandomized run)."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes, sha256 {hashlib.sha256(self).hexdigest()[:12]}>"


@st.composite
def parquet_file(draw: st.DrawFn, base: pd.DataFrame) -> tuple[bool, bytes]:
    """(whether every value is the plain file's, the file's bytes)."""
    table = pa.Table.from_pandas(base, preserve_index=False)
    same, damage = True, None
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from([*COLUMN_KINDS, "layout", "empty_rows", "drop",
                                     "duplicate", "extra", "zero_rows", "damaged", "cut"]))  # fmt: skip
        at = draw(st.integers(0, table.num_columns - 1))
        name = table.column_names[at]
        same = same and kind in SAME_VALUES
        if kind in COLUMN_KINDS and table.num_rows:
            column = _column(kind, table.column(at), table.num_rows, at)
            table = table.set_column(at, name, column)
        elif kind == "empty_rows" and table.num_rows:  # a row with no value in any cell
            row = draw(st.integers(0, table.num_rows - 1))
            table = pa.table(
                [pa.array([None if i == row else v for i, v in enumerate(c.to_pylist())],
                          c.type if not pa.types.is_dictionary(c.type) else pa.string())
                 for c in table.columns],
                names=table.column_names,
            )  # fmt: skip
        elif kind == "drop" and table.num_columns > 1:
            table = table.remove_column(at)
        elif kind == "duplicate":
            table = table.append_column(name, table.column(at))
        elif kind == "extra":
            table = table.append_column("extra", pa.array(range(table.num_rows)))
        elif kind == "zero_rows":
            table = table.slice(0, 0)
        elif kind in ("damaged", "cut"):
            damage = kind
    buffer = io.BytesIO()
    pq.write_table(
        table, buffer, compression=draw(st.sampled_from(["snappy", "zstd", "none"])),
        use_dictionary=draw(st.booleans()),
        row_group_size=draw(st.sampled_from([1, 3, 7, 29, 64, None])),
    )  # fmt: skip
    data = buffer.getvalue()
    if damage == "damaged":
        data = draw(damaged_bytes(data, ("flip", "overwrite", "insert", "drop")))
    elif damage == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return same and damage is None, FileBytes(data)


def _predicted(model: Path, data: Path, out: Path, cfg: Config, chunk: int | None) -> str | None:
    """The predictions file's text, or None when predict refused the file (one error that
    names --data, and neither the file nor its record)."""
    try:
        result = predict(model, data, out, cfg, chunk_rows=chunk)
    except SslopsError as exc:
        message = str(exc)  # "--data: <path> ..." or "--data <path>: ..."
        assert message.startswith("--data") and str(data) in message, message
        assert "\n" not in message, message
        assert not out.exists() and not meta_path(out).exists()
        return None
    text = out.read_text(encoding="utf-8")
    assert len(text.splitlines()) == result.rows + 1 and meta_path(out).is_file()
    return text


def _read_by_pandas(model: Path, data: Path, cfg: Config) -> str:
    """What predict writes for the rows pandas reads from ``data``, scored by predict_frame:
    row ids ``<stem>:<row>``, rows with no value skipped."""
    scored = predict_frame(model, pd.read_parquet(data), cfg)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row_id", "score", "label"])
    for i, (score, label) in enumerate(zip(scored["score"], scored["label"], strict=True)):
        if not np.isnan(score):
            writer.writerow([f"{data.stem}:{i}", f"{score:.9g}", int(label)])
    return buffer.getvalue()


@pytest.fixture(scope="module")
def base(small_data: dict[str, Path]) -> pd.DataFrame:
    """Thirty rows with numbers as numbers and text as text, as a typed Parquet file holds."""
    frame = pd.read_csv(small_data["test"], nrows=30, keep_default_na=False)
    return frame.astype({c: "str" for c in frame.columns if frame[c].dtype == object})


def test_a_generated_parquet_file_is_scored_as_pandas_reads_it_or_refused_in_one_error(
    base: pd.DataFrame, stage_artifacts: dict[str, Path], small_config: Config,
    tmp_path: Path,
) -> None:  # fmt: skip
    model = stage_artifacts["export"] / "model.onnx"
    base.to_parquet(tmp_path / "rows.parquet", index=False)
    plain = _predicted(model, tmp_path / "rows.parquet", tmp_path / "plain.csv", small_config,
                       None)  # fmt: skip
    assert plain is not None
    assert_same_predictions(plain, _read_by_pandas(model, tmp_path / "rows.parquet", small_config))

    @fuzz(12)
    @given(generated=parquet_file(base), chunk=st.integers(1, 40))
    def case(generated: tuple[bool, bytes], chunk: int) -> None:
        same, data = generated
        work = Path(tempfile.mkdtemp(prefix="sslops-fuzz-"))
        try:
            rows = work / "rows.parquet"
            rows.write_bytes(data)
            whole = _predicted(model, rows, work / "whole.csv", small_config, None)
            chunked = _predicted(model, rows, work / "chunked.csv", small_config, chunk)
            assert (whole is None) == (chunked is None), (whole, chunked)
            if whole is not None and chunked is not None:
                assert_same_predictions(whole, chunked)
                assert_same_predictions(whole, _read_by_pandas(model, rows, small_config))
            if same:
                assert whole is not None
                assert_same_predictions(whole, plain)
            assert sorted(p.name for p in work.iterdir() if p.name != "rows.parquet") in (
                [], ["chunked.csv", "chunked.meta.json", "whole.csv", "whole.meta.json"]
            )  # fmt: skip
        finally:
            shutil.rmtree(work, ignore_errors=True)

    case()


@pytest.mark.parametrize(
    "data", [b"", b"PAR1", b"PAR", b"\x00PAR1"], ids=["empty", "magic", "cut", "no-magic"]
)
def test_a_cut_parquet_file_is_named_as_parquet_not_read_as_csv(
    data: bytes, stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """Before: a .parquet file cut before its first four bytes (or empty) was read as CSV:
    "is empty; expected a CSV with a header row", "line 1: not UTF-8 text" (found by the
    leftover3 review's fuzzer)."""
    model = stage_artifacts["export"] / "model.onnx"
    (tmp_path / "rows.parquet").write_bytes(data)
    with pytest.raises(SslopsError) as info:
        predict(model, tmp_path / "rows.parquet", tmp_path / "out.csv")
    assert str(info.value).startswith(
        f"--data: {tmp_path / 'rows.parquet'} is not a readable Parquet file ("
    ), str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.parquet"]
