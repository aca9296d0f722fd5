"""Fairness-aware pretraining: keep sensitive attributes out of the learned representation.

``pretrain.fairness.method`` (tabular data) adds one term to the SSL loss, computed on
the backbone's embedding of the clean (un-augmented) batch — what downstream heads see:

- ``adversarial``: :class:`SensitiveAdversary`, a small MLP per sensitive column, predicts
  the column from the embedding through a gradient-reversal layer (Ganin & Lempitsky,
  2015): one backward pass trains the adversary to predict (cross-entropy, learning rate
  x ``adversary_lr_scale``) and the backbone, scaled by ``weight``, to defeat it.
  Measured: the backbone beats the adversary it trains against, yet a probe fitted
  afresh still reads the attribute (docs/pretrain.md) — prefer ``penalty``.
- ``penalty``: :class:`SensitiveDependencePenalty`, ``weight`` x the normalized HSIC
  between the embeddings (Gaussian kernel, median bandwidth) and the one-hot sensitive
  codes; zero exactly when, over the batch, the kernel sees no dependence.

The term is a submodule of the task (``task.fairness``), so DDP all-reduces the
adversary's gradients and checkpoints carry it; the penalty is computed over the global
batch (embeddings gathered with gradients), so two ranks give one process's gradients.
The stage drops it from the artifact: nothing sensitive is needed at inference.

:func:`probe_sensitive` measures what is left: probes fitted on frozen train embeddings
predict each sensitive column; their ROC AUC on the test split goes to ``summary.json``
(``sensitive_probe_auc``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from sslops.config import Config
from sslops.errors import DataError
from sslops.objectives.gather import gather_with_grad
from sslops.prepare.dataset import PreparedData, Split


def sensitive_columns(cfg: Config) -> list[str]:
    """The columns kept out of the embedding and probed (default: ``data.sensitive[0]``)."""
    return list(cfg.pretrain.fairness.sensitive or cfg.data.sensitive[:1])


def _check_columns(data: PreparedData, columns: list[str]) -> None:
    available = data.sensitive
    missing = [c for c in columns if c not in available]
    if missing:
        raise DataError(
            f"{data.path}: sensitive column {missing[0]!r} is not in this prepare artifact; "
            f"available: {', '.join(available) or '(none)'} (prepare it with this config first)"
        )


def sensitive_codes(prepared: Path, columns: list[str]) -> tuple[torch.Tensor, list[int]]:
    """Integer codes ``(N, len(columns))`` of the rows pretraining reads (the training rows,
    then the unlabeled ones) and each column's level count.

    Levels are sorted group names (missing values form a group of their own)."""
    data = PreparedData(prepared)
    _check_columns(data, columns)
    codes, levels = [], []
    for column in columns:
        groups = data.pretraining.groups(column)
        names = sorted(groups.unique())
        index = {name: i for i, name in enumerate(names)}
        codes.append(torch.tensor(groups.map(index).to_numpy(np.int64)))
        levels.append(len(names))
    return torch.stack(codes, dim=1), levels


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; the backward pass multiplies the gradient by ``-scale``."""
    out: torch.Tensor = _ReverseGradient.apply(x, scale)
    return out


