"""Replacing an earlier result: a failure or a kill at the moment of the swap keeps it.

Cheap (no pipeline runs: the pipeline is replaced by a failure), so no marker: these run in
the default suite too. Found by the session-23 fault-injection review.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sslops.artifacts import read_meta, write_artifact
from sslops.config import Config
from sslops.errors import ArtifactError, SslopsError
from sslops.pipeline import local
from sslops.pipeline.local import PipelineFailed, run_local


def _rename_failing_at(monkeypatch: pytest.MonkeyPatch, call: int, err: int) -> None:
    """``Path.rename`` raises ``OSError(err)`` at its ``call``-th use, as a full directory or
    an I/O error makes rename(2) fail."""
    real, calls = Path.rename, [0]

    def rename(self: Path, target: Any) -> Path:
        calls[0] += 1
        if calls[0] == call:
            raise OSError(err, os.strerror(err), str(self))
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)


def _artifact(final: Path, text: str) -> None:
    with write_artifact(final, "prepare", {"v": text}) as tmp:
        (tmp / "data.txt").write_text(text, encoding="utf-8")


def test_a_failed_swap_puts_the_earlier_artifact_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "prepared"
    _artifact(final, "old")
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    # 1st rename: the earlier artifact moved aside; 2nd: the new one into place (fails).
    _rename_failing_at(monkeypatch, 2, errno.ENOSPC)
    with pytest.raises(ArtifactError, match="was not written: No space left on device"):
        _artifact(final, "new")
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # nothing aside, no tmp
    read_meta(final, "prepare")


@pytest.fixture
def failing_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline fails at once (its own runs are in test_pipeline_faults.py)."""

    def fail(cfg: Config, out: Path) -> dict[str, Any]:
        raise PipelineFailed("finetune failed (injected)")

    monkeypatch.setattr(local, "_run_staged", fail)


def _previous_run(out: Path) -> dict[str, bytes]:
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"run": "previous"}), encoding="utf-8")
    (out / "run.log").write_text("previous run\n", encoding="utf-8")
    return {p.name: p.read_bytes() for p in out.iterdir()}


@pytest.mark.usefixtures("failing_pipeline")
def test_a_run_killed_mid_swap_gets_the_earlier_run_back(
    small_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed between moving the earlier run aside and renaming its own into place: no
    output folder, the earlier run under ``.<out>.old-*``. The next run puts it back and
    says so; its failure leaves it as it was."""
    out = tmp_path / "run"
    before = _previous_run(out)
    out.rename(tmp_path / ".run.old-0123abcd")
    (tmp_path / ".run.partial-89abcdef").mkdir()
    with pytest.raises(PipelineFailed, match="injected"):
        run_local(small_config, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    err = capsys.readouterr().err
    assert f"restored {out}" in err
    assert "removed " + str(tmp_path / ".run.partial-89abcdef") in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run")) == []


@pytest.mark.usefixtures("failing_pipeline")
def test_leftovers_of_killed_runs_are_removed_and_named(
    small_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    before = _previous_run(out)
    half_deleted = tmp_path / ".run.old-0123abcd"  # killed while deleting the replaced run
    half_deleted.mkdir()
    staging = tmp_path / ".run.partial-89abcdef"
    staging.mkdir()
    with pytest.raises(PipelineFailed):
        run_local(small_config, out)
    err = capsys.readouterr().err
    for stale in (half_deleted, staging):
        assert f"removed {stale}, left by an interrupted run into {out}" in err
        assert not stale.exists()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


_HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from sslops.pipeline.local import _exclusive
    with _exclusive(Path(sys.argv[1])):
        print("holding", flush=True)
        time.sleep(600)
    """
)


