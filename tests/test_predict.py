"""sslops predict: the exported model over new CSV rows, checked against the torch model."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from onnx import TensorProto, helper

from sslops.artifacts import sha256_file
from sslops.cli import main
from sslops.config import Config
from sslops.models.tabular import load_classifier
from sslops.prepare.dataset import PreparedData
from sslops.shadow.scoring import PredictionLog
from tests.predictions import assert_same_predictions


@pytest.fixture
def rows(stage_artifacts: dict[str, Path], tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """The prepared test split's raw columns as a CSV a user would bring, with an id column."""
    frame = PreparedData(stage_artifacts["prepare"]).test.frame.copy()
    frame.insert(0, "id", [f"r{i:05d}" for i in range(len(frame))])
    path = tmp_path / "new.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main(["predict", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_scores_match_the_torch_model_and_read_back_as_an_incumbent_log(
    stage_artifacts: dict[str, Path], small_config: Config, rows: tuple[Path, pd.DataFrame],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    data, frame = rows
    out = tmp_path / "predictions.csv"
    model = stage_artifacts["export"] / "model.onnx"
    code, printed, _ = _run(capsys, "--model", model, "--data", data, "--out", out,
                            "--id-column", "id")  # fmt: skip
    assert code == 0 and f"{len(frame):,} rows" in printed
    written = pd.read_csv(out, dtype={"row_id": str})
    assert list(written.columns) == ["row_id", "score", "label"]
    assert written["row_id"].tolist() == frame["id"].tolist()
    classifier, _ = load_classifier(stage_artifacts["finetune"], small_config.export.model)
    with torch.no_grad():
        expected = classifier(
            torch.from_numpy(PreparedData(stage_artifacts["prepare"]).test.features)
        )
    np.testing.assert_allclose(written["score"], expected.numpy(), atol=1e-5)
    threshold = small_config.evaluate.threshold
    assert (written["label"] == (written["score"] >= threshold)).all()
    assert 0 < written["label"].sum() < len(written)
    log = PredictionLog(out, threshold)  # what sslops shadow --incumbent reads
    assert np.array_equal(log.table["decision"].to_numpy(), written["label"].to_numpy())
    record = json.loads((tmp_path / "predictions.meta.json").read_text())  # provenance
    assert record["model"]["sha256"] == sha256_file(model) and record["rows"] == len(frame)
    assert record["data"] == [{"path": str(data.resolve()), "sha256": sha256_file(data),
                               "rows": len(frame), "empty_rows_skipped": 0}]  # fmt: skip
    assert record["threshold_from"] == "the model's decision_threshold metadata"
    assert record["label_1_rows"] == written["label"].sum()

    lower = tmp_path / "lower.csv"
    assert (
        _run(capsys, "--model", model, "--data", data, "--out", lower, "--threshold", "0.2")[0] == 0
    )
    relabeled = pd.read_csv(lower)
    assert (relabeled["label"] == (written["score"] >= 0.2)).all()
    assert relabeled["label"].sum() > written["label"].sum()
    assert relabeled["row_id"].iloc[0] == "new:0"  # no id column: '<file stem>:<row>'
    lower_record = json.loads((tmp_path / "lower.meta.json").read_text())
    assert (lower_record["threshold"], lower_record["threshold_from"]) == (0.2, "--threshold")


