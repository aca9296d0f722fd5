"""The evaluate stage: overall and per-group metrics for every model on the test split."""

from sslops.evaluate.stage import evaluate, model_metrics

__all__ = ["evaluate", "model_metrics"]
