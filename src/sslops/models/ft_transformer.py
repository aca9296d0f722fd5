"""FT-Transformer (Gorishniy et al., 2021) over the encoded features of a table.

Each raw column becomes one token: a numeric feature ``x_j`` contributes ``x_j * W_j``,
a one-hot block sums the rows of its levels (an embedding lookup), plus a per-column
bias. A [CLS] token is prepended; its final state, mapped to ``embed_dim``, is the
row's embedding.
"""

from __future__ import annotations

import torch
from torch import nn


class FTTransformer(nn.Module):
    def __init__(
        self,
        column_of: torch.Tensor,
        embed_dim: int,
        width: int = 64,
        depth: int = 3,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.register_buffer("column_of", column_of.long().clone())
        self.column_of: torch.Tensor
        n_features, n_columns = len(column_of), int(column_of.max()) + 1
        self.n_columns, self.feature_dim = n_columns, embed_dim
        self.weight = nn.Parameter(torch.randn(n_features, width) * width**-0.5)
        self.bias = nn.Parameter(torch.zeros(n_columns, width))
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 2 * width, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, embed_dim)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        per_feature = x[..., None] * self.weight  # (N, F, width)
        columns = per_feature.new_zeros(x.shape[0], self.n_columns, self.weight.shape[1])
        columns = columns.index_add(1, self.column_of, per_feature) + self.bias
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), columns], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.blocks(self.tokens(x))[:, 0]))
