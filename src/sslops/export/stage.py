"""Export: the selected classifier (encoder + head) to ONNX, checked against torch.

The graph takes the encoded feature matrix ``features`` (float32, dynamic batch)
and returns ``probability`` of the positive class. Parity is measured with
onnxruntime over the whole test split: the maximum absolute difference of the
probabilities and whether every predicted label is identical.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from sslops import __version__
from sslops.artifacts import read_meta, sha256_file, write_artifact
from sslops.config import Config
from sslops.errors import ArtifactError
from sslops.models.tabular import TabularClassifier, load_classifier
from sslops.prepare.dataset import PreparedData

ONNX_FILE = "model.onnx"


def _to_onnx(model: TabularClassifier, n_features: int, path: Path, opset: int) -> None:
    example = torch.zeros(2, n_features)
    batch = torch.export.Dim("batch")
    # The exporter reports progress on stdout; keep the stage's output to its own lines.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["features"],
            output_names=["probability"],
            dynamic_shapes={"x": {0: batch}},
            external_data=False,
        )
    assert program is not None
    program.save(str(path), external_data=False)


def onnx_parity(
    model: TabularClassifier, path: Path, features: np.ndarray, threshold: float
) -> dict[str, Any]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: features})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(features)).numpy()
    return {
        "rows": len(features),
        "max_abs_diff": float(np.max(np.abs(got - expected))) if len(features) else 0.0,
        "labels_identical": bool(np.array_equal(got >= threshold, expected >= threshold)),
    }


def export(cfg: Config, prepared_dir: Path, finetuned_dir: Path, out_dir: Path) -> Path:
    """Run the export stage; returns the artifact directory."""
    data = PreparedData(prepared_dir)
    finetune_meta = read_meta(finetuned_dir, "finetune")
    name = cfg.export.model
    model, arch = load_classifier(finetuned_dir, name)
    threshold = float(arch["threshold"])
    features = data.test.features
    inputs = {"prepared": prepared_dir, "finetuned": finetuned_dir}
    with write_artifact(out_dir, "export", cfg.model_dump(mode="json"), inputs) as tmp:
        path = tmp / ONNX_FILE
        _to_onnx(model, features.shape[1], path, cfg.export.opset)
        proto = onnx.load(str(path))
        metadata = {
            "sslops_version": __version__,
            "model": name,
            "decision_threshold": str(threshold),
            "sensitive_attribute_policy": "not an input; used only in training and evaluation",
            "finetune_weights_sha256": finetune_meta["files"][f"{name}.safetensors"],
            "feature_names": json.dumps(data.schema["encoded_features"]),
        }
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(path))
        parity = onnx_parity(model, path, features, threshold)
        if parity["max_abs_diff"] > cfg.export.max_abs_diff or not parity["labels_identical"]:
            raise ArtifactError(
                f"ONNX parity failed: max |onnx - torch| = {parity['max_abs_diff']:.2e} "
                f"(allowed {cfg.export.max_abs_diff:.0e}), labels identical: {parity['labels_identical']}"
            )
        report = {
            "model": name,
            "opset": cfg.export.opset,
            "input": {
                "name": "features",
                "shape": ["batch", features.shape[1]],
                "dtype": "float32",
            },
            "output": {"name": "probability", "shape": ["batch"], "dtype": "float32"},
            "parity": parity,
            "onnx_sha256": sha256_file(path),
            "bytes": path.stat().st_size,
        }
        (tmp / "export.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return Path(out_dir)
