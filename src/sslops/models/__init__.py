"""Backbones and heads."""

from sslops.models.tabular import MLPEncoder, TabularClassifier, load_classifier, save_classifier

__all__ = ["MLPEncoder", "TabularClassifier", "load_classifier", "save_classifier"]
