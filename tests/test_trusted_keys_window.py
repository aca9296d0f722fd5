"""A trusted key's signing window at its edges (``TrustedKeys.judge``, ``TrustedKeys.load``).

tests/test_signing.py judges dates a month or more from an edge; these judge the edges
themselves, which a changed comparison (``<`` for ``<=``) moves without any of those noticing:
the window is ``[valid_from, valid_until)``, dates without a zone are UTC, and a window must
hold a moment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sslops.audit.bundle import generate_keypair
from sslops.audit.keys import TrustedKeys
from sslops.errors import ConfigError


def _trusted(folder: Path, **window: str) -> tuple[TrustedKeys, str]:
    fp = generate_keypair(folder / "issuer.pem", folder / "issuer.pub.pem")
    entry = {"name": "issuer", "public_key_file": "issuer.pub.pem", **window}
    path = folder / "trusted.json"
    path.write_text(json.dumps({"trusted_keys": 1, "keys": [entry]}), encoding="utf-8")
    return TrustedKeys.load(path), fp


@pytest.mark.parametrize(
    ("signed_at", "trusted"),
    [
        ("2024-12-31T23:59:59+00:00", False),
        ("2025-01-01T00:00:00+00:00", True),  # the first moment of the window
        ("2025-12-31T23:59:59+00:00", True),
        ("2026-01-01T00:00:00+00:00", False),  # valid_until is the first moment outside
        ("2025-06-01T00:00:00", True),  # no zone: UTC
        ("2026-01-01T00:30:00+01:00", True),  # 2025-12-31T23:30 UTC
    ],
)
def test_the_window_holds_valid_from_and_not_valid_until(
    tmp_path: Path, signed_at: str, trusted: bool
) -> None:
    keys, fp = _trusted(tmp_path, valid_from="2025-01-01", valid_until="2026-01-01")
    problem, info = keys.judge(fp, signed_at)
    assert (problem is None) is trusted, problem
    assert info["key_name"] == "issuer" and info["signed_at"] == signed_at
    if not trusted:
        assert "outside the window it may sign in (2025-01-01T00:00:00+00:00 to " in problem


def test_a_window_of_no_length_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid_until is not after valid_from"):
        _trusted(tmp_path, valid_from="2025-01-01", valid_until="2025-01-01T00:00:00+00:00")


def test_a_trusted_keys_file_with_no_keys_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trusted.json"
    path.write_text(json.dumps({"trusted_keys": 1, "keys": []}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"trusted keys .*: expected \{\"trusted_keys\": 1"):
        TrustedKeys.load(path)


@pytest.mark.parametrize("signed_at", ["yesterday", None, ""])
def test_a_signature_whose_date_is_no_date_is_not_trusted(
    tmp_path: Path, signed_at: object
) -> None:
    """The window cannot be judged without a date: a trusted key's signature over a manifest
    whose ``created`` is not one is refused, not taken as inside the window."""
    keys, fp = _trusted(tmp_path, valid_from="2025-01-01")
    problem, info = keys.judge(fp, signed_at)
    assert problem == (
        f"signed with key issuer, but the date it covers ({signed_at!r}) is not a date, so its "
        "validity cannot be judged"
    )
    assert info["trusted"] is True


def test_two_keys_under_one_name_are_refused(tmp_path: Path) -> None:
    """A verifier reports the key's name: two keys under one name would make 'signed with
    issuer' say nothing about which key."""
    generate_keypair(tmp_path / "a.pem", tmp_path / "a.pub.pem")
    generate_keypair(tmp_path / "b.pem", tmp_path / "b.pub.pem")
    keys = [{"name": "issuer", "public_key_file": f"{k}.pub.pem", "valid_from": "2025-01-01"}
            for k in ("a", "b")]  # fmt: skip
    path = tmp_path / "trusted.json"
    path.write_text(json.dumps({"trusted_keys": 1, "keys": keys}), encoding="utf-8")
    with pytest.raises(ConfigError, match="the name 'issuer' occurs twice"):
        TrustedKeys.load(path)
