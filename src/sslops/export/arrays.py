"""Export for images and series: the classifier to ONNX with input normalization inside,
parity-checked, and a static QDQ int8 copy.

``model.onnx`` takes ``input``: images as prepared, uint8-range float32 pixels
``[batch, C, H, W]``; series raw float32 ``[batch, 1, L]``; it returns
``probabilities`` ``[batch, K]`` (softmax over the classes in ``metadata_props``).
Parity is measured with onnxruntime against the torch model over the whole test split
(max abs difference, identical argmax labels) and at batch sizes 1, 7 and 256.

``model.int8.onnx``: static quantization in QDQ format (onnxruntime
``quantize_static``): int8 weights per output channel and int8 activations whose
ranges come from a calibration pass over training samples (MinMax), so the
convolutions of the CNN run as int8 — what issue 5 asks of CNNs (dynamic
quantization covers only MatMul/Gemm). The accuracy change on the test split is reported.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from sslops import __version__
from sslops.artifacts import read_meta, sha256_file, write_artifact, write_json
from sslops.config import Config
from sslops.errors import ArtifactError
from sslops.export.quantize import _quiet_root_logger, session
from sslops.export.stage import (
    INT8_FILE,
    ONNX_FILE,
    PARITY_BATCHES,
    require_parity,
    save_checked,
    training_data_sha256,
)
from sslops.models.arrays import ArrayClassifier, load_array_classifier, model_input
from sslops.prepare.dataset import PreparedData

INPUT, OUTPUT = "input", "probabilities"
QDQ_METHOD = (
    "static int8, QDQ format (onnxruntime quantize_static): weights int8 per channel, "
    "activations int8 calibrated (MinMax) on training samples"
)
CALIBRATION_ROWS, CALIBRATION_BATCH = 256, 32


def export_array_onnx(
    model: ArrayClassifier, example: torch.Tensor, path: Path, opset: int
) -> None:
    batch = torch.export.Dim("batch")
    # The exporter reports progress on stdout; keep the stage's output to its own lines.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT],
            output_names=[OUTPUT], dynamic_shapes={"x": {0: batch}}, external_data=False,
        )  # fmt: skip
    assert program is not None
    onnx.save(program.model_proto, str(path))


class _Calibration(CalibrationDataReader):
    def __init__(self, x: np.ndarray) -> None:
        self._batches = iter(
            [{INPUT: x[i : i + CALIBRATION_BATCH]} for i in range(0, len(x), CALIBRATION_BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_qdq(fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as work, _quiet_root_logger():
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared), str(int8_path), _Calibration(calibration),
            quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
            activation_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Gemm", "MatMul"],
        )  # fmt: skip


def _parity(path: Path, x: np.ndarray, expected: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    sess = session(path)
    got = sess.run(None, {INPUT: x})[0]
    batches = {}
    for size in PARITY_BATCHES:
        size = min(size, len(x))
        part = sess.run(None, {INPUT: x[:size]})[0]
        if part.shape != (size, expected.shape[1]):
            raise ArtifactError(
                f"ONNX output for batch {size} has shape {part.shape}, expected "
                f"({size}, {expected.shape[1]})"
            )
        batches[str(size)] = float(np.max(np.abs(part - expected[:size])))
    return {
        "rows": len(x),
        "max_abs_diff": float(np.max(np.abs(got - expected))),
        "labels_identical": bool(np.array_equal(got.argmax(1), expected.argmax(1))),
        "batch_max_abs_diff": batches,
    }, got


def export_arrays(cfg: Config, prepared_dir: Path, finetuned_dir: Path, out_dir: Path) -> Path:
    """The export stage for images and series; returns the artifact directory."""
    data = PreparedData(prepared_dir)
    finetune_meta = read_meta(finetuned_dir, "finetune")
    name = cfg.export.model
    model, _ = load_array_classifier(finetuned_dir, name)
    test = data.test
    x = model_input(data.modality, test.features)
    with torch.inference_mode():
        expected = torch.cat([model(x[i : i + 256]) for i in range(0, len(x), 256)]).numpy()
    shape = ["batch", *x.shape[1:]]
    inputs = {"prepared": prepared_dir, "finetuned": finetuned_dir}
    with write_artifact(out_dir, "export", cfg.model_dump(mode="json"), inputs) as tmp:
        path = tmp / ONNX_FILE
        export_array_onnx(model, x[:2], path, cfg.export.opset)
        proto = onnx.load(str(path))
        classes = [str(c) for c in data.schema["classes"]]
        described = (
            "uint8-range pixels as float32 [batch, C, H, W] (x / 255 and mean/std inside)"
            if data.modality == "image" else "raw series as float32 [batch, 1, L] (per-series "
            "z-score inside)"
        )  # fmt: skip
        groups = ", ".join(cfg.data.sensitive) or "the modality's default attribute"
        source = (
            f"read from the records file {Path(cfg.data.attributes_file).name}"
            if cfg.data.attributes_file
            else "derived from the input"
        )
        metadata = {
            "sslops_version": __version__,
            "model": name,
            "decision_rule": "argmax of probabilities",
            "classes": json.dumps(classes),
            "sensitive_attribute_policy": f"groups ({groups}) are {source} for evaluation "
            "only; not a separate model input",
            "training_data_sha256": training_data_sha256(data.meta),
            "finetune_weights_sha256": finetune_meta["files"][f"{name}.safetensors"],
            "backbone_weights_sha256": finetune_meta["files"]["backbone.safetensors"],
            "input": json.dumps(
                {"name": INPUT, "shape": shape, "dtype": "float32", "meaning": described}
            ),
        }
        if data.modality == "timeseries":  # predict brings new series to the length as prepare
            metadata["series_length_policy"] = str(
                data.prepared_with("series_length_policy", cfg.prepare.series_length_policy)
            )
        save_checked(proto, path, metadata)
        feed = x.numpy()
        parity, fp32 = _parity(path, feed, expected)
        require_parity(parity, cfg.export.max_abs_diff)
        report: dict[str, Any] = {
            "model": name,
            "opset": cfg.export.opset,
            "input": {"name": INPUT, "shape": shape, "dtype": "float32", "meaning": described},
            "inputs_description": described,
            "output": {
                "name": OUTPUT,
                "shape": ["batch", len(classes)],
                "dtype": "float32",
                "classes": classes,
            },
            "metadata": {k: v for k, v in metadata.items() if k != "input"},
            "parity": parity,
            "onnx_sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "quantization": None,
        }
        if cfg.export.quantize != "none":
            rows = np.random.default_rng(cfg.seed).permutation(len(data.train.target))
            calibration = model_input(data.modality, data.train.features[np.sort(
                rows[:CALIBRATION_ROWS])]).numpy()  # fmt: skip
            quantize_qdq(path, tmp / INT8_FILE, calibration)
            int8 = session(tmp / INT8_FILE).run(None, {INPUT: feed})[0]
            quantized = onnx.load(str(tmp / INT8_FILE))
            acc32 = float(np.mean(fp32.argmax(1) == test.target))
            acc8 = float(np.mean(int8.argmax(1) == test.target))
            report["quantization"] = {
                "file": INT8_FILE,
                "method": QDQ_METHOD,
                "calibration_rows": len(calibration),
                "quantize_linear_nodes": sum(
                    n.op_type == "QuantizeLinear" for n in quantized.graph.node
                ),
                "sha256": sha256_file(tmp / INT8_FILE),
                "bytes": (tmp / INT8_FILE).stat().st_size,
                "rows": len(test.target),
                "accuracy_fp32": acc32,
                "accuracy_int8": acc8,
                "accuracy_change_points": round(100 * (acc8 - acc32), 4),
                "label_agreement": float(np.mean(fp32.argmax(1) == int8.argmax(1))),
                "max_abs_diff_vs_fp32": float(np.max(np.abs(int8 - fp32))),
            }
        write_json(tmp / "export.json", report)
    return Path(out_dir)
