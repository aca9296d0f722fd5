"""The export stage: ONNX of the whole inference path, parity-checked with onnxruntime."""

from sslops.export.stage import export, onnx_parity

__all__ = ["export", "onnx_parity"]
