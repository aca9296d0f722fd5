"""A signed attestation: what a verifier re-checked in a bundle, and the verdict.

The attestation folder holds ``attestation.json`` (the full record, canonical JSON),
``attestation.md`` (a short human summary) and ``attestation.sig.json``: an Ed25519
signature by the verifier's own key over the sha256 of both files, in the same record
format as a bundle's ``signature.json``. ``sslops audit verify-attestation DIR
--public-key FILE`` checks it. The folder is written to a temporary sibling and renamed,
so a failure leaves no half-written attestation.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sslops.artifacts import check_replaceable, move_into_place, staging_folder
from sslops.audit.bundle import (
    BundleFiles,
    Signer,
    canonical_json,
    check_signature_record,
    signature_record,
)
from sslops.errors import ArtifactError
from sslops.markdown import md_cell

ATTESTATION = "attestation.json"
SUMMARY = "attestation.md"
ATTESTATION_SIGNATURE = "attestation.sig.json"


_MAX_ROWS = 20


def _number(value: Any) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def attestation_markdown(record: dict[str, Any]) -> str:
    bundle, data, verifier = record["bundle"], record["data"], record["verifier"]
    checks = record["checks"]
    failed = [c for c in checks if not c["passed"]]
    lines = [
        f"# Attestation: {record['result'].upper()}",
        "",
        f"Bundle `{bundle['path']}` (manifest sha256 `{bundle['manifest_sha256']}`), deployed "
        f"model `{bundle['model']}` re-evaluated with ONNX Runtime by {verifier['name']} "
        f"(key {verifier['key_fingerprint']}) on {record['created']}.",
        "",
        f"- Signature: {record['signature']['result']} with the trusted key "
        f"{record['signature']['trusted_key_fingerprint']}",
        f"- File integrity: {record['integrity']['result']}",
        f"- Test data: `{data['file']}` sha256 `{data['actual_sha256']}` "
        f"({data['result']} the frozen test split in lineage.json)",
        f"- Metrics: {len(checks) - len(failed)} of {len(checks)} reproduced within tolerance"
        if checks
        else "- Metrics: none re-evaluated (the bundle's model could not be read)",
        "",
    ]
    problems = [f"- {section}: {p}" for section in ("signature", "integrity")
                for p in record[section]["problems"]]  # fmt: skip
    if problems:
        lines += ["## Problems", "", *problems, ""]
    if failed:
        lines += ["## Failing checks", "", "| check | reported | reproduced | tolerance |",
                  "|---|---:|---:|---:|"]  # fmt: skip
        lines += [
            f"| {md_cell(c['metric'])} | {_number(c['reported'])} | {_number(c['reproduced'])} | "
            f"{c['tolerance']:g} |"
            for c in failed[:_MAX_ROWS]
        ]
        if len(failed) > _MAX_ROWS:
            lines += ["", f"... and {len(failed) - _MAX_ROWS} more in {ATTESTATION}."]
        lines.append("")
    lines += ["## Tolerances", ""]
    lines += [f"- {name}: {t['value']:g} ({t['why']})" for name, t in record["tolerances"].items()]
    env = record["environment"]
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    lines += ["", f"Environment: Python {env['python']} on {env['platform']}; {packages}.", ""]
    return "\n".join(lines)


def write_attestation(
    out_dir: Path, record: dict[str, Any], key: Signer,
    inputs: Iterable[Path | None] = (),
) -> Path:  # fmt: skip
    """``inputs``: the bundle and the test data attested; the folder may not be inside them
    (the attestation would add files to the bundle it attests, which then fails verify)."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir, "attestation", ATTESTATION, inputs=inputs)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # locked while written, so the next write removes (and names) what a killed one left
    with staging_folder(out_dir) as staged:
        try:
            (staged / ATTESTATION).write_bytes(canonical_json(record))
            (staged / SUMMARY).write_text(attestation_markdown(record), encoding="utf-8")
            files = {n: hashlib.sha256((staged / n).read_bytes()).hexdigest()
                     for n in (ATTESTATION, SUMMARY)}  # fmt: skip
            signed = signature_record(key, {"signed_files": files})
            (staged / ATTESTATION_SIGNATURE).write_bytes(canonical_json(signed))
            move_into_place(staged, out_dir)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    return out_dir


def verify_attestation(path: Path, public_key: Ed25519PublicKey | None) -> dict[str, Any]:
    """Check an attestation folder; ``problems`` is empty when it is intact and signed."""
    path = Path(path)
    if not path.is_dir():
        found = "is a file" if path.exists() else "does not exist"
        raise ArtifactError(
            f"{path} {found}; expected the attestation folder that sslops audit reproduce wrote"
        )
    sig = path / ATTESTATION_SIGNATURE
    if not sig.is_file() and not (path / ATTESTATION).is_file():  # not one: wrong input
        raise ArtifactError(
            f"{path} is not an attestation folder (no {ATTESTATION} or {ATTESTATION_SIGNATURE}); "
            "expected the folder that sslops audit reproduce wrote"
        )
    with BundleFiles(path) as files:  # a folder here: nothing to close, but as elsewhere
        irregular = files.irregular()
    if irregular:  # a link's target is not what was signed, and can change after verification
        return {"path": str(path), "problems": [
            f"{name} is {what}; an attestation folder holds regular files only"
            for name, what in sorted(irregular.items())
        ]}  # fmt: skip
    if not sig.is_file():  # an attestation whose signature is gone: it fails verification
        return {"path": str(path), "problems": [f"{ATTESTATION_SIGNATURE} is missing"]}
    try:
        record = json.loads(sig.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"path": str(path), "problems": [f"{ATTESTATION_SIGNATURE} is not valid JSON"]}
    problem, signed, key = check_signature_record(record, public_key, ATTESTATION_SIGNATURE)
    if problem or key is None:
        return {"path": str(path), "problems": [problem or ATTESTATION_SIGNATURE]}
    covered = signed.get("signed_files")
    if not isinstance(covered, dict) or set(covered) != {ATTESTATION, SUMMARY}:
        return {"path": str(path), "problems": [f"{ATTESTATION_SIGNATURE} does not cover "
                                                f"{ATTESTATION} and {SUMMARY}"]}  # fmt: skip
    problems = []
    for name, digest in covered.items():
        file = path / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            problems.append(f"{name} was modified after it was signed")
    known = {ATTESTATION, SUMMARY, ATTESTATION_SIGNATURE}
    for extra in sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()):
        if extra not in known:
            problems.append(f"{extra} was added (not covered by {ATTESTATION_SIGNATURE})")
    result: dict[str, Any] = {"path": str(path), "problems": problems}
    result["key_fingerprint"] = signed["key_fingerprint"]
    if not problems:
        attested = _attested_record(path / ATTESTATION)
        if attested is None:  # signed as it is (with --integrity-only, by any key)
            problems.append(f"{ATTESTATION} is not an attestation record (expected a JSON "
                            "object as sslops audit reproduce writes)")  # fmt: skip
            return result
        result["result"] = attested.get("result")
        result["verifier"] = attested["verifier"].get("name")
        result["bundle_manifest_sha256"] = attested["bundle"].get("manifest_sha256")
        result["created"] = attested.get("created")
    return result


def _attested_record(path: Path) -> dict[str, Any] | None:
    """The attestation record in ``path``, or None where it is not one."""
    try:
        attested = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(attested, dict):
        return None
    attested.setdefault("verifier", {})
    attested.setdefault("bundle", {})
    if not isinstance(attested["verifier"], dict) or not isinstance(attested["bundle"], dict):
        return None
    return attested
