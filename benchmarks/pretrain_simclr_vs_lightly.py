"""SimCLR on MNIST-5k (32x32 RGB), ResNet-18 with CIFAR stem: sslops vs lightly 1.6, one run.

Throughput (interleaved rounds, medians): lightly with ``SimCLRTransform`` in a
DataLoader (2 workers) and bf16 autocast; sslops' own training loop (batched views on
the device, bf16); and the bare compute ceiling (the same model's two-view
forward + backward + AdamW step on ready-made tensors). Same batch (256), optimizer
(AdamW, lr 1e-3, wd 1e-6), temperature (0.5), projector (512-512-128 with BN).

Quality (``--phase quality``): the budget is the wall-clock time sslops needs for
``--ssl-epochs`` epochs; lightly gets the steps it completes in that time at its measured
throughput (the interleaved medians, so other load on the machine does not skew the
split). Then kNN accuracy (k=20) on the 1,000
held-out images with the 4,000 training images as the bank, and a linear probe on 1% and
10% of the training labels against a supervised ResNet-18 trained from scratch on the
same labels.

    pip install -e '.[bench]'
    python benchmarks/pretrain_simclr_vs_lightly.py --phase all --rounds 3 --ssl-epochs 5 \
        --out runs/bench/pretrain_simclr_vs_lightly.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sslops.config import validate_config
from sslops.models.vision import ResNet18Cifar
from sslops.objectives import Draws, ImageAugment, augment_images, nt_xent
from sslops.objectives.augment import normalize_images
from sslops.pretrain.data import PretrainData
from sslops.pretrain.knn import embed_all, knn_accuracy
from sslops.pretrain.loop import train
from sslops.pretrain.tasks import InputInfo, TwoViewTask, build_task

ROOT = Path(__file__).resolve().parents[1]
# The package's copy of ../shared/datasets/mnist_5k.csv.gz (byte for byte), so the
# benchmark runs where only the checkout travels (the lent GPU machine).
MNIST = ROOT / "src" / "sslops" / "datasets" / "mnist" / "mnist_5k.csv.gz"
BATCH, LR, WD = 256, 1e-3, 1e-6
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Recipe:
    """The SimCLR views and loss both contenders use. The default is lightly's
    ``SimCLRTransform`` (without blur) and ``NTXentLoss(0.5)``; ``--recipe digits`` is the
    one ``configs/mnist.yaml`` ships (milder crops, no flips, temperature 0.2)."""

    min_scale: float = 0.08
    flip: float = 0.5
    temperature: float = 0.5


RECIPES = {"lightly": Recipe(), "digits": Recipe(min_scale=0.3, flip=0.0, temperature=0.2)}


def load_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (5000, 3, 32, 32) images (bilinear 28 -> 32, grey copied to RGB) and labels."""
    with gzip.open(MNIST, "rt") as fh:
        raw = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    grey = torch.from_numpy(raw[:, :784]).reshape(-1, 1, 28, 28)
    big = F.interpolate(grey, size=(32, 32), mode="bilinear", align_corners=False)
    images = big.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return images, torch.from_numpy(raw[:, 784].astype(np.int64))


def sslops_config(
    epochs: int, recipe: Recipe = RECIPES["lightly"], batch: int = BATCH, lr: float = LR
) -> Any:
    return validate_config({
        "seed": 0, "modality": "image",
        "data": {"train": "mnist_5k", "format": "pixel_csv", "label": "label"},
        "pretrain": {"objective": "simclr", "backbone": "resnet18", "epochs": epochs,
                     "batch_size": batch, "learning_rate": lr, "weight_decay": WD,
                     "temperature": recipe.temperature, "projection_dim": 128,
                     "precision": "bf16", "knn_every": 0, "resume": False, "threads": 2,
                     "augment": {"min_scale": recipe.min_scale, "flip": recipe.flip}},
    })  # fmt: skip


# --- contenders ------------------------------------------------------------------------------


def run_sslops(images: torch.Tensor, steps: int, epochs: int = 1) -> tuple[list[float], Any]:
    """The real sslops loop on ``steps`` steps per epoch; per-step images/s and the task.

    Throughput does not depend on which digits are in the batch (quality() shuffles).
    """
    cfg = sslops_config(epochs)
    torch.manual_seed(0)
    data = PretrainData(images[: steps * BATCH], InputInfo("image", (3, 32, 32)))
    task = build_task(cfg, data.info, {"backbone": "resnet18", "args": {"in_channels": 3}})
    with tempfile.TemporaryDirectory() as work:
        result = train(cfg, data, task, Path(work) / "ckpt", torch.device("cpu"))
    assert result is not None
    return [s["samples_per_s"] for s in result.steps], task


