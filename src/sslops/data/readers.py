"""Read raw tables in chunks; resolve ``package:`` paths, folders and globs of shards.

Tables (CSV, Parquet) stream through pyarrow in chunks of ``chunk_rows`` rows so a
table larger than memory can be prepared; every cell arrives as text (Parquet
numbers stay numbers) and canonicalization decides the types. Errors name the
file, the line or record, and what was expected. They never quote the offending
row: it may hold personal data.
"""

from __future__ import annotations

import csv
import glob
import gzip
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sslops.errors import DataError

PACKAGE_PREFIX = "package:"
TABLE_SUFFIXES = {"csv": (".csv", ".csv.gz"), "parquet": (".parquet", ".pq")}


def resolve_path(spec: str, key: str = "data.train") -> Path:
    """``package:adult/train.csv.gz`` -> the file inside sslops/datasets; else a filesystem path."""
    path = local_path(spec)
    if not path.is_file():
        raise DataError(f"{key}: file not found: {spec}{_where_relative(path)}")
    return path


def local_path(spec: str) -> Path:
    if spec.startswith(PACKAGE_PREFIX):
        return Path(str(files("sslops") / "datasets" / spec[len(PACKAGE_PREFIX) :]))
    return Path(spec).expanduser()


def resolve_sources(spec: str, key: str, fmt: str = "csv") -> list[Path]:
    """The files a table spec names: one file, every table file in a folder, or a glob (sorted)."""
    path = local_path(spec)
    if path.is_file():
        return [path]
    suffixes: tuple[str, ...] = TABLE_SUFFIXES.get(fmt, ())
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(suffixes))
        if not found:
            deeper = [p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes)]
            hint = (
                f"; its subfolders hold {len(deeper)} (a partitioned dataset?): name them with "
                f"a glob, e.g. {key}='{Path(spec) / '**' / ('*' + suffixes[0])}'"
                if deeper
                else ""
            )
            raise DataError(
                f"{key}: folder {spec} holds no {fmt} files ({', '.join(suffixes)}){hint}"
            )
        return found
    if any(ch in spec for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not found:
            raise DataError(f"{key}: no file matches {spec}")
        return found
    raise DataError(f"{key}: file not found: {spec}{_where_relative(path)}")


def _where_relative(path: Path) -> str:
    """A relative path is read from the working directory, not the config file's folder: say
    which folder that was, for the run started from somewhere else."""
    return "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def read_header(spec: str, key: str = "data.train", fmt: str = "csv") -> list[str]:
    """Column names of a table without reading the rest of it (the first file of a folder).
    A column without a name (Excel writes trailing empty ones) is left out: the chunk reader
    checks that it holds nothing."""
    path = resolve_sources(spec, key, fmt)[0]
    return [name for name in _all_names(path, key, fmt) if name]


def _all_names(path: Path, key: str, fmt: str) -> list[str]:
    """Every column name of the file, stripped, '' for a column without one."""
    if fmt == "parquet":
        try:
            return [str(n).strip() for n in pq.read_schema(path).names]
        except (OSError, pa.ArrowException) as exc:
            raise _unreadable_parquet(path, exc, key) from None
    check_is_csv(path, key)
    try:
        with _open_text(path) as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError:  # the reader decodes a block ahead: find the line
        raise DataError(f"{key}: {path} {csv_problem(path)}") from None
    except (OSError, csv.Error) as exc:
        raise DataError(f"{key}: cannot read {path}: {exc}") from None
    if not header or not any(h.strip() for h in header):
        raise DataError(f"{key}: {path} is empty; expected a CSV with a header row")
    return [h.strip() for h in header]


def _to_utf8(source: str = "latin1") -> str:
    """What to do with a text file in another encoding (latin1: a guess, named as such)."""
    return f"; save the file as UTF-8, e.g. iconv -f {source} -t utf-8 FILE > FILE.utf8"


_TO_UTF8 = _to_utf8()

# Leading bytes of files people hand over as CSV: what the file is, and what to do.
_NOT_CSV = {
    b"PAR1": "a Parquet file; set data.format=parquet",
    b"\xff\xfe\x00\x00": f"UTF-32 text (it starts with a byte-order mark){_to_utf8('UTF-32')}",
    b"\x00\x00\xfe\xff": f"UTF-32 text (it starts with a byte-order mark){_to_utf8('UTF-32')}",
    b"\xff\xfe": f"UTF-16 text (it starts with a byte-order mark){_to_utf8('UTF-16')}",
    b"\xfe\xff": f"UTF-16 text (it starts with a byte-order mark){_to_utf8('UTF-16')}",
    b"PK\x03\x04": "a zip archive (an Excel .xlsx workbook is one); export the sheet as CSV "
    "(UTF-8) or Parquet",
    b"\xd0\xcf\x11\xe0": "an Excel .xls workbook; export the sheet as CSV (UTF-8) or Parquet",
    b"BZh": "bzip2-compressed; decompress it, or compress it with gzip as .csv.gz",
    b"\xfd7zXZ": "xz-compressed; decompress it, or compress it with gzip as .csv.gz",
    b"\x28\xb5\x2f\xfd": "zstd-compressed; decompress it, or compress it with gzip as .csv.gz",
}


def is_parquet(path: Path) -> bool:
    """Whether the file starts as a Parquet file does (its magic bytes), whatever its name."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PAR1"
    except OSError:  # no such file, a folder: the reader that follows names the problem
        return False


def check_is_csv(path: Path, key: str) -> None:
    """A file named as CSV that is something else gets one line saying what it is, not a
    parse error from deep inside the CSV reader (or a header made of its first record)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    gzipped = head.startswith(b"\x1f\x8b")
    _check_gzip(head, path, key)
    if gzipped and not path.name.endswith(".gz"):
        raise DataError(
            f"{key}: {path} is gzip-compressed but its name does not end in .gz; "
            f"rename it to {path.name}.gz"
        )
    if gzipped:
        with gzip.open(path, "rb") as fh:
            try:
                head = fh.read(512)
            except (OSError, EOFError) as exc:
                raise DataError(f"{key}: {path} is not a readable gzip file ({exc})") from None
    for magic, what in _NOT_CSV.items():
        if head.startswith(magic):
            raise DataError(f"{key}: {path} is {what}")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b'{"') or (text.startswith(b"[") and text[1:].lstrip().startswith(b"{")):
        raise DataError(
            f"{key}: {path} looks like JSON; sslops reads CSV or Parquet: convert it, e.g. "
            f"pandas.read_json(path, lines={not text.startswith(b'[')}).to_parquet(...) and set "
            "data.format=parquet"
        )


