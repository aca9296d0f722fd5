"""The export's parity gate (``onnx_parity``, ``require_parity``) on a one-node ONNX model.

tests/test_export.py checks that a real export passes the gate; these check that the gate
fails where it must: at a difference just above the allowed one, in one batch size only, or
at a flipped label with no difference to speak of. The model passes its input through, so
what onnxruntime returns is known exactly and the torch side is the ``expected`` given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sslops.errors import ArtifactError
from sslops.export.stage import PARITY_BATCHES, onnx_parity, require_parity


@pytest.fixture(scope="module")
def passthrough(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """probability = x, float32 [batch]."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["probability"])],
        "passthrough",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path_factory.mktemp("parity") / "passthrough.onnx"
    onnx.save(model, str(path))
    return path


def _parity(passthrough: Path, x: np.ndarray, expected: np.ndarray, threshold: float = 0.5) -> dict:
    return onnx_parity(passthrough, {"x": x.astype(np.float32)}, expected, threshold)


def test_parity_measures_the_whole_split_and_each_batch_against_its_own_rows(
    passthrough: Path,
) -> None:
    rows = 300
    x = np.full(rows, 0.25, dtype=np.float32)
    expected = x.astype(np.float64).copy()
    expected[3] += 0.01  # inside batches 7 and 256, not batch 1
    expected[100] += 0.02  # inside batch 256 only
    expected[299] += 0.04  # outside every batch: the whole split only
    parity = _parity(passthrough, x, expected)
    assert parity["rows"] == rows
    assert parity["max_abs_diff"] == pytest.approx(0.04)
    assert set(parity["batch_max_abs_diff"]) == {str(s) for s in PARITY_BATCHES}
    assert parity["batch_max_abs_diff"]["1"] == 0.0
    assert parity["batch_max_abs_diff"]["7"] == pytest.approx(0.01)
    assert parity["batch_max_abs_diff"]["256"] == pytest.approx(0.02)
    assert parity["labels_identical"]
    assert np.array_equal(parity["onnx"], x)


def test_a_split_smaller_than_a_batch_size_is_measured_at_its_own_size(
    passthrough: Path,
) -> None:
    x = np.linspace(0.1, 0.9, 5, dtype=np.float32)
    parity = _parity(passthrough, x, x.astype(np.float64))
    assert parity["batch_max_abs_diff"] == {"1": 0.0, "5": 0.0}
    assert parity["max_abs_diff"] == 0.0


def test_a_score_at_the_threshold_is_a_positive_decision_on_both_sides(
    passthrough: Path,
) -> None:
    """got == threshold and expected just above: both decide positive (>=), labels agree;
    with expected just below, the label flips."""
    x = np.array([0.5, 0.2], dtype=np.float32)
    assert _parity(passthrough, x, np.array([0.5 + 1e-7, 0.2]))["labels_identical"]
    assert not _parity(passthrough, x, np.array([0.5 - 1e-7, 0.2]))["labels_identical"]


def _report(whole: float, batches: dict[str, float], labels: bool = True) -> dict:
    return {"max_abs_diff": whole, "batch_max_abs_diff": batches, "labels_identical": labels}


def test_the_gate_allows_a_difference_up_to_the_limit_and_not_beyond() -> None:
    require_parity(_report(1e-4, {"1": 1e-4, "7": 0.0, "256": 0.0}), 1e-4)
    with pytest.raises(ArtifactError, match=r"max \|onnx - torch\| = 1\.01e-04"):
        require_parity(_report(1.01e-4, {"1": 0.0, "7": 0.0, "256": 0.0}), 1e-4)


@pytest.mark.parametrize("size", ["1", "7", "256"])
def test_the_gate_fails_on_a_difference_in_one_batch_size_only(size: str) -> None:
    batches = {"1": 0.0, "7": 0.0, "256": 0.0} | {size: 5e-3}
    with pytest.raises(ArtifactError, match=r"= 5\.00e-03 \(allowed 1e-04\)"):
        require_parity(_report(0.0, batches), 1e-4)


def test_the_gate_fails_on_a_flipped_label_whatever_the_difference() -> None:
    with pytest.raises(ArtifactError, match="labels identical: False"):
        require_parity(_report(0.0, {"1": 0.0, "7": 0.0, "256": 0.0}, labels=False), 1e-4)


@pytest.mark.parametrize("row", [0, 299])  # inside every batch; outside every batch
def test_the_gate_fails_on_a_score_that_is_not_finite(passthrough: Path, row: int) -> None:
    """A NaN score on both sides (a broken model) passed: NaN > allowed is False, and the
    labels agree (NaN >= threshold is False on both). Found by the numerics review."""
    x = np.full(300, 0.25, dtype=np.float32)
    x[row] = np.nan
    parity = _parity(passthrough, x, x.astype(np.float64))
    assert parity["labels_identical"]
    with pytest.raises(ArtifactError, match=r"= nan \(a score is NaN or inf: the model is broken"):
        require_parity(parity, 1e-4)
