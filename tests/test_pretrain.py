"""The engine on every modality and objective, the artifact it writes, init_from, torchrun."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from sslops.artifacts import write_artifact
from sslops.config import Config, validate_config
from sslops.errors import ArtifactError, ConfigError
from sslops.pretrain import load_backbone, load_encoder, pretrain, run_pretrain
from sslops.pretrain.data import PretrainData
from sslops.pretrain.loop import lr_factor, train, warmup_steps
from sslops.pretrain.tasks import InputInfo, backbone_spec, build_task
from tests.conftest import ROOT

TINY = {"epochs": 2, "batch_size": 8, "knn_samples": 16, "knn_k": 3, "projection_dim": 8}


def config(modality: str, **pretrain: object) -> Config:
    if modality == "timeseries":
        pretrain.setdefault("objective", "masked_segment")
    data: dict[str, object] = {"train": "x", "label": "label"}
    if modality == "tabular":
        data.update(positive=1, sensitive=["s"])
    return validate_config({"modality": modality, "data": data, "pretrain": {**TINY, **pretrain}})


def fake_prepared(root: Path, modality: str) -> Path:
    """A prepare artifact in the array layout: {split}.npy + {split}.parquet labels."""
    rng = np.random.default_rng(0)
    shapes = {"image": (16, 16, 3), "timeseries": (60,)}
    schema = {"modality": modality, "label": "label", "classes": ["a", "b"],
              "shape": list(shapes[modality]), "splits": ["train", "validation", "test"]}  # fmt: skip
    with write_artifact(root, "prepare", {}) as tmp:
        for split, rows in (("train", 24), ("validation", 12), ("test", 12)):
            labels = rng.integers(0, 2, rows)
            if modality == "image":
                values = rng.integers(0, 256, (rows, *shapes[modality])).astype(np.uint8)
                values[labels == 1, :8] = 255  # a learnable difference between classes
            else:
                t = np.linspace(0, 6, 60)
                values = np.sin(t[None] * (1 + labels[:, None])) + 0.1 * rng.normal(size=(rows, 60))
                values = values.astype(np.float32)
            np.save(tmp / f"{split}.npy", values)
            pd.DataFrame({"label": np.array(["a", "b"])[labels]}).to_parquet(
                tmp / f"{split}.parquet"
            )
        (tmp / "schema.json").write_text(json.dumps(schema))
    return root


CASES = [
    ("image", "simclr", "auto"),
    ("image", "vicreg", "resnet18"),
    ("image", "mae", "auto"),
    ("timeseries", "simclr", "auto"),
    ("timeseries", "vicreg", "auto"),
    ("timeseries", "masked_segment", "auto"),
    ("timeseries", "next_patch", "auto"),
]


@pytest.mark.parametrize(("modality", "objective", "backbone"), CASES)
def test_pretrain_writes_an_artifact_for_each_objective(
    modality: str, objective: str, backbone: str, tmp_path: Path
) -> None:
    prepared = fake_prepared(tmp_path / "prepared", modality)
    epochs = 1 if modality == "image" else 2  # a ResNet-18 / ViT step costs seconds on CPU
    cfg = config(modality, objective=objective, backbone=backbone, precision="bf16", epochs=epochs)
    out = pretrain(cfg, prepared, tmp_path / "out")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective"] == objective and summary["rows"] == 24
    assert summary["steps"] == 3 * epochs and np.isfinite(summary["final_loss"])
    assert 0 <= summary["knn_accuracy"] <= 1
    for name in ("encoder.safetensors", "backbone.json", "history.jsonl", "metrics.jsonl",
                 "loss.png", "knn.png"):  # fmt: skip
        assert (out / name).is_file(), name
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3 * epochs
    backbone_module = load_backbone(out)
    example = torch.zeros(2, *({"image": (3, 16, 16), "timeseries": (1, 60)}[modality]))
    assert backbone_module(example).ndim == 2
    with pytest.raises(ArtifactError, match="not the tabular MLP encoder"):
        load_encoder(out)


@pytest.mark.parametrize(("objective", "backbone"), [("vime", "mlp"), ("vicreg", "ft_transformer"),
                                                     ("scarf", "ft_transformer")])  # fmt: skip
def test_tabular_objectives_and_backbones_train(
    objective: str, backbone: str, tmp_path: Path
) -> None:
    cfg = config("tabular", objective=objective, backbone=backbone, depth=1, hidden_dim=8,
                 embed_dim=8)  # fmt: skip
    column_of = torch.tensor([0, 1, 1, 2])
    x = torch.randn(32, 4)
    info = InputInfo("tabular", (4,), column_of=column_of, pool=x)
    task = build_task(cfg, info, backbone_spec(cfg, info))
    before = [p.detach().clone() for p in task.backbone.parameters()]
    data = PretrainData(
        x, info, (x[:16], torch.randint(0, 2, (16,))), (x[16:], torch.zeros(16).long())
    )
    result = train(cfg, data, task, tmp_path / "ckpt", torch.device("cpu"))
    assert result is not None and np.isfinite(result.history[-1]["loss"])
    assert "knn_accuracy" in result.history[-1]
    assert any(
        not torch.equal(a, b) for a, b in zip(before, task.backbone.parameters(), strict=True)
    )


def test_image_views_follow_pretrain_augment() -> None:
    info = InputInfo("image", (3, 16, 16))
    digits = config("image", objective="simclr", augment={"min_scale": 0.4, "flip": 0.0})
    aug = build_task(digits, info, backbone_spec(digits, info)).image_aug
    assert aug is not None and (aug.min_scale, aug.flip, aug.size) == (0.4, 0.0, 16)
    default = config("image", objective="simclr")
    assert build_task(default, info, backbone_spec(default, info)).image_aug.min_scale == 0.08
    with pytest.raises(ConfigError, match=r"pretrain\.augment\.flip"):
        config("image", augment={"flip": 2})
    with pytest.raises(ConfigError, match=r"pretrain\.augment\.blur"):
        config("image", augment={"blur": 0.5})


def test_objective_that_does_not_fit_the_modality_is_refused() -> None:
    info = InputInfo("image", (3, 16, 16))
    with pytest.raises(ConfigError, match="does not apply to modality 'image'"):
        backbone_spec(config("image", objective="scarf"), info)
    with pytest.raises(ConfigError, match=r"'mae' needs pretrain\.backbone 'vit_tiny'"):
        backbone_spec(config("image", objective="mae", backbone="resnet18"), info)


def test_init_from_loads_local_weights(tmp_path: Path) -> None:
    prepared = fake_prepared(tmp_path / "prepared", "timeseries")
    first = pretrain(config("timeseries", epochs=1), prepared, tmp_path / "first")
    cfg = config("timeseries", epochs=1, init_from=str(first), learning_rate=1e-12)
    second = pretrain(cfg, prepared, tmp_path / "second")
    a, b = (
        load_file(str(first / "encoder.safetensors")),
        load_file(str(second / "encoder.safetensors")),
    )
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"nothing": torch.zeros(1)}, str(wrong))
    with pytest.raises(ArtifactError, match="do not fit the backbone"):
        pretrain(config("timeseries", epochs=1, init_from=str(wrong)), prepared, tmp_path / "x")
    with pytest.raises(ArtifactError, match="on local disk"):
        pretrain(
            config("timeseries", init_from="https://example.org/w.pt"), prepared, tmp_path / "y"
        )


def test_tabular_artifact_keeps_the_finetune_contract(stage_artifacts: dict[str, Path]) -> None:
    out = stage_artifacts["pretrain"]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("objective", "rows", "features", "steps", "skipped_nonfinite_steps", "final_loss",
                "seconds"):  # fmt: skip
        assert key in summary
    encoder = load_encoder(out)
    assert encoder(torch.zeros(3, summary["features"])).shape[0] == 3
    for name in ("encoder.safetensors", "encoder.json", "history.jsonl", "loss.png", "knn.png"):
        assert (out / name).is_file()
    assert 0.5 < summary["knn_accuracy"] <= 1


@pytest.mark.ddp
def test_torchrun_two_ranks_match_one_process(
    small_config: Config, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from sslops.prepare import prepare

    prepared = prepare(small_config, tmp_path / "prepare")
    settings = {"epochs": 1, "batch_size": 256, "threads": 1, "knn_every": 0}
    one = small_config.model_copy(
        update={"pretrain": small_config.pretrain.model_copy(update=settings)}
    )
    two = small_config.model_copy(
        update={"pretrain": one.pretrain.model_copy(update={"processes_per_node": 2})}
    )
    single = run_pretrain(one, prepared, tmp_path / "single")
    ranks = pretrain(two, prepared, tmp_path / "ranks")
    assert json.loads((ranks / "summary.json").read_text())["world_size"] == 2
    a, b = (
        load_file(str(single / "encoder.safetensors")),
        load_file(str(ranks / "encoder.safetensors")),
    )
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=0)


@pytest.mark.ddp
def test_torchrun_two_ranks_match_one_process_with_batchnorm(tmp_path: Path) -> None:
    """A series SimCLR model (BatchNorm in the projector): on CPU the loop replaces it by a
    global-batch BatchNorm (gloo has no SyncBatchNorm), so 2 processes train as 1 does: the
    same loss at each step (per-rank statistics: 3.48 against 3.38 at the first) and the
    same running statistics (per-rank: 0.04 apart). Weights are not compared, nor more
    steps: Adam turns the float noise of near-zero gradients (a bias before BatchNorm) into
    steps of the learning rate's size, and the runs drift apart by 5e-3 in loss by step 4."""
    from sslops.config import load_config
    from sslops.prepare import prepare

    cfg = load_config(
        ROOT / "configs" / "gunpoint.yaml",
        ["pretrain.epochs=1", "pretrain.threads=1", "pretrain.knn_every=0",
         "pretrain.batch_size=16", "pretrain.objective=simclr"],
    )  # fmt: skip
    prepared = prepare(cfg, tmp_path / "prepare")
    two = cfg.model_copy(
        update={"pretrain": cfg.pretrain.model_copy(update={"processes_per_node": 2})}
    )
    single = run_pretrain(cfg, prepared, tmp_path / "single")
    ranks = pretrain(two, prepared, tmp_path / "ranks")
    assert json.loads((ranks / "summary.json").read_text())["world_size"] == 2
    losses = [
        [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (single, ranks)
    ]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], abs=1e-4)
    a, b = (load_file(str(run / "heads.safetensors")) for run in (single, ranks))
    stats = [name for name in a if "running" in name]
    assert stats  # the projector's BatchNorm
    for name in stats:
        torch.testing.assert_close(a[name], b[name], atol=1e-3, rtol=0, msg=name)


