"""Generated damage to a real audit bundle against ``sslops audit verify``.

The bundle is the session's audit artifact (``stage_artifacts``), re-sealed and signed with a
fixed test key. Hypothesis changes it the way a disk, a transfer or a person can: bytes of
``bundle.zip`` flipped, cut, inserted or overwritten; files of the folder emptied, cut,
extended, removed, renamed or replaced by a folder; the fields of ``manifest.json`` and
``signature.json`` replaced by values of any JSON type and written back in canonical form
(as someone editing them with a JSON library would), the manifest's digest recomputed. Verify
must name a problem, never say the bundle is intact, and never raise anything but an
:class:`ArtifactError`; a changed zip that verifies must hold exactly the original members.
``tests/test_audit.py`` flips single bytes of every folder file by hand; these go further.

Derandomized, as the other fuzzers (``SSLOPS_FUZZ_RANDOM=1`` / ``SSLOPS_FUZZ_SCALE``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import example, given
from hypothesis import strategies as st

from sslops.audit.attestation import verify_attestation
from sslops.audit.bundle import (
    canonical_json,
    sign_manifest,
    signature_record,
    verify_bundle,
    write_manifest,
    write_zip,
)
from sslops.cli import main
from sslops.errors import ArtifactError
from tests.fuzzing import JSON, damaged_bytes, fuzz

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"sslops fuzz review").digest())


@pytest.fixture(scope="module")
def sealed(stage_artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signed copy of the session's bundle folder, and its zip beside it (``bundle.zip``)."""
    root = tmp_path_factory.mktemp("fuzz-audit")
    bundle = root / "bundle"
    shutil.copytree(stage_artifacts["audit"] / "bundle", bundle)
    (bundle / "signature.json").unlink(missing_ok=True)
    write_manifest(bundle, KEY)
    sign_manifest(bundle, KEY)
    write_zip(bundle, root / "bundle.zip")
    for path in (bundle, root / "bundle.zip"):
        assert verify_bundle(path, KEY.public_key())["problems"] == []
    return bundle


def zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}


def verified(path: Path, **kwargs: Any) -> list[str]:
    """The problems verify names; a refusal (ArtifactError) is one, any other error fails."""
    try:
        return list(verify_bundle(path, **kwargs)["problems"])
    except ArtifactError as exc:
        return [str(exc)]


def test_a_damaged_zip_is_never_intact_unless_its_members_are(
    sealed: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A byte of the zip's own structure (a timestamp, the 'made by' field) may change without
    changing a member; then verify may say intact, and the members must be the original's."""
    original = (sealed.parent / "bundle.zip").read_bytes()
    members = zip_members(sealed.parent / "bundle.zip")
    target = tmp_path_factory.mktemp("zip") / "bundle.zip"

    @fuzz(60)
    @given(data=damaged_bytes(original, ("flip", "cut", "insert", "overwrite", "drop")))
    def case(data: bytes) -> None:
        target.write_bytes(data)
        problems = verified(target, public_key=KEY.public_key())
        if not problems:
            assert zip_members(target) == members

    case()


def test_a_zip_asking_for_an_unknown_zip_version_is_damaged(sealed: Path, tmp_path: Path) -> None:
    """zipfile raises NotImplementedError for a "version needed to extract" it does not know
    (one byte of the central directory): it escaped verify (found by the fuzz review)."""
    data = (sealed.parent / "bundle.zip").read_bytes()
    at = data.find(b"PK\x01\x02") + 6
    target = tmp_path / "bundle.zip"
    target.write_bytes(data[:at] + b"\x77\x00" + data[at + 2 :])
    assert verify_bundle(target, KEY.public_key())["problems"] == [
        "bundle.zip is damaged (not a readable zip archive: zip file version 11.9)"
    ]


def test_a_damaged_bundle_folder_is_never_intact(sealed: Path) -> None:
    names = sorted(p.relative_to(sealed).as_posix() for p in sealed.rglob("*") if p.is_file())

    @fuzz(60)
    @given(
        name=st.sampled_from(names),
        kind=st.sampled_from(["empty", "cut", "append", "remove", "rename", "folder", "add"]),
        at=st.integers(0, 10**6),
    )
    def case(name: str, kind: str, at: int) -> None:
        path = sealed / name
        data = path.read_bytes()
        moved = path.with_name(path.name + ".orig")
        try:
            if kind == "empty":
                path.write_bytes(b"")
            elif kind == "cut":
                path.write_bytes(data[: at % max(1, len(data))])
            elif kind == "append":
                path.write_bytes(data + b"\n")
            elif kind in ("remove", "rename", "folder"):
                path.rename(moved)
                if kind == "folder":
                    path.mkdir()
            else:
                (path.parent / f"added-{at}.json").write_text("{}")
            for key in (KEY.public_key(), None):
                assert verified(sealed, public_key=key), (name, kind)
        finally:
            if path.is_dir():
                path.rmdir()
            if moved.exists():
                moved.replace(path)
            path.write_bytes(data)
            for extra in path.parent.glob("added-*.json"):
                extra.unlink()

    case()
    assert verified(sealed, public_key=KEY.public_key()) == []


@st.composite
def edited_seal(draw: st.DrawFn, bundle: Path) -> tuple[str, bytes]:
    """manifest.json or signature.json with one field replaced or removed, written back in
    canonical form; an edited manifest gets the digest of its new body."""
    name = draw(st.sampled_from(["manifest.json", "signature.json"]))
    obj: Any = json.loads((bundle / name).read_bytes())
    if draw(st.integers(0, 9)) == 0:
        obj = draw(JSON)  # the whole document
    else:
        node, key = obj, None
        while isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node)))
            if not isinstance(node[key], dict) or not node[key]:
                break
            node = node[key]
        if isinstance(node, dict):
            key = key if key in node else draw(st.sampled_from([*sorted(node), "extra"]))
            if draw(st.integers(0, 3)) == 0:
                node.pop(key, None)
            else:
                node[key] = draw(JSON)
    if name == "manifest.json" and isinstance(obj, dict):
        body = {k: v for k, v in obj.items() if k != "digest"}
        obj["digest"] = hashlib.sha256(canonical_json(body)).hexdigest()
    return name, canonical_json(obj)


