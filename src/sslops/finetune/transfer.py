"""Transfer from a pretrained encoder: linear probe and full fine-tuning, each with an optional
fairness penalty.

- :func:`fit_linear_head` fits a logistic-regression head on frozen embeddings with
  full-batch L-BFGS (deterministic); the loss is mean log-loss + scikit-learn's L2
  scaling (``1 / (2 C n)``) + ``weight`` * penalty.
- :func:`fine_tune` trains encoder and head together with AdamW: the head alone for
  ``freeze_epochs`` (freeze-then-unfreeze), then everything, with layer-wise
  learning-rate decay so layers near the input move least.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslops.errors import SslopsError
from sslops.models.tabular import TabularClassifier
from sslops.optim import adamw

Penalty = Callable[..., torch.Tensor]  # (probabilities, rows=None) -> scalar


def fit_linear_head(
    z_labeled: torch.Tensor,
    y_labeled: torch.Tensor,
    *,
    regularization: float,
    steps: int = 300,
    penalty: Penalty | None = None,
    z_penalty: torch.Tensor | None = None,
    weight: float = 0.0,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    info: dict[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the head's (weight vector, bias); ``info["n_iter"]`` gets L-BFGS's iteration
    count when ``info`` is given."""
    dim = z_labeled.shape[1]
    w0, b0 = init if init is not None else (torch.zeros(dim), torch.zeros(()))
    w = w0.detach().clone().requires_grad_(True)
    b = b0.detach().clone().reshape(()).requires_grad_(True)
    l2 = 1.0 / (2.0 * regularization * len(y_labeled))
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")
    use_penalty = penalty is not None and weight > 0
    z_pen = z_penalty if z_penalty is not None else z_labeled

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z_labeled @ w + b, y_labeled) + l2 * (w @ w)
        if use_penalty:
            assert penalty is not None
            loss = loss + weight * penalty(torch.sigmoid(z_pen @ w + b))
        loss.backward()
        return loss

    optimizer.step(closure)
    if info is not None:
        info["n_iter"] = int(optimizer.state[w].get("n_iter", 0))
    return w.detach(), b.detach()


@dataclass
class FineTuneSettings:
    epochs: int = 10
    freeze_epochs: int = 2
    learning_rate: float = 1e-3
    layer_decay: float = 0.7
    weight_decay: float = 1e-4
    batch_size: int = 256
    penalty_batch: int = 4096


def _param_groups(model: TabularClassifier, s: FineTuneSettings) -> list[dict]:
    groups: list[dict] = [{"params": list(model.head.parameters()), "lr": s.learning_rate}]
    if model.encoder is None:
        return groups
    linears = [m for m in model.encoder.net if isinstance(m, nn.Linear)]
    norms = [m for m in model.encoder.net if isinstance(m, nn.LayerNorm)]
    depth = len(linears)
    for i, layer in enumerate(linears):
        scale = s.layer_decay ** (depth - i)  # the last layer decays least
        params = list(layer.parameters())
        if i < len(norms):
            params += list(norms[i].parameters())
        groups.append({"params": params, "lr": s.learning_rate * scale, "encoder": True})
    return groups


def _check_scores_finite(
    model: TabularClassifier, x: torch.Tensor, epoch: int, settings: FineTuneSettings,
    weight: float,
) -> None:  # fmt: skip
    """Raise when an epoch's updates left ``model`` scoring finite rows of ``x`` as NaN or
    inf: before, the NaN model went on to the fairness post-processing or the metrics and
    failed there in scikit-learn ("Input scores contains NaN"), far from the cause."""
    x = x[torch.isfinite(x).all(1)]
    model.eval()
    try:
        with torch.no_grad():
            bad = int((~torch.isfinite(model.logits(x))).sum()) if len(x) else 0
    finally:
        model.train()
    if bad:
        penalty = (
            f" or the fairness penalty weights (finetune.fairness.penalties; this one {weight:g})"
            if weight
            else ""
        )
        raise SslopsError(
            f"full fine-tuning diverged: after epoch {epoch + 1} of {settings.epochs} the model "
            f"scores {bad} of {len(x)} labeled rows as NaN or inf; lower "
            f"finetune.full.learning_rate (now {settings.learning_rate:g}){penalty}"
        )


def fine_tune(
    start: TabularClassifier,
    x_labeled: torch.Tensor,
    y_labeled: torch.Tensor,
    settings: FineTuneSettings,
    *,
    seed: int,
    penalty: Penalty | None = None,
    x_penalty: torch.Tensor | None = None,
    weight: float = 0.0,
) -> TabularClassifier:
    """Train a copy of ``start`` (encoder + head); ``start`` is left untouched."""
    model = copy.deepcopy(start).train()
    generator = torch.Generator().manual_seed(seed)
    optimizer = adamw(_param_groups(model, settings), weight_decay=settings.weight_decay)
    n = len(y_labeled)
    batch = min(settings.batch_size, n)
    steps = max(n // batch, 1)
    use_penalty = penalty is not None and weight > 0 and x_penalty is not None
    for epoch in range(settings.epochs):
        frozen = epoch < settings.freeze_epochs
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.requires_grad_(not (frozen and group.get("encoder", False)))
        order = torch.randperm(n, generator=generator)
        for step in range(steps):
            rows = order[step * batch : (step + 1) * batch]
            loss = F.binary_cross_entropy_with_logits(
                model.logits(x_labeled[rows]), y_labeled[rows]
            )
            if use_penalty:
                assert penalty is not None and x_penalty is not None
                # A population statistic, estimated on a large random subset each step.
                sub = torch.randint(
                    0, len(x_penalty), (settings.penalty_batch,), generator=generator
                )
                loss = loss + weight * penalty(torch.sigmoid(model.logits(x_penalty[sub])), sub)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _check_scores_finite(
            model, x_labeled[:batch], epoch, settings, weight if use_penalty else 0.0
        )
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()
