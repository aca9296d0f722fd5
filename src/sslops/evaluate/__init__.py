"""The evaluate stage: overall and per-group metrics for every model on the test split.

The stage (models, torch) is imported on first use: ``sslops.evaluate.metrics`` alone
serves the shadow test, which scores ONNX models and needs no torch.
"""

from typing import Any

__all__ = ["evaluate", "model_metrics"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sslops.evaluate import stage

        return getattr(stage, name)
    raise AttributeError(name)
