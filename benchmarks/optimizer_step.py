"""One AdamW step on the real backbones: torch's CPU default (a loop over tensors) vs
``foreach`` vs ``fused`` (what :func:`sslops.optim.adamw` picks on CPU and CUDA).

Parameters get random gradients; each variant takes 5 warm-up steps, then the median of
``--rounds`` rounds of 20 timed steps. Run on the device the training runs on:

    .venv/bin/python benchmarks/optimizer_step.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from sslops.models.tabular import EncoderSpec, MLPEncoder
from sslops.models.vision import ResNet18Cifar, ViTTiny


def _step_ms(params: list[torch.Tensor], rounds: int, **variant: bool) -> float:
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05, **variant)
    for _ in range(5):
        optimizer.step()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(20):
            optimizer.step()
        if params[0].is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / 20 * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {
        "ResNet-18 (CIFAR stem)": ResNet18Cifar(3),
        "ViT-Tiny": ViTTiny(),
        "Adult MLP encoder (configs/adult.yaml)": MLPEncoder(EncoderSpec(120, 256, 3, 128)),
    }
    result = {}
    for name, model in models.items():
        params = [p.to(args.device) for p in model.parameters()]
        for p in params:
            p.grad = torch.randn_like(p)
        row = {"tensors": len(params), "parameters": sum(p.numel() for p in params)}
        for label, variant in (("loop", {"foreach": False}), ("foreach", {"foreach": True}),
                               ("fused", {"fused": True})):  # fmt: skip
            row[f"{label}_ms"] = round(_step_ms(params, args.rounds, **variant), 3)
        row["fused_speedup_over_loop"] = round(row["loop_ms"] / row["fused_ms"], 2)
        result[name] = row
        print(name, row, flush=True)
    print(json.dumps({"device": args.device, "threads": args.threads, "models": result}, indent=2))


if __name__ == "__main__":
    main()
