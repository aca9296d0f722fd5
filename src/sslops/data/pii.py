"""Personal data: find and redact it in text cells; keyed hashes for identifier columns.

Seven kinds are recognised: e-mail addresses, phone numbers, US social security numbers,
payment card numbers (Luhn-checked), IBANs (mod-97-checked), IP addresses and dates
(a date in free text is treated as a possible date of birth). Each finding is
replaced by a placeholder such as ``[EMAIL]``; the report counts findings per kind
and column and never holds a value.

Speed: a vectorized RE2 prefilter (pyarrow) selects the distinct cells that could hold
anything; only those go through the exact Python patterns and checksums.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sslops.data.canonicalize import text_array
from sslops.errors import ConfigError

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DAY, _MON, _YEAR = r"(?:0?[1-9]|[12]\d|3[01])", r"(?:0?[1-9]|1[0-2])", r"(?:19|20)\d\d"
# Order matters where patterns overlap at one position: the first alternative wins.
PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
    "payment_card": r"\b(?:\d[ -]?){12,18}\d\b",
    "ssn": r"\b\d{3}-\d{2}-\d{4}\b",
    "date_of_birth": (
        rf"\b(?:{_YEAR}[-/.]{_MON}[-/.]{_DAY}|{_DAY}[-/.]{_MON}[-/.]{_YEAR}|"
        rf"{_MON}/{_DAY}/{_YEAR}|{_DAY} {_MONTH}\.? {_YEAR}|{_MONTH}\.? {_DAY},? {_YEAR})\b"
    ),
    "ip_address": (
        rf"\b(?:{_OCTET}\.){{3}}{_OCTET}\b|"
        r"\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b|"
        r"\b(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:?){1,6}\b"
    ),
    "phone": (
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?!\w)"
    ),
}
KINDS = tuple(PATTERNS)
PLACEHOLDER = {kind: f"[{kind.upper()}]" for kind in KINDS}
_COMBINED = re.compile("|".join(f"(?P<{kind}>{rx})" for kind, rx in PATTERNS.items()))
# RE2 (pyarrow) supersets of the patterns above, without their word boundaries and checks:
# a cell that matches none cannot hold a finding.
_MONTHS = r"(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_PREFILTER = "|".join(
    [
        r"@",  # email
        r"[A-Z]{2}\d{2}",  # iban
        r"\d(?:[ -]?\d){12}",  # payment card: 13+ digits
        r"\d{3}-\d{2}-\d{4}",  # ssn
        r"\d{1,4}[-/.]\d{1,2}[-/.]\d{2,4}",  # numeric dates
        rf"\d {_MONTHS}|{_MONTHS}[a-z]*\.? \d",  # written dates
        r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}:",  # ip
        r"\d{2,4}\)?[ .-]\d{3,4}[ .-]\d{3,4}",  # phone
    ]
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def ssn_valid(text: str) -> bool:
    area, group, serial = text.split("-")
    return area not in {"000", "666"} and area[0] != "9" and group != "00" and serial != "0000"


def _is_finding(kind: str, text: str) -> bool:
    if kind == "payment_card":
        digits = re.sub(r"[ -]", "", text)
        return 13 <= len(digits) <= 19 and luhn_valid(digits)
    if kind == "iban":
        return iban_valid(text)
    if kind == "ssn":
        return ssn_valid(text)
    return True


def redact_text(text: str, found: Counter[str]) -> str:
    """``text`` with every finding replaced by its placeholder; ``found`` counts them by kind."""

    def replace(match: re.Match[str]) -> str:
        kind = str(match.lastgroup)
        if not _is_finding(kind, match.group()):
            return match.group()
        found[kind] += 1
        return PLACEHOLDER[kind]

    return _COMBINED.sub(replace, text)


def redact_array(
    values: pa.Array, weights: np.ndarray | None = None
) -> tuple[pa.Array, Counter[str]]:
    """Redact distinct text values (nulls stay); counts weigh each value by ``weights``."""
    found: Counter[str] = Counter()
    hits = pc.fill_null(pc.match_substring_regex(values, _PREFILTER), False)
    suspects = np.flatnonzero(hits.to_numpy(zero_copy_only=False))
    changed, replacements = np.zeros(len(values), dtype=bool), []
    for index in suspects:
        per_value: Counter[str] = Counter()
        redacted = redact_text(values[int(index)].as_py(), per_value)
        if per_value:
            changed[index] = True
            replacements.append(redacted)
            weight = 1 if weights is None else int(weights[index])
            for kind, count in per_value.items():
                found[kind] += count * weight
    if not replacements:
        return values, found
    return pc.replace_with_mask(values, pa.array(changed), pa.array(replacements)), found


def redact_column(
    values: pd.Series, weights: np.ndarray | None = None
) -> tuple[pd.Series, Counter[str]]:
    """Redact one text column (object dtype, None = missing); counts are per cell occurrence
    (each cell counting ``weights[i]`` times when given)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    present = codes >= 0
    occurrences = np.bincount(
        codes[present],
        weights=None if weights is None else weights[present],
        minlength=len(uniques),
    )
    redacted, found = redact_array(text_array(uniques), occurrences)
    if not found:
        return values, found
    table = np.array([*redacted.to_pylist(), None], dtype=object)
    return pd.Series(table[codes], index=values.index, dtype=object), found


def value_shape(text: str, limit: int = 30) -> str:
    """``text`` with every letter written as ``a`` or ``A`` and every digit as ``9``, the
    rest as it is, cut to ``limit`` characters: what an error message shows of a cell that
    may be a person's (a name in a number column is 'Aaaa Aaaaa', a formatted amount
    '$99,999'), enough to see what is wrong without quoting it."""
    return "".join(
        ("A" if ch.isupper() else "a") if ch.isalpha() else "9" if ch.isdigit() else ch
        for ch in text[:limit]
    )


def load_key(key_file: str | None, key_env: str) -> bytes | None:
    """The hashing key from ``key_file`` or the environment variable ``key_env``; None if neither."""
    if key_file:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"prepare.pii.key_file: file not found: {key_file}")
        key = path.read_bytes().strip()
        if len(key) < 16:
            raise ConfigError(f"prepare.pii.key_file {key_file}: key shorter than 16 bytes")
        return key
    value = os.environ.get(key_env, "").strip()
    if not value:
        return None
    if len(value) < 16:
        raise ConfigError(f"environment variable {key_env}: key shorter than 16 characters")
    return value.encode()


def require_key(key: bytes | None, why: str, key_env: str) -> bytes:
    if key is None:
        raise ConfigError(
            f"{why} needs a secret key: set the environment variable {key_env} or "
            "prepare.pii.key_file (the key itself never goes into the config)"
        )
    return key


def keyed_hash(values: pd.Series, key: bytes) -> pd.Series:
    """HMAC-SHA256 of each value (first 16 hex digits); missing stays missing."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    digests = [hmac.new(key, str(u).encode(), hashlib.sha256).hexdigest()[:16] for u in uniques]
    table = np.array([*digests, None], dtype=object)
    return pd.Series(table[codes], index=values.index, dtype=object)


def siphash_key(key: bytes, purpose: str) -> str:
    """A 16-character key for pandas' keyed SipHash, derived from the secret key."""
    return hmac.new(key, purpose.encode(), hashlib.sha256).hexdigest()[:16]
