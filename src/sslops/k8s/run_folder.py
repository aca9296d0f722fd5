"""A training job's run folder on the workspace volume, shared by the launcher and the pods.

``<workspace>/sslops/<job>/`` holds ``config.json``, ``prepared/``, the job's output
``pretrained/`` and its checkpoints ``pretrained.checkpoints/`` (with the ranks' heartbeat
files). The job is named after the KFP run and task (:func:`job_name`), so a retry of the
task finds the folder the earlier attempt left and resumes from it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sslops.errors import SslopsError


def job_name(run_id: str, task_name: str) -> str | None:
    """The training job's name for one task of one KFP run: the same on every retry of the
    task, another in another run. None outside a KFP run (no run id given, or the
    placeholder not filled in)."""
    if not run_id or "{{" in run_id:
        return None
    digest = hashlib.sha256(f"{run_id}/{task_name}".encode()).hexdigest()[:10]
    return f"sslops-pretrain-{digest}"


def stage_run_folder(config_json: str, prepared: Path, run_dir: Path) -> None:
    """The job's inputs in its run folder: the prepared data (kept when an earlier attempt
    staged the same artifact, which a job of that attempt may still read) and the config."""
    from sslops.artifacts import META, sha256_file

    staged = run_dir / "prepared"
    if not (staged / META).is_file() or sha256_file(staged / META) != sha256_file(prepared / META):
        shutil.rmtree(staged, ignore_errors=True)
        partial = run_dir / f".prepared.partial-{uuid.uuid4().hex[:8]}"
        shutil.copytree(prepared, partial)
        partial.rename(staged)
    partial_config = run_dir / f".config.json.partial-{uuid.uuid4().hex[:8]}"
    partial_config.write_text(config_json, encoding="utf-8")
    partial_config.replace(run_dir / "config.json")


def finished_artifact(cfg: Any, out: Path) -> bool:
    """Whether ``out`` is an intact pretrain artifact of this very config (an earlier
    attempt's job finished it, the attempt ended before collecting it)."""
    from sslops.artifacts import META, read_meta

    if not (out / META).is_file():
        return False
    try:
        return bool(read_meta(out, "pretrain")["config"] == cfg.model_dump(mode="json"))
    except SslopsError:
        return False


def resume_or_start_fresh(
    cfg: Any, checkpoints: Path, prepared: Path, echo: Callable[[str], None]
) -> None:
    """Say where the job starts, and clear what it must not resume from: checkpoints of
    other pretrain settings (another config fingerprint), of other training rows than
    ``prepared``'s (the pod's own check, :func:`sslops.pretrain.checkpoint.resume_mismatch`)
    or none intact. A folder the config names itself (``pretrain.checkpoint_dir``) is never
    removed: refused instead. Called before the job is staged or submitted."""
    from sslops.errors import ArtifactError
    from sslops.pretrain.checkpoint import fingerprint, latest_checkpoint, resume_mismatch
    from sslops.pretrain.stage import training_data_digest

    if not checkpoints.is_dir():
        echo(f"no checkpoint in {checkpoints}: the job starts at step 0")
        return
    if not cfg.pretrain.resume:
        problem = "pretrain.resume is false"
    else:
        try:
            latest = latest_checkpoint(checkpoints)
        except ArtifactError as exc:
            latest, problem = None, str(exc)
        else:
            if latest is None:
                echo(f"no checkpoint in {checkpoints}: the job starts at step 0")
                return
            info = json.loads((latest / "checkpoint.json").read_text(encoding="utf-8"))
            wanted = fingerprint(cfg.model_dump(mode="json"))
            mismatch = resume_mismatch(info, wanted, training_data_digest(cfg, prepared))
            if mismatch is None:
                echo(f"resuming from {latest} (step {info['step']}), left by an earlier attempt")
                return
            problem = f"{latest} {mismatch}"
    if cfg.pretrain.checkpoint_dir:
        raise SslopsError(
            f"pretrain.checkpoint_dir {checkpoints}: {problem}; remove that folder or set "
            "another pretrain.checkpoint_dir"
        )
    shutil.rmtree(checkpoints)
    echo(f"starting fresh at step 0: {problem}; removed {checkpoints}")


def leave_run_folder(run_dir: Path, checkpoints: Path, keep: bool, in_use: bool = False) -> None:
    """Remove the run folder, unless a retry of the task can resume from a checkpoint in it
    (one in a ``pretrain.checkpoint_dir`` elsewhere outlives the folder anyway), or the
    job left running for the retry (``in_use``) still reads and writes it."""
    if in_use:
        print(
            f"kept {run_dir}: the job left running works in it, and a retry of this task "
            "follows the job",
            file=sys.stderr,
            flush=True,
        )
        return
    if keep and checkpoints.is_relative_to(run_dir) and any(checkpoints.glob("step-*")):
        print(
            f"kept {run_dir} with its checkpoints in {checkpoints}: a retry of this task "
            "resumes from them; delete the folder if the run is abandoned",
            file=sys.stderr,
            flush=True,
        )
        return
    shutil.rmtree(run_dir, ignore_errors=True)


class ProgressWatch:
    """The ranks' heartbeat files in ``folder``: a stall (no step moved on any rank for
    ``stall_seconds`` of this pod's clock, so the nodes' clocks never matter) is logged."""

    def __init__(
        self, folder: Path, stall_seconds: float, echo: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.folder, self.stall_seconds, self.echo, self.clock = folder, stall_seconds, echo, clock
        self.steps: dict[int, int] = {}
        self.since = self.reported = clock()

    def _read(self) -> dict[int, int]:
        steps = {}
        for file in self.folder.glob("heartbeat-rank-*.json"):
            try:
                record = json.loads(file.read_text(encoding="utf-8"))
                steps[int(record["rank"])] = int(record["step"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or not ours
        return steps

    def check(self, where: str) -> None:
        steps, now = self._read(), self.clock()
        if not steps:
            return  # no heartbeat yet: the pods start, or heartbeats are off
        if steps != self.steps:
            self.steps, self.since, self.reported = steps, now, now
            return
        if now - self.reported >= self.stall_seconds:
            ranks = ", ".join(f"rank {r} at step {s}" for r, s in sorted(steps.items()))
            self.echo(
                f"{where}: no progress for {now - self.since:.0f} s (last heartbeats: {ranks})"
            )
            self.reported = now
