"""Signing keys: tampering verify must catch, trusted keys with validity windows and
revocation, signing through an external command (HSM/KMS), and where the key is mounted."""

from __future__ import annotations

import base64
import json
import os
import shlex
import struct
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sslops.audit import audit, generate_keypair, load_public_key, verify_bundle
from sslops.audit.bundle import (
    MANIFEST,
    SIGNATURE,
    _digest,
    canonical_json,
    fingerprint,
    load_private_key,
    load_signing_key,
    sign_manifest,
    verify_path,
    write_manifest,
    write_zip,
)
from sslops.audit.keys import CommandSigner, TrustedKeys
from sslops.audit.registry import check_registry, file_bundle
from sslops.cli import main
from sslops.config import Config, SigningConfig
from sslops.errors import ArtifactError, ConfigError
from tests.conftest import ROOT


def _keypair(folder: Path, name: str) -> tuple[Path, Path]:
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    generate_keypair(private, public)
    return private, public


def _private(path: Path) -> Ed25519PrivateKey:
    key = load_private_key(path, "UNUSED", True, "key", "test")
    assert key is not None
    return key


def _bundle(folder: Path, key: Ed25519PrivateKey | None, created: datetime | None = None) -> Path:
    """A small bundle sealed like the audit stage seals one, created at ``created``."""
    folder.mkdir(parents=True)
    (folder / "lineage.json").write_text("{}\n")
    (folder / "evidence").mkdir()
    (folder / "evidence" / "roc.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (folder / "model.onnx").write_bytes(b"onnx" * 64)
    write_manifest(folder, key)
    if created is not None:  # as if sealed then: the signature covers this date
        manifest = json.loads((folder / MANIFEST).read_bytes())
        body = {k: v for k, v in manifest.items() if k != "digest"}
        body["created"] = created.isoformat(timespec="seconds")
        (folder / MANIFEST).write_bytes(canonical_json({**body, "digest": _digest(body)}))
    if key is not None:
        sign_manifest(folder, key)
    return folder


def _reseal_manifest(bundle: Path, edit: Any) -> None:
    manifest = json.loads((bundle / MANIFEST).read_bytes())
    body = {k: v for k, v in manifest.items() if k != "digest"}
    edit(body)
    (bundle / MANIFEST).write_bytes(canonical_json({**body, "digest": _digest(body)}))


@pytest.fixture()
def issuer(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    private, public = _keypair(tmp_path, "issuer")
    return _private(private), public


# --- tampering verify must catch ------------------------------------------------------------


def test_an_intact_bundle_verifies(issuer, tmp_path: Path) -> None:
    key, public = issuer
    bundle = _bundle(tmp_path / "b", key)
    assert verify_bundle(bundle, load_public_key(public))["problems"] == []
    write_zip(bundle, tmp_path / "b.zip")
    assert verify_bundle(tmp_path / "b.zip", load_public_key(public))["problems"] == []


def test_a_fifo_added_to_a_bundle_folder_is_named_and_never_read(issuer, tmp_path: Path) -> None:
    """A FIFO (or socket, device) was neither listed nor flagged: a bundle with one added
    verified as intact; one put in a listed file's place would block a reader."""
    key, public = issuer
    bundle = _bundle(tmp_path / "b", key)
    os.mkfifo(bundle / "evidence" / "pipe")
    assert verify_bundle(bundle, load_public_key(public))["problems"] == [
        "evidence/pipe is not a regular file (a FIFO, socket or device); a bundle holds "
        "regular files only"
    ]
    (bundle / "evidence" / "pipe").unlink()
    (bundle / "model.onnx").unlink()
    os.mkfifo(bundle / "model.onnx")  # returns, naming it, instead of blocking on a read
    assert [p.split(" ")[0] for p in verify_bundle(bundle)["problems"]] == ["model.onnx"]


def _patch_zip_headers(archive: Path, out: Path, offsets: dict[bytes, int], value: Any) -> None:
    """Set a 2-byte field (at ``offsets[signature]``) of every local and central header."""
    raw = bytearray(archive.read_bytes())
    for signature, offset in offsets.items():
        at = 0
        while (at := raw.find(signature, at)) >= 0:
            old = struct.unpack("<H", raw[at + offset : at + offset + 2])[0]
            raw[at + offset : at + offset + 2] = struct.pack("<H", value(old))
            at += 4
    out.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("offsets", "value", "named"),
    [
        ({b"PK\x03\x04": 6, b"PK\x01\x02": 8}, lambda flags: flags | 1, "is encrypted"),
        ({b"PK\x03\x04": 8, b"PK\x01\x02": 10}, lambda _: 99, "uses compression method 99"),
    ],
    ids=["encrypted", "unknown-method"],
)
def test_an_unreadable_zip_member_is_a_problem_not_a_traceback(
    issuer, tmp_path: Path, capsys, offsets: dict[bytes, int], value: Any, named: str
) -> None:
    """zipfile raises RuntimeError (a password is needed) or NotImplementedError (AES,
    method 99) for such members; verify ended in a traceback instead of exit 1."""
    key, public = issuer
    write_zip(_bundle(tmp_path / "b", key), tmp_path / "b.zip")
    bad = tmp_path / "bad.zip"
    _patch_zip_headers(tmp_path / "b.zip", bad, offsets, value)
    problems = verify_bundle(bad, load_public_key(public))["problems"]
    assert len(problems) == 1 and problems[0].startswith("bad.zip is damaged (member '")
    assert named in problems[0]
    assert main(["audit", "verify", str(bad), "--public-key", str(public)]) == 1
    assert named in capsys.readouterr().err


def test_a_signature_record_claiming_another_algorithm_fails(issuer, tmp_path: Path) -> None:
    """The claimed algorithm was never read: a record saying "none" (validly signed) passed."""
    key, public = issuer
    bundle = _bundle(tmp_path / "b", key)
    record = json.loads((bundle / SIGNATURE).read_bytes())
    signed = {**record["signed"], "algorithm": "none"}
    forged = {"signed": signed, "signature": base64.b64encode(key.sign(canonical_json(signed)))}
    forged["signature"] = forged["signature"].decode()
    (bundle / SIGNATURE).write_bytes(canonical_json(forged))
    for trust in (load_public_key(public), None):
        assert verify_bundle(bundle, trust)["problems"] == [
            "signature.json: algorithm 'none' is not Ed25519, the only one sslops signs with or "
            "accepts"
        ]


def test_a_manifest_naming_another_algorithm_fails(issuer, tmp_path: Path) -> None:
    key, public = issuer
    bundle = _bundle(tmp_path / "b", key)
    _reseal_manifest(bundle, lambda body: body["signature"].update(algorithm="HMAC-SHA256"))
    sign_manifest(bundle, key)  # the signature covers the changed manifest
    assert verify_bundle(bundle, load_public_key(public))["problems"] == [
        "manifest.json names signature algorithm 'HMAC-SHA256'; sslops signs with Ed25519 only"
    ]


def test_a_bundle_signed_again_with_another_key_fails_even_integrity_only(
    issuer, tmp_path: Path, capsys
) -> None:
    """The manifest names the key it was sealed for; signature.json replaced by one made
    with another key over the same manifest passed --integrity-only, naming that key."""
    key, _ = issuer
    bundle = _bundle(tmp_path / "b", key)
    other = Ed25519PrivateKey.generate()
    sign_manifest(bundle, other)
    problems = verify_bundle(bundle)["problems"]
    assert problems == [
        f"manifest.json names signing key {fingerprint(key.public_key())}, but signature.json "
        f"is signed with {fingerprint(other.public_key())} (re-signed with another key)"
    ]
    assert main(["audit", "verify", str(bundle), "--integrity-only"]) == 1
    assert "re-signed with another key" in capsys.readouterr().err


# --- trusted keys: validity windows, retirement, revocation ----------------------------------


def _trusted(folder: Path, *entries: dict[str, Any]) -> Path:
    path = folder / "trusted-keys.json"
    path.write_text(json.dumps({"trusted_keys": 1, "keys": list(entries)}))
    return path


NOW = datetime.now(UTC)


def _day(days: int) -> str:
    return (NOW + timedelta(days=days)).date().isoformat()


def test_a_retired_key_verifies_what_it_signed_in_its_window_and_nothing_later(
    tmp_path: Path, capsys
) -> None:
    """Rotation: the 2025 key's bundles keep verifying after the new key took over; a
    bundle signed with the retired key after its window (a key that should be out of use)
    fails, naming the key and its window."""
    old_private, old_public = _keypair(tmp_path, "issuer-old")
    new_private, new_public = _keypair(tmp_path, "issuer-new")
    trusted = _trusted(
        tmp_path,
        {"name": "issuer-old", "public_key_file": old_public.name, "valid_from": _day(-400),
         "valid_until": _day(-30)},
        {"name": "issuer-new", "public_key_file": str(new_public), "valid_from": _day(-30)},
    )  # fmt: skip
    keys = TrustedKeys.load(trusted)
    old, new = _private(old_private), _private(new_private)
    in_window = _bundle(tmp_path / "old", old, created=NOW - timedelta(days=100))
    late = _bundle(tmp_path / "late", old)  # signed now, after the key was retired
    current = _bundle(tmp_path / "new", new)
    result = verify_bundle(in_window, keys)
    assert result["problems"] == [] and result["trusted_key"]["key_name"] == "issuer-old"
    assert verify_bundle(current, keys)["problems"] == []
    (problem,) = verify_bundle(late, keys)["problems"]
    assert problem.startswith("signature.json: signed with key issuer-old on ")
    assert (
        f"outside the window it may sign in ({_day(-400)}T00:00:00+00:00 to {_day(-30)}" in problem
    )
    assert main(["audit", "verify", str(in_window), "--trusted-keys", str(trusted)]) == 0
    out = capsys.readouterr().out
    assert f"Ed25519 key {fingerprint(old.public_key())}" in out
    assert "key issuer-old, valid " in out and "within it" in out
    assert main(["audit", "verify", str(late), "--trusted-keys", str(trusted)]) == 1


def test_a_revoked_key_fails_whatever_date_it_signed_and_unknown_keys_fail(tmp_path: Path) -> None:
    """Compromise: whoever holds the key can date a signature at will, so a bundle dated
    before the revocation fails too; a key not in the file, and an unsigned bundle, fail."""
    private, public = _keypair(tmp_path, "issuer")
    key = _private(private)
    trusted = _trusted(tmp_path, {
        "name": "issuer", "public_key_file": public.name, "valid_from": _day(-400),
        "revoked": _day(-10), "revoked_reason": "key file found on a shared drive",
    })  # fmt: skip
    keys = TrustedKeys.load(trusted)
    backdated = _bundle(tmp_path / "b", key, created=NOW - timedelta(days=200))
    assert verify_bundle(backdated, keys)["problems"] == [
        f"signature.json: signed with key issuer ({fingerprint(key.public_key())}), which was "
        f"revoked on {_day(-10)}T00:00:00+00:00 (key file found on a shared drive): nothing it "
        "signed is trusted, whatever date it carries"
    ]
    stranger = Ed25519PrivateKey.generate()
    (problem,) = verify_bundle(_bundle(tmp_path / "s", stranger), keys)["problems"]
    assert problem == (f"signature.json: signed with key {fingerprint(stranger.public_key())}, "
                       f"which is not in the trusted keys {trusted}")  # fmt: skip
    (problem,) = verify_bundle(_bundle(tmp_path / "u", None), keys)["problems"]
    assert problem.startswith("signature.json is missing: the bundle is not signed")


def test_trusted_keys_reach_the_registry_so_old_filings_are_judged_again(tmp_path: Path) -> None:
    """Filing refuses a bundle by a key not trusted; once a filed bundle's key is revoked,
    `audit list --verify --trusted-keys` names it."""
    private, public = _keypair(tmp_path, "issuer")
    key = _private(private)
    entry = {"name": "issuer", "public_key_file": public.name, "valid_from": _day(-400)}
    registry = tmp_path / "registry"
    bundle = _bundle(tmp_path / "b", key)
    file_bundle(bundle, registry, model="m", public_key=TrustedKeys.load(_trusted(tmp_path, entry)))
    assert check_registry(registry, TrustedKeys.load(_trusted(tmp_path, entry))) == []
    revoked = TrustedKeys.load(_trusted(tmp_path, {**entry, "revoked": _day(0)}))
    (problem,) = check_registry(registry, revoked)
    assert "which was revoked on" in problem
    assert main(["audit", "list", "--registry", str(registry), "--verify", "--trusted-keys",
                 str(tmp_path / "trusted-keys.json")]) == 1  # fmt: skip
    with pytest.raises(ArtifactError, match="not in the trusted keys"):
        other = _keypair(tmp_path, "other")[1]
        stranger = TrustedKeys.load(_trusted(tmp_path, {**entry, "public_key_file": other.name}))
        file_bundle(_bundle(tmp_path / "c", key), registry, model="m", public_key=stranger)


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"trusted_keys": 1, "keys": []}, 'expected {"trusted_keys": 1, "keys"'),
        ({"trusted_keys": 1, "keys": [{"name": "a", "public_key_file": "issuer.pub.pem"}]},
         "key 1: missing valid_from"),
        ({"trusted_keys": 1, "keys": [{"name": "a", "public_key_file": "issuer.pub.pem",
                                       "valid_from": "2025-01-01", "expires": "2026"}]},
         "key 1: unknown expires"),
        ({"trusted_keys": 1, "keys": [{"name": "a", "public_key_file": "issuer.pub.pem",
                                       "valid_from": "Jan 2025"}]},
         "key 1 (a) valid_from: 'Jan 2025' is not an ISO 8601 date"),
        ({"trusted_keys": 1, "keys": [{"name": "a", "public_key_file": "issuer.pub.pem",
                                       "valid_from": "2025-01-01", "valid_until": "2024-01-01"}]},
         "valid_until is not after valid_from"),
        ({"trusted_keys": 1, "keys": [
            {"name": "a", "public_key_file": "issuer.pub.pem", "valid_from": "2025-01-01"},
            {"name": "b", "public_key_file": "issuer.pub.pem", "valid_from": "2026-01-01"}]},
         "a and b are the same key"),
        ({"trusted_keys": 1, "keys": [{"name": "a", "public_key_file": "gone.pem",
                                       "valid_from": "2025-01-01"}]},
         "key 1 (a): public_key_file "),
    ],
)  # fmt: skip
def test_a_malformed_trusted_keys_file_is_one_clear_error(
    tmp_path: Path, capsys, document: dict[str, Any], named: str
) -> None:
    _keypair(tmp_path, "issuer")
    path = tmp_path / "trusted-keys.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError) as raised:
        TrustedKeys.load(path)
    assert named in str(raised.value)
    assert main(["audit", "verify", str(tmp_path), "--trusted-keys", str(path)]) == 2
    assert named in capsys.readouterr().err