def lightly_model(recipe: Recipe) -> tuple[nn.Module, nn.Module, Any]:
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    torch.manual_seed(0)
    model = nn.Sequential(ResNet18Cifar(), SimCLRProjectionHead(512, 512, 128))
    return model, NTXentLoss(temperature=recipe.temperature), torch.optim.AdamW


class _PilDataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, transform: Any) -> None:
        from PIL import Image

        self.pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, i: int) -> Any:
        return self.transform(self.pil[i])


def lightly_loader(images: torch.Tensor, recipe: Recipe) -> torch.utils.data.DataLoader:
    from lightly.transforms import SimCLRTransform

    transform = SimCLRTransform(
        input_size=32, gaussian_blur=0.0, min_scale=recipe.min_scale, hf_prob=recipe.flip
    )
    return torch.utils.data.DataLoader(
        _PilDataset(images, transform), batch_size=BATCH, shuffle=True, drop_last=True,
        num_workers=2,
    )  # fmt: skip


def run_lightly(
    images: torch.Tensor, steps: int, total: int | None = None, recipe: Recipe = RECIPES["lightly"]
) -> tuple[list[float], nn.Module]:
    """lightly's recipe for ``steps`` steps (after one warm-up step); per-step images/s."""
    model, criterion, opt_cls = lightly_model(recipe)
    optimizer = opt_cls(model.parameters(), lr=LR, weight_decay=WD)
    schedule = total or steps + 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / schedule, 1.0)))
    )
    rates: list[float] = []
    done = 0
    while done < steps + 1:
        iterator = iter(lightly_loader(images, recipe))
        tick = time.perf_counter()
        for views in iterator:
            x0, x1 = views
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = criterion(model(x0), model(x1))
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            now = time.perf_counter()
            if done > 0:  # the first step includes starting the workers
                rates.append(BATCH / (now - tick))
            tick, done = now, done + 1
            if done >= steps + 1:
                break
        del iterator
    return rates, model


def run_ceiling(images: torch.Tensor, steps: int) -> list[float]:
    """sslops' model and step on ready-made views: no augmentation, no data loading."""
    cfg = sslops_config(1)
    torch.manual_seed(0)
    info = InputInfo("image", (3, 32, 32))
    task = TwoViewTask(ResNet18Cifar(), info, cfg)
    task.backbone.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(task.parameters(), lr=LR, weight_decay=WD)
    g = torch.Generator().manual_seed(0)
    aug = ImageAugment(size=32)
    views = torch.cat([augment_images(images[:BATCH], aug, Draws.local(BATCH, g))] * 2)
    views = views.contiguous(memory_format=torch.channels_last)
    rates = []
    for i in range(steps + 1):
        tick = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z1, z2 = task.projector(task.backbone(views)).chunk(2)
            loss = nt_xent(z1, z2, RECIPES["lightly"].temperature)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i > 0:
            rates.append(BATCH / (time.perf_counter() - tick))
    return rates


def throughput(images: torch.Tensor, rounds: int, steps: int) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"lightly": [], "sslops": [], "ceiling": []}
    order = ["lightly", "sslops", "ceiling"]
    for r in range(rounds):
        for name in order[r % 3 :] + order[: r % 3]:
            if name == "lightly":
                rates = run_lightly(images, steps)[0]
            elif name == "sslops":
                rates = run_sslops(images, steps + 1)[0][1:]  # drop the warm-up step
            else:
                rates = run_ceiling(images, steps)
            runs[name].append(statistics.median(rates))
            print(f"round {r + 1} {name}: {runs[name][-1]:.1f} images/s", flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "images_per_s": med,
        "rounds": runs,
        "sslops_vs_lightly": med["sslops"] / med["lightly"],
        "sslops_vs_ceiling": med["sslops"] / med["ceiling"],
    }


# --- quality ---------------------------------------------------------------------------------


def _features(
    backbone: nn.Module, images: torch.Tensor, device: torch.device = CPU
) -> torch.Tensor:
    backbone.to(device).eval()
    aug = ImageAugment(size=32)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        return embed_all(
            lambda x: backbone(normalize_images(x.to(device), aug)).float().cpu(), images, 500
        )


def _label_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique():
        rows = (labels == c).nonzero().squeeze(1)
        k = max(1, round(fraction * len(rows)))
        chosen.append(rows[torch.randperm(len(rows), generator=g)[:k]])
    return torch.cat(chosen).sort().values