def _unreadable_parquet(path: Path, exc: Exception, key: str) -> DataError:
    with open(path, "rb") as fh:
        head = fh.read(4096)
    try:
        first_line = head.decode("utf-8").splitlines()[0] if head else ""
    except UnicodeDecodeError:
        first_line = ""
    hint = "; it looks like CSV text: set data.format=csv" if "," in first_line else ""
    return DataError(f"{key}: {path} is not a readable Parquet file ({_said(exc)}){hint}")


def _said(exc: Exception) -> str:
    """pyarrow's message on one line (a Thrift error ends in a line break)."""
    return " ".join(str(exc).split())


def is_number(text: str) -> bool:
    """Whether a header cell reads as a number (a sign that the first line is data)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def other_separator(header: list[str]) -> str | None:
    """A header read as one column that holds another separator: its name ("semicolons")."""
    if len(header) != 1:
        return None
    for separator, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
        if separator in header[0]:
            return name
    return None


def header_hint(header: list[str]) -> str:
    """A header that is not one: a first line of data (UCI files have no header row), or
    one column holding another separator."""
    numbers = [h for h in header if is_number(h)]
    if len(numbers) >= 2:
        shown = ", ".join(repr(h) for h in numbers[:2])
        return (
            f" (the first line looks like data, not a header: it holds numbers such as {shown};"
            " add a first line naming the columns)"
        )
    name = other_separator(header)
    if name is None:
        return ""
    return (
        f" (one column: the file looks separated by {name}; sslops reads comma-separated CSV "
        "or Parquet, so convert it first)"
    )


def read_csv(
    spec: str, na_values: list[str], key: str = "data.train", text_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Read a whole CSV with a header row; every cell in ``na_values`` becomes missing;
    ``text_columns`` (where present) keep their cells' exact text (an id such as ``0007``)."""
    path = resolve_path(spec, key)
    check_is_csv(path, key)
    with _pandas_errors(path, key):
        frame = pd.read_csv(path, **_pandas_options(na_values, text_columns))
    if frame.empty:
        raise DataError(f"{key}: {path} has a header but no rows")
    return _named(frame, path, key)


