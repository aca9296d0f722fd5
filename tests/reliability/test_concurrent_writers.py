"""Two sslops commands writing one output folder at once (CI jobs, cron, KFP tasks on a
shared volume), found by the session 26 concurrency review.

Races are made deterministic: the first writer's lock is held by this test process (the
protocol: ``flock`` on ``.<out>.lock``, which holds "<pid> <command>"), or the other
writer's renames are injected at the instant the race needs them. No sleeps, no timing.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from sslops.artifacts import move_into_place, write_artifact
from sslops.audit.bundle import generate_keypair
from sslops.config import Config
from sslops.errors import SslopsError
from tests.conftest import FAST_OVERRIDES, small_config_dict


@contextmanager
def held(out: Path, content: str) -> Iterator[None]:
    """Another sslops command (this process) holds ``out``'s lock, as it does while it works."""
    with open(out.parent / f".{out.name}.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        lock.truncate(0)
        lock.write(content.encode())
        lock.flush()
        yield


def _refusal(out: Path, holder: str) -> str:
    return (
        f"another sslops {holder} (process {os.getpid()}) is writing {out} "
        f"(lock {out.parent / f'.{out.name}.lock'}); wait for it to end, or choose another --out"
    )


def test_a_stage_command_into_a_folder_another_one_is_writing_is_refused_naming_it(
    small_data: dict[str, Path], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Two `sslops prepare --out X` started together both computed; the second then either
    silently replaced the first's artifact or, the folder being new, failed at the very end
    with "error: Directory not empty: .X.partial-…" (seen 1 in 25 rounds with two real
    processes). Now the second is refused before any work, naming the first."""
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config_dict(small_data)))
    out = tmp_path / "X"
    command = [sys.executable, "-m", "sslops", "prepare", "--config", str(config),
               "--out", str(out)]  # fmt: skip
    for flag in FAST_OVERRIDES:
        command += ["--set", flag]
    with held(out, f"{os.getpid()} prepare\n"):
        done = subprocess.run(command, capture_output=True, text=True, env=cli_env,
                              cwd=tmp_path, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == f"error: {_refusal(out, 'prepare')}"
        assert sorted(p.name for p in tmp_path.iterdir()) == [".X.lock", "small.yaml"]


def test_a_run_and_a_stage_command_exclude_each_other(small_config: Config, tmp_path: Path) -> None:
    from sslops.api import run_stage

    out = tmp_path / "X"
    with held(out, f"{os.getpid()} run\n"), pytest.raises(SslopsError) as refused:
        run_stage("prepare", small_config, out, {})
    assert str(refused.value) == _refusal(out, "run")
    assert not out.exists()
    # released (the holder's file removed as it ends), the same call writes the artifact
    (tmp_path / ".X.lock").unlink()
    assert run_stage("prepare", small_config, out, {}) == out
    assert (out / "meta.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X"]  # the lock file went with it


def test_two_attestations_into_one_folder_cannot_both_be_written(tmp_path: Path) -> None:
    """`sslops audit reproduce --out A` twice at once: both passed "an attestation is never
    replaced", both said "attestation written to A", and the second replaced the first's
    signed record (seen in 3 of 4 rounds with two real processes). The second is now
    refused at its start (here: before it reads the bundle)."""
    from sslops.audit.reevaluate import reproduce

    for who in ("issuer", "verifier"):
        generate_keypair(tmp_path / f"{who}.pem", tmp_path / f"{who}.pub.pem")
    bundle, data = tmp_path / "bundle", tmp_path / "data"
    bundle.mkdir()
    data.mkdir()
    out = tmp_path / "attestation"
    with held(out, f"{os.getpid()} audit reproduce\n"), pytest.raises(SslopsError) as refused:
        reproduce(bundle, data, tmp_path / "issuer.pub.pem", out,
                  key_file=tmp_path / "verifier.pem", verifier="V")  # fmt: skip
    assert str(refused.value) == _refusal(out, "audit reproduce")
    assert not out.exists()


def test_a_shadow_report_into_a_folder_another_one_is_writing_is_refused(tmp_path: Path) -> None:
    from sslops.shadow import shadow

    out = tmp_path / "shadow"
    with held(out, f"{os.getpid()} shadow\n"), pytest.raises(SslopsError) as refused:
        shadow(tmp_path / "candidate.onnx", tmp_path / "incumbent.onnx", tmp_path / "batches",
               out)  # fmt: skip
    assert str(refused.value) == _refusal(out, "shadow")
    assert not out.exists()


def test_a_lock_file_without_its_holder_s_command_still_names_the_process(
    small_config: Config, tmp_path: Path
) -> None:
    """A lock file of an earlier version holds the process id alone."""
    from sslops.api import run_stage

    out = tmp_path / "X"
    with held(out, f"{os.getpid()}\n"), pytest.raises(SslopsError) as refused:
        run_stage("prepare", small_config, out, {})
    assert str(refused.value) == _refusal(out, "command")


# --- writers that hold no lock (programs calling the stage functions themselves) ----------


def _artifact(final: Path, who: str) -> None:
    with write_artifact(final, "prepare", {"who": who}) as tmp:
        (tmp / "who.txt").write_text(who)


def _staged(root: Path, who: str) -> Path:
    folder = root / f".staged-{who}"
    folder.mkdir()
    (folder / "who.txt").write_text(who)
    return folder


def _renames_with(monkeypatch: pytest.MonkeyPatch, hook: Any) -> None:
    """Path.rename calls ``hook(source, target, rename)`` instead, once (the other writer's
    own renames inside the hook are real)."""
    real = Path.rename
    done: list[bool] = []

    def rename(self: Path, target: Any) -> Path:
        if done:
            return real(self, target)
        done.append(True)
        return hook(self, Path(target), real)

    monkeypatch.setattr(Path, "rename", rename)


def test_a_lock_file_its_holder_removed_as_it_ended_is_taken_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder ends (removes its lock file, then lets go) between this writer's open and
    its flock: the file it locked is gone, nobody holds the path, so the writer opens it
    again and goes on (it was refused as "another sslops command is writing")."""
    from sslops import artifacts

    out = tmp_path / "out"
    path = tmp_path / ".out.lock"
    path.write_text(f"{os.getpid()} prepare\n")  # the holder's file, about to be removed
    real = fcntl.flock
    calls = []

    def holder_ends_first(fd: int, op: int) -> None:
        calls.append(op)
        if len(calls) == 1:
            path.unlink()  # the ending holder removes its file before the lock is taken
        real(fd, op)

    monkeypatch.setattr(artifacts.fcntl, "flock", holder_ends_first)
    with artifacts.output_lock(out, "prepare"):
        assert path.read_text().startswith(f"{os.getpid()} prepare")
        assert len(calls) == 2
    assert not path.exists()


def test_a_folder_another_writer_removed_as_it_ended_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that made ``new/`` removes it, empty, as it ends (it was refused: bad data),
    between this writer's mkdir and its open of ``new/.out.lock``: this one makes it again
    and goes on, not failing with "No such file or directory"."""
    from sslops import artifacts

    folder = tmp_path / "new"
    opened: list[str] = []

    def other_writer_ends_first(path: Any, mode: str) -> Any:
        opened.append(str(path))
        if len(opened) == 1:
            folder.rmdir()
        return open(path, mode)

    monkeypatch.setattr(artifacts, "open", other_writer_ends_first, raising=False)
    with artifacts.output_lock(folder / "out", "prepare"):
        assert (folder / ".out.lock").is_file() and len(opened) == 2
    assert not folder.exists(), "this writer made it and wrote nothing there"


def test_a_writer_that_renames_its_folder_into_place_first_does_not_fail_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writer A moved the earlier folder aside; before A's own rename, writer B (finding no
    folder) renamed B's into place. A then failed with "Directory not empty" and left the
    earlier folder as `.X.old-*` for good (seen with two real processes writing 300
    artifacts each). Now A's replaces B's: the last one renamed stays, whole."""
    final = tmp_path / "X"
    _artifact(final, "earlier")
    theirs = _staged(tmp_path, "B")

    def b_renames_meanwhile(source: Path, target: Path, real: Any) -> Path:
        moved = real(source, target)  # A: the earlier folder aside
        move_into_place(theirs, final)  # B, all of it
        return moved

    _renames_with(monkeypatch, b_renames_meanwhile)
    move_into_place(_staged(tmp_path, "A"), final)
    assert (final / "who.txt").read_text() == "A"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X"]


def test_a_writer_whose_folder_another_moved_aside_first_does_not_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both saw the earlier folder; B moved it aside first, so A's move failed with "No
    such file or directory: 'X' -> '.X.old-…'". Now A looks again and renames its own in."""
    final = tmp_path / "X"
    _artifact(final, "earlier")
    aside = tmp_path / ".X.old-b"

    def b_moves_it_first(source: Path, target: Path, real: Any) -> Path:
        real(final, aside)  # B's first rename; B's second comes later
        return real(source, target)  # A's: raises FileNotFoundError

    _renames_with(monkeypatch, b_moves_it_first)
    move_into_place(_staged(tmp_path, "A"), final)
    assert (final / "who.txt").read_text() == "A"


def test_a_predict_into_a_file_another_one_is_writing_is_refused(tmp_path: Path) -> None:
    """Two predicts (or two scheduled runs publishing to the workspace volume) into one
    file: each renames its record, then its predictions; interleaved (A's record, B's
    record, B's predictions, A's predictions) they left A's predictions beside B's record,
    which the next predict then removed as "left by a killed predict". The second is now
    refused, and the file and its record stay as they were."""
    from sslops.predict import meta_path, publish

    written = tmp_path / "scored.csv"
    written.write_text("row_id,score,label\nr1,0.9,1\n")
    meta_path(written).write_text("{}\n")
    out = tmp_path / "published" / "predictions.csv"
    publish(written, out, [])
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    with held(out, f"{os.getpid()} predict\n"), pytest.raises(SslopsError) as refused:
        publish(written, out, [])
    assert str(refused.value) == _refusal(out, "predict")
    assert {
        p.name: p.read_bytes() for p in out.parent.iterdir() if p.name != ".predictions.csv.lock"
    } == before


def test_a_run_checks_its_folder_again_once_it_holds_the_lock(
    small_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sslops prepare --out X` finished between `sslops run --out X`'s check of X (then
    absent) and its lock: the run went on and, at its end, replaced the prepare artifact,
    which its check refuses to delete. It now checks again under the lock."""
    from sslops.api import run_stage
    from sslops.pipeline import local

    out = tmp_path / "X"
    exclusive = local._exclusive

    @contextmanager
    def other_finishes_first(folder: Path) -> Iterator[None]:
        run_stage("prepare", small_config, folder, {})  # the other command, all of it
        with exclusive(folder):
            yield

    monkeypatch.setattr(local, "_exclusive", other_finishes_first)
    monkeypatch.setattr(local, "_run_staged", lambda cfg, out: {})  # the pipeline: not needed
    with pytest.raises(SslopsError, match="holds files that are not an earlier sslops run folder"):
        local.run_local(small_config, out)
    assert (out / "meta.json").is_file() and not (out / "summary.json").exists()
