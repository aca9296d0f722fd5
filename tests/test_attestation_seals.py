"""``verify_attestation`` on a hand-built attestation folder: what its signature must cover.

Each test kills a mutant of ``sslops.audit.attestation`` that the tests through ``sslops audit
reproduce`` (tests/test_audit_reproduce.py) and the fuzzers left alive. The folder is the
three files ``write_attestation`` writes, signed the same way, so the tests need no bundle.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sslops.audit.attestation import (
    ATTESTATION,
    ATTESTATION_SIGNATURE,
    SUMMARY,
    verify_attestation,
)
from sslops.audit.bundle import canonical_json, signature_record

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"sslops attestation seals").digest())


def _attestation(folder: Path, covered: tuple[str, ...] = (ATTESTATION, SUMMARY)) -> Path:
    folder.mkdir()
    (folder / ATTESTATION).write_bytes(canonical_json({"result": "pass", "verifier": {}}))
    (folder / SUMMARY).write_text("# Attestation: PASS\n", encoding="utf-8")
    files = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in covered}
    record = signature_record(KEY, {"signed_files": files})
    (folder / ATTESTATION_SIGNATURE).write_bytes(canonical_json(record))
    return folder


def test_an_intact_attestation_verifies(tmp_path: Path) -> None:
    result = verify_attestation(_attestation(tmp_path / "att"), KEY.public_key())
    assert result["problems"] == [] and result["result"] == "pass"


@pytest.mark.parametrize("covered", [(ATTESTATION,), (SUMMARY,), ()])
def test_a_signature_that_covers_fewer_files_fails(
    tmp_path: Path, covered: tuple[str, ...]
) -> None:
    """Signed by the trusted key, but over one file (or none): the other could be anything."""
    folder = _attestation(tmp_path / "att", covered)
    assert verify_attestation(folder, KEY.public_key())["problems"] == [
        f"{ATTESTATION_SIGNATURE} does not cover {ATTESTATION} and {SUMMARY}"
    ]


@pytest.mark.parametrize("name", [ATTESTATION, SUMMARY])
def test_a_signed_file_removed_is_named(tmp_path: Path, name: str) -> None:
    folder = _attestation(tmp_path / "att")
    (folder / name).unlink()
    assert verify_attestation(folder, KEY.public_key())["problems"] == [f"{name} is missing"]


def test_a_removed_signature_is_named(tmp_path: Path) -> None:
    folder = _attestation(tmp_path / "att")
    (folder / ATTESTATION_SIGNATURE).unlink()
    assert verify_attestation(folder, KEY.public_key())["problems"] == [
        f"{ATTESTATION_SIGNATURE} is missing"
    ]
