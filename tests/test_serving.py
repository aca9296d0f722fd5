"""Serving the exported model outside sslops: what a plain onnxruntime service needs to know
and feed (runtime versions, metadata, the preprocessing spec shipped in the model), checked
against ``sslops predict`` on raw CSV rows."""

from __future__ import annotations

import csv
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

from sslops.config import Config
from sslops.predict import predict

# What onnxruntime 1.16 (built on onnx 1.14) reads at most; it refuses a higher IR version
# ("Unsupported model IR version: 10, max supported IR version: 9").
ORT_1_16 = {"ir": 9, "": 19, "ai.onnx.ml": 3}


def _session(path: Path, level: str = "ORT_ENABLE_ALL") -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_the_models_load_in_older_runtimes_and_say_who_made_them(
    stage_artifacts: dict[str, Path],
) -> None:
    """The torch exporter stamped IR 10, which no onnxruntime before 1.18 loads (a Java or
    C# service pinned at 1.16, a Triton image a year old); an opset-18 graph needs IR 8."""
    for name in ("model.onnx", "model.int8.onnx"):
        proto = onnx.load(str(stage_artifacts["export"] / name))
        opsets = {o.domain: o.version for o in proto.opset_import}
        assert proto.ir_version == onnx.helper.find_min_ir_version_for(proto.opset_import), name
        assert proto.ir_version <= ORT_1_16["ir"], (name, proto.ir_version)
        assert opsets[""] <= ORT_1_16[""] and opsets.get("ai.onnx.ml", 0) <= ORT_1_16["ai.onnx.ml"]
        onnx.checker.check_model(proto, full_check=True)
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
        tensors = [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]
        assert not [t.name for t in tensors if t.metadata_props], name  # an IR 10 field
    proto = onnx.load(str(stage_artifacts["export"] / "model.onnx"))
    assert proto.producer_name == "sslops"  # was "onnx.compose.merge_models" 1.0


def _canonical(cell: str, markers: set[str]) -> str | None:
    """The shipped spec's "text" rule, in plain Python."""
    text = re.sub(r"[\t\n\f\r ]+", " ", unicodedata.normalize("NFKC", cell)).strip()
    return None if not text or text in markers else text


NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$|^[+-]?(?:inf|infinity)$", re.I)


def _feed(
    rows: list[dict[str, str]], session: ort.InferenceSession, spec: dict, inputs: list[dict]
) -> dict:
    """A service's feed from raw CSV cells, from the spec alone: no sslops, no pandas."""
    markers = {_canonical(m, set()) or "" for m in spec["missing_markers"]}
    levels = {i["name"]: i["levels"] for i in inputs if "levels" in i}
    feed = {}
    for item in session.get_inputs():
        cells = [_canonical(row[item.name], markers) for row in rows]
        if item.type == "tensor(string)":
            known = levels[item.name]
            lowered: dict[str, list[str]] = {}
            for level in known:
                lowered.setdefault(level.lower(), []).append(level)
            if spec["case_insensitive_levels"]:  # 'private' is the level 'Private'
                cells = [c if c is None or c in known or len(lowered.get(c.lower(), [])) != 1
                         else lowered[c.lower()][0] for c in cells]  # fmt: skip
            feed[item.name] = np.array(["" if c is None else c for c in cells], dtype=object)
            continue
        numbers = []
        for cell in cells:
            assert cell is None or NUMBER.match(cell), (item.name, cell)  # refuse the row
            value = np.nan if cell is None else float(cell)
            numbers.append(np.nan if np.isinf(value) else value)
        feed[item.name] = np.array(numbers, dtype=np.float64).astype(np.float32)
    return feed


