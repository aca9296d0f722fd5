"""The export stage: ONNX of the whole inference path (raw columns in), parity-checked, int8."""

from sslops.export.graph import RawColumnModel, export_raw_column_onnx, raw_inputs
from sslops.export.stage import INT8_FILE, ONNX_FILE, export, onnx_parity

__all__ = [
    "INT8_FILE",
    "ONNX_FILE",
    "RawColumnModel",
    "export",
    "export_raw_column_onnx",
    "onnx_parity",
    "raw_inputs",
]