@pytest.mark.parametrize("chunk_rows", ["7", "20000"])
def test_numeric_row_ids_come_back_exactly_as_written_and_join_an_incumbent_log(
    stage_artifacts: dict[str, Path], small_config: Config, rows: tuple[Path, pd.DataFrame],
    chunk_rows: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Customer numbers: zero-padded, 20 digits, plain; never floats in the output."""
    data, frame = rows
    frame = frame.head(30).copy()
    ids = ["0000002", "12345678901234567890", "12345678901234567891", "1002"]
    frame["id"] = ids + [str(1003 + i) for i in range(len(frame) - len(ids))]
    frame.to_csv(data, index=False)
    model = stage_artifacts["export"] / "model.onnx"
    out = tmp_path / "p.csv"
    code, _, err = _run(capsys, "--model", model, "--data", data, "--out", out, "--id-column",
                        "id", "--chunk-rows", chunk_rows)  # fmt: skip
    assert code == 0, err
    assert pd.read_csv(out, dtype=str)["row_id"].tolist() == frame["id"].tolist()
    # the log written by another system, keyed by the same customer numbers: shadow joins it
    log = PredictionLog(out, small_config.evaluate.threshold)
    from sslops.shadow.scoring import read_batch

    batch = read_batch(data, ["?"], "id", "--data")
    assert (log.score(batch).score == pd.read_csv(out)["score"].to_numpy()).all()
    # an empty id is named, not written as 'nan'
    frame.loc[5, "id"] = ""
    frame.to_csv(data, index=False)
    code, _, err = _run(capsys, "--model", model, "--data", data, "--out", tmp_path / "q.csv",
                        "--id-column", "id", "--chunk-rows", chunk_rows)  # fmt: skip
    assert code == 2 and "data row 6 has no value in row-id column 'id'" in err
    assert not (tmp_path / "q.csv").exists()


def test_values_never_seen_in_training_are_counted_not_kept(
    stage_artifacts: dict[str, Path], rows: tuple[Path, pd.DataFrame], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    data, frame = rows
    frame = frame.head(40).copy()
    frame.loc[:2, "workclass"] = "Space-force"  # 3 rows
    frame.loc[5, "occupation"] = "Astronaut"
    frame.loc[6, "occupation"] = None  # missing: not "unseen"
    frame.to_csv(data, index=False)
    out = tmp_path / "p.csv"
    code, printed, err = _run(capsys, "--model", stage_artifacts["export"] / "model.onnx",
                              "--data", data, "--out", out)  # fmt: skip
    assert code == 0, err
    assert "rows with a value outside the model's levels (unseen or rare in training" in printed
    record = json.loads((tmp_path / "p.meta.json").read_text())
    counted = record["unseen_values"]["rows_by_column"]
    assert (counted["workclass"], counted["occupation"]) == (3, 1)
    assert f"workclass {counted['workclass']}" in printed
    assert "Space-force" not in (tmp_path / "p.meta.json").read_text()  # counts, not values


def test_a_folder_of_batches_and_an_earlier_predictions_file_replaced(
    stage_artifacts: dict[str, Path], rows: tuple[Path, pd.DataFrame], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _, frame = rows
    folder = tmp_path / "batches"
    folder.mkdir()
    frame.iloc[:40].to_csv(folder / "2026-11-01.csv", index=False)
    frame.iloc[40:100].to_csv(folder / "2026-11-02.csv", index=False)
    out = tmp_path / "predictions.csv"
    out.write_text("row_id,score,label\nold:0,0.5,1\n")
    (tmp_path / "predictions.meta.json").write_text('{"predictions": "predictions.csv"}')
    model = stage_artifacts["export"] / "model.onnx"
    code, printed, _ = _run(capsys, "--model", model, "--data", folder, "--out", out)
    assert code == 0 and "100 rows from 2 file(s)" in printed
    ids = pd.read_csv(out)["row_id"].tolist()
    assert ids[0] == "2026-11-01:0" and ids[40] == "2026-11-02:0" and len(ids) == 100
    record = json.loads((tmp_path / "predictions.meta.json").read_text())
    assert record["rows"] == 100 and [d["rows"] for d in record["data"]] == [40, 60]


def _array_model(path: Path) -> Path:
    """An ONNX model shaped like an exported image model: one [batch, C, H, W] input."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 784])
    graph = helper.make_graph([helper.make_node("Flatten", ["input"], ["probabilities"])],
                              "images", [x], [y])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_bad_input_is_one_line_and_nothing_is_written_or_lost(
    stage_artifacts: dict[str, Path], rows: tuple[Path, pd.DataFrame], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    data, frame = rows
    model = stage_artifacts["export"] / "model.onnx"
    out = tmp_path / "predictions.csv"
    no_age = tmp_path / "no_age.csv"
    frame.drop(columns=["age"]).to_csv(no_age, index=False)
    twice = tmp_path / "twice.csv"
    pd.concat([frame.iloc[:3], frame.iloc[:1]]).to_csv(twice, index=False)
    mine = tmp_path / "mine.csv"
    mine.write_text("my,own\n1,2\n")
    huge = tmp_path / "huge.csv"  # finite as a float64, inf in the model's float32
    frame.astype({"age": object}).assign(age=["1e308"] * len(frame)).to_csv(huge, index=False)
    twins = tmp_path / "twins"  # twin.csv and twin.csv.gz: both give row ids twin:0, twin:1...
    twins.mkdir()
    frame.to_csv(twins / "twin.csv", index=False)
    frame.to_csv(twins / "twin.csv.gz", index=False)
    (tmp_path / "notes.meta.json").write_text('{"my": "notes"}\n')
    cases = {
        "missing column 'age'": ["--model", model, "--data", no_age, "--out", out],
        "occurs more than once": ["--model", model, "--data", twice, "--out", out,
                                  "--id-column", "id"],
        "is an input": ["--model", model, "--data", data, "--out", data],
        "not an earlier predictions file": ["--model", model, "--data", data, "--out", mine],
        "not the provenance record": ["--model", model, "--data", data,
                                      "--out", tmp_path / "notes.csv"],
        "an image model reads a pixel CSV": ["--model", _array_model(tmp_path / "img.onnx"),
                                     "--data", data, "--out", out],
        "no such file": ["--model", tmp_path / "nope.onnx", "--data", data, "--out", out],
        "ending in .csv": ["--model", model, "--data", data, "--out", tmp_path / "out.parquet"],
        "between 0 and 1": ["--model", model, "--data", data, "--out", out, "--threshold", "1.5"],
        # the bounds too: at 0 every row would be labelled positive, at 1 only a saturated one
        "--threshold 0.0: expected": ["--model", model, "--data", data, "--out", out,
                                      "--threshold", "0"],
        "--threshold 1.0: expected": ["--model", model, "--data", data, "--out", out,
                                      "--threshold", "1"],
        f"score for row 'huge:0' of {huge} ('age' = 1e+308: beyond float32": [
            "--model", model, "--data", huge, "--out", out],
        "row id 'twin:0' occurs more than once": ["--model", model, "--data", twins,
                                                  "--out", out],
    }  # fmt: skip
    before = {p: p.read_bytes() for p in (data, mine, tmp_path / "notes.meta.json")}
    for expected, argv in cases.items():
        code, printed, err = _run(capsys, *argv)
        assert code == 2 and printed == "", expected
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
        assert not out.exists() and not (tmp_path / "predictions.meta.json").exists(), expected
        assert not (tmp_path / "notes.csv").exists(), expected
    assert all(p.read_bytes() == content for p, content in before.items())
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_rows_stream_in_chunks_with_the_result_of_one_read(
    stage_artifacts: dict[str, Path], rows: tuple[Path, pd.DataFrame], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """--chunk-rows 7: the same rows, ids and decisions as one read, scores to float32
    rounding (tests/predictions.py says why not byte for byte); blank lines counted across
    chunk edges; an error in the last chunk leaves the earlier predictions as they were."""
    data, frame = rows
    model = stage_artifacts["export"] / "model.onnx"
    lines = data.read_text().splitlines()
    blank = "," * (len(frame.columns) - 1)
    holed = tmp_path / "holed.csv"  # blank rows at 5 and 12 (data rows), inside chunks 1 and 2
    holed.write_text("\n".join([*lines[:6], blank, *lines[6:12], blank, *lines[12:]]) + "\n")
    outs = {}
    for name, extra in {"whole": [], "chunked": ["--chunk-rows", "7"]}.items():
        for ids in ("named", "numbered"):
            out = tmp_path / f"{name}-{ids}.csv"
            id_args = ["--id-column", "id"] if ids == "named" else []
            code, printed, _ = _run(capsys, "--model", model, "--data", holed, "--out", out,
                                    *id_args, *extra)  # fmt: skip
            assert code == 0 and "2 empty row(s) skipped" in printed, printed
            outs[name, ids] = out
    for ids in ("named", "numbered"):
        whole, chunked = (outs[name, ids].read_text() for name in ("whole", "chunked"))
        assert_same_predictions(whole, chunked)
    numbered = pd.read_csv(outs["chunked", "numbered"])["row_id"]
    assert len(numbered) == len(frame) and "holed:5" not in set(numbered)
    assert numbered.iloc[5] == "holed:6" and numbered.iloc[-1] == f"holed:{len(frame) + 1}"

    late = frame.astype({"age": object})
    late.loc[len(late) - 1, "age"] = "old"
    bad = tmp_path / "bad.csv"
    late.to_csv(bad, index=False)
    twice = tmp_path / "twice.csv"
    pd.concat([frame, frame.iloc[:1]]).to_csv(twice, index=False)
    out = outs["chunked", "named"]
    before = out.read_bytes()
    for source, expected, id_args in (
        (bad, "non-numeric value in row 'bad:", []),
        (twice, "occurs more than once", ["--id-column", "id"]),
    ):
        code, _, err = _run(capsys, "--model", model, "--data", source, "--out", out,
                            "--chunk-rows", "7", *id_args)  # fmt: skip
        # one error line; a slow machine may also have shown a progress line before it
        lines = [line for line in err.splitlines() if not line.startswith("predict 0/1 ")]
        assert code == 2 and len(lines) == 1 and expected in lines[0], err
        assert out.read_bytes() == before
    code, _, err = _run(capsys, "--model", model, "--data", data, "--out", out, "--chunk-rows", "0")
    assert code == 2 and "--chunk-rows 0: expected a positive number" in err
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_parquet_rows_score_as_their_csv_does_whole_in_chunks_and_in_a_folder(
    stage_artifacts: dict[str, Path], small_config: Config, rows: tuple[Path, pd.DataFrame],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A Parquet file is read as one (its first bytes), whatever data.format says; a folder
    gives its Parquet files with data.format=parquet. Predict once said "is a Parquet file;
    set data.format=parquet" even with data.format=parquet set."""
    from sslops.predict import predict
    from sslops.shadow.scoring import read_batch

    data, frame = rows
    model = stage_artifacts["export"] / "model.onnx"
    frame = frame.assign(id=np.arange(len(frame), dtype=np.int64) * 7 + 3)  # typed ids
    frame = frame.astype({"race": "category"})  # a dictionary-encoded column
    frame.loc[3, "workclass"] = "?"  # a missing marker in a text cell
    frame.to_csv(data, index=False)
    folder = tmp_path / "batches"
    folder.mkdir()
    parquet = folder / "new.parquet"
    frame.to_parquet(parquet, index=False)
    expected = tmp_path / "from_csv.csv"
    code, _, err = _run(capsys, "--model", model, "--data", data, "--out", expected,
                        "--id-column", "id")  # fmt: skip
    assert code == 0, err
    reference = pd.read_csv(expected, dtype={"row_id": str})
    for extra in ([], ["--chunk-rows", "7"]):
        out = tmp_path / "from_parquet.csv"
        code, printed, err = _run(capsys, "--model", model, "--data", parquet, "--out", out,
                                  "--id-column", "id", *extra)  # fmt: skip
        assert code == 0 and f"{len(frame):,} rows" in printed, err
        written = pd.read_csv(out, dtype={"row_id": str})
        ids = [str(i) for i in frame["id"]]
        assert written["row_id"].tolist() == reference["row_id"].tolist() == ids
        np.testing.assert_allclose(written["score"], reference["score"], atol=1e-6)
    batch = read_batch(parquet, ["?"], "id", "--data")  # sslops shadow reads it too
    assert batch.frame.equals(read_batch(data, ["?"], "id", "--data").frame)

    settings = small_config.model_copy(
        update={"data": small_config.data.model_copy(update={"format": "parquet"})}
    )
    (folder / "notes.csv").write_text("not,rows\n1,2\n")  # not a batch when data.format=parquet
    result = predict(model, folder, tmp_path / "folder.csv", settings)
    assert result.rows == len(frame)
    assert pd.read_csv(tmp_path / "folder.csv")["row_id"].iloc[0] == "new:0"


def test_out_dash_writes_the_same_csv_to_stdout_and_nothing_else(
    stage_artifacts: dict[str, Path], rows: tuple[Path, pd.DataFrame], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`sslops predict ... --out - | gzip > p.csv.gz`: stdout holds the CSV a file would,
    byte for byte; the summary goes to stderr; no file named '-' and no record. An error
    found in a late chunk leaves stdout empty, as it leaves no file."""
    data, frame = rows
    model = stage_artifacts["export"] / "model.onnx"
    out = tmp_path / "p.csv"
    chunks = ["--id-column", "id", "--chunk-rows", "7"]  # the same chunks: the same bytes
    assert _run(capsys, "--model", model, "--data", data, "--out", out, *chunks)[0] == 0
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, printed, err = _run(capsys, "--model", model, "--data", data, "--out", "-", *chunks)
    assert code == 0 and printed.encode("utf-8") == out.read_bytes()
    assert err.splitlines()[-1].startswith(f"predict: {len(frame):,} rows from 1 file(s)")
    assert err.splitlines()[-1].endswith(
        "wrote them to stdout (no record: give --out FILE.csv for one)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before

    late = frame.astype({"age": object})
    late.loc[len(late) - 1, "age"] = "old"
    late.to_csv(bad := tmp_path / "bad.csv", index=False)
    code, printed, err = _run(capsys, "--model", model, "--data", bad, "--out", "-",
                              "--chunk-rows", "7")  # fmt: skip
    assert code == 2 and printed == "" and "non-numeric value in row 'bad:" in err


def test_data_dash_reads_the_rows_from_stdin(
    stage_artifacts: dict[str, Path], rows: tuple[Path, pd.DataFrame], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`zcat rows.csv.gz | sslops predict --data - ...`: the scores of the file itself;
    rows numbered 'stdin:<row>' without --id-column; the record names the input '-'."""
    data, frame = rows
    model = stage_artifacts["export"] / "model.onnx"
    from_file, from_stdin = tmp_path / "file.csv", tmp_path / "stdin.csv"
    assert _run(capsys, "--model", model, "--data", data, "--out", from_file)[0] == 0
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data.read_bytes())))
    code, _, err = _run(capsys, "--model", model, "--data", "-", "--out", from_stdin)
    assert code == 0, err
    piped, direct = pd.read_csv(from_stdin), pd.read_csv(from_file)
    assert piped["row_id"].tolist() == [f"stdin:{i}" for i in range(len(frame))]
    assert piped[["score", "label"]].equals(direct[["score", "label"]])
    record = json.loads((tmp_path / "stdin.meta.json").read_text())
    assert record["data"] == [{"path": "-", "sha256": sha256_file(data), "rows": len(frame),
                               "empty_rows_skipped": 0}]  # fmt: skip


def test_bad_rows_from_stdin_are_named_as_given_not_by_the_spool_file(
    stage_artifacts: dict[str, Path], rows: tuple[Path, pd.DataFrame], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`... | sslops predict --data -` with a column missing: the error names the input as
    '- (stdin)', not the temporary file it was spooled to (deleted by the time it is read)."""
    _, frame = rows
    model = stage_artifacts["export"] / "model.onnx"
    short = frame.drop(columns="age").to_csv(index=False).encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(short)))
    code, printed, err = _run(capsys, "--model", model, "--data", "-", "--out", "-")
    assert code == 2 and printed == "", err
    assert err.startswith("error: --data - (stdin): missing column"), err
    assert "sslops-stdin-" not in err, err


def test_a_reader_that_stops_early_ends_predict_quietly_with_141(
    stage_artifacts: dict[str, Path], rows: tuple[Path, pd.DataFrame]
) -> None:
    """`sslops predict ... --out - | head -1`: the pipe's reader is gone before the rows
    come; predict ends as `cat` would (status 128 + SIGPIPE), with no traceback."""
    data, _ = rows
    model = stage_artifacts["export"] / "model.onnx"
    with subprocess.Popen(
        [sys.executable, "-m", "sslops", "predict", "--model", str(model), "--data", str(data),
         "--out", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # the reader is gone
        err = process.stderr.read()
        assert process.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "Broken pipe" not in err and "error" not in err, err
