"""The release files: two builds of one commit are the same bytes (``make dist``,
scripts/build_dist.py), whatever the files' times in the checkout and the builder's umask,
and the rewritten sdist still unpacks to the tracked files."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return [p for p in out.split("\0") if p and os.path.lexists(ROOT / p)]


def _clone_and_build(where: Path, umask: int) -> Path:
    """A fresh clone holding this checkout's tracked files as they are now, each copied
    anew (their times are now, not the checkout's), built under ``umask``; returns the
    output folder."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(where)], check=True)
    for name in _tracked():
        target = where / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or (ROOT / name).is_symlink():
            target.unlink(missing_ok=True)
            target.symlink_to(os.readlink(ROOT / name))
        else:
            shutil.copy(ROOT / name, target)  # the mode, not the time
    subprocess.run(["git", "add", "-A"], cwd=where, check=True)
    out = where / "out"
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    result = subprocess.run(
        ["bash", "-c", f"umask {umask:03o} && exec {sys.executable} scripts/build_dist.py --out out"],
        cwd=where, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    if not (ROOT / ".git").exists() or not shutil.which("git"):
        pytest.skip("not a git checkout: the release is built from a commit")
    pytest.importorskip("setuptools", minversion="77")
    base = tmp_path_factory.mktemp("dist")
    return [_clone_and_build(base / "a", 0o022), _clone_and_build(base / "b", 0o077)]


def test_two_builds_of_one_commit_are_the_same_bytes(builds: list[Path]) -> None:
    first, second = ((out / "SHA256SUMS").read_text() for out in builds)
    assert first == second
    names = sorted(line.split()[1] for line in first.splitlines())
    assert names == [f"sslops-{VERSION}-py3-none-any.whl", f"sslops-{VERSION}.tar.gz"]
    for line in first.splitlines():
        digest, name = line.split()
        assert hashlib.sha256((builds[0] / name).read_bytes()).hexdigest() == digest


def test_every_entry_carries_the_commits_time_and_a_fixed_mode(builds: list[Path]) -> None:
    epoch = int(
        subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=builds[0].parent,
                       capture_output=True, text=True, check=True).stdout
    )  # fmt: skip
    with tarfile.open(builds[0] / f"sslops-{VERSION}.tar.gz") as sdist:
        members = sdist.getmembers()
    assert {m.mtime for m in members} == {epoch}
    assert {(m.uname, m.uid) for m in members} == {("root", 0)}
    assert {m.mode for m in members if m.isfile()} <= {0o644, 0o755}
    stamp = datetime.fromtimestamp(epoch, UTC).timetuple()[:6]
    with zipfile.ZipFile(builds[0] / f"sslops-{VERSION}-py3-none-any.whl") as wheel:
        infos = wheel.infolist()
    assert {i.date_time for i in infos} == {(*stamp[:5], stamp[5] - stamp[5] % 2)}
    # The files' modes (git's), and bdist_wheel's fixed 664 for the RECORD it writes itself.
    assert {(i.external_attr >> 16) & 0o777 for i in infos} <= {0o644, 0o664, 0o755}


def test_the_rewritten_sdist_unpacks_to_the_tracked_files(
    builds: list[Path], tmp_path: Path
) -> None:
    with tarfile.open(builds[0] / f"sslops-{VERSION}.tar.gz") as sdist:
        sdist.extractall(tmp_path, filter="data")
    tree = tmp_path / f"sslops-{VERSION}"
    clone = builds[0].parent
    for name in ("pyproject.toml", "src/sslops/datasets/adult/train.csv.gz", "image.lock"):
        assert (tree / name).read_bytes() == (clone / name).read_bytes(), name
    # setuptools stores configs/'s links as the files they point to.
    shipped = (clone / "src/sslops/datasets/adult.yaml").read_bytes()
    assert (tree / "configs" / "adult.yaml").read_bytes() == shipped


DATASETS = ROOT / "src" / "sslops" / "datasets"


def _sums(text: str) -> dict[str, str]:
    return {name: digest for digest, name in (line.split(None, 1) for line in text.splitlines())}


def test_every_shipped_data_file_has_its_sha256_listed() -> None:
    """datasets/SHA256SUMS (``sha256sum -c`` format): a data file changed, added or removed
    without the list changing with it fails here, so the change shows in review."""
    listed = _sums((DATASETS / "SHA256SUMS").read_text(encoding="utf-8"))
    shipped = sorted(
        p.relative_to(DATASETS).as_posix()
        for p in DATASETS.rglob("*")
        if p.is_file() and p.suffix not in {".md", ".yaml"} and p.name != "SHA256SUMS"
        and "__pycache__" not in p.parts
    )  # fmt: skip
    assert sorted(listed) == shipped
    for name, digest in listed.items():
        assert hashlib.sha256((DATASETS / name).read_bytes()).hexdigest() == digest, name


def test_the_wheel_ships_the_data_licences_and_digests(builds: list[Path]) -> None:
    """The demo data is CC BY 4.0 (Adult) and CC BY-SA 3.0 (MNIST), not Apache-2.0: the
    wheel (and so the image's venv) carries NOTICE beside LICENSE, naming each data file
    with its source and licence, and the data files match SHA256SUMS."""
    with zipfile.ZipFile(builds[0] / f"sslops-{VERSION}-py3-none-any.whl") as wheel:
        info = f"sslops-{VERSION}.dist-info"
        notice = wheel.read(f"{info}/licenses/NOTICE").decode()
        metadata = wheel.read(f"{info}/METADATA").decode()
        sums = _sums(wheel.read("sslops/datasets/SHA256SUMS").decode())
        shipped = {
            name: hashlib.sha256(wheel.read(f"sslops/datasets/{name}")).hexdigest() for name in sums
        }
    assert shipped == sums
    assert "License-File: NOTICE" in metadata.splitlines()
    for name in sums:
        assert name in notice, f"NOTICE does not name {name}"
    for licence in ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/",
                    "CC BY-SA 3.0", "https://creativecommons.org/licenses/by-sa/3.0/",
                    "https://doi.org/10.24432/C5XW20"):  # fmt: skip
        assert licence in notice, licence
