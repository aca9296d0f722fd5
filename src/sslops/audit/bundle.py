"""Bundle integrity: manifest of hashes, Ed25519 signature, verification of a folder or a .zip.

``manifest.json`` lists the sha256 of every other file of the bundle and a digest of
its own content, so an accidental change to the manifest is caught even in an
unsigned bundle. ``signature.json`` holds an Ed25519 signature over a small signed
record (algorithm, key fingerprint, public key, sha256 of the manifest's bytes); a
change to either file breaks it. Both files are written in one canonical JSON form
and verification compares bytes, so whitespace edits are caught too.

The private key is read from a file or an environment variable (on a cluster, a
Kubernetes Secret mounted either way). It is never logged, copied or echoed in an
error message; only its public half and fingerprint enter the bundle.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import stat
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sslops.artifacts import json_text, sha256_file
from sslops.errors import ArtifactError, ConfigError

if TYPE_CHECKING:  # the config (pydantic) is not needed to verify or reproduce a bundle
    from sslops.audit.keys import TrustedKeys
    from sslops.config import SigningConfig

MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
BUNDLE_FORMAT = 2
ALGORITHM = "Ed25519"
BUNDLE_DIR = "bundle"
ZIP_NAME = "bundle.zip"
_SEALS = (MANIFEST, SIGNATURE)


def canonical_json(obj: Any) -> bytes:
    return (json_text(obj, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def _digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj)).hexdigest()


# --- keys -------------------------------------------------------------------------------------


class Signer(Protocol):
    """What signing needs of a key: an Ed25519 private key, or a
    :class:`sslops.audit.keys.CommandSigner` whose key stays in an HSM or KMS."""

    def public_key(self) -> Ed25519PublicKey: ...

    def sign(self, data: bytes) -> bytes: ...


def load_signing_key(signing: SigningConfig) -> Signer | None:
    """The configured signer (``audit.signing.command``, else the private key), or None when
    none is configured and none is required."""
    if signing.command:
        from sslops.audit.keys import CommandSigner

        if signing.key_file:
            raise ConfigError("audit.signing.command and audit.signing.key_file are both set: "
                              "the key is either held by the command or read from the file")  # fmt: skip
        return CommandSigner(signing.command, signing.public_key_file)
    return load_private_key(
        signing.key_file, signing.key_env, signing.required, "audit.signing.key_file",
        "audit.signing.required is true",
    )  # fmt: skip


def load_private_key(
    key_file: str | Path | None, key_env: str, required: bool, file_option: str, why: str
) -> Ed25519PrivateKey | None:
    """A private key from ``key_file``, else from the environment variable ``key_env``.

    ``file_option`` names the setting the file came from and ``why`` says why a key is
    required, for the error messages (which never include the key).
    """
    if key_file:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"{file_option}: file not found: {path}")
        return _parse_private(path.read_bytes(), f"{file_option} ({path})")
    text = os.environ.get(key_env, "")
    if text.strip():
        return _parse_private(text.encode(), f"environment variable {key_env}")
    if required:
        raise ConfigError(
            f"{why} but no signing key was found: set {file_option} or the environment "
            f"variable {key_env}"
        )
    return None


def _parse_private(data: bytes, where: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # Never include the bytes: they may be a key in another format.
        raise ConfigError(f"{where} does not hold an unencrypted PEM private key") from None
    except UnsupportedAlgorithm as exc:  # an algorithm identifier no one knows (damaged)
        raise ConfigError(f"{where} holds a key of an unknown type ({exc}); expected an "
                          "Ed25519 key") from None  # fmt: skip
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{where} holds a {type(key).__name__}, expected an Ed25519 key")
    return key


def load_public_key(path: Path, option: str = "public key file") -> Ed25519PublicKey:
    """The Ed25519 public key in PEM at ``path``; ``option`` names where the path came from
    (``--public-key``, ``--approver-key``, a config key) in every error."""
    expected = "expected an Ed25519 public key in PEM (sslops audit keygen writes one)"
    try:
        data = path.read_bytes() if path.is_file() else None
    except OSError as exc:  # a name too long, a file that cannot be read
        raise ConfigError(f"{option} {path}: {exc.strerror or exc}") from None
    if data is None:
        what = "is a folder" if path.is_dir() else "file not found"
        raise ConfigError(f"{option} {path}: {what}; {expected}")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ConfigError(f"{option} {path} is not a PEM public key; {expected}") from None
    except UnsupportedAlgorithm as exc:  # an algorithm identifier no one knows (damaged)
        raise ConfigError(f"{option} {path} holds a key of an unknown type ({exc}); "
                          f"{expected}") from None  # fmt: skip
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{option} {path} is not an Ed25519 public key; {expected}")
    return key


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    return "SHA256:" + hashlib.sha256(_raw_public(key)).hexdigest()


def generate_keypair(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair as PEM (private file mode 0600); returns the fingerprint.

    Everything is checked before anything is written: the two files must differ, neither
    may exist (like ssh-keygen, an existing private key is never replaced) and both
    folders must exist. If the public key still cannot be written, the private key just
    written is removed again, so a failure leaves no half pair."""
    private_path, public_path = Path(private_path), Path(public_path)
    if private_path.resolve() == public_path.resolve():
        raise ConfigError(f"--private-key and --public-key are the same file ({private_path})")
    for path, half in ((private_path, "private"), (public_path, "public")):
        if path.exists() or path.is_symlink():
            raise ConfigError(
                f"{path} exists; a new key pair would replace that {half} key: remove it first "
                "or choose another name"
            )
    for path, option in ((private_path, "--private-key"), (public_path, "--public-key")):
        folder = path.parent
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise ConfigError(f"{option} {path}: folder {folder} {what}")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    written: list[Path] = []
    try:
        for path, data, mode in ((private_path, private, 0o600), (public_path, public, 0o644)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            written.append(path)  # created by this call (O_EXCL), so ours to remove
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return fingerprint(key.public_key())


# --- sealing ----------------------------------------------------------------------------------


def write_manifest(bundle: Path, key: Signer | None = None) -> bytes:
    """``key``: the key that will sign it, so a removed signature.json is noticed."""
    files = {
        p.relative_to(bundle).as_posix(): sha256_file(p)
        for p in sorted(bundle.rglob("*"))
        if p.is_file() and p.relative_to(bundle).as_posix() not in _SEALS
    }
    body = {
        "bundle_format": BUNDLE_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": files,
        "signature": {"algorithm": ALGORITHM, "key_fingerprint": fingerprint(key.public_key())}
        if key is not None
        else None,
    }
    data = canonical_json({**body, "digest": _digest(body)})
    (bundle / MANIFEST).write_bytes(data)
    return data


def signature_record(key: Signer, fields: dict[str, Any]) -> dict[str, Any]:
    """``{"signed": fields + algorithm, public key, fingerprint; "signature": Ed25519}``."""
    public = key.public_key()
    signed = {
        "algorithm": ALGORITHM,
        **fields,
        "public_key": base64.b64encode(_raw_public(public)).decode(),
        "key_fingerprint": fingerprint(public),
    }
    signature = base64.b64encode(key.sign(canonical_json(signed))).decode()
    return {"signed": signed, "signature": signature}


def sign_manifest(bundle: Path, key: Signer) -> dict[str, Any]:
    fields = {
        "signed_file": MANIFEST,
        "manifest_sha256": hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest(),
    }
    record = signature_record(key, fields)
    (bundle / SIGNATURE).write_bytes(canonical_json(record))
    return dict(record["signed"])


def check_signature_record(
    record: Any, public_key: Ed25519PublicKey | None, name: str
) -> tuple[str | None, dict[str, Any], Ed25519PublicKey | None]:
    """(problem or None, the signed fields, the key that verified) for a signature record
    (as read from JSON: of any type)."""
    extra = (
        sorted(map(str, set(record) - {"signed", "signature"})) if isinstance(record, dict) else []
    )
    if extra:  # outside what the signature covers: anyone could have written them
        return (f"{name} was modified: it holds {', '.join(map(repr, extra))} besides the "
                "signed fields and their signature", {}, None)  # fmt: skip
    try:
        signed = record["signed"]
        if not isinstance(signed, dict):
            raise TypeError("the signed fields are not a mapping")
        if signed.get("algorithm") != ALGORITHM:  # the only one signed or accepted: no downgrade
            return (f"{name}: algorithm {signed.get('algorithm')!r} is not {ALGORITHM}, the only "
                    "one sslops signs with or accepts", {}, None)  # fmt: skip
        embedded = Ed25519PublicKey.from_public_bytes(base64.b64decode(signed["public_key"]))
        signature = base64.b64decode(record["signature"], validate=True)
        key = public_key or embedded
        key.verify(signature, canonical_json(signed))
    except InvalidSignature:
        who = "the given public key" if public_key else "its embedded public key"
        return f"{name}: the signature does not verify with {who}", {}, None
    except (KeyError, TypeError, ValueError):
        return f"{name} was modified: its fields are unreadable", {}, None
    # The record's own claims about its key must be those of the key that verified it:
    # callers (four eyes, --approver-key, the registry index) read key_fingerprint from
    # the record, and a record signed with one key could otherwise name another.
    if _raw_public(embedded) != _raw_public(key):
        return f"{name}: it names another public key than the one it was verified with", {}, None
    if signed.get("key_fingerprint") != fingerprint(key):
        return (
            f"{name}: its key_fingerprint is not that of the key that signed it "
            f"({fingerprint(key)})",
            {},
            None,
        )
    return None, signed, key


def write_zip(bundle: Path, target: Path) -> None:
    """Deterministic zip of the bundle folder (sorted names, fixed timestamps)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo(path.relative_to(bundle).as_posix(), (1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, path.read_bytes())


# --- verification -----------------------------------------------------------------------------


class DamagedFile(ArtifactError):
    """A bundle .zip, or one of its members, that cannot be read back (bad compressed data,
    bad CRC, cut short): a problem of that file, reported like a modified one."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} is damaged ({reason})")
        self.name, self.reason = name, reason


