"""Generated damage to an audit registry's own files against ``sslops audit list``,
``checkpoint`` and ``reject``, and what ``predict --registry`` and ``registry:latest`` read.

The registry holds one small signed bundle, filed and approved, and a checkpoint taken then.
Hypothesis changes ``models/<model>/index.json``, ``registry.json`` or the checkpoint: bytes
flipped, cut or inserted; a field at any depth replaced by a value of any JSON type or by
an odd literal (a 5000-digit number, 1e999, NaN, nesting deeper than Python's recursion
limit), or removed; the whole document replaced; index entries duplicated, reordered,
removed or joined by a non-object. Each command ends in a result or in one error line
(exit 2; exit 1 with ``--verify``: a failed verification), never a traceback; and an index
whose entries changed never verifies against the checkpoint (its head digest, and the chain
of digests before it, cover every entry).

Derandomized, as the other fuzzers (``SSLOPS_FUZZ_RANDOM=1`` / ``SSLOPS_FUZZ_SCALE``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import example, given
from hypothesis import strategies as st

from sslops.audit.bundle import (
    canonical_json,
    fingerprint,
    sign_manifest,
    signature_record,
    write_manifest,
)
from sslops.audit.registry import (
    approval_of,
    check_registry,
    decide,
    entry_digest,
    file_bundle,
    latest_bundle,
)
from sslops.cli import main
from sslops.errors import ArtifactError
from tests.fuzzing import JSON, damaged_bytes, edited_json, fuzz

ISSUER = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"sslops registry fuzz").digest())
APPROVER = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"sslops approver fuzz").digest())
ONNX = b"not really onnx: the registry only records its sha256"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with one filed, approved bundle (a small hand-made one: filing reads no
    more than the manifest); ``checkpoint.json`` and ``reviewer.pem`` beside it."""
    root = tmp_path_factory.mktemp("fuzz-registry")
    bundle = root / "bundle"
    bundle.mkdir()
    (bundle / "model.onnx").write_bytes(ONNX)
    (bundle / "gates.json").write_text(json.dumps({"overall": "passed", "model": "ssl"}))
    write_manifest(bundle, ISSUER)
    sign_manifest(bundle, ISSUER)
    filed = file_bundle(bundle, root / "registry", model="income")
    decide(root / "registry", filed["manifest_sha256"], "approved", APPROVER, by="A. Reviewer")
    assert main(["audit", "checkpoint", "--registry", str(root / "registry"),
                 "--out", str(root / "checkpoint.json")]) == 0  # fmt: skip
    other = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"reviewer").digest())
    (root / "reviewer.pem").write_bytes(_pem(other))
    return root / "registry"


