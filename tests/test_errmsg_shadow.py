"""`sslops shadow --label-efficiency` with a file that is not evaluate's curve (the errmsg
review): a row without its numbers ended the run in a KeyError or ValueError traceback after
every batch was scored, and a curve without SSL or baseline points named neither file nor
what was expected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sslops.cli import main
from sslops.shadow.incumbent import logistic_regression_onnx


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "z": rng.normal(size=200)})
    y = (frame["x"] + rng.normal(size=200) > 0).to_numpy().astype(int)
    frame.assign(row_id=[f"r{i}" for i in range(200)], label=y).to_csv(root / "day.csv",
                                                                        index=False)  # fmt: skip
    return {
        "candidate": logistic_regression_onnx(frame, y, ["x", "z"], root / "candidate.onnx"),
        "incumbent": logistic_regression_onnx(frame, y, ["x"], root / "incumbent.onnx"),
        "data": root / "day.csv",
    }


@pytest.mark.parametrize(
    ("curve", "said"),
    [
        ({"rows": [{"labels": 100}], "mean": {}},
         "row 1 of 'rows' has no numeric 'fraction' and 'labels'; expected sslops evaluate's "
         "label_efficiency.json"),
        ({"rows": [{"fraction": 0.1, "labels": "many"}], "mean": {}},
         "row 1 of 'rows' has no numeric 'fraction' and 'labels'"),
        ({"rows": [], "mean": [0.8]}, "'mean' is not model -> label fraction -> ROC AUC"),
        ({"rows": [{"fraction": 0.1, "labels": 100}], "mean": {"ssl_linear_probe": {"0.1": 0.8}}},
         "has no SSL or no supervised-baseline points: expected the mean ROC AUC of an SSL "
         "model (ssl_linear_probe, "),
    ],
)  # fmt: skip
def test_a_curve_file_that_is_not_evaluates_is_one_line_naming_what_was_expected(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    curve: dict[str, Any], said: str,
) -> None:  # fmt: skip
    file, out = tmp_path / "label_efficiency.json", tmp_path / "shadow"
    file.write_text(json.dumps(curve))
    code = main(["shadow", "--candidate", str(models["candidate"]),
                 "--incumbent", str(models["incumbent"]), "--data", str(models["data"]),
                 "--out", str(out), "--label-efficiency", str(file)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert said in err and "--label-efficiency" in err
    assert not out.exists()


def _shadow_error(capsys: pytest.CaptureFixture[str], out: Path, *args: str) -> str:
    code = main(["shadow", *args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not out.exists()
    return err


def test_a_reference_batch_without_a_model_column_says_which_columns_were_expected(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = tmp_path / "reference.csv"
    pd.read_csv(models["data"]).drop(columns="z").to_csv(reference, index=False)
    err = _shadow_error(capsys, tmp_path / "shadow", "--candidate", str(models["candidate"]),
                        "--incumbent", str(models["incumbent"]), "--data", str(models["data"]),
                        "--reference", str(reference))  # fmt: skip
    assert err.endswith(f"--reference {reference}: missing column 'z'; expected every column "
                        "the models read (x, z), as in the batches")  # fmt: skip


def test_a_reference_without_a_model_column_is_refused_before_any_batch_is_scored(
    models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Left by the errmsg review: the check ran after every batch was scored (minutes on a
    month of batches, for an error known from the reference's header)."""
    from sslops.shadow.scoring import OnnxClassifier

    scored: list[str] = []
    real = OnnxClassifier.score
    monkeypatch.setattr(OnnxClassifier, "score",
                        lambda self, batch: scored.append(batch.name) or real(self, batch))  # fmt: skip
    reference = tmp_path / "reference.csv"
    pd.read_csv(models["data"]).drop(columns="z").to_csv(reference, index=False)
    err = _shadow_error(capsys, tmp_path / "shadow", "--candidate", str(models["candidate"]),
                        "--incumbent", str(models["incumbent"]), "--data", str(models["data"]),
                        "--reference", str(reference))  # fmt: skip
    assert "missing column 'z'" in err
    assert scored == []


def test_a_model_input_of_a_type_sslops_cannot_feed_says_which_types_it_can(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx
    from onnx import TensorProto, helper

    flags = helper.make_tensor_value_info("x", TensorProto.BOOL, [None, 1])
    score = helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["p"], to=TensorProto.FLOAT)],
                              "boolean_input", [flags], [score])  # fmt: skip
    incumbent = tmp_path / "boolean.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), incumbent)
    err = _shadow_error(capsys, tmp_path / "shadow", "--candidate", str(models["candidate"]),
                        "--incumbent", str(incumbent), "--data", str(models["data"]))  # fmt: skip
    assert err.endswith(f"--incumbent {incumbent}: input 'x' has type tensor(bool); expected a "
                        "model whose inputs are one column each, typed tensor(float), "
                        "tensor(double), tensor(int64) or tensor(string), as sslops export "
                        "writes")  # fmt: skip
