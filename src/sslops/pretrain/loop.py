"""The training loop shared by every modality and objective.

One process or many (``torchrun``, gloo on CPU, NCCL on GPU): the global batch is
``pretrain.batch_size`` rows; ``DistributedSampler`` gives each rank an interleaved
share of the same seeded permutation, so the rows of step k over all ranks are the
rows a single process would take, and :class:`Draws` makes their views identical too.
Each step: views on the device, bf16 autocast (optional), loss, backward (DDP
averages gradients), then — unless the loss was non-finite on any rank, in which case
the step is skipped and counted — the optimizer and learning-rate schedule step (linear
warmup, ``pretrain.warmup_epochs``, then cosine decay).
Checkpoints every ``checkpoint_every`` steps, every ``checkpoint_minutes`` (by default
10 under a job launcher) and at the end; a run resumes from the latest one exactly where
it stopped. Every ``heartbeat_seconds`` each rank logs where it is (logger
``sslops.pretrain``: rank 0 at info, the others at debug), so a hung rank shows as the one
whose heartbeat stopped. SIGTERM (a preempted pod, ``docker stop``, torchrun
passing on its own SIGTERM) does not end a rank where it lands: the ranks finish the step
under way, agree through the step's all-reduce to stop after it, rank 0 writes a
checkpoint, and every rank raises :class:`StoppedBySigterm` (exit status 143).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from sslops.artifacts import json_text
from sslops.config import Config, PretrainConfig
from sslops.console import JsonLines, JsonLogHandler
from sslops.errors import ArtifactError, ConfigError, SslopsError
from sslops.objectives import Draws
from sslops.objectives.gather import world
from sslops.optim import adamw
from sslops.pretrain.batchnorm import convert_global_batchnorm
from sslops.pretrain.checkpoint import (
    data_digest,
    fingerprint,
    latest_checkpoint,
    load_checkpoint,
    resume_mismatch,
    save_checkpoint,
)
from sslops.pretrain.data import PretrainData
from sslops.pretrain.fairness import parameter_groups
from sslops.pretrain.knn import knn_accuracy
from sslops.pretrain.tasks import Task
from sslops.progress import task_progress
from sslops.sigterm import Terminated, sigterm_flag


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    steps: list[dict[str, Any]] = field(default_factory=list)  # one row per optimizer step
    skipped: int = 0
    total_steps: int = 0
    seconds: float = 0.0
    knn_initial: float | None = None
    resumed_from: int | None = None


class StoppedBySigterm(Terminated):
    """SIGTERM arrived during training; the ranks stopped after one step, rank 0 saved it."""


def _stopped(rank: int, step: int, total: int, saved: Path | None) -> StoppedBySigterm:
    where = f"checkpoint {saved}" if saved is not None else "rank 0 writes the checkpoint"
    return StoppedBySigterm(
        f"rank {rank}: pretraining stopped by SIGTERM after step {step} of {total}; {where}; "
        "the same command resumes from it"
    )


log = logging.getLogger("sslops.pretrain")
clock = time.monotonic  # the checkpoint and heartbeat clock (tests substitute their own)
JOB_CHECKPOINT_MINUTES = 10.0  # pretrain.checkpoint_minutes unset, under a job launcher


def checkpoint_seconds(cfg: Config) -> float:
    """Seconds between timed checkpoints (0: none): ``pretrain.checkpoint_minutes``, or by
    default 10 minutes for a training job (preemptible nodes) and none for a local run."""
    minutes = cfg.pretrain.checkpoint_minutes
    if minutes is None:
        minutes = JOB_CHECKPOINT_MINUTES if cfg.pretrain.launcher != "local" else 0.0
    return minutes * 60


@contextlib.contextmanager
def _shown_log(level: str) -> Iterator[None]:
    """The loop's log at ``level`` (``pretrain.log_level``) while it runs. Where nothing set
    logging up (a torchrun rank in a pod) it goes to stderr through a handler of its own;
    elsewhere the process's setup decides, and only debug is asked of it. The level and the
    handlers are given back afterwards: a library process goes on with its own."""
    previous, added = log.level, None
    own = [h for h in log.handlers if getattr(h, "sslops_rank_log", False)]
    if not own and not log.hasHandlers():
        handler: logging.Handler
        if isinstance(sys.stderr, JsonLines):  # SSLOPS_LOG_FORMAT=json: its time and level
            handler = JsonLogHandler(sys.stderr)
        else:
            handler = logging.StreamHandler()
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
        handler.sslops_rank_log = True  # type: ignore[union-attr]
        log.addHandler(handler)
        own, added = [handler], handler
    if own:
        log.setLevel(level.upper())
    elif level == "debug":
        log.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        log.setLevel(previous)
        if added is not None:
            log.removeHandler(added)


HEARTBEAT_FILE = "heartbeat-rank-{rank:05d}.json"  # in the checkpoint folder


class Heartbeat:
    """One line per ``seconds`` from each rank: rank, step, samples/s since the last line,
    last loss. Rank 0 logs at info, the others at debug (``pretrain.log_level: debug``).
    The same figures go to ``folder/heartbeat-rank-R.json`` (replaced atomically), where the
    training-job launcher, which shares the workspace volume, tells progress from a stall."""

    def __init__(
        self, rank: int, size: int, total: int, batch: int, seconds: float, folder: Path
    ) -> None:
        self.rank, self.size, self.total, self.batch, self.seconds = (
            rank,
            size,
            total,
            batch,
            seconds,
        )
        self.file = folder / HEARTBEAT_FILE.format(rank=rank)
        self.since, self.step = clock(), 0

    def start(self, step: int) -> None:
        self.since, self.step = clock(), step

    def beat(self, step: int, loss: float | None) -> None:
        if not self.seconds:
            return
        now = clock()
        if now - self.since < self.seconds:
            return
        rate = (step - self.step) * self.batch / max(now - self.since, 1e-9)
        level = logging.INFO if self.rank == 0 else logging.DEBUG
        shown = f"{loss:.4f}" if loss is not None else "skipped (non-finite)"
        log.log(level, "heartbeat rank %d/%d step %d/%d %.1f samples/s loss %s",
                self.rank, self.size, step, self.total, rate, shown)  # fmt: skip
        self.since, self.step = now, step
        record = {"rank": self.rank, "step": step, "total": self.total,
                  "samples_per_s": round(rate, 1), "loss": loss}  # fmt: skip
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            partial = self.file.with_name(f".{self.file.name}.partial")
            partial.write_text(json_text(record) + "\n", encoding="utf-8")
            partial.replace(self.file)
        except OSError as exc:  # a full or read-only volume must not stop training
            log.warning("rank %d: heartbeat file %s not written: %s", self.rank, self.file, exc)


WARMUP_SHARE = {"mae": 0.05}  # objectives that warm up by default: share of the epochs


def warmup_steps(cfg: Config, steps_per_epoch: int) -> int:
    """Optimizer steps of linear warmup: ``pretrain.warmup_epochs`` or the objective's share."""
    pc = cfg.pretrain
    epochs = pc.warmup_epochs
    if epochs is None:
        epochs = WARMUP_SHARE.get(pc.objective, 0.0) * pc.epochs
    return math.ceil(epochs * steps_per_epoch) if epochs > 0 else 0


