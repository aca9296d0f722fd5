"""Packaging: the sdist and the wheel a release engineer builds, installed outside the checkout.

The wheel holds every file sslops reads at run time (the demo data and the demo configs),
the sdist everything that rebuilds the wheel and runs these tests, and an installed sslops
runs from any folder without writing into the folder it is installed in. The builds run
setuptools' backend in a copy of the tracked files (a few seconds, no index needed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PROJECT["project"]["version"]


def _tracked() -> list[str]:
    """The files git tracks in the checkout (that are there: a deleted one is not released)."""
    if not (ROOT / ".git").exists() or not shutil.which("git"):
        pytest.skip("not a git checkout: which files the release holds is git's list")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return sorted(p for p in out.stdout.split("\0") if p and os.path.lexists(ROOT / p))


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel, built from a copy of the tracked files (links kept as links)."""
    pytest.importorskip("setuptools", minversion="77")  # pyproject's build-system floor
    tree = tmp_path_factory.mktemp("release") / "sslops"
    for name in _tracked():
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target, follow_symlinks=False)
    build = "from setuptools import build_meta as b; b.build_sdist('dist'); b.build_wheel('dist')"
    result = subprocess.run(
        [sys.executable, "-c", build], cwd=tree, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {
        "sdist": tree / "dist" / f"sslops-{VERSION}.tar.gz",
        "wheel": tree / "dist" / f"sslops-{VERSION}-py3-none-any.whl",
    }


def test_the_sdist_holds_every_tracked_file(dist: dict[str, Path]) -> None:
    """Tests, configs, pipelines, chart, manifests, Containerfile: the sdist rebuilds and tests."""
    with tarfile.open(dist["sdist"]) as sdist:
        names = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    missing = [name for name in _tracked() if name not in names]
    assert not missing, f"MANIFEST.in leaves tracked files out of the sdist: {missing}"
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
