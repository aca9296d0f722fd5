"""VIME self-supervision (Yoon et al., 2020): mask estimation + feature estimation.

A row is corrupted column-wise exactly as in SCARF (values from random other rows,
probability ``mask_ratio``); from the corrupted row's embedding one head predicts which
raw columns were replaced (binary cross-entropy) and another reconstructs the original
encoded features (mean squared error). Loss = BCE + ``alpha`` * MSE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def vime_loss(
    mask_logits: torch.Tensor,
    mask: torch.Tensor,
    reconstruction: torch.Tensor,
    original: torch.Tensor,
    alpha: float = 2.0,
) -> torch.Tensor:
    """``mask_logits``/``mask``: ``(N, raw columns)``; ``reconstruction``/``original``:
    ``(N, encoded features)``."""
    estimate = F.binary_cross_entropy_with_logits(mask_logits.float(), mask.float())
    return estimate + alpha * F.mse_loss(reconstruction.float(), original.float())
