"""Training checkpoints: atomic folders, weights as safetensors, the rest loaded weights-only.

A checkpoint is ``<dir>/step-00000123/`` with

- ``model.safetensors``: the task's state (backbone + objective heads);
- ``state.pt``: optimizer, scheduler, RNG states (torch's and the view generator's),
  sampler position (epoch, step within it), counters and the epoch's losses so far —
  only tensors, numbers, strings, lists and dicts, read with ``weights_only=True``;
- ``checkpoint.json``: step, epoch, config fingerprint and the training data's sha256
  (both checked on resume) and the sha256 of the two payload files.

It is written into a hidden temporary folder, fsynced, renamed into place, and then
``latest`` (a one-line file) is replaced atomically; a kill at any point leaves the
previous checkpoint usable. The two newest checkpoints are kept: a checkpoint whose
files no longer match their sha256 (truncated, bit-flipped) is skipped with a message
and training resumes from the one before it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sslops.artifacts import fsync_folder, sha256_file, write_json
from sslops.errors import ArtifactError

LATEST = "latest"
KEEP = 2
PAYLOAD = ("model.safetensors", "state.pt")


# pretrain settings that say where, how often or how loudly, not what is learned
OPERATIONAL = frozenset({
    "checkpoint_every", "checkpoint_minutes", "checkpoint_dir", "resume", "threads", "knn_every",
    "processes_per_node", "compile", "heartbeat_seconds", "log_level",
})  # fmt: skip


def fingerprint(config: dict[str, Any]) -> str:
    """Hash of the settings that change the trajectory (not where or how often to save)."""
    pretrain = {k: v for k, v in config.get("pretrain", {}).items() if k not in OPERATIONAL}
    relevant = {
        "seed": config.get("seed"),
        "modality": config.get("modality"),
        "pretrain": pretrain,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def data_digest(*tensors: torch.Tensor | None) -> str:
    """sha256 of the training rows (and sensitive codes), in order: a checkpoint resumes
    only on the data it was trained on (its settings alone do not say which rows)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is None:
            continue
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{array.dtype}{tuple(array.shape)}".encode())
        digest.update(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    return digest.hexdigest()


def resume_mismatch(info: dict[str, Any], config_fingerprint: str, trained_on: str) -> str | None:
    """Why a checkpoint whose ``checkpoint.json`` is ``info`` must not be resumed by a run
    of these pretrain settings (``config_fingerprint``) on these training rows
    (``trained_on``, :func:`data_digest`), or None. The pod checks it before it loads the
    checkpoint, the launcher before it stages and submits the job."""
    if info.get("fingerprint") != config_fingerprint:
        return (
            f"was written with other pretrain settings (config fingerprint "
            f"{info.get('fingerprint')}, this config's {config_fingerprint})"
        )
    if info.get("data_sha256") != trained_on:
        # Same settings, other rows: a re-prepared data set, or two runs sharing one
        # pretrain.checkpoint_dir. Resuming would train on a mix, or hand back the other
        # data's finished weights without one step on this data.
        recorded = str(info.get("data_sha256", "not recorded"))[:16]
        return (
            f"was trained on other training data (sha256 {recorded}, this run's "
            f"{trained_on[:16]}): the checkpoint is for other data"
        )
    return None


def _fsync_dir(path: Path) -> None:
    for file in path.iterdir():
        with open(file, "rb") as fh:
            os.fsync(fh.fileno())


def save_checkpoint(
    directory: Path, step: int, model: nn.Module, state: dict[str, Any], info: dict[str, Any]
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp = directory / f".{name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        torch.save(state, tmp / "state.pt")
        digests = {file: sha256_file(tmp / file) for file in PAYLOAD}
        record = {"step": step, **info, "sha256": digests}
        write_json(tmp / "checkpoint.json", record)
        _fsync_dir(tmp)
        final = directory / name
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_folder(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = directory / f".{LATEST}.{uuid.uuid4().hex[:8]}"
    pointer.write_text(name + "\n")
    with open(pointer, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(pointer, directory / LATEST)
    fsync_folder(directory)  # a power loss after this keeps the pointer and what it names
    for old in sorted(directory.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable checkpoint (a file missing, unreadable or changed), or None."""
    try:
        info = json.loads((path / "checkpoint.json").read_text(encoding="utf-8"))
        digests = info["sha256"]
        for file in PAYLOAD:
            if sha256_file(path / file) != digests[file]:
                return f"{path / file} does not match its sha256 in checkpoint.json"
    except FileNotFoundError as exc:
        return f"{exc.filename} is missing"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{path / 'checkpoint.json'} is unreadable ({type(exc).__name__}: {exc})"
    return None


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest intact checkpoint: the one ``latest`` names, else the newest older one."""
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    named = directory / pointer.read_text().strip()
    older = sorted((p for p in directory.glob("step-*") if p != named), reverse=True)
    for candidate in [named, *older]:
        problem = checkpoint_problem(candidate)
        if problem is None:
            if candidate != named:
                print(f"resuming from the previous checkpoint {candidate}", file=sys.stderr)
            return candidate
        print(f"skipping checkpoint {candidate}: {problem}", file=sys.stderr)
    raise ArtifactError(
        f"no intact checkpoint in {directory}; remove it or set pretrain.resume=false to start over"
    )


def load_checkpoint(path: Path, model: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load weights into ``model``; return ``(state, info)``."""
    try:
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        state = torch.load(path / "state.pt", weights_only=True, map_location="cpu")
        info = json.loads((path / "checkpoint.json").read_text())
    except (OSError, RuntimeError, ValueError) as exc:
        raise ArtifactError(f"checkpoint {path} cannot be loaded: {exc}") from None
    return state, info
