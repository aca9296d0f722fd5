"""The audit registry: where bundles are filed, immutable, and found again years later.

A registry is a folder (on a cluster: on the workspace volume, or an object-store mount)::

    registry.json                      marks the folder as a registry (format, created)
    bundles/<sha256>.zip               each bundle, named by the sha256 of its manifest.json
                                       (content-addressed: the manifest lists the sha256 of
                                       every other file), read-only once written
    models/<model>/index.json          one index per model: the bundles filed under it, in
                                       the order they were filed

Filing is idempotent (the same bundle filed twice is one entry) and never rewrites a
bundle. Each index entry carries the digest of the entry before it, so an entry removed,
changed or moved is found by :func:`check_registry` (``sslops audit list --verify``),
as is any bundle whose bytes no longer match its name. Filing verifies the bundle first
(hashes, and the signature against ``public_key`` when one is given) and writes under a
lock, each file atomically: a failed filing leaves the registry as it was (an index that
cannot be read or written removes the bundle it copied); one killed between its bundle
and its index entry leaves the bundle, which :func:`check_registry` names until it is
filed again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import heapq
import itertools
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sslops.artifacts import fsync_folder, json_text, strict_json
from sslops.audit.bundle import (
    MANIFEST,
    BundleFiles,
    Signer,
    bundle_root,
    canonical_json,
    check_signature_record,
    fingerprint,
    signature_record,
    verify_bundle,
    verify_path,
    write_zip,
)  # fmt: skip
from sslops.errors import ArtifactError, describe_json_error

if TYPE_CHECKING:
    from sslops.audit.keys import TrustedKeys

FORMAT = 1
MARKER = "registry.json"
BUNDLES = "bundles"
MODELS = "models"
INDEX = "index.json"
LOCK = ".lock"
LATEST = "registry:latest"  # audit.previous_bundle: the bundle filed last under the model
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MODEL_NAME_RULE = "1-64 characters: lower-case letters, digits, '.', '_' or '-', not first"

# gate name -> the metric an index entry shows (gates.json holds the measured values)
_METRICS = {
    "min_accuracy": "accuracy",
    "min_auc": "roc_auc",
    "max_dp_difference": "dp_difference",
    "max_eo_difference": "eo_difference",
}


def model_slug(title: str) -> str:
    """A registry model name made from a model card title ("Income classifier (UCI Adult)"
    -> "income-classifier-uci-adult"), used when ``audit.model_name`` is not set."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:64].rstrip("-")
    return slug or "model"


def check_model_name(name: str, where: str = "model name") -> str:
    if not MODEL_NAME.match(name):
        raise ArtifactError(f"{where} {name!r} is not a registry model name ({MODEL_NAME_RULE})")
    return name


def check_registry_path(registry: Path) -> None:
    """Raise unless ``registry`` is a registry, an empty folder or a path that can become one
    (so a stage checks this before it writes anything)."""
    registry = Path(registry)
    if registry.exists() and not registry.is_dir():
        raise ArtifactError(f"audit registry {registry} is a file; expected a folder")
    others = [p for p in registry.iterdir() if not _own(p.name)] if registry.is_dir() else []
    if others and not (registry / MARKER).is_file():
        raise ArtifactError(
            f"audit registry {registry} is not an sslops audit registry (no {MARKER}) and not "
            "empty; give the registry's folder, or a new or empty one"
        )
    if (registry / MARKER).is_file():
        _read_marker(registry)


def _own(name: str) -> bool:
    """The lock file, or a temporary file a killed filing left: a folder holding only these
    is still an empty one."""
    return name == LOCK or (name.startswith(".") and name.endswith(".tmp"))


def _read_marker(registry: Path) -> dict[str, Any]:
    marker = _read_json(registry / MARKER)
    if not isinstance(marker, dict) or marker.get("registry_format") != FORMAT:
        raise ArtifactError(f"{registry / MARKER}: not an sslops audit registry of format {FORMAT}")
    return marker


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArtifactError(f"{path}: unreadable ({' '.join(str(exc).split())})") from None
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path}: unreadable ({describe_json_error(exc)})") from None


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """``data`` at ``path`` whole or not at all."""
    _place(path, lambda tmp: tmp.write_bytes(data), mode)


