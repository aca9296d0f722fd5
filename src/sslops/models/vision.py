"""Image backbones: ResNet-18 with a CIFAR stem (torchvision) and a ViT-Tiny that MAE can mask.

Both map a float batch ``(N, C, H, W)`` to one feature vector per image
(``feature_dim``); the ViT also exposes its patch tokens so MAE can encode only
the visible ones.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18


class ResNet18Cifar(nn.Module):
    """torchvision ResNet-18 with a 3x3 stride-1 first convolution and no max-pool (32x32 inputs)."""

    feature_dim = 512

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ViTTiny(nn.Module):
    """ViT-Tiny (width 192, 12 blocks, 3 heads), pre-norm, learned position embeddings.

    ``forward`` returns the mean of the final patch tokens; ``encode(x, keep)`` encodes
    only the patches indexed by ``keep`` (``(N, K)``), which is what MAE trains.
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        in_channels: int = 3,
        width: int = 192,
        depth: int = 12,
        heads: int = 3,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of patch {patch_size}")
        self.patch_size, self.in_channels = patch_size, in_channels
        self.num_patches = (image_size // patch_size) ** 2
        self.feature_dim = width
        self.patch_embed = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed

    def encode(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.tokens(x)
        if keep is not None:
            tokens = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        return self.norm(self.blocks(tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x).mean(dim=1)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, L, patch*patch*C)``, patches in row-major order."""
    n, c, h, w = images.shape
    x = images.reshape(n, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch) * (w // patch), patch * patch * c)
