"""A bundle .zip is closed when sslops is done with it, also when it is refused: an open
file keeps a removed or replaced bundle's disk space (and, on Windows, its name) taken, and
a long-lived process (a notebook, a registry service) gathers open files."""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import pytest

from sslops.audit.bundle import MANIFEST, BundleFiles, DamagedFile, read_bundle_json

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files in /proc"),
]


def _open(path: Path) -> list[str]:
    """This process's file descriptors open on ``path``."""
    fds = Path("/proc/self/fd")
    return [fd.name for fd in fds.iterdir()
            if os.path.realpath(fd) == str(path.resolve())]  # fmt: skip


def _zip(path: Path, *names: str) -> Path:
    with warnings.catch_warnings():  # a name twice: zipfile warns "Duplicate name"
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(path, "w") as archive:
            for name in names:
                archive.writestr(name, '{"files": {}}')
    return path


def test_a_refused_zip_is_closed_before_the_error_is_raised(tmp_path: Path) -> None:
    """A member twice (an extractor may take either copy): refused, and its file is closed
    at once, not when the garbage collector frees the error's traceback."""
    twice = _zip(tmp_path / "twice.zip", MANIFEST, MANIFEST)
    with pytest.raises(DamagedFile, match="occurs 2 times") as refused:
        BundleFiles(twice)
    assert refused.value is not None  # the error (and its traceback) still held here
    assert _open(twice) == []


def test_a_zip_read_in_a_block_is_closed_when_the_block_ends(tmp_path: Path) -> None:
    bundle = _zip(tmp_path / "bundle.zip", MANIFEST)
    with BundleFiles(bundle) as files:
        assert files.read(MANIFEST) == b'{"files": {}}' and _open(bundle)
    assert _open(bundle) == []  # `files` still refers to it
    with pytest.raises(Exception, match=r"has no lineage\.json"):
        read_bundle_json(bundle, "lineage.json")
    assert _open(bundle) == []
