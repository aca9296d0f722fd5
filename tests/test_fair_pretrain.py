"""Fairness-aware pretraining: the penalty removes a leaked sensitive attribute from the
embedding (probe AUC), the adversary never ships, bad columns are refused, DDP is exact."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from sslops.config import Config, validate_config
from sslops.errors import ConfigError, DataError
from sslops.objectives import Draws
from sslops.prepare import prepare
from sslops.pretrain import pretrain
from sslops.pretrain.fairness import (
    SensitiveAdversary,
    build_fairness,
    normalized_hsic,
    reverse_gradient,
    sensitive_codes,
)
from sslops.pretrain.stage import load_encoder
from sslops.pretrain.tasks import Task, feature_dim
from tests.test_ddp import GLOBAL_BATCH, WORLD, free_port, gradients, tiny_task


def toy_config(root: Path, **fairness: Any) -> Config:
    return validate_config({
        "data": {"train": str(root / "toy.csv"), "label": "y", "positive": "yes",
                 "sensitive": ["s"]},
        "prepare": {"sensitive_as_features": False},
        "pretrain": {"epochs": 20, "batch_size": 128, "hidden_dim": 32, "depth": 2,
                     "embed_dim": 8, "projection_dim": 8, "threads": 1, "knn_every": 0,
                     "fairness": {"probe_rows": 1000, **fairness}},
    })  # fmt: skip


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`s` is not an input, but the numeric column `leak` gives it away (probe AUC ~0.99)."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    n = 800
    s = rng.integers(0, 2, n)
    frame = pd.DataFrame({
        "leak": s * 2.0 + rng.normal(0, 0.3, n),
        **{f"x{i}": rng.normal(0, 1, n) for i in range(4)},
        "s": np.where(s == 1, "A", "B"),
    })  # fmt: skip
    frame["y"] = np.where(frame["x0"] + rng.normal(0, 0.5, n) > 0, "yes", "no")
    frame.round(3).to_csv(root / "toy.csv", index=False)
    return prepare(toy_config(root), root / "prepared")


def _probe(out: Path) -> float:
    summary = json.loads((out / "summary.json").read_text())
    return float(summary["sensitive_probe_auc"]["s"]["logistic"])


@pytest.fixture(scope="module")
def plain(toy: Path) -> Path:
    return pretrain(toy_config(toy.parent), toy, toy.parent / "plain")


def test_penalty_removes_the_leaked_attribute_from_the_embedding(toy: Path, plain: Path) -> None:
    fair = pretrain(
        toy_config(toy.parent, method="penalty", weight=10.0), toy, toy.parent / "penalty"
    )
    assert _probe(plain) > 0.9  # the plain encoder keeps `leak`, so `s` is readable
    assert _probe(fair) < _probe(plain) - 0.2
    summary = json.loads((fair / "summary.json").read_text())
    assert summary["fairness"] == {"method": "penalty", "weight": 10.0, "sensitive": ["s"]}


def test_the_adversary_never_ships(toy: Path) -> None:
    out = pretrain(
        toy_config(toy.parent, method="adversarial", weight=1.0, probe=[]), toy, toy.parent / "adv"
    )
    for name in ("encoder.safetensors", "heads.safetensors"):
        keys = set(load_file(str(out / name)))
        assert keys and not any("fairness" in k for k in keys), name
    encoder = load_encoder(out)  # the plain MLP contract: features in, embedding out
    assert encoder(torch.zeros(3, encoder.spec.input_dim)).shape == (3, 8)
    assert "sensitive_probe_auc" not in json.loads((out / "summary.json").read_text())


def test_reversed_gradient_trains_the_adversary_and_fights_it_in_the_backbone() -> None:
    torch.manual_seed(0)
    h = torch.randn(16, 4, requires_grad=True)
    codes = torch.randint(0, 2, (16, 1))
    adversary = SensitiveAdversary(4, [2], hidden=8, weight=3.0)
    adversary(h, codes).backward()
    reversed_grad, head_grad = h.grad.clone(), adversary.heads[0][0].weight.grad.clone()
    h.grad, adversary.heads[0][0].weight.grad = None, None
    plain = SensitiveAdversary(4, [2], hidden=8, weight=3.0)
    plain.load_state_dict(adversary.state_dict())
    plain.weight = -1.0  # no reversal: ordinary gradient descent on the cross-entropy
    plain(h, codes).backward()
    torch.testing.assert_close(reversed_grad, -3.0 * h.grad)
    torch.testing.assert_close(head_grad, plain.heads[0][0].weight.grad)
    x = torch.ones(2, requires_grad=True)
    reverse_gradient(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((2,), -0.5))


def test_normalized_hsic_sees_dependence_and_not_independence() -> None:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2, (200,), generator=g)
    onehot = torch.nn.functional.one_hot(codes, 2).float()
    noise = torch.randn(200, 4, generator=g)
    dependent = noise + 3 * codes[:, None].float()
    assert normalized_hsic(noise, onehot) < 0.05 < 0.5 < normalized_hsic(dependent, onehot)


def test_unknown_sensitive_column_is_one_clear_error(toy: Path) -> None:
    raw = {"data": {"train": "x.csv", "label": "y", "positive": 1, "sensitive": ["sex", "race"]},
           "pretrain": {"fairness": {"method": "penalty", "sensitive": ["gender"]}}}  # fmt: skip
    with pytest.raises(ConfigError) as error:
        validate_config(raw)
    message = str(error.value)
    assert "'gender'" in message and "sex, race" in message and "\n" not in message
    with pytest.raises(DataError, match=r"'gender'.*available: s"):
        sensitive_codes(toy, ["gender"])
    image = {"modality": "image", "data": {"train": "x", "label": "y"},
             "pretrain": {"fairness": {"method": "adversarial"}}}  # fmt: skip
    with pytest.raises(ConfigError, match="needs tabular data"):
        validate_config(image)


# DDP: the fairness term on two gloo ranks gives the single-process gradients.

METHODS = ("adversarial", "penalty")


def fair_task(method: str) -> tuple[Task, torch.Tensor, torch.Tensor]:
    task, batch = tiny_task("scarf")
    cfg = validate_config({
        "data": {"train": "x.csv", "label": "y", "positive": 1, "sensitive": ["s"]},
        "pretrain": {"fairness": {"method": method, "weight": 2.0, "adversary_hidden": 4}},
    })  # fmt: skip
    torch.manual_seed(1)
    task.fairness = build_fairness(cfg, feature_dim(task.backbone), [3])
    codes = torch.tensor([[0], [1], [2], [0], [1], [1], [2], [0]])
    return task, batch, codes


def fair_gradients(task: Task, batch: torch.Tensor, codes: torch.Tensor, draws: Draws) -> dict:
    model: Any = torch.nn.parallel.DistributedDataParallel(task) if dist.is_initialized() else task
    model(batch, draws, codes).backward()
    return {n: p.grad.clone() for n, p in task.named_parameters() if p.grad is not None}


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        positions = torch.arange(rank, GLOBAL_BATCH, WORLD)
        result = {}
        for method in METHODS:
            task, batch, codes = fair_task(method)
            draws = Draws(torch.Generator().manual_seed(1), GLOBAL_BATCH, positions)
            result[method] = fair_gradients(task, batch[positions], codes[positions], draws)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_two_ranks_match_one_process_with_the_fairness_term(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for method in METHODS:
        task, batch, codes = fair_task(method)
        draws = Draws.local(GLOBAL_BATCH, torch.Generator().manual_seed(1))
        single = fair_gradients(task, batch, codes, draws)
        assert any(n.startswith("fairness.") for n in single) == (method == "adversarial")
        again = Draws.local(GLOBAL_BATCH, torch.Generator().manual_seed(1))
        plain = gradients(tiny_task("scarf")[0], batch, again)
        assert not torch.allclose(single["backbone.net.0.weight"], plain["backbone.net.0.weight"])
        for rank, grads in enumerate(ranks):
            assert set(grads[method]) == set(single)
            for name, grad in single.items():
                torch.testing.assert_close(
                    grads[method][name], grad, atol=1e-5, rtol=0,
                    msg=lambda m, n=name, r=rank, k=method: f"rank {r}, {k}, {n}: {m}",
                )  # fmt: skip