def _place(path: Path, fill: Callable[[Path], object], mode: int = 0o644) -> None:
    """``fill`` writes a temporary file beside ``path`` (a hidden ``.tmp``), which is
    fsynced and renamed onto ``path``: the file appears whole or not at all."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        fill(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_folder(path.parent)  # the rename itself


@contextlib.contextmanager
def _locked(registry: Path) -> Iterator[None]:
    """One filing at a time (two pipelines finishing together share the index files)."""
    with open(registry / LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def entry_digest(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(entry)).hexdigest()


def _entry_digests(entry: dict[str, Any]) -> set[str]:
    """:func:`entry_digest`, and for an entry whose metrics hold an undefined value, the
    digests it may have been chained with before indexes were strict JSON: its bytes then
    held a bare NaN where the index now holds null (rewritten by a later filing) or NaN
    (as read). Each null may have been a NaN or a null (a gate with nothing to measure)."""
    digests = {entry_digest(entry)}
    metrics = entry.get("metrics")
    if not isinstance(metrics, dict):
        return digests
    undefined = [k for k, v in metrics.items() if v is None or (isinstance(v, float) and v != v)]
    for nans in itertools.product((None, math.nan), repeat=len(undefined)):
        legacy = {**entry, "metrics": {**metrics, **dict(zip(undefined, nans, strict=True))}}
        text = json.dumps(legacy, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
        digests.add(hashlib.sha256(text.encode()).hexdigest())
    return digests


def _bundle_json(files: BundleFiles, name: str) -> Any:
    if name not in files.names():
        return None
    try:
        return json.loads(files.read(name))
    except (ValueError, ArtifactError):
        return None


def _describe(files: BundleFiles) -> dict[str, Any]:
    """What an index entry records of a (verified) bundle: when it was made, the deployed
    model and its gates, the measured values, the ONNX model's sha256, the run."""
    manifest = json.loads(files.read(MANIFEST))
    gates = _bundle_json(files, "gates.json") or {}
    run = _bundle_json(files, "run.json") or {}
    config = _bundle_json(files, "config.json") or {}
    signature = _bundle_json(files, "signature.json") or {}
    measured = {
        _METRICS[r["gate"]]: r.get("value")
        for r in gates.get("results", [])
        if isinstance(r, dict) and r.get("gate") in _METRICS
    }
    audit = config.get("audit", {}) if isinstance(config, dict) else {}
    return {  # strict_json: an undefined metric (NaN in gates.json) as null
        "created": manifest.get("created"),
        "title": audit.get("title"),
        "deployed": gates.get("model"),
        "gates": gates.get("overall"),
        "metrics": strict_json(measured),
        "onnx_sha256": manifest["files"].get("model.onnx"),
        "int8_onnx_sha256": manifest["files"].get("model.int8.onnx"),
        "signed": "signature.json" in files.names(),
        "key_fingerprint": (signature.get("signed") or {}).get("key_fingerprint"),
        "kfp_run_id": run.get("kfp_run_id"),
        "_config_model_name": audit.get("model_name"),
    }


def _problem_line(source: Path, result: dict[str, Any]) -> str:
    count = len(result["problems"])
    return (
        f"{source} failed verification ({count} problem{'s' * (count > 1)}): "
        f"{result['problems'][0]}; nothing was filed"
    )


