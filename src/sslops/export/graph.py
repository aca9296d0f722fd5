"""The ONNX graph of the whole inference path: raw columns in, probability out.

Serving needs no Python: the fitted :class:`TabularEncoding` (median imputation,
standardization, one-hot with a missing and an "other" level) is part of the graph.
It is built in two pieces that are merged into one model:

- a front end written with ``onnx.helper``: one graph input per raw column (numeric
  columns ``float32 [batch]`` with NaN for missing; categorical columns
  ``string [batch]`` with ``""`` for missing), the string-to-level lookup
  (``ai.onnx.ml`` ``LabelEncoder``; unseen values map to the "other" level) and the
  stacking into a numeric matrix and a code matrix. Strings are not torch tensors,
  which is why this part is not exported from torch;
- :class:`RawColumnModel`, exported with the dynamo exporter: imputation, scaling,
  one-hot and the classifier, from the numeric matrix and the codes.

A table without numeric (or without categorical) feature columns has no such graph inputs
and no numeric matrix (or code matrix) between the two pieces.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import torch
from onnx import TensorProto, helper
from torch import nn

from sslops.data.canonicalize import cell_texts
from sslops.data.encoding import MISSING, OTHER, TabularEncoding
from sslops.errors import DataError
from sslops.models.tabular import TabularClassifier

NUMERIC, CODES, OUTPUT = "numeric", "codes", "probability"
ML_OPSET = 3  # LabelEncoder-2: string keys, int64 values, default_int64


class RawColumnModel(nn.Module):
    """Encoding + classifier on ``numeric`` (float32, NaN = missing) and ``codes`` (int64 levels)."""

    def __init__(self, encoding: TabularEncoding, classifier: TabularClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.n_numeric = len(encoding.numeric)
        self.n_categorical = len(encoding.categorical)
        levels = [len(c.categories) for c in encoding.categorical]
        self.n_levels = sum(levels)

        def buffer(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32)

        self.register_buffer("median", buffer([c.median for c in encoding.numeric]))
        self.register_buffer("mean", buffer([c.mean for c in encoding.numeric]))
        self.register_buffer("std", buffer([c.std for c in encoding.numeric]))
        offsets = (np.cumsum(levels) - levels).astype(np.int64)
        self.register_buffer("offsets", torch.from_numpy(offsets))
        self.register_buffer("levels", torch.arange(self.n_levels, dtype=torch.int64))
        self.median: torch.Tensor
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.offsets: torch.Tensor
        self.levels: torch.Tensor

    @property
    def blocks(self) -> list[str]:
        """The matrices the model takes, in order: ``numeric`` and ``codes``, or the one the
        table has."""
        return [name for name, n in ((NUMERIC, self.n_numeric), (CODES, self.n_categorical)) if n]

    def features(self, numeric: torch.Tensor | None, codes: torch.Tensor | None) -> torch.Tensor:
        """The encoded features; ``numeric`` or ``codes`` is unused (may be None) when the
        encoding has no column of that kind."""
        parts = []
        if self.n_numeric:
            assert numeric is not None
            median = torch.where(torch.isnan(numeric), self.median, numeric)
            parts.append((median - self.mean) / self.std)
        if self.n_categorical:
            assert codes is not None
            # Every categorical column owns a block of levels; a row's code picks one per block.
            hot = ((codes + self.offsets).unsqueeze(-1) == self.levels).any(dim=1)
            parts.append(hot.to(self.mean.dtype))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward(self, *blocks: torch.Tensor) -> torch.Tensor:
        """The probability from the matrices in :attr:`blocks` (an absent kind has none)."""
        given = dict(zip(self.blocks, blocks, strict=True))
        return self.classifier(self.features(given.get(NUMERIC), given.get(CODES)))


def level_codes(encoding: TabularEncoding, frame: pd.DataFrame) -> np.ndarray:
    """The level index of every categorical cell, as the front end computes it (for torch)."""
    codes = np.zeros((len(frame), len(encoding.categorical)), dtype=np.int64)
    for j, cat in enumerate(encoding.categorical):
        known = {level: i for i, level in enumerate(cat.categories)}
        column = frame[cat.name].to_numpy(dtype=object)
        codes[:, j] = [
            known[MISSING] if pd.isna(v) else known.get(str(v), known[OTHER]) for v in column
        ]
    return codes


def numeric_matrix(encoding: TabularEncoding, frame: pd.DataFrame) -> np.ndarray:
    columns = [frame[c.name].astype("float64").to_numpy() for c in encoding.numeric]
    return np.stack(columns, axis=1).astype(np.float32) if columns else np.zeros((len(frame), 0))


def raw_inputs(encoding: TabularEncoding, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The ONNX model's feed for ``frame``: one array per raw column, missing as NaN or ``""``."""
    feed: dict[str, np.ndarray] = {}
    for num in encoding.numeric:
        feed[num.name] = frame[num.name].astype("float64").to_numpy().astype(np.float32)
    for cat in encoding.categorical:
        feed[cat.name] = cell_texts(frame[cat.name])
    return feed