def test_learning_rate_warms_up_linearly_then_decays_on_a_cosine() -> None:
    factor = lr_factor(total_steps=20, warmup=4)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0 and factor(12) == pytest.approx(0.5) and factor(19) < 0.02
    assert factor(25) == 0.0  # past the end: stays at 0
    plain = lr_factor(total_steps=20, warmup=0)
    assert plain(0) == 1.0 and plain(10) == pytest.approx(0.5)


def test_warmup_defaults_per_objective_and_is_checked() -> None:
    assert warmup_steps(config("image", objective="mae", epochs=20), steps_per_epoch=10) == 10
    assert warmup_steps(config("image", objective="simclr", epochs=20), steps_per_epoch=10) == 0
    chosen = config("image", objective="simclr", epochs=20, warmup_epochs=0.25)
    assert warmup_steps(chosen, steps_per_epoch=10) == 3  # a started step counts
    assert warmup_steps(config("image", objective="mae", warmup_epochs=0), 10) == 0
    with pytest.raises(ConfigError, match=r"warmup_epochs=3 is longer than pretrain.epochs=2"):
        config("tabular", warmup_epochs=3)


def test_the_logged_learning_rate_follows_the_warmup(tmp_path: Path) -> None:
    cfg = config("tabular", depth=1, hidden_dim=8, embed_dim=8, epochs=2, warmup_epochs=1,
                 learning_rate=0.01, knn_every=0)  # fmt: skip
    x = torch.randn(32, 4)
    info = InputInfo("tabular", (4,), column_of=torch.tensor([0, 1, 1, 2]), pool=x)
    task = build_task(cfg, info, backbone_spec(cfg, info))
    result = train(cfg, PretrainData(x, info, None, None), task, tmp_path / "ckpt",
                   torch.device("cpu"))  # fmt: skip
    assert result is not None
    # 4 steps an epoch: the first step runs at a quarter of the rate, the fourth at all of it
    lrs = [row["lr"] for row in result.steps]
    assert lrs[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert lrs[4] == pytest.approx(0.01) and lrs[-1] < 0.01
