"""Time series: the UCR/sktime ``.ts`` reader, length canonicalization, near-duplicates.

Near-duplicates are series whose z-normalized shapes are close: the RMS distance
between the z-normalized series, ``sqrt(2 - 2 * correlation)``, is at most a bound. All
pairs are compared in blocks (a matrix product), which suits up to ~10^5 series.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from sslops.data.readers import read_text_lines
from sslops.errors import DataError


def read_ts(
    path: Path, key: str, require_labels: bool = True
) -> tuple[list[np.ndarray], np.ndarray]:
    """Univariate series and their class labels; ``?`` marks a missing value.
    ``require_labels=False`` (new series to score): ``@classLabel false`` is accepted and the
    labels are then empty."""
    lines = read_text_lines(path, key)
    in_data, labelled, declared = False, True, set()
    series: list[np.ndarray] = []
    labels: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            lowered = line.lower()
            if lowered.startswith("@classlabel"):
                labelled = lowered.split()[1:2] == ["true"]
                declared = set(line.split()[2:])
                if not labelled and require_labels:
                    raise DataError(
                        f"{key}: {path} line {number}: @classLabel false: the series carry no "
                        "class label, and sslops fine-tunes and evaluates on labels; write "
                        "@classLabel true with the classes, and each series' label after ':'"
                    )
            elif lowered.startswith("@univariate") and lowered.split()[1:2] == ["false"]:
                raise DataError(f"{key}: {path} line {number}: multivariate .ts is not supported")
            elif lowered.startswith("@timestamps") and lowered.split()[1:2] == ["true"]:
                raise DataError(
                    f"{key}: {path} line {number}: @timeStamps true: series written as "
                    "(time, value) pairs are not read; write each series' values alone, "
                    "evenly spaced and comma-separated, and @timeStamps false"
                )
            elif lowered.startswith("@data"):
                in_data = True
            elif not line.startswith("@"):
                raise DataError(
                    f"{key}: {path} line {number}: expected @data before the series; {TS_FORMAT}"
                )
            continue
        parts = line.split(":")
        if len(parts) != (2 if labelled else 1):
            raise DataError(
                f"{key}: {path} line {number}: expected comma-separated values"
                + (", ':' and the class label" if labelled else "")
                + f", got {len(parts)} ':'-separated fields"
            )
        values = _values(parts[0], f"{key}: {path} line {number}")
        known = values[~np.isnan(values)]
        infinite = np.flatnonzero(np.abs(values) > FLOAT32_MAX)  # inf too; not NaN
        if len(infinite):
            value = values[infinite[0]]
            limit = "" if np.isinf(value) else f" within ±{FLOAT32_MAX:.3g} ({SERIES_FLOATS})"
            raise DataError(
                f"{key}: {path} line {number}: value {infinite[0] + 1} is {value:g}; expected "
                f"finite numbers{limit}, or '?' for a missing one"
            )
        if len(known) < 2:
            raise DataError(
                f"{key}: {path} line {number}: expected at least 2 values that are not missing "
                f"('?'), got {len(known)} of {len(values)}"
            )
        label = parts[1].strip() if labelled else ""
        if labelled and declared and label not in declared:
            raise DataError(
                f"{key}: {path} line {number}: class label {label!r} is not one that "
                f"@classLabel declares ({', '.join(sorted(declared))})"
            )
        series.append(values)
        labels.append(label)
    if not series:
        raise DataError(f"{key}: {path} has no series after @data")
    return series, np.array(labels, dtype=object)


# Series are stored and trained on as 32-bit floats: a larger value would become inf there.
FLOAT32_MAX = float(np.finfo(np.float32).max)
SERIES_FLOATS = "series are stored as 32-bit floats"

TS_FORMAT = (
    "sslops reads the UCR/sktime .ts format: header lines (@classLabel true, then the "
    "classes), @data, then one series per line: its values comma-separated ('?' for a missing "
    "one), ':' and its class label"
)


def _values(text: str, where: str) -> np.ndarray:
    """The comma-separated values of one series ('?' or NaN: missing); a cell that is no
    number is named by its position, and empty or space-separated cells are said to be."""
    cells = text.split(",")
    values = np.empty(len(cells))
    for i, cell in enumerate(cells):
        cell = cell.strip()
        try:
            values[i] = np.nan if cell == "?" else float(cell)
        except ValueError:
            if not cell:
                what = "is empty" + (" (a trailing comma?)" if i == len(cells) - 1 else "")
            elif len(cell.split()) > 1:
                what = "holds several numbers separated by spaces"
            else:
                shown = cell if len(cell) <= 12 else cell[:12] + "..."
                what = f"is {shown!r}"
            raise DataError(
                f"{where}: a series value is not a number: value {i + 1} {what}; expected "
                "comma-separated numbers, or '?' for a missing one"
            ) from None
    return values


def _fill_missing(values: np.ndarray) -> np.ndarray:
    missing = np.isnan(values)
    if not missing.any():
        return values
    if missing.all():
        return np.zeros_like(values)
    x = np.arange(len(values))
    return np.interp(x, x[~missing], values[~missing])


def canonical_series(
    series: list[np.ndarray], length: int | None, policy: str
) -> tuple[np.ndarray, dict[str, int]]:
    """float32 (N, length): missing values interpolated, then resampled or padded/cropped."""
    target = length or Counter(len(s) for s in series).most_common(1)[0][0]
    out = np.empty((len(series), target), dtype=np.float32)
    report = {"target_length": target, "interpolated": 0, "resampled": 0, "padded": 0, "cropped": 0}
    for i, values in enumerate(series):
        if np.isnan(values).any():
            report["interpolated"] += 1
            values = _fill_missing(values)
        if len(values) != target:
            if policy == "resample":
                report["resampled"] += 1
                values = np.interp(
                    np.linspace(0, len(values) - 1, target), np.arange(len(values)), values
                )
            elif len(values) < target:
                report["padded"] += 1
                values = np.pad(values, (0, target - len(values)), mode="edge")
            else:
                report["cropped"] += 1
                values = values[:target]
        out[i] = values
    return out, report


def z_normalize(values: np.ndarray) -> np.ndarray:
    centred = values.astype(np.float64) - values.mean(axis=1, keepdims=True)
    scale = centred.std(axis=1, keepdims=True)
    return centred / np.where(scale > 0, scale, 1.0)


def near_duplicate_series(values: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) whose z-normalized RMS distance is at most ``max_distance``."""
    z = z_normalize(values)
    length = z.shape[1]
    min_corr = 1.0 - max_distance**2 / 2.0
    first, second = [], []
    block = 2048
    for start in range(0, len(z), block):
        corr = z[start : start + block] @ z.T / length
        i, j = np.nonzero(corr >= min_corr - 1e-12)
        i = i + start
        keep = i < j
        first.append(i[keep])
        second.append(j[keep])
    return np.concatenate(first), np.concatenate(second)
