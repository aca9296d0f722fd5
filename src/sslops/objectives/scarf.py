"""SCARF (Bahri et al., 2022): contrastive learning with random feature corruption.

A view replaces a random subset of the *raw* columns of each row with the values
of the same columns in random other rows (a draw from each column's empirical
marginal). One-hot blocks are replaced as a whole, so a corrupted categorical is
still a valid category. The loss is the symmetric InfoNCE (NT-Xent) between two
views of the same rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslops.objectives.draws import Draws, as_draws


def corrupt_columns(
    x: torch.Tensor,
    pool: torch.Tensor,
    column_of: torch.Tensor,
    rate: float,
    generator: torch.Generator | Draws | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(corrupted x, column mask)``: each raw column of each row is replaced, with
    probability ``rate``, by the same column of a random row of ``pool``.

    ``column_of[j]`` is the raw column of encoded feature ``j``; features of one column
    are corrupted together and taken from the same donor row.
    """
    draws = as_draws(generator, x.shape[0])
    n_columns = int(column_of.max()) + 1
    mask = draws.rand(n_columns).to(x.device) < rate
    donors = draws.randint(pool.shape[0], n_columns).to(x.device)
    donor_rows = donors[:, column_of]  # (batch, features)
    feature_idx = torch.arange(x.shape[1], device=x.device).expand_as(donor_rows)
    replacement = pool[donor_rows, feature_idx]
    return torch.where(mask[:, column_of], replacement, x), mask


def scarf_corrupt(
    x: torch.Tensor,
    pool: torch.Tensor,
    column_of: torch.Tensor,
    rate: float,
    generator: torch.Generator | Draws | None = None,
) -> torch.Tensor:
    """Corrupt ``rate`` of the raw columns of each row of ``x`` with values from rows of ``pool``."""
    return corrupt_columns(x, pool, column_of, rate, generator)[0]


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric NT-Xent over 2N embeddings: each row's positive is its other view."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, positives)
