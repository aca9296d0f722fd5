"""SimCLR (Chen et al., 2020): NT-Xent between two augmented views, negatives from every rank.

Each rank scores its own anchors against the views of the *global* batch (gathered
with gradients), so the mean of the ranks' losses is the single-process loss over the
global batch and DDP's gradient averaging gives the single-process gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslops.objectives.gather import gather_with_grad, world


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric NT-Xent: anchor i of view a has its positive at i in view b; every other
    embedding of either view (of every rank) is a negative."""
    with torch.autocast(z1.device.type, enabled=False):  # fp32 logits under bf16 autocast
        rank, _ = world()
        n = z1.shape[0]
        local = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2n, d): this rank's anchors
        g1 = gather_with_grad(F.normalize(z1.float(), dim=1))
        g2 = gather_with_grad(F.normalize(z2.float(), dim=1))
        everything = torch.cat([g1, g2])  # (2N, d), N = global batch
        total = g1.shape[0]
        logits = local @ everything.T / temperature
        offset = rank * n
        rows = torch.arange(n, device=z1.device)
        own = torch.cat([rows + offset, rows + offset + total])  # each anchor itself
        positive = torch.cat([rows + offset + total, rows + offset])
        logits = logits.masked_fill(F.one_hot(own, 2 * total).bool(), torch.finfo(logits.dtype).min)
        return F.cross_entropy(logits, positive)
