"""The seals of a bundle (manifest.json, signature.json) on a small hand-built bundle.

Each test here kills a mutant of ``sslops.audit.bundle`` / ``keys`` that the tests on the
session's real bundle (tests/test_audit.py, test_signing.py, test_fuzz_audit.py) left alive:
a check that could be dropped without any of them noticing. The bundle is three small files
sealed and signed as the audit stage seals them, so every test runs in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sslops import __version__
from sslops.audit.bundle import (
    BUNDLE_FORMAT,
    MANIFEST,
    SIGNATURE,
    _digest,
    canonical_json,
    sign_manifest,
    verify_bundle,
    verify_path,
    write_manifest,
    write_zip,
)
from sslops.errors import ArtifactError

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"sslops bundle seals").digest())


def _sealed(folder: Path, key: Ed25519PrivateKey | None = KEY) -> Path:
    folder.mkdir()
    (folder / "model_card.md").write_text("# Model card\n", encoding="utf-8")
    (folder / "gates.json").write_bytes(canonical_json({"passed": True}))
    (folder / "figures").mkdir()
    (folder / "figures" / "gaps.png").write_bytes(b"\x89PNG not really")
    write_manifest(folder, key)
    if key is not None:
        sign_manifest(folder, key)
    return folder


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    folder = _sealed(tmp_path / "bundle")
    assert verify_bundle(folder, KEY.public_key())["problems"] == []
    return folder


@pytest.mark.parametrize("seal", [MANIFEST, SIGNATURE])
def test_a_seal_rewritten_with_other_whitespace_is_caught(bundle: Path, seal: str) -> None:
    """The same JSON content in another layout (indent 4, no trailing newline): the digest of
    the content still matches, and for signature.json the signature still verifies over the
    signed fields, so only the byte comparison with the canonical form names it."""
    path = bundle / seal
    path.write_text(json.dumps(json.loads(path.read_bytes()), indent=4), encoding="utf-8")
    problems = verify_bundle(bundle, KEY.public_key())["problems"]
    assert f"{seal} was modified: not in the canonical form it was written in" in problems


def test_an_unsigned_manifest_edited_without_its_digest_is_caught(tmp_path: Path) -> None:
    """An unsigned bundle has only the manifest's own digest against an accidental edit: a
    file's listed hash changed (written back in canonical form, the digest left) is named."""
    folder = _sealed(tmp_path / "bundle", key=None)
    assert verify_bundle(folder)["problems"] == []
    (folder / "gates.json").write_bytes(canonical_json({"passed": False}))
    manifest = json.loads((folder / MANIFEST).read_bytes())
    edited = (folder / "gates.json").read_bytes()
    manifest["files"]["gates.json"] = hashlib.sha256(edited).hexdigest()
    (folder / MANIFEST).write_bytes(canonical_json(manifest))
    problems = verify_bundle(folder)["problems"]
    assert problems == [f"{MANIFEST} was modified: its digest does not match its content"]


def _reseal(folder: Path, **changes: object) -> None:
    """The manifest with ``changes``, its digest recomputed (unsigned: nothing else to redo)."""
    manifest = json.loads((folder / MANIFEST).read_bytes())
    body = {k: v for k, v in manifest.items() if k != "digest"} | changes
    (folder / MANIFEST).write_bytes(canonical_json({**body, "digest": _digest(body)}))


@pytest.mark.parametrize("found", [0, -1, True])
def test_a_bundle_format_below_the_first_or_a_boolean_is_not_read(
    tmp_path: Path, found: object
) -> None:
    """tests/test_upgrade.py covers a newer format, text and null; these are the other edges
    (``True == 1`` in Python, so a boolean passes a plain range test)."""
    folder = _sealed(tmp_path / "bundle", key=None)
    _reseal(folder, bundle_format=found)
    assert verify_bundle(folder)["problems"] == [
        f"{MANIFEST}: bundle_format {found!r} is not one sslops {__version__} reads (1 to "
        f"{BUNDLE_FORMAT}); "
        "verify it with the sslops version that wrote it or a newer one"
    ]
    _reseal(folder, bundle_format=1)
    assert verify_bundle(folder)["problems"] == []


@pytest.mark.parametrize("name", ["/model_card.md", "figures\\gaps.png", "C:model_card.md",
                                  "figures/../../model_card.md"])  # fmt: skip
def test_a_zip_member_an_extractor_would_place_elsewhere_is_refused(
    bundle: Path, tmp_path: Path, name: str
) -> None:
    """An absolute name, a Windows separator or drive, a climb out of the folder: each is
    refused before anything is read (tests/test_audit.py covers '../' at the start)."""
    packed = tmp_path / "bundle.zip"
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr(zipfile.ZipInfo(name), b"another card")
        for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
            archive.writestr(path.relative_to(bundle).as_posix(), path.read_bytes())
    assert zipfile.ZipFile(packed).namelist()[0] == name
    assert verify_bundle(packed, KEY.public_key())["problems"] == [
        f"{packed.name} is damaged (member {name!r} would be extracted outside the bundle's folder)"
    ]


def test_an_emptied_bundle_folder_in_an_audit_folder_fails_verification(tmp_path: Path) -> None:
    """Given the audit artifact folder, its bundle/ is known to be a bundle: emptied, it is a
    bundle whose every file is missing (exit 1), not a folder given by mistake (exit 2)."""
    (tmp_path / "audit" / "bundle").mkdir(parents=True)
    problems = verify_path(tmp_path / "audit")["problems"]
    assert problems[:2] == [
        f"{MANIFEST} is missing",
        "bundle.zip is missing (the audit stage writes it)",
    ]
    with pytest.raises(ArtifactError, match="is not an audit bundle"):
        verify_bundle(tmp_path / "audit" / "bundle")


def _audit_folder(bundle: Path, folder: Path) -> Path:
    """An audit artifact folder as the audit stage lays it out: bundle/, bundle.zip, the
    card copied beside them (no meta.json: that problem is named and is not the one tested)."""
    folder.mkdir()
    shutil.copytree(bundle, folder / "bundle")
    write_zip(bundle, folder / "bundle.zip")
    shutil.copy(bundle / "model_card.md", folder / "model_card.md")
    return folder


@pytest.mark.parametrize("change", ["edited", "added"])
def test_a_copy_beside_the_bundle_must_be_the_bundle_s_file(
    bundle: Path, tmp_path: Path, change: str
) -> None:
    """The card copied beside bundle/ is what a reader opens first: edited, or a file added
    there that the bundle does not hold, it is named (not accepted, not a traceback)."""
    folder = _audit_folder(bundle, tmp_path / "audit")
    missing_meta = f"{folder} is not an sslops audit artifact: meta.json is missing"
    assert verify_path(folder, KEY.public_key())["problems"] == [missing_meta]
    name = "model_card.md" if change == "edited" else "notes.md"
    (folder / name).write_text("# Another card\n", encoding="utf-8")
    assert verify_path(folder, KEY.public_key())["problems"] == [
        missing_meta,
        f"{name} differs from bundle/{name}",
    ]