def read_csv_chunks(
    spec: str, na_values: list[str], key: str = "data.train", chunk_rows: int = 100_000,
    text_columns: Sequence[str] = (),
) -> Iterator[pd.DataFrame]:  # fmt: skip
    """:func:`read_csv` in frames of at most ``chunk_rows`` rows, for files larger than
    memory; each frame's types are inferred on its own rows (canonicalization decides)."""
    path = resolve_path(spec, key)
    check_is_csv(path, key)
    with _pandas_errors(path, key):
        reader = pd.read_csv(path, chunksize=chunk_rows, **_pandas_options(na_values, text_columns))
    rows = 0
    with reader:
        while True:
            with _pandas_errors(path, key):  # not around the yield: the filter stays ours
                frame = next(reader, None)
            if frame is None:
                break
            rows += len(frame)
            yield _named(frame, path, key)
    if rows == 0:
        raise DataError(f"{key}: {path} has a header but no rows")


def _pandas_options(na_values: list[str], text_columns: Sequence[str] = ()) -> dict[str, Any]:
    # index_col=False and ParserWarning as an error (see _pandas_errors): pandas otherwise
    # takes an extra field on the first data row as an index and silently shifts every column.
    return {
        "dtype": {column: "str" for column in text_columns},  # absent ones are ignored
        "na_values": na_values,
        "keep_default_na": False,
        "skipinitialspace": True,
        "low_memory": False,
        "encoding": "utf-8",
        "index_col": False,
    }


@contextmanager
def _pandas_errors(path: Path, key: str) -> Iterator[None]:
    """pandas' parse errors (and its ParserWarning, made one) as one DataError naming the line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            yield
    except pd.errors.EmptyDataError:
        raise DataError(f"{key}: {path} is empty; expected a CSV with a header row") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning):
        raise DataError(f"{key}: {path} is not a well-formed CSV: {csv_problem(path)}") from None
    except UnicodeDecodeError:
        raise DataError(f"{key}: {path} {csv_problem(path)}") from None


def _named(frame: pd.DataFrame, path: Path, key: str) -> pd.DataFrame:
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_unique_columns(list(frame.columns), path, key)
    return frame


_UNNAMED = "\x00unnamed column "  # a name no header can hold (no NUL survives a CSV reader)


def _placeholders(names: list[str]) -> list[str]:
    """Names for the readers: a column without one is named by its position, to be dropped."""
    return [name or f"{_UNNAMED}{i}" for i, name in enumerate(names)]


def _without_unnamed(table: pa.Table, path: Path, key: str, before: int) -> pa.Table:
    """The chunk without its unnamed columns, which must be empty (else their values would be
    silently lost); ``before``: rows of the file in earlier chunks."""
    unnamed = [n for n in table.column_names if n.startswith(_UNNAMED)]
    for name in unnamed:
        cells = table.column(name)
        if pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type):
            filled = pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(cells), ""), False)
        else:
            filled = pc.is_valid(cells)
        if pc.any(filled).as_py():
            row = before + int(np.flatnonzero(filled.to_numpy(zero_copy_only=False))[0]) + 1
            position = int(name[len(_UNNAMED) :]) + 1
            raise DataError(
                f"{key}: {path} column {position} has no name in the header row but holds "
                f"values (data row {row:,} is the first); name it in the header, or delete it"
            )
    return table.drop_columns(unnamed)


def _check_unique_columns(columns: list[str], path: Path, key: str) -> None:
    seen: set[str] = set()
    named = [c for c in columns if c]
    duplicated = sorted({c for c in named if c in seen or seen.add(c)})  # type: ignore[func-returns-value]
    if duplicated:
        raise DataError(f"{key}: {path} has duplicate column names {duplicated}; expected "
                        "each column named once: rename or delete the repeats")  # fmt: skip


def csv_problem(path: Path) -> str:
    """Where a CSV goes wrong: the first line that is not UTF-8 or has the wrong field count."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as raw:
        for number, line in enumerate(raw, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number}: not UTF-8 text (byte {exc.start} of the line){_TO_UTF8}"
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        for row in reader:
            if row and len(row) != len(header):
                return (
                    f"line {reader.line_num}: expected {len(header)} fields "
                    f"(as in line 1), got {len(row)}"
                )
    return "the file could not be parsed"