def lr_factor(total_steps: int, warmup: int) -> Callable[[int], float]:
    """Learning-rate multiplier at step s: linear warmup to 1, then cosine decay to 0."""

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        span = max(total_steps - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min((s - warmup) / span, 1.0)))

    return factor


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _finite_rows(x: torch.Tensor, count: int) -> torch.Tensor:
    """Up to ``count`` of the first rows of ``x`` without a NaN or inf input: rows whose
    embedding is finite whenever the encoder is."""
    sample = x[:count]
    return sample[torch.isfinite(sample.flatten(1).float()).all(1)]


def _check_finite(task: Task, probe: torch.Tensor, where: str, pc: PretrainConfig) -> None:
    """Raise when an update left the model broken: a weight or buffer (batch-norm statistics)
    NaN or inf, or weights so large that finite rows (``probe``) embed as NaN or inf. No later
    step recovers (every loss is non-finite and skipped), and the encoder written at the end
    would embed every row as NaN, for a probe or finetune to fail on far from the cause.
    Every rank holds the same weights, so every rank raises at the same point."""
    tensors = [*task.named_parameters(), *task.named_buffers()]
    broken = [n for n, t in tensors if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:
        more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
        problem = f"the weights hold NaN or inf ({', '.join(broken[:3])}{more})"
    else:
        task.eval()
        try:
            with torch.no_grad(), _autocast(probe.device, pc.precision):
                embedded = task.embed(probe).float() if len(probe) else probe.new_zeros(0)
        finally:
            task.train()
        bad = int((~torch.isfinite(embedded.flatten(1))).any(1).sum()) if len(probe) else 0
        if not bad:
            return
        largest = max(float(t.detach().abs().max()) for _, t in tensors if t.numel())
        problem = (
            f"the encoder embeds {bad} of {len(probe)} finite training rows as NaN or inf "
            f"(its largest weight is {largest:.1e})"
        )
    raise SslopsError(
        f"pretraining diverged: at {where} {problem}, which no later step recovers from; "
        f"{_what_to_change(pc, 'extreme values')}"
    )


def _what_to_change(pc: PretrainConfig, data: str) -> str:
    """The settings a diverged run can change; fp32 only where it is not already."""
    fp32 = f", set pretrain.precision fp32 (now {pc.precision})" if pc.precision != "fp32" else ""
    return (
        f"lower pretrain.learning_rate (now {pc.learning_rate}){fp32}, or look for {data} in "
        "the prepared data"
    )


def _knn(task: Task, data: PretrainData, cfg: Config, device: torch.device) -> float | None:
    if data.bank is None or data.query is None:
        return None
    task.eval()
    try:
        with _autocast(device, cfg.pretrain.precision):
            bank = (data.bank[0].to(device), data.bank[1].to(device))
            query = (data.query[0].to(device), data.query[1].to(device))
            return round(knn_accuracy(task.embed, bank, query, cfg.pretrain.knn_k), 5)
    finally:
        task.train()


def train(
    cfg: Config,
    data: PretrainData,
    task: Task,
    checkpoint_dir: Path,
    device: torch.device,
    stop_after: int | None = None,
) -> TrainResult | None:
    """Train ``task``; returns None when stopped early by ``stop_after`` (tests: a kill)."""
    with _shown_log(cfg.pretrain.log_level):
        return _train(cfg, data, task, checkpoint_dir, device, stop_after)


def _train(
    cfg: Config, data: PretrainData, task: Task, checkpoint_dir: Path, device: torch.device,
    stop_after: int | None,
) -> TrainResult | None:  # fmt: skip
    pc = cfg.pretrain
    rank, size = world()
    rows = data.x.shape[0]
    batch = min(pc.batch_size, rows)
    if batch % size:
        capped = f" (capped at the {rows} training rows)" if batch < pc.batch_size else ""
        raise ConfigError(
            f"pretrain.batch_size {batch}{capped} does not split over the {size} training "
            f"processes; expected a multiple of {size}"
        )
    per_rank = batch // size
    steps_per_epoch = max(rows // batch, 1)  # the ragged last batch is dropped
    total_steps = steps_per_epoch * pc.epochs

    trained_on = data_digest(data.x, data.sensitive)
    x = data.x.to(device)
    probe = _finite_rows(x, batch)  # embedded after a non-finite loss and each epoch
    sensitive = data.sensitive.to(device) if data.sensitive is not None else None
    if data.info.pool is not None:
        data.info.pool = x
    if data.info.column_of is not None:
        data.info.column_of = data.info.column_of.to(device)
    task.to(device)
    if pc.compile:
        task.backbone.forward = torch.compile(task.backbone.forward)
    if size > 1:
        # Batch statistics over the global batch, as a single process would compute them:
        # SyncBatchNorm on CUDA, on CPU (gloo, where SyncBatchNorm refuses to run) our own.
        if device.type == "cuda":
            task = torch.nn.SyncBatchNorm.convert_sync_batchnorm(task)
        else:
            task = convert_global_batchnorm(task)
    model: torch.nn.Module = DistributedDataParallel(task) if size > 1 else task
    optimizer = adamw(
        parameter_groups(task, cfg), lr=pc.learning_rate, weight_decay=pc.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(total_steps, warmup_steps(cfg, steps_per_epoch))
    )
    generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    indices: Any = range(rows)  # a sized sequence is all DistributedSampler reads
    sampler: DistributedSampler[int] = DistributedSampler(
        indices, num_replicas=size, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    positions = torch.arange(rank, batch, size, device=device)
    config = cfg.model_dump(mode="json")
    result = TrainResult(total_steps=total_steps)
    epoch, first, step, epoch_losses = 0, 0, 0, []

    checkpoint = latest_checkpoint(checkpoint_dir) if pc.resume else None
    if checkpoint is not None:
        state, info = load_checkpoint(checkpoint, task)
        problem = resume_mismatch(info, fingerprint(config), trained_on)
        if problem:
            raise ArtifactError(
                f"checkpoint {checkpoint} {problem}; remove {checkpoint_dir} or set "
                "pretrain.resume=false to start over"
            )
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"].to(generator.get_state().device))
        torch.set_rng_state(state["torch_rng"])
        epoch, first, step = state["epoch"], state["step_in_epoch"], state["step"]
        epoch_losses, result.skipped = list(state["epoch_losses"]), state["skipped"]
        result.history, result.steps = list(state["history"]), list(state["steps"])
        result.knn_initial = state.get("knn_initial")
        result.resumed_from = step
    elif rank == 0 and pc.knn_every:
        result.knn_initial = _knn(task, data, cfg, device)

    timed = checkpoint_seconds(cfg)
    last_saved = clock()

    def save(epoch_now: int, step_in_epoch: int) -> Path | None:
        nonlocal last_saved
        last_saved = clock()
        if rank != 0:
            return None
        state = {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "generator": generator.get_state().cpu(), "torch_rng": torch.get_rng_state(),
            "epoch": epoch_now, "step_in_epoch": step_in_epoch, "step": step,
            "epoch_losses": epoch_losses, "skipped": result.skipped, "history": result.history,
            "steps": result.steps, "knn_initial": result.knn_initial,
        }  # fmt: skip
        info = {
            "epoch": epoch_now, "fingerprint": fingerprint(config), "world_size": size,
            "data_sha256": trained_on,
        }  # fmt: skip
        return save_checkpoint(checkpoint_dir, step, task, state, info)

    def due() -> bool:
        """A checkpoint is due by pretrain.checkpoint_every or checkpoint_minutes (only
        rank 0 saves, so only its clock matters)."""
        periodic = bool(pc.checkpoint_every) and step % pc.checkpoint_every == 0
        return periodic or bool(timed and clock() - last_saved >= timed)

    heartbeat = Heartbeat(rank, size, total_steps, batch, pc.heartbeat_seconds, checkpoint_dir)
    heartbeat.start(step)
    if result.resumed_from is not None and rank == 0:
        log.info("resumed from %s: step %d of %d", checkpoint, step, total_steps)
    started = time.perf_counter()
    objective = f"pretrain ({pc.objective}, {size} process{'es' if size > 1 else ''})"
    stopping = False
    with task_progress(objective, pc.epochs) as progress, sigterm_flag() as stop_requested:
        while epoch < pc.epochs:
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler), dtype=torch.long)
            epoch_start, done = time.perf_counter(), 0
            for k in range(first, steps_per_epoch):
                tick = time.perf_counter()
                rows_k = order[k * per_rank : (k + 1) * per_rank].to(device)
                try:
                    with _autocast(device, pc.precision):
                        codes = sensitive[rows_k] if sensitive is not None else None
                        loss = model(x[rows_k], Draws(generator, batch, positions), codes)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                except torch.OutOfMemoryError as exc:
                    raise SslopsError(
                        f"rank {rank}: out of {device.type} memory at step {step + 1} of "
                        f"{total_steps} ({per_rank} rows per rank, pretrain.precision "
                        f"{pc.precision}): lower pretrain.batch_size, set pretrain.precision bf16 "
                        f"or spread the batch over more processes; the run resumes from the "
                        f"latest checkpoint in {checkpoint_dir}, if any "
                        f"({' '.join(str(exc).split())[:200]})"
                    ) from None
                # The step's one all-reduce also carries SIGTERM: every rank stops after
                # the same step, whichever ranks the signal reached and when.
                stats = torch.stack([
                    loss.detach().float(), (~torch.isfinite(loss)).float(),
                    loss.new_tensor(float(stop_requested())).float(),
                ])  # fmt: skip
                if size > 1:
                    dist.all_reduce(stats)
                mean_loss, bad = stats[0].item() / size, stats[1].item() > 0
                stopping = stats[2].item() > 0
                lr = scheduler.get_last_lr()[0]  # the rate this step runs at
                if bad:
                    # A non-finite loss from a sound model (one bad batch) is skipped; from
                    # one an earlier update broke, every later step's would be too.
                    where = f"step {step + 1} of {total_steps} (epoch {epoch + 1})"
                    _check_finite(task, probe, where, pc)
                    result.skipped += 1
                    optimizer.zero_grad(set_to_none=True)
                else:
                    optimizer.step()
                    scheduler.step()
                    epoch_losses.append(mean_loss)
                step, done = step + 1, done + 1
                seconds = time.perf_counter() - tick
                result.steps.append({
                    "step": step, "epoch": epoch + 1, "loss": mean_loss if not bad else None,
                    "lr": lr, "samples_per_s": round(batch / seconds, 2),
                })  # fmt: skip
                heartbeat.beat(step, mean_loss if not bad else None)
                if stop_after is not None and step >= stop_after:
                    return None
                mid_epoch = k + 1 < steps_per_epoch
                if mid_epoch and (stopping or due()):
                    saved = save(epoch, k + 1)
                    if stopping:
                        raise _stopped(rank, step, total_steps, saved)
            train_seconds = time.perf_counter() - epoch_start
            _check_finite(task, probe, f"the end of epoch {epoch + 1} (step {step})", pc)
            if done and not epoch_losses:  # no weight moved in the whole epoch
                raise SslopsError(
                    f"pretraining diverged: every step of epoch {epoch + 1} ({done} steps) had a "
                    f"non-finite loss on some rank and was skipped; "
                    f"{_what_to_change(pc, 'NaN/inf')}"
                )
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": sum(epoch_losses) / max(len(epoch_losses), 1),
                "samples_per_s": round(done * batch / max(train_seconds, 1e-9), 2),
            }
            last = epoch + 1 == pc.epochs
            if rank == 0 and pc.knn_every and ((epoch + 1) % pc.knn_every == 0 or last):
                knn = _knn(task, data, cfg, device)
                if knn is not None:
                    row["knn_accuracy"] = knn
            result.history.append(row)
            epoch, first, epoch_losses = epoch + 1, 0, []
            saved = None
            if last or stopping or due():
                saved = save(epoch, 0)
            if stopping and not last:  # after the last step the run ends as usual
                raise _stopped(rank, step, total_steps, saved)
            status = f"loss {row['loss']:.4f}  {row['samples_per_s']:,.0f} samples/s"
            if "knn_accuracy" in row:
                status += f"  kNN {row['knn_accuracy']:.3f}"
            if rank == 0:
                progress.update(epoch, status)
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json_text(row) + "\n" for row in rows)
