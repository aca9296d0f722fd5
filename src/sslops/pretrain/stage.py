"""The pretrain stage: self-supervised training of a backbone on unlabeled training data.

``pretrain(cfg, prepared_dir, out_dir)`` dispatches on ``cfg.modality`` and
``cfg.pretrain.objective``. With ``pretrain.processes_per_node > 1`` (launcher
``local``) it re-launches itself under ``torchrun`` with that many processes; inside
torchrun (``LOCAL_RANK`` set) every rank trains and rank 0 writes the artifact:

- ``encoder.safetensors`` + ``encoder.json``: the backbone (for the tabular MLP,
  ``encoder.json`` is the ``EncoderSpec`` that :func:`load_encoder` reads);
- ``backbone.json``: backbone name and arguments (rebuilt by :func:`load_backbone`);
- ``heads.safetensors``: the objective's heads (projector, decoders);
- ``summary.json``, ``history.jsonl`` (per epoch), ``metrics.jsonl`` (per step),
  ``loss.png`` and, with kNN monitoring, ``knn.png``;
- ``history.json``: ``history.jsonl``'s rows as one JSON list, which ``dvc plots`` reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from sslops.artifacts import output_lock, read_meta, timed_stage, write_artifact, write_json
from sslops.config import Config
from sslops.errors import ArtifactError, SslopsError
from sslops.models.tabular import EncoderSpec, MLPEncoder
from sslops.optim import stage_numerics
from sslops.plots import line_plot
from sslops.prepare.dataset import check_same_data
from sslops.pretrain.checkpoint import data_digest
from sslops.pretrain.data import PretrainData, load_pretrain_data
from sslops.pretrain.fairness import (
    build_fairness,
    probe_sensitive,
    sensitive_codes,
    sensitive_columns,
)
from sslops.pretrain.launch import launch_torchrun, under_torchrun
from sslops.pretrain.loop import TrainResult, train, write_metrics
from sslops.pretrain.tasks import Task, backbone_spec, build_backbone, build_task, feature_dim


@timed_stage("pretrain")
def pretrain(cfg: Config, prepared_dir: Path, out_dir: Path) -> Path:
    """Run the pretrain stage; returns the artifact directory."""
    check_same_data(cfg, Path(prepared_dir))
    pc = cfg.pretrain
    if pc.processes > 1 and pc.launcher == "local" and not under_torchrun():
        return launch_torchrun(cfg, Path(prepared_dir), Path(out_dir), pc.processes)
    return run_pretrain(cfg, Path(prepared_dir), Path(out_dir))


def checkpoint_dir_for(cfg: Config, out_dir: Path) -> Path:
    if cfg.pretrain.checkpoint_dir:
        return Path(cfg.pretrain.checkpoint_dir)
    return out_dir.parent / f"{out_dir.name}.checkpoints"


def load_training_data(cfg: Config, prepared_dir: Path) -> tuple[PretrainData, list[int] | None]:
    """The rows pretraining trains on, with the sensitive codes where fairness-aware
    pretraining reads them; and those codes' levels (None without fairness)."""
    pc = cfg.pretrain
    data = load_pretrain_data(prepared_dir, cfg.modality, pc.knn_samples, cfg.seed)
    levels: list[int] | None = None
    if pc.fairness.method != "none":
        data.sensitive, levels = sensitive_codes(prepared_dir, sensitive_columns(cfg))
    return data, levels


def training_data_digest(cfg: Config, prepared_dir: Path) -> str:
    """The sha256 a checkpoint of this config on ``prepared_dir`` records (``data_sha256``):
    what the launcher compares before it says a job resumes, as the pod does."""
    data, _ = load_training_data(cfg, prepared_dir)
    return data_digest(data.x, data.sensitive)


def _start_process_group() -> tuple[torch.device, bool]:
    """Join torchrun's process group; (device, whether this call created the group)."""
    if not under_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return torch.device("cpu") if not torch.cuda.is_available() else torch.device("cuda"), False
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if dist.is_initialized():
        return device, False
    # torchrun --max-restarts reuses its rendezvous store for the restarted group, where the
    # previous attempt's peer addresses are still published: keys per attempt, or gloo
    # may connect to a dead rank's port ("Connection refused") and waste the restart.
    store, rank, size = next(dist.rendezvous("env://"))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        store=dist.PrefixStore(f"sslops/attempt_{attempt}", store),
        rank=rank,
        world_size=size,
    )
    return device, True