# --- signing through a command: the key stays out of the process -----------------------------

_SIGNER = """\
import base64, sys
from cryptography.hazmat.primitives import serialization
key = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), password=None)
mode = sys.argv[2] if len(sys.argv) > 2 else "sign"
if mode == "fail":
    sys.exit("hsm: slot 0 is locked")
print("not base64" if mode == "garbage" else base64.b64encode(key.sign(sys.stdin.buffer.read())).decode())
"""


def _signer_command(tmp_path: Path, key_file: Path, mode: str = "sign") -> str:
    script = tmp_path / "signer.py"
    script.write_text(_SIGNER)
    return shlex.join([sys.executable, str(script), str(key_file), mode])


def test_a_command_signs_the_bundle_and_it_verifies_with_the_public_key(tmp_path: Path) -> None:
    private, public = _keypair(tmp_path, "hsm")
    signer = load_signing_key(
        SigningConfig(command=_signer_command(tmp_path, private), public_key_file=str(public))
    )
    assert isinstance(signer, CommandSigner)
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "model.onnx").write_bytes(b"onnx")
    write_manifest(bundle, signer)
    sign_manifest(bundle, signer)
    result = verify_bundle(bundle, load_public_key(public))
    assert result["problems"] == [] and result["key_fingerprint"] == fingerprint(
        load_public_key(public)
    )


