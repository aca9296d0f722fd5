"""Time-series backbone: a 1-D ResNet (three residual blocks, as in Wang et al. 2017).

``features(x)`` keeps the time axis (``(N, width, T)``) for the per-step objectives
(masked-segment reconstruction, next-patch prediction); ``forward`` pools it into one
vector per series. With ``causal=True`` every convolution pads on the left only, so
the feature at step t sees inputs up to t and nothing later — what an
autoregressive objective needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Conv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, causal: bool) -> None:
        super().__init__()
        self.pad = (kernel - 1, 0) if causal else ((kernel - 1) // 2, kernel // 2)
        self.conv = nn.Conv1d(c_in, c_out, kernel, bias=False)
        # GroupNorm(1) pools statistics over time, which would let a causal model see later
        # steps; the causal variant normalizes each step over its own channels.
        self.norm: nn.Module = nn.GroupNorm(1, c_out) if not causal else _ChannelNorm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(F.pad(x, self.pad)))


class _ChannelNorm(nn.Module):
    """LayerNorm over channels at each time step (no statistics across time)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, causal: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [_Conv(c_in, c_out, 7, causal), _Conv(c_out, c_out, 5, causal),
             _Conv(c_out, c_out, 3, causal)]
        )  # fmt: skip
        self.skip = _Conv(c_in, c_out, 1, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < len(self.convs) - 1:
                h = F.relu(h)
        return F.relu(h + self.skip(x))


class ResNet1D(nn.Module):
    def __init__(self, in_channels: int = 1, width: int = 64, causal: bool = False) -> None:
        super().__init__()
        self.feature_dim, self.causal = 2 * width, causal
        self.blocks = nn.Sequential(
            _Block(in_channels, width, causal),
            _Block(width, 2 * width, causal),
            _Block(2 * width, 2 * width, causal),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=-1)
