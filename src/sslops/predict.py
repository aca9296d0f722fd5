"""Batch scoring: an exported model over new rows, one probability and decision per row.

``sslops predict`` reads one CSV or Parquet file, or every CSV of a folder (by name; every
Parquet file with ``data.format: parquet``), feeds each row's raw columns to the ONNX
model ``sslops export`` wrote (preprocessing is inside the graph, so the rows need no
preparing) and writes ``PREDICTIONS.csv``: ``row_id``, ``score`` (the
probability of the positive class) and ``label`` (the decision, ``score >= threshold``).
That is the format ``sslops shadow --incumbent`` reads, so today's predictions are
tomorrow's incumbent log. Beside it, ``<stem>.meta.json`` says which model made the
decisions (its sha256 and threshold, and where the threshold came from) from which files
(their sha256 and row counts), so a filed decision can be traced to the bundle's model.

Rows are read as the shadow test reads batches (:func:`sslops.shadow.scoring.iter_batches`:
``data.na_values`` mark missing cells, rows with no value at all are skipped and counted),
``chunk_rows`` at a time, so a file larger than memory streams through, and fed as
:class:`sslops.shadow.scoring.OnnxClassifier` feeds them. The threshold is the
one the model carries (``decision_threshold`` in its metadata), else
``evaluate.threshold``; ``--threshold`` overrides both. The file appears whole or not at
all: both files are written beside their final names and renamed, and an existing file
is replaced only when it is an earlier ``PREDICTIONS.csv`` (never an input, never another
file).

``-`` for ``data`` reads one CSV or Parquet file from stdin, and for ``out`` writes the
predictions to stdout (no record: a stream has no folder to hold one) for a shell pipeline
(``sslops predict ... --out - | gzip > p.csv.gz``). Both are spooled through an unnamed
temporary file, so stdout too gets every row or, on an error, none.

:func:`predict_frame` scores a pandas DataFrame in memory the same way (no files; a
score and decision per row, indexed as the frame).

An image or series model (one array input) reads ``.npy``/``.npz`` arrays or a folder of
image files instead, and its CSV gives the most probable class and every class's
probability (:mod:`sslops.predict_arrays`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sslops import __version__
from sslops.artifacts import json_text, new_file_mode, output_lock, sha256_file
from sslops.config import Config
from sslops.errors import ArtifactError, DataError, SslopsError
from sslops.progress import task_progress
from sslops.shadow.scoring import (
    DEFAULT_NA,
    PREDICTION_COLUMNS,
    OnnxClassifier,
    _batch,
    _canonical,
    batch_files,
    batch_name,
    iter_batches,
)

STDIO = Path("-")  # --data - reads the rows from stdin; --out - writes the predictions to stdout
CHUNK_ROWS = 20_000  # rows read, scored and written at a time: memory stays flat
PROGRESS_EVERY_S = 5.0  # within a file, a progress line at most this often


@dataclass(frozen=True)
class PredictResult:
    out: Path
    rows: int
    files: int
    described: str  # what was decided, for the console: "2,600 (16.0%) at or above ..."


def meta_path(out: Path) -> Path:
    """The provenance file beside ``out``: ``predictions.csv`` -> ``predictions.meta.json``."""
    return out.with_name(f"{out.name.removesuffix('.csv')}.meta.json")


def check_output(out: Path, inputs: list[Path]) -> None:
    """``out`` may be written: not a folder, not an input, and not a file of someone else's,
    (or ``-``, stdout)."""
    if out == STDIO:
        return
    if out.is_dir():
        raise ArtifactError(f"--out {out} is a folder; expected the CSV file to write")
    if out.suffix.lower() != ".csv":
        raise ArtifactError(f"--out {out}: expected a file name ending in .csv (written plain)")
    target = out.resolve()
    for source in inputs:
        if source.exists() and source.resolve() == target:
            raise ArtifactError(
                f"--out {out} is an input ({source}); writing it would destroy it: choose "
                "another file name"
            )
    meta = meta_path(out)
    if meta.exists() and not _ours(meta, out):
        raise ArtifactError(
            f"--out {out}: {meta} exists and is not the provenance record of earlier "
            f"predictions in {out.name}; nothing was written: choose another file name"
        )
    if not out.exists():
        return
    with open(out, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().strip()
    if not header.startswith(",".join(PREDICTION_COLUMNS)):
        raise ArtifactError(
            f"--out {out} exists and is not an earlier predictions file (its first line is "
            f"{header[:60]!r}, expected {','.join(PREDICTION_COLUMNS)!r}); nothing was written: "
            "choose a new file name"
        )


def _check_folder(out: Path) -> None:
    if out != STDIO and not out.parent.is_dir():
        raise ArtifactError(f"--out {out}: folder {out.parent} does not exist")


def _ours(meta: Path, out: Path) -> bool:
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("predictions") == out.name


def predict(
    model_path: Path,
    data: Path,
    out: Path,
    cfg: Config | None = None,
    *,
    id_column: str | None = None,
    threshold: float | None = None,
    chunk_rows: int | None = None,
    registry: Path | None = None,
    approver_keys: list[Path] | None = None,
) -> PredictResult:
    """Score every row of ``data`` (a CSV or Parquet file, or a folder of them) with
    ``model_path``; write ``out``. ``-`` for ``data`` reads stdin, for ``out`` writes stdout.

    ``registry``: an audit registry in which the model's bundle must be approved (its
    approval goes into the provenance record), with ``approver_keys`` (PEM public keys) by
    one of those keys; checked before anything is read or written.
    """
    model_path, data, out = Path(model_path), Path(data), Path(out)
    with contextlib.ExitStack() as spool:
        if data != STDIO:
            return _predict(model_path, data, out, cfg, id_column, threshold, chunk_rows,
                            registry, approver_keys)  # fmt: skip
        spooled = spool.enter_context(_stdin_spooled())
        try:
            return _predict(model_path, spooled, out, cfg, id_column, threshold, chunk_rows,
                            registry, approver_keys)  # fmt: skip
        except SslopsError as exc:  # name the input as the user gave it, not the spool file
            raise type(exc)(str(exc).replace(str(spooled), "- (stdin)")) from exc
    raise AssertionError("unreachable")  # mypy: ExitStack may swallow the return


def _predict(
    model_path: Path, data: Path, out: Path, cfg: Config | None, id_column: str | None,
    threshold: float | None, chunk_rows: int | None, registry: Path | None,
    approver_keys: list[Path] | None,
) -> PredictResult:  # fmt: skip
    _check_model_file(model_path)
    approval = None
    if approver_keys and registry is None:
        raise DataError("--approver-key checks an approval in an audit registry: give --registry")
    if registry is not None:
        from sslops.audit.bundle import load_public_key
        from sslops.audit.registry import approval_of

        keys = [load_public_key(Path(k), "--approver-key") for k in approver_keys or []]
        approval = approval_of(registry, sha256_file(model_path), keys)
    if chunk_rows is not None and chunk_rows < 1:
        raise DataError(f"--chunk-rows {chunk_rows}: expected a positive number of rows")
    _check_threshold(threshold)
    model = _classifier(model_path, cfg)
    spec = array_input(model.inputs)
    if spec is not None:
        if threshold is not None:
            raise DataError(
                f"--threshold {threshold}: {model_path.name} is an image or series model, "
                "whose decision is its most probable class; the threshold is for table models"
            )
        if data.name == STDIN_NAME and data.parent.name.startswith(STDIN_FOLDER):
            raise DataError(
                f"--data -: {model_path.name} is an image or series model, which reads "
                "array or image files; stdin gives table models their rows: name the file"
            )
        label_column = cfg.data.label if cfg else None
        return _predict_arrays(model, spec, data, out, chunk_rows, label_column, approval)
    files = batch_files(data, cfg.data.format if cfg else "csv")
    check_output(out, [model_path, *files])
    _check_folder(out)
    cut, source = _cut(model, threshold, cfg)
    na = cfg.data.na_values if cfg else DEFAULT_NA
    if id_column is None and cfg is not None:
        id_column = cfg.shadow.id_column

    if id_column is None:
        _check_names(files)
    seen: dict[str, str] | None = {} if id_column else None  # row id -> the file it came from
    # category codes stay as written (02134), as prepare read them
    text_columns = [i.name for i in model.inputs if i.type == "tensor(string)"]
    fallback = _case_rule_fallback(model)
    inputs: list[dict[str, Any]] = []
    rows = positive = empty = 0
    unseen: Counter[str] = Counter()
    shown = time.monotonic()
    with _writing(out) as sink, task_progress("predict", len(files)) as progress:
        sink.writer.writerow(PREDICTION_COLUMNS)
        for step, path in enumerate(files, 1):
            file_rows = file_empty = 0
            for batch in iter_batches(path, na, id_column, "--data", chunk_rows or CHUNK_ROWS,
                                      text_columns):  # fmt: skip
                score = model.score(batch).score
                _check_batch(
                    batch.row_ids, score, path, seen, id_column, model_path, frame=batch.frame
                )
                unseen.update(model.unseen(batch))
                label = (score >= cut).astype(int)
                sink.writer.writerows(
                    zip(batch.row_ids.tolist(), (f"{s:.9g}" for s in score), label.tolist(),
                        strict=True)
                )  # fmt: skip
                file_rows += len(score)
                file_empty += batch.empty_rows
                positive += int(label.sum())
                if time.monotonic() - shown >= PROGRESS_EVERY_S:  # a long file: a line now and then
                    progress.update(step - 1, f"{path.name}: {file_rows:,} rows so far")
                    shown = time.monotonic()
            rows += file_rows
            empty += file_empty
            inputs.append({"path": _shown(path), "sha256": sha256_file(path),
                           "rows": file_rows, "empty_rows_skipped": file_empty})  # fmt: skip
            progress.update(step, f"{path.name}: {file_rows:,} rows")
        sink.provenance = _provenance(
            out, model_path, {"threshold": cut, "threshold_from": source}, [], approval
        )
        sink.provenance.update({
            "columns": {"row_id": f"column {id_column!r}" if id_column else "<file stem>:<row>",
                        "score": "probability of the positive class",
                        "label": "1 where score >= threshold"},
            "data": inputs, "rows": rows, "label_1_rows": positive,
            # counts only: an unseen value may single a person out
            "unseen_values": {"rows_by_column": dict(sorted(unseen.items())),
                              "scored_as": "__other__, the level of values unseen or rare "
                                           "(prepare.min_category_count) in training"},
        })  # fmt: skip
        if fallback:
            sink.provenance["case_rule"] = fallback
    share = positive / rows if rows else 0.0
    skipped = f"; {empty} empty row(s) skipped" if empty else ""
    novel = ", ".join(f"{column} {count:,}" for column, count in sorted(unseen.items()))
    if novel:
        novel = (f"; rows with a value outside the model's levels (unseen or rare in training, "
                 f"scored as __other__): {novel}")  # fmt: skip
    older = f"; {fallback}" if fallback else ""
    described = f"{positive:,} ({share:.1%}) at or above threshold {cut:g}{skipped}{novel}{older}"
    return PredictResult(out, rows, len(files), described)


def predict_frame(
    model_path: Path, frame: pd.DataFrame, cfg: Config | None = None, *,
    threshold: float | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Score the rows of an in-memory table with an exported table model, as
    :func:`predict` scores a file's rows (same reading of cells, same threshold rule).

    Parameters
    ----------
    model_path : Path
        ``model.onnx`` from the export stage (or a run's ``export/model.onnx``).
    frame : pandas.DataFrame
        The raw columns the model reads (extra columns are ignored); cells as in the
        training file (``cfg.data.na_values``, else ``"?"`` and ``""``, mark missing).
    cfg : Config, optional
        The run's config: its ``data.na_values`` and ``evaluate.threshold`` (used when the
        model carries no threshold).
    threshold : float, optional
        The decision threshold, overriding the model's.

    Returns
    -------
    pandas.DataFrame
        Indexed as ``frame``: ``score`` (probability of the positive class, float) and
        ``label`` (``score >= threshold``, nullable int); a row with no value in any cell
        is not scored (``score`` NaN, ``label`` missing). ``attrs["threshold"]`` holds the
        threshold used, ``attrs["threshold_from"]`` where it came from.

    Raises
    ------
    sslops.errors.DataError
        Not a DataFrame, a model that is not a table model, a missing column, a
        non-numeric value in a numeric column, or a non-finite score.
    """
    # errors name the arguments as the caller wrote them (model=, threshold=), not the CLI's flags
    _check_model_file(model_path, "model")
    _check_threshold(threshold, "threshold")
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"frame: got {type(frame).__name__}; expected a pandas DataFrame")
    model = _classifier(model_path, cfg, "model")
    if array_input(model.inputs) is not None:
        raise DataError(
            f"model {model_path.name} is an image or series model; predict_frame scores a "
            "table model's rows: score arrays with sslops.predict.predict (files)"
        )
    cut, source = _cut(model, threshold, cfg, "the threshold argument")
    na = cfg.data.na_values if cfg else DEFAULT_NA
    text_columns = [i.name for i in model.inputs if i.type == "tensor(string)"]
    where = Path("DataFrame")
    rows = _canonical(frame.reset_index(drop=True), na, text_columns)
    batch = dataclasses.replace(_batch(rows, where, None, "frame", 0), source="frame")
    score = model.score(batch).score if len(batch.frame) else np.empty(0)
    _check_batch(batch.row_ids, score, where, None, None, model_path, "model", batch.frame)
    scored = np.array([int(i.rsplit(":", 1)[1]) for i in batch.row_ids], dtype=np.int64)
    result = pd.DataFrame(
        {"score": np.full(len(frame), np.nan), "label": pd.array([pd.NA] * len(frame), "Int64")},
        index=frame.index,
    )
    result.iloc[scored, 0] = score
    result.iloc[scored, 1] = (score >= cut).astype(int)
    result.attrs.update({"threshold": cut, "threshold_from": source})
    return result


