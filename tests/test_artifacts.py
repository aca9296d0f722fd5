"""Artifact directories: atomic writes, lineage in meta.json, verification on read."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from sslops.artifacts import (
    LOCATIONS_ENV,
    META,
    check_lineage,
    check_replaceable,
    final_location,
    hash_tree,
    read_meta,
    sha256_file,
    write_artifact,
)
from sslops.errors import ArtifactError

CONFIG = {"seed": 0, "note": "test"}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_artifact(final: Path, stage: str = "prepare", payload: str = "v1") -> Path:
    with write_artifact(final, stage, CONFIG) as tmp:
        (tmp / "a.txt").write_text(payload, encoding="utf-8")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.bin").write_bytes(b"\x00\x01\x02")
    return final


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Hidden siblings (``.NAME.partial-*`` / ``.NAME.old-*``) a write may leave behind."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --- atomic writes --------------------------------------------------------------------------


def test_successful_write_creates_final_dir_with_meta(tmp_path: Path) -> None:
    final = make_artifact(tmp_path / "art")
    assert sorted(files_of(final)) == ["a.txt", META, "sub/b.bin"]
    assert leftovers(tmp_path) == []


def test_yielded_dir_is_a_hidden_partial_sibling(tmp_path: Path) -> None:
    final = tmp_path / "art"
    with write_artifact(final, "s", CONFIG) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".art.partial-")
        assert tmp.is_dir()
        assert not final.exists()
        (tmp / "x").write_text("x")
    assert not tmp.exists()
    assert (final / "x").read_text() == "x"


def test_exception_inside_with_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "art"
    with pytest.raises(RuntimeError, match="boom"), write_artifact(final, "s", CONFIG) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("boom")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_keyboard_interrupt_inside_with_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "art"
    with pytest.raises(KeyboardInterrupt), write_artifact(final, "s", CONFIG) as tmp:
        (tmp / "half.txt").write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_existing_final_intact(tmp_path: Path) -> None:
    final = make_artifact(tmp_path / "art", payload="old")
    before = {
        p.relative_to(final).as_posix(): p.read_bytes() for p in final.rglob("*") if p.is_file()
    }
    with pytest.raises(ValueError), write_artifact(final, "prepare", CONFIG) as tmp:
        (tmp / "a.txt").write_text("new", encoding="utf-8")
        raise ValueError("fail mid-write")
    after = {
        p.relative_to(final).as_posix(): p.read_bytes() for p in final.rglob("*") if p.is_file()
    }
    assert after == before
    assert (final / "a.txt").read_text(encoding="utf-8") == "old"
    assert leftovers(tmp_path) == []
    read_meta(final, "prepare")  # still verifies


def test_success_replaces_existing_final(tmp_path: Path) -> None:
    final = make_artifact(tmp_path / "art", payload="old")
    with write_artifact(final, "prepare", CONFIG) as tmp:
        (tmp / "only-new.txt").write_text("new", encoding="utf-8")
    assert sorted(p.name for p in final.iterdir()) == [META, "only-new.txt"]
    assert leftovers(tmp_path) == []
    meta = read_meta(final, "prepare")
    assert set(meta["files"]) == {"only-new.txt"}


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ("user files", "holds files that are not an earlier prepare artifact (notes.txt)"),
        ("other stage", "holds a pretrain artifact, which writing the prepare artifact there"),
        ("a file", "is a file; expected a folder"),
    ],
)
def test_a_folder_that_is_not_an_earlier_artifact_of_the_stage_is_never_replaced(
    tmp_path: Path, setup: str, needle: str
) -> None:
    """`sslops prepare --out ~/Documents` replaced the folder, deleting what was in it; so did
    `pretrain --out` given the prepare artifact. An empty folder or the same stage's earlier
    artifact is still replaced (the test above)."""
    final = tmp_path / "out"
    if setup == "user files":
        final.mkdir()
        (final / "notes.txt").write_text("keep")
    elif setup == "other stage":
        make_artifact(final, stage="pretrain")
    else:
        final.write_text("keep")
    before = files_of(final) if final.is_dir() else final.read_bytes()
    with pytest.raises(ArtifactError, match=re.escape(needle)), write_artifact(
        final, "prepare", CONFIG
    ) as tmp:  # fmt: skip
        (tmp / "a.txt").write_text("new")
    assert (files_of(final) if final.is_dir() else final.read_bytes()) == before
    assert leftovers(tmp_path) == []
    (tmp_path / "empty").mkdir()
    make_artifact(tmp_path / "empty")  # an empty folder is fine


def test_cli_and_run_refuse_a_folder_of_other_files_before_any_work(tmp_path: Path, capsys) -> None:
    from sslops.cli import main
    from tests.conftest import ROOT

    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    config = str(ROOT / "configs" / "adult.yaml")
    for command in ("prepare", "run"):
        assert main([command, "--config", config, "--out", str(folder)]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"error: {folder} exists and holds files that are not an earlier")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Documents"]


def test_missing_input_meta_fails_before_yield_and_cleans_up(tmp_path: Path) -> None:
    not_an_artifact = tmp_path / "in"
    not_an_artifact.mkdir()
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError), write_artifact(out, "s", CONFIG, {"x": not_an_artifact}):
        pytest.fail("body must not run")  # pragma: no cover
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_parent_dirs_are_created(tmp_path: Path) -> None:
    final = make_artifact(tmp_path / "a" / "b" / "art")
    assert (final / META).is_file()


# --- meta.json ------------------------------------------------------------------------------


def test_meta_records_stage_config_and_file_hashes(tmp_path: Path) -> None:
    final = make_artifact(tmp_path / "art", stage="pretrain", payload="hello")
    meta = json.loads((final / META).read_text(encoding="utf-8"))
    assert meta["stage"] == "pretrain"
    assert meta["config"] == CONFIG
    assert meta["files"] == {
        "a.txt": sha256_bytes(b"hello"),
        "sub/b.bin": sha256_bytes(b"\x00\x01\x02"),
    }
    assert META not in meta["files"]
    assert {"versions", "git_commit", "host", "python", "started", "ended"} <= set(meta)
    assert meta["started"] <= meta["ended"]
    assert "sslops" in meta["versions"]


def test_meta_records_inputs_by_meta_hash_and_sources_by_file_hash(tmp_path: Path) -> None:
    upstream = make_artifact(tmp_path / "up")
    raw = tmp_path / "raw.csv"
    raw.write_bytes(b"a,b\n1,2\n")
    with write_artifact(
        tmp_path / "down", "finetune", CONFIG, inputs={"prepared": upstream}, sources={"data": raw}
    ) as tmp:
        (tmp / "model.bin").write_bytes(b"m")
    meta = read_meta(tmp_path / "down", "finetune")
    assert meta["inputs"] == {
        "prepared": {
            "path": str(upstream),
            "meta_sha256": sha256_bytes((upstream / META).read_bytes()),
        }
    }
    assert meta["sources"] == {"data": {"path": str(raw), "sha256": sha256_bytes(b"a,b\n1,2\n")}}


def test_sha256_file_and_hash_tree(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    data = bytes(range(256)) * 9000  # > 1 MiB: more than one read block
    big.write_bytes(data)
    assert sha256_file(big) == sha256_bytes(data)
    (tmp_path / META).write_text("{}")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / META).write_text("nested")
    assert hash_tree(tmp_path) == {
        "big.bin": sha256_bytes(data),
        f"d/{META}": sha256_bytes(b"nested"),
    }


# --- read_meta ------------------------------------------------------------------------------


def test_read_meta_accepts_untouched_artifact(tmp_path: Path) -> None:
    final = make_artifact(tmp_path / "art")
    assert read_meta(final, "prepare")["stage"] == "prepare"
    assert read_meta(final)["stage"] == "prepare"


def test_read_meta_detects_modified_file(tmp_path: Path) -> None:
    final = make_artifact(tmp_path / "art")
    (final / "sub" / "b.bin").write_bytes(b"\x00\x01\x03")
    with pytest.raises(ArtifactError) as info:
        read_meta(final, "prepare")
    assert str(final / "sub" / "b.bin") in str(info.value)
    assert "modified" in str(info.value)


def test_read_meta_detects_truncated_file(tmp_path: Path) -> None:
    final = make_artifact(tmp_path / "art")
    (final / "a.txt").write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"a\.txt was modified"):
        read_meta(final)


def test_read_meta_detects_added_file(tmp_path: Path) -> None:
    final = make_artifact(tmp_path / "art")
    (final / "sub" / "extra.txt").write_text("sneaky")
    with pytest.raises(ArtifactError) as info:
        read_meta(final, "prepare")
    assert str(final / "sub" / "extra.txt") in str(info.value)
    assert "added" in str(info.value)


def test_read_meta_detects_removed_file(tmp_path: Path) -> None:
    final = make_artifact(tmp_path / "art")
    (final / "a.txt").unlink()
    with pytest.raises(ArtifactError) as info:
        read_meta(final, "prepare")
    assert str(final / "a.txt") in str(info.value)
    assert "missing" in str(info.value)


def test_read_meta_detects_wrong_stage(tmp_path: Path) -> None:
    final = make_artifact(tmp_path / "art", stage="pretrain")
    with pytest.raises(ArtifactError) as info:
        read_meta(final, "prepare")
    assert str(info.value) == f"{final} is a pretrain artifact; expected an sslops prepare artifact"
    export = make_artifact(tmp_path / "exp", stage="export")
    with pytest.raises(
        ArtifactError, match="exp is an export artifact; expected an sslops prepare"
    ):
        read_meta(export, "prepare")


def test_read_meta_without_verify_ignores_changes(tmp_path: Path) -> None:
    final = make_artifact(tmp_path / "art")
    (final / "a.txt").write_text("changed")
    assert read_meta(final, "prepare", verify=False)["stage"] == "prepare"


def test_read_meta_on_plain_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as info:
        read_meta(tmp_path, "evaluate")
    assert str(tmp_path) in str(info.value)
    assert "not an sslops evaluate artifact" in str(info.value)


def test_read_meta_on_corrupt_meta(tmp_path: Path) -> None:
    final = make_artifact(tmp_path / "art")
    (final / META).write_text("{not json")
    with pytest.raises(ArtifactError) as info:
        read_meta(final)
    assert str(final / META) in str(info.value)
    assert "not valid JSON" in str(info.value)


def test_read_meta_names_a_missing_path_or_a_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="nope does not exist; expected an sslops prepare"):
        read_meta(tmp_path / "nope", "prepare")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(
        ArtifactError, match=r"f\.txt is a file; expected an sslops prepare artifact"
    ):
        read_meta(tmp_path / "f.txt", "prepare")


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda m: [], "expected a JSON object, found list"),
        (lambda m: "x", "expected a JSON object, found str"),
        (lambda m: {**m, "files": None}, 'expected "files" to map each file to its sha256'),
        (lambda m: {**m, "files": [1, 2]}, 'expected "files" to map each file to its sha256'),
        (lambda m: {k: v for k, v in m.items() if k != "stage"}, 'no "stage" names the stage'),
        (lambda m: {**m, "inputs": []}, 'expected "inputs" to map each input'),
        (lambda m: {**m, "inputs": {"prepared": "x"}}, 'expected "inputs" to map each input'),
    ],
)
def test_read_meta_and_check_lineage_name_a_damaged_meta_json(
    tmp_path: Path, edit, problem: str
) -> None:
    final = make_artifact(tmp_path / "art")
    meta = json.loads((final / META).read_text())
    (final / META).write_text(json.dumps(edit(meta)))
    for check in (lambda: read_meta(final, "prepare"), lambda: check_lineage(final)):
        with pytest.raises(ArtifactError) as info:
            check()
        assert str(info.value).startswith(f"{final / META} is damaged: ")
        assert problem in str(info.value)


def test_out_inside_an_input_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    source = make_artifact(tmp_path / "prep")
    before = files_of(source)
    for out in (source / "pre", source / "sub" / "deeper", source):
        inside = re.escape(f"is inside {source}, an input of the pretrain")
        with (
            pytest.raises(ArtifactError, match=inside),
            write_artifact(out, "pretrain", CONFIG, {"prepared": source}),
        ):
            raise AssertionError("never reached")
    # a file of an artifact protects that artifact; a file elsewhere only itself
    (tmp_path / "plain.csv").write_text("a\n1\n")
    with pytest.raises(
        ArtifactError, match=re.escape(f"is inside {source}, an input of the shadow")
    ):
        check_replaceable(source / "report", "shadow artifact", inputs=[source / "a.txt"])
    check_replaceable(tmp_path / "report", "shadow artifact", inputs=[tmp_path / "plain.csv"])
    check_replaceable(tmp_path / "x", "pretrain artifact", inputs=[tmp_path / "nope", None])
    assert files_of(source) == before and leftovers(tmp_path) == []


# --- lineage across artifacts given together --------------------------------------------------


def test_check_lineage_refuses_artifacts_of_different_runs(tmp_path: Path) -> None:
    ours, theirs = (
        make_artifact(tmp_path / "prep-a"),
        make_artifact(tmp_path / "prep-b", payload="v2"),
    )
    with write_artifact(tmp_path / "pre", "pretrain", CONFIG, {"prepared": ours}) as tmp:
        (tmp / "encoder.bin").write_bytes(b"\x01")
    with write_artifact(
        tmp_path / "ft", "finetune", CONFIG, {"prepared": ours, "pretrained": tmp_path / "pre"}
    ) as tmp:
        (tmp / "head.bin").write_bytes(b"\x02")
    check_lineage(ours, tmp_path / "pre")  # one run: fine
    check_lineage(ours, tmp_path / "pre", tmp_path / "ft")
    check_lineage(theirs)  # nothing to compare
    with pytest.raises(ArtifactError) as info:
        check_lineage(theirs, tmp_path / "pre")
    message = str(info.value)
    assert f"{tmp_path / 'pre'} was made from another prepare artifact than {theirs}" in message
    assert sha256_file(ours / META)[:12] in message and sha256_file(theirs / META)[:12] in message
    assert f"rerun pretrain on {theirs}" in message
    # a pretrain artifact rewritten after the fine-tune was made is not the one it records
    with write_artifact(tmp_path / "pre", "pretrain", CONFIG, {"prepared": ours}) as tmp:
        (tmp / "encoder.bin").write_bytes(b"\x03")
    with pytest.raises(ArtifactError, match="made from another pretrain artifact"):
        check_lineage(ours, tmp_path / "pre", tmp_path / "ft")


def test_lineage_names_where_an_artifact_ends_up_after_sslops_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inputs under the staged pipeline root are recorded at their final folder; others as given."""
    root, out = tmp_path / ".run.partial-1234" / "kfp", tmp_path / "run"
    staged = root / "sslops-ssl-pipeline-2026" / "prepare" / "prepared"
    elsewhere = tmp_path / "kept" / "prepared"
    for folder in (staged, elsewhere):
        with write_artifact(folder, "prepare", {}):
            pass
    assert final_location(staged) == str(staged)  # not in a run: as given
    locations = {"root": str(root), "out": str(out), "folders": {"prepare/prepared": "prepare"}}
    monkeypatch.setenv(LOCATIONS_ENV, json.dumps(locations))
    assert final_location(staged) == str(out / "prepare")
    assert final_location(staged / "train.parquet") == str(out / "prepare" / "train.parquet")
    assert final_location(root / "sslops-ssl-pipeline-2026" / "prepare") == str(
        root / "sslops-ssl-pipeline-2026" / "prepare"
    )
    assert final_location(elsewhere) == str(elsewhere)
    with write_artifact(tmp_path / "pretrained", "pretrain", {}, inputs={"prepared": staged}):
        pass
    recorded = json.loads((tmp_path / "pretrained" / META).read_text())["inputs"]["prepared"]
    assert recorded["path"] == str(out / "prepare")
    assert recorded["meta_sha256"] == sha256_file(staged / META)


