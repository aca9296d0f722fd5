"""Autoregressive next-patch prediction for series: a causal model reads the series and the
feature at the last step of patch ``k`` predicts the ``patch`` values of patch ``k + 1``
(squared error; every patch but the first is a target).
"""

from __future__ import annotations

import torch


def next_patch_targets(series: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positions, targets)``: feature positions (last step of patches 0..K-2) and the
    values of patches 1..K-1 flattened over channels, ``(N, K-1, C*patch)``."""
    n, c, t = series.shape
    k = t // patch
    patches = series[..., : k * patch].reshape(n, c, k, patch).permute(0, 2, 1, 3)
    positions = torch.arange(k - 1, device=series.device) * patch + patch - 1
    return positions, patches[:, 1:].reshape(n, k - 1, c * patch)


def next_patch_loss(prediction: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (prediction.float() - targets.float()).pow(2).mean()