@pytest.mark.parametrize(
    ("mode", "wrong_key", "named"),
    [
        ("fail", False, "failed (exit 1): hsm: slot 0 is locked"),
        ("garbage", False, "printed no Ed25519 signature (expected 64 bytes, base64, on stdout)"),
        ("sign", True, "returned a signature that does not verify with "
                       "audit.signing.public_key_file"),
    ],
)  # fmt: skip
def test_a_signing_command_that_fails_or_signs_with_another_key_stops_the_audit(
    tmp_path: Path, mode: str, wrong_key: bool, named: str
) -> None:
    private, public = _keypair(tmp_path, "hsm")
    if wrong_key:
        public = _keypair(tmp_path, "other")[1]
    signer = CommandSigner(_signer_command(tmp_path, private, mode), public)
    with pytest.raises(ConfigError) as raised:
        signer.sign(b"record")
    assert named in str(raised.value)


def test_a_signing_command_needs_its_public_key_and_excludes_a_key_file(tmp_path: Path) -> None:
    private, public = _keypair(tmp_path, "hsm")
    command = _signer_command(tmp_path, private)
    with pytest.raises(ConfigError, match=r"needs audit\.signing\.public_key_file"):
        load_signing_key(SigningConfig(command=command))
    with pytest.raises(ConfigError, match=r"command and audit\.signing\.key_file are both set"):
        load_signing_key(SigningConfig(command=command, public_key_file=str(public),
                                       key_file=str(private)))  # fmt: skip
    with pytest.raises(ConfigError, match="'no-such-signer' is not an executable"):
        load_signing_key(SigningConfig(command="no-such-signer --slot 0",
                                       public_key_file=str(public)))  # fmt: skip