class SensitiveAdversary(nn.Module):
    """An MLP per sensitive column predicting it from the embedding behind a gradient-reversal
    layer: ``forward`` returns the summed cross-entropy; minimizing it trains the heads to
    predict and, reversed and scaled by ``weight``, the backbone to make them fail."""

    def __init__(self, dim: int, levels: list[int], hidden: int, weight: float) -> None:
        super().__init__()
        self.weight = weight
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, k)) for k in levels
        )

    def forward(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        # Per-row standardization: the adversary sees the embedding at a fixed scale, so
        # growing the embedding cannot outpace its learning rate.
        reversed_h = reverse_gradient(F.layer_norm(h.float(), h.shape[-1:]), self.weight)
        losses = [
            F.cross_entropy(head(reversed_h), codes[:, i]) for i, head in enumerate(self.heads)
        ]
        return torch.stack(losses).sum()


def normalized_hsic(h: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with a Gaussian K on ``h`` (bandwidth: median
    squared distance, held fixed) and a linear L on ``onehot``; in [0, 1]."""
    n = h.shape[0]
    d2 = torch.cdist(h, h).square()
    bandwidth = d2.detach()[~torch.eye(n, dtype=torch.bool, device=h.device)].median()
    k = torch.exp(-d2 / bandwidth.clamp(min=1e-12))
    centre = torch.eye(n, device=h.device) - 1.0 / n
    kc, lc = centre @ k @ centre, centre @ (onehot @ onehot.T) @ centre
    cross = (kc * lc).sum()
    return cross / ((kc * kc).sum() * (lc * lc).sum()).sqrt().clamp(min=1e-12)


class SensitiveDependencePenalty(nn.Module):
    """``weight`` x :func:`normalized_hsic` between the global batch's embeddings and codes."""

    def __init__(self, levels: list[int], weight: float) -> None:
        super().__init__()
        self.levels, self.weight = levels, weight

    def forward(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        with torch.autocast(h.device.type, enabled=False):  # fp32 kernels under bf16 autocast
            everything = gather_with_grad(h.float())
            all_codes = gather_with_grad(codes)
            onehot = torch.cat(
                [F.one_hot(all_codes[:, i], k).float() for i, k in enumerate(self.levels)], dim=1
            )
            return self.weight * normalized_hsic(everything, onehot)


def build_fairness(cfg: Config, dim: int, levels: list[int]) -> nn.Module:
    fc = cfg.pretrain.fairness
    if fc.method == "adversarial":
        return SensitiveAdversary(dim, levels, fc.adversary_hidden, fc.weight)
    return SensitiveDependencePenalty(levels, fc.weight)


def parameter_groups(task: nn.Module, cfg: Config) -> list[dict[str, Any]]:
    """Optimizer groups: the adversary learns ``adversary_lr_scale`` times faster, so it keeps
    up with a backbone that is trained to defeat it (one step each per batch)."""
    fairness = getattr(task, "fairness", None)
    if fairness is None:
        return [{"params": list(task.parameters())}]
    own = list(fairness.parameters())
    rest = [p for p in task.parameters() if all(p is not q for q in own)]
    groups: list[dict[str, Any]] = [{"params": rest}]
    if own:
        lr = cfg.pretrain.learning_rate * cfg.pretrain.fairness.adversary_lr_scale
        groups.append({"params": own, "lr": lr})
    return groups


def _rows(split: Split, count: int, seed: int) -> np.ndarray:
    n = len(split.target)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(count, n), replace=False))


def _auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float | None:
    """Binary ROC AUC, or the macro mean of one-vs-rest AUCs over the levels present."""
    if len(classes) == 2:
        return float(roc_auc_score(y == classes[1], proba[:, 1]))
    scores = [
        roc_auc_score(y == c, proba[:, j])
        for j, c in enumerate(classes)
        if 0 < np.sum(y == c) < len(y)
    ]
    return float(np.mean(scores)) if scores else None


def probe_sensitive(
    embed: Callable[[torch.Tensor], torch.Tensor], prepared: Path, columns: list[str],
    probes: list[str], rows: int, seed: int,
) -> dict[str, dict[str, float | None]]:  # fmt: skip
    """``{column: {probe: test ROC AUC}}`` of probes predicting each sensitive column from the
    frozen embedding (fitted on up to ``rows`` train rows, scored on up to ``rows`` test rows;
    several levels: macro one-vs-rest AUC). ``None`` when a split has a single group."""
    data = PreparedData(prepared)
    _check_columns(data, columns)
    train_rows, test_rows = _rows(data.train, rows, seed), _rows(data.test, rows, seed)

    def embedding(split: Split, which: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return embed(torch.tensor(split.features[which])).float().cpu().numpy()

    z_train, z_test = embedding(data.train, train_rows), embedding(data.test, test_rows)
    result: dict[str, dict[str, float | None]] = {}
    for column in columns:
        y_train = data.train.groups(column).to_numpy()[train_rows]
        y_test = data.test.groups(column).to_numpy()[test_rows]
        classes = np.unique(y_train)
        seen = np.isin(y_test, classes)
        scores: dict[str, float | None] = {}
        for name in probes:
            if len(classes) < 2 or len(np.unique(y_test[seen])) < 2:
                scores[name] = None
                continue
            model: Any = (
                make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
                if name == "logistic"
                else HistGradientBoostingClassifier(random_state=seed)
            )
            model.fit(z_train, y_train)
            proba = model.predict_proba(z_test[seen])
            auc = _auc(y_test[seen], proba, model.classes_)
            scores[name] = None if auc is None else round(auc, 5)
        result[column] = scores
    return result
