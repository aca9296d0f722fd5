"""GPU pretraining throughput and share of the bf16 peak: SimCLR ResNet-18 and MAE ViT-Tiny.

The prepared script issue 4 asks for, to run when a GPU is lent (one H200 here). It runs
sslops' real training loop (``sslops.pretrain.loop.train``: batched augmentations on the
device, bf16 autocast, DDP across the torchrun processes, NT-Xent negatives gathered
across ranks) on MNIST-5k as 32x32 RGB from the package data, and reports per workload:

- images/s over all processes (median of the timed steps after ``--warmup`` steps);
- model FLOPs per image, counted with ``torch.utils.flop_counter.FlopCounterMode`` on one
  forward + backward of the same task (augmentation excluded);
- achieved TFLOP/s and its share of ``--peak-tflops`` x processes (H200 SXM bf16 dense:
  989.4 TFLOP/s per GPU, NVIDIA's datasheet figure without sparsity).

    torchrun --standalone --nproc-per-node 1 benchmarks/gpu_pretrain.py \
        --out runs/bench/gpu_pretrain.json

On a CPU-only machine ``--device cpu --batch 16 --steps 3 --warmup 1`` checks the script
(gloo; the peak share is then meaningless and reported as null).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sslops.config import validate_config
from sslops.objectives import Draws
from sslops.pretrain.data import PretrainData
from sslops.pretrain.loop import train
from sslops.pretrain.tasks import InputInfo, backbone_spec, build_task

WORKLOADS = {
    "simclr_resnet18": {"objective": "simclr", "backbone": "resnet18", "temperature": 0.5,
                        "projection_dim": 128},
    "mae_vit_tiny": {"objective": "mae", "backbone": "vit_tiny", "patch_size": 4},
}  # fmt: skip


def mnist_rgb32() -> torch.Tensor:
    """uint8 (5000, 3, 32, 32): the shipped MNIST-5k, bilinear 28 -> 32, grey to RGB."""
    source = resources.files("sslops.datasets") / "mnist" / "mnist_5k.csv.gz"
    with source.open("rb") as raw, gzip.open(raw, "rt") as fh:
        values = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    grey = torch.from_numpy(values[:, :784]).reshape(-1, 1, 28, 28)
    big = F.interpolate(grey, size=(32, 32), mode="bilinear", align_corners=False)
    return big.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


def config(name: str, batch: int, precision: str, compile_: bool) -> Any:
    return validate_config({
        "seed": 0, "modality": "image",
        "data": {"train": "mnist_5k", "format": "pixel_csv", "label": "label"},
        "pretrain": {**WORKLOADS[name], "epochs": 1, "batch_size": batch, "precision": precision,
                     "compile": compile_, "knn_every": 0, "resume": False,
                     "checkpoint_every": 0},
    })  # fmt: skip


def flops_per_image(cfg: Any, info: InputInfo, images: torch.Tensor, device: torch.device) -> float:
    """Forward + backward FLOPs of one training step on ``images``, per image."""
    task = build_task(cfg, info, backbone_spec(cfg, info)).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    batch = images.shape[0]
    draws = Draws(generator, batch, torch.arange(batch, device=device))
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device.type, dtype=torch.bfloat16):
        task(images.to(device), draws).backward()
    return counter.get_total_flops() / batch


def run(name: str, args: argparse.Namespace, images: torch.Tensor, device: torch.device,
        world: int) -> dict[str, Any]:  # fmt: skip
    global_batch = args.batch * world
    cfg = config(name, global_batch, args.precision, args.compile)
    rows = global_batch * (args.warmup + args.steps)
    reps = -(-rows // images.shape[0])
    pool = images.repeat(reps, 1, 1, 1)[:rows]
    info = InputInfo("image", tuple(pool.shape[1:]))
    flops = flops_per_image(cfg, info, pool[: args.batch], device)
    torch.manual_seed(0)
    task = build_task(cfg, info, backbone_spec(cfg, info))
    with tempfile.TemporaryDirectory() as work:
        result = train(cfg, PretrainData(pool, info), task, Path(work), device)
    assert result is not None
    timed = [s["samples_per_s"] for s in result.steps[args.warmup :]]
    images_per_s = statistics.median(timed)
    achieved = images_per_s * flops / 1e12
    peak = args.peak_tflops * world if device.type == "cuda" else None
    return {
        "workload": name, "processes": world, "global_batch": global_batch,
        "precision": args.precision, "compile": args.compile,
        "images_per_s": round(images_per_s, 1), "step_images_per_s": timed,
        "gflops_per_image": round(flops / 1e9, 3), "achieved_tflops": round(achieved, 2),
        "peak_tflops": peak, "share_of_peak": round(achieved / peak, 4) if peak else None,
        "skipped_steps": result.skipped,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workloads", nargs="+", choices=sorted(WORKLOADS), default=sorted(WORKLOADS)
    )
    parser.add_argument("--batch", type=int, default=512, help="images per process and step")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    parser.add_argument("--peak-tflops", type=float, default=989.4, help="bf16 dense peak per GPU")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/gpu_pretrain.json"))
    args = parser.parse_args()

    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch.backends.cudnn.benchmark = True
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    images = mnist_rgb32()
    rows = [run(name, args, images, device, world) for name in args.workloads]
    if local_rank == 0 and (not dist.is_initialized() or dist.get_rank() == 0):
        report = {
            "device": torch.cuda.get_device_name(device) if use_cuda else "cpu",
            "torch": torch.__version__, "results": rows,
        }  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        for r in rows:
            share = f"{r['share_of_peak']:.1%}" if r["share_of_peak"] is not None else "n/a"
            print(f"{r['workload']}: {r['images_per_s']:,.0f} images/s, "
                  f"{r['achieved_tflops']} TFLOP/s, share of bf16 peak {share}")  # fmt: skip
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