def test_the_audit_stage_signs_through_the_command_without_the_key_in_its_environment(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    private, public = _keypair(tmp_path, "hsm")
    monkeypatch.delenv("SSLOPS_SIGNING_KEY", raising=False)
    raw = small_config.model_dump(mode="json")
    raw["audit"]["signing"] = {"command": _signer_command(tmp_path, private),
                               "public_key_file": str(public), "required": True}  # fmt: skip
    raw["audit"]["registry"] = str(tmp_path / "registry")
    cfg = Config.model_validate(raw)
    upstream = {s: stage_artifacts[s] for s in ("prepare", "pretrain", "finetune", "evaluate",
                                                  "export")}  # fmt: skip
    out = audit(cfg, upstream, tmp_path / "audit")
    result = verify_path(out, load_public_key(public))
    assert result["problems"] == [] and result["signed"]
    manifest = json.loads((out / "bundle" / MANIFEST).read_bytes())
    assert manifest["signature"]["key_fingerprint"] == fingerprint(load_public_key(public))
    # The stage files the bundle and signs the index entry with the same signer.
    (entry,) = json.loads(
        next((tmp_path / "registry" / "models").glob("*/index.json")).read_text()
    )["entries"]
    assert entry["filer_key"] == fingerprint(load_public_key(public))
    assert check_registry(tmp_path / "registry", load_public_key(public)) == []


# --- where the signing key is mounted --------------------------------------------------------


def test_the_helm_test_pod_mounts_no_secret() -> None:
    """The test pod mounted the signing-key Secret to check its size; verifying needs only
    the public key, so no pod besides the audit task should see the private key."""
    pytest.importorskip("helm_python")
    from sslops.k8s.render import render_helm

    chart = ROOT / "helm" / "sslops"
    for values in ([], [chart / "values-onprem.yaml"]):
        documents = [d for d in yaml.safe_load_all(render_helm(chart, values)) if d]
        (pod,) = [d for d in documents if d["kind"] == "Pod"]
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert [v for v in pod["spec"].get("volumes", []) if "secret" in v] == []
        text = yaml.safe_dump(pod)
        assert "secretKeyRef" not in text and "secretRef" not in text
        assert "sslops-signing-key" not in text


# --- signed filing entries in the registry ----------------------------------------------------


def _rechain(index_path: Path, edit: Any) -> None:
    """Edit an index as someone who can write the registry but holds no key would: change
    the entries, then recompute every entry's link so the chain of digests holds again."""
    from sslops.audit.registry import entry_digest

    index = json.loads(index_path.read_text())
    entries = edit(index["entries"])
    for gone in {e["bundle"] for e in index["entries"]} - {e["bundle"] for e in entries}:
        (index_path.parents[2] / gone).unlink()  # its bundle too: no orphan left to find
    previous = None
    for entry in entries:  # a signed record's own link cannot be redone without the key
        entry["previous"] = previous
        previous = entry_digest(entry)
    index["entries"] = entries
    index_path.write_text(json.dumps(index, indent=2) + "\n")


def _three_filings(tmp_path: Path, key: Ed25519PrivateKey | None) -> Path:
    registry = tmp_path / "registry"
    issuer = Ed25519PrivateKey.generate()
    for n in range(3):
        bundle = _bundle(tmp_path / f"b{n}", issuer)
        (bundle / "lineage.json").write_text(json.dumps({"run": n}) + "\n")
        write_manifest(bundle, issuer)
        sign_manifest(bundle, issuer)
        file_bundle(bundle, registry, model="m", key=key)
    return registry / "models" / "m" / "index.json"


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda e: [e[1], e[2]], "entry 1: the filing was signed for another place"),
        (lambda e: [e[1], e[0], e[2]], "entry 1: the filing was signed for another place"),
        (lambda e: [e[0], {**e[1], "filed": "2020-01-01T00:00:00+00:00"}, e[2]],
         "entry 2: filed differ from the signed filing"),
    ],
    ids=["first-removed", "reordered", "date-changed"],
)  # fmt: skip
def test_signed_filings_show_an_entry_removed_reordered_or_changed_and_rechained(
    tmp_path: Path, edit: Any, named: str
) -> None:
    """Without signatures, the chain is not keyed: removing or reordering filings and
    recomputing every digest after them left `list --verify` clean (the known gap). Each
    signed filing names the entry before it, so the rewrite is found."""
    unsigned = _three_filings(tmp_path / "unsigned", None)
    _rechain(unsigned, edit)
    assert check_registry(unsigned.parents[2]) == []
    index = _three_filings(tmp_path / "signed", Ed25519PrivateKey.generate())
    assert check_registry(index.parents[2]) == []
    assert all("record" in e and e["filer_key"] for e in json.loads(index.read_text())["entries"])
    _rechain(index, edit)
    problems = check_registry(index.parents[2])
    assert any(named in p for p in problems), problems


