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
SCRIPT = ROOT / "scripts" / "build_dist.py"


def _clone_and_build(where: Path, umask: int) -> Path:
    """A fresh clone (its files' times are now, not the checkout's) with this checkout's
    build script, built under ``umask``; returns the output folder."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(where)], check=True)
    shutil.copy2(SCRIPT, where / "scripts" / "build_dist.py")
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
