"""A public key that cannot be used is refused naming the flag or setting it came from
(left by the errmsg review: "public key file not found: PATH" named no flag, and a folder
given as the key read as a missing file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslops.cli import main

EXPECTED = "expected an Ed25519 public key in PEM (sslops audit keygen writes one)"


def _error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_audit_verify_names_public_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bundle").mkdir()
    gone = tmp_path / "gone.pem"
    said = _error(capsys, "audit", "verify", str(tmp_path / "bundle"), "--public-key", str(gone))
    assert said == f"error: --public-key {gone}: file not found; {EXPECTED}"


def test_a_folder_given_as_the_key_is_called_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    said = _error(capsys, "audit", "verify-attestation", str(tmp_path), "--public-key",
                  str(tmp_path))  # fmt: skip
    assert said == f"error: --public-key {tmp_path}: is a folder; {EXPECTED}"


def test_a_text_file_given_as_the_key_says_what_was_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bundle").mkdir()
    notes = tmp_path / "notes.txt"
    notes.write_text("not a key\n")
    said = _error(capsys, "audit", "verify", str(tmp_path / "bundle"), "--public-key", str(notes))
    assert said == f"error: --public-key {notes} is not a PEM public key; {EXPECTED}"


def test_predict_names_approver_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data, registry = tmp_path / "model.onnx", tmp_path / "rows.csv", tmp_path / "reg"
    model.write_bytes(b"")
    data.write_text("a\n1\n")
    registry.mkdir()
    gone = tmp_path / "approver.pub.pem"
    said = _error(capsys, "predict", "--model", str(model), "--data", str(data), "--out",
                  str(tmp_path / "out.csv"), "--registry", str(registry), "--approver-key",
                  str(gone))  # fmt: skip
    assert said == f"error: --approver-key {gone}: file not found; {EXPECTED}"
    assert not (tmp_path / "out.csv").exists()