def file_bundle(
    source: Path,
    registry: Path,
    *,
    model: str | None = None,
    public_key: Ed25519PublicKey | TrustedKeys | None = None,
    require_signed: bool = False,
    key: Signer | None = None,
) -> dict[str, Any]:
    """File the bundle at ``source`` (folder, .zip or audit artifact folder) in ``registry``.

    ``key``: sign the index entry (its bundle, model, time and the digest of the entry before
    it), so that the entry, and through its link every entry before it, cannot be removed,
    changed or reordered by someone who can write the registry but does not hold the key.

    Returns the index entry with ``status`` ("filed" or "already filed"), ``model`` and
    ``path`` (the bundle's file in the registry). Raises :class:`ArtifactError` naming the
    problem, with the registry unchanged, when the bundle does not verify, is unsigned
    while ``require_signed``, or the registry is not one.
    """
    source, registry = Path(source), Path(registry)
    check_registry_path(registry)
    result = verify_path(source, public_key)
    if result["problems"]:
        raise ArtifactError(_problem_line(source, result))
    if require_signed and not result.get("signed"):
        raise ArtifactError(
            f"{source} is not signed and signed bundles are required; sign it with "
            "audit.signing.key_file (sslops audit keygen makes a key)"
        )
    root = bundle_root(source)
    with BundleFiles(root) as files:
        manifest_bytes = files.read(MANIFEST)
        described = _describe(files)
    sha = hashlib.sha256(manifest_bytes).hexdigest()
    configured = described.pop("_config_model_name")
    name = check_model_name(
        model or configured or model_slug(described["title"] or "model"),
        "--model" if model else "the bundle's model name",
    )
    registry.mkdir(parents=True, exist_ok=True)
    with _locked(registry):
        _remove_leftovers(registry)
        if not (registry / MARKER).is_file():
            check_registry_path(registry)  # still empty: nothing else filed meanwhile
            marker = {"registry_format": FORMAT, "created": _now()}
            _write_atomic(registry / MARKER, canonical_json(marker))
        index_dir = registry / MODELS / name
        # Read before the bundle is copied: an unreadable index refuses the filing with no
        # bundle left behind (verification would find it in no index).
        index = _load_index(index_dir / INDEX, name)
        (registry / BUNDLES).mkdir(exist_ok=True)
        target = registry / BUNDLES / f"{sha}.zip"
        placed = not target.exists()
        if placed:
            fill = partial(shutil.copyfile, root) if root.is_file() else partial(write_zip, root)
            _place(target, fill, mode=0o444)
        try:  # the source changed after it was verified, or the index cannot be written
            # (a full disk): keep nothing of the bundle this filing placed
            _check_filed(target, sha)
            entry = _append_filing(index, index_dir, sha, described, key)
        except BaseException:
            if placed and not _index_lists(index_dir / INDEX, name, sha):
                with contextlib.suppress(OSError):
                    target.unlink()
            raise
    status = "filed" if entry.pop("_new") else "already filed"
    return {**entry, "status": status, "model": name, "path": str(target)}


def _index_lists(path: Path, model: str, sha: str) -> bool:
    """The index on disk lists bundle ``sha`` (it was renamed into place before a later
    step failed), or cannot be read to tell: its bundle then stays (a bundle in no index is
    named by verification; one an entry names and is gone would be missing)."""
    try:
        return any(e["manifest_sha256"] == sha for e in _filed(_load_index(path, model)["entries"]))
    except (ArtifactError, OSError):
        return True


def _append_filing(
    index: dict[str, Any], index_dir: Path, sha: str, described: dict[str, Any],
    key: Signer | None,
) -> dict[str, Any]:  # fmt: skip
    """The model's entry for bundle ``sha`` (``_new``: False when it was filed before),
    appended to ``index`` and the index written, chained after its last entry."""
    name = index["model"]
    for entry in _filed(index["entries"]):
        if entry["manifest_sha256"] == sha:
            return {**entry, "_new": False}
    entries = index["entries"]
    entry = {
        "kind": "filed",
        "manifest_sha256": sha,
        "bundle": f"{BUNDLES}/{sha}.zip",
        "filed": _now(),
        **described,
        "previous": entry_digest(entries[-1]) if entries else None,
    }
    if key is not None:
        fields = {k: entry[k] for k in _SIGNED_FILING} | {"model": name}
        entry["filer_key"] = fingerprint(key.public_key())
        entry["record"] = signature_record(key, fields)
    entries.append(entry)
    index_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(index_dir / INDEX, (json_text(index, indent=2) + "\n").encode())
    return {**entry, "_new": True}


def _remove_leftovers(registry: Path) -> None:
    """Temporary files of a filing that was killed before its rename (under the lock, no
    other filing is writing one)."""
    for folder in (registry, registry / BUNDLES, *(registry / MODELS).glob("*")):
        for leftover in folder.glob(".*.tmp") if folder.is_dir() else []:
            with contextlib.suppress(OSError):
                leftover.unlink()


