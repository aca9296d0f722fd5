"""The classifier for images and series that gets exported: raw array in, class probabilities out.

``ArrayClassifier`` = input normalization (inside the module, so inside the ONNX graph)
-> backbone (a pretrained ResNet-18 / ViT-Tiny / 1-D ResNet, or none for the raw-input
baseline, which flattens) -> standardization -> linear head -> softmax.

- images arrive as prepared, uint8-range float pixels ``(N, C, H, W)``; normalization
  is ``x / 255`` then the ImageNet mean/std the backbone saw in pretraining;
- series arrive raw, ``(N, 1, L)``; normalization is the per-series z-score of
  pretraining (``sslops.pretrain.data.standardize_series``).

Storage: the backbone once per finetune artifact (``backbone.safetensors`` +
``backbone.json``, the pretrain spec), and per model the head with its
standardization (``{name}.safetensors``) and a JSON description (``{name}.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sslops.artifacts import write_json
from sslops.errors import ArtifactError
from sslops.objectives.augment import ImageAugment
from sslops.pretrain.tasks import build_backbone

BACKBONE = "backbone"


class InputNormalization(nn.Module):
    """What the backbone saw in pretraining, as plain tensor arithmetic (exports to ONNX)."""

    def __init__(self, modality: str, channels: int) -> None:
        super().__init__()
        self.modality = modality
        aug = ImageAugment()
        mean = torch.tensor(aug.mean[:channels]).view(1, -1, 1, 1)
        std = torch.tensor(aug.std[:channels]).view(1, -1, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.mean: torch.Tensor
        self.std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.modality == "image":
            return (x / 255.0 - self.mean) / self.std
        centre = x - x.mean(dim=-1, keepdim=True)
        return centre / x.std(dim=-1, keepdim=True).clamp(min=1e-6)


class ArrayClassifier(nn.Module):
    """Class probabilities ``(N, K)`` from a raw array batch."""

    def __init__(
        self, modality: str, channels: int, backbone: nn.Module | None, in_dim: int, classes: int
    ) -> None:
        super().__init__()
        self.normalize = InputNormalization(modality, channels)
        self.backbone = backbone
        self.register_buffer("shift", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        self.head = nn.Linear(in_dim, classes)
        self.shift: torch.Tensor
        self.scale: torch.Tensor

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's input before standardization: embeddings, or flattened normalized inputs."""
        h = self.normalize(x)
        return self.backbone(h) if self.backbone is not None else h.flatten(1)

    def head_probabilities(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head((z - self.shift) / self.scale), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_probabilities(self.features(x))


def set_head(
    model: ArrayClassifier, coef: np.ndarray, intercept: np.ndarray,
    shift: np.ndarray | None = None, scale: np.ndarray | None = None,
) -> ArrayClassifier:  # fmt: skip
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(coef, dtype=torch.float32))
        model.head.bias.copy_(torch.as_tensor(intercept, dtype=torch.float32))
        if shift is not None and scale is not None:
            model.shift.copy_(torch.as_tensor(shift, dtype=torch.float32))
            model.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
    return model.eval()


def model_input(modality: str, values: np.ndarray) -> torch.Tensor:
    """Prepared arrays -> the model's float32 input: images ``(N, C, H, W)``, series ``(N, C, L)``."""
    x = np.asarray(values, dtype=np.float32)
    if modality == "image":
        x = x[..., None] if x.ndim == 3 else x
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return torch.from_numpy(np.ascontiguousarray(x[:, None, :] if x.ndim == 2 else x))


def save_backbone(backbone: nn.Module, spec: dict[str, Any], directory: Path) -> None:
    state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
    save_file(state, str(directory / f"{BACKBONE}.safetensors"))
    write_json(directory / f"{BACKBONE}.json", spec)


def load_backbone_from(directory: Path) -> nn.Module:
    spec = json.loads((directory / f"{BACKBONE}.json").read_text(encoding="utf-8"))
    backbone = build_backbone(spec)
    backbone.load_state_dict(load_file(str(directory / f"{BACKBONE}.safetensors")))
    return backbone.eval()


def save_array_classifier(model: ArrayClassifier, directory: Path, name: str, info: dict) -> None:
    """The head (+ standardization) as ``{name}.safetensors``; the backbone is saved once."""
    arch = {
        "kind": "array",
        "modality": model.normalize.modality,
        "channels": int(model.normalize.mean.shape[1]),
        "backbone": model.backbone is not None,
        "in_dim": model.head.in_features,
        "classes": model.head.out_features,
        **info,
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not k.startswith(f"{BACKBONE}.")}  # fmt: skip
    save_file(state, str(directory / f"{name}.safetensors"))
    write_json(directory / f"{name}.json", arch)


def load_array_classifier(
    directory: Path, name: str, backbone: nn.Module | None = None
) -> tuple[ArrayClassifier, dict]:
    """Rebuild ``name``; pass ``backbone`` to share one already loaded between models."""
    arch = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    if arch["backbone"] and backbone is None:
        backbone = load_backbone_from(directory)
    model = ArrayClassifier(
        arch["modality"], arch["channels"], backbone if arch["backbone"] else None,
        arch["in_dim"], arch["classes"],
    )  # fmt: skip
    result = model.load_state_dict(load_file(str(directory / f"{name}.safetensors")), strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(f"{BACKBONE}.")]
    if missing or result.unexpected_keys:
        raise ArtifactError(
            f"{directory / name}.safetensors does not match its description: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    return model.eval(), arch
