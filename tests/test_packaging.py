"""Packaging: the sdist and the wheel a release engineer builds, installed outside the checkout.

The wheel holds every file sslops reads at run time (the demo data and the demo configs),
the sdist everything that rebuilds the wheel and runs these tests, and an installed sslops
runs from any folder without writing into the folder it is installed in. The builds run
setuptools' backend in a copy of the tracked files (a few seconds, no index needed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from sslops.config import load_config
from sslops.errors import ConfigError
from tests.conftest import FAST_OVERRIDES, ROOT

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


def test_the_unpacked_sdist_runs_its_tests_without_git(
    dist: dict[str, Path], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """An sdist has no .git: its tests of the DVC wiring run there too (those that list
    git's files skip, naming why)."""
    with tarfile.open(dist["sdist"]) as sdist:
        sdist.extractall(tmp_path, filter="data")
    tree = tmp_path / f"sslops-{VERSION}"
    assert not (tree / ".git").exists()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         "tests/test_dvc.py", "tests/test_packaging.py",
         "-k", "dvcignore or sdist_holds"],
        cwd=tree, env={**cli_env, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed, 1 skipped" in result.stdout, result.stdout[-3000:]
    assert "not a git checkout: which files the release holds is git's list" in result.stdout


def test_the_wheel_holds_every_data_file_sslops_reads(dist: dict[str, Path]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
    data = [
        name.removeprefix("src/")
        for name in _tracked()
        if name.startswith("src/sslops/") and not name.endswith(".py")
    ]
    assert "sslops/datasets/adult/train.csv.gz" in data
    missing = [name for name in data if name not in names]
    assert not missing, f"package-data leaves files out of the wheel: {missing}"
    # The demo configs the docs run are package data, not files of the checkout only:
    # configs/ links to them.
    for config in (ROOT / "configs").iterdir():
        shipped = (ROOT / "src" / "sslops" / "datasets" / config.name).resolve()
        assert config.resolve() == shipped, f"{config} is not the shipped {shipped}"
        assert f"sslops/datasets/{config.name}" in names


def test_the_wheel_metadata(dist: dict[str, Path]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        info = f"sslops-{VERSION}.dist-info"
        metadata = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
        license_text = wheel.read(f"{info}/licenses/LICENSE").decode()
    assert metadata["Version"] == VERSION
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "Programming Language :: Python :: 3.11" in metadata.get_all("Classifier", [])
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    assert urls.get("Source") == "https://github.com/sslops/sslops"
    assert "sslops = sslops.cli:main" in entry_points


def test_the_build_backend_floor_reads_the_metadata() -> None:
    """``license = "Apache-2.0"`` (PEP 639) needs setuptools 77; an older one on a mirror
    fails the build with "project.license must be valid exactly by one definition"."""
    from packaging.requirements import Requirement

    assert isinstance(PROJECT["project"]["license"], str)
    requires = {Requirement(r).name: Requirement(r) for r in PROJECT["build-system"]["requires"]}
    assert not requires["setuptools"].specifier.contains("76.1.0"), requires["setuptools"]
    assert requires["setuptools"].specifier.contains("77.0.3")


@pytest.fixture(scope="session")
def installed(dist: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed by pip in a folder of a deployment repository (not the checkout)."""
    deploy = tmp_path_factory.mktemp("deploy")
    git = ["git", "-c", "user.name=release", "-c", "user.email=release@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=deploy, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "deploy"], cwd=deploy, check=True)
    site = deploy / "site-packages"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(site), str(dist["wheel"])],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return site


def _run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def test_an_installed_sslops_runs_a_shipped_config_from_any_folder(
    installed: Path, tmp_path: Path
) -> None:
    """From a folder without configs/: the shipped config and data, meta.json without the
    deployment repository's commit (not sslops's source), nothing written where it is installed."""
    before = _snapshot(installed)
    where = _run_installed(installed, tmp_path, "-c", "import sslops; print(sslops.__file__)")
    assert where.stdout.strip() == str(installed / "sslops" / "__init__.py"), where.stderr
    version = _run_installed(installed, tmp_path, "-m", "sslops", "--version")
    assert version.stdout.strip() == f"sslops {VERSION}", version.stderr
    prepared = _run_installed(
        installed, tmp_path, "-m", "sslops", "prepare",
        "--config", "package:gunpoint.yaml", "--out", "prepared",
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    meta = json.loads((tmp_path / "prepared" / "meta.json").read_text(encoding="utf-8"))
    assert meta["git_commit"] is None
    assert _snapshot(installed) == before


def test_git_commit_is_the_checkouts_own_when_sslops_runs_from_it() -> None:
    from sslops import artifacts

    if Path(artifacts.__file__).resolve() != ROOT / "src" / "sslops" / "artifacts.py":
        pytest.skip("sslops is not imported from this checkout's src/")
    if not (ROOT / ".git").exists() or not shutil.which("git"):
        pytest.skip("not a git checkout")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert artifacts.git_commit() == head.stdout.strip()


def test_a_shipped_config_loads_by_name_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config("package:adult.yaml") == load_config(ROOT / "configs" / "adult.yaml")
    # The command the docs show, outside a checkout: the error names the shipped config.
    with pytest.raises(ConfigError) as error:
        load_config("configs/adult.yaml")
    assert str(error.value) == (
        "config file not found: configs/adult.yaml (the demo configs ship inside sslops: "
        "--config package:adult.yaml; all of them: package:adult.yaml, package:gunpoint.yaml, "
        "package:mnist.yaml)"
    )
    with pytest.raises(ConfigError, match=r"^config file not found: package:adults\.yaml; the "
                       r"configs shipped with sslops are package:adult\.yaml, "):  # fmt: skip
        load_config("package:adults.yaml")
    with pytest.raises(ConfigError, match=r"^config file not found: mine\.yaml$"):
        load_config("mine.yaml")


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_pipeline(installed: Path, tmp_path: Path) -> None:
    """``sslops run`` on the shipped demo config (small settings) from outside the checkout."""
    before = _snapshot(installed)
    sets = [arg for override in FAST_OVERRIDES for arg in ("--set", override)]
    result = _run_installed(
        installed, tmp_path, "-m", "sslops", "run", "--config", "package:adult.yaml", *sets
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "adult" / "summary.json").read_text())
    assert Path(summary["onnx"]["path"]).is_file()
    assert _snapshot(installed) == before


def _telemetry_files_written(home: Path, caller: str | None) -> list[str]:
    """Import sslops and onnxruntime in a fresh interpreter with `home` as $HOME (and no
    XDG_CACHE_HOME, so the cache lands under it); the files that appeared under `home`."""
    home.mkdir()
    drop = {"ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["HOME"] = str(home)
    if caller is not None:
        env["ORT_DISABLE_TELEMETRY"] = caller
    code = "import sslops, onnxruntime; onnxruntime.InferenceSession"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    return sorted(p.name for p in home.rglob("*") if p.is_file())


def test_importing_sslops_turns_onnxruntime_telemetry_off_unless_the_caller_chose() -> None:
    """The switch itself: set to "1" when the caller left it unset, kept when they chose."""
    code = "import os, sslops; print(os.environ['ORT_DISABLE_TELEMETRY'])"
    for caller, expected in ((None, "1"), ("0", "0"), ("1", "1")):
        env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
        if caller is not None:
            env["ORT_DISABLE_TELEMETRY"] = caller
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            check=True,
            timeout=120,
            capture_output=True,
            text=True,
        )
        assert out.stdout.strip() == expected, (caller, out.stdout)


def test_importing_sslops_keeps_onnxruntime_from_writing_telemetry_files(
    tmp_path: Path,
) -> None:
    """onnxruntime writes a device id and an event database into $HOME on import; sslops
    turns that off. The control (the caller allows telemetry) shows the probe can see the
    files; where this onnxruntime build writes none even then (a build or a machine without
    the telemetry store; CI has been one), the default cannot be told apart and the test
    says so rather than passing."""
    allowed = _telemetry_files_written(tmp_path / "allowed", "0")
    if not allowed:
        pytest.skip("onnxruntime wrote no telemetry files here even with telemetry allowed")
    assert _telemetry_files_written(tmp_path / "default", None) == []
