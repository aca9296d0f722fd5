"""What one optimizer step computes: a backbone, the heads of one objective, and its loss.

A task is an ``nn.Module`` whose ``forward(batch, draws)`` returns the scalar loss, so
DDP can wrap the whole thing. ``embed`` is the backbone on un-augmented inputs (kNN
monitoring, downstream heads). :func:`build_task` picks the backbone and objective
from the config and checks that they fit the modality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sslops.config import ALLOWED, Config
from sslops.errors import ConfigError
from sslops.models.ft_transformer import FTTransformer
from sslops.models.series import ResNet1D
from sslops.models.tabular import EncoderSpec, MLPEncoder
from sslops.models.vision import ResNet18Cifar, ViTTiny, patchify
from sslops.objectives import (
    Draws,
    ImageAugment,
    augment_images,
    augment_series,
    changed_columns,
    corrupt_columns,
    mae_loss,
    mask_segments,
    masked_reconstruction_loss,
    next_patch_loss,
    next_patch_targets,
    nt_xent,
    random_patch_mask,
    vicreg,
    vime_loss,
)
from sslops.objectives.augment import normalize_images


@dataclass
class InputInfo:
    """What the backbone needs to know about the data."""

    modality: str
    shape: tuple[int, ...]  # one example: (features,), (C, H, W) or (C, T)
    column_of: torch.Tensor | None = None  # tabular: raw column of each encoded feature
    pool: torch.Tensor | None = field(default=None, repr=False)  # tabular: donor rows


def backbone_spec(cfg: Config, info: InputInfo) -> dict[str, Any]:
    """``{"backbone": name, "args": {...}}``: enough to rebuild the backbone without pickle."""
    pc = cfg.pretrain
    allowed = ALLOWED[info.modality]
    name: str = pc.backbone
    if name == "auto":
        auto = {"tabular": "mlp", "image": "resnet18", "timeseries": "resnet1d"}
        name = "vit_tiny" if pc.objective == "mae" else auto[info.modality]
    if pc.objective not in allowed["objectives"]:
        raise ConfigError(
            f"pretrain.objective {pc.objective!r} does not apply to modality {info.modality!r}; "
            f"choose one of {', '.join(allowed['objectives'])}"
        )
    if name not in allowed["backbones"]:
        raise ConfigError(
            f"pretrain.backbone {name!r} does not apply to modality {info.modality!r}; "
            f"choose one of {', '.join(allowed['backbones'])}"
        )
    if pc.objective == "mae" and name != "vit_tiny":
        raise ConfigError("pretrain.objective 'mae' needs pretrain.backbone 'vit_tiny'")
    if name == "mlp":
        args: dict[str, Any] = {
            "input_dim": info.shape[0], "hidden_dim": pc.hidden_dim, "depth": pc.depth,
            "embed_dim": pc.embed_dim,
        }  # fmt: skip
    elif name == "ft_transformer":
        assert info.column_of is not None
        args = {"column_of": info.column_of.tolist(), "embed_dim": pc.embed_dim,
                "depth": pc.depth}  # fmt: skip
    elif name == "resnet18":
        args = {"in_channels": info.shape[0]}
    elif name == "vit_tiny":
        args = {"image_size": info.shape[-1], "patch_size": pc.patch_size or 4,
                "in_channels": info.shape[0]}  # fmt: skip
    else:
        args = {"in_channels": info.shape[0], "causal": pc.objective == "next_patch"}
    return {"backbone": name, "args": args}


def build_backbone(spec: dict[str, Any]) -> nn.Module:
    name, args = spec["backbone"], dict(spec["args"])
    if name == "mlp":
        return MLPEncoder(EncoderSpec(**args))
    if name == "ft_transformer":
        column_of = torch.tensor(args.pop("column_of"))
        return FTTransformer(column_of, **args)
    if name == "resnet18":
        return ResNet18Cifar(**args)
    if name == "vit_tiny":
        return ViTTiny(**args)
    if name == "resnet1d":
        return ResNet1D(**args)
    raise ConfigError(f"unknown backbone {name!r}")


def feature_dim(backbone: nn.Module) -> int:
    if isinstance(backbone, MLPEncoder):
        return backbone.spec.embed_dim
    return int(backbone.feature_dim)  # type: ignore[arg-type]


class Task(nn.Module):
    """``forward`` is the objective's :meth:`ssl_loss` plus, when ``fairness`` is set
    (``sslops.pretrain.fairness``), its term on the clean batch's embedding."""

    fairness: nn.Module | None

    def __init__(self, backbone: nn.Module, info: InputInfo, cfg: Config) -> None:
        super().__init__()
        self.backbone, self.info = backbone, info
        self.fairness = None
        self.objective = cfg.pretrain.objective
        self.temperature = cfg.pretrain.temperature
        self.image_aug = (
            ImageAugment(size=info.shape[-1], **cfg.pretrain.augment.model_dump())
            if info.modality == "image"
            else None
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of un-augmented inputs."""
        if self.image_aug is not None:
            x = normalize_images(x, self.image_aug)
        return self.backbone(x)

    def ssl_loss(self, batch: torch.Tensor, draws: Draws) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, batch: torch.Tensor, draws: Draws, sensitive: torch.Tensor | None = None
    ) -> torch.Tensor:
        loss = self.ssl_loss(batch, draws)
        if self.fairness is not None and sensitive is not None:
            loss = loss + self.fairness(self.embed(batch), sensitive)
        return loss


class TwoViewTask(Task):
    """SimCLR / SCARF (NT-Xent) and VICReg: two views, one forward pass over both."""

    def __init__(self, backbone: nn.Module, info: InputInfo, cfg: Config) -> None:
        super().__init__(backbone, info, cfg)
        pc, dim = cfg.pretrain, feature_dim(backbone)
        if info.modality == "tabular":
            self.projector: nn.Module = nn.Sequential(
                nn.Linear(dim, pc.hidden_dim),
                nn.ReLU(),
                nn.Linear(pc.hidden_dim, pc.projection_dim),
            )
        else:
            self.projector = nn.Sequential(
                nn.Linear(dim, dim),
                nn.BatchNorm1d(dim),
                nn.ReLU(),
                nn.Linear(dim, pc.projection_dim),
            )
        self.rate = pc.corruption_rate
        self.channels_last = pc.channels_last and isinstance(backbone, ResNet18Cifar)

    def view(self, batch: torch.Tensor, draws: Draws) -> torch.Tensor:
        if self.info.modality == "tabular":
            assert self.info.pool is not None and self.info.column_of is not None
            return corrupt_columns(batch, self.info.pool, self.info.column_of, self.rate, draws)[0]
        if self.image_aug is not None:
            return augment_images(batch, self.image_aug, draws)
        return augment_series(batch, draws)

    def ssl_loss(self, batch: torch.Tensor, draws: Draws) -> torch.Tensor:
        views = torch.cat([self.view(batch, draws), self.view(batch, draws)])
        if self.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        z1, z2 = self.projector(self.backbone(views)).chunk(2)
        if self.objective == "vicreg":
            return vicreg(z1, z2)
        return nt_xent(z1, z2, self.temperature)


class VimeTask(Task):
    def __init__(self, backbone: nn.Module, info: InputInfo, cfg: Config) -> None:
        super().__init__(backbone, info, cfg)
        assert info.column_of is not None
        dim, n_columns = feature_dim(backbone), int(info.column_of.max()) + 1
        self.mask_head = nn.Linear(dim, n_columns)
        self.feature_head = nn.Linear(dim, info.shape[0])
        self.ratio = cfg.pretrain.mask_ratio or 0.3

    def ssl_loss(self, batch: torch.Tensor, draws: Draws) -> torch.Tensor:
        assert self.info.pool is not None and self.info.column_of is not None
        corrupted, _ = corrupt_columns(
            batch, self.info.pool, self.info.column_of, self.ratio, draws
        )
        changed = changed_columns(
            batch, corrupted, self.info.column_of, self.mask_head.out_features
        )
        h = self.backbone(corrupted)
        return vime_loss(self.mask_head(h), changed, self.feature_head(h), batch)


class MaeTask(Task):
    """MAE on a ViT-Tiny: a 2-block, 128-wide decoder predicts normalized masked patches."""

    def __init__(self, backbone: nn.Module, info: InputInfo, cfg: Config) -> None:
        super().__init__(backbone, info, cfg)
        assert isinstance(backbone, ViTTiny)
        width, patch_values = 128, backbone.patch_size**2 * backbone.in_channels
        self.ratio = cfg.pretrain.mask_ratio or 0.75
        self.decoder_in = nn.Linear(backbone.feature_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.decoder_pos = nn.Parameter(torch.randn(1, backbone.num_patches, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, 4, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.predict = nn.Linear(width, patch_values)

    def ssl_loss(self, batch: torch.Tensor, draws: Draws) -> torch.Tensor:
        vit = self.backbone
        assert isinstance(vit, ViTTiny) and self.image_aug is not None
        images = normalize_images(batch, self.image_aug)
        keep, restore, mask = random_patch_mask(vit.num_patches, self.ratio, draws)
        visible = self.decoder_in(vit.encode(images, keep))
        hidden = self.mask_token.expand(visible.shape[0], vit.num_patches - keep.shape[1], -1)
        tokens = torch.cat([visible, hidden.to(visible.dtype)], dim=1)
        tokens = torch.gather(tokens, 1, restore[..., None].expand(-1, -1, tokens.shape[-1]))
        prediction = self.predict(self.decoder(tokens + self.decoder_pos))
        return mae_loss(prediction, patchify(images, vit.patch_size), mask)


class SeriesTask(Task):
    """Masked-segment reconstruction or next-patch prediction on a 1-D ResNet."""

    def __init__(self, backbone: nn.Module, info: InputInfo, cfg: Config) -> None:
        super().__init__(backbone, info, cfg)
        assert isinstance(backbone, ResNet1D)
        channels, length = info.shape
        self.patch = cfg.pretrain.patch_size or max(2, length // 15)
        self.ratio = cfg.pretrain.mask_ratio or 0.3
        out = channels if self.objective == "masked_segment" else channels * self.patch
        self.head = nn.Linear(backbone.feature_dim, out)

    def ssl_loss(self, batch: torch.Tensor, draws: Draws) -> torch.Tensor:
        backbone = self.backbone
        assert isinstance(backbone, ResNet1D)
        if self.objective == "masked_segment":
            mask = mask_segments(batch, self.patch, self.ratio, draws)
            features = backbone.features(batch * (1 - mask[:, None]))
            prediction = self.head(features.transpose(1, 2)).transpose(1, 2)
            return masked_reconstruction_loss(prediction, batch, mask)
        positions, targets = next_patch_targets(batch, self.patch)
        features = backbone.features(batch)[..., positions].transpose(1, 2)
        return next_patch_loss(self.head(features), targets)


def build_task(cfg: Config, info: InputInfo, spec: dict[str, Any]) -> Task:
    backbone = build_backbone(spec)
    objective = cfg.pretrain.objective
    if objective in ("scarf", "simclr", "vicreg"):
        task: Task = TwoViewTask(backbone, info, cfg)
    elif objective == "vime":
        task = VimeTask(backbone, info, cfg)
    elif objective == "mae":
        task = MaeTask(backbone, info, cfg)
    else:
        task = SeriesTask(backbone, info, cfg)
    if getattr(task, "channels_last", False):
        task.backbone.to(memory_format=torch.channels_last)
    return task
