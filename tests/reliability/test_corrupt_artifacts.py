"""A truncated or bit-flipped artifact stops the next stage with one line naming the file.

Each stage's artifact is copied, one payload file is damaged, and the stage that reads
it is run through the CLI: exit status 2, one ``error:`` line naming the damaged file
(from the sha256 in ``meta.json``), no output folder. Also: a missing signing key when
signing is required, and a full disk while writing, are one clean line and leave
nothing behind.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sslops.cli import main
from sslops.config import Config
from tests.conftest import FAST_OVERRIDES, ROOT
from tests.reliability.faults import file_size_limit, flip_bit, small_tmpfs, truncate

pytestmark = pytest.mark.reliability

# artifact -> (payload file to damage, the command that reads it)
READERS = {
    "prepare": ("train.parquet", "pretrain"),
    "pretrain": ("encoder.safetensors", "finetune"),
    "finetune": ("mitigated.safetensors", "evaluate"),
    "evaluate": ("metrics.json", "audit"),
    "export": ("model.onnx", "audit"),
}
FLAGS = {"prepare": "prepared", "pretrain": "pretrained", "finetune": "finetuned",
         "evaluate": "evaluation", "export": "exported"}  # fmt: skip
NEEDS = {"pretrain": ["prepare"], "finetune": ["prepare", "pretrain"],
         "evaluate": ["prepare", "finetune"], "export": ["prepare", "finetune"],
         "audit": ["prepare", "pretrain", "finetune", "evaluate", "export"]}  # fmt: skip


def config_args(small_config: Config, tmp_path: Path) -> list[str]:
    path = tmp_path / "config.json"
    path.write_text(small_config.to_json())
    return ["--config", str(path)]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("damage", [flip_bit, truncate])
@pytest.mark.parametrize("artifact", sorted(READERS))
def test_damaged_artifact_stops_the_reader_naming_the_file(
    artifact: str, damage: Callable[[Path], None], stage_artifacts: dict[str, Path],
    small_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    payload, command = READERS[artifact]
    copies = {}
    for name in NEEDS[command]:
        copies[name] = tmp_path / name
        shutil.copytree(stage_artifacts[name], copies[name])
    damage(copies[artifact] / payload)
    out = tmp_path / "out"
    argv = [command, *config_args(small_config, tmp_path), "--out", str(out)]
    for name in NEEDS[command]:
        argv += [f"--{FLAGS[name]}", str(copies[name])]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert str(copies[artifact] / payload) in line and "sha256" in line, line
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_missing_signing_key_when_required_is_one_clean_error(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.delenv("SSLOPS_SIGNING_KEY", raising=False)
    out = tmp_path / "audit"
    argv = ["audit", *config_args(small_config, tmp_path), "--out", str(out),
            "--set", "audit.signing.required=true"]  # fmt: skip
    for name in NEEDS["audit"]:
        argv += [f"--{FLAGS[name]}", str(stage_artifacts[name])]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "SSLOPS_SIGNING_KEY" in line, line
    assert not out.exists() and not list(tmp_path.glob(".audit*"))


def prepare_command(small_config: Config, tmp_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "sslops.cli", "prepare",
            *config_args(small_config, tmp_path), "--out", str(out)]  # fmt: skip


def test_full_disk_while_writing_is_one_clean_error(small_config: Config, tmp_path: Path) -> None:
    """Every file write past 64 KiB fails with EFBIG (RLIMIT_FSIZE), as on a full disk."""
    out = tmp_path / "prepare"
    done = subprocess.run(
        prepare_command(small_config, tmp_path, out), capture_output=True, text=True,
        preexec_fn=file_size_limit(64 * 1024), timeout=300,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    # The first write past the limit is prepare's scratch copy (numpy names no file) or,
    # with a larger limit, the artifact itself ("<out> was not written: ...").
    assert lines[0].startswith("error: "), lines
    assert not out.exists() and not list(tmp_path.glob(".prepare*"))


def test_full_tmpfs_is_one_clean_error(small_config: Config, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        out = disk / "prepare"
        done = subprocess.run(
            prepare_command(small_config, tmp_path, out), capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        left = list(disk.iterdir())
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith(f"error: {out} was not written: "), lines
    assert "No space left on device" in lines[0], lines
    assert not left, left


def test_config_file_on_a_full_disk_is_not_half_read(tmp_path: Path) -> None:
    """A config cut short by a full disk (truncated YAML) is rejected, not half-applied."""
    text = (ROOT / "configs" / "adult.yaml").read_text()
    cut = tmp_path / "cut.yaml"
    cut.write_text(text[: text.index("sensitive")])  # stops before data.sensitive
    done = subprocess.run(
        [sys.executable, "-m", "sslops.cli", "config", "--config", str(cut),
         *[arg for o in FAST_OVERRIDES for arg in ("--set", o)]],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.startswith("error: "), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