def test_a_service_fed_by_the_shipped_spec_scores_raw_rows_as_sslops_predict_does(
    stage_artifacts: dict[str, Path], small_config: Config, small_data: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    """The graph does imputation, scaling and one-hot; what happens to a cell before it is an
    input (missing markers, Unicode and whitespace, infinities) is in the model's metadata,
    and following it by hand gives predict's scores to the digit, messy cells included."""
    model = stage_artifacts["export"] / "model.onnx"
    proto = onnx.load(str(model))
    meta = {p.key: p.value for p in proto.metadata_props}
    spec, inputs = json.loads(meta["preprocessing"]), json.loads(meta["inputs"])
    assert spec["missing_markers"] == small_config.data.na_values
    assert meta["label"] == "income" and json.loads(meta["positive_class"]) == ">50K"
    assert "P(income = >50K)" in spec["output"]

    with open(small_data["test"], encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    messy = {  # row: {column: cell as a person or an upstream system wrote it}
        0: {"workclass": "  Private  ", "occupation": "?"},
        1: {"occupation": " ? ", "age": "inf"},
        2: {"age": "", "hours-per-week": "\uff14\uff10"},  # full-width 40
        3: {"native-country": "Atlantis", "education": "HS-grad\u00a0"},  # unseen; NBSP
        4: {"sex": "\uff2d\uff41\uff4c\uff45", "marital-status": "Married-civ-spouse\t"},
        6: {"workclass": "PRIVATE", "race": "white"},  # levels in another case
        5: {"age": "-Infinity", "capital-gain": "1e3"},
    }  # fmt: skip
    for i, cells in messy.items():
        rows[i].update(cells)
    data = tmp_path / "raw.csv"
    with open(data, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "predictions.csv"
    predict(model, data, out, small_config)
    written = pd.read_csv(out, dtype=str)["score"].tolist()

    scores = {}
    for level in ("ORT_DISABLE_ALL", "ORT_ENABLE_ALL"):
        session = _session(model, level)
        scores[level] = session.run(None, _feed(rows, session, spec, inputs))[0]
        for size in (0, 1, 1000):  # the batch axis is dynamic, an empty batch included
            part = session.run(None, _feed(rows[:size], session, spec, inputs))[0]
            assert part.shape == (size,) and np.array_equal(part, scores[level][:size])
    assert np.array_equal(scores["ORT_DISABLE_ALL"], scores["ORT_ENABLE_ALL"])
    assert [f"{s:.9g}" for s in scores["ORT_ENABLE_ALL"].astype(np.float64)] == written

    # The spec matters: the cells fed as written (markers and spaces kept) score otherwise.
    session = _session(model)
    raw = {i.name: np.array([r[i.name] for r in rows[:6]], dtype=object)
           for i in session.get_inputs() if i.type == "tensor(string)"}  # fmt: skip
    naive = session.run(None, {**_feed(rows[:6], session, spec, inputs), **raw})[0]
    assert not np.array_equal(naive[:5], scores["ORT_ENABLE_ALL"][:5])


def _zip_model(tmp_path: Path) -> tuple[Path, Any]:
    """A model over age and a ZIP-code category (levels 02134, 02135, 10001, 94105, 27.0)."""
    from sslops.data.encoding import TabularEncoding
    from sslops.export.graph import export_raw_column_onnx
    from sslops.finetune.stage import linear_model

    rng = np.random.default_rng(0)
    codes = ["02134", "02135", "10001", "94105", "27.0"]
    train = pd.DataFrame({"age": rng.integers(18, 80, 500).astype(float),
                          "zip": rng.choice(codes, 500)})  # fmt: skip
    encoding = TabularEncoding.fit(train, ["age", "zip"], 50, 5)
    assert set(codes) <= set(encoding.categorical[0].categories)
    weights = rng.normal(size=len(encoding.feature_names)) * 3
    model = tmp_path / "model.onnx"
    export_raw_column_onnx(encoding, linear_model(None, weights, 0.1), model, 18)
    return model, encoding


def test_a_category_code_is_scored_as_written_whatever_the_chunk(tmp_path: Path) -> None:
    """data.categorical is for codes such as a ZIP code: prepare keeps 02134 as text, and
    predict read a chunk of such cells as the number 2134, a level the model never saw (every
    row scored as __other__, and counted as unseen)."""
    from sslops.export.graph import raw_inputs

    model, encoding = _zip_model(tmp_path)
    new = pd.DataFrame({"age": [30.0, 40.0, 50.0, 60.0, 35.0],
                        "zip": ["02134", "10001", "02135", "27.0", "abc"]})  # fmt: skip
    data = tmp_path / "new.csv"
    new.to_csv(data, index=False)
    expected = _session(model).run(None, raw_inputs(encoding, new))[0]
    for chunk in (5, 1, 2):  # a chunk of only numbers, and one with "abc" among them
        out = tmp_path / f"chunk{chunk}.csv"
        predict(model, data, out, chunk_rows=chunk)
        scores = pd.read_csv(out)["score"].to_numpy()
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-7)
        record = json.loads(out.with_name(f"chunk{chunk}.meta.json").read_text())
        assert record["unseen_values"]["rows_by_column"] == {"zip": 1}, chunk  # "abc" only


def test_the_shadow_test_reads_a_category_code_as_written(tmp_path: Path) -> None:
    """sslops shadow read its batches (and --reference) with the numbers parsed: a day of
    ZIP codes that are all digits was scored as __other__ by both models."""
    from sslops.export.graph import raw_inputs
    from sslops.shadow import shadow

    model, encoding = _zip_model(tmp_path)
    day = pd.DataFrame(
        {"age": [30.0, 40.0, 50.0, 60.0], "zip": ["02134", "10001", "02135", "94105"]}
    )
    folder = tmp_path / "days"
    folder.mkdir()
    day.to_csv(folder / "day01.csv", index=False)
    out = shadow(model, model, folder, tmp_path / "report", reference=folder / "day01.csv")
    scores = pd.read_csv(out / "scores.csv")
    expected = _session(model).run(None, raw_inputs(encoding, day))[0]
    np.testing.assert_allclose(scores["candidate_score"], expected, rtol=0, atol=1e-6)


def test_a_bad_cell_in_a_large_file_is_named_with_its_row(
    stage_artifacts: dict[str, Path], small_config: Config, small_data: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    from sslops.errors import DataError

    lines = small_data["test"].read_text(encoding="utf-8").splitlines()
    lines[701] = "old" + lines[701][lines[701].index(",") :]  # age of data row 700
    data = tmp_path / "day.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"non-numeric value in row 'day:700' \(shaped 'aaa'"):
        predict(stage_artifacts["export"] / "model.onnx", data, tmp_path / "p.csv", small_config,
                chunk_rows=256)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day.csv"]


def test_predictions_get_the_mode_a_new_file_gets(
    stage_artifacts: dict[str, Path], small_config: Config, small_data: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    """mkstemp's 0600 survived the rename: the next job (another user) could not read them."""
    for umask, mode in ((0o022, 0o644), (0o077, 0o600)):  # a private umask is kept
        previous = os.umask(umask)
        try:
            out = tmp_path / f"{umask:o}" / "predictions.csv"
            out.parent.mkdir()
            predict(stage_artifacts["export"] / "model.onnx", small_data["test"], out,
                    small_config)  # fmt: skip
            assert os.umask(umask) == umask  # predict left the process umask as it was
        finally:
            os.umask(previous)
        for path in (out, out.with_name("predictions.meta.json")):
            assert path.stat().st_mode & 0o777 == mode, path


def test_a_level_written_in_another_case_is_that_level_as_in_training(
    stage_artifacts: dict[str, Path], small_config: Config, small_data: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    """prepare.casefold_categories merges spellings that differ only in case; 'private' at
    serving time was scored as __other__ (and counted unseen), not as the level Private."""
    model = stage_artifacts["export"] / "model.onnx"
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert json.loads(meta["preprocessing"])["case_insensitive_levels"] is True
    rows = pd.read_csv(small_data["test"], dtype=str, keep_default_na=False).head(40)
    rows = rows[rows["workclass"].str.strip() == "Private"].reset_index(drop=True)
    scores = {}
    for spelling in ("Private", "private", "PRIVATE"):
        data = tmp_path / f"{spelling}.csv"
        rows.assign(workclass=spelling).to_csv(data, index=False)
        out = tmp_path / f"{spelling}-scores.csv"
        predict(model, data, out, small_config)
        scores[spelling] = pd.read_csv(out)["score"].to_numpy()
        record = json.loads(out.with_name(f"{spelling}-scores.meta.json").read_text())
        assert "workclass" not in record["unseen_values"]["rows_by_column"], spelling
    assert np.array_equal(scores["private"], scores["Private"])
    assert np.array_equal(scores["PRIVATE"], scores["Private"])
    other = tmp_path / "other.csv"
    rows.assign(workclass="Privat").to_csv(other, index=False)  # a typo stays unseen
    predict(model, other, tmp_path / "other-scores.csv", small_config)
    record = json.loads((tmp_path / "other-scores.meta.json").read_text())
    assert record["unseen_values"]["rows_by_column"]["workclass"] == len(rows)