def _last_entry_edited(index: Path, edit: Any) -> None:
    """Edit the index's last entry in place (no entry after it: the chain still holds)."""
    index_data = json.loads(index.read_text())
    edit(index_data["entries"][-1])
    index.write_text(json.dumps(index_data, indent=2) + "\n")


def test_a_signed_filing_names_its_filer_key_and_a_broken_signature(tmp_path: Path) -> None:
    """The entry's filer_key must be the key its record was signed with, and a record whose
    signature no longer verifies is named as such, not as fields that differ (left by the
    mutation review: dropping either check passed every test)."""
    index = _three_filings(tmp_path / "key", Ed25519PrivateKey.generate())
    other = fingerprint(Ed25519PrivateKey.generate().public_key())
    _last_entry_edited(index, lambda entry: entry.update(filer_key=other))
    assert check_registry(index.parents[2]) == [
        "models/m/index.json entry 3: filer_key differ from the signed filing"
    ]
    index = _three_filings(tmp_path / "date", Ed25519PrivateKey.generate())
    moved = "2020-01-01T00:00:00+00:00"  # changed in the entry and its record alike, unsigned

    def backdate(entry: dict[str, Any]) -> None:
        entry["filed"] = entry["record"]["signed"]["filed"] = moved

    _last_entry_edited(index, backdate)
    assert check_registry(index.parents[2]) == [
        "models/m/index.json entry 3 (filing): the signature does not verify with its embedded "
        "public key"
    ]


