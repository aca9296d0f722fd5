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
from sslops.errors import ArtifactError, SslopsError
from sslops.pretrain import pretrain, run_pretrain
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


KILL_RANK = Path(__file__).parent / "reliability" / "kill_rank.py"


def stage_command(
    cfg: Config, prepared: Path, tmp_path: Path, *entry: str
) -> tuple[list[str], Path, Path]:
    """``python <entry> --config ... --out <tmp>/out``, the output and its checkpoint folder."""
    config = tmp_path / "config.json"
    config.write_text(cfg.to_json())
    out = tmp_path / "out"
    command = [sys.executable, *entry, "--config", str(config),
               "--prepared", str(prepared), "--out", str(out)]  # fmt: skip
    return command, out, tmp_path / "out.checkpoints"


def test_kill_during_training_then_resume(
    small_config: Config, prepared: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    cfg = configured(small_config, checkpoint_every=2, threads=1)
    command, out, checkpoints = stage_command(cfg, prepared, tmp_path, "-m", "sslops.pretrain")
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


def test_sigterm_checkpoints_the_step_under_way_and_the_rerun_resumes_from_it(
    small_config: Config, prepared: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    # As a preempted pod: SIGTERM mid-epoch, with no periodic checkpoint to fall back on.
    cfg = configured(small_config, checkpoint_every=0, threads=1)
    command, out, checkpoints = stage_command(cfg, prepared, tmp_path, str(KILL_RANK))
    env = {**os.environ, "SSLOPS_TEST_KILL_LOG": str(tmp_path / "starts.log")}
    term = {"SSLOPS_TEST_KILL_RANK": "0", "SSLOPS_TEST_KILL_AT": "7", "SSLOPS_TEST_KILLS": "1",
            "SSLOPS_TEST_KILL_SIGNAL": "SIGTERM"}  # fmt: skip
    first = subprocess.run(
        command, env={**env, **term}, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 143, first.stderr[-2000:]
    assert first.stderr.splitlines()[-1] == (
        f"stopped: rank 0: pretraining stopped by SIGTERM after step 7 of 30; checkpoint "
        f"{checkpoints / 'step-00000007'}; the same command resumes from it"
    )
    assert latest_checkpoint(checkpoints) == checkpoints / "step-00000007" and not out.exists()
    assert torch.load(checkpoints / "step-00000007" / "state.pt", weights_only=True)["step"] == 7
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 7
    assert_same_weights(out, uninterrupted)
    assert history(out) == history(uninterrupted)


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


def test_checkpoint_from_other_training_data_is_refused(
    small_config: Config, prepared: Path, tmp_path: Path
) -> None:
    """Same settings, other rows (a re-prepared data set, or two runs sharing one
    pretrain.checkpoint_dir): resuming would train on a mix, or, from a finished
    checkpoint, hand back the other data's weights without one step on this data."""
    cfg = configured(small_config)
    checkpoints = tmp_path / "shared.checkpoints"
    data = load_pretrain_data(prepared, cfg.modality, cfg.pretrain.knn_samples, cfg.seed)
    task = build_task(cfg, data.info, backbone_spec(cfg, data.info))
    assert train(cfg, data, task, checkpoints, torch.device("cpu"), stop_after=5) is None
    other = load_pretrain_data(prepared, cfg.modality, cfg.pretrain.knn_samples, cfg.seed)
    other.x = other.x.flip(0)  # the same rows in another order is other training data too
    task = build_task(cfg, other.info, backbone_spec(cfg, other.info))
    with pytest.raises(ArtifactError, match="other training data"):
        train(cfg, other, task, checkpoints, torch.device("cpu"))
    data = load_pretrain_data(prepared, cfg.modality, cfg.pretrain.knn_samples, cfg.seed)
    task = build_task(cfg, data.info, backbone_spec(cfg, data.info))
    result = train(cfg, data, task, checkpoints, torch.device("cpu"))
    assert result is not None and result.resumed_from == 4  # the same data still resumes


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


def test_an_epoch_without_one_finite_loss_stops_with_what_to_change(
    small_config: Config, prepared: Path, tmp_path: Path
) -> None:
    # Before: every step skipped, the epoch's loss reported as 0.0 and the run "succeeded".
    cfg = configured(small_config, epochs=2, batch_size=64, knn_every=0)
    data = load_pretrain_data(prepared, "tabular", 100, 0)
    data.x[:] = float("nan")
    task = build_task(cfg, data.info, backbone_spec(cfg, data.info))
    with pytest.raises(SslopsError, match=r"diverged: every step of epoch 1 \(\d+ steps\) had a "
                       r"non-finite loss.*lower pretrain.learning_rate \(now "):  # fmt: skip
        train(cfg, data, task, tmp_path / "ckpt", torch.device("cpu"))


def test_out_of_memory_names_the_rank_step_and_what_to_change(
    small_config: Config, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = configured(small_config, epochs=1, batch_size=64, knn_every=0)
    data = load_pretrain_data(prepared, "tabular", 100, 0)
    task = build_task(cfg, data.info, backbone_spec(cfg, data.info))
    calls = []

    def forward(*args: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args)

    real = task.forward
    monkeypatch.setattr(task, "forward", forward)
    with pytest.raises(SslopsError) as raised:
        train(cfg, data, task, tmp_path / "ckpt", torch.device("cpu"))
    assert (
        str(raised.value).startswith("rank 0: out of cpu memory at step 3 of ")
        and "lower pretrain.batch_size" in str(raised.value)
        and "Tried to allocate 2.00 GiB" in str(raised.value)
    )


def test_sslops_pretrain_stopped_by_sigterm_says_where_the_checkpoint_is(
    small_config: Config, prepared: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import sslops.api
    from sslops.cli import main
    from sslops.pretrain.loop import StoppedBySigterm

    message = "rank 0: pretraining stopped by SIGTERM after step 7 of 30; checkpoint /c/step-7"

    def stopped(*args: object, **kwargs: object) -> None:
        raise StoppedBySigterm(message)

    monkeypatch.setattr(sslops.api, "run_stage", stopped)
    config = tmp_path / "config.json"
    config.write_text(small_config.to_json())
    argv = ["pretrain", "--config", str(config), "--prepared", str(prepared), "--out", "o"]
    assert main(argv) == 143
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"terminated (SIGTERM); no partial output was kept; {message}"
    )


class SteppingClock:
    """A clock that moves ``seconds`` on every read: each check of the loop sees its
    interval passed, without a test that depends on how fast this machine trains."""

    def __init__(self, seconds: float) -> None:
        self.now, self.seconds = 0.0, seconds

    def __call__(self) -> float:
        self.now += self.seconds
        return self.now


def test_timed_checkpoints_are_written_without_checkpoint_every_and_resume_exactly(
    small_config: Config, prepared: Path, uninterrupted: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A node lost without notice gives no SIGTERM: with checkpoint_every 0 (the default)
    nothing was saved before the end. pretrain.checkpoint_minutes saves on rank 0's clock."""
    from sslops.pretrain import loop

    monkeypatch.setattr(loop, "clock", SteppingClock(61.0))
    out = tmp_path / "out"
    never = configured(small_config, checkpoint_every=0)
    run_pretrain(never, prepared, out, stop_after=5)
    assert latest_checkpoint(tmp_path / "out.checkpoints") is None
    timed = configured(small_config, checkpoint_every=0, checkpoint_minutes=1)
    run_pretrain(timed, prepared, out, stop_after=5)
    latest = latest_checkpoint(tmp_path / "out.checkpoints")
    assert latest is not None and latest.name == "step-00000004"
    monkeypatch.setattr(loop, "clock", time.monotonic)
    run_pretrain(timed, prepared, out)
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 4
    assert_same_weights(out, uninterrupted)


def test_timed_checkpoints_default_to_ten_minutes_under_a_job_launcher_only(
    small_config: Config,
) -> None:
    from sslops.pretrain.checkpoint import fingerprint
    from sslops.pretrain.loop import checkpoint_seconds

    raw = small_config.model_dump(mode="json")
    raw["platform"]["storage"]["workspace_pvc"] = "ws"
    job = small_config.model_validate(
        raw | {"pretrain": raw["pretrain"] | {"launcher": "trainjob"}}
    )
    assert checkpoint_seconds(small_config) == 0  # local demos: only the final checkpoint
    assert checkpoint_seconds(job) == 600
    assert checkpoint_seconds(configured(small_config, checkpoint_minutes=2.5)) == 150
    assert checkpoint_seconds(configured(job, checkpoint_minutes=0)) == 0
    # how often to save or log is not what is learned: a checkpoint stays resumable
    quiet = configured(small_config, checkpoint_minutes=3, heartbeat_seconds=5, log_level="debug")
    assert fingerprint(quiet.model_dump(mode="json")) == fingerprint(
        configured(small_config).model_dump(mode="json")
    )


def test_heartbeat_logs_rank_step_rate_and_loss(
    small_config: Config, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    from sslops.pretrain import loop

    monkeypatch.setattr(loop, "clock", SteppingClock(61.0))
    cfg = configured(small_config, epochs=1, knn_every=0, heartbeat_seconds=60)
    data = load_pretrain_data(prepared, "tabular", 100, 0)
    task = build_task(cfg, data.info, backbone_spec(cfg, data.info))
    with caplog.at_level("DEBUG", logger="sslops.pretrain"):
        result = train(cfg, data, task, tmp_path / "ckpt", torch.device("cpu"))
    assert result is not None
    beats = [r for r in caplog.records if r.getMessage().startswith("heartbeat")]
    assert len(beats) == result.total_steps and {r.levelname for r in beats} == {"INFO"}
    last = result.steps[-1]
    assert (
        beats[-1]
        .getMessage()
        .startswith(f"heartbeat rank 0/1 step {last['step']}/{result.total_steps} ")
    )
    assert beats[-1].getMessage().endswith(f" samples/s loss {last['loss']:.4f}")
    # the launcher reads the same figures from the workspace volume
    record = json.loads((tmp_path / "ckpt" / "heartbeat-rank-00000.json").read_text())
    assert record == {**record, "rank": 0, "step": last["step"], "loss": last["loss"]}
    caplog.clear()
    off = configured(cfg, heartbeat_seconds=0)
    with caplog.at_level("DEBUG", logger="sslops.pretrain"):
        train(off, data, build_task(off, data.info, backbone_spec(off, data.info)),
              tmp_path / "ckpt-off", torch.device("cpu"))  # fmt: skip
    assert not [r for r in caplog.records if r.getMessage().startswith("heartbeat")]


@pytest.mark.parametrize("logging_set_up", [True, False], ids=["logging-set-up", "none"])
def test_pretrain_log_level_is_given_back_when_training_returns(
    small_config: Config, prepared: Path, tmp_path: Path, logging_set_up: bool
) -> None:
    """pretrain.log_level debug left the loop's logger at DEBUG (and, where the process had
    set no logging up, the loop's own stderr handler on it) in a library process after the
    stage returned, so a later stage's or the user's records went out at debug (found by
    the leftover2 review); the level a user set, and the handlers, come back as they were."""
    import logging

    log = logging.getLogger("sslops.pretrain")
    handlers = list(log.handlers)
    log.setLevel(logging.WARNING)  # the library user's own choice
    log.propagate = logging_set_up  # without propagation it sees no handler: none set up
    try:
        cfg = configured(small_config, epochs=1, knn_every=0, log_level="debug")
        data = load_pretrain_data(prepared, "tabular", 100, 0)
        task = build_task(cfg, data.info, backbone_spec(cfg, data.info))
        assert train(cfg, data, task, tmp_path / "ckpt", torch.device("cpu")) is not None
        assert (log.level, log.handlers) == (logging.WARNING, handlers)
    finally:
        log.setLevel(logging.NOTSET)
        log.propagate = True
        log.handlers[:] = handlers


@pytest.mark.ddp
def test_every_rank_beats_under_torchrun_at_debug(
    small_config: Config, prepared: Path, tmp_path: Path
) -> None:
    """A hung rank shows as the one whose heartbeat stopped: with pretrain.log_level debug
    each of two gloo ranks logs its own line (rank 0 at info), on stderr with no logging
    set up (as in a training pod)."""
    cfg = configured(small_config, epochs=1, knn_every=0, threads=1, log_level="debug",
                     heartbeat_seconds=1e-6)  # a step takes longer than a microsecond  # fmt: skip
    command, _, _ = stage_command(cfg, prepared, tmp_path, "-m", "sslops.pretrain")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", *command[1:]]  # fmt: skip
    done = subprocess.run(torchrun, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    for rank, level in ((0, "INFO"), (1, "DEBUG")):
        beats = [
            line for line in lines if f"{level} sslops.pretrain: heartbeat rank {rank}/2 " in line
        ]
        assert beats, lines[-20:]
        step, total = beats[-1].split(" step ")[1].split()[0].split("/")
        assert step == total, beats[-1]  # the last step's beat


def test_a_second_run_into_a_checkpoint_dir_in_use_is_refused_and_the_first_resumes(
    small_config: Config, prepared: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    """Before: nothing kept a second run out of a pretrain.checkpoint_dir another was
    training into; both saved their checkpoints there (found by the leftover3 review)."""
    shared = tmp_path / "shared"
    cfg = configured(small_config, checkpoint_every=0, threads=1, checkpoint_dir=str(shared))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, out, _ = stage_command(cfg, prepared, tmp_path / "a", str(KILL_RANK))
    second, other, _ = stage_command(cfg, prepared, tmp_path / "b", "-m", "sslops.pretrain")
    env = {**os.environ, "SSLOPS_TEST_KILL_LOG": str(tmp_path / "starts.log")}
    pause = {"SSLOPS_TEST_KILL_RANK": "0", "SSLOPS_TEST_KILL_AT": "7", "SSLOPS_TEST_KILLS": "1",
             "SSLOPS_TEST_KILL_SIGNAL": "SIGSTOP"}  # fmt: skip
    with open(tmp_path / "first.err", "w") as err:
        process = subprocess.Popen(first, env={**env, **pause}, stderr=err)
    try:
        _, status = os.waitpid(process.pid, os.WUNTRACED)  # stopped at step 7, training
        assert os.WIFSTOPPED(status), (tmp_path / "first.err").read_text()[-2000:]
        refused = subprocess.run(second, env=env, capture_output=True, text=True, timeout=300)
        os.kill(process.pid, signal.SIGTERM)
        os.kill(process.pid, signal.SIGCONT)
        assert process.wait(timeout=300) == 143, (tmp_path / "first.err").read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.splitlines()[-1] == (
        f"error: another sslops pretrain --out {out} (process {process.pid}) is writing "
        f"{shared} (lock {tmp_path / '.shared.lock'}); wait for it to end, or set another "
        "pretrain.checkpoint_dir"
    )
    assert not other.exists()
    assert sorted(p.name for p in shared.iterdir()) == ["latest", "step-00000007"]
    resumed = subprocess.run(first, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 7
    assert_same_weights(out, uninterrupted)
    assert not (tmp_path / ".shared.lock").exists()  # the lock file goes with its holder


@pytest.mark.ddp
def test_every_rank_of_a_torchrun_run_refuses_a_checkpoint_dir_in_use(
    small_config: Config, prepared: Path, tmp_path: Path
) -> None:
    """Rank 0 alone holds the lock: the others hear its answer and leave with it, rather
    than wait in the first all-reduce for a peer that left."""
    from sslops.artifacts import output_lock
    from sslops.pretrain.launch import torchrun_command

    shared = tmp_path / "shared"
    cfg = configured(small_config, threads=1, checkpoint_dir=str(shared))
    config = tmp_path / "config.json"
    config.write_text(cfg.to_json())
    command = torchrun_command(config, prepared, tmp_path / "out", 2)
    with output_lock(shared, "pretrain --out elsewhere"):
        refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    message = (f"error: another sslops pretrain --out elsewhere (process {os.getpid()}) is "
               f"writing {shared} (lock {tmp_path / '.shared.lock'})")  # fmt: skip
    assert refused.stderr.count(message) == 2, refused.stderr[-3000:]  # rank 0's and rank 1's
    assert not shared.exists() and not (tmp_path / "out").exists()
    two = configured(small_config, threads=1, checkpoint_dir=str(shared), epochs=1,
                     processes_per_node=2)  # fmt: skip
    out = pretrain(two, prepared, tmp_path / "out")  # free again: two ranks train
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
    assert not (tmp_path / ".shared.lock").exists()
