"""Differentiable fairness penalties for in-training mitigation.

Each penalty is the variance, across sensitive groups, of a group-conditional mean
of the predicted probability:

- ``demographic_parity``: E[p | group] over all rows — it needs no labels, so the
  unlabeled majority of the training rows enforces it too;
- ``equal_opportunity``: E[p | group, y = 1] (true-positive rates), labeled rows only;
- ``equalized_odds``: the same for y = 1 and y = 0 (TPR and FPR), labeled rows only.

With several sensitive columns the penalties of the columns are summed.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Constraint = Literal["demographic_parity", "equalized_odds", "equal_opportunity"]
CONSTRAINTS: tuple[str, ...] = ("demographic_parity", "equalized_odds", "equal_opportunity")


def group_codes(groups: np.ndarray) -> torch.Tensor:
    """Integer codes 0..G-1 of a 1-D array of group labels."""
    _, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    return torch.as_tensor(codes, dtype=torch.long)


def _rate_variance(p: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        p, codes = p[mask], codes[mask]
    n_groups = int(codes.max()) + 1 if len(codes) else 1
    counts = torch.bincount(codes, minlength=n_groups).to(p.dtype)
    present = counts > 0
    sums = torch.zeros(n_groups, dtype=p.dtype).index_add(0, codes, p)
    rates = sums[present] / counts[present]
    return ((rates - rates.mean()) ** 2).mean() if len(rates) > 1 else p.sum() * 0.0


class DemographicParityPenalty:
    """Variance of the mean predicted probability across groups (0 when all groups match)."""

    def __init__(self, groups: np.ndarray) -> None:
        self.codes = group_codes(groups)

    def __call__(self, probabilities: torch.Tensor) -> torch.Tensor:
        return _rate_variance(probabilities, self.codes, None)


class FairnessPenalty:
    """One of the three constraints over one or more sensitive columns.

    ``groups`` has one row per sample and one column per sensitive attribute; ``y`` is
    the label (or -1 for an unlabeled row, used only by demographic parity).
    """

    def __init__(self, constraint: Constraint, groups: np.ndarray, y: np.ndarray) -> None:
        if constraint not in CONSTRAINTS:
            raise ValueError(f"constraint must be one of {CONSTRAINTS}, got {constraint!r}")
        groups = np.asarray(groups).reshape(len(y), -1)
        self.constraint = constraint
        self.codes = [group_codes(groups[:, j]) for j in range(groups.shape[1])]
        y_t = torch.as_tensor(np.asarray(y))
        self.masks: list[torch.Tensor | None]
        if constraint == "demographic_parity":
            self.masks = [None]
        elif constraint == "equal_opportunity":
            self.masks = [y_t == 1]
        else:
            self.masks = [y_t == 1, y_t == 0]

    def __call__(
        self, probabilities: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Penalty of ``probabilities`` for all rows, or for the subset ``rows`` (a minibatch)."""
        total = probabilities.sum() * 0.0
        for codes in self.codes:
            for mask in self.masks:
                if rows is not None:
                    codes_r, mask_r = codes[rows], (mask[rows] if mask is not None else None)
                else:
                    codes_r, mask_r = codes, mask
                total = total + _rate_variance(probabilities, codes_r, mask_r)
        return total