@pytest.mark.usefixtures("failing_pipeline")
def test_the_lock_names_its_holder_and_a_killed_holder_s_lock_is_taken_over(
    small_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        with pytest.raises(SslopsError) as refused:
            run_local(small_config, out)
        message = str(refused.value)
        assert f"another sslops run (process {holder.pid}) is writing {out}" in message
        assert str(tmp_path / ".run.lock") in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert (tmp_path / ".run.lock").is_file()  # the killed run's lock file, not its lock
    capsys.readouterr()
    with pytest.raises(PipelineFailed):
        run_local(small_config, out)
    assert f"of an sslops run (process {holder.pid}) that was killed" in capsys.readouterr().err
    assert not (tmp_path / ".run.lock").exists()


def test_a_log_that_cannot_be_kept_does_not_hide_the_failure(
    small_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while the failed run's log is copied beside the output folder: the
    error still names the task's failure, and no half-copied log is left."""
    log, kept = tmp_path / "staging.log", tmp_path / ".run.failed.log"

    def pipeline(config_json: str) -> None:
        print("error: finetune: the injected failure")
        raise RuntimeError("Pipeline 'ssl' finished with status FAILURE")

    def copy_half(source: Path, target: Path) -> None:
        target.write_bytes(Path(source).read_bytes()[:5])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(local.shutil, "copyfile", copy_half)
    with pytest.raises(PipelineFailed) as failed:
        local._run_pipeline(pipeline, small_config, log, kept)
    message = str(failed.value)
    assert message.startswith("finetune: the injected failure")
    assert f"its log could not be kept: No space left on device: {kept}" in message
    assert not kept.exists()


def test_predictions_whose_rename_fails_keep_the_earlier_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sslops predict`` renames the new record, then the new predictions into place; when
    the second rename fails, the earlier predictions must not stand beside the new record
    (it named the new file's sha256 and rows): the earlier record is put back."""
    from sslops.artifacts import sha256_file
    from sslops.predict import _writing, meta_path

    out = tmp_path / "predictions.csv"

    def predict(rows: list[list[str]], record: dict[str, Any]) -> None:
        with _writing(out) as sink:
            sink.writer.writerows(rows)
            sink.provenance = record

    predict([["id", "score"], ["1", "0.25"]], {"run": "earlier"})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real, calls = os.replace, [0]

    def replace(source: Any, target: Any) -> None:
        calls[0] += 1
        if calls[0] == 2:  # 1st: the record; 2nd: the predictions
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(source))
        real(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="Input/output error"):
        predict([["id", "score"], ["1", "0.75"]], {"run": "new"})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    record = json.loads(meta_path(out).read_text(encoding="utf-8"))
    assert record == {"run": "earlier", "predictions_sha256": sha256_file(out)}


def test_a_full_or_read_only_disk_says_what_to_do() -> None:
    from sslops.errors import describe_os_error

    full = describe_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/d/x"))
    assert full == (
        "No space left on device: /d/x; free space there (or write to another file system) "
        "and run again"
    )
    read_only = describe_os_error(OSError(errno.EROFS, os.strerror(errno.EROFS), "/d/x"))
    assert read_only.startswith("Read-only file system: /d/x; write to a folder you may write")
    assert describe_os_error(OSError(errno.EIO, os.strerror(errno.EIO))) == "Input/output error"


_WRITER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from sslops.artifacts import write_artifact
    with write_artifact(Path(sys.argv[1]), "prepare", {}) as tmp:
        (tmp / "half.bin").write_bytes(b"x" * 1000)
        if sys.argv[2] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        print("writing", flush=True)
        time.sleep(600)
    """
)


def test_a_killed_writer_s_folder_is_removed_by_the_next_and_a_live_one_s_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sslops prepare --out X`` (any stage) SIGKILLed left ``.X.partial-*`` for good; the
    next write of X now removes it and says so, and never touches a live writer's."""
    final = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", _WRITER, str(final), "die"], check=False)
    assert killed.returncode == -signal.SIGKILL
    (abandoned,) = tmp_path.glob(".out.partial-*")
    _artifact(final, "next")
    assert not abandoned.exists()
    err = capsys.readouterr().err
    assert f"removed {abandoned}, left by an interrupted write of {final}" in err
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(final), "live"], stdout=subprocess.PIPE, text=True
    ) as live:
        try:
            assert live.stdout is not None and live.stdout.readline() == "writing\n"
            (alive,) = tmp_path.glob(".out.partial-*")
            _artifact(final, "after")
            assert alive.is_dir() and (alive / "half.bin").is_file()
        finally:
            live.kill()
            live.wait()
            assert live.stdout is not None
            live.stdout.close()
    assert "removed" not in capsys.readouterr().err
    assert read_meta(final, "prepare")["config"] == {"v": "after"}


