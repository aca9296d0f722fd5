"""Group attributes of images and series from the user's own metadata file.

A hospital's fairness groups (sex, site, scanner, age band) are not in the pixels or the
samples: they sit in a CSV exported from its records, one row per image file or series,
keyed by the column ``data.attributes_key``. ``data.sensitive`` then names columns of that
file, read as categories (their exact text: sex ``1``/``2`` and site ``007`` are group names,
not numbers), as the tabular path reads its sensitive columns.

An item's key:

- image folders: its path under the folder (``pneumonia/scan_001.png``), or its file name
  alone (``scan_001.png``) where that names one file;
- pixel CSV, ``.npz`` and ``.ts`` files, which hold many items: ``<file name>:<n>``, the
  n-th image or series of that file, counted from 1 (``ecg_train.ts:17``).

The rule: every labeled item needs exactly one row (an item without one is refused, as
its group cannot be guessed, and dropping it would change the data without a word); a row
may match at most one item; rows that match no item (the export covers more than this
data) are left out and counted in a note. An empty cell is the group ``(missing)``, as for
tables.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sslops.data.readers import read_csv
from sslops.errors import DataError

KEY = "data.attributes_file"
SHOWN = 5  # names listed in a message; the count says how many more


@dataclass(frozen=True)
class ItemNames:
    """Each item's key (``keys``) and, for image folders, its file name (``names``), which
    matches a row when no row holds the key itself."""

    keys: list[str]
    names: list[str] | None = None


def folder_items(relative: list[str]) -> ItemNames:
    """Images of a folder by their path under it (POSIX separators)."""
    return ItemNames(relative, [Path(p).name for p in relative])


def file_items(path: Path, count: int) -> ItemNames:
    """The ``count`` images or series of one file, ``<file name>:1`` onwards."""
    return ItemNames([f"{path.name}:{n}" for n in range(1, count + 1)])


def read_group_metadata(
    spec: str, key_column: str, needed: dict[str, list[str]], na_values: list[str]
) -> pd.DataFrame:
    """The metadata file's columns that ``needed`` names (by the setting that names them:
    data.sensitive, prepare.ood) as text, indexed by key."""
    wanted = list(dict.fromkeys(c for names in needed.values() for c in names))
    frame = read_csv(spec, na_values, KEY, text_columns=[key_column, *wanted])
    columns = list(frame.columns)
    shown = ", ".join(columns[:20]) + (
        f", ... ({len(columns)} columns)" if len(columns) > 20 else ""
    )
    if key_column not in columns:
        raise DataError(
            f"data.attributes_key: column {key_column!r} not found in {KEY} ({spec}); its "
            f"columns are: {shown}; set data.attributes_key to the column naming each image "
            "file or series"
        )
    for setting, names in needed.items():
        absent = [c for c in names if c not in columns]
        if absent:
            raise DataError(
                f"{setting}: column(s) {', '.join(map(repr, absent))} not found in {KEY} "
                f"({spec}); its columns are: {shown}"
            )
    keys = frame[key_column].map(_key, na_action="ignore")
    empty = np.flatnonzero(keys.isna().to_numpy())
    if len(empty):
        raise DataError(
            f"{KEY} ({spec}): {len(empty):,} row(s) have an empty {key_column!r} (the first "
            f"on line {empty[0] + 2}); expected every row to name an image file or series"
        )
    repeated = keys[keys.duplicated()]
    if len(repeated):
        first = repeated.iloc[0]
        raise DataError(
            f"{KEY} ({spec}): {key_column!r} {first!r} is on {int((keys == first).sum())} rows "
            f"({repeated.nunique():,} key(s) repeat); expected one row per image file or "
            "series, so its groups are not a guess"
        )
    groups = frame[wanted].apply(lambda c: c.map(_text, na_action="ignore"))
    return groups.set_axis(keys.to_list()).astype("string")


def _key(value: str) -> str | None:
    """A key as written in an export: Windows separators and a leading ``./`` allowed."""
    text = str(value).strip().replace("\\", "/").removeprefix("./")
    return text or None


def _text(value: str) -> str | None:
    """A group name as the labels are read: NFKC, inner whitespace collapsed."""
    text = " ".join(unicodedata.normalize("NFKC", str(value)).split())
    return text or None


def join_group_metadata(
    table: pd.DataFrame, items: ItemNames, needed: np.ndarray, spec: str, key_column: str
) -> tuple[pd.DataFrame, list[str]]:
    """Each item's groups (rows aligned with ``items``; ``needed``: items that must have a
    row, the labeled ones) and the notes to print. See the module docstring for the rule."""
    position = {k: i for i, k in enumerate(table.index)}
    row = np.array([position.get(k, -1) for k in items.keys], dtype=np.int64)
    if items.names is not None:
        by_name = np.array([position.get(n, -1) for n in items.names], dtype=np.int64)
        row = np.where(row >= 0, row, by_name)
    _check_one_item_per_row(table, items, row, spec, key_column)
    lacking = np.flatnonzero(needed & (row < 0))
    if len(lacking):
        raise DataError(
            _lacking_message(table, items, lacking, int(needed.sum()), spec, key_column)
        )
    groups = table.iloc[np.maximum(row, 0)].reset_index(drop=True)
    groups.loc[row < 0, :] = pd.NA  # unlabeled items without a row: never scored
    notes = []
    unused = np.setdiff1d(np.arange(len(table)), row[row >= 0])
    if len(unused):
        shown = ", ".join(repr(table.index[i]) for i in unused[:SHOWN])
        notes.append(
            f"{KEY}: {len(unused):,} of {len(table):,} rows name no image or series of "
            f"data.train/data.test and were not used (first: {shown})"
        )
    return groups, notes


def _check_one_item_per_row(
    table: pd.DataFrame, items: ItemNames, row: np.ndarray, spec: str, key_column: str
) -> None:
    """A row matching two items (a file name found in two folders, or the same path under
    data.train and data.test) would give both one group: which one it meant cannot be told."""
    matched, counts = np.unique(row[row >= 0], return_counts=True)
    if not (counts > 1).any():
        return
    first = int(matched[np.argmax(counts > 1)])
    which = [items.keys[i] for i in np.flatnonzero(row == first)]
    raise DataError(
        f"{KEY} ({spec}): the row {key_column} = {table.index[first]!r} matches "
        f"{len(which)} items ({', '.join(which[:SHOWN])}); key each by its path under its "
        "folder, e.g. 'class/file.png' (data.train and data.test: use distinct file names)"
    )


def _lacking_message(
    table: pd.DataFrame, items: ItemNames, lacking: np.ndarray, needed: int, spec: str,
    key_column: str,
) -> str:  # fmt: skip
    shown = ", ".join(repr(items.keys[i]) for i in lacking[:SHOWN])
    form = (
        "its path under the data folder (e.g. 'class/file.png') or its file name"
        if items.names is not None
        else "'<file name>:<n>', the n-th image or series of that file counted from 1"
    )
    written = ", ".join(repr(k) for k in table.index[:3])
    return (
        f"{KEY} ({spec}): {len(lacking):,} of {needed:,} labeled items have no row "
        f"(first: {shown}); expected one row per item, with {key_column!r} holding {form}; "
        f"the file's keys look like {written}; add the missing rows (an unknown group can be "
        "left empty: it counts as '(missing)')"
    )
