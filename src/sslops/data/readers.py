"""Read raw tables; resolve ``package:`` paths to the demo data shipped with sslops."""

from __future__ import annotations

import csv
import gzip
import warnings
from importlib.resources import files
from pathlib import Path
from typing import IO

import pandas as pd

from sslops.errors import DataError

PACKAGE_PREFIX = "package:"


def resolve_path(spec: str, key: str = "data.train") -> Path:
    """``package:adult/train.csv.gz`` -> the file inside sslops/datasets; else a filesystem path."""
    if spec.startswith(PACKAGE_PREFIX):
        path = Path(str(files("sslops") / "datasets" / spec[len(PACKAGE_PREFIX) :]))
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError(f"{key}: file not found: {spec}")
    return path


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_header(spec: str, key: str = "data.train") -> list[str]:
    """Column names of a CSV without reading the rest of it."""
    path = resolve_path(spec, key)
    try:
        with _open_text(path) as fh:
            header = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{key}: cannot read {path}: {exc}") from None
    if not header or not any(h.strip() for h in header):
        raise DataError(f"{key}: {path} is empty; expected a CSV with a header row")
    return [h.strip() for h in header]


def read_csv(spec: str, na_values: list[str], key: str = "data.train") -> pd.DataFrame:
    """Read a CSV with a header row; every cell in ``na_values`` becomes missing."""
    path = resolve_path(spec, key)
    try:
        # index_col=False and ParserWarning as an error: pandas otherwise takes an extra field
        # on the first data row as an index and silently shifts every column.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                na_values=na_values,
                keep_default_na=False,
                skipinitialspace=True,
                low_memory=False,
                encoding="utf-8",
                index_col=False,
            )
    except pd.errors.EmptyDataError:
        raise DataError(f"{key}: {path} is empty; expected a CSV with a header row") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        raise DataError(f"{key}: {path} is not a well-formed CSV: {exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{key}: {path} is not UTF-8 text ({exc.reason})") from None
    if frame.empty:
        raise DataError(f"{key}: {path} has a header but no rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise DataError(f"{key}: {path} has duplicate column names {duplicated}")
    return frame