def test_cli_file_signs_the_entry_with_key_file(issuer, tmp_path: Path, capsys) -> None:
    key, public = issuer
    filer_private, filer_public = _keypair(tmp_path, "registrar")
    bundle = _bundle(tmp_path / "b", key)
    registry = tmp_path / "registry"
    assert main(["audit", "file", str(bundle), "--registry", str(registry), "--model", "m",
                 "--public-key", str(public), "--key-file", str(filer_private)]) == 0  # fmt: skip
    assert f"entry signed with key {fingerprint(load_public_key(filer_public))}" in (
        capsys.readouterr().out
    )
    assert main(["audit", "list", "--registry", str(registry), "--verify"]) == 0


def test_an_attestation_file_replaced_by_a_link_or_a_fifo_added_fails(tmp_path: Path) -> None:
    """Verify-attestation followed links (and ignored FIFOs): attestation.json moved out and
    linked back verified, though its target can change after verification."""
    import hashlib

    from sslops.audit.attestation import (
        ATTESTATION,
        ATTESTATION_SIGNATURE,
        SUMMARY,
        verify_attestation,
    )
    from sslops.audit.bundle import signature_record

    key = Ed25519PrivateKey.generate()
    folder = tmp_path / "attestation"
    folder.mkdir()
    (folder / ATTESTATION).write_bytes(canonical_json({"result": "pass"}))
    (folder / SUMMARY).write_text("# Attestation: PASS\n")
    files = {
        n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in (ATTESTATION, SUMMARY)
    }
    record = signature_record(key, {"signed_files": files})
    (folder / ATTESTATION_SIGNATURE).write_bytes(canonical_json(record))
    assert verify_attestation(folder, key.public_key())["problems"] == []
    (folder / ATTESTATION).rename(tmp_path / "elsewhere.json")
    (folder / ATTESTATION).symlink_to(tmp_path / "elsewhere.json")
    assert verify_attestation(folder, key.public_key())["problems"] == [
        "attestation.json is a symbolic link; an attestation folder holds regular files only"
    ]
    (folder / ATTESTATION).unlink()
    (tmp_path / "elsewhere.json").rename(folder / ATTESTATION)
    os.mkfifo(folder / "pipe")
    assert verify_attestation(folder, key.public_key())["problems"] == [
        "pipe is not a regular file (a FIFO, socket or device); an attestation folder holds "
        "regular files only"
    ]