# What reading a damaged zip member raises: a bad CRC or header, corrupt deflate data,
# data cut short, an I/O error; a "version needed to extract" zipfile does not know.
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError)


class BundleFiles:
    """The files of a bundle folder or .zip, by POSIX relative name. A context manager:
    leaving the block closes the zip (a zip that is refused is closed before the error)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip = None
        if path.is_file():
            try:
                archive = zipfile.ZipFile(path)
            except _ZIP_READ_ERRORS as exc:
                reason = f"not a readable zip archive: {_reason(exc)}"
                raise DamagedFile(str(path), reason) from None
            with contextlib.ExitStack() as refused:
                refused.enter_context(archive)  # closed unless kept below
                problem = _ambiguous_member(archive)
                if problem:
                    raise DamagedFile(str(path), problem)
                refused.pop_all()
            self._zip = archive

    def __enter__(self) -> BundleFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def names(self) -> set[str]:
        if self._zip is not None:
            return {i.filename for i in self._zip.infolist() if not i.is_dir()}
        return {
            p.relative_to(self.path).as_posix()
            for p in self.path.rglob("*")
            if p.is_symlink() or not p.is_dir()
        }

    def irregular(self) -> dict[str, str]:
        """Entries of a bundle folder that are not regular files or folders, and what they
        are: a symbolic link (to a file or a folder, dangling or not: what it points to is
        not part of the bundle and may change after it was verified), or a FIFO, socket or
        device (reading one may block or never end, and it holds no bytes that were hashed)."""
        if self._zip is not None:
            return {}
        found = {}
        for p in self.path.rglob("*"):
            if p.is_symlink():
                found[p.relative_to(self.path).as_posix()] = "a symbolic link"
            elif not p.is_dir() and not p.is_file():
                found[p.relative_to(self.path).as_posix()] = (
                    "not a regular file (a FIFO, socket or device)"
                )
        return found

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            try:
                return self._zip.read(name)
            except _ZIP_READ_ERRORS as exc:
                raise DamagedFile(name, _reason(exc)) from None
        return (self.path / name).read_bytes()

    def sha256(self, name: str) -> str:
        if self._zip is None:
            return sha256_file(self.path / name)
        digest = hashlib.sha256()
        try:
            with self._zip.open(name) as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except _ZIP_READ_ERRORS as exc:
            raise DamagedFile(name, _reason(exc)) from None
        return digest.hexdigest()


def _ambiguous_member(archive: zipfile.ZipFile) -> str | None:
    """A member name that does not say which file it is: one that occurs twice (Python reads
    the last, many extractors the first, so what was verified need not be what is deployed),
    or one an extractor would place outside its folder."""
    seen: set[str] = set()
    for name in (info.filename for info in archive.infolist()):
        if name in seen:
            count = sum(info.filename == name for info in archive.infolist())
            return f"{name} occurs {count} times in the zip (an extractor may take either copy)"
        seen.add(name)
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or ".." in parts or ":" in parts[0]:
            return f"member {name!r} would be extracted outside the bundle's folder"
    for info in archive.infolist():  # unzip makes these links, not the bytes that were hashed
        if stat.S_ISLNK(info.external_attr >> 16):
            return f"member {info.filename!r} is a symbolic link (an extractor would create a link)"
        if info.flag_bits & 0x1:  # reading it needs a password: zipfile raises RuntimeError
            return f"member {info.filename!r} is encrypted (a bundle's members never are)"
        if info.compress_type not in _ZIP_METHODS:
            return (f"member {info.filename!r} uses compression method {info.compress_type}, "
                    "which cannot be read (expected deflate or stored)")  # fmt: skip
    return None


_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _load_canonical(files: BundleFiles, name: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = files.read(name)
    except DamagedFile as exc:
        return None, str(exc)
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, f"{name} was modified: not valid JSON"
    if not isinstance(obj, dict) or canonical_json(obj) != data:
        return None, f"{name} was modified: not in the canonical form it was written in"
    return obj, None


def check_signature(
    files: BundleFiles, trust: Ed25519PublicKey | TrustedKeys | None
) -> tuple[list[str], dict[str, Any]]:
    """Problems with ``signature.json`` (and whether it covers the manifest as it is now).
    With trusted keys, the signature is checked with the key it names here; whether that key
    is trusted, and was at the date signed, is judged once the manifest is read."""
    names = files.names()
    if SIGNATURE not in names:
        if trust is not None:
            unsigned = "the bundle is not signed (the issuer signs it with audit.signing.key_file)"
            return [f"{SIGNATURE} is missing: {unsigned}"], {"signed": False}
        return [], {"signed": False}
    record, problem = _load_canonical(files, SIGNATURE)
    if problem or record is None:
        return [problem or SIGNATURE], {"signed": True}
    public_key = trust if isinstance(trust, Ed25519PublicKey) else None
    problem, signed, key = check_signature_record(record, public_key, SIGNATURE)
    if problem or key is None:
        return [problem or SIGNATURE], {"signed": True}
    info = {"signed": True, "key_fingerprint": fingerprint(key)}
    if MANIFEST in names:
        try:
            manifest_sha256 = files.sha256(MANIFEST)
        except DamagedFile as exc:
            return [str(exc)], info
        if not isinstance(signed.get("manifest_sha256"), str):  # an older or foreign record
            return [f"{SIGNATURE} was modified: it names no manifest_sha256 of {MANIFEST}"], info
        if signed["manifest_sha256"] != manifest_sha256:
            return [f"{MANIFEST} was modified after it was signed"], info
    return [], info


def bundle_root(path: Path) -> Path:
    """A bundle folder or .zip as given; for the audit artifact folder, the bundle inside it."""
    path = Path(path)
    if path.is_dir() and not (path / MANIFEST).exists() and (path / BUNDLE_DIR).is_dir():
        return path / BUNDLE_DIR
    return path


# Files only a bundle has: a folder with none of them (and no manifest.json) is not a
# bundle whose manifest was removed but another folder given by mistake.
_BUNDLE_FILES = (SIGNATURE, "lineage.json", "gates.json", "compliance.json", "model_card.md")


def verify_bundle(
    path: Path, public_key: Ed25519PublicKey | TrustedKeys | None = None, *, known: bool = False
) -> dict[str, Any]:
    """Check every file of a bundle folder or .zip; ``problems`` is empty when it is intact.

    ``public_key``: the issuer's key, or trusted keys (then ``trusted_key`` says which key
    signed and whether it was valid when the manifest was created).

    ``known``: the caller knows ``path`` is where a bundle was written (the audit artifact
    folder's ``bundle/``), so an emptied one is a problem, not a folder given by mistake."""
    given = Path(path)
    path = bundle_root(given)
    if not path.exists():
        raise ArtifactError(f"bundle not found: {path}")
    if path.is_file() and path.suffix.lower() != ".zip" and not zipfile.is_zipfile(path):
        raise ArtifactError(f"{path} is neither a bundle folder nor a .zip")
    try:
        files = BundleFiles(path)
    except DamagedFile as exc:  # a .zip cut short or overwritten: the whole file is damaged
        damaged = f"{path.name} is damaged ({exc.reason})"
        return {"path": str(path), "problems": [damaged], "signed": False, "unreadable": True}
    with files:
        return _verify_files(files, given, public_key, known)


def _verify_files(
    files: BundleFiles, given: Path, public_key: Ed25519PublicKey | TrustedKeys | None,
    known: bool,
) -> dict[str, Any]:  # fmt: skip
    path = files.path
    names = files.names()
    irregular = files.irregular()
    present = names | set(irregular)
    if MANIFEST not in present and not known and not present & set(_BUNDLE_FILES):
        # before the irregular files: a folder that is no bundle at all is the wrong input
        # (exit 2), whatever it holds, not a bundle that failed verification (exit 1)
        raise ArtifactError(
            f"{given} is not an audit bundle (no {MANIFEST}; expected a bundle folder, its "
            f"{ZIP_NAME} or the audit artifact folder)"
        )
    if irregular:  # named, and never read through: a bundle folder holds regular files only
        problems = [f"{name} is {what} (a bundle holds regular files only; what it points to "
                    "is not part of the bundle)" if what == "a symbolic link" else
                    f"{name} is {what}; a bundle holds regular files only"
                    for name, what in sorted(irregular.items())]  # fmt: skip
        return {"path": str(path), "problems": problems, "signed": SIGNATURE in names}
    if MANIFEST not in names:
        return {"path": str(path), "problems": [f"{MANIFEST} is missing"], "signed": False}
    problems, info = check_signature(files, public_key)
    manifest, problem = _load_canonical(files, MANIFEST)
    if manifest is not None:
        body = {k: v for k, v in manifest.items() if k != "digest"}
        if manifest.get("digest") != _digest(body) or not isinstance(body.get("files"), dict):
            problem = f"{MANIFEST} was modified: its digest does not match its content"
    if problem or manifest is None:
        return {"path": str(path), "problems": [*problems, problem], **info}
    problems += _format_problem(manifest.get("bundle_format"))
    claim = manifest.get("signature")
    if claim and SIGNATURE not in names and not problems:
        problems.append(f"{SIGNATURE} is missing ({MANIFEST} says the bundle is signed)")
    elif claim and info.get("key_fingerprint") and not problems:
        # The manifest names the key it was sealed for: signature.json by another key over
        # the same manifest is a re-signed copy, whoever verifies it.
        claim = claim if isinstance(claim, dict) else {}
        if claim.get("algorithm") != ALGORITHM:
            problems.append(f"{MANIFEST} names signature algorithm {claim.get('algorithm')!r}; "
                            f"sslops signs with {ALGORITHM} only")  # fmt: skip
        elif claim.get("key_fingerprint") != info["key_fingerprint"]:
            problems.append(f"{MANIFEST} names signing key {claim.get('key_fingerprint')}, but "
                            f"{SIGNATURE} is signed with {info['key_fingerprint']} (re-signed "
                            "with another key)")  # fmt: skip
    if (public_key is not None and not isinstance(public_key, Ed25519PublicKey)
            and info.get("key_fingerprint") and not problems):  # fmt: skip
        # The date judged is the manifest's: the signature covers it.
        untrusted, info["trusted_key"] = public_key.judge(
            info["key_fingerprint"], manifest.get("created")
        )
        if untrusted:
            problems.append(f"{SIGNATURE}: {untrusted}")
    listed: dict[str, str] = manifest["files"]
    actual = names - set(_SEALS)
    for name in sorted(set(listed) | actual):
        if name not in actual:
            problems.append(f"{name} is missing (listed in {MANIFEST})")
        elif name not in listed:
            problems.append(f"{name} was added (not in {MANIFEST})")
        else:
            try:
                if files.sha256(name) != listed[name]:
                    problems.append(f"{name} was modified (sha256 differs from {MANIFEST})")
            except DamagedFile as exc:
                problems.append(str(exc))
    return {"path": str(path), "problems": problems, "files": len(listed), **info}


def _format_problem(found: Any) -> list[str]:
    """A bundle of a format this sslops does not know is not reported intact: a newer format
    may seal what this version would not check (docs/upgrading.md)."""
    if isinstance(found, int) and not isinstance(found, bool) and 1 <= found <= BUNDLE_FORMAT:
        return []
    from sslops import __version__

    return [f"{MANIFEST}: bundle_format {found!r} is not one sslops {__version__} reads (1 to "
            f"{BUNDLE_FORMAT}); verify it with the sslops version that wrote it or a newer one"]  # fmt: skip


def read_bundle_json(path: Path, name: str) -> Any:
    """One JSON file of a bundle folder, artifact folder or .zip (for the change log)."""
    root = bundle_root(path)
    with BundleFiles(root) as files:
        if name not in files.names():
            raise ArtifactError(f"{root} has no {name}")
        try:
            return json.load(io.BytesIO(files.read(name)))
        except DamagedFile as exc:
            raise ArtifactError(f"{root}: {exc}") from None


def verify_path(
    path: Path, public_key: Ed25519PublicKey | TrustedKeys | None = None
) -> dict[str, Any]:
    """``sslops audit verify``: a bundle folder or .zip, or the audit artifact folder.

    The artifact folder is a folder with ``bundle/`` in it. Then the bundle inside,
    ``bundle.zip`` (which must hold the same bundle: the same ``manifest.json``), the card
    copies and ``meta.json`` are all checked, and any of them missing is a problem, so that
    removing ``meta.json`` cannot narrow the check to ``bundle/``; problems in the zip are
    prefixed with its name.
    """
    from sslops.artifacts import META, read_meta

    path = Path(path)
    if not (path.is_dir() and (path / BUNDLE_DIR).is_dir()):
        return verify_bundle(path, public_key)
    result = verify_bundle(path / BUNDLE_DIR, public_key, known=True)
    packed_path = path / ZIP_NAME
    if packed_path.is_file():
        packed = verify_bundle(packed_path, public_key, known=True)
        if packed.get("unreadable"):  # already named: "bundle.zip is damaged (...)"
            result["problems"] += packed["problems"]
        else:
            result["problems"] += [f"{ZIP_NAME}: {p}" for p in packed["problems"]]
            if _manifest_bytes(packed_path) != _manifest_bytes(path / BUNDLE_DIR):
                result["problems"].append(
                    f"{ZIP_NAME} holds another bundle than {BUNDLE_DIR}/ (manifest.json differs)"
                )
    else:
        result["problems"].append(f"{ZIP_NAME} is missing (the audit stage writes it)")
    try:
        read_meta(path, "audit")
    except ArtifactError as exc:
        result["problems"].append(str(exc))
    for copy in sorted(p for p in path.iterdir() if p.is_file() and p.name not in {META, ZIP_NAME}):
        original = path / BUNDLE_DIR / copy.name
        if not original.is_file() or sha256_file(copy) != sha256_file(original):
            result["problems"].append(f"{copy.name} differs from {BUNDLE_DIR}/{copy.name}")
    return result


def bundle_manifest_sha256(path: Path) -> str:
    """The sha256 of the manifest of a bundle folder, .zip or audit folder (its identity, as
    the registry and attestations name it)."""
    root = bundle_root(Path(path))
    data = _manifest_bytes(root)
    if data is None:
        raise ArtifactError(f"{path} holds no readable {MANIFEST}: expected a bundle folder, "
                            f"{ZIP_NAME} or the audit artifact folder")  # fmt: skip
    return hashlib.sha256(data).hexdigest()


def _manifest_bytes(bundle: Path) -> bytes | None:
    try:
        with BundleFiles(bundle) as files:
            return files.read(MANIFEST)
    except (DamagedFile, KeyError, OSError):
        return None
