"""Build the sdist and the wheel so that two builds of one commit are the same bytes.

setuptools alone is not reproducible: the wheel's entries take the files' modification
times unless ``SOURCE_DATE_EPOCH`` is set, and their modes from the builder's umask; the
sdist's tar entries take the files' times, owner and modes, and its gzip header the time
of the build, whatever ``SOURCE_DATE_EPOCH`` says. So this builds from a copy of the files
git tracks, each file's mode git's (644 or 755), under umask 022, with
``SOURCE_DATE_EPOCH`` = the commit's time, then writes the sdist again with every entry at that time, owned by root, in name
order, and the gzip header at that time too (same names, same bytes; checked). The digests
go to ``SHA256SUMS`` beside them, for the release notes and a rebuild to compare with, and
to ``release.json`` with the commit and the digest of the package's files, which every
audit bundle's ``environment.json`` records for the code that ran (``sslops.files_sha256``).

    python scripts/build_dist.py --out dist      # `make dist`
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's sslops, installed or not

from sslops.audit.environment import wheel_package_digest  # noqa: E402


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def tracked_files() -> list[tuple[str, str]]:
    """(path, git mode) of each tracked file that is there."""
    if not (ROOT / ".git").exists() or not shutil.which("git"):
        sys.exit("build_dist: not a git checkout; build the release from one")
    files = []
    for entry in _git("ls-files", "-s", "-z").split("\0"):
        if entry:
            meta, path = entry.split("\t", 1)
            if os.path.lexists(ROOT / path):
                files.append((path, meta.split()[0]))
    return sorted(files)


def copy_tree(tree: Path) -> None:
    for path, mode in tracked_files():
        target = tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, target, follow_symlinks=False)
        if mode != "120000":
            target.chmod(0o755 if mode == "100755" else 0o644)


def _normal(member: tarfile.TarInfo, epoch: int) -> tarfile.TarInfo:
    member.mtime = epoch
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    if member.isdir() or member.mode & 0o111:
        member.mode = 0o755
    elif not member.issym():
        member.mode = 0o644
    member.pax_headers = {}
    return member


def _contents(tar: tarfile.TarFile) -> dict[str, bytes]:
    files = {}
    for member in tar.getmembers():
        handle = tar.extractfile(member) if member.isfile() else None
        if handle is not None:
            files[member.name] = handle.read()
    return files


def normalise_sdist(path: Path, epoch: int) -> None:
    """Write the sdist again: same names and bytes, no time or owner of this build."""
    with tarfile.open(path) as source:
        members = sorted(source.getmembers(), key=lambda m: m.name)
        data = _contents(source)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            content = data.get(member.name)
            tar.addfile(
                _normal(member, epoch), io.BytesIO(content) if content is not None else None
            )
    with (
        open(path, "wb") as out,
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=epoch, compresslevel=9) as gz,
    ):
        gz.write(buffer.getvalue())
    with tarfile.open(path) as check:
        again = _contents(check)
    if again != data:
        sys.exit(f"build_dist: rewriting {path.name} changed its files")


def build(out: Path, epoch: int) -> dict[str, str]:
    """The sdist and the wheel into ``out``; {file name: sha256}."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sslops-dist-") as tmp:
        tree = Path(tmp) / "sslops"
        copy_tree(tree)
        code = (
            "from setuptools import build_meta as b; b.build_sdist('dist'); b.build_wheel('dist')"
        )
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PYTHONDONTWRITEBYTECODE": "1"}
        umask = os.umask(0o022)  # setuptools copies into build/ with the umask's modes
        try:
            result = subprocess.run(
                [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True
            )
        finally:
            os.umask(umask)
        if result.returncode != 0:
            sys.exit(f"build_dist: setuptools failed:\n{result.stderr[-3000:]}")
        built = sorted((tree / "dist").iterdir())
        for path in built:
            if path.name.endswith(".tar.gz"):
                normalise_sdist(path, epoch)
            shutil.copy2(path, out / path.name)
    sums = {p.name: hashlib.sha256((out / p.name).read_bytes()).hexdigest() for p in built}
    (out / "SHA256SUMS").write_text(
        "".join(f"{digest}  {name}\n" for name, digest in sums.items()), encoding="utf-8"
    )
    (wheel,) = (out / p.name for p in built if p.name.endswith(".whl"))
    release = {
        "commit": _git("rev-parse", "HEAD").strip(),
        # Tracked files changed since that commit: the files are not the commit's.
        "changed_since_commit": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "source_date_epoch": epoch,
        "files": sums,
        "package_files_sha256": wheel_package_digest(wheel),
    }
    (out / "release.json").write_text(json.dumps(release, indent=2) + "\n", encoding="utf-8")
    return sums


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument(
        "--epoch", type=int,
        help="the time stamped on every file (default: SOURCE_DATE_EPOCH, else HEAD's commit time)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    epoch = args.epoch
    if epoch is None:
        epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or _git("log", "-1", "--format=%ct"))
    for name, digest in build(args.out, epoch).items():
        print(f"{digest}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
