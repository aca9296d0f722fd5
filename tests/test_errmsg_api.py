"""sslops.read_metrics on a damaged metrics.json (the errmsg review): json's own
JSONDecodeError escaped, naming no file, where the API promises an SslopsError."""

from __future__ import annotations

from pathlib import Path

import pytest

import sslops
from sslops.errors import ArtifactError


@pytest.mark.parametrize(
    ("written", "why"),
    [
        (b'{"models": ', "(Expecting value: line 1 column 12 (char 11))"),
        (b"[0.8]", "(a JSON list, not an object)"),
        (b"\xff", "('utf-8' codec can't decode"),
    ],
)
def test_a_damaged_metrics_file_is_an_artifact_error_naming_it(
    tmp_path: Path, written: bytes, why: str
) -> None:
    (tmp_path / "metrics.json").write_bytes(written)
    with pytest.raises(ArtifactError) as refused:
        sslops.read_metrics(tmp_path)
    said = str(refused.value)
    assert said.startswith(f"{tmp_path / 'metrics.json'} is not readable metrics {why}")
    assert said.endswith("expected the metrics.json sslops evaluate writes: re-run evaluate")