def _front_end(encoding: TabularEncoding, opset: int, ir_version: int) -> onnx.ModelProto:
    inputs, nodes, outputs = [], [], []
    axes = helper.make_tensor("axes_1", TensorProto.INT64, [1], [1])
    for num in encoding.numeric:
        inputs.append(helper.make_tensor_value_info(num.name, TensorProto.FLOAT, ["batch"]))
    for cat in encoding.categorical:
        inputs.append(helper.make_tensor_value_info(cat.name, TensorProto.STRING, ["batch"]))
    blocks: dict[str, list[str]] = {NUMERIC: [], CODES: []}
    for i, num in enumerate(encoding.numeric):
        nodes.append(helper.make_node("Unsqueeze", [num.name, "axes_1"], [f"num_{i}"]))
        blocks[NUMERIC].append(f"num_{i}")
    for j, cat in enumerate(encoding.categorical):
        keys = list(cat.categories)
        values = list(range(len(keys)))
        if "" not in keys:  # "" is how a request says "missing"
            keys.append("")
            values.append(cat.categories.index(MISSING))
        nodes.append(
            helper.make_node(
                "LabelEncoder", [cat.name], [f"code_{j}_flat"], domain="ai.onnx.ml",
                keys_strings=keys, values_int64s=values,
                default_int64=cat.categories.index(OTHER),
            )
        )  # fmt: skip
        nodes.append(helper.make_node("Unsqueeze", [f"code_{j}_flat", "axes_1"], [f"code_{j}"]))
        blocks[CODES].append(f"code_{j}")
    for name, parts in blocks.items():
        if parts:
            nodes.append(helper.make_node("Concat", parts, [name], axis=1))
            dtype = TensorProto.FLOAT if name == NUMERIC else TensorProto.INT64
            outputs.append(helper.make_tensor_value_info(name, dtype, ["batch", len(parts)]))
    graph = helper.make_graph(nodes, "sslops_raw_columns", inputs, outputs, initializer=[axes])
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
    )
    model.ir_version = ir_version
    return model


def _export_torch(model: RawColumnModel, encoding: TabularEncoding, opset: int) -> onnx.ModelProto:
    examples = {
        NUMERIC: torch.zeros(2, len(encoding.numeric)),
        CODES: torch.zeros(2, len(encoding.categorical), dtype=torch.int64),
    }
    example = tuple(examples[name] for name in model.blocks)
    batch = torch.export.Dim("batch")
    # The exporter reports progress on stdout; keep the stage's output to its own lines.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            example,
            dynamo=True,
            opset_version=opset,
            input_names=model.blocks,
            output_names=[OUTPUT],
            dynamic_shapes={"blocks": tuple({0: batch} for _ in example)},
            external_data=False,
        )
    assert program is not None
    return program.model_proto


def export_raw_column_onnx(
    encoding: TabularEncoding, classifier: TabularClassifier, path: Path, opset: int
) -> RawColumnModel:
    """Write the merged model (front end + exported torch part); returns the torch reference."""
    if not encoding.numeric and not encoding.categorical:
        raise DataError("ONNX export needs at least one feature column; the encoding has none")
    model = RawColumnModel(encoding, classifier).eval()
    body = _export_torch(model, encoding, opset)
    front = _front_end(encoding, opset, body.ir_version)
    merged = onnx.compose.merge_models(
        front, body, io_map=[(name, name) for name in model.blocks], doc_string="sslops"
    )
    merged.graph.name = "sslops_classifier"
    # merge_models lists a domain shared by both parts twice; tools expect each domain once.
    opsets = {o.domain: o.version for o in merged.opset_import}
    del merged.opset_import[:]
    merged.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets.items())
    onnx.save(merged, str(path))
    return model
