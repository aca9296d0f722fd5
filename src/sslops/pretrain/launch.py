"""Run the pretrain stage under ``torchrun`` with N processes on this node (inside a pod).

The resolved config is written to a JSON file next to the output so every rank reads
the same settings; ranks run ``python -m sslops.pretrain``. A failed rank fails the
stage with its exit status; the output appears only if rank 0 completed it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sslops.config import Config
from sslops.errors import SslopsError


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def torchrun_command(config_path: Path, prepared: Path, out: Path, processes: int) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}",
        "-m", "sslops.pretrain",
        "--config", str(config_path), "--prepared", str(prepared), "--out", str(out),
    ]  # fmt: skip


def launch_torchrun(cfg: Config, prepared: Path, out: Path, processes: int) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sslops-torchrun-", dir=out.parent) as work:
        config_path = Path(work) / "config.json"
        config_path.write_text(cfg.to_json(), encoding="utf-8")
        threads = cfg.pretrain.threads or max(1, (os.cpu_count() or 1) // processes)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(torchrun_command(config_path, prepared, out, processes), env=env)
    if done.returncode != 0:
        raise SslopsError(
            f"pretrain under torchrun ({processes} processes) failed with exit status "
            f"{done.returncode}; see the ranks' output above"
        )
    return out
