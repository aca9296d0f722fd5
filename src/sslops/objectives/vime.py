"""VIME self-supervision (Yoon et al., 2020): mask estimation + feature estimation.

A row is corrupted column-wise exactly as in SCARF (values from random other rows,
probability ``mask_ratio``); from the corrupted row's embedding one head predicts which
raw columns changed (binary cross-entropy) and another reconstructs the original encoded
features (mean squared error). Loss = BCE + ``alpha`` * MSE.

The mask-estimation target is the columns whose value changed, as in the reference code
(``m_new = 1 * (x != x_tilde)``), not the columns drawn for corruption: a donor row often
holds the same value (the same category, capital-gain 0), and a column that did not
change cannot be detected (on Adult about 40% of the drawn cells, up to 88% in one column).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def changed_columns(
    original: torch.Tensor, corrupted: torch.Tensor, column_of: torch.Tensor, n_columns: int
) -> torch.Tensor:
    """``(N, raw columns)``: 1 where any encoded feature of the column differs."""
    differs = (corrupted != original).to(original.dtype)
    counts = torch.zeros(original.shape[0], n_columns, dtype=original.dtype, device=original.device)
    return (counts.index_add_(1, column_of.to(original.device), differs) > 0).to(original.dtype)


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