def _check_filed(target: Path, sha: str) -> None:
    """The registry's copy is intact and is the bundle named ``sha``."""
    result = verify_bundle(target)
    if result["problems"]:
        raise ArtifactError(
            f"{target} (in the registry) failed verification: {result['problems'][0]}"
        )
    with BundleFiles(target) as files:
        filed = files.read(MANIFEST)
    if hashlib.sha256(filed).hexdigest() != sha:
        raise ArtifactError(f"{target} (in the registry) holds another bundle than its name says")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _load_index(path: Path, model: str) -> dict[str, Any]:
    if not path.is_file():
        return {"registry_format": FORMAT, "model": model, "entries": []}
    index = _read_json(path)
    if (
        not isinstance(index, dict)
        or index.get("model") != model
        or not isinstance(index.get("entries"), list)
    ):
        raise ArtifactError(f"{path}: not the index of model {model!r}")
    if index.get("registry_format", FORMAT) != FORMAT:
        raise ArtifactError(f"{path}: registry_format {index['registry_format']!r}; this sslops "
                            f"reads format {FORMAT}")  # fmt: skip
    for number, entry in enumerate(index["entries"], 1):
        problem = _entry_problem(entry)
        if problem:
            raise ArtifactError(f"{path} entry {number}: {problem}; expected an entry as sslops "
                                "audit file or approve/reject writes it")  # fmt: skip
    return index


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _entry_problem(entry: Any) -> str | None:
    """Why ``entry`` is not an index entry of the shape the registry reads (a filing or a
    decision), or None. Only the shape: whether its values are true, the chain of digests
    and the signatures tell (:func:`check_registry`)."""
    if not isinstance(entry, dict):
        return f"a JSON {type(entry).__name__}, not an object"
    kind = entry.get("kind", "filed")
    if kind not in ("filed", "decision"):
        return f"kind {kind!r} is neither 'filed' nor 'decision'"
    sha = entry.get("manifest_sha256")
    if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        return "manifest_sha256 is not a sha256 (64 lower-case hex digits)"
    if kind == "filed" and entry.get("bundle") != f"{BUNDLES}/{sha}.zip":
        return f"bundle is not {BUNDLES}/<its manifest_sha256>.zip"
    if kind == "decision" and entry.get("decision") not in DECISIONS:
        return f"decision {entry.get('decision')!r} is not one of {', '.join(DECISIONS)}"
    required = () if kind == "filed" else ("by", "decided")
    optional = ("filed", "previous", "key_fingerprint", "note")
    for field in (*required, *optional):
        value = entry.get(field)
        if value is None and field in required:
            return f"{field} is missing"
        if value is not None and not isinstance(value, str):
            return f"{field} is {repr(value)[:40]}, not a string"
    if not isinstance(entry.get("metrics") or {}, dict):
        return "metrics is not an object"
    return None


def model_names(registry: Path) -> list[str]:
    folder = Path(registry) / MODELS
    return (
        sorted(p.name for p in folder.iterdir() if (p / INDEX).is_file()) if folder.is_dir() else []
    )


def _existing(registry: Path) -> Path:
    registry = Path(registry)
    if not (registry / MARKER).is_file():
        raise ArtifactError(f"{registry} is not an sslops audit registry (no {MARKER})")
    _read_marker(registry)
    return registry


def list_registry(registry: Path, model: str | None = None) -> list[dict[str, Any]]:
    """Every index entry (with its ``model``), oldest filing first; one model's with ``model``.

    Each model's entries keep their index order (the chain's, which no clock changes);
    models are interleaved by their ``filed`` times. Sorting on ``filed`` alone put the
    entry a node with a fast clock filed first after later ones, and ``registry:latest``
    (the index's last) was then not the list's last."""
    registry = _existing(registry)
    names = model_names(registry)
    if model is not None:
        if model not in names:
            known = ", ".join(names) or "none yet"
            raise ArtifactError(f"no bundle is filed under model {model!r} in {registry} "
                                f"(models: {known})")  # fmt: skip
        names = [model]
    by_model: list[list[dict[str, Any]]] = []
    for name in names:
        entries = _load_index(registry / MODELS / name / INDEX, name)["entries"]
        decided = _decisions(entries)
        rows: list[dict[str, Any]] = []
        by_model.append(rows)
        for entry in _filed(entries):
            last = decided.get(entry["manifest_sha256"])
            rows.append({
                **entry, "model": name,
                "decision": last["decision"] if last else "pending",
                "decided_by": last["by"] if last else None,
                "decided": last["decided"] if last else None,
                "decided_key": last.get("key_fingerprint") if last else None,
            })  # fmt: skip
    # merge takes each model's rows in their order; equal times: models by name
    return list(heapq.merge(*by_model, key=lambda row: row.get("filed") or ""))


def _filed(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("kind", "filed") == "filed"]


