"""Checkpoints: a run stopped or killed and resumed ends with the uninterrupted run's weights.

Also: checkpoints are complete folders (weights as safetensors, the rest loadable with
``weights_only=True``), a checkpoint from other settings is refused, and steps with a
non-finite loss are skipped and counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sslops.config import Config
from sslops.errors import ArtifactError
from sslops.pretrain import run_pretrain
from sslops.pretrain.checkpoint import latest_checkpoint
from sslops.pretrain.data import load_pretrain_data
from sslops.pretrain.loop import train
from sslops.pretrain.tasks import backbone_spec, build_task

SETTINGS = {"epochs": 3, "batch_size": 256, "checkpoint_every": 4, "knn_samples": 200}


def configured(cfg: Config, **changes: object) -> Config:
    pretrain = cfg.pretrain.model_copy(update={**SETTINGS, **changes})
    return cfg.model_copy(update={"pretrain": pretrain})


@pytest.fixture(scope="module")
def prepared(small_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sslops.prepare import prepare

    return prepare(small_config, tmp_path_factory.mktemp("resume") / "prepare")


@pytest.fixture(scope="module")
def uninterrupted(
    small_config: Config, prepared: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return run_pretrain(configured(small_config), prepared, tmp_path_factory.mktemp("full") / "out")


def weights(artifact: Path) -> dict[str, torch.Tensor]:
    return load_file(str(artifact / "encoder.safetensors"))


def history(artifact: Path) -> list[dict]:
    rows = [json.loads(line) for line in (artifact / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "samples_per_s"} for row in rows]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_resume_mid_epoch_reproduces_the_uninterrupted_run(
    small_config: Config, prepared: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    cfg = configured(small_config)
    out = tmp_path / "out"
    assert run_pretrain(cfg, prepared, out, stop_after=10) == out  # stops between checkpoints
    checkpoints = tmp_path / "out.checkpoints"
    latest = latest_checkpoint(checkpoints)
    assert latest is not None and latest.name == "step-00000008" and not out.exists()
    state = torch.load(latest / "state.pt", weights_only=True)
    assert state["step"] == 8 and state["step_in_epoch"] > 0
    run_pretrain(cfg, prepared, out)
    assert_same_weights(out, uninterrupted)
    assert history(out) == history(uninterrupted)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == 8
    assert not checkpoints.exists(), "the default checkpoint folder is removed after success"


def test_kill_during_training_then_resume(
    small_config: Config, prepared: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    cfg = configured(small_config, checkpoint_every=2, threads=1)
    config = tmp_path / "config.json"
    config.write_text(cfg.to_json())
    out, checkpoints = tmp_path / "out", tmp_path / "out.checkpoints"
    command = [sys.executable, "-m", "sslops.pretrain", "--config", str(config),
               "--prepared", str(prepared), "--out", str(out)]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while latest_checkpoint(checkpoints) is None and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    if out.exists():
        pytest.skip("the run finished before it could be killed")
    assert not list(checkpoints.glob(".*partial*")) or latest_checkpoint(checkpoints)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_weights(out, uninterrupted)


def test_checkpoint_from_other_settings_is_refused(
    small_config: Config, prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_pretrain(configured(small_config), prepared, out, stop_after=5)
    with pytest.raises(ArtifactError, match="other pretrain settings"):
        run_pretrain(configured(small_config, learning_rate=0.01), prepared, out)
    fresh = configured(small_config, resume=False, epochs=1)
    assert (
        json.loads((run_pretrain(fresh, prepared, out) / "summary.json").read_text())[
            "resumed_from_step"
        ]
        is None
    )


def test_non_finite_steps_are_skipped_and_counted(
    small_config: Config, prepared: Path, tmp_path: Path
) -> None:
    cfg = configured(small_config, epochs=1, batch_size=64, knn_every=0)
    data = load_pretrain_data(prepared, "tabular", 100, 0)
    data.x[3] = float("nan")  # batches holding row 3, or drawing it as a donor, have a NaN loss
    torch.manual_seed(0)
    task = build_task(cfg, data.info, backbone_spec(cfg, data.info))
    result = train(cfg, data, task, tmp_path / "ckpt", torch.device("cpu"))
    assert result is not None
    skipped = [s["step"] for s in result.steps if s["loss"] is None]
    assert 0 < result.skipped == len(skipped) < result.total_steps
    assert all(torch.isfinite(p).all() for p in task.parameters())
    assert result.history[-1]["loss"] == pytest.approx(
        sum(s["loss"] for s in result.steps if s["loss"] is not None)
        / (result.total_steps - len(skipped))
    )
