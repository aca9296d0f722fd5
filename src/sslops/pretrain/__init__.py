"""The pretrain stage: self-supervised training of a backbone on unlabeled data."""

from sslops.pretrain.stage import load_backbone, load_encoder, pretrain, run_pretrain

__all__ = ["load_backbone", "load_encoder", "pretrain", "run_pretrain"]