def _decisions(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The latest decision on each bundle (manifest sha256 -> decision entry)."""
    return {e["manifest_sha256"]: e for e in entries if e.get("kind") == "decision"}


def latest_bundle(registry: Path, model: str) -> Path | None:
    """The bundle filed last under ``model`` (``audit.previous_bundle: registry:latest``);
    None when the registry or the model has none yet."""
    registry = Path(registry)
    if not (registry / MARKER).is_file() or model not in model_names(registry):
        return None
    filed = _filed(_load_index(registry / MODELS / model / INDEX, model)["entries"])
    return registry / filed[-1]["bundle"] if filed else None


def check_registry(
    registry: Path, public_key: Ed25519PublicKey | TrustedKeys | None = None
) -> list[str]:
    """Problems with the registry: an index entry removed, changed or moved (the chain of
    digests breaks), a bundle missing, damaged or holding another manifest than its name
    says, a bundle no index lists, a decision whose signature does not verify or that
    names no bundle filed before it. Empty when everything is as it was written."""
    registry = Path(registry)
    problems: list[str] = []
    listed: set[str] = set()
    unreadable: list[str] = []
    for name in model_names(registry):
        index_path = registry / MODELS / name / INDEX
        try:
            entries = _load_index(index_path, name)["entries"]
        except ArtifactError as exc:
            problems.append(str(exc))
            unreadable.append(f"{MODELS}/{name}/{INDEX}")
            continue
        listed |= {e.get("manifest_sha256", "") for e in _filed(entries)}
        problems += _index_problems(
            name, entries, partial(_check_filed_entry, registry, public_key=public_key)
        )
    folder = registry / BUNDLES
    zips = sorted(folder.glob("*.zip")) if folder.is_dir() else []
    unlisted = [path for path in zips if path.stem not in listed]
    if unlisted and unreadable:  # likely that index's own bundles: one line, not one each
        problems.append(f"{len(unlisted)} bundle(s) in {BUNDLES}/ are in no readable index "
                        f"({', '.join(unreadable)} unreadable: they may be its entries); "
                        "repair or restore that index first")  # fmt: skip
        return problems
    for path in unlisted:
        problems.append(f"{BUNDLES}/{path.name} is filed in no model's index (a filing "
                        "interrupted before its entry: file it again; or an entry removed)")  # fmt: skip
    return problems


def _index_problems(
    model: str, entries: list[dict[str, Any]],
    check_filed: Callable[[dict[str, Any], str], list[str]] | None = None,
) -> list[str]:  # fmt: skip
    """The chain of digests and every decision of one model's index, in entry order; with
    ``check_filed``, also what it finds in each filed entry (its bundle)."""
    problems: list[str] = []
    previous: str | None = None  # the entry before's digest
    accepted: set[str | None] = {None}  # and those of it before strict JSON (_entry_digests)
    filed: set[str] = set()
    bound = False  # a decision before this one is signed with its place in the chain
    for number, entry in enumerate(entries, 1):
        where = f"{MODELS}/{model}/{INDEX} entry {number}"
        link = entry.get("previous")
        if link not in accepted:
            problems.append(f"{where}: the chain of digests breaks (an entry before it was "
                            "removed, changed or moved)")  # fmt: skip
            link = previous
        previous, accepted = entry_digest(entry), set(_entry_digests(entry))
        if entry.get("kind", "filed") == "decision":
            problems += _check_decision(entry, model, where, filed, link, bound)
            bound = bound or _chain_bound(entry)
            continue
        if "record" in entry:
            problems += _check_signed_filing(entry, model, where, link)
        filed.add(entry.get("manifest_sha256", ""))
        if check_filed is not None:
            problems += check_filed(entry, where)
    return problems


def _check_filed_entry(
    registry: Path,
    entry: dict[str, Any],
    where: str,
    public_key: Ed25519PublicKey | TrustedKeys | None,
) -> list[str]:
    sha = entry.get("manifest_sha256", "")
    target = registry / BUNDLES / f"{sha}.zip"
    if entry.get("bundle") != f"{BUNDLES}/{sha}.zip" or not target.is_file():
        return [f"{where}: bundle {BUNDLES}/{sha}.zip is missing"]
    result = verify_bundle(target, public_key)
    if result["problems"]:
        return [f"{BUNDLES}/{sha}.zip: {result['problems'][0]}"]
    with BundleFiles(target) as files:
        if hashlib.sha256(files.read(MANIFEST)).hexdigest() != sha:
            return [f"{BUNDLES}/{sha}.zip holds another bundle than its name says"]
        described = _describe(files)
    described.pop("_config_model_name")
    # strict_json: an undefined metric is null in the index (NaN in one filed before strict
    # JSON) and NaN in an older bundle's gates.json; NaN != NaN, so compared as null
    changed = sorted(k for k, v in described.items() if strict_json(entry.get(k)) != strict_json(v))
    return [f"{where}: {', '.join(changed)} differ from the filed bundle"] if changed else []


# The fields of a filing entry its signed record holds (with the model).
_SIGNED_FILING = ("kind", "manifest_sha256", "bundle", "filed", "previous")


def _check_signed_filing(
    entry: dict[str, Any], model: str, where: str, link: str | None
) -> list[str]:
    """A signed filing verifies with the key it names, says what its record says, and stands
    where it was signed (the record names the digest of the entry before it)."""
    record = entry["record"]
    if not isinstance(record, dict):
        return [f"{where}: the filing's signed record is unreadable"]
    problem, signed, _ = check_signature_record(record, None, f"{where} (filing)")
    if problem:
        return [problem]
    if signed.get("previous") != link:
        return [f"{where}: the filing was signed for another place in the index (an entry "
                "before it removed, changed or moved, or the filing moved)"]  # fmt: skip
    expected = {**{k: entry.get(k) for k in _SIGNED_FILING}, "model": model}
    changed = sorted(k for k, v in expected.items() if signed.get(k) != v)
    if changed or entry.get("filer_key") != signed.get("key_fingerprint"):
        return [f"{where}: {', '.join(changed) or 'filer_key'} differ from the signed filing"]
    return []


def _chain_bound(entry: dict[str, Any]) -> bool:
    """A decision whose signed record holds its chain link (``previous``): every decision
    made since that was added; older ones are accepted until the index holds such a one."""
    record = entry.get("record")
    signed = record.get("signed") if isinstance(record, dict) else None
    return isinstance(signed, dict) and "previous" in signed


def _check_decision(
    entry: dict[str, Any], model: str, where: str, filed: set[str], link: str | None,
    bound_before: bool,
) -> list[str]:  # fmt: skip
    """A decision verifies with the key that made it, says what its signed record says,
    decides on a bundle filed under the model before it, and stands where it was signed:
    ``link`` is the digest of the entry before it in the index, which the signed record
    names (so a decision copied to a later place, replayed after a rejection, or left
    behind when an entry before it was removed, no longer verifies). ``bound_before``: an
    earlier decision's record names its link, so this one must too (an old, unbound
    decision replayed into an index written since)."""
    record = entry.get("record")
    if not isinstance(record, dict):
        return [f"{where}: the decision has no signed record"]
    problem, signed, key = check_signature_record(record, None, f"{where} (decision)")
    if problem or key is None:
        return [problem or where]
    if "previous" in signed:
        if signed["previous"] != link:
            return [f"{where}: the decision was signed for another place in the index (the "
                    "entry before it is not the one it was signed after: replayed, moved, or "
                    "an entry before it removed or changed)"]  # fmt: skip
    elif bound_before:
        return [f"{where}: the decision's signature does not cover its place in the index, "
                "though an earlier decision's does (an old decision replayed?)"]  # fmt: skip
    expected = {**{k: entry.get(k) for k in _DECIDED}, "model": model}
    changed = sorted(k for k, v in expected.items() if signed.get(k) != v)
    if changed or entry.get("key_fingerprint") != signed.get("key_fingerprint"):
        return [
            f"{where}: {', '.join(changed) or 'key_fingerprint'} differ from the signed decision"
        ]
    if entry.get("manifest_sha256") not in filed:
        return [f"{where}: decides on bundle {entry.get('manifest_sha256', '')[:12]}, which is not "
                "filed under this model before it"]  # fmt: skip
    return []


def checkpoint(registry: Path) -> dict[str, Any]:
    """The registry's head now: for each model, how many entries its index holds and the
    digest of the last one. The chain of digests shows an entry removed or changed *before*
    another; kept away from the registry (in a GitOps repository, a ticket, a ConfigMap), a
    checkpoint also shows, through :func:`check_checkpoint`, entries removed from the end of
    an index and a model's whole index removed, which nothing left in the registry can."""
    registry = _existing(registry)
    models = {}
    for name in model_names(registry):
        entries = _load_index(registry / MODELS / name / INDEX, name)["entries"]
        if entries:
            models[name] = {"entries": len(entries), "head": entry_digest(entries[-1])}
    return {"registry_checkpoint": FORMAT, "taken": _now(), "models": models}


