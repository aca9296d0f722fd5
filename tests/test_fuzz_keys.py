"""Generated key files and trusted-keys files against ``sslops audit verify``, and private
key files against the loader the signing commands share (``--key-file``, audit.signing).

The public key given with ``--public-key`` is the issuer's Ed25519 key, another Ed25519 key,
or an RSA, EC, Ed448 or X25519 key; in PEM, DER or OpenSSH form; with a byte-order mark,
CRLF line ends, surrounding blank lines, bytes damaged, an empty file or a folder in its
place. The trusted-keys file is a valid one with a field (at any depth) replaced by any
JSON value or an odd literal, or removed, or its bytes damaged, with a BOM or CRLF. Each
verification ends in "verified" only with the issuer's key trusted, else in one error line
(exit 2) or a failed verification (exit 1); never a traceback. A private key file loads
as the key it holds or is refused with a :class:`ConfigError`.

Derandomized, as the other fuzzers (``SSLOPS_FUZZ_RANDOM=1`` / ``SSLOPS_FUZZ_SCALE``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519
from hypothesis import example, given
from hypothesis import strategies as st

from sslops.audit.bundle import fingerprint, load_private_key, sign_manifest, write_manifest
from sslops.audit.keys import TrustedKeys
from sslops.cli import main
from sslops.errors import ConfigError
from tests.fuzzing import damaged_bytes, edited_json, fuzz

ISSUER = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"sslops keys").digest())
PEM, DER = serialization.Encoding.PEM, serialization.Encoding.DER
SPKI, PKCS8 = serialization.PublicFormat.SubjectPublicKeyInfo, serialization.PrivateFormat.PKCS8


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    """Private keys by name: the issuer's and keys of other kinds (RSA 1024: only its type
    matters here, and it is made in a blink)."""
    return {
        "issuer": ISSUER,
        "other": ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"x").digest()),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=1024),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ed448": ed448.Ed448PrivateKey.generate(),
        "x25519": x25519.X25519PrivateKey.generate(),
    }


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small bundle signed by the issuer, and ``issuer.pub.pem`` beside it."""
    root = tmp_path_factory.mktemp("fuzz-keys")
    (root / "bundle").mkdir()
    (root / "bundle" / "card.md").write_text("# a model card\n")
    write_manifest(root / "bundle", ISSUER)
    sign_manifest(root / "bundle", ISSUER)
    (root / "issuer.pub.pem").write_bytes(ISSUER.public_key().public_bytes(PEM, SPKI))
    return root / "bundle"


def _public(key: Any, form: str) -> bytes:
    public = key.public_key()
    if form == "der":
        return bytes(public.public_bytes(DER, SPKI))
    if form == "openssh" and isinstance(public, ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        return bytes(public.public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH))  # fmt: skip
    if form == "pkcs1" and isinstance(public, rsa.RSAPublicKey):
        return bytes(public.public_bytes(PEM, serialization.PublicFormat.PKCS1))
    return bytes(public.public_bytes(PEM, SPKI))


def _private(key: Any, form: str) -> bytes:
    if form == "der":
        return bytes(key.private_bytes(DER, PKCS8, serialization.NoEncryption()))
    if form == "openssh" and isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        return bytes(key.private_bytes(PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))  # fmt: skip
    if form == "encrypted":
        return bytes(key.private_bytes(PEM, PKCS8,
                                       serialization.BestAvailableEncryption(b"pass")))  # fmt: skip
    return bytes(key.private_bytes(PEM, PKCS8, serialization.NoEncryption()))


# Changes that keep the key a reader should find: it must load as the same key, or be refused.
LOSSLESS = ("none", "bom", "crlf", "blank-lines")


@st.composite
def key_file(draw: st.DrawFn, keys: dict[str, Any], private: bool) -> tuple[str, str, bytes]:
    """(key name, change, file bytes); the change "folder" stands for a folder in its place."""
    name = draw(st.sampled_from(sorted(keys)))
    forms = ["pem", "pem", "der", "openssh", "pkcs1", *(["encrypted"] if private else [])]
    data = (_private if private else _public)(keys[name], draw(st.sampled_from(forms)))
    change = draw(st.sampled_from([*LOSSLESS, "damaged", "empty", "folder", "not-utf8"]))
    if change == "bom":
        data = b"\xef\xbb\xbf" + data
    elif change == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif change == "blank-lines":
        data = b"\n\n" + data + b"\n\n"
    elif change == "damaged":
        data = draw(damaged_bytes(data))
    elif change == "not-utf8":
        data = b"\xff\xfe" + data
    elif change in ("empty", "folder"):
        data = b""
    return name, change, data