def test_edited_seal_fields_are_never_intact(sealed: Path) -> None:
    @fuzz(80)
    @given(edit=edited_seal(sealed))
    @example(edit=("signature.json", canonical_json({"signed": [1], "signature": "x"})))
    @example(edit=("signature.json", canonical_json("signed")))
    def case(edit: tuple[str, bytes]) -> None:
        name, data = edit
        path = sealed / name
        original = path.read_bytes()
        if data == original:
            return
        path.write_bytes(data)
        try:
            for key in (KEY.public_key(), None):
                assert verified(sealed, public_key=key), (name, data)
        finally:
            path.write_bytes(original)

    case()


def test_a_signature_whose_signed_fields_are_not_a_mapping_fails_verification(
    sealed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was ``AttributeError: 'list' object has no attribute 'get'`` from verify (found by the
    fuzz review)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(sealed, bundle)
    for signed in ([1], "signed", 7):
        record = {"signed": signed, "signature": base64.b64encode(b"x" * 64).decode()}
        (bundle / "signature.json").write_bytes(canonical_json(record))
        assert verify_bundle(bundle, KEY.public_key())["problems"] == [
            "signature.json was modified: its fields are unreadable"
        ]
        assert main(["audit", "verify", str(bundle), "--integrity-only"]) == 1
        assert capsys.readouterr().err.strip() == (
            f"error: {bundle} failed verification (1 problem): signature.json was modified: "
            "its fields are unreadable"
        )


def test_a_self_signed_record_without_the_manifest_digest_fails_verification(
    sealed: Path, tmp_path: Path
) -> None:
    """Anyone may sign a record with a key of their own: one that names no manifest_sha256
    was ``KeyError: 'manifest_sha256'`` with --integrity-only (found by the fuzz review)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(sealed, bundle)
    other = Ed25519PrivateKey.generate()
    for fields in ({"signed_file": "manifest.json"}, {"manifest_sha256": 5}):
        (bundle / "signature.json").write_bytes(canonical_json(signature_record(other, fields)))
        assert verify_bundle(bundle)["problems"] == [
            "signature.json was modified: it names no manifest_sha256 of manifest.json"
        ]


def test_a_field_beside_the_signed_ones_fails_verification(sealed: Path, tmp_path: Path) -> None:
    """signature.json with a field its signature does not cover (``"approved_by": "CFO"``)
    verified as intact (found by the fuzz review)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(sealed, bundle)
    record = json.loads((bundle / "signature.json").read_bytes())
    (bundle / "signature.json").write_bytes(canonical_json({**record, "approved_by": "CFO"}))
    for key in (KEY.public_key(), None):
        assert verify_bundle(bundle, key)["problems"] == [
            "signature.json was modified: it holds 'approved_by' besides the signed fields and "
            "their signature"
        ]


@pytest.mark.parametrize(
    "body", [b"[1]", b"not json", b'{"verifier": 3}', b'{"bundle": []}', b"\xff"]
)
def test_a_signed_attestation_that_is_no_attestation_record_fails_verification(
    body: bytes, tmp_path: Path
) -> None:
    """An attestation signed (by any key: --integrity-only) over an attestation.json that is
    not a JSON object ended in AttributeError / JSONDecodeError / UnicodeDecodeError (found
    by the fuzz review)."""
    (tmp_path / "attestation.json").write_bytes(body)
    (tmp_path / "attestation.md").write_text("x", encoding="utf-8")
    files = {n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest()
             for n in ("attestation.json", "attestation.md")}  # fmt: skip
    record = signature_record(KEY, {"signed_files": files})
    (tmp_path / "attestation.sig.json").write_bytes(canonical_json(record))
    for key in (KEY.public_key(), None):
        assert verify_attestation(tmp_path, key)["problems"] == [
            "attestation.json is not an attestation record (expected a JSON object as sslops "
            "audit reproduce writes)"
        ]
