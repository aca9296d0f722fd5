"""The pretrain stage: self-supervised training of an encoder on unlabeled rows."""

from sslops.pretrain.stage import load_encoder, pretrain

__all__ = ["load_encoder", "pretrain"]
