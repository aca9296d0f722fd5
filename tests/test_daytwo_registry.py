"""Day-2 operations on an audit registry (found by the daytwo review): a filing that fails
(an unreadable index, a full disk) leaves nothing behind; one bad line in a long index is
one error naming it, with nothing lost; and what an operator may delete to free space
(run folders, the lock, a killed filing's temporary files) leaves verification green,
while anything the registry holds (a bundle, the oldest entries of an index) is found."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sslops.artifacts import json_text
from sslops.audit.bundle import sign_manifest, write_manifest
from sslops.audit.registry import (
    check_checkpoint,
    check_registry,
    checkpoint,
    entry_digest,
    file_bundle,
    list_registry,
)
from sslops.cli import main
from sslops.errors import ArtifactError
from tests.reliability.faults import small_tmpfs

ISSUER = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"sslops daytwo").digest())


def _bundle(folder: Path, number: int) -> Path:
    """A small signed bundle (filing reads no more than the manifest and gates.json)."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(f"not really onnx {number}".encode())
    (folder / "gates.json").write_text(json.dumps({"overall": "passed", "model": "ssl"}))
    write_manifest(folder, ISSUER)
    sign_manifest(folder, ISSUER)
    return folder


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the lock (made empty by the first filing, kept)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


def _index(registry: Path, model: str = "income") -> Path:
    return registry / "models" / model / "index.json"


@pytest.fixture()
def registry(tmp_path: Path) -> Path:
    registry = tmp_path / "registry"
    for number in range(3):
        file_bundle(_bundle(tmp_path / "runs" / f"run{number}" / "bundle", number), registry,
                    model="income")  # fmt: skip
    assert check_registry(registry) == []
    return registry


def _long_index(registry: Path, count: int) -> bytes:
    """The model's index grown to ``count`` chained entries (copies of its last filing
    naming other bundles: what ``audit list`` and filing read is the index alone), written
    as the registry writes it; returns its bytes."""
    path = _index(registry)
    index = json.loads(path.read_text())
    template = index["entries"][-1]
    entries: list[dict[str, Any]] = index["entries"]
    while len(entries) < count:
        sha = hashlib.sha256(str(len(entries)).encode()).hexdigest()
        entries.append({**template, "manifest_sha256": sha, "bundle": f"bundles/{sha}.zip",
                        "previous": entry_digest(entries[-1])})  # fmt: skip
    data = (json_text(index, indent=2) + "\n").encode()
    path.write_bytes(data)
    return data