def linear_probe(train_z: torch.Tensor, train_y: torch.Tensor, test_z: torch.Tensor,
                 test_y: torch.Tensor) -> float:  # fmt: skip
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_z.numpy())
    clf = LogisticRegression(max_iter=3000, C=0.1).fit(scaler.transform(train_z.numpy()), train_y)
    return float((clf.predict(scaler.transform(test_z.numpy())) == test_y.numpy()).mean())


def supervised(images: torch.Tensor, labels: torch.Tensor, test: tuple[torch.Tensor, torch.Tensor],
               epochs: int, flip: float, device: torch.device = CPU) -> float:  # fmt: skip
    """ResNet-18 (CIFAR stem) from scratch on the labeled images, crop/flip/jitter views.

    AdamW with a cosine decay to zero: without it the last iterate of a few hundred steps
    on a few hundred images is a lottery (measured: 0.94 on one draw, 0.25 on another).
    """
    torch.manual_seed(0)
    model = nn.Sequential(ResNet18Cifar(), nn.Linear(512, 10)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    g = torch.Generator(device=device).manual_seed(0)
    images, labels = images.to(device), labels.to(device)
    aug = ImageAugment(size=32, min_scale=0.5, flip=flip)
    batch = min(128, len(images))
    total = epochs * (len(images) // batch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0)))
    )
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g, device=device)
        for i in range(0, len(images) - batch + 1, batch):
            rows = order[i : i + batch]
            with torch.autocast(device.type, dtype=torch.bfloat16):
                x = augment_images(images[rows], aug, Draws.local(len(rows), g))
                loss = F.cross_entropy(model(x).float(), labels[rows])
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        logits = embed_all(lambda x: model(normalize_images(x.to(device), aug)).cpu(), test[0], 500)
    return float((logits.argmax(1) == test[1]).float().mean())


