"""In-training fairness mitigation: a differentiable demographic-parity penalty on a linear head.

Demographic parity needs no labels, so the penalty is computed on *all* training
rows (the unlabeled majority included) while the classification loss uses only
the labeled few. The result is an ordinary linear head: exportable, and it does
not need the sensitive attribute at prediction time.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class DemographicParityPenalty:
    """Variance of the mean predicted probability across groups (0 when all groups match)."""

    def __init__(self, groups: np.ndarray) -> None:
        _, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        self.codes = torch.as_tensor(codes, dtype=torch.long)
        self.n_groups = int(self.codes.max()) + 1
        counts = torch.bincount(self.codes, minlength=self.n_groups).float()
        self.counts = counts.clamp(min=1.0)

    def __call__(self, probabilities: torch.Tensor) -> torch.Tensor:
        sums = torch.zeros(self.n_groups).index_add(0, self.codes, probabilities)
        rates = sums / self.counts
        return ((rates - rates.mean()) ** 2).mean()


def fit_penalized_head(
    z_labeled: torch.Tensor,
    y_labeled: torch.Tensor,
    z_all: torch.Tensor,
    penalty: DemographicParityPenalty,
    weight: float,
    init: tuple[torch.Tensor, torch.Tensor],
    regularization: float,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimize mean log-loss + L2 (scikit-learn's C scaling) + ``weight`` * penalty.

    Returns the head's (weight vector, bias). Full-batch L-BFGS keeps it deterministic.
    """
    w = init[0].detach().clone().requires_grad_(True)
    b = init[1].detach().clone().requires_grad_(True)
    l2 = 1.0 / (2.0 * regularization * len(y_labeled))
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z_labeled @ w + b, y_labeled) + l2 * (w @ w)
        if weight > 0:
            loss = loss + weight * penalty(torch.sigmoid(z_all @ w + b))
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach()
