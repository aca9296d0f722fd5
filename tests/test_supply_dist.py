"""The release files: two builds of one commit are the same bytes (``make dist``,
scripts/build_dist.py), whatever the files' times in the checkout and the builder's umask,
and the rewritten sdist still unpacks to the tracked files."""

from __future__ import annotations

import hashlib
import json
import os
import re
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


def _installation(site: Path, env: dict[str, str]) -> dict:
    code = (
        "import json; from sslops.audit.environment import environment_record; "
        "print(json.dumps(environment_record({})['sslops']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env={**env, "PYTHONPATH": str(site)},
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_an_installed_wheel_records_which_code_ran(
    builds: list[Path], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """environment.json names the code, not only its version: the digest of the package's
    files equals the one recomputed from the release wheel, and a file changed after
    installation shows against the wheel's RECORD (and changes the digest)."""
    wheel_path = builds[0] / f"sslops-{VERSION}-py3-none-any.whl"
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel_path) as wheel:
        wheel.extractall(site)  # what an installer writes, RECORD included
        entries = {n: wheel.read(n) for n in wheel.namelist() if n.startswith("sslops/")}
    lines = "".join(f"{n} {hashlib.sha256(entries[n]).hexdigest()}\n" for n in sorted(entries))
    from_wheel = hashlib.sha256(lines.encode()).hexdigest()
    env = {**cli_env, "PYTHONDONTWRITEBYTECODE": "1"}

    record = _installation(site, env)
    assert record["version"] == VERSION
    assert record["files_sha256"] == from_wheel
    release = json.loads((builds[0] / "release.json").read_text())
    assert release["package_files_sha256"] == from_wheel  # what `make dist` publishes
    assert release["files"][wheel_path.name] == hashlib.sha256(wheel_path.read_bytes()).hexdigest()
    assert record["record"]["files_checked"] == len(entries)
    assert record["record"]["files_differ"] == []
    assert record["image_build"] is None and record["image_lock_sha256"] is None

    with (site / "sslops" / "datasets" / "adult.yaml").open("a", encoding="utf-8") as config:
        config.write("# changed after installation\n")
    changed = _installation(site, env)
    assert changed["record"]["files_differ"] == ["sslops/datasets/adult.yaml"]
    assert changed["files_sha256"] != from_wheel


def test_the_images_build_record_reaches_environment_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Containerfile's own command writes build.json (run here with the image's
    path swapped for a temporary one); environment.json copies it, with the lock's sha256."""
    from sslops.audit import environment

    text = " ".join(re.sub(r"\\\n", " ", (ROOT / "Containerfile").read_text()).split())
    match = re.search(r"python -c '([^']*build\.json[^']*)' \"\$\{VARIANT\}\" "
                      r"\"\$\{VERSION\}\" \"\$\{REVISION\}\"", text)  # fmt: skip
    assert match, "the build stage no longer writes the build record"
    image_path = "/opt/sslops/share/sslops/build.json"
    assert environment.IMAGE_BUILD.relative_to(sys.prefix).as_posix() == "share/sslops/build.json"
    assert image_path in match[1]
    build = tmp_path / "share" / "sslops" / "build.json"
    build.parent.mkdir(parents=True)
    code = match[1].replace(image_path, str(build))
    for revision, expected in (("0123abc", "0123abc"), ("", None)):
        subprocess.run([sys.executable, "-c", code, "cuda", VERSION, revision], check=True)
        monkeypatch.setattr(environment, "IMAGE_BUILD", build)
        monkeypatch.setattr(environment, "IMAGE_LOCK", ROOT / "image.lock")
        record = environment.environment_record({})["sslops"]
        assert record["image_build"] == {
            "variant": "cuda",
            "version": VERSION,
            "revision": expected,
        }
        lock = hashlib.sha256((ROOT / "image.lock").read_bytes()).hexdigest()
        assert record["image_lock_sha256"] == lock
    assert 'org.opencontainers.image.revision="${REVISION}"' in text