def iter_table_chunks(
    path: Path, fmt: str, chunk_rows: int, key: str = "data.train"
) -> Iterator[pa.Table]:
    """Yield a table file in chunks (Arrow tables); CSV cells as text ('' for an empty cell)."""
    if fmt == "parquet":
        yield from _parquet_chunks(path, chunk_rows, key)
        return
    header = _all_names(path, key, fmt)
    _check_unique_columns(header, path, key)
    names = _placeholders(header)
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(
                block_size=max(1 << 20, min(chunk_rows * 256, 1 << 26)),
                column_names=names,
                skip_rows=1,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        rows = 0
        for batch in reader:
            for start in range(0, batch.num_rows, chunk_rows):
                piece = pa.Table.from_batches([batch.slice(start, chunk_rows)])
                yield _without_unnamed(piece, path, key, rows)
                rows += piece.num_rows
    except (pa.ArrowInvalid, UnicodeDecodeError):
        raise DataError(f"{key}: {path} is not a well-formed CSV: {csv_problem(path)}") from None
    if rows == 0:
        raise DataError(f"{key}: {path} has a header but no rows")


def scalar_cells(
    raw: pa.ChunkedArray | pa.Array, column: str, key: str, path: Path, as_text: bool = False
) -> pa.Array:
    """The column as numbers or text (``as_text``: always text, as for a typed code column
    in data.categorical); a column of lists, structs or bytes that are not UTF-8 is named
    (a Parquet file can hold them, a table row cannot)."""
    array = raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw
    kind = array.type
    if pa.types.is_string(kind) or (
        not as_text and (pa.types.is_integer(kind) or pa.types.is_floating(kind))
    ):
        return array
    try:
        return pc.cast(array, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(
            f"{key}: column {column!r} in {path} holds values of type {array.type}; sslops "
            "reads one number, text, boolean, date or category per cell: flatten the column "
            "into such columns or leave it out of the file"
        ) from None


def _parquet_chunks(path: Path, chunk_rows: int, key: str) -> Iterator[pa.Table]:
    try:
        reader = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable_parquet(path, exc, key) from None
    names = [str(n).strip() for n in reader.schema_arrow.names]
    _check_unique_columns(names, path, key)
    names = _placeholders(names)
    if reader.metadata.num_rows == 0:
        raise DataError(f"{key}: {path} has a schema but no rows")
    done = 0
    try:
        for batch in reader.iter_batches(batch_size=chunk_rows):
            done += batch.num_rows
            table = pa.Table.from_batches([batch]).rename_columns(names)
            yield _without_unnamed(table, path, key, done - batch.num_rows)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(
            f"{key}: {path} record {done + 1}: unreadable Parquet data ({_said(exc)})"
        ) from None


def read_text_lines(path: Path, key: str) -> list[str]:
    """All lines of a text file, with a DataError naming the first line that is not UTF-8.
    Lines end at a newline only (CRLF and CR too): ``str.splitlines`` also breaks at form
    feeds and other separators, which shifted line numbers; a byte-order mark is dropped."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        _check_gzip(data[:2], path, key)
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"{key}: {path} is not a readable gzip file ({exc}); is it truncated?"
            ) from None
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{key}: {path} line {line}: not UTF-8 text ({exc.reason}){_TO_UTF8}"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _check_gzip(head: bytes, path: Path, key: str) -> None:
    """A file named .gz is gzip: say so when it is not (gzip's own "Not a gzipped file
    (b'#T')" names neither the file nor the fix)."""
    if path.name.endswith(".gz") and not head.startswith(b"\x1f\x8b"):
        raise DataError(
            f"{key}: {path} is not gzip-compressed despite its .gz name; rename it without .gz"
        )
