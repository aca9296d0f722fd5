"""Batched view augmentations computed on tensors on the training device.

Images: random resized crop + horizontal flip (one affine warp per image through
``grid_sample``), colour jitter (brightness, contrast, saturation, hue as a rotation in
YIQ space), random grey, normalization — the SimCLR recipe, applied to the whole batch
at once instead of per-sample PIL calls in loader workers. Series: random crop
resized back to full length, amplitude scaling and jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sslops.objectives.draws import Draws

_GREY = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@dataclass(frozen=True)
class ImageAugment:
    """The SimCLR image recipe (lightly's ``SimCLRTransform`` defaults, without blur)."""

    size: int = 32
    min_scale: float = 0.08
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    grey_prob: float = 0.2
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)


def _crop_and_flip(x: torch.Tensor, aug: ImageAugment, draws: Draws) -> torch.Tensor:
    n = x.shape[0]
    u = draws.rand(5).to(x.dtype)
    area = aug.min_scale + (1 - aug.min_scale) * u[:, 0]
    low, high = math.log(aug.ratio[0]), math.log(aug.ratio[1])
    log_ratio = low + (high - low) * u[:, 1]
    ratio = log_ratio.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (2 * u[:, 2] - 1) * (1 - w)
    cy = (2 * u[:, 3] - 1) * (1 - h)
    sign = torch.where(u[:, 4] < aug.flip, -1.0, 1.0).to(x.dtype)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, [n, x.shape[1], aug.size, aug.size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_GREY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _jitter(x: torch.Tensor, aug: ImageAugment, draws: Draws) -> torch.Tensor:
    u = draws.rand(5).to(x.dtype)
    apply = (u[:, 0] < aug.jitter_prob).view(-1, 1, 1, 1)

    def factor(col: int, strength: float) -> torch.Tensor:
        return (1 + strength * (2 * u[:, col] - 1)).clamp(min=0).view(-1, 1, 1, 1)

    out = (x * factor(1, aug.brightness)).clamp(0, 1)
    mean = _grey(out).mean(dim=(2, 3), keepdim=True)
    out = ((out - mean) * factor(2, aug.contrast) + mean).clamp(0, 1)
    grey = _grey(out)
    out = ((out - grey) * factor(3, aug.saturation) + grey).clamp(0, 1)
    angle = (aug.hue * (2 * u[:, 4] - 1) * 2 * math.pi).view(-1, 1, 1)
    yiq_of = _RGB_TO_YIQ.to(x.device, x.dtype)
    rgb_of = torch.linalg.inv(yiq_of)
    cos, sin = angle.cos(), angle.sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rotate = torch.cat(
        [torch.cat([one, zero, zero], 2), torch.cat([zero, cos, -sin], 2),
         torch.cat([zero, sin, cos], 2)], 1,
    )  # fmt: skip
    mix = rgb_of @ rotate @ yiq_of  # (n, 3, 3)
    out = torch.einsum("nij,njhw->nihw", mix, out).clamp(0, 1)
    return torch.where(apply, out, x)


def augment_images(images: torch.Tensor, aug: ImageAugment, draws: Draws) -> torch.Tensor:
    """One view of a batch: ``images`` are uint8 ``(N, C, H, W)`` or floats in [0, 1]."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    x = _crop_and_flip(x, aug, draws)
    if x.shape[1] == 3:
        x = _jitter(x, aug, draws)
        grey = (draws.rand(1) < aug.grey_prob).view(-1, 1, 1, 1)
        x = torch.where(grey, _grey(x).expand_as(x), x)
    mean = torch.tensor(aug.mean[: x.shape[1]], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(aug.std[: x.shape[1]], device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def normalize_images(images: torch.Tensor, aug: ImageAugment) -> torch.Tensor:
    """The un-augmented input: what kNN monitoring and downstream heads see."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    if x.shape[-1] != aug.size:
        x = F.interpolate(x, size=(aug.size, aug.size), mode="bilinear", align_corners=False)
    mean = torch.tensor(aug.mean[: x.shape[1]], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(aug.std[: x.shape[1]], device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def augment_series(
    series: torch.Tensor,
    draws: Draws,
    min_crop: float = 0.6,
    scale: float = 0.2,
    noise: float = 0.03,
) -> torch.Tensor:
    """One view of ``(N, C, T)`` z-normalized series: crop-resize, scale, jitter."""
    _, c, t = series.shape
    u = draws.rand(2)
    width = min_crop + (1 - min_crop) * u[:, 0]
    start = (1 - width) * u[:, 1]
    steps = torch.linspace(0, 1, t, device=series.device)
    position = (start[:, None] + width[:, None] * steps[None]) * 2 - 1  # in [-1, 1]
    grid = torch.stack([position, torch.zeros_like(position)], dim=-1)[:, None]  # (N,1,T,2)
    cropped = F.grid_sample(
        series[:, :, None, :], grid, mode="bilinear", align_corners=True
    ).squeeze(2)
    amplitude = 1 + scale * draws.randn(1, 1)
    return cropped * amplitude + noise * draws.randn(c, t)
