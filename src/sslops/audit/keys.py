"""Which issuer keys a verifier trusts and when; signing with a key held outside the process.

A trusted-keys file (JSON, kept beside the public keys it names, e.g. in a GitOps
repository) lists every issuer key a verifier accepts, with the window it may sign in::

    {"trusted_keys": 1,
     "keys": [
       {"name": "issuer-2025", "public_key_file": "issuer-2025.pub.pem",
        "valid_from": "2025-01-01", "valid_until": "2026-01-01"},
       {"name": "issuer-2026", "public_key_file": "issuer-2026.pub.pem",
        "valid_from": "2026-01-01"},
       {"name": "issuer-2024", "public_key_file": "issuer-2024.pub.pem",
        "valid_from": "2024-01-01", "revoked": "2024-09-12", "revoked_reason": "laptop lost"}]}

A key past ``valid_until`` is *retired* (rotated out): what it signed inside its window
still verifies, a signature dated later does not. A *revoked* key was compromised: nothing
it signed verifies, whatever date the signature carries, since whoever holds the key can
write any date. The date judged is the one the signature covers (a bundle's manifest
``created``), so with an honest key it says when the signing happened.

:class:`CommandSigner` signs through a command (``audit.signing.command``), like git's
``gpg.program``: it receives the bytes to sign on stdin and prints the Ed25519 signature,
base64, on stdout, so the private key can stay in an HSM or a KMS and never be on the
training node.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sslops.audit.bundle import fingerprint, load_public_key
from sslops.errors import ConfigError, describe_json_error

TRUSTED_KEYS_FORMAT = 1
SIGNER_TIMEOUT_S = 120  # an HSM may wait for a touch or a PIN


@dataclass(frozen=True)
class TrustedKey:
    name: str
    key: Ed25519PublicKey
    valid_from: datetime
    valid_until: datetime | None
    revoked: datetime | None
    revoked_reason: str

    def window(self) -> str:
        until = self.valid_until.isoformat() if self.valid_until else "no end"
        return f"{self.valid_from.isoformat()} to {until}"


def _when(value: Any, where: str) -> datetime:
    """An ISO 8601 date or date-time; without a time zone, UTC."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not an ISO 8601 date or date-time "
                          "(e.g. 2026-01-01 or 2026-01-01T09:00:00+00:00)") from None  # fmt: skip
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_EXPECTED = {  # each field: text (JSON strings), or null for the optional ones
    "name": "a name (text)",
    "public_key_file": "a file name (text)",
    **dict.fromkeys(("valid_from", "valid_until", "revoked"), 'an ISO 8601 date ("2026-01-01")'),
    "revoked_reason": "text",
}
_FIELDS = tuple(_EXPECTED)


