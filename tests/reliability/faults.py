"""Faults for tests: damaged files, a folder nobody may write, a file system that is full."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def flip_bit(path: Path) -> None:
    """One bit of the middle byte flipped: the size stays, the sha256 changes."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    """The second half cut off, as a write interrupted by a crash leaves a file."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _mount_tmpfs(path: Path, options: str) -> bool:
    """Mount a tmpfs (root in a container that allows it); False when not possible."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True, check=False,
    )  # fmt: skip
    return done.returncode == 0


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """An empty folder that cannot be written: mode 0555, or (root ignores modes) a
    read-only tmpfs mounted on it."""
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    if not _mount_tmpfs(path, "ro,size=1m"):
        pytest.skip("running as root without permission to mount a read-only tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real full disk: a tmpfs of ``size`` (root only)."""
    path.mkdir(parents=True)
    if not _mount_tmpfs(path, f"size={size}"):
        pytest.skip("a tmpfs needs root with permission to mount")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def file_size_limit(limit: int) -> Callable[[], None]:
    """``preexec_fn`` for a child whose writes fail past ``limit`` bytes per file (EFBIG),
    the way a full disk fails them; SIGXFSZ is ignored so the write returns the error."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply
