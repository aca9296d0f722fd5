"""int8 quantization of the exported model and what it costs in accuracy.

MLP and transformer models get dynamic quantization (weights int8 ahead of time,
activations quantized per batch at run time): it needs no calibration data and
the string lookup and LayerNorm of the graph stay in float.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

METHOD = "dynamic int8 (MatMul/Gemm weights int8 per tensor, activations uint8 per batch)"


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # The quantizer logs advice ("consider pre-processing") on the root logger. The level
    # the program disabled (a library user's own logging.disable) comes back afterwards.
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    try:
        yield
    finally:
        logging.disable(previous)


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    with _quiet_root_logger():
        quantize_dynamic(
            str(fp32_path), str(int8_path), weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
        )  # fmt: skip


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def quantization_report(
    fp32: np.ndarray, int8: np.ndarray, target: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Accuracy of both models on the same rows; the change is in accuracy points (x100)."""
    acc32 = float(np.mean((fp32 >= threshold) == target))
    acc8 = float(np.mean((int8 >= threshold) == target))
    return {
        "method": METHOD,
        "rows": len(target),
        "accuracy_fp32": acc32,
        "accuracy_int8": acc8,
        "accuracy_change_points": round(100 * (acc8 - acc32), 4),
        "label_agreement": float(np.mean((fp32 >= threshold) == (int8 >= threshold))),
        "max_abs_diff_vs_fp32": float(np.max(np.abs(int8 - fp32))) if len(target) else 0.0,
    }
