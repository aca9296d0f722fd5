"""Signing windows and the clock (found by the clock review): what a signing date is."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_trusted_keys_window import _trusted


@pytest.mark.parametrize("signed_at", [20250601, 2025.5, ["2025-06-01"]])
def test_a_signing_date_that_is_not_text_is_not_a_date(tmp_path: Path, signed_at: object) -> None:
    """sslops writes ``created`` as ISO 8601 text; the number 20250601 was read as
    ``str(20250601)``, which Python parses as the basic-format date 2025-06-01, so a
    manifest holding a number was judged inside the window."""
    keys, fp = _trusted(tmp_path, valid_from="2025-01-01", valid_until="2026-01-01")
    problem, info = keys.judge(fp, signed_at)
    assert problem == (
        f"signed with key issuer, but the date it covers ({signed_at!r}) is not a date, so its "
        "validity cannot be judged"
    )
    assert info["trusted"] is True
