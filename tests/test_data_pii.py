"""PII detection and redaction, keyed hashes and where the key may come from."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from sslops.data.pii import (
    PLACEHOLDER,
    iban_valid,
    keyed_hash,
    load_key,
    luhn_valid,
    redact_column,
    redact_text,
)
from sslops.errors import ConfigError

FOUND = [
    ("email", "write to jane.doe+x@mail.example.co.uk today"),
    ("phone", "call (555) 123-4567 after six"),
    ("phone", "office +44 20 7946 0958"),
    ("phone", "mobile 555.867.5309"),
    ("ssn", "ssn 123-45-6789 on file"),
    ("payment_card", "paid with 4111 1111 1111 1111"),
    ("payment_card", "card 5500-0000-0000-0004 declined"),
    ("iban", "iban GB82 WEST 1234 5698 7654 32"),
    ("iban", "DE89370400440532013000"),
    ("iban", "account NO93 8601 1117 947 ok"),  # Norway: the shortest IBAN (15)
    ("ip_address", "login from 192.168.10.254"),
    ("ip_address", "v6 2001:db8:85a3::8a2e:370:7334 seen"),
    ("date_of_birth", "born 1985-03-12"),
    ("date_of_birth", "dob 12/03/1985"),
    ("date_of_birth", "born 3 March 1985 in Leeds"),
    ("date_of_birth", "born March 3, 1985"),
]


@pytest.mark.parametrize(("kind", "text"), FOUND)
def test_each_kind_is_found_and_redacted(kind: str, text: str) -> None:
    found: Counter[str] = Counter()
    out = redact_text(text, found)
    assert found == Counter({kind: 1})
    assert PLACEHOLDER[kind] in out


@pytest.mark.parametrize(
    "text",
    [
        "order 12345 shipped in 3 boxes",
        "card 4111 1111 1111 1112",  # fails the Luhn check
        "iban GB82 WEST 1234 5698 7654 33",  # fails mod 97
        "ssn 000-12-3456 is not issued",
        # never issued either (area 666 or 9xx, group 00, serial 0000): found by the
        # mutation2 review, each rule could be dropped with every test passing
        "ssn 666-12-3456 is not issued",
        "ssn 912-12-3456 is not issued",
        "ssn 123-00-4567 is not issued",
        "ssn 123-45-0000 is not issued",
        "version 1.2.3 released",
        "room 101, floor 7",
        "",
    ],
)
def test_look_alikes_are_left_alone(text: str) -> None:
    found: Counter[str] = Counter()
    assert redact_text(text, found) == text
    assert not found


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB82WEST12345698765433")


def test_redact_column_counts_per_occurrence_and_keeps_missing() -> None:
    values = pd.Series(
        ["mail a@b.io", None, "mail a@b.io", "nothing here", "ip 10.0.0.1, 10.0.0.2"],
        dtype=object,
    )
    out, found = redact_column(values)
    assert found == Counter({"email": 2, "ip_address": 2})
    assert out.tolist() == [
        "mail [EMAIL]",
        None,
        "mail [EMAIL]",
        "nothing here",
        "ip [IP_ADDRESS], [IP_ADDRESS]",
    ]


def test_full_width_digits_are_caught_after_nfkc() -> None:
    from sslops.data.canonicalize import canonical_strings

    canonical, _ = canonical_strings(pd.Series(["ssn １２３-４５-６７８９"]), [])
    out, found = redact_column(canonical)
    assert found == Counter({"ssn": 1}) and out.iloc[0] == "ssn [SSN]"


def test_keyed_hash_depends_on_key_and_keeps_missing() -> None:
    values = pd.Series(["C001", "C002", None, "C001"], dtype=object)
    a = keyed_hash(values, b"k" * 16)
    b = keyed_hash(values, b"x" * 16)
    assert a.iloc[0] == a.iloc[3] != a.iloc[1]
    assert a.iloc[2] is None
    assert a.iloc[0] != b.iloc[0]
    assert len(a.iloc[0]) == 16 and "C001" not in a.tolist()


def test_key_from_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_KEY", raising=False)
    assert load_key(None, "MY_KEY") is None
    monkeypatch.setenv("MY_KEY", "s3cret-s3cret-s3cret")
    assert load_key(None, "MY_KEY") == b"s3cret-s3cret-s3cret"
    path = tmp_path / "key"
    path.write_text("file-key-file-key-file-key\n")
    assert load_key(str(path), "MY_KEY") == b"file-key-file-key-file-key"
    monkeypatch.setenv("MY_KEY", "short")
    with pytest.raises(ConfigError, match="MY_KEY"):
        load_key(None, "MY_KEY")
    with pytest.raises(ConfigError, match="not found"):
        load_key(str(tmp_path / "missing"), "MY_KEY")
