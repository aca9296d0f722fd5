"""Pretrain: SCARF contrastive training of an MLP encoder over all training rows, labels ignored."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sslops.artifacts import read_meta, write_artifact
from sslops.config import Config
from sslops.models.tabular import EncoderSpec, MLPEncoder
from sslops.objectives.scarf import info_nce, scarf_corrupt
from sslops.plots import line_plot
from sslops.prepare.dataset import PreparedData
from sslops.progress import epoch_progress


def _projection(embed_dim: int, hidden_dim: int, out_dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(embed_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim)
    )


def pretrain(cfg: Config, prepared_dir: Path, out_dir: Path) -> Path:
    """Run the pretrain stage; returns the artifact directory."""
    pc = cfg.pretrain
    if pc.threads:
        torch.set_num_threads(pc.threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    data = PreparedData(prepared_dir)
    x = torch.from_numpy(data.train.features)
    column_of = torch.tensor(data.encoding.column_of, dtype=torch.long)
    spec = EncoderSpec(x.shape[1], pc.hidden_dim, pc.depth, pc.embed_dim)
    encoder = MLPEncoder(spec)
    projector = _projection(pc.embed_dim, pc.hidden_dim, pc.projection_dim)
    params = [*encoder.parameters(), *projector.parameters()]
    optimizer = torch.optim.AdamW(params, lr=pc.learning_rate, weight_decay=pc.weight_decay)
    batch = min(pc.batch_size, x.shape[0])
    steps_per_epoch = max(x.shape[0] // batch, 1)  # drop the ragged last batch
    total_steps = steps_per_epoch * pc.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total_steps, 1.0)))
    )

    history: list[dict[str, float]] = []
    skipped = 0
    started = time.perf_counter()
    with epoch_progress("pretrain (SCARF)", pc.epochs) as progress:
        for epoch in range(pc.epochs):
            order = torch.randperm(x.shape[0], generator=generator)
            losses = []
            epoch_start = time.perf_counter()
            for step in range(steps_per_epoch):
                rows = x[order[step * batch : (step + 1) * batch]]
                view1 = scarf_corrupt(rows, x, column_of, pc.corruption_rate, generator)
                view2 = scarf_corrupt(rows, x, column_of, pc.corruption_rate, generator)
                loss = info_nce(
                    projector(encoder(view1)), projector(encoder(view2)), pc.temperature
                )
                if not torch.isfinite(loss):
                    skipped += 1
                    optimizer.zero_grad(set_to_none=True)
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
            seconds = time.perf_counter() - epoch_start
            mean_loss = sum(losses) / max(len(losses), 1)
            rate = steps_per_epoch * batch / seconds
            history.append({"epoch": epoch + 1, "loss": mean_loss, "rows_per_s": rate})
            progress.update(epoch + 1, f"loss {mean_loss:.4f}  {rate:,.0f} rows/s")

    summary = {
        "objective": pc.objective,
        "rows": int(x.shape[0]),
        "features": int(x.shape[1]),
        "steps": total_steps,
        "skipped_nonfinite_steps": skipped,
        "final_loss": history[-1]["loss"],
        "seconds": round(time.perf_counter() - started, 2),
    }
    with write_artifact(
        out_dir, "pretrain", cfg.model_dump(mode="json"), {"prepared": prepared_dir}
    ) as tmp:
        state = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
        save_file(state, str(tmp / "encoder.safetensors"))
        (tmp / "encoder.json").write_text(
            json.dumps(asdict(spec), indent=2) + "\n", encoding="utf-8"
        )
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        with open(tmp / "history.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in history)
        epochs = [h["epoch"] for h in history]
        line_plot(
            tmp / "loss.png", {"InfoNCE": (epochs, [h["loss"] for h in history])},
            "epoch", "loss", "SCARF pretraining loss",
        )  # fmt: skip
    return Path(out_dir)


def load_encoder(pretrained_dir: Path) -> MLPEncoder:
    read_meta(pretrained_dir, "pretrain")
    spec = EncoderSpec(**json.loads((pretrained_dir / "encoder.json").read_text(encoding="utf-8")))
    encoder = MLPEncoder(spec)
    encoder.load_state_dict(load_file(str(pretrained_dir / "encoder.safetensors")))
    return encoder.eval()