def write_checkpoint(registry: Path, out: Path) -> dict[str, Any]:
    """:func:`checkpoint` written to ``out`` whole or not at all; returns it."""
    out = Path(out)
    if not out.parent.is_dir():
        raise ArtifactError(f"--out {out}: folder {out.parent} does not exist")
    point = checkpoint(registry)
    _write_atomic(out, (json_text(point, indent=2, sort_keys=True) + "\n").encode())
    return point


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`checkpoint` (``sslops audit checkpoint``), checked."""
    path = Path(path)
    expected = "the JSON `sslops audit checkpoint` writes"
    try:
        point = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"checkpoint {path}: no such file (expected {expected})") from None
    except (OSError, ValueError, RecursionError) as exc:
        why = describe_json_error(exc)
        raise ArtifactError(f"checkpoint {path}: not readable JSON ({why}); expected "
                            f"{expected}") from None  # fmt: skip
    models = point.get("models") if isinstance(point, dict) else None
    well_formed = (
        isinstance(models, dict)
        and point.get("registry_checkpoint") == FORMAT
        and isinstance(point.get("taken"), str)
        and all(
            isinstance(head, dict)
            and isinstance(head.get("entries"), int)
            and head["entries"] > 0
            and re.fullmatch(r"[0-9a-f]{64}", str(head.get("head", "")))
            for head in models.values()
        )
    )
    if not well_formed:
        raise ArtifactError(f"checkpoint {path}: not a registry checkpoint (expected {expected}: "
                            f"registry_checkpoint {FORMAT}, taken, models: name -> entries, "
                            "head)")  # fmt: skip
    return point


def check_checkpoint(registry: Path, point: dict[str, Any]) -> list[str]:
    """Problems against an earlier checkpoint: a model's index gone, entries removed from its
    end, or the entry the checkpoint ended on replaced. Entries filed or decided since are
    fine. With :func:`check_registry` (the chain up to that entry) the whole recorded
    history is covered."""
    registry = _existing(registry)
    taken = point.get("taken", "an earlier time")
    names = set(model_names(registry))
    problems = []
    for name, head in sorted(point["models"].items()):
        where, count = f"{MODELS}/{name}/{INDEX}", head["entries"]
        if name not in names:
            problems.append(f"{where} is gone (the checkpoint of {taken} recorded {count} "
                            "entries)")  # fmt: skip
            continue
        try:
            entries = _load_index(registry / where, name)["entries"]
        except ArtifactError as exc:
            problems.append(str(exc))
            continue
        if len(entries) < count:
            problems.append(f"{where} holds {len(entries)} entries, the checkpoint of {taken} "
                            f"recorded {count}: the last {count - len(entries)} were removed")  # fmt: skip
        elif head["head"] not in _entry_digests(entries[count - 1]):
            problems.append(f"{where} entry {count} is not the one the checkpoint of {taken} "
                            "recorded (the index was rewritten)")  # fmt: skip
    return problems


# The fields of a decision entry that its signed record also holds.
_DECIDED = ("manifest_sha256", "decision", "by", "note", "decided")
DECISIONS = ("approved", "rejected")


def decide(
    registry: Path,
    bundle: str,
    decision: str,
    key: Ed25519PrivateKey,
    *,
    by: str,
    note: str = "",
    model: str | None = None,
) -> dict[str, Any]:
    """Record a signed decision (``approved`` or ``rejected``) on a filed bundle, named by
    its manifest sha256 or a prefix of it (8 characters at least).

    Four eyes: a bundle signed by ``key`` cannot be approved with it. The bundle is checked
    intact first. The decision is appended to the model's index like a filing (chained,
    under the lock); the latest decision on a bundle is its status.
    """
    registry = Path(registry)
    if decision not in DECISIONS:
        raise ArtifactError(f"decision {decision!r}: expected one of {', '.join(DECISIONS)}")
    if not by.strip():
        raise ArtifactError(
            "--by: say who decides (a name and role), e.g. --by 'J. Doe, model risk'"
        )
    entry, name = _find_bundle(registry, bundle, model)
    sha = entry["manifest_sha256"]
    _check_filed(registry / entry["bundle"], sha)
    key_fp = fingerprint(key.public_key())
    if decision == "approved" and entry.get("key_fingerprint") == key_fp:
        raise ArtifactError(
            f"bundle {sha[:12]} is signed with the key that would approve it ({key_fp}): "
            "approval needs a second person's key (four eyes)"
        )
    with _locked(registry):
        path = registry / MODELS / name / INDEX
        index = _load_index(path, name)
        entries = index["entries"]
        link = entry_digest(entries[-1]) if entries else None
        # The signed record names the entry it follows: the decision holds only there.
        fields = {
            "manifest_sha256": sha, "decision": decision, "by": by.strip(), "note": note.strip(),
            "decided": _now(), "model": name, "previous": link,
        }  # fmt: skip
        record = signature_record(key, fields)
        made = {
            "kind": "decision", **{k: fields[k] for k in _DECIDED}, "key_fingerprint": key_fp,
            "record": record, "previous": link,
        }  # fmt: skip
        entries.append(made)
        _write_atomic(path, (json_text(index, indent=2) + "\n").encode())
    return {**made, "model": name}


def _find_bundle(registry: Path, bundle: str, model: str | None) -> tuple[dict[str, Any], str]:
    """The filed entry a (prefix of a) manifest sha256 names, and its model."""
    prefix = bundle.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", prefix):
        raise ArtifactError(f"bundle {bundle!r}: expected its manifest sha256 (or its first 8+ "
                            "characters), as `sslops audit list` shows it")  # fmt: skip
    rows = [r for r in list_registry(registry, model) if r["manifest_sha256"].startswith(prefix)]
    found = {(r["manifest_sha256"], r["model"]) for r in rows}
    if not found:
        raise ArtifactError(f"no bundle {prefix} is filed in {registry}"
                            + (f" under model {model!r}" if model else ""))  # fmt: skip
    if len(found) > 1:
        named = ", ".join(f"{sha[:12]} ({m})" for sha, m in sorted(found))
        raise ArtifactError(
            f"bundle {prefix} is ambiguous: {named}; give more characters or --model"
        )
    sha, name = found.pop()
    return next(r for r in rows if r["manifest_sha256"] == sha), name


def approval_of(
    registry: Path, model_sha256: str, approvers: list[Ed25519PublicKey] | None = None
) -> dict[str, Any]:
    """The approved filed bundle holding an ONNX model with this sha256 (``model.onnx`` or
    ``model.int8.onnx``), for ``sslops predict --registry``; raises naming why there is none
    (not filed, pending, rejected). The bundle is verified, and so is the approval's
    signature; with ``approvers``, it must have been made with one of those keys."""
    registry = Path(registry)
    rows = [
        r for r in list_registry(registry)
        if model_sha256 in (r.get("onnx_sha256"), r.get("int8_onnx_sha256"))
    ]  # fmt: skip
    approved = [r for r in rows if r["decision"] == "approved"]
    if not approved:
        if not rows:
            why = "no bundle filed there holds it"
        else:
            why = "; ".join(
                f"bundle {r['manifest_sha256'][:12]} ({r['model']}) is {r['decision']}"
                + (f" by {r['decided_by']} on {r['decided']}" if r["decided_by"] else "")
                for r in rows
            )
        raise ArtifactError(f"the model (sha256 {model_sha256[:12]}) is not approved in the audit "
                            f"registry {registry}: {why}")  # fmt: skip
    # The latest approval made with a trusted key: one made with another key is passed over
    # (it would otherwise let anyone who can write the registry stop scoring).
    untrusted = None
    for row in reversed(approved):
        try:
            return _verified_approval(registry, row, approvers)
        except _UntrustedApproval as exc:
            untrusted = untrusted or exc
    assert untrusted is not None
    raise ArtifactError(str(untrusted))


class _UntrustedApproval(ArtifactError):
    """An approval that verifies, made with a key not among the approver keys given."""


def _verified_approval(
    registry: Path, row: dict[str, Any], approvers: list[Ed25519PublicKey] | None
) -> dict[str, Any]:
    sha, model = row["manifest_sha256"], row["model"]
    _check_filed(registry / row["bundle"], sha)
    entries = _load_index(registry / MODELS / model / INDEX, model)["entries"]
    decision = max(
        ((n, e) for n, e in enumerate(entries, 1)
         if e.get("kind") == "decision" and e["manifest_sha256"] == sha),
        key=lambda found: found[0],
    )[1]  # fmt: skip
    # The whole index, not only this decision: the chain and every decision's signature and
    # place, so a decision after it removed from the middle, or moved, is found too.
    problems = _index_problems(model, entries)
    if problems:
        raise ArtifactError(f"the approval of bundle {sha[:12]} does not verify: {problems[0]}")
    trusted = {fingerprint(k) for k in approvers or []}
    if approvers and decision["key_fingerprint"] not in trusted:
        raise _UntrustedApproval(
            f"bundle {sha[:12]} was approved by {decision['by']} with key "
            f"{decision['key_fingerprint']}, which is not one of the approver keys given"
        )
    return {
        "registry": str(registry.resolve()), "model": model, "bundle_manifest_sha256": sha,
        "approved_by": decision["by"], "approved": decision["decided"],
        "key_fingerprint": decision["key_fingerprint"],
        "key_trusted": bool(approvers),
    }  # fmt: skip