def test_renames_into_place_are_made_durable_by_syncing_their_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename is an entry of its folder: until the folder is synced, a power loss can take
    the new artifact or checkpoint back (the files inside were synced already)."""
    import os

    import torch

    from sslops.artifacts import move_into_place
    from sslops.pretrain.checkpoint import save_checkpoint

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    staged = tmp_path / ".out.partial-1"
    staged.mkdir()
    move_into_place(staged, tmp_path / "out")
    assert synced == [str(tmp_path)]
    synced.clear()
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder, 3, torch.nn.Linear(2, 1), {"step": 3}, {})
    assert synced.count(str(folder)) == 2  # the step folder's rename, then the pointer's


def test_a_timed_stage_records_its_own_start_not_its_artifact_s_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """meta.json's started is when write_artifact began, which a stage enters at its end
    (pretrain: after training), yet lineage.json gave it as when the stage ran (found by the
    logs review). A stage function now records its own start and duration, which the
    lineage takes, saying so; an artifact without them keeps its write time, marked."""
    import sslops.artifacts as artifacts
    from sslops.audit.stage import _stage_times

    clock = iter(f"2026-01-01T00:00:0{second}+00:00" for second in range(10))
    monkeypatch.setattr(artifacts, "_now", lambda: next(clock))

    @artifacts.timed_stage("pretrain")
    def outer(out: Path) -> Path:
        return inner(out)  # pretrain() around run_pretrain(): the outer call's start

    @artifacts.timed_stage("pretrain")
    def inner(out: Path) -> Path:
        with write_artifact(out, "pretrain", CONFIG) as tmp:
            (tmp / "a.txt").write_text("hello")
        return out

    meta = read_meta(outer(tmp_path / "art"))
    assert (meta["stage_started"], meta["started"], meta["ended"]) == (
        "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:01+00:00", "2026-01-01T00:00:02+00:00",
    )  # fmt: skip
    assert isinstance(meta["stage_seconds"], float) and meta["stage_seconds"] >= 0
    assert _stage_times(meta) == {
        "started": "2026-01-01T00:00:00+00:00", "ended": "2026-01-01T00:00:02+00:00",
        "seconds": meta["stage_seconds"], "time_source": "stage",
    }  # fmt: skip
    untimed = read_meta(make_artifact(tmp_path / "old", stage="prepare", payload="x"))
    assert "stage_started" not in untimed  # written outside a timed stage function
    assert _stage_times(untimed) == {
        "started": untimed["started"], "ended": untimed["ended"], "seconds": None,
        "time_source": "artifact",
    }  # fmt: skip
