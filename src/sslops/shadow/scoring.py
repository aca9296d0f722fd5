"""Read-only scoring for shadow tests: batches in, one score per row per model out.

Two kinds of model:

- an ONNX classifier whose inputs are raw columns (what ``sslops export`` writes, see
  :mod:`sslops.export.graph`; also a skl2onnx pipeline over raw columns). Each graph
  input names a column; it is fed the way :func:`sslops.export.graph.raw_inputs` feeds
  the exported model (float32 with NaN for missing, strings with ``""`` for missing),
  shaped ``[batch]`` or ``[batch, 1]`` as the input declares. The score is the output
  named ``probability``, else the first float output of shape ``[batch]`` or the
  positive-class column of ``[batch, 2]``;
- ``PREDICTIONS.csv``, the incumbent's own log (:data:`PREDICTION_COLUMNS`).

Nothing here writes anywhere: scoring never feeds back into a decision.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from sslops.data.canonicalize import canonicalize, cell_texts
from sslops.data.pii import value_shape
from sslops.data.readers import (
    TABLE_SUFFIXES,
    header_hint,
    is_parquet,
    iter_table_chunks,
    read_csv,
    read_csv_chunks,
    scalar_cells,
)
from sslops.errors import DataError

# PREDICTIONS.csv: one row per scored row. ``label`` (the decision the incumbent took,
# 0/1) is optional; without it the decision is ``score >= threshold``.
PREDICTION_COLUMNS = ("row_id", "score", "label")
DEFAULT_NA = ["?", ""]  # missing-value markers without a config (Adult's "?", an empty cell)
PARQUET_ROWS = 100_000  # rows per record batch when a whole Parquet batch file is read
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}


@dataclass(frozen=True)
class Batch:
    name: str
    path: Path
    frame: pd.DataFrame  # canonical columns (numbers as float, text as string)
    row_ids: np.ndarray  # str
    empty_rows: int = 0  # rows with no value in any cell (a spreadsheet's trailing ,,,), skipped
    source: str = ""  # how errors name the rows; "" = the --data file (predict_frame: "frame")

    @property
    def where(self) -> str:
        return self.source or f"--data {self.path}"


@dataclass(frozen=True)
class Scores:
    score: np.ndarray  # float64 in [0, 1]
    decision: np.ndarray  # int 0/1


def batch_files(data: Path, fmt: str = "csv") -> list[Path]:
    """``data`` itself, or the files of the table format ``fmt`` (data.format: ``csv``,
    ``parquet``) in the directory sorted by name. A file is read as Parquet when it is one
    (its first bytes) or is named so (``.parquet``, ``.pq``), else as CSV."""
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise DataError(f"--data {data}: no such file or directory; expected a CSV or a folder")
    suffixes = TABLE_SUFFIXES.get(fmt, TABLE_SUFFIXES["csv"])
    files = sorted(p for p in data.iterdir() if p.is_file() and p.name.endswith(suffixes))
    if not files:
        kind = " (data.format: parquet)" if fmt == "parquet" else ""
        raise DataError(
            f"--data {data}: the folder holds no {suffixes[0]} files{kind}; expected daily batches"
        )
    return files


def read_batch(
    path: Path, na_values: list[str], id_column: str | None, key: str,
    text_columns: Sequence[str] = (),
) -> Batch:  # fmt: skip
    """A whole batch file: canonical columns, row ids, rows with no value at all skipped;
    ``text_columns`` as :func:`iter_batches` keeps them."""
    parquet = _reads_as_parquet(path)
    if parquet:
        raw = pd.concat(list(_parquet_frames(path, key, PARQUET_ROWS, id_column)))
        raw = raw.reset_index(drop=True)
    else:
        text = [id_column] if id_column else []
        raw = read_csv(str(path), na_values, key=key, text_columns=[*text, *text_columns])
    frame = _canonical(raw, na_values, [] if parquet else text_columns)
    batch = _batch(frame, path, id_column, key, start=0, ids=_id_texts(raw, id_column))
    if batch.frame.empty:
        raise DataError(f"{key}: {path} has no row with a value")
    return batch


def iter_batches(
    path: Path, na_values: list[str], id_column: str | None, key: str, chunk_rows: int,
    text_columns: Sequence[str] = (),
) -> Iterator[Batch]:  # fmt: skip
    """:func:`read_batch` in pieces of at most ``chunk_rows`` rows (memory stays flat for a
    file of any size); row ids number the file's rows as the whole read does.

    ``text_columns`` (a model's string inputs) of a CSV stay the canonical text as written,
    as prepare reads a CSV's category: ``02134`` stays ``02134`` where every cell of the
    chunk is a number (read as numbers, it became ``2134``, a level the model never saw)."""
    start = filled = 0
    csv_text = [id_column] if id_column else []
    parquet = _reads_as_parquet(path)
    chunks = (
        _parquet_frames(path, key, chunk_rows, id_column)
        if parquet
        else read_csv_chunks(
            str(path), na_values, key, chunk_rows, text_columns=[*csv_text, *text_columns]
        )
    )
    for chunk in chunks:
        frame = _canonical(chunk, na_values, [] if parquet else text_columns)
        batch = _batch(frame, path, id_column, key, start, ids=_id_texts(chunk, id_column))
        start += len(chunk)
        filled += len(batch.frame)
        yield batch
    if not filled:
        raise DataError(f"{key}: {path} has no row with a value")


def _reads_as_parquet(path: Path) -> bool:
    """A Parquet file by its first bytes, or by its name: a ``.parquet`` file cut short or
    damaged is named by the Parquet reader as such, not read as CSV ("not UTF-8 text")."""
    return is_parquet(path) or path.name.endswith(TABLE_SUFFIXES["parquet"])


def _canonical(
    raw: pd.DataFrame, na_values: list[str], text_columns: Sequence[str]
) -> pd.DataFrame:
    """Canonical cells; ``text_columns`` stay the canonical text as written (not numbers)."""
    return canonicalize(raw, na_values, text_columns=text_columns)[0]


def _parquet_frames(
    path: Path, key: str, chunk_rows: int, id_column: str | None
) -> Iterator[pd.DataFrame]:
    """A Parquet file in frames of at most ``chunk_rows`` rows, its cells as prepare reads
    them (numbers and text as stored; booleans, dates and categories as text); the id
    column as text, as the CSV reader keeps it."""
    for table in iter_table_chunks(path, "parquet", chunk_rows, key):
        columns = [
            scalar_cells(table.column(name), name, key, path, as_text=name == id_column)
            for name in table.column_names
        ]
        yield pa.table(columns, names=table.column_names).to_pandas()


def batch_name(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    for suffix in (".csv", ".parquet", ".pq"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def _id_texts(raw: pd.DataFrame, id_column: str | None) -> np.ndarray | None:
    """The id column's cells as written in the file (``0007`` stays ``0007``, a 20-digit id
    keeps every digit), read before canonicalization turns numbers into floats."""
    if id_column is None or id_column not in raw.columns:
        return None
    return raw[id_column].astype(object).to_numpy()


def _batch(
    frame: pd.DataFrame, path: Path, id_column: str | None, key: str, start: int,
    ids: np.ndarray | None = None,
) -> Batch:  # fmt: skip
    name = batch_name(path)
    filled = frame.notna().any(axis=1).to_numpy()
    if id_column is None:
        ids = np.array([f"{name}:{i}" for i in range(start, start + len(frame))], dtype=object)
    elif ids is None:
        raise DataError(f"{key}: {path} has no row-id column {id_column!r}")
    else:
        missing = np.flatnonzero(pd.isna(ids) & filled)
        if len(missing):
            raise DataError(f"{key}: {path} data row {start + missing[0] + 1} has no value in "
                            f"row-id column {id_column!r}; expected an id on every row")  # fmt: skip
        ids = np.array([str(i) for i in ids], dtype=object)
    empty = int((~filled).sum())  # row ids keep their numbers in the file
    frame = frame[filled].reset_index(drop=True) if empty else frame
    return Batch(name=name, path=path, frame=frame, row_ids=ids[filled], empty_rows=empty)


class OnnxClassifier:
    """An onnxruntime session over raw columns and the decision threshold it carries."""

    def __init__(self, path: Path, default_threshold: float, flag: str) -> None:
        import onnx
        import onnxruntime as ort

        self.path, self.flag = path, flag
        try:
            proto = onnx.load(str(path), load_external_data=False)
            self.session = ort.InferenceSession(
                proto.SerializeToString(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnx/onnxruntime raise many types for a bad file
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise DataError(f"{flag} {path}: not a readable ONNX model ({reason}); expected an "
                            "ONNX model file, e.g. sslops export's model.onnx") from None  # fmt: skip
        meta = {p.key: p.value for p in proto.metadata_props}
        self.metadata = meta
        self.levels = _known_levels(proto)
        # Training merged category spellings that differ only in case (sslops models say so
        # in their preprocessing metadata): 'private' is the level 'Private' here too.
        # An sslops model exported before the rule was recorded: training's default
        # (prepare.casefold_categories: true), as a series model's length policy is.
        spec = _json_or_empty(meta.get("preprocessing"))
        self.case_rule_recorded = "case_insensitive_levels" in spec
        folded = spec.get("case_insensitive_levels", "sslops_version" in meta)
        self.case_levels = (
            {c: _case_map(known) for c, known in self.levels.items()} if folded else {}
        )
        self.has_threshold = "decision_threshold" in meta  # else the caller's default
        self.threshold = float(meta.get("decision_threshold", default_threshold))
        self.inputs = self.session.get_inputs()
        self.output = self._score_output()

    @property
    def columns(self) -> list[str]:
        return [i.name for i in self.inputs]

    def _score_output(self) -> Any:
        outputs = self.session.get_outputs()
        named = [o for o in outputs if o.name == "probability"]
        usable = named or [
            o
            for o in outputs
            if o.type in ("tensor(float)", "tensor(double)") and len(o.shape) <= 2
        ]
        if not usable:
            found = ", ".join(f"{o.name} {o.type}" for o in outputs)
            raise DataError(
                f"{self.flag} {self.path}: no probability output (a float tensor [batch] or "
                f"[batch, 2]); the model has {found} (skl2onnx: options={{'zipmap': False}})"
            )
        return usable[0]

    def unseen(self, batch: Batch) -> dict[str, int]:
        """Per text column: rows whose value the model never saw in training (it scores them
        as the ``__other__`` level, as values too rare to keep); missing cells not counted."""
        counts = {}
        for column, known in self.levels.items():
            if column in batch.frame.columns:
                texts = self._texts(batch.frame[column], column)
                count = int(np.count_nonzero(~np.isin(texts, known)))
                if count:
                    counts[column] = count
        return counts

    def _texts(self, column: pd.Series, name: str) -> np.ndarray:
        """The cells as the model's string input: text, and a level written in another
        case as that level (where training merged such spellings)."""
        texts = cell_texts(column)
        folds = self.case_levels.get(name)
        if folds:
            odd = ~np.isin(texts, self.levels[name])
            if odd.any():
                texts = texts.copy()
                texts[odd] = [folds.get(t.lower(), t) for t in texts[odd]]
        return texts

    def feed(self, batch: Batch) -> dict[str, np.ndarray]:
        missing = [c for c in self.columns if c not in batch.frame.columns]
        if missing:
            raise DataError(
                f"{batch.where}: missing column {missing[0]!r} that {self.flag} "
                f"{self.path.name} needs (it reads {', '.join(self.columns)})"
                f"{header_hint([str(c) for c in batch.frame.columns])}"
            )
        feed = {}
        for spec in self.inputs:
            column = batch.frame[spec.name]
            if spec.type == "tensor(string)":
                array = self._texts(column, spec.name)
            elif spec.type in _ORT_TYPES:
                numbers = pd.to_numeric(column, errors="coerce")
                bad = numbers.isna() & column.notna()
                if bad.any():
                    first = int(np.flatnonzero(bad.to_numpy())[0])  # the row of a large file
                    # The cell's shape, not its text: a name in the age column stays out
                    # of the logs and tickets an error ends up in.
                    shape = value_shape(str(column.iloc[first]))
                    raise DataError(
                        f"{batch.where}: column {spec.name!r} has a non-numeric value "
                        f"in row {batch.row_ids[first]!r} (shaped {shape!r}: letters as a/A, "
                        f"digits as 9; not quoted); {self.path.name} expects numbers (a "
                        "marker of a missing value belongs in data.na_values)"
                    )
                array = numbers.astype("float64").to_numpy().astype(_ORT_TYPES[spec.type])
            else:
                raise DataError(
                    f"{self.flag} {self.path}: input {spec.name!r} has type {spec.type}; "
                    "expected a model whose inputs are one column each, typed tensor(float), "
                    "tensor(double), tensor(int64) or tensor(string), as sslops export writes"
                )
            feed[spec.name] = array.reshape(-1, 1) if len(spec.shape) == 2 else array
        return feed

    def score(self, batch: Batch) -> Scores:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = np.asarray(self.session.run([self.output.name], self.feed(batch))[0])
        score = out[:, -1] if out.ndim == 2 else out
        score = score.astype(np.float64)
        return Scores(score=score, decision=(score >= self.threshold).astype(int))


def _json_or_empty(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _case_map(known: np.ndarray) -> dict[str, str]:
    """Lower-cased level -> the level, for the levels no other level equals when lower-cased."""
    lowered: dict[str, list[str]] = {}
    for level in known:
        lowered.setdefault(str(level).lower(), []).append(str(level))
    return {low: levels[0] for low, levels in lowered.items() if len(levels) == 1}


def _known_levels(proto: Any) -> dict[str, np.ndarray]:
    """The text levels each string input maps (the export's LabelEncoder keys, "" for missing
    among them); empty for a model that encodes its inputs another way."""
    inputs = {i.name for i in proto.graph.input}
    levels = {}
    for node in proto.graph.node:
        if node.op_type == "LabelEncoder" and node.input and node.input[0] in inputs:
            for attribute in node.attribute:
                if attribute.name == "keys_strings":
                    keys = [k.decode() for k in attribute.strings]
                    levels[node.input[0]] = np.array(keys, dtype=object)  # built once
    return levels


class PredictionLog:
    """The incumbent's PREDICTIONS.csv, looked up by row id."""

    def __init__(self, path: Path, threshold: float) -> None:
        self.path = path
        frame = read_csv(str(path), [""], key="--incumbent", text_columns=["row_id"])
        if "row_id" not in frame.columns or "score" not in frame.columns:
            raise DataError(
                f"--incumbent {path}: expected columns row_id, score[, label]; "
                f"got {', '.join(map(str, frame.columns))}"
            )
        frame["row_id"] = frame["row_id"].astype(str)
        if frame["row_id"].duplicated().any():
            dup = frame["row_id"][frame["row_id"].duplicated()].iloc[0]
            raise DataError(f"--incumbent {path}: row_id {dup!r} appears more than once")
        score = pd.to_numeric(frame["score"], errors="coerce")
        if score.isna().any() or not score.between(0, 1).all():
            raise DataError(f"--incumbent {path}: column 'score' must be probabilities in [0, 1]")
        if "label" in frame.columns:
            label = pd.to_numeric(frame["label"], errors="coerce")
            if not label.isin([0, 1]).all():
                raise DataError(f"--incumbent {path}: column 'label' must be 0 or 1")
            decision = label.astype(int)
        else:
            decision = (score >= threshold).astype(int)
        self.threshold = threshold
        self.table = pd.DataFrame(
            {"score": score.astype(float).to_numpy(), "decision": decision.to_numpy()},
            index=frame["row_id"].to_numpy(),
        )

    def score(self, batch: Batch) -> Scores:
        found = pd.Index(self.table.index).get_indexer(batch.row_ids)
        if (found < 0).any():
            first = batch.row_ids[found < 0][0]
            raise DataError(
                f"--incumbent {self.path}: no prediction for {(found < 0).sum()} row(s) of "
                f"{batch.path.name}, e.g. row_id {first!r}"
            )
        rows = self.table.iloc[found]
        return Scores(score=rows["score"].to_numpy(), decision=rows["decision"].to_numpy())


def load_model(path: Path, default_threshold: float, flag: str) -> OnnxClassifier | PredictionLog:
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise DataError(f"{flag} {path}: {what}; expected a .onnx model or PREDICTIONS.csv")
    if path.name.endswith((".csv", ".csv.gz")):
        return PredictionLog(path, default_threshold)
    return OnnxClassifier(path, default_threshold, flag)