def _trusted_key(entry: Any, where: str, folder: Path) -> TrustedKey:
    """One entry of a trusted-keys file; ``public_key_file`` is relative to its folder."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object")
    unknown = sorted(set(entry) - set(_FIELDS))
    missing = [f for f in ("name", "public_key_file", "valid_from") if not entry.get(f)]
    if unknown or missing:
        said = ([f"unknown {', '.join(unknown)}"] if unknown else []) + (
            [f"missing {', '.join(missing)}"] if missing else []
        )
        raise ConfigError(f"{where}: {'; '.join(said)} (allowed: {', '.join(_FIELDS)})")
    for field, expected in _EXPECTED.items():
        if entry.get(field) is not None and not isinstance(entry[field], str):
            raise ConfigError(f"{where}: {field} is {repr(entry[field])[:40]}; expected "
                              f"{expected}")  # fmt: skip
    name = entry["name"]
    key_file = Path(entry["public_key_file"])
    try:
        key = load_public_key(key_file if key_file.is_absolute() else folder / key_file,
                              "public_key_file")  # fmt: skip
    except ConfigError as exc:
        raise ConfigError(f"{where} ({name}): {exc}") from None
    start = _when(entry["valid_from"], f"{where} ({name}) valid_from")
    end = (
        _when(entry["valid_until"], f"{where} ({name}) valid_until")
        if entry.get("valid_until")
        else None
    )
    if end is not None and end <= start:
        raise ConfigError(f"{where} ({name}): valid_until is not after valid_from")
    revoked = _when(entry["revoked"], f"{where} ({name}) revoked") if entry.get("revoked") else None
    return TrustedKey(name, key, start, end, revoked, str(entry.get("revoked_reason") or ""))


class TrustedKeys:
    """The keys of a trusted-keys file, by fingerprint."""

    def __init__(self, path: Path, keys: list[TrustedKey]) -> None:
        self.path = path
        self.by_fingerprint = {fingerprint(k.key): k for k in keys}

    @classmethod
    def load(cls, path: Path) -> TrustedKeys:
        path = Path(path)
        expected = (
            'expected {"trusted_keys": 1, "keys": [{"name", "public_key_file", "valid_from", ...}]}'
        )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"trusted keys {path}: no such file") from None
        except OSError as exc:
            raise ConfigError(
                f"trusted keys {path}: not readable JSON ({exc}); {expected}"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"trusted keys {path}: not readable JSON "
                              f"({describe_json_error(exc)}); {expected}") from None  # fmt: skip
        if not (isinstance(raw, dict) and raw.get("trusted_keys") == TRUSTED_KEYS_FORMAT
                and isinstance(raw.get("keys"), list) and raw["keys"]):  # fmt: skip
            raise ConfigError(f"trusted keys {path}: {expected}")
        keys = [
            _trusted_key(entry, f"trusted keys {path}, key {number}", path.parent)
            for number, entry in enumerate(raw["keys"], 1)
        ]
        names: set[str] = set()
        for k in keys:
            if k.name in names:
                raise ConfigError(f"trusted keys {path}: the name {k.name!r} occurs twice")
            names.add(k.name)
        found: dict[str, str] = {}
        for k in keys:
            other = found.setdefault(fingerprint(k.key), k.name)
            if other != k.name:
                raise ConfigError(f"trusted keys {path}: {other} and {k.name} are the same key "
                                  "(give one key one entry, with one window)")  # fmt: skip
        return cls(path, keys)

    def judge(self, key_fingerprint: str, signed_at: Any) -> tuple[str | None, dict[str, Any]]:
        """(problem or None, what to report) for a signature by ``key_fingerprint`` dated
        ``signed_at`` (the date the signature covers)."""
        trusted = self.by_fingerprint.get(key_fingerprint)
        if trusted is None:
            return (f"signed with key {key_fingerprint}, which is not in the trusted keys "
                    f"{self.path}", {"trusted": False})  # fmt: skip
        info = {"trusted": True, "key_name": trusted.name, "key_valid": trusted.window(),
                "signed_at": signed_at}  # fmt: skip
        if trusted.revoked is not None:
            why = f" ({trusted.revoked_reason})" if trusted.revoked_reason else ""
            return (f"signed with key {trusted.name} ({key_fingerprint}), which was revoked on "
                    f"{trusted.revoked.isoformat()}{why}: nothing it signed is trusted, whatever "
                    "date it carries", info)  # fmt: skip
        moment = None
        if isinstance(signed_at, str):  # a number (20260101) would be read as its digits
            with contextlib.suppress(ConfigError):
                moment = _when(signed_at, "the signing date")
        if moment is None:
            return (f"signed with key {trusted.name}, but the date it covers ({signed_at!r}) "
                    "is not a date, so its validity cannot be judged", info)  # fmt: skip
        if moment < trusted.valid_from or (trusted.valid_until and moment >= trusted.valid_until):
            return (f"signed with key {trusted.name} on {moment.isoformat()}, outside the "
                    f"window it may sign in ({trusted.window()})", info)  # fmt: skip
        return None, info


class CommandSigner:
    """An Ed25519 signer whose private key another program holds (HSM, KMS, agent).

    It has the two methods the bundle code uses of a private key, ``public_key()`` and
    ``sign(data)``. Every signature the command returns is verified with the configured
    public key before it is used, so a misconfigured command (another key, another
    algorithm) fails the audit instead of writing a bundle nobody can verify."""

    def __init__(self, command: str, public_key_file: str | Path | None) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise ConfigError("audit.signing.command is empty")
        if shutil.which(self.argv[0]) is None:
            raise ConfigError(f"audit.signing.command: {self.argv[0]!r} is not an executable "
                              "file or on PATH")  # fmt: skip
        if not public_key_file:
            raise ConfigError("audit.signing.command needs audit.signing.public_key_file: the "
                              "public half of the key the command signs with")  # fmt: skip
        self._public = load_public_key(Path(public_key_file).expanduser(),
                                       "audit.signing.public_key_file")  # fmt: skip

    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        name = self.argv[0]
        try:
            done = subprocess.run(self.argv, input=data, capture_output=True,
                                  timeout=SIGNER_TIMEOUT_S, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise ConfigError(f"audit.signing.command {name} did not answer within "
                              f"{SIGNER_TIMEOUT_S} s") from None  # fmt: skip
        except OSError as exc:
            raise ConfigError(f"audit.signing.command {name} could not run: {exc}") from None
        if done.returncode != 0:
            said = " ".join(done.stderr.decode(errors="replace").split())[-300:]
            raise ConfigError(f"audit.signing.command {name} failed (exit {done.returncode})"
                              + (f": {said}" if said else ""))  # fmt: skip
        try:
            signature = base64.b64decode(done.stdout.strip(), validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        if len(signature) != 64:
            raise ConfigError(f"audit.signing.command {name} printed no Ed25519 signature "
                              "(expected 64 bytes, base64, on stdout)")  # fmt: skip
        try:
            self._public.verify(signature, data)
        except InvalidSignature:
            raise ConfigError(f"audit.signing.command {name} returned a signature that does not "
                              "verify with audit.signing.public_key_file "
                              f"({fingerprint(self._public)}): another key, or other bytes "
                              "signed") from None  # fmt: skip
        return signature
