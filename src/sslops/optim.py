"""The optimizer every training loop here uses: AdamW, fused where torch has the kernel.

torch's default AdamW on CPU updates one parameter tensor at a time in Python
(``foreach`` is the default only when every parameter is on a GPU). The fused kernel
updates all of them in one call per step: on the 2-core CPU an AdamW step took 5.9x less
time for ResNet-18 (31 -> 5.3 ms), 3.7x for ViT-Tiny and 3.8x for the Adult MLP
(``benchmarks/optimizer_step.py``; docs/pretrain.md, "Optimizer"). Same update rule; the
numbers differ from the unfused loop only in float rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch

FUSED_DEVICES = ("cpu", "cuda")  # torch has fused AdamW kernels for both since 2.4


def adamw(params: Iterable[Any], **settings: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW(params, **settings)`` with ``fused=True`` when every parameter is
    a floating-point tensor on a CPU or CUDA device."""
    groups = list(params)
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(tensors) and all(
        p.is_floating_point() and p.device.type in FUSED_DEVICES for p in tensors
    )
    return torch.optim.AdamW(groups, fused=fused or None, **settings)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (0: left as they are) for the block, then
    restored: the weights' last bits depend on the count, and a stage run in the same
    process as the next must not change that one's (docs/audit.md, "Rebuilding")."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def stage_numerics(threads: int, seed: int) -> Iterator[None]:
    """A training stage's numerics: :func:`torch_threads`, and torch's global generators
    seeded with ``seed`` for the block and given back as they were after it, so a caller's
    own random stream (a notebook calling the stage functions) goes on as if the stage had
    not run. Of the GPUs only the current one's generator is kept, when CUDA is started: a
    torchrun rank forking every device's would open a context on each."""
    with torch_threads(threads), callers_generators():
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def callers_generators() -> Iterator[None]:
    """torch's global generators given back as they were after the block (a decorator too):
    the stages that build torch modules to load weights into (evaluate, export) draw their
    initial weights from them. Of the GPUs only the current one's, when CUDA is started."""
    started = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = [torch.cuda.current_device()] if started else []
    with torch.random.fork_rng(devices=devices):
        yield