def _write(path: Path, change: str, data: bytes) -> None:
    if path.is_dir():
        path.rmdir()
    if change == "folder":
        path.unlink(missing_ok=True)
        path.mkdir()
    else:
        path.write_bytes(data)


def _verify(argv: list[str], capsys: pytest.CaptureFixture[str]) -> int:
    """``sslops audit verify``'s exit status; one error line when it refused its input."""
    capsys.readouterr()
    status = main(["audit", "verify", *argv])
    out, err = capsys.readouterr()
    assert status in (0, 1, 2), (status, err)
    if status == 2:
        assert err.count("\n") == 1 and err.startswith("error: ") and not out, err
    return status


def test_a_public_key_file_of_any_shape_verifies_only_as_the_issuers(
    keys: dict[str, Any], bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bundle.parent / "given.pub.pem"

    @fuzz(60)
    @given(given_key=key_file(keys, private=False))
    def case(given_key: tuple[str, str, bytes]) -> None:
        name, change, data = given_key
        _write(path, change, data)
        status = _verify([str(bundle), "--public-key", str(path)], capsys)
        if status == 0:  # nothing but the issuer's own key, whatever its form
            assert name == "issuer" and change in (*LOSSLESS, "damaged", "not-utf8"), given_key
        elif name == "issuer" and change in LOSSLESS and data.startswith(b"-----"):
            pytest.fail(f"the issuer's PEM key with {change} was not accepted: {status}")

    case()


def test_a_private_key_file_of_any_shape_loads_as_its_key_or_is_refused(
    keys: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "signer.pem"

    @fuzz(60)
    @given(given_key=key_file(keys, private=True))
    def case(given_key: tuple[str, str, bytes]) -> None:
        name, change, data = given_key
        _write(path, change, data)
        try:
            key = load_private_key(path, "", True, "--key-file", "a decision is signed")
        except ConfigError as exc:
            said = str(exc)
            assert "\n" not in said and (len(data) < 40 or data[20:40] not in said.encode())
            return
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        if change in LOSSLESS:
            assert fingerprint(key.public_key()) == fingerprint(keys[name].public_key())

    case()


def _trusted(bundle: Path) -> dict[str, Any]:
    return {"trusted_keys": 1, "keys": [
        {"name": "issuer", "public_key_file": "issuer.pub.pem", "valid_from": "2000-01-01",
         "valid_until": "9000-01-01"},
        {"name": "old", "public_key_file": "old.pub.pem", "valid_from": "2020-01-01",
         "revoked": "2021-01-01", "revoked_reason": "laptop lost"},
    ]}  # fmt: skip


def _issuer_trusted(data: bytes, folder: Path) -> bool:
    """Whether the file, read as plain JSON, may still trust the issuer's key: an entry
    naming the file that holds it, without a revocation (the window is left to
    tests/test_signing.py)."""
    try:
        document = json.loads(data)
        entries = [e for e in document["keys"] if isinstance(e, dict)]
    except (ValueError, RecursionError, KeyError, TypeError):
        return False
    issuer = ISSUER.public_key().public_bytes(PEM, SPKI)
    return (folder / "issuer.pub.pem").read_bytes() == issuer and any(
        e.get("public_key_file") == "issuer.pub.pem" and not e.get("revoked") for e in entries
    )


def test_a_damaged_trusted_keys_file_trusts_nothing_it_does_not_say(
    keys: dict[str, Any], bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = bundle.parent
    (folder / "old.pub.pem").write_bytes(_public(keys["other"], "pem"))
    path = folder / "trusted.json"
    document = json.dumps(_trusted(bundle), indent=2).encode()
    path.write_bytes(document)
    assert _verify([str(bundle), "--trusted-keys", str(path)], capsys) == 0

    @fuzz(60)
    @given(
        data=st.one_of(
            edited_json(_trusted(bundle)),
            damaged_bytes(document),
            st.sampled_from([b"\xef\xbb\xbf" + document, document.replace(b"\n", b"\r\n"), b""]),
        )
    )
    @example(data=document.replace(b'"issuer.pub.pem"', b"5"))
    @example(data=document.replace(b'"issuer.pub.pem"', b'"' + b"x" * 5000 + b'"'))
    @example(data=document.replace(b'"2000-01-01"', b"9" * 5000))
    def case(data: bytes) -> None:
        path.write_bytes(data)
        status = _verify([str(bundle), "--trusted-keys", str(path)], capsys)
        if status == 0:
            assert _issuer_trusted(data, folder), data
            assert TrustedKeys.load(path).by_fingerprint  # what verify read, read again

    case()


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [  # TypeError: expected str, bytes or os.PathLike object, not int
        (b'"issuer.pub.pem"', b"5", "key 1: public_key_file is 5; expected a file name (text)"),
        (b'"2000-01-01"', b"20000101",  # read as the date 2000-01-01 by str()
         'key 1: valid_from is 20000101; expected an ISO 8601 date ("2026-01-01")'),
        (b'"laptop lost"', b'["x"]', "key 2: revoked_reason is ['x']; expected text"),
        (b'"2021-01-01"', b"false",  # a revocation that says nothing: not silently dropped
         'key 2: revoked is False; expected an ISO 8601 date ("2026-01-01")'),
        (b'"issuer"', b'{"a": 1}', "key 1: name is {'a': 1}; expected a name (text)"),
        (b'"2000-01-01"', b"9" * 5000,  # ValueError: int() refuses 4300+ digits
         "not readable JSON (a number too long to read)"),
        (b'"2000-01-01"', b"[" * 3000 + b"]" * 3000, "not readable JSON (nested too deeply)"),
    ],
    ids=["file-int", "date-int", "reason-list", "revoked-false", "name-object", "long-number",
         "deep"],
)  # fmt: skip
def test_a_trusted_keys_field_of_another_type_is_named(
    keys: dict[str, Any], bundle: Path, old: bytes, new: bytes, problem: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Each was a traceback or a value read as something else (found by the fuzz review)."""
    (bundle.parent / "old.pub.pem").write_bytes(_public(keys["other"], "pem"))
    path = bundle.parent / "trusted.json"
    document = json.dumps(_trusted(bundle), indent=2).encode()
    assert old in document
    path.write_bytes(document.replace(old, new, 1))
    assert main(["audit", "verify", str(bundle), "--trusted-keys", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: trusted keys {path}") and problem in err, err


def test_a_public_key_file_name_too_long_names_the_key_file(bundle: Path, tmp_path: Path) -> None:
    """Was ``OSError: [Errno 36] File name too long`` from the trusted-keys reader (the CLI
    turned it into a line that did not say which setting held the name)."""
    path = tmp_path / "trusted.json"
    trusted = _trusted(bundle)
    trusted["keys"][0]["public_key_file"] = "k" * 5000
    path.write_text(json.dumps(trusted))
    with pytest.raises(
        ConfigError, match=r"key 1 \(issuer\): public_key_file .*kkk: File name too long"
    ):
        TrustedKeys.load(path)


def _unknown_algorithm(pem: bytes) -> bytes:
    """``pem`` with one bit of its algorithm identifier (id-ecPublicKey) changed."""
    der = bytearray(serialization.load_pem_public_key(pem).public_bytes(DER, SPKI) if b"PUBLIC"
                    in pem else serialization.load_pem_private_key(pem, None).private_bytes(
                        DER, PKCS8, serialization.NoEncryption()))  # fmt: skip
    der[der.find(bytes.fromhex("2a8648ce3d0201"))] ^= 0x01
    label = b"PUBLIC KEY" if b"PUBLIC" in pem else b"PRIVATE KEY"
    body = base64.encodebytes(bytes(der))
    return b"-----BEGIN " + label + b"-----\n" + body + b"-----END " + label + b"-----\n"


def test_a_key_of_an_unknown_algorithm_is_named(
    keys: dict[str, Any], bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged algorithm identifier was cryptography's ``UnsupportedAlgorithm: Unknown key
    type: 1.3.840.10045.2.1`` traceback from ``audit verify`` and from every command that
    loads a private key (found by the fuzz review)."""
    public = tmp_path / "odd.pub.pem"
    public.write_bytes(_unknown_algorithm(_public(keys["ec"], "pem")))
    assert main(["audit", "verify", str(bundle), "--public-key", str(public)]) == 2
    assert capsys.readouterr().err == (
        f"error: --public-key {public} holds a key of an unknown type (Unknown key type: "
        "1.3.840.10045.2.1); expected an Ed25519 public key in PEM (sslops audit keygen writes "
        "one)\n"
    )
    private = tmp_path / "odd.pem"
    private.write_bytes(_unknown_algorithm(_private(keys["ec"], "pem")))
    with pytest.raises(ConfigError, match=r"^--key-file \(.*odd.pem\) holds a key of an unknown "
                       r"type \(Unknown key type: 1\.3\.840\.10045\.2\.1\); expected an Ed25519 "
                       r"key$"):  # fmt: skip
        load_private_key(private, "", True, "--key-file", "a decision is signed")
