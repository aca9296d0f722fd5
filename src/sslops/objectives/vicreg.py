"""VICReg (Bardes et al., 2022): invariance + variance + covariance, no negatives.

Works at small batch sizes. The variance and covariance terms are statistics of the
*global* batch: each rank gathers both views with gradients and computes the same
loss, so the ranks' mean is the single-process loss.

The variance term sums the two views' hinge terms, as the paper's equation does; the
official code (facebookresearch/vicreg, and lightly) averages them, which halves the
variance weight at the same 25 / 25 / 1 coefficients. Measured on Adult (2026-12-01,
docs/benchmarks.md): the halved weight gave a weaker encoder (kNN 0.818 against 0.829, SSL
ensemble 0.8945 against 0.8951 at 258 labels, on the training split prepare made before
session 26), so the paper's form stays.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslops.objectives.gather import gather_with_grad


def _variance(z: torch.Tensor, eps: float) -> torch.Tensor:
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def _covariance(z: torch.Tensor) -> torch.Tensor:
    n, d = z.shape
    centered = z - z.mean(dim=0)
    cov = centered.T @ centered / (n - 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / d


def vicreg(
    z1: torch.Tensor,
    z2: torch.Tensor,
    invariance: float = 25.0,
    variance: float = 25.0,
    covariance: float = 1.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    with torch.autocast(z1.device.type, enabled=False):  # fp32 covariance under bf16 autocast
        z1, z2 = gather_with_grad(z1.float()), gather_with_grad(z2.float())
        return (
            invariance * F.mse_loss(z1, z2)
            + variance * (_variance(z1, eps) + _variance(z2, eps))
            + covariance * (_covariance(z1) + _covariance(z2))
        )
