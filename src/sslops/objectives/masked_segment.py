"""Masked-segment reconstruction for series: the series is cut into segments of ``patch``
steps, a random ``ratio`` of them is set to zero, and the model reconstructs the original
values; the loss is the squared error on the masked steps only.
"""

from __future__ import annotations

import torch

from sslops.objectives.draws import Draws


def mask_segments(series: torch.Tensor, patch: int, ratio: float, draws: Draws) -> torch.Tensor:
    """``(N, T)`` mask, 1.0 on masked steps; at least one segment per series is masked."""
    n, _, t = series.shape
    segments = -(-t // patch)
    scores = draws.rand(segments)
    count = max(1, round(segments * ratio))
    chosen = scores.argsort(dim=1)[:, :count]
    seg_mask = torch.zeros(n, segments, device=series.device).scatter_(1, chosen, 1.0)
    return seg_mask.repeat_interleave(patch, dim=1)[:, :t]


def masked_reconstruction_loss(
    prediction: torch.Tensor, series: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``prediction``/``series``: ``(N, C, T)``; ``mask``: ``(N, T)``, 1 = masked step."""
    error = (prediction.float() - series.float()).pow(2).mean(dim=1)
    return (error * mask).sum() / mask.sum()
