"""Backbones: output shapes, ViT patch selection, causality of the 1-D ResNet, FT-Transformer tokens."""

from __future__ import annotations

import torch

from sslops.models.ft_transformer import FTTransformer
from sslops.models.series import ResNet1D
from sslops.models.vision import ResNet18Cifar, ViTTiny, patchify


def test_resnet18_cifar_keeps_resolution_in_the_stem() -> None:
    net = ResNet18Cifar(in_channels=3)
    assert net.net.conv1.stride == (1, 1)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_vit_encodes_only_kept_patches() -> None:
    torch.manual_seed(0)
    vit = ViTTiny(image_size=16, patch_size=4, in_channels=1, depth=2).eval()
    x = torch.randn(2, 1, 16, 16)
    assert vit(x).shape == (2, 192)
    keep = torch.tensor([[0, 5, 9], [1, 2, 15]])
    assert vit.encode(x, keep).shape == (2, 3, 192)
    # a kept patch's output does not depend on dropped patches' pixels
    changed = x.clone()
    changed[:, :, 12:, :4] += 5.0  # patch 12 is not kept by either row
    torch.testing.assert_close(vit.encode(x, keep), vit.encode(changed, keep))


def test_patchify_orders_patches_row_major() -> None:
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    patches = patchify(image, 2)
    assert patches.shape == (1, 4, 4)
    assert patches[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]


def test_causal_resnet1d_does_not_look_ahead() -> None:
    torch.manual_seed(0)
    net = ResNet1D(in_channels=1, width=8, causal=True).eval()
    x = torch.randn(2, 1, 40)
    later = x.clone()
    later[..., 25:] = torch.randn(2, 1, 15)
    a, b = net.features(x), net.features(later)
    assert a.shape == (2, 16, 40)
    torch.testing.assert_close(a[..., :25], b[..., :25])
    assert not torch.allclose(a[..., 25:], b[..., 25:])


def test_non_causal_resnet1d_pools_to_one_vector() -> None:
    assert ResNet1D(width=8)(torch.randn(3, 1, 30)).shape == (3, 16)


def test_ft_transformer_has_one_token_per_raw_column() -> None:
    column_of = torch.tensor([0, 1, 1, 1, 2])
    net = FTTransformer(column_of, embed_dim=6, width=8, depth=1, heads=2)
    x = torch.tensor([[0.5, 0.0, 1.0, 0.0, -1.0]])
    tokens = net.tokens(x)
    assert tokens.shape == (1, 4, 8)  # [CLS] + 3 columns
    # the one-hot block's token is the embedding row of its level plus the column bias
    torch.testing.assert_close(tokens[0, 2], net.weight[2] + net.bias[1])
    assert net(torch.randn(5, 5)).shape == (5, 6)