def _check_model_file(model_path: Path, flag: str = "--model") -> None:
    if not model_path.is_file():
        what = "a folder" if model_path.is_dir() else "no such file"
        raise DataError(f"{flag} {model_path}: {what}; expected sslops export's model.onnx "
                        "(e.g. runs/demo/export/model.onnx)")  # fmt: skip


def _check_threshold(threshold: float | None, flag: str = "--threshold") -> None:
    if threshold is not None and not 0 < threshold < 1:
        raise DataError(f"{flag} {threshold}: expected a probability between 0 and 1")


def _classifier(model_path: Path, cfg: Config | None, flag: str = "--model") -> OnnxClassifier:
    return OnnxClassifier(model_path, cfg.evaluate.threshold if cfg else 0.5, flag)


def _cut(
    model: OnnxClassifier, threshold: float | None, cfg: Config | None, flag: str = "--threshold"
) -> tuple[float, str]:
    """The decision threshold and where it came from (``flag``: how the caller gave one)."""
    if threshold is not None:
        return threshold, flag
    source = ("the model's decision_threshold metadata" if model.has_threshold
              else "evaluate.threshold" if cfg else "the default 0.5")  # fmt: skip
    return model.threshold, source


def _case_rule_fallback(model: OnnxClassifier) -> str | None:
    """What predict assumed for an sslops model exported before its metadata recorded the case
    rule (``case_insensitive_levels``), or None when the model says (docs/upgrading.md)."""
    if model.case_rule_recorded or not model.levels or "sslops_version" not in model.metadata:
        return None
    return (f"{model.path.name} (sslops {model.metadata['sslops_version']}) does not record "
            "case_insensitive_levels (exported before sslops recorded it): a category written "
            "in another case was read as its level, as training's default "
            "(prepare.casefold_categories: true) merges them; re-export to record the rule")  # fmt: skip