def _pem(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _index(registry: Path) -> Path:
    return registry / "models" / "income" / "index.json"


@st.composite
def damaged_registry(draw: st.DrawFn, registry: Path) -> tuple[str, bytes]:
    """(which file, its new bytes)."""
    target = draw(st.sampled_from(["index", "index", "index", "marker", "checkpoint"]))
    path = {"index": _index(registry), "marker": registry / "registry.json",
            "checkpoint": registry.parent / "checkpoint.json"}[target]  # fmt: skip
    data = path.read_bytes()
    kind = draw(st.sampled_from(["bytes", "json", "json", "entries"]))
    if kind == "bytes":
        return target, draw(damaged_bytes(data, ("flip", "cut", "insert", "overwrite", "drop")))
    if kind == "json" or target != "index":
        return target, draw(edited_json(json.loads(data)))
    index = json.loads(data)
    entries = index["entries"]
    change = draw(st.sampled_from(["duplicate", "reorder", "remove", "insert"]))
    at = draw(st.integers(0, len(entries) - 1))
    if change == "duplicate":
        entries.insert(draw(st.integers(0, len(entries))), entries[at])
    elif change == "reorder":
        entries.reverse()
    elif change == "remove":
        del entries[at]
    else:
        entries.insert(at, draw(JSON))
    return target, json.dumps(index, indent=2).encode()


def _entries(data: bytes) -> Any:
    """The index's entries as the registry's digests see them (NaN as null); None when the
    bytes hold no readable index."""
    try:
        index = json.loads(data)
        return canonical_json(index["entries"]) if isinstance(index, dict) else None
    except (ValueError, RecursionError, KeyError):
        return None


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and stderr of the command; its stderr ends in one error line when it
    failed, and is that line alone when the input was refused (exit 2)."""
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert status in (0, 1, 2), (argv, status, err)
    if status == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    if status == 1:
        assert lines and lines[-1].startswith("error: "), (argv, err)
    return status, err


def test_damaged_registry_files_are_read_or_refused_in_one_error(
    registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg, checkpoint = str(registry), str(registry.parent / "checkpoint.json")
    files = [_index(registry), registry / "registry.json", registry.parent / "checkpoint.json"]
    originals = {path: path.read_bytes() for path in files}
    sha = json.loads(originals[_index(registry)])["entries"][0]["manifest_sha256"]
    onnx = hashlib.sha256(ONNX).hexdigest()

    @fuzz(60)
    @given(damage=damaged_registry(registry), command=st.integers(0, 4))
    @example(damage=("index", b'{"registry_format": 1, "model": "income", "entries": [7]}'),
             command=0)  # fmt: skip
    @example(damage=("marker", b'{"registry_format": ' + b"9" * 5000 + b"}"), command=0)
    def case(damage: tuple[str, bytes], command: int) -> None:
        target, data = damage
        path = files[["index", "marker", "checkpoint"].index(target)]
        path.write_bytes(data)
        try:
            _run(["audit", "list", "--registry", reg, "--json"], capsys)
            status, _ = _run(["audit", "list", "--registry", reg, "--checkpoint", checkpoint],
                             capsys)  # fmt: skip
            if target == "index" and _entries(data) != _entries(originals[path]):
                assert status != 0, data  # an entry changed, removed, added or moved
            if command == 0:
                _run(["audit", "checkpoint", "--registry", reg], capsys)
            elif command == 1:
                _run(["audit", "reject", sha[:12], "--registry", reg, "--by", "B. Reviewer",
                      "--key-file", str(registry.parent / "reviewer.pem")], capsys)  # fmt: skip
            elif command == 2:
                try:
                    approved = approval_of(registry, onnx)
                except ArtifactError:
                    pass
                else:  # only the approval made and the index as it was
                    assert approved["bundle_manifest_sha256"] == sha
                    assert _entries(_index(registry).read_bytes()) == _entries(
                        originals[_index(registry)]
                    )
            elif command == 3:
                try:
                    latest = latest_bundle(registry, "income")
                except ArtifactError:
                    pass
                else:
                    assert latest is None or latest.parent == registry / "bundles"
        finally:
            for original_path, original in originals.items():
                original_path.write_bytes(original)

    case()
    assert main(["audit", "list", "--registry", reg, "--checkpoint", checkpoint]) == 0


def _first_entries(registry: Path) -> list[dict[str, Any]]:
    return json.loads(_index(registry).read_bytes())["entries"]


def _without(entry: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != field}


@pytest.mark.parametrize(
    ("change", "problem"),
    [  # each was a traceback from `sslops audit list` (found by the fuzz review)
        (lambda f, d: [7], "entry 1: a JSON int, not an object"),  # AttributeError
        (lambda f, d: [_without(f, "manifest_sha256")],  # KeyError
         "entry 1: manifest_sha256 is not a sha256 (64 lower-case hex digits)"),
        (lambda f, d: [{**f, "manifest_sha256": []}],  # TypeError: unhashable
         "entry 1: manifest_sha256 is not a sha256 (64 lower-case hex digits)"),
        (lambda f, d: [f, _without(d, "by")], "entry 2: by is missing"),  # KeyError
        (lambda f, d: [{**f, "metrics": [1]}], "entry 1: metrics is not an object"),
        (lambda f, d: [{**f, "filed": 5}, d], "entry 1: filed is 5, not a string"),
        (lambda f, d: [{**f, "bundle": "/etc/passwd"}],  # latest_bundle returned /etc/passwd
         "entry 1: bundle is not bundles/<its manifest_sha256>.zip"),
        (lambda f, d: [f, {**d, "decision": "maybe"}],
         "entry 2: decision 'maybe' is not one of approved, rejected"),
    ],
    ids=["not-object", "no-sha", "sha-list", "no-by", "metrics-list", "filed-int", "bundle-path",
         "decision-word"],
)  # fmt: skip
def test_an_index_entry_of_another_shape_is_named(
    registry: Path, change: Any, problem: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    copy = tmp_path / "registry"
    shutil.copytree(registry, copy)
    filing, decision = _first_entries(copy)
    index = _index(copy)
    index.write_text(json.dumps({"registry_format": 1, "model": "income",
                                 "entries": change(filing, decision)}))  # fmt: skip
    assert main(["audit", "list", "--registry", str(copy)]) == 2
    assert capsys.readouterr().err == (
        f"error: {index} {problem}; expected an entry as sslops audit file or approve/reject "
        "writes it\n"
    )
    with pytest.raises(ArtifactError, match="expected an entry as sslops"):
        latest_bundle(copy, "income")


@pytest.mark.parametrize(
    ("name", "text", "why"),
    [
        ("registry.json", '{"registry_format": ' + "9" * 5000 + "}", "a number too long to read"),
        ("registry.json", '{"registry_format": ' + "[" * 3000 + "]" * 3000 + "}",
         "nested too deeply"),
        ("models/income/index.json", "[" * 3000 + "]" * 3000, "nested too deeply"),
    ],
    ids=["long-number", "deep-marker", "deep-index"],
)  # fmt: skip
def test_a_registry_file_json_cannot_hold_is_unreadable(
    registry: Path, name: str, text: str, why: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Were ValueError (int() refuses 4300+ digits) and RecursionError tracebacks (found by
    the fuzz review)."""
    copy = tmp_path / "registry"
    shutil.copytree(registry, copy)
    (copy / name).write_text(text)
    assert main(["audit", "list", "--registry", str(copy)]) == 2
    assert capsys.readouterr().err == f"error: {copy / name}: unreadable ({why})\n"


def test_an_index_of_another_format_is_refused(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was listed (and filed into, and approved in) as if it were format 1."""
    copy = tmp_path / "registry"
    shutil.copytree(registry, copy)
    index = json.loads(_index(copy).read_bytes())
    _index(copy).write_text(json.dumps({**index, "registry_format": 2}))
    assert main(["audit", "list", "--registry", str(copy)]) == 2
    assert capsys.readouterr().err == (
        f"error: {_index(copy)}: registry_format 2; this sslops reads format 1\n"
    )


def test_a_checkpoint_without_its_time_is_refused_before_listing(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was ``KeyError: 'taken'`` after the table was printed (found by the fuzz review)."""
    point = json.loads((registry.parent / "checkpoint.json").read_bytes())
    (tmp_path / "checkpoint.json").write_text(json.dumps(_without(point, "taken")))
    args = ["audit", "list", "--registry", str(registry), "--checkpoint",
            str(tmp_path / "checkpoint.json")]  # fmt: skip
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: checkpoint {tmp_path / 'checkpoint.json'}: not a registry "
                          "checkpoint (expected the JSON `sslops audit checkpoint` writes: "
                          "registry_checkpoint 1, taken, models")  # fmt: skip


def test_a_decision_claiming_another_key_is_named_and_approves_for_none(
    registry: Path, tmp_path: Path
) -> None:
    """An approval's entry naming a trusted approver's key_fingerprint, though another key
    signed it, is found by ``list --verify`` and not taken as that approver's by
    ``predict --registry`` (left by the mutation review: without the check, it was)."""
    copy = tmp_path / "registry"
    shutil.copytree(registry, copy)
    index = json.loads(_index(copy).read_bytes())
    trusted = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"trusted").digest())
    index["entries"][-1]["key_fingerprint"] = fingerprint(trusted.public_key())
    _index(copy).write_text(json.dumps(index))
    problem = "models/income/index.json entry 2: key_fingerprint differ from the signed decision"
    assert check_registry(copy) == [problem]
    with pytest.raises(ArtifactError, match=re.escape(f"does not verify: {problem}")):
        approval_of(copy, hashlib.sha256(ONNX).hexdigest(), [trusted.public_key()])


def test_a_signed_decision_on_a_bundle_not_filed_under_the_model_is_named(
    registry: Path, tmp_path: Path
) -> None:
    """Written by a key holder into the index (``decide`` refuses it), at its place in the
    chain and signed: the bundle it decides on is filed nowhere (left by the mutation
    review: without the check, ``list --verify`` passed it)."""
    copy = tmp_path / "registry"
    shutil.copytree(registry, copy)
    index = json.loads(_index(copy).read_bytes())
    link = entry_digest(index["entries"][-1])
    fields = {"manifest_sha256": "0" * 64, "decision": "approved", "by": "A. Reviewer",
              "note": "", "decided": "2026-01-01T00:00:00+00:00"}  # fmt: skip
    record = signature_record(APPROVER, {**fields, "model": "income", "previous": link})
    index["entries"].append({"kind": "decision", **fields, "record": record, "previous": link,
                             "key_fingerprint": fingerprint(APPROVER.public_key())})  # fmt: skip
    _index(copy).write_text(json.dumps(index))
    assert check_registry(copy) == [
        "models/income/index.json entry 3: decides on bundle 000000000000, which is not filed "
        "under this model before it"
    ]
