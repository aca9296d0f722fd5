"""MAE (He et al., 2022): mask most patches, encode the visible ones, reconstruct the rest.

Masking is a per-image random permutation of the patches; the first ``keep`` indices
are visible. The loss is the mean squared error on the *masked* patches only, against
per-patch normalized pixels (the paper's ``norm_pix_loss``).
"""

from __future__ import annotations

import torch

from sslops.objectives.draws import Draws


def random_patch_mask(
    patches: int, ratio: float, draws: Draws
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(keep, restore, mask)`` for each image: ``keep`` ``(N, K)`` visible patch indices
    (ascending), ``restore`` the permutation that puts ``[visible, masked]`` tokens back in
    patch order, ``mask`` ``(N, L)`` 1.0 where a patch is hidden."""
    keep_count = max(1, round(patches * (1 - ratio)))
    order = draws.rand(patches).argsort(dim=1)
    keep = order[:, :keep_count].sort(dim=1).values
    hidden = order[:, keep_count:].sort(dim=1).values
    shuffled = torch.cat([keep, hidden], dim=1)
    restore = shuffled.argsort(dim=1)
    mask = torch.ones_like(order, dtype=torch.float32)
    mask.scatter_(1, keep, 0.0)
    return keep, restore, mask


def mae_loss(
    prediction: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """``prediction``/``patches``: ``(N, L, P)``; ``mask``: ``(N, L)``, 1 = masked."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    target = (patches - mean) / (var + eps).sqrt()
    per_patch = (prediction.float() - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()
