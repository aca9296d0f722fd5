"""Two gloo ranks give the gradients of one process on the same global batch (tolerance 1e-5).

Peers have shipped contrastive losses whose gathered negatives carry no gradient, which
leaves DDP gradients off by the world size; this compares every parameter's gradient
after DDP's averaging with the single-process gradient, for each objective that gathers
(SCARF/SimCLR NT-Xent, VICReg) and one that does not (VIME); and for BatchNorm layers
(image and series models), which the loop converts to a global-batch BatchNorm on CPU.
"""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from sslops.config import Config, validate_config
from sslops.objectives import Draws, simclr
from sslops.pretrain.batchnorm import convert_global_batchnorm
from sslops.pretrain.tasks import InputInfo, Task, backbone_spec, build_task

OBJECTIVES = ("scarf", "vicreg", "vime")
GLOBAL_BATCH, WORLD = 8, 2
COLUMN_OF = torch.tensor([0, 1, 2, 2, 2, 3])


def tiny_config(objective: str) -> Config:
    return validate_config({
        "data": {"train": "x.csv", "label": "y", "positive": 1, "sensitive": ["s"]},
        "pretrain": {"objective": objective, "hidden_dim": 8, "depth": 2, "embed_dim": 6,
                     "projection_dim": 5, "temperature": 0.5},
    })  # fmt: skip


def tiny_task(objective: str) -> tuple[Task, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(20, len(COLUMN_OF), generator=g)
    info = InputInfo("tabular", (len(COLUMN_OF),), column_of=COLUMN_OF, pool=pool)
    cfg = tiny_config(objective)
    torch.manual_seed(0)
    return build_task(cfg, info, backbone_spec(cfg, info)), pool[:GLOBAL_BATCH]


def gradients(task: Task, batch: torch.Tensor, draws: Draws) -> dict[str, torch.Tensor]:
    model = DistributedDataParallel(task) if dist.is_initialized() else task
    model(batch, draws).backward()
    return {n: p.grad.clone() for n, p in task.named_parameters() if p.grad is not None}


def batchnorm_model() -> torch.nn.Module:
    """A conv layer and a projector with BatchNorm, as in the image/series SimCLR tasks."""
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, 3, padding=1), torch.nn.BatchNorm1d(4), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 5, 6), torch.nn.BatchNorm1d(6),
    )  # fmt: skip


def batchnorm_batch() -> torch.Tensor:
    return torch.randn(GLOBAL_BATCH, 2, 5, generator=torch.Generator().manual_seed(4)) * 3 + 1


def batchnorm_step(model: torch.nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of a loss whose mean over ranks is the one-process loss, and the running
    statistics after the step."""
    wrapped = DistributedDataParallel(model) if dist.is_initialized() else model
    out = wrapped(batch)
    (out.square().mean(1) * torch.arange(1, len(out) + 1)).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return grads | {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def _gather_without_grad(x: torch.Tensor, rank: int) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(WORLD)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x  # only this rank's own slice keeps its gradient
    return torch.cat(parts)


def _rank(rank: int, out: str) -> None:
    # Meet through a file, not a port picked beforehand (another process may take it
    # meanwhile); a rank that never comes fails the other in 2 minutes, not torch's 30.
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank,
                            world_size=WORLD, timeout=timedelta(minutes=2))  # fmt: skip
    try:
        positions = torch.arange(rank, GLOBAL_BATCH, WORLD)  # DistributedSampler's interleave
        result = {}
        for objective in OBJECTIVES:
            task, batch = tiny_task(objective)
            draws = Draws(torch.Generator().manual_seed(1), GLOBAL_BATCH, positions)
            result[objective] = gradients(task, batch[positions], draws)
        # The peers' bug, as a control: other ranks' embeddings gathered without gradient.
        simclr.gather_with_grad = lambda x: _gather_without_grad(x, rank)
        task, batch = tiny_task("scarf")
        draws = Draws(torch.Generator().manual_seed(1), GLOBAL_BATCH, positions)
        result["detached"] = gradients(task, batch[positions], draws)
        rows = torch.arange(rank, GLOBAL_BATCH, WORLD)
        for name, model in (("global_bn", convert_global_batchnorm(batchnorm_model())),
                            ("per_rank_bn", batchnorm_model())):  # fmt: skip
            result[name] = batchnorm_step(model, batchnorm_batch()[rows])
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def rank_gradients(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank, args=(str(out),), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_two_ranks_match_one_process(objective: str, rank_gradients: list[dict]) -> None:
    task, batch = tiny_task(objective)
    single = gradients(task, batch, Draws.local(GLOBAL_BATCH, torch.Generator().manual_seed(1)))
    assert single, "the task has no gradients"
    for rank, grads in enumerate(rank_gradients):
        assert set(grads[objective]) == set(single)
        for name, grad in single.items():
            torch.testing.assert_close(
                grads[objective][name], grad, atol=1e-5, rtol=0,
                msg=lambda m, n=name, r=rank: f"rank {r}, {objective}, {n}: {m}",
            )  # fmt: skip


def test_the_check_catches_a_gather_without_gradient(rank_gradients: list[dict]) -> None:
    task, batch = tiny_task("scarf")
    single = gradients(task, batch, Draws.local(GLOBAL_BATCH, torch.Generator().manual_seed(1)))
    detached = rank_gradients[0]["detached"]
    assert any(
        not torch.allclose(detached[name], grad, atol=1e-5, rtol=0) for name, grad in single.items()
    )


def test_batchnorm_over_two_ranks_matches_one_process(rank_gradients: list[dict]) -> None:
    """gloo has no SyncBatchNorm: the loop's GlobalBatchNorm gives one process's gradients
    and running statistics; plain BatchNorm (per-rank statistics) does not."""
    model = batchnorm_model()
    out = model(batchnorm_batch())
    # each rank weights its rows 1..4 (the loss is not symmetric in the rows); one process
    # weights every rank's rows the same way
    order = torch.cat([torch.arange(r, GLOBAL_BATCH, WORLD) for r in range(WORLD)])
    local_weight = torch.arange(1, GLOBAL_BATCH // WORLD + 1).repeat(WORLD).float()
    weight = torch.empty(GLOBAL_BATCH)
    weight[order] = local_weight
    (out.square().mean(1) * weight).mean().backward()
    single = {n: p.grad.clone() for n, p in model.named_parameters()}
    single |= {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    for rank, result in enumerate(rank_gradients):
        for name, value in single.items():
            torch.testing.assert_close(
                result["global_bn"][name], value, atol=1e-5, rtol=1e-5,
                msg=lambda m, n=name, r=rank: f"rank {r}, {n}: {m}",
            )  # fmt: skip
        assert any(
            not torch.allclose(result["per_rank_bn"][n], v, atol=1e-5, rtol=1e-5)
            for n, v in single.items()
        )