def test_one_bad_line_in_a_1000_entry_index_is_one_error_naming_it_and_nothing_is_filed(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _long_index(registry, 1000)
    lines = good.decode().split("\n")
    middle = len(lines) // 2
    while '"previous": "' not in lines[middle]:
        middle += 1
    lines[middle] = lines[middle].replace('"previous": "', "'previous': \"", 1)
    _index(registry).write_bytes("\n".join(lines).encode())
    before = _tree(registry)
    capsys.readouterr()
    assert main(["audit", "list", "--registry", str(registry)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "index.json: unreadable" in err[0]
    assert f"line {middle + 1} column" in err[0]
    # Filing under the model refuses before anything is written: before the fix the
    # bundle was copied first and left in bundles/, in no index, failing every later
    # verification.
    new = _bundle(tmp_path / "runs" / "new" / "bundle", 99)
    assert main(["audit", "file", str(new), "--registry", str(registry), "--model", "income"]) == 2
    assert "index.json: unreadable" in capsys.readouterr().err
    assert _tree(registry) == before
    # Nothing lost: the line put back, every entry is there again.
    _index(registry).write_bytes(good)
    assert len(list_registry(registry, "income")) == 1000


def test_a_full_disk_while_the_index_is_written_leaves_the_registry_as_it_was(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    before = _tree(registry)
    write_bytes = Path.write_bytes

    def disk_fills(path: Path, data: bytes) -> int:
        if path.name.startswith(".index.json."):  # the index's temporary file
            write_bytes(path, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", disk_fills)
    new = _bundle(tmp_path / "runs" / "new" / "bundle", 99)
    capsys.readouterr()
    assert main(["audit", "file", str(new), "--registry", str(registry), "--model", "income"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.undo()
    # The index whole, no temporary file, and no bundle in no index (before the fix, the
    # copied bundle stayed and the nightly verification failed on it).
    assert _tree(registry) == before
    assert check_registry(registry) == []
    assert file_bundle(new, registry, model="income")["status"] == "filed"
    assert check_registry(registry) == []


def test_a_real_full_disk_fails_the_filing_at_its_index_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tmpfs with room for a bundle but not for the model's grown index (root only)."""
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        registry = disk / "registry"
        for number in range(3):
            file_bundle(_bundle(tmp_path / "runs" / f"run{number}", number), registry,
                        model="income")  # fmt: skip
        index = _long_index(registry, 1000)
        free = shutil.disk_usage(disk).free
        assert free > len(index) + 300_000, "the tmpfs is too small for the probe"
        (disk / "filler").write_bytes(bytes(free - 200_000))
        before = _tree(registry)
        new = _bundle(tmp_path / "runs" / "new", 99)
        capsys.readouterr()
        status = main(["audit", "file", str(new), "--registry", str(registry), "--model",
                       "income"])  # fmt: skip
        assert status == 2 and "No space left on device" in capsys.readouterr().err
        assert _tree(registry) == before
        (disk / "filler").unlink()
        assert file_bundle(new, registry, model="income")["status"] == "filed"
        assert _index(registry).read_bytes().startswith(index[: len(index) // 2])


def test_a_bundle_filed_under_another_model_stays_when_a_filing_fails(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the bundle a failed filing placed is removed: one already in the registry (filed
    under another model) is not."""
    source = registry.parent / "runs" / "run0" / "bundle"
    sha = hashlib.sha256((source / "manifest.json").read_bytes()).hexdigest()
    write_bytes = Path.write_bytes

    def disk_fills(path: Path, data: bytes) -> int:
        if path.name.startswith(".index.json."):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", disk_fills)
    with pytest.raises(OSError, match="No space"):
        file_bundle(source, registry, model="other")
    monkeypatch.undo()
    assert (registry / "bundles" / f"{sha}.zip").is_file()
    assert check_registry(registry) == []


def test_a_failure_after_the_index_is_renamed_keeps_the_bundle_it_lists(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder's fsync after the index's rename fails (an I/O error): the index already
    lists the new bundle, so the bundle stays; removing it would leave an entry naming a
    missing bundle."""
    import sslops.audit.registry as registry_module

    fsync_folder = registry_module.fsync_folder

    def fails_for_the_index(folder: Path) -> None:
        fsync_folder(folder)
        if folder.parent.name == "models":
            raise OSError(errno.EIO, "Input/output error", str(folder))

    monkeypatch.setattr(registry_module, "fsync_folder", fails_for_the_index)
    new = _bundle(tmp_path / "runs" / "new" / "bundle", 99)
    with pytest.raises(OSError, match="Input/output"):
        file_bundle(new, registry, model="income")
    monkeypatch.undo()
    assert len(list_registry(registry, "income")) == 4
    assert check_registry(registry) == []


def test_what_the_docs_say_an_operator_may_delete_leaves_verification_green(
    registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = registry.parent / "runs"
    (registry / "bundles" / ".0123.zip.abc.tmp").write_bytes(b"a killed filing's copy")
    assert main(["audit", "list", "--registry", str(registry), "--verify"]) == 0
    # The run folders the bundles were filed from, the lock, a killed filing's leftovers.
    shutil.rmtree(runs)
    (registry / ".lock").unlink()
    (registry / "bundles" / ".0123.zip.abc.tmp").unlink()
    capsys.readouterr()
    assert main(["audit", "list", "--registry", str(registry), "--verify"]) == 0
    assert "verified: 3 filed bundle(s) intact" in capsys.readouterr().err


def test_deleting_an_old_bundle_or_pruning_the_oldest_entries_is_found(
    registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    point = checkpoint(registry)
    index = json.loads(_index(registry).read_text())
    oldest = index["entries"][0]["manifest_sha256"]
    # The oldest bundle deleted to free space: its entry still names it.
    kept = registry.parent / "kept.zip"
    shutil.copyfile(registry / "bundles" / f"{oldest}.zip", kept)
    (registry / "bundles" / f"{oldest}.zip").unlink()
    assert check_registry(registry) == [
        f"models/income/index.json entry 1: bundle bundles/{oldest}.zip is missing"
    ]
    # ... and its entry pruned with it: the new first entry's link names a removed one.
    index["entries"] = index["entries"][1:]
    _index(registry).write_text(json_text(index, indent=2) + "\n")
    problems = check_registry(registry)
    assert len(problems) == 1 and "entry 1: the chain of digests breaks" in problems[0]
    assert main(["audit", "list", "--registry", str(registry), "--verify"]) == 1
    # A whole model's index and bundles removed: the registry alone cannot tell (nothing
    # left names them); a checkpoint kept elsewhere does.
    shutil.rmtree(registry / "models" / "income")
    for path in (registry / "bundles").glob("*.zip"):
        path.unlink()
    assert check_registry(registry) == []
    [gone] = check_checkpoint(registry, point)
    assert "models/income/index.json is gone" in gone
    with pytest.raises(ArtifactError, match="no bundle is filed under model 'income'"):
        list_registry(registry, "income")


def test_an_unreadable_index_is_one_problem_not_one_a_bundle(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its bundles are found in no readable index: before, each was a line of its own, with
    the advice to file it again (a thousand lines for a year of nightly filings)."""
    file_bundle(_bundle(tmp_path / "runs" / "other" / "bundle", 50), registry, model="other")
    _index(registry).write_text("{ not json\n")
    problems = check_registry(registry)
    assert problems[0].startswith(f"{_index(registry)}: unreadable")
    assert problems[1:] == [
        "3 bundle(s) in bundles/ are in no readable index (models/income/index.json "
        "unreadable: they may be its entries); repair or restore that index first"
    ]
    capsys.readouterr()
    assert main(["audit", "list", "--registry", str(registry), "--model", "other",
                 "--verify"]) == 1  # fmt: skip
    assert "failed verification (2 problems)" in capsys.readouterr().err
    # With every index readable, a bundle in none is still named on its own line.
    shutil.rmtree(registry / "models" / "income")
    assert len(check_registry(registry)) == 3
    assert all("is filed in no model's index" in p for p in check_registry(registry))
