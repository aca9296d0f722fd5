"""Read a prepared artifact: canonical frames, encoded features, binary targets, groups."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sslops.artifacts import read_meta
from sslops.config import Config
from sslops.data.canonicalize import label_hits
from sslops.data.encoding import TabularEncoding
from sslops.errors import ConfigError, DataError

SCHEMA = "schema.json"
UNLABELED = "unlabeled"  # the split of kept rows of data.train without a label


def check_modality(prepared: Path, modality: str) -> None:
    """Refuse a prepare artifact of another modality than the config's (before any stage
    reads it the config's way: a tabular chain given an image config, or the reverse)."""
    schema_path = Path(prepared) / SCHEMA
    schema = json.loads(schema_path.read_text(encoding="utf-8")) if schema_path.is_file() else {}
    found = schema.get("modality", "tabular")
    if found != modality:
        raise DataError(
            f"{prepared} holds {found} data but the config says modality: {modality}; pass the "
            "config the chain was prepared with, or prepare the data with this one first"
        )


def check_same_data(cfg: Config, prepared: Path) -> None:
    """A stage after prepare is configured for the data ``prepared`` holds: the same modality
    (checked first, for the clearest message) and the same ``data.*`` settings. Another
    config's would be silently ignored where the prepared schema wins (``data.sensitive``
    in evaluate), or describe a run that never happened (the audit's card and gates)."""
    check_modality(prepared, cfg.modality)
    ran = read_meta(prepared, "prepare", verify=False).get("config") or {}
    ran_data: dict[str, Any] = ran["data"] if isinstance(ran.get("data"), dict) else {}
    for key, value in cfg.model_dump(mode="json")["data"].items():
        if key in ran_data and ran_data[key] != value:  # keys an older prepare lacks: skipped
            raise ConfigError(
                f"the config's data.{key} is {value!r} but {prepared} was prepared with "
                f"{ran_data[key]!r}; pass the config the chain was prepared with, or prepare "
                "the data with this one first"
            )


def target_of(
    frame: pd.DataFrame, label: str, positive: Any, require_positive: bool = False
) -> pd.Series:
    """1 where the label equals the positive value (see :func:`label_hits`)."""
    column = frame[label]
    hit = label_hits(column, positive)
    if require_positive and not hit.any():
        if column.isna().all():
            raise DataError(
                f"label column {label!r} has no labeled row (every cell is empty); fine-tuning "
                "and evaluation need some labels: label a few hundred rows (the rest can stay "
                "empty, for pretraining)"
            )
        seen = ", ".join(map(str, pd.unique(column.dropna())[:10]))
        raise DataError(
            f"data.positive {positive!r} does not occur in label column {label!r}; values seen: {seen}"
        )
    return hit.astype("int64")


@dataclass
class Split:
    frame: pd.DataFrame
    features: np.ndarray  # float32, encoded
    target: np.ndarray  # int64 0/1

    def groups(self, column: str) -> pd.Series:
        return self.frame[column].astype("string").fillna("(missing)")

    def group_matrix(self, columns: list[str]) -> np.ndarray:
        """Each row's group in each of ``columns``, as :meth:`groups`: shape (rows, columns)."""
        return self.frame[columns].astype("string").fillna("(missing)").to_numpy()


class PreparedData:
    """Lazy access to one prepare artifact.

    Tabular: ``Split.features`` is the encoded float32 matrix and ``target`` 0/1. Images and
    series (``schema["modality"]``): ``features`` is the stored array (``{split}.npy``) and
    ``target`` the index of each label in ``schema["classes"]``; ``encoding`` is empty.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path, "prepare")
        self.schema: dict[str, Any] = json.loads((self.path / SCHEMA).read_text(encoding="utf-8"))
        self.modality: str = self.schema.get("modality", "tabular")
        self.encoding = (
            TabularEncoding.load(self.path / "encoding.json")
            if self.modality == "tabular"
            else TabularEncoding()
        )

    @cached_property
    def train(self) -> Split:
        return self.split("train")

    @cached_property
    def validation(self) -> Split:
        return self.split("validation")

    @cached_property
    def test(self) -> Split:
        return self.split("test")

    @cached_property
    def pretraining(self) -> Split:
        """Every row self-supervised pretraining reads: the training split, then the rows of
        data.train without a label (the ``unlabeled`` split, ``prepare.unlabeled: pretrain``;
        their ``target`` is -1)."""
        if not (self.path / f"{UNLABELED}.parquet").is_file():
            return self.train
        frame = pd.read_parquet(self.path / f"{UNLABELED}.parquet")
        train = self.train
        features = (
            self.encoding.transform(frame)
            if self.modality == "tabular"
            else np.load(self.path / f"{UNLABELED}.npy", allow_pickle=False)
        )
        return Split(
            pd.concat([train.frame, frame], ignore_index=True),
            np.concatenate([train.features, features]),
            np.concatenate([train.target, np.full(len(frame), -1, dtype=np.int64)]),
        )

    def split(self, name: str) -> Split:
        frame = pd.read_parquet(self.path / f"{name}.parquet")
        if self.modality != "tabular":
            classes = {c: i for i, c in enumerate(self.schema["classes"])}
            target = frame["label"].map(classes).to_numpy(np.int64)
            return Split(frame, np.load(self.path / f"{name}.npy", allow_pickle=False), target)
        target = target_of(frame, self.schema["label"], self.schema["positive"]).to_numpy()
        return Split(frame, self.encoding.transform(frame), target)

    @property
    def sensitive(self) -> list[str]:
        return list(self.schema["sensitive"])

    def prepared_with(self, key: str, default: Any) -> Any:
        """The ``prepare.<key>`` setting these data were prepared with (what a later stage
        records for serving must be what prepare did, not its own config's value, which
        check_same_data does not compare); ``default`` for an artifact that lacks it."""
        ran = (self.meta.get("config") or {}).get("prepare") or {}
        return ran.get(key, default)
