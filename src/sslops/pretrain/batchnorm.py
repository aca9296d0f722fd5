"""Batch normalization over the global batch on any process-group backend (gloo too).

``torch.nn.SyncBatchNorm`` runs on CUDA only, so with several CPU processes (gloo) each
rank normalized with its own slice's statistics: image and series models (ResNet
BatchNorm, the SimCLR/VICReg projector's BatchNorm1d) then trained differently with
2 processes than with 1 (backbone gradients at cosine 0.2-0.6 on a batch of 8).
:class:`GlobalBatchNorm` takes the mean and variance over every rank's rows with
:func:`sslops.objectives.gather.gather_with_grad` (two all-gathers: the sums, then the
squared deviations from the global mean), so its output, its gradients after DDP's
averaging and its running statistics equal one process's on the whole batch.
The pretraining loop uses it on CPU with more than one process; on CUDA it keeps
``SyncBatchNorm`` (fused kernels).
"""

from __future__ import annotations

from typing import TypeVar, cast

import torch
from torch import nn

from sslops.objectives.gather import gather_with_grad, world

M = TypeVar("M", bound=nn.Module)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm{1,2,3}d whose training statistics cover the rows of every rank."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {x.dim()}-D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world()[1] == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        values = x.float()
        rows = torch.tensor([x.numel() // x.shape[1]], dtype=values.dtype, device=x.device)
        sums = gather_with_grad(torch.cat([values.sum(dims), rows]).unsqueeze(0)).sum(0)
        count = sums[-1].detach()
        mean = sums[:-1] / count
        centred = values - mean.view(shape)
        var = gather_with_grad(centred.square().sum(dims).unsqueeze(0)).sum(0) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var.detach() * count / max(float(count) - 1, 1.0)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return out.to(x.dtype)


def convert_global_batchnorm(module: M) -> M:
    """``module`` with every BatchNorm layer replaced by a :class:`GlobalBatchNorm` holding the
    same parameters and buffers (state-dict keys unchanged)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm
    ):
        converted = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        state = module.state_dict()
        converted.load_state_dict(state)
        converted.train(module.training)
        if state:
            converted.to(next(iter(state.values())).device)
        return cast(M, converted)
    for name, child in module.named_children():
        module.add_module(name, convert_global_batchnorm(child))
    return module