def split(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """4,000 training and 1,000 held-out images (the file is sorted by digit: a seeded
    permutation gives a split with every class)."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    train, test = order[:4000], order[4000:]
    return images[train], labels[train], images[test], labels[test]


def supervised_only(
    images: torch.Tensor, labels: torch.Tensor, supervised_epochs: tuple[int, int],
    recipe: Recipe, draws: int, device: torch.device = CPU,
) -> dict[str, Any]:  # fmt: skip
    """``--phase supervised``: the supervised baseline alone, on the quality phase's draws."""
    train_x, train_y, test_x, test_y = split(images, labels)
    out: dict[str, Any] = {"supervised_epochs": list(supervised_epochs)}
    for fraction, epochs in zip((0.01, 0.1), supervised_epochs, strict=True):
        accs = []
        for seed in range(draws):
            rows = _label_subset(train_y, fraction, seed=seed)
            accs.append(
                supervised(
                    train_x[rows], train_y[rows], (test_x, test_y), epochs, recipe.flip, device
                )
            )
        key = f"{fraction:.0%} ({len(rows)} labels)"
        out[key] = {"mean": statistics.fmean(accs), "draws": accs}
        print("supervised ResNet-18", key, out[key], flush=True)
    return out


def quality(
    images: torch.Tensor, labels: torch.Tensor, rates: dict[str, float] | None, ssl_epochs: int,
    supervised_epochs: tuple[int, int], save: Any, recipe: Recipe, draws: int,
    ssl_batch: int = BATCH, ssl_lr: float = LR, device: torch.device = CPU,
    features_out: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``save(partial)`` is called after each part, so a stopped run keeps what it measured.

    ``rates=None`` (``--sslops-only``): sslops' probe alone, no lightly and no supervised
    baseline (``--phase supervised`` runs that on the same draws).
    """
    train_x, train_y, test_x, test_y = split(images, labels)
    ssl_steps = len(train_x) // ssl_batch * ssl_epochs
    out: dict[str, Any] = {"recipe": asdict(recipe), "steps": {"sslops": ssl_steps},
                           "ssl_batch_size": ssl_batch, "ssl_lr": ssl_lr}  # fmt: skip
    if rates is not None:
        budget = ssl_steps * ssl_batch / rates["sslops"]
        out["budget_s_at_measured_rate"] = budget
        out["steps"]["lightly"] = round(budget * rates["lightly"] / BATCH)
    tick = time.perf_counter()
    cfg = sslops_config(ssl_epochs, recipe, ssl_batch, ssl_lr)
    torch.manual_seed(0)
    data = PretrainData(train_x, InputInfo("image", (3, 32, 32)))
    task = build_task(cfg, data.info, {"backbone": "resnet18", "args": {"in_channels": 3}})
    with tempfile.TemporaryDirectory() as work:
        train(cfg, data, task, Path(work) / "ckpt", device)
    out["seconds"] = {"sslops": time.perf_counter() - tick}
    out["device"] = str(device)
    save(out)
    backbones = {"sslops": task.backbone, "random init": ResNet18Cifar()}
    if rates is not None:
        tick = time.perf_counter()
        light_steps = out["steps"]["lightly"]
        lightly_net = run_lightly(train_x, light_steps - 1, total=light_steps, recipe=recipe)[1]
        out["seconds"]["lightly"] = time.perf_counter() - tick
        backbones["lightly"] = lightly_net[0]
    feats = {
        k: (_features(b, train_x, device), _features(b, test_x, device))
        for k, b in backbones.items()
    }
    if features_out is not None:  # for probing elsewhere (the GPU lease returns files only)
        arrays = {f"{k}/{part}": z.half().numpy() for k, pair in feats.items()
                  for part, z in zip(("train", "test"), pair, strict=True)}  # fmt: skip
        np.savez_compressed(features_out, train_y=train_y.numpy(), test_y=test_y.numpy(), **arrays)
    out["knn_accuracy"] = {
        k: knn_accuracy(lambda z: z, (tr, train_y), (te, test_y), 20)
        for k, (tr, te) in feats.items()
    }
    save(out)
    print("kNN", out["knn_accuracy"], flush=True)
    out["label_efficiency"] = {}
    out["supervised_epochs"] = list(supervised_epochs)
    for fraction, epochs in zip((0.01, 0.1), supervised_epochs, strict=True):
        per_draw: dict[str, list[float]] = {}
        for seed in range(draws):
            rows = _label_subset(train_y, fraction, seed=seed)
            for k, (tr, te) in feats.items():
                per_draw.setdefault(k, []).append(linear_probe(tr[rows], train_y[rows], te, test_y))
            if rates is not None:
                per_draw.setdefault("supervised ResNet-18", []).append(
                    supervised(
                        train_x[rows], train_y[rows], (test_x, test_y), epochs, recipe.flip, device
                    )
                )
        key = f"{fraction:.0%} ({len(rows)} labels)"
        out["label_efficiency"][key] = {
            k: {"mean": statistics.fmean(v), "draws": v} for k, v in per_draw.items()
        }
        save(out)
        print(key, {k: round(statistics.fmean(v), 4) for k, v in per_draw.items()}, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--phase",
        choices=["throughput", "quality", "all", "supervised"],
        default="all",
        help="supervised: only the supervised baseline of the quality phase (same draws)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per contender per round")
    parser.add_argument("--ssl-epochs", type=int, default=5, help="quality: the sslops budget")
    parser.add_argument(
        "--supervised-epochs",
        type=int,
        nargs=2,
        default=(100, 30),
        metavar=("AT_1PCT", "AT_10PCT"),
        help="quality: epochs of the supervised baseline on 1%% and 10%% of the labels",
    )
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="lightly",
        help="quality: the views and temperature both contenders use (see Recipe)",
    )
    parser.add_argument(
        "--draws", type=int, default=1, help="quality: label draws per fraction (seeds 0..N-1)"
    )
    parser.add_argument(
        "--ssl-batch-size",
        type=int,
        default=BATCH,
        help="quality: sslops' SimCLR batch (throughput always uses %(default)s)",
    )
    parser.add_argument("--ssl-lr", type=float, default=LR, help="quality: sslops' AdamW lr")
    parser.add_argument(
        "--sslops-only",
        action="store_true",
        help="quality: sslops' kNN and probe only (no lightly, no supervised baseline)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--save-features", type=Path, help="quality: write the train/test embeddings (npz)"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="quality and supervised phases: where sslops pretrains, embeds and where the "
        "supervised baseline trains (throughput is the 2-core CPU comparison, always cpu)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "runs/bench/pretrain_simclr_vs_lightly.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, labels = load_mnist()
    result: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.out.is_file():
        result.update(json.loads(args.out.read_text()))
    if args.phase in ("throughput", "all"):
        result["throughput"] = throughput(images, args.rounds, args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(part: dict[str, Any] | None = None) -> None:
        if part is not None:
            result["quality"] = part
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    save()
    if args.phase == "supervised":
        result["supervised"] = supervised_only(
            images, labels, tuple(args.supervised_epochs), RECIPES[args.recipe], args.draws,
            torch.device(args.device),
        )  # fmt: skip
    if args.phase in ("quality", "all"):
        rates = None if args.sslops_only else result["throughput"]["images_per_s"]
        quality(
            images, labels, rates, args.ssl_epochs, tuple(args.supervised_epochs), save,
            RECIPES[args.recipe], args.draws, args.ssl_batch_size, args.ssl_lr,
            torch.device(args.device), args.save_features,
        )  # fmt: skip
    save()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
