"""All-gather that carries gradients back to the rank that produced each slice.

``torch.distributed.all_gather`` returns tensors without autograd history; using them
as negatives silently drops the gradient through other ranks' copies, which leaves
gradients off by the world size. Here the backward pass sums every rank's gradient
for the gathered tensor (all-reduce) and returns this rank's slice, so a loss whose
mean over ranks equals the single-process loss gets exactly the single-process
gradients after DDP's averaging. Works on gloo (no reduce-scatter needed).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank in rank order (``x`` itself outside DDP).

    Every rank must pass the same number of rows.
    """
    if world()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)
