"""Killed and corrupted training: torchrun restarts, checkpoint digests, fallback.

- One of two gloo ranks is SIGKILLed mid-epoch, twice (at a fixed step, not a time);
  ``torchrun --max-restarts=2`` restarts the group, each attempt resumes from the
  latest checkpoint and the final weights equal an uninterrupted 2-rank run's, bit
  for bit.
- SIGTERM to torchrun (as the kubelet sends it to a preempted pod) stops both ranks
  after the same step, rank 0 checkpoints that step, and the rerun resumes from it to the
  uninterrupted run's weights.
- A truncated or bit-flipped checkpoint is detected by the sha256 in its
  ``checkpoint.json``; training resumes from the previous checkpoint and still ends
  with the uninterrupted run's weights. With no intact checkpoint the stage stops
  with an error naming the folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sslops.config import Config
from sslops.errors import ArtifactError
from sslops.pretrain import run_pretrain
from sslops.pretrain.checkpoint import latest_checkpoint
from tests.reliability.faults import flip_bit, truncate

pytestmark = pytest.mark.reliability

HERE = Path(__file__).parent
SETTINGS = {"epochs": 3, "batch_size": 256, "checkpoint_every": 4, "knn_every": 0, "threads": 1}


def configured(cfg: Config, **changes: object) -> Config:
    pretrain = cfg.pretrain.model_copy(update={**SETTINGS, **changes})
    return cfg.model_copy(update={"pretrain": pretrain})


@pytest.fixture(scope="module")
def prepared(small_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sslops.prepare import prepare

    return prepare(small_config, tmp_path_factory.mktemp("killed-training") / "prepare")


def weights(artifact: Path) -> dict[str, torch.Tensor]:
    return load_file(str(artifact / "encoder.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def torchrun(
    cfg: Config, prepared: Path, out: Path, kills: int, **kill: str
) -> tuple[int, str, list[str]]:
    """``kill``: SSLOPS_TEST_KILL_SIGNAL / _TARGET for kill_rank.py, by their last word."""
    config = out.parent / f"{out.name}.config.json"
    config.write_text(cfg.to_json())
    log = out.parent / f"{out.name}.starts.log"
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", "SSLOPS_TEST_KILL_LOG": str(log),
        "SSLOPS_TEST_KILL_RANK": "1", "SSLOPS_TEST_KILL_AT": "7", "SSLOPS_TEST_KILLS": str(kills),
        **{f"SSLOPS_TEST_KILL_{key.upper()}": value for key, value in kill.items()},
    }  # fmt: skip
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "--max-restarts=2", "--monitor-interval=0.2", str(HERE / "kill_rank.py"),
        "--config", str(config), "--prepared", str(prepared), "--out", str(out),
    ]  # fmt: skip
    # A session of its own, so that a timeout ends the ranks too, not only torchrun.
    process = subprocess.Popen(
        command, env=env, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, stderr, log.read_text().splitlines()


@pytest.fixture(scope="module")
def two_ranks(
    small_config: Config, prepared: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An uninterrupted 2-rank run (checkpoint_every changes no weight)."""
    out = tmp_path_factory.mktemp("two-ranks") / "uninterrupted"
    code, stderr, starts = torchrun(configured(small_config), prepared, out, kills=0)
    assert code == 0, stderr[:3000]
    assert sorted(starts) == ["rank 0 attempt 0", "rank 1 attempt 0"]
    return out


def losses(artifact: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (artifact / "history.jsonl").read_text().splitlines()]


def test_sigkilled_rank_is_restarted_and_resumes_to_the_same_weights(
    small_config: Config, prepared: Path, two_ranks: Path, tmp_path: Path
) -> None:
    cfg = configured(small_config)
    out = tmp_path / "killed"
    code, stderr, starts = torchrun(cfg, prepared, out, kills=2)
    assert code == 0, stderr[:3000]
    # Rank 1 died at its 7th step of attempts 0 and 1: steps 7 (after checkpoint 4) and
    # 4 + 7 = 11 (after checkpoint 8); attempt 2 resumed from step 8 and finished.
    assert starts.count("rank 1 attempt 2") == 1 and len(starts) == 6, starts
    assert "SIGKILL" in stderr or "Signals.SIGKILL" in stderr or "-9" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == 8 and summary["world_size"] == 2
    assert_same_weights(out, two_ranks)
    assert losses(out) == losses(two_ranks)


@pytest.mark.ddp
def test_sigterm_to_torchrun_checkpoints_the_step_and_the_rerun_resumes_from_it(
    small_config: Config, prepared: Path, two_ranks: Path, tmp_path: Path
) -> None:
    # No periodic checkpoint: whatever survives was written on SIGTERM.
    cfg = configured(small_config, checkpoint_every=0)
    out, checkpoints = tmp_path / "preempted", tmp_path / "preempted.checkpoints"
    # Rank 1 sends SIGTERM to torchrun at its 7th step; torchrun passes it to both ranks.
    code, stderr, _ = torchrun(cfg, prepared, out, kills=1, signal="SIGTERM", target="parent")
    assert code != 0 and not out.exists(), stderr[-3000:]
    stops = re.findall(r"rank (\d): pretraining stopped by SIGTERM after step (\d+) of", stderr)
    assert sorted(rank for rank, _ in stops) == ["0", "1"], stderr[-3000:]
    (step,) = {int(s) for _, s in stops}  # both ranks stopped after the same step
    latest = latest_checkpoint(checkpoints)
    assert latest is not None and latest.name == f"step-{step:08d}" and step >= 7
    assert f"checkpoint {latest};" in stderr

    code, stderr, _ = torchrun(cfg, prepared, out, kills=0)
    assert code == 0, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == step
    assert_same_weights(out, two_ranks)
    assert losses(out) == losses(two_ranks)


@pytest.fixture(scope="module")
def uninterrupted(
    small_config: Config, prepared: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return run_pretrain(configured(small_config), prepared, tmp_path_factory.mktemp("u") / "out")


@pytest.mark.parametrize(
    ("damage", "file"),
    [(flip_bit, "model.safetensors"), (truncate, "state.pt"), (flip_bit, "checkpoint.json")],
)
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(
    small_config: Config, prepared: Path, uninterrupted: Path, tmp_path: Path,
    capfd: pytest.CaptureFixture[str], damage: object, file: str,
) -> None:  # fmt: skip
    cfg = configured(small_config)
    out, checkpoints = tmp_path / "out", tmp_path / "out.checkpoints"
    run_pretrain(cfg, prepared, out, stop_after=10)
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-00000004", "step-00000008"]
    damage(checkpoints / "step-00000008" / file)  # type: ignore[operator]
    capfd.readouterr()
    assert latest_checkpoint(checkpoints) == checkpoints / "step-00000004"
    assert f"skipping checkpoint {checkpoints / 'step-00000008'}" in capfd.readouterr().err
    run_pretrain(cfg, prepared, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == 4
    assert_same_weights(out, uninterrupted)


def test_no_intact_checkpoint_stops_with_an_error_naming_the_folder(
    small_config: Config, prepared: Path, tmp_path: Path
) -> None:
    cfg = configured(small_config)
    out, checkpoints = tmp_path / "out", tmp_path / "out.checkpoints"
    run_pretrain(cfg, prepared, out, stop_after=10)
    for checkpoint in checkpoints.glob("step-*"):
        truncate(checkpoint / "model.safetensors")
    with pytest.raises(ArtifactError, match=f"no intact checkpoint in {checkpoints}"):
        run_pretrain(cfg, prepared, out)
    assert not out.exists()