@contextlib.contextmanager
def _checkpoint_lock(checkpoints: Path, out_dir: Path, named: bool) -> Iterator[None]:
    """Rank 0 holds ``checkpoints``' :func:`~sslops.artifacts.output_lock` while the ranks
    train (it alone writes checkpoints): a second run given the same checkpoint folder
    (``pretrain.checkpoint_dir``, ``named``) is refused at once, naming the folder and the
    run that writes it, instead of both saving into it. Every rank refuses together (rank
    0's answer is broadcast), so no rank waits on a peer that left."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    remedy = "set another pretrain.checkpoint_dir" if named else "choose another --out"
    with contextlib.ExitStack() as held:
        refused = None
        if rank == 0:
            try:
                held.enter_context(output_lock(
                    checkpoints, f"pretrain --out {out_dir}", f"wait for it to end, or {remedy}"
                ))  # fmt: skip
            except SslopsError as exc:
                refused = str(exc)
            except OSError as exc:  # the folder above is not writable: no lock file there
                refused = (f"checkpoint folder {checkpoints}: cannot write its lock file "
                           f"beside it ({exc.strerror or exc}); {remedy}")  # fmt: skip
        if dist.is_initialized():
            answer = [refused]
            dist.broadcast_object_list(answer, src=0)
            refused = answer[0]
        if refused is not None:
            raise ArtifactError(refused)
        yield


def _initialize(backbone: nn.Module, source: str) -> None:
    """Load backbone weights from a local file, pretrain artifact or checkpoint folder."""
    path = Path(source)
    candidates = [path, path / "encoder.safetensors"]
    if (path / "latest").is_file():
        candidates.insert(0, path / (path / "latest").read_text().strip() / "model.safetensors")
    file = next((c for c in candidates if c.is_file() and c.suffix == ".safetensors"), None)
    if file is None:
        raise ArtifactError(
            f"pretrain.init_from {source!r}: expected a .safetensors file, a pretrain artifact "
            "or a checkpoint folder on local disk"
        )
    state = load_file(str(file))
    if any(k.startswith("backbone.") for k in state):
        state = {
            k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
        }
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArtifactError(
            f"pretrain.init_from {file}: weights do not fit the backbone "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


@timed_stage("pretrain")
def run_pretrain(
    cfg: Config, prepared_dir: Path, out_dir: Path, stop_after: int | None = None
) -> Path:
    """Train in this process (one rank of torchrun, or alone) and write the artifact on rank 0."""
    pc = cfg.pretrain
    device, created = _start_process_group()
    # pretrain.threads is pretrain's, restored after (optim.stage_numerics): in one process
    # (the stage functions called in turn) it leaked into finetune, whose weights depend on
    # the thread count, so the same config gave another model.onnx than `sslops run`.
    size = dist.get_world_size() if dist.is_initialized() else 1
    checkpoints = checkpoint_dir_for(cfg, out_dir)
    try:
        with (
            _checkpoint_lock(checkpoints, out_dir, bool(pc.checkpoint_dir)),
            stage_numerics(pc.threads or max(1, (os.cpu_count() or 1) // size), cfg.seed),
        ):
            data, levels = load_training_data(cfg, prepared_dir)
            spec = backbone_spec(cfg, data.info)
            task = build_task(cfg, data.info, spec)
            if levels is not None:
                task.fairness = build_fairness(cfg, feature_dim(task.backbone), levels)
            if pc.init_from:
                _initialize(task.backbone, pc.init_from)
            result = train(cfg, data, task, checkpoints, device, stop_after=stop_after)
            if result is not None and (not dist.is_initialized() or dist.get_rank() == 0):
                probe = _probe(cfg, prepared_dir, task, device)
                _write(cfg, prepared_dir, out_dir, task, spec, data.x.shape, result, probe)
                if not pc.checkpoint_dir:
                    shutil.rmtree(checkpoints, ignore_errors=True)
            if dist.is_initialized():
                dist.barrier()
    finally:
        if created:
            dist.destroy_process_group()
    return out_dir


def _probe(cfg: Config, prepared_dir: Path, task: Task, device: torch.device) -> dict[str, Any]:
    """Summary entries on the sensitive attribute: the fairness settings and probe AUCs."""
    fc = cfg.pretrain.fairness
    if cfg.modality != "tabular":
        return {}
    columns = sensitive_columns(cfg)
    entries: dict[str, Any] = {
        "fairness": {"method": fc.method, "weight": fc.weight, "sensitive": columns}
    }
    if fc.probe:
        task.eval()
        entries["sensitive_probe_auc"] = probe_sensitive(
            lambda x: task.embed(x.to(device)), prepared_dir, columns, list(fc.probe),
            fc.probe_rows, cfg.seed,
        )  # fmt: skip
    return entries


def _write(
    cfg: Config, prepared_dir: Path, out_dir: Path, task: Task, spec: dict[str, Any],
    shape: torch.Size, result: TrainResult, probe: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    pc = cfg.pretrain
    history = result.history
    knn = [h["knn_accuracy"] for h in history if "knn_accuracy" in h]
    summary = {
        "objective": pc.objective,
        "backbone": spec["backbone"],
        "modality": cfg.modality,
        "rows": int(shape[0]),
        "features": int(torch.tensor(shape[1:]).prod()),
        "steps": result.total_steps,
        "skipped_nonfinite_steps": result.skipped,
        "final_loss": history[-1]["loss"],
        "seconds": result.seconds,
        "samples_per_s": statistics.median(h["samples_per_s"] for h in history),
        "knn_initial": result.knn_initial,
        "knn_accuracy": knn[-1] if knn else None,
        "precision": pc.precision,
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        # per process: the weights' last bits depend on it (pretrain.threads 0 = the cores)
        "threads": torch.get_num_threads(),
        "resumed_from_step": result.resumed_from,
        **(probe or {}),
    }
    backbone_state = {
        k: v.detach().cpu().contiguous() for k, v in task.backbone.state_dict().items()
    }
    heads = {
        k: v.detach().cpu().contiguous()
        for k, v in task.state_dict().items()
        if not k.startswith(("backbone.", "fairness."))  # the adversary never ships
    }  # fmt: skip
    if isinstance(task.backbone, MLPEncoder):
        encoder_json: dict[str, Any] = asdict(task.backbone.spec)
    else:
        encoder_json = spec
    with write_artifact(
        out_dir, "pretrain", cfg.model_dump(mode="json"), {"prepared": prepared_dir}
    ) as tmp:
        save_file(backbone_state, str(tmp / "encoder.safetensors"))
        if heads:
            save_file(heads, str(tmp / "heads.safetensors"))
        write_json(tmp / "encoder.json", encoder_json)
        write_json(tmp / "backbone.json", spec)
        write_json(tmp / "summary.json", summary)
        write_metrics(tmp / "history.jsonl", history)
        write_json(tmp / "history.json", history)  # the same rows for `dvc plots` (no JSONL)
        write_metrics(tmp / "metrics.jsonl", result.steps)
        epochs = [h["epoch"] for h in history]
        line_plot(
            tmp / "loss.png", {pc.objective: (epochs, [h["loss"] for h in history])},
            "epoch", "loss", f"{pc.objective} pretraining loss",
        )  # fmt: skip
        if knn:
            knn_epochs = [h["epoch"] for h in history if "knn_accuracy" in h]
            if result.knn_initial is not None:
                knn_epochs, knn = [0, *knn_epochs], [result.knn_initial, *knn]
            line_plot(
                tmp / "knn.png", {"kNN": (knn_epochs, knn)}, "epoch", "accuracy",
                f"online kNN accuracy (k={pc.knn_k})",
            )  # fmt: skip


def load_backbone(pretrained_dir: Path) -> nn.Module:
    """Any pretrained backbone (MLP, FT-Transformer, ResNet-18, ViT-Tiny, 1-D ResNet), eval mode."""
    read_meta(pretrained_dir, "pretrain")
    spec = json.loads((pretrained_dir / "backbone.json").read_text(encoding="utf-8"))
    backbone = build_backbone(spec)
    backbone.load_state_dict(load_file(str(pretrained_dir / "encoder.safetensors")))
    return backbone.eval()


def load_encoder(pretrained_dir: Path) -> MLPEncoder:
    """The tabular MLP encoder of a pretrain artifact (what finetune uses for tables)."""
    read_meta(pretrained_dir, "pretrain")
    raw = json.loads((pretrained_dir / "encoder.json").read_text(encoding="utf-8"))
    if "backbone" in raw:
        raise ArtifactError(
            f"{pretrained_dir} holds a {raw['backbone']!r} backbone, not the tabular MLP encoder; "
            "use sslops.pretrain.load_backbone"
        )
    encoder = MLPEncoder(EncoderSpec(**raw))
    encoder.load_state_dict(load_file(str(pretrained_dir / "encoder.safetensors")))
    return encoder.eval()