def array_input(inputs: list[Any]) -> Any | None:
    """The model's single array input (rank 3 or 4), or None for a model over columns."""
    arrays = [i for i in inputs if len(i.shape) > 2]
    return arrays[0] if len(inputs) == 1 and arrays else None


def _predict_arrays(
    model: OnnxClassifier, spec: Any, data: Path, out: Path, batch: int | None,
    label: str | None, approval: dict[str, Any] | None,
) -> PredictResult:  # fmt: skip
    """An image or series model: the most probable class of each array or image file."""
    from sslops.predict_arrays import ARRAY_BATCH, score_arrays  # only for these models

    check_output(out, [model.path, data])
    _check_folder(out)
    with task_progress("predict", 1) as progress:
        scored = score_arrays(
            model.session, spec, model.metadata, data, batch or ARRAY_BATCH, label or "label"
        )
        if not np.all(np.isfinite(scored.proba)):
            bad = int(np.flatnonzero(~np.isfinite(scored.proba).all(1))[0])
            raise DataError(
                f"--model {model.path} gave a non-finite probability for {scored.row_ids[bad]!r}"
            )
        progress.update(1, f"{data.name}: {len(scored.row_ids):,} items")
    best = scored.proba.argmax(1)
    labels = [scored.classes[k] for k in best]
    header = (*PREDICTION_COLUMNS, *(f"p_{c}" for c in scored.classes))
    rows = (
        [row_id, f"{p[k]:.9g}", label, *(f"{v:.9g}" for v in p)]
        for row_id, p, k, label in zip(scored.row_ids, scored.proba, best, labels, strict=True)
    )
    counts = dict(zip(*np.unique(labels, return_counts=True), strict=True))
    provenance = _provenance(out, model.path, None, scored.inputs, approval)
    provenance.update({
        "columns": {"row_id": "<file stem>:<row>, or the image's path in the folder",
                    "score": "probability of the predicted class",
                    "label": "the predicted class (argmax of the probabilities)",
                    "p_<class>": "each class's probability"},
        "decision": "argmax of probabilities", "classes": scored.classes,
        "resized_or_converted": scored.resized, "rows": len(labels),
        "predicted_counts": {str(k): int(v) for k, v in counts.items()},
    })  # fmt: skip
    with _writing(out) as sink:
        sink.writer.writerow(header)
        sink.writer.writerows(rows)
        sink.provenance = provenance
    top = ", ".join(f"{k} {int(v):,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:5])
    changed = f"; {scored.resized:,} resized or converted" if scored.resized else ""
    return PredictResult(out, len(labels), len(scored.inputs), f"predicted {top}{changed}")


def _provenance(
    out: Path, model_path: Path, threshold: dict[str, Any] | None, inputs: list[Path],
    approval: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    model = {"path": str(model_path.resolve()), "sha256": sha256_file(model_path)}
    return {
        "sslops_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "predictions": out.name,
        "model": {**model, **({"approval": approval} if approval else {})},
        **(threshold or {}),
        "data": [{"path": str(p.resolve()), "sha256": sha256_file(p)} for p in inputs],
    }


def _check_names(files: list[Path]) -> None:
    """Row ids are ``<file stem>:<row>``: two files with one stem (``a.csv``, ``a.csv.gz``)
    would give the same ids."""
    named: dict[str, Path] = {}
    for path in files:
        other = named.setdefault(batch_name(path), path)
        if other != path:
            raise DataError(
                f"--data {path}: row id {batch_name(path) + ':0'!r} occurs more than once "
                f"(also in {other}); expected files with different names, or --id-column"
            )


def _overflowing(frame: pd.DataFrame | None, row: int) -> str:
    """The numeric columns of ``row`` a float32 model reads as inf or NaN, for the error."""
    if frame is None or row >= len(frame):
        return ""
    limit = float(np.finfo(np.float32).max)
    found = []
    for column in frame.columns:
        value = frame[column].iloc[row]
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            number = float(value)
            if not np.isnan(number) and not abs(number) <= limit:
                found.append(f"{column!r} = {number:g}")
    return f" ({', '.join(found)}: beyond float32's range)" if found else ""


def _check_batch(
    row_ids: np.ndarray, score: np.ndarray, path: Path, seen: dict[str, str] | None,
    id_column: str | None, model_path: Path, model_flag: str = "--model",
    frame: pd.DataFrame | None = None,
) -> None:  # fmt: skip
    """A finite score for every row, and (``seen``: the ids so far, when a column names the
    rows) unique row ids over all files; checked before the progress line, so a bad file
    ends with its error alone."""
    if not np.all(np.isfinite(score)):
        bad = int(np.flatnonzero(~np.isfinite(score))[0])
        raise DataError(
            f"{model_flag} {model_path} gave a non-finite score for row {row_ids[bad]!r} of {path}"
            f"{_overflowing(frame, bad)}; expected finite inputs within float32's range "
            "(about ±3.4e38), as the model reads numbers in float32"
        )
    if seen is None:
        return
    source = str(path)  # one string shared by the file's ids, not one per row
    for row_id in row_ids:
        if row_id in seen:
            where = "earlier in it" if seen[row_id] == source else f"in {seen[row_id]}"
            raise DataError(
                f"--data {path}: row id {row_id!r} occurs more than once (also {where}); "
                f"expected unique values in column {id_column!r}"
            )
        seen[row_id] = source


def check_publish(out: Path, inputs: list[Path]) -> None:
    """``out`` may take published predictions: checked as ``--out`` is, and not inside a
    folder of ``inputs``, where the next run would read it as new rows."""
    check_output(out, inputs)
    for source in inputs:
        if source.is_dir() and out.resolve().is_relative_to(source.resolve()):
            raise ArtifactError(
                f"out {out} lies in the data folder {source}; the next run would read it as "
                "rows to score: publish to another folder"
            )


def publish(written: Path, out: Path, inputs: list[Path]) -> Path:
    """Copy predictions ``written`` (and its record) to ``out``, e.g. on the workspace
    volume where the shadow pipeline reads the incumbent's log, with the guarantees of
    :func:`predict`'s own write (:func:`check_publish`; the folder is created; both files
    appear whole or not at all)."""
    check_publish(out, inputs)
    record = json.loads(meta_path(written).read_text(encoding="utf-8"))
    record["predictions"] = out.name
    out.parent.mkdir(parents=True, exist_ok=True)
    with _writing(out) as sink, open(written, encoding="utf-8", newline="") as fh:
        shutil.copyfileobj(fh, sink.file)
        sink.provenance = record
    return out


@dataclass
class _Sink:
    file: Any  # the temporary predictions file, open for writing
    writer: Any  # csv.writer over it
    provenance: dict[str, Any] | None = None


STDIN_FOLDER, STDIN_NAME = "sslops-stdin-", "stdin"  # row ids "stdin:<row>"


@contextmanager
def _stdin_spooled() -> Iterator[Path]:
    """stdin's bytes in a temporary file named ``stdin`` (a table is read from a file: its
    first bytes say whether it is Parquet, and a chunked read seeks), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=STDIN_FOLDER) as folder:
        path = Path(folder) / STDIN_NAME
        with open(path, "wb") as fh:
            shutil.copyfileobj(sys.stdin.buffer, fh)
        yield path


def _shown(path: Path) -> str:
    """How the record names an input: its absolute path, or ``-`` for stdin."""
    spooled = path.name == STDIN_NAME and path.parent.name.startswith(STDIN_FOLDER)
    return "-" if spooled else str(path.resolve())


@contextmanager
def _to_stdout() -> Iterator[_Sink]:
    """Rows spool into an unnamed temporary file (the system removes it, even after a kill)
    and go to stdout only once all were scored: an error leaves stdout empty, as it leaves
    no file. The record is not written: a stream has no folder beside it to hold one."""
    with tempfile.TemporaryFile() as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        sink = _Sink(text, csv.writer(text, lineterminator="\n"))
        yield sink
        text.flush()
        raw.seek(0)
        sys.stdout.flush()
        target = getattr(sys.stdout, "buffer", None)
        if target is None:  # a stream without bytes (a notebook's): the text itself
            shutil.copyfileobj(io.TextIOWrapper(raw, encoding="utf-8", newline=""), sys.stdout)
        else:
            shutil.copyfileobj(raw, target)
        sys.stdout.flush()
        text.detach()


@contextmanager
def _writing(out: Path) -> Iterator[_Sink]:
    """Rows stream into a file beside ``out``; when the block ends without an error, the
    provenance record (set on the sink, given the predictions' sha256 here) and then the
    predictions are renamed into place, so a predictions file never stands without the
    record of what made it. On any error (or Ctrl-C) both temporary files are removed and
    nothing of ``out`` changes. Each temporary file is locked while this process lives, so
    the next write of ``out`` can tell a killed writer's (:func:`_recover`) from a live one's.
    ``out`` itself is held (:func:`sslops.artifacts.output_lock`) for the block: a second
    predict into it meanwhile is refused, naming this one (two writers' renames could
    otherwise interleave, leaving one's predictions beside the other's record)."""
    if out == STDIO:
        with _to_stdout() as sink:
            yield sink
        return
    temps: list[str] = []
    with contextlib.ExitStack() as locks:
        locks.enter_context(output_lock(out, "predict"))

        def temporary() -> tuple[int, str]:
            fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=TEMP_SUFFIX, dir=out.parent)
            temps.append(tmp)
            held = os.open(tmp, os.O_RDONLY)  # its own lock, kept after the file is closed
            locks.callback(os.close, held)
            fcntl.flock(held, fcntl.LOCK_EX)
            return fd, tmp

        try:
            _recover(out)
            fd, tmp = temporary()
            _readable(fd)
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                hashed = _Hashed(fh)
                sink = _Sink(hashed, csv.writer(hashed, lineterminator="\n"))
                yield sink
            if sink.provenance is None:
                raise RuntimeError("predictions written without a provenance record")
            record = {**sink.provenance, "predictions_sha256": hashed.digest.hexdigest()}
            fd, tmp_meta = temporary()
            _readable(fd)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json_text(record, indent=2) + "\n")
            meta, kept = meta_path(out), None
            if meta.is_file():  # the earlier record, put back if its predictions cannot be replaced
                fd, kept = temporary()
                os.close(fd)
                shutil.copy2(meta, kept)
            os.replace(tmp_meta, meta)
            try:
                os.replace(tmp, out)
            except BaseException:
                if kept:
                    os.replace(kept, meta)
                else:
                    meta.unlink(missing_ok=True)
                raise
            if kept:
                Path(kept).unlink()
        except BaseException:
            for path in temps:
                Path(path).unlink(missing_ok=True)
            raise


TEMP_SUFFIX = ".tmp"  # .<out name>.<random>.tmp: predictions or a record being written


class _Hashed:
    """A text file's ``write`` that also hashes the UTF-8 bytes written (the file is opened
    with ``newline=""``: the bytes on disk are exactly these)."""

    def __init__(self, file: Any) -> None:
        self.file, self.digest = file, hashlib.sha256()

    def write(self, text: str) -> int:
        self.digest.update(text.encode("utf-8"))
        return int(self.file.write(text))


def _abandoned(path: Path) -> bool:
    """A temporary file no live writer holds (its writer was killed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: a predict is writing it now
        return False
    finally:
        os.close(fd)
    return True


def _record_of(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _recover(out: Path) -> None:
    """Before writing ``out``: mend what a predict into it that was killed left, and say so.
    Killed between its two renames, it left its new record beside the earlier predictions
    (or none); the record names the sha256 of the predictions it describes, so the
    replacement is completed when those predictions were left whole beside it, else the
    earlier record is put back (or, with none, the record that describes nothing is
    removed). Its temporary files are then removed. Nothing is touched while another
    predict into ``out`` is writing."""
    temps = sorted(out.parent.glob(f".{out.name}.*{TEMP_SUFFIX}"))
    left = [p for p in temps if _abandoned(p)]
    if len(left) < len(temps):
        return
    meta = meta_path(out)
    wanted = _record_of(meta).get("predictions_sha256") if meta.is_file() else None
    current = sha256_file(out) if out.is_file() else None
    if wanted and wanted != current:
        whole = [p for p in left if sha256_file(p) == wanted]
        earlier = [p for p in left if current and _record_of(p).get("predictions_sha256") == current]  # fmt: skip
        if whole:
            os.replace(whole[0], out)
            left.remove(whole[0])
            said = f"completed the replacement of {out} with the predictions {meta.name} describes"  # fmt: skip
        elif earlier:
            os.replace(earlier[0], meta)
            left.remove(earlier[0])
            said = f"put back the earlier {meta} (the one that describes {out.name})"
        else:
            meta.unlink()
            said = f"removed {meta} (it describes predictions that are not in {out.name})"
        print(f"{said}: a predict into {out} was killed while replacing it", file=sys.stderr)
    for path in left:
        path.unlink(missing_ok=True)
        print(f"removed {path}, left by an interrupted predict into {out}", file=sys.stderr)


def _readable(fd: int) -> None:
    """The mode ``open`` would give a new file (0644 under the usual umask 022): mkstemp
    makes its file 0600 and the rename keeps it, so the predictions, written as root or
    by a job's user, were unreadable to the job or person who reads them next."""
    os.fchmod(fd, new_file_mode())
