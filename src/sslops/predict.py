"""Batch scoring: an exported model over new rows, one probability and decision per row.

``sslops predict`` reads one CSV, or every CSV of a folder (by name), feeds each row's raw
columns to the ONNX model ``sslops export`` wrote (preprocessing is inside the graph, so
the rows need no preparing) and writes ``PREDICTIONS.csv``: ``row_id``, ``score`` (the
probability of the positive class) and ``label`` (the decision, ``score >= threshold``).
That is the format ``sslops shadow --incumbent`` reads, so today's predictions are
tomorrow's incumbent log. Beside it, ``<stem>.meta.json`` says which model made the
decisions (its sha256 and threshold, and where the threshold came from) from which files
(their sha256 and row counts), so a filed decision can be traced to the bundle's model.

Rows are read as the shadow test reads batches (:func:`sslops.shadow.scoring.read_batch`:
``data.na_values`` mark missing cells, rows with no value at all are skipped and counted),
and fed as :class:`sslops.shadow.scoring.OnnxClassifier` feeds them. The threshold is the
one the model carries (``decision_threshold`` in its metadata), else
``evaluate.threshold``; ``--threshold`` overrides both. The file appears whole or not at
all: both files are written beside their final names and renamed, and an existing file
is replaced only when it is an earlier ``PREDICTIONS.csv`` (never an input, never another
file).

An image or series model (one array input) reads ``.npy``/``.npz`` arrays or a folder of
image files instead, and its CSV gives the most probable class and every class's
probability (:mod:`sslops.predict_arrays`).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sslops import __version__
from sslops.artifacts import sha256_file
from sslops.config import Config
from sslops.errors import ArtifactError, DataError
from sslops.predict_arrays import array_input, score_arrays
from sslops.progress import task_progress
from sslops.shadow.scoring import (
    DEFAULT_NA,
    PREDICTION_COLUMNS,
    OnnxClassifier,
    batch_files,
    read_batch,
)


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
    """``out`` may be written: not a folder, not an input, and not a file of someone else's."""
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
) -> PredictResult:
    """Score every row of ``data`` (a CSV or a folder of CSVs) with ``model_path``; write ``out``."""
    model_path, data, out = Path(model_path), Path(data), Path(out)
    if not model_path.is_file():
        raise DataError(f"--model {model_path}: no such file; expected sslops export's model.onnx")
    if threshold is not None and not 0 < threshold < 1:
        raise DataError(f"--threshold {threshold}: expected a probability between 0 and 1")
    default = cfg.evaluate.threshold if cfg else 0.5
    model = OnnxClassifier(model_path, default, "--model")
    spec = array_input(model.inputs)
    if spec is not None:
        if threshold is not None:
            raise DataError(
                f"--threshold {threshold}: {model_path.name} is an image or series model, "
                "whose decision is its most probable class; the threshold is for table models"
            )
        return _predict_arrays(model, spec, data, out)
    files = batch_files(data)
    check_output(out, [model_path, *files])
    if not out.parent.is_dir():
        raise ArtifactError(f"--out {out}: folder {out.parent} does not exist")
    cut = model.threshold if threshold is None else threshold
    source = "--threshold" if threshold is not None else (
        "the model's decision_threshold metadata" if model.has_threshold
        else "evaluate.threshold" if cfg else "the default 0.5"
    )  # fmt: skip
    na = cfg.data.na_values if cfg else DEFAULT_NA
    if id_column is None and cfg is not None:
        id_column = cfg.shadow.id_column

    ids: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    inputs: list[dict[str, Any]] = []
    empty = 0
    seen: dict[str, str] = {}  # row id -> the file it came from
    with task_progress("predict", len(files)) as progress:
        for step, path in enumerate(files, 1):
            batch = read_batch(path, na, id_column, "--data")
            batch_score = model.score(batch).score
            _check_batch(batch.row_ids, batch_score, path, seen, id_column, model_path)
            scores.append(batch_score)
            ids.append(batch.row_ids)
            empty += batch.empty_rows
            inputs.append({"path": str(path.resolve()), "sha256": sha256_file(path),
                           "rows": len(batch.frame), "empty_rows_skipped": batch.empty_rows})  # fmt: skip
            progress.update(step, f"{path.name}: {len(batch.frame):,} rows")
    row_ids, score = np.concatenate(ids), np.concatenate(scores)
    label = (score >= cut).astype(int)
    provenance = _provenance(out, model_path, {"threshold": cut, "threshold_from": source}, [])
    provenance.update({
        "columns": {"row_id": f"column {id_column!r}" if id_column else "<file stem>:<row>",
                    "score": "probability of the positive class",
                    "label": "1 where score >= threshold"},
        "data": inputs, "rows": len(score), "label_1_rows": int(label.sum()),
    })  # fmt: skip
    rows = zip(row_ids.tolist(), (f"{s:.9g}" for s in score), label.tolist(), strict=True)
    _write(out, PREDICTION_COLUMNS, rows, provenance)
    share = label.mean() if len(label) else 0.0
    skipped = f"; {empty} empty row(s) skipped" if empty else ""
    described = f"{int(label.sum()):,} ({share:.1%}) at or above threshold {cut:g}{skipped}"
    return PredictResult(out, len(score), len(files), described)