# Killed (SIGKILL, which nothing can handle) at a chosen step of a write: the step's call
# is replaced by one that kills the process, as a node failure or the OOM killer would.
_KILLED_AT = textwrap.dedent(
    """
    import fcntl, os, signal, sys
    from pathlib import Path
    import sslops.audit.attestation as attestation
    from sslops.predict import _writing
    from sslops.artifacts import write_artifact

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    where, target = sys.argv[1], Path(sys.argv[2])
    if where == "between predict's renames":
        real, calls = os.replace, [0]
        def replace(source, destination):
            calls[0] += 1
            if calls[0] == 2:  # 1st: the record is in place; 2nd: the predictions
                die()
            real(source, destination)
        os.replace = replace
        with _writing(target) as sink:
            sink.writer.writerows([["row_id", "score", "label"], ["a:0", "0.75", "1"]])
            sink.provenance = {"predictions": target.name, "run": "killed"}
    elif where == "between mkdir and flock":
        fcntl.flock = die
        with write_artifact(target, "prepare", {}):
            pass
    elif where == "during attestation":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        attestation.attestation_markdown = die  # attestation.json is written by then
        attestation.write_attestation(target, {"result": "x"}, Ed25519PrivateKey.generate())
    """
)


def _killed_at(where: str, target: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _KILLED_AT, where, str(target)], check=False,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_a_predict_killed_between_its_renames_is_completed_by_the_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed after renaming its record into place and before its predictions: the record
    described predictions that stood nowhere, beside the earlier ones, and its temporary
    files stayed. The next predict into the file (here one that then fails) completes the
    replacement from the record's sha256 and removes the rest, naming each."""
    from sslops.artifacts import sha256_file
    from sslops.predict import _writing, meta_path

    out = tmp_path / "predictions.csv"
    with _writing(out) as sink:
        sink.writer.writerows([["row_id", "score", "label"], ["a:0", "0.25", "0"]])
        sink.provenance = {"predictions": out.name, "run": "earlier"}
    _killed_at("between predict's renames", out)
    record = json.loads(meta_path(out).read_text(encoding="utf-8"))
    assert record["run"] == "killed" and "0.25" in out.read_text()  # the record is not theirs
    left = sorted(tmp_path.glob(".predictions.csv.*.tmp"))
    assert len(left) == 2  # the new predictions, the copy of the earlier record
    with pytest.raises(ValueError, match="bad row"), _writing(out):
        raise ValueError("bad row")
    err = capsys.readouterr().err
    assert f"completed the replacement of {out}" in err
    assert err.count(f", left by an interrupted predict into {out}") == 1  # the earlier record
    assert record["predictions_sha256"] == sha256_file(out) and "0.75" in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "predictions.csv",
        "predictions.meta.json",
    ]


def test_a_writer_killed_before_locking_its_folder_leaves_nothing_for_long(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed between creating ``.X.new-*`` and locking it: the next write of X removes it."""
    final = tmp_path / "out"
    _killed_at("between mkdir and flock", final)
    (abandoned,) = tmp_path.glob(".out.new-*")
    _artifact(final, "next")
    assert (
        f"removed {abandoned}, left by an interrupted write of {final}" in capsys.readouterr().err
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_attestation_killed_while_written_is_cleared_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed while writing its folder: ``.X.tmp-*`` stayed for good; now the folder is
    locked while written, and the next attestation written to X removes it, naming it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sslops.audit import attestation
    from sslops.audit.attestation import write_attestation

    monkeypatch.setattr(attestation, "attestation_markdown", lambda record: "# summary\n")

    out = tmp_path / "attestation"
    _killed_at("during attestation", out)
    (abandoned,) = [p for p in tmp_path.iterdir() if p.name.startswith(".attestation.")]
    write_attestation(out, {"result": "reproduced"}, Ed25519PrivateKey.generate())
    assert f"removed {abandoned}, left by an interrupted write of {out}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attestation"]
