"""The audit registry and the clock (found by the clock review): the order of filings is
the index's, which a node with a wrong clock cannot change; filing times only interleave
models."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslops.audit import registry as reg
from sslops.audit.bundle import write_manifest


def _bundle(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "evidence.txt").write_text(name)
    write_manifest(folder)
    return folder


def _file_at(monkeypatch: pytest.MonkeyPatch, root: Path, name: str, model: str, now: str) -> str:
    """File a small bundle as a node whose clock reads ``now``; its manifest sha256."""
    monkeypatch.setattr(reg, "_now", lambda: now)
    return str(reg.file_bundle(_bundle(root, name), root / "reg", model=model)["manifest_sha256"])


def test_a_fast_clock_does_not_reorder_one_models_filings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node A, its clock two hours fast, files first; node B files an hour later. Sorting
    on the stamped times listed B's bundle first, while ``registry:latest`` (the index's
    last entry) is B's: the list's last row was not the latest filing."""
    first = _file_at(monkeypatch, tmp_path, "first", "m", "2026-03-01T12:00:00+00:00")
    second = _file_at(monkeypatch, tmp_path, "second", "m", "2026-03-01T11:00:00+00:00")
    registry = tmp_path / "reg"
    rows = reg.list_registry(registry, "m")
    assert [r["manifest_sha256"] for r in rows] == [first, second]
    latest = reg.latest_bundle(registry, "m")
    assert latest is not None and latest.name == f"{second}.zip"
    assert reg.list_registry(registry) == rows  # all models: the same order
    assert reg.check_registry(registry) == []


def test_models_are_interleaved_by_filing_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a1 = _file_at(monkeypatch, tmp_path, "a1", "a", "2026-03-01T09:00:00+00:00")
    b1 = _file_at(monkeypatch, tmp_path, "b1", "b", "2026-03-01T08:00:00+00:00")
    a2 = _file_at(monkeypatch, tmp_path, "a2", "a", "2026-03-01T10:00:00+00:00")
    b2 = _file_at(monkeypatch, tmp_path, "b2", "b", "2026-03-01T10:00:00+00:00")
    rows = reg.list_registry(tmp_path / "reg")
    # equal times: models by name
    assert [(r["model"], r["manifest_sha256"]) for r in rows] == [
        ("b", b1), ("a", a1), ("a", a2), ("b", b2),
    ]  # fmt: skip
