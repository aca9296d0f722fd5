"""Online kNN accuracy: how well frozen features separate classes, without training a head.

Cosine similarity to a labeled bank, the ``k`` nearest vote with weights
``exp(similarity / 0.07)`` (Wu et al., 2018, as used by lightly and solo-learn).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def knn_predict(
    query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, classes: int, k: int,
    temperature: float = 0.07,
) -> torch.Tensor:  # fmt: skip
    """Predicted class of each query row."""
    with torch.autocast(query.device.type, enabled=False):
        query, bank = F.normalize(query.float(), dim=1), F.normalize(bank.float(), dim=1)
        similarity = query @ bank.T
        k = min(k, bank.shape[0])
        top, index = similarity.topk(k, dim=1)
        votes = torch.zeros(query.shape[0], classes, device=query.device)
        votes.scatter_add_(1, bank_labels[index], (top / temperature).exp())
        return votes.argmax(dim=1)


@torch.no_grad()
def embed_all(
    embed: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int = 512
) -> torch.Tensor:
    return torch.cat([embed(x[i : i + batch]).float() for i in range(0, x.shape[0], batch)])


@torch.no_grad()
def knn_accuracy(
    embed: Callable[[torch.Tensor], torch.Tensor],
    bank: tuple[torch.Tensor, torch.Tensor],
    query: tuple[torch.Tensor, torch.Tensor],
    k: int,
) -> float:
    classes = int(max(bank[1].max(), query[1].max())) + 1
    predicted = knn_predict(embed_all(embed, query[0]), embed_all(embed, bank[0]), bank[1],
                            classes, k)  # fmt: skip
    return float((predicted == query[1]).float().mean())
