"""Run the pretrain stage under ``torchrun`` with N processes on this node (inside a pod).

The resolved config is written to a JSON file next to the output so every rank reads
the same settings; ranks run ``python -m sslops.pretrain``. A failed rank fails the
stage with its exit status; the output appears only if rank 0 completed it.

With ``SSLOPS_LOG_FORMAT=json`` the ranks (which inherit it) write JSON objects themselves;
torchrun's own lines (its elastic agent's: a rank's failure, a restart) come through a pipe
here and are written as objects too, with logger ``torchrun``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from sslops.config import Config
from sslops.console import JsonLines, log_format
from sslops.errors import SslopsError

_GLOG = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d\d")
_GLOG_LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "critical"}


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
        status = _run_torchrun(torchrun_command(config_path, prepared, out, processes), env)
    if status != 0:
        raise SslopsError(
            f"pretrain under torchrun ({processes} processes) failed with exit status "
            f"{status}; see the ranks' output above"
        )
    return out


def _run_torchrun(command: list[str], env: dict[str, str]) -> int:
    """torchrun's exit status. Under the JSON log format its stderr, which the ranks share,
    is read here line by line: a rank's object passes as it is, any other line (torchrun's,
    or what a rank wrote outside sslops, such as a crash of the interpreter) becomes one."""
    if log_format() != "json":
        return subprocess.run(command, env=env).returncode
    lines = sys.stderr if isinstance(sys.stderr, JsonLines) else JsonLines(sys.stderr)
    traceback: list[str] = []
    with subprocess.Popen(
        command, env=env, stderr=subprocess.PIPE, text=True, errors="backslashreplace"
    ) as torchrun:
        assert torchrun.stderr is not None
        try:
            for line in torchrun.stderr:
                if traceback or line.startswith("Traceback (most recent call last)"):
                    traceback.append(line.rstrip("\n"))  # torchrun's last words: one object
                elif line.strip():
                    glog = _GLOG.match(line)  # torch's C++-style prefix: E1202 02:30:11.904 ...
                    level = _GLOG_LEVELS[glog[1]] if glog else None
                    lines.emit(line, level=level, stage="pretrain", logger="torchrun")
        except BaseException:  # as subprocess.run does: no torchrun left behind
            torchrun.kill()
            raise
    if traceback:
        lines.emit("\n".join(traceback), level="error", stage="pretrain", logger="torchrun")
    return torchrun.returncode
