"""Export: the selected classifier, preprocessing included, to ONNX; parity-checked; int8 copy.

``model.onnx`` takes one input per raw feature column (see :mod:`sslops.export.graph`)
and returns ``probability`` of the positive class (float32 ``[batch]``). Parity is
measured with onnxruntime against the torch model on the encoded features (what the
evaluate stage scores) over the whole test split, and again at batch sizes 1, 7 and
256: the maximum absolute difference of the probabilities and whether every
predicted label is identical. ``model.int8.onnx`` is its dynamic-int8 quantization,
with the accuracy change on the test split.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from sslops import __version__
from sslops.artifacts import (
    check_lineage,
    read_meta,
    sha256_file,
    timed_stage,
    write_artifact,
    write_json,
)
from sslops.config import Config
from sslops.data.encoding import MISSING, OTHER
from sslops.errors import ArtifactError
from sslops.export.graph import OUTPUT, export_raw_column_onnx, raw_inputs
from sslops.export.quantize import quantization_report, quantize_int8, session
from sslops.models.tabular import load_classifier
from sslops.optim import callers_generators
from sslops.prepare.dataset import PreparedData, check_same_data

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
PARITY_BATCHES = (1, 7, 256)
LONG_METADATA = {"inputs", "preprocessing", "feature_names"}  # export.json has them whole


def training_data_sha256(prepare_meta: dict[str, Any]) -> str:
    """sha256 of the raw training file (of the sorted file hashes when it has several shards)."""
    hashes = sorted(
        v["sha256"]
        for k, v in prepare_meta.get("sources", {}).items()
        if k.startswith("data.train")
    )
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def input_schema(data: PreparedData) -> list[dict[str, Any]]:
    """Each graph input; a categorical one with the levels the graph holds (any other value
    is scored as ``__other__``), which a service needs for the case rule of the spec."""
    enc = data.encoding
    numeric: list[dict[str, Any]] = [
        {"name": c.name, "dtype": "float32", "missing": "NaN"} for c in enc.numeric
    ]
    categorical = [
        {"name": c.name, "dtype": "string", "missing": "empty string",
         "levels": [v for v in c.categories if v not in (MISSING, OTHER)]}
        for c in enc.categorical
    ]  # fmt: skip
    return numeric + categorical


def preprocessing_spec(cfg: Config, data: PreparedData) -> dict[str, Any]:
    """What a caller does to a raw cell before it is a graph input, as ``sslops predict``
    does it (:func:`sslops.data.canonicalize.canonicalize`, then
    :class:`sslops.shadow.scoring.OnnxClassifier`): shipped in the model's metadata so that
    a service outside sslops (onnxruntime in Java, C#, Triton) feeds what predict feeds.
    Imputation, scaling, one-hot and unseen levels are inside the graph."""
    casefold = bool(data.prepared_with("casefold_categories", cfg.prepare.casefold_categories))
    return {
        "missing_markers": list(cfg.data.na_values),
        "text": "Unicode NFKC; every run of whitespace replaced by one space; leading and "
        "trailing whitespace removed. A cell that is then empty, or equal to a missing "
        "marker (itself so normalized), is missing",
        "numeric_inputs": "float32 [batch]: the text as a decimal number (digits with an "
        "optional sign, point and exponent: 42, -1.5, 3e2), cast from float64; missing, "
        "and inf or infinity in any case and with any sign, as NaN (the graph imputes the "
        "training median); any other text is not a number: refuse the row",
        "categorical_inputs": "string [batch]: the normalized text as written (a code "
        '02134 stays 02134); missing as "". Values outside the levels the graph holds '
        "are scored as the __other__ level, inside the graph"
        + (
            "; first, a value that is not a level but equals exactly one level when both "
            "are lower-cased (private, PRIVATE for Private) is that level, as training "
            "merged spellings that differ only in case (case_insensitive_levels; the levels "
            "are in the metadata's inputs)"
            if casefold
            else ""
        ),
        "case_insensitive_levels": casefold,
        "inputs": "one graph input per column, fed by name (order does not matter); every "
        "input the same batch length; a batch of 0 rows gives 0 probabilities",
        "output": f"{OUTPUT} float32 [batch]: P({data.schema['label']} = "
        f"{data.schema['positive']}); the decision is {OUTPUT} >= decision_threshold",
    }


def onnx_parity(
    path: Path, feed: dict[str, np.ndarray], expected: np.ndarray, threshold: float
) -> dict[str, Any]:
    """onnxruntime vs the torch probabilities over all rows, then at each of PARITY_BATCHES."""
    sess = session(path)
    got = sess.run(None, feed)[0]
    rows = len(expected)
    batches = {}
    for size in PARITY_BATCHES:
        size = min(size, rows)
        part = sess.run(None, {k: v[:size] for k, v in feed.items()})[0]
        if part.shape != (size,):
            raise ArtifactError(
                f"ONNX output for batch {size} has shape {part.shape}, expected ({size},)"
            )
        batches[str(size)] = float(np.max(np.abs(part - expected[:size]))) if size else 0.0
    return {
        "rows": rows,
        "max_abs_diff": float(np.max(np.abs(got - expected))) if rows else 0.0,
        "labels_identical": bool(np.array_equal(got >= threshold, expected >= threshold)),
        "batch_max_abs_diff": batches,
        "onnx": got,
    }


_EXPORTER_DEBUG = ("pkg.torch.onnx.", "namespace")


def strip_exporter_debug(nodes: Iterable[onnx.NodeProto]) -> None:
    """Drop what the torch exporter records per node for debugging (its source stack traces
    and FX names, with absolute paths of the machine that exported): a model that is filed
    and shipped carries no paths of a workstation. Subgraphs too."""
    for node in nodes:
        kept = [p for p in node.metadata_props if not p.key.startswith(_EXPORTER_DEBUG)]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
        node.doc_string = ""
        for attribute in node.attribute:
            for graph in [*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs]:
                strip_exporter_debug(graph.node)


def save_checked(proto: onnx.ModelProto, path: Path, metadata: dict[str, str]) -> None:
    """Drop the exporter's debug records, stamp the model as sslops' at the lowest IR
    version its opsets allow, add ``metadata`` to ``metadata_props``, run the full ONNX
    checker, save to ``path``.

    The torch exporter stamps the IR version of the onnx package that ran it (10 with
    onnx 1.16+), which onnxruntime before 1.18 refuses to load ("Unsupported model IR
    version") although an opset-18 graph needs only IR 8 (onnxruntime 1.14+); the
    per-tensor metadata the newer IR allows holds exporter debug records only, dropped
    here. The int8 copies are quantized from this file and keep its IR version."""
    strip_exporter_debug(proto.graph.node)
    for function in proto.functions:
        strip_exporter_debug(function.node)
    graph = proto.graph
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        del value.metadata_props[:]
    needed = onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    proto.ir_version = min(proto.ir_version, needed)
    proto.producer_name, proto.producer_version = "sslops", __version__
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def require_parity(parity: dict[str, Any], allowed: float) -> None:
    """Fail the export when any batch differs from torch by more than ``allowed`` or a label flips."""
    measured = [parity["max_abs_diff"], *parity["batch_max_abs_diff"].values()]
    # NaN (a score not finite in torch or ONNX) fails too: NaN > allowed is False, and
    # max() kept or dropped a NaN by where it stood in the list
    worst = math.nan if any(math.isnan(d) for d in measured) else max(measured)
    if not worst <= allowed or not parity["labels_identical"]:
        said = " (a score is NaN or inf: the model is broken)" if math.isnan(worst) else ""
        raise ArtifactError(
            f"ONNX parity failed: max |onnx - torch| = {worst:.2e}{said} "
            f"(allowed {allowed:.0e}), labels identical: {parity['labels_identical']}"
        )


def _sensitive_policy(cfg: Config) -> str:
    columns = ", ".join(cfg.data.sensitive)
    if cfg.prepare.sensitive_as_features:
        return f"model inputs ({columns}); fairness assessed per group on the test split"
    return f"not inputs ({columns}); used only in training and evaluation"


@callers_generators()  # the modules built to load weights into draw from them
@timed_stage("export")
def export(cfg: Config, prepared_dir: Path, finetuned_dir: Path, out_dir: Path) -> Path:
    """Run the export stage; returns the artifact directory."""
    check_lineage(prepared_dir, finetuned_dir)
    check_same_data(cfg, prepared_dir)
    if cfg.modality != "tabular":  # images and series: sslops.export.arrays
        from sslops.export.arrays import export_arrays

        return export_arrays(cfg, prepared_dir, finetuned_dir, out_dir)
    data = PreparedData(prepared_dir)
    finetune_meta = read_meta(finetuned_dir, "finetune")
    name = cfg.export.model
    classifier, arch = load_classifier(finetuned_dir, name)
    threshold = float(arch["threshold"])
    test = data.test
    feed = raw_inputs(data.encoding, test.frame)
    with torch.no_grad():
        expected = classifier(torch.from_numpy(test.features)).numpy()
    inputs = {"prepared": prepared_dir, "finetuned": finetuned_dir}
    with write_artifact(out_dir, "export", cfg.model_dump(mode="json"), inputs) as tmp:
        path = tmp / ONNX_FILE
        export_raw_column_onnx(data.encoding, classifier, path, cfg.export.opset)
        proto = onnx.load(str(path))
        schema = input_schema(data)
        preprocessing = preprocessing_spec(cfg, data)
        metadata = {
            "sslops_version": __version__,
            "model": name,
            "decision_threshold": str(threshold),
            "sensitive_attribute_policy": _sensitive_policy(cfg),
            "training_data_sha256": training_data_sha256(data.meta),
            "finetune_weights_sha256": finetune_meta["files"][f"{name}.safetensors"],
            "label": str(data.schema["label"]),
            "positive_class": json.dumps(data.schema["positive"]),
            "inputs": json.dumps(schema),
            "preprocessing": json.dumps(preprocessing),
            "feature_names": json.dumps(data.schema["encoded_features"]),
        }
        save_checked(proto, path, metadata)
        parity = onnx_parity(path, feed, expected, threshold)
        fp32 = parity.pop("onnx")
        require_parity(parity, cfg.export.max_abs_diff)
        report: dict[str, Any] = {
            "model": name,
            "opset": cfg.export.opset,
            "inputs": schema,
            "output": {"name": OUTPUT, "shape": ["batch"], "dtype": "float32"},
            "preprocessing": preprocessing,
            "metadata": {k: v for k, v in metadata.items() if k not in LONG_METADATA},
            "parity": parity,
            "onnx_sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "quantization": None,
        }
        if cfg.export.quantize == "dynamic_int8":
            quantize_int8(path, tmp / INT8_FILE)
            int8 = session(tmp / INT8_FILE).run(None, feed)[0]
            report["quantization"] = {
                "file": INT8_FILE,
                "sha256": sha256_file(tmp / INT8_FILE),
                "bytes": (tmp / INT8_FILE).stat().st_size,
                **quantization_report(fp32, int8, test.target, threshold),
            }
        write_json(tmp / "export.json", report)
    return Path(out_dir)
