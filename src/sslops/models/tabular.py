"""Tabular MLP encoder and the classifier (optional encoder + linear head) that gets exported.

Weights are stored as safetensors next to a JSON file with the architecture, so a
model is rebuilt without pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sslops.artifacts import write_json


@dataclass
class EncoderSpec:
    input_dim: int
    hidden_dim: int
    depth: int
    embed_dim: int


class MLPEncoder(nn.Module):
    """``depth`` blocks of Linear -> LayerNorm -> ReLU, then a linear map to ``embed_dim``."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        width = spec.input_dim
        for _ in range(spec.depth):
            layers += [nn.Linear(width, spec.hidden_dim), nn.LayerNorm(spec.hidden_dim), nn.ReLU()]
            width = spec.hidden_dim
        layers.append(nn.Linear(width, spec.embed_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TabularClassifier(nn.Module):
    """Probability of the positive class from encoded features.

    ``encoder`` is None for the supervised baseline (logistic regression on the raw
    encoded features). ``scale``/``shift`` standardize the embedding before the head,
    so a head fitted on standardized embeddings is exported exactly.
    """

    def __init__(self, encoder: MLPEncoder | None, in_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("shift", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        self.head = nn.Linear(in_dim, 1)
        self.shift: torch.Tensor
        self.scale: torch.Tensor

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x) if self.encoder is not None else x
        return self.head((z - self.shift) / self.scale).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))

    def architecture(self) -> dict:
        """What :func:`load_classifier` needs to rebuild the module before loading weights."""
        spec = asdict(self.encoder.spec) if self.encoder is not None else None
        return {"encoder": spec, "in_dim": self.head.in_features}


def save_classifier(model: TabularClassifier, directory: Path, name: str, info: dict) -> None:
    arch = {**model.architecture(), **info}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / f"{name}.safetensors"))
    write_json(directory / f"{name}.json", arch)


def load_classifier(directory: Path, name: str) -> tuple[TabularClassifier, dict]:
    arch = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    if arch.get("kind") == "boosted_stack":
        from sslops.models.trees import load_boosted_stack  # trees.py subclasses this module's

        return load_boosted_stack(directory, name, arch), arch
    encoder = MLPEncoder(EncoderSpec(**arch["encoder"])) if arch["encoder"] else None
    model = TabularClassifier(encoder, arch["in_dim"])
    model.load_state_dict(load_file(str(directory / f"{name}.safetensors")))
    return model.eval(), arch
