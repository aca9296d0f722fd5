"""sslops: self-supervised pretraining to audited, fairness-checked ONNX models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sslops")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
