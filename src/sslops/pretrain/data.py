"""Pretraining inputs read from a prepare artifact, as tensors ready for the device.

- tabular: the encoded features (float32 ``(N, F)``) of the training rows and of the
  rows kept without a label, and the raw column of each feature; kNN labels are the
  binary targets of the training rows.
- image: ``{split}.npy`` uint8 ``(N, H, W, C)`` -> ``(N, C, H, W)`` uint8 (converted to
  float per batch on the device, so the whole set stays small).
- timeseries: ``{split}.npy`` float32 ``(N, L)`` or ``(N, C, L)`` -> ``(N, C, L)``,
  z-normalized per series.

Labels are never used for training; a small labeled subset of train (the kNN bank)
and of validation (the queries) feeds the online kNN monitor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sslops.prepare.dataset import SCHEMA, UNLABELED, check_modality
from sslops.pretrain.tasks import InputInfo

Labeled = tuple[torch.Tensor, torch.Tensor]


@dataclass
class PretrainData:
    x: torch.Tensor
    info: InputInfo
    bank: Labeled | None = None
    query: Labeled | None = None
    sensitive: torch.Tensor | None = None  # tabular, fairness-aware: (N, columns) codes


def _subset(x: torch.Tensor, y: torch.Tensor, count: int, seed: int) -> Labeled:
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(x.shape[0], generator=g)[:count].sort().values
    return x[rows], y[rows]


def standardize_series(values: np.ndarray) -> torch.Tensor:
    x = torch.tensor(np.asarray(values, dtype=np.float32))
    if x.ndim == 2:
        x = x[:, None, :]
    mean, std = x.mean(dim=-1, keepdim=True), x.std(dim=-1, keepdim=True)
    return (x - mean) / std.clamp(min=1e-6)


def images_to_tensor(values: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` (or ``(N, H, W)``) -> uint8 ``(N, C, H, W)``."""
    x = torch.tensor(np.asarray(values))
    if x.ndim == 3:
        x = x[..., None]
    return x.permute(0, 3, 1, 2).contiguous()


def _tabular(prepared: Path, samples: int, seed: int) -> PretrainData:
    from sslops.prepare.dataset import PreparedData

    data = PreparedData(prepared)
    x = torch.tensor(data.pretraining.features)  # the training rows, then the unlabeled ones
    column_of = torch.tensor(data.encoding.column_of, dtype=torch.long)
    info = InputInfo("tabular", (x.shape[1],), column_of=column_of, pool=x)
    train = data.train
    bank = _subset(torch.tensor(train.features), torch.tensor(train.target), samples, seed)
    val = data.validation
    query = _subset(torch.tensor(val.features), torch.tensor(val.target), samples, seed)
    return PretrainData(x, info, bank, query)


def _arrays(prepared: Path, schema: dict, samples: int, seed: int) -> PretrainData:
    modality = schema["modality"]
    classes = [str(c) for c in schema.get("classes", [])]

    def split(name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        values = np.load(prepared / f"{name}.npy", allow_pickle=False)
        x = images_to_tensor(values) if modality == "image" else standardize_series(values)
        labels_path = prepared / f"{name}.parquet"
        if not labels_path.is_file():
            return x, None
        labels = pd.read_parquet(labels_path)["label"].astype("string").tolist()
        known = classes or sorted(set(labels))
        index = {c: i for i, c in enumerate(known)}
        return x, torch.tensor([index.get(v, -1) for v in labels], dtype=torch.long)

    x, y = split("train")
    bank = query = None
    if y is not None and (prepared / "validation.npy").is_file():
        vx, vy = split("validation")
        if vy is not None and (y >= 0).all() and (vy >= 0).all() and len(vx):
            bank, query = _subset(x, y, samples, seed), _subset(vx, vy, samples, seed)
    if (prepared / f"{UNLABELED}.npy").is_file():  # the training items, then the unlabeled ones
        x = torch.cat([x, split(UNLABELED)[0]])
    return PretrainData(x, InputInfo(modality, tuple(x.shape[1:])), bank, query)


def load_pretrain_data(prepared: Path, modality: str, samples: int, seed: int) -> PretrainData:
    check_modality(prepared, modality)
    if modality == "tabular":
        return _tabular(prepared, samples, seed)
    schema = json.loads((prepared / SCHEMA).read_text(encoding="utf-8"))
    return _arrays(prepared, schema, samples, seed)
