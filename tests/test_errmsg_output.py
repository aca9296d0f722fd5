"""An output path in a folder that takes no new files (found by the notebook review:
``prepare(cfg, "/proc/nope")`` said another sslops command was writing it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sslops.artifacts import output_lock
from sslops.errors import SslopsError


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self").is_dir(),
    reason="needs Linux's /proc, a folder that exists and refuses new files even to root",
)
def test_a_folder_that_takes_no_files_is_not_called_busy() -> None:
    with pytest.raises(SslopsError) as refused, output_lock(Path("/proc/sslops-nope"), "prepare"):
        pass
    assert str(refused.value) == (
        "cannot create the lock file /proc/.sslops-nope.lock for /proc/sslops-nope: /proc takes "
        "no new files; expected an output path in a folder sslops can write"
    )
    assert not Path("/proc/sslops-nope").exists()