def _predict_arrays(model: OnnxClassifier, spec: Any, data: Path, out: Path) -> PredictResult:
    """An image or series model: the most probable class of each array or image file."""
    check_output(out, [model.path, data])
    if not out.parent.is_dir():
        raise ArtifactError(f"--out {out}: folder {out.parent} does not exist")
    with task_progress("predict", 1) as progress:
        scored = score_arrays(model.session, spec, model.metadata, data)
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
    provenance = _provenance(out, model.path, None, scored.inputs)
    provenance.update({
        "columns": {"row_id": "<file stem>:<row>, or the image's path in the folder",
                    "score": "probability of the predicted class",
                    "label": "the predicted class (argmax of the probabilities)",
                    "p_<class>": "each class's probability"},
        "decision": "argmax of probabilities", "classes": scored.classes,
        "resized_or_converted": scored.resized, "rows": len(labels),
        "predicted_counts": {str(k): int(v) for k, v in counts.items()},
    })  # fmt: skip
    _write(out, header, rows, provenance)
    top = ", ".join(f"{k} {int(v):,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:5])
    changed = f"; {scored.resized:,} resized or converted" if scored.resized else ""
    return PredictResult(out, len(labels), len(scored.inputs), f"predicted {top}{changed}")


def _provenance(
    out: Path, model_path: Path, threshold: dict[str, Any] | None, inputs: list[Path]
) -> dict[str, Any]:
    return {
        "sslops_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "predictions": out.name,
        "model": {"path": str(model_path.resolve()), "sha256": sha256_file(model_path)},
        **(threshold or {}),
        "data": [{"path": str(p.resolve()), "sha256": sha256_file(p)} for p in inputs],
    }


def _check_batch(
    row_ids: np.ndarray, score: np.ndarray, path: Path, seen: dict[str, str],
    id_column: str | None, model_path: Path,
) -> None:  # fmt: skip
    """Unique row ids over all files so far, and a finite score for every row (checked
    before the file's progress line, so a bad file ends with its error alone)."""
    if not np.all(np.isfinite(score)):
        bad = int(np.flatnonzero(~np.isfinite(score))[0])
        raise DataError(
            f"--model {model_path} gave a non-finite score for row {row_ids[bad]!r} of {path}; "
            "expected finite inputs (an overflowing number such as 1e308?)"
        )
    for row_id in row_ids:
        if row_id in seen:
            where = "earlier in it" if seen[row_id] == str(path) else f"in {seen[row_id]}"
            raise DataError(
                f"--data {path}: row id {row_id!r} occurs more than once (also {where}); "
                + (f"expected unique values in column {id_column!r}" if id_column
                   else "expected files with different names")
            )  # fmt: skip
        seen[row_id] = str(path)


def _write(
    out: Path, header: Iterable[str], rows: Iterable[Iterable[object]],
    provenance: dict[str, Any],
) -> None:  # fmt: skip
    """Both files beside their final names, then renamed: the provenance first, so a
    predictions file never stands without the record of what made it."""
    temps: list[str] = []
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        temps.append(tmp)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        fd, tmp_meta = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        temps.append(tmp_meta)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(provenance, indent=2) + "\n")
        os.replace(tmp_meta, meta_path(out))
        os.replace(tmp, out)
    except BaseException:
        for path in temps:
            Path(path).unlink(missing_ok=True)
        raise
