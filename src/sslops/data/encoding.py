"""Feature encoding fitted on the training split: median-impute + standardize, one-hot."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sslops.artifacts import write_json

OTHER = "__other__"
MISSING = "__missing__"


@dataclass
class NumericColumn:
    name: str
    median: float
    mean: float
    std: float


@dataclass
class CategoricalColumn:
    name: str
    categories: list[str]  # includes MISSING and OTHER as the last two levels


@dataclass
class TabularEncoding:
    """Maps a canonical frame to a float32 matrix; ``column_of`` gives each feature's column."""

    numeric: list[NumericColumn] = field(default_factory=list)
    categorical: list[CategoricalColumn] = field(default_factory=list)

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, columns: list[str], max_categories: int, min_count: int = 1
    ) -> TabularEncoding:
        """Levels seen in fewer than ``min_count`` rows, and all but the ``max_categories - 2``
        most frequent, fold into ``__other__`` (scikit-learn's ``OneHotEncoder`` has the same
        two knobs: ``min_frequency``, ``max_categories``); a folded value is never stored."""
        encoding = cls()
        for name in columns:
            series = frame[name]
            if pd.api.types.is_numeric_dtype(series):
                values = series.astype("float64")
                median = float(values.median()) if values.notna().any() else 0.0
                filled = values.fillna(median)
                std = float(filled.std(ddof=0)) or 1.0
                encoding.numeric.append(NumericColumn(name, median, float(filled.mean()), std))
            else:
                counts = series.dropna().astype(str).value_counts()
                counts = counts[counts >= min_count]
                top = sorted(counts.index[: max_categories - 2].tolist())
                encoding.categorical.append(CategoricalColumn(name, [*top, MISSING, OTHER]))
        return encoding

    @property
    def feature_names(self) -> list[str]:
        names = [c.name for c in self.numeric]
        for column in self.categorical:
            names += [f"{column.name}={level}" for level in column.categories]
        return names

    @property
    def column_of(self) -> list[int]:
        """For each feature, the index of the raw column it came from (numeric first)."""
        index = list(range(len(self.numeric)))
        for offset, column in enumerate(self.categorical):
            index += [len(self.numeric) + offset] * len(column.categories)
        return index

    @property
    def n_columns(self) -> int:
        return len(self.numeric) + len(self.categorical)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        blocks = []
        for column in self.numeric:
            values = frame[column.name].astype("float64").fillna(column.median).to_numpy()
            # In float32, as the exported ONNX graph computes it: a model trained on these
            # values sees bit for bit what it is served (a tree or bin edge that a value sits
            # on cannot fall on different sides in training and in the graph).
            scaled = (values.astype(np.float32) - np.float32(column.mean)) / np.float32(column.std)
            blocks.append(scaled[:, None])
        for cat in self.categorical:
            known = {level: i for i, level in enumerate(cat.categories)}
            series = frame[cat.name]
            # Vectorized lookup: unknown levels -> OTHER, missing -> MISSING.
            codes = (
                series.astype("string").map(known).astype("Float64")
                .fillna(known[OTHER]).to_numpy(dtype=np.int64)
            )  # fmt: skip
            codes[series.isna().to_numpy()] = known[MISSING]
            block = np.zeros((len(frame), len(cat.categories)))
            block[np.arange(len(frame)), codes] = 1.0
            blocks.append(block)
        if not blocks:
            return np.zeros((len(frame), 0), dtype=np.float32)
        return np.hstack(blocks).astype(np.float32)

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> TabularEncoding:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            numeric=[NumericColumn(**c) for c in raw["numeric"]],
            categorical=[CategoricalColumn(**c) for c in raw["categorical"]],
        )
