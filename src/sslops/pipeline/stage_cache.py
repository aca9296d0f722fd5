"""Reuse of finished stages when ``sslops run`` is started again after an interruption.

``sslops run`` points ``SSLOPS_STAGE_CACHE`` at a folder beside its output folder
(``.<out>.stages``) and removes it once the run succeeded. A task whose stage
finishes copies its artifact there under ``<stage>-<key>``; a later task with the
same key copies it back instead of running the stage. The key is the sha256 of

- the stage name, the sslops version, the git commit and the sha256 of every source file
  of the running code (a commit does not change when a file is edited and not committed);
- the versions of the packages that decide the numbers (:func:`sslops.artifacts.package_versions`),
  Python's, the thread-count variables (``OMP_NUM_THREADS`` ...) the stage inherits (the
  audit records its own process's as the whole run's) and the number of cores it may use
  (``*.threads: 0`` uses them all; finetune's weights depend on the count), so a rerun
  after an upgrade or on other cores does not put stages of two environments in one bundle;
- the part of the resolved config the stage reads (:data:`STAGE_PARAMS`, dvc.yaml's params:
  defaults included, since the config is resolved; a default an upgrade changes moves the
  source hash too), so a change only later stages read reruns those alone: a new audit gate
  reruns the audit only, ``evaluate.bootstrap`` evaluate and the audit;
- the files the stage reads that the config names only by path: for prepare every file
  of ``data.train`` / ``data.test`` (a folder's or a glob's, so a shard added under the
  same path misses), ``data.attributes_file`` and the PII hashing key
  (``prepare.pii.key_file``'s content or the variable ``prepare.pii.key_env`` names:
  a rotated key misses); for pretrain ``pretrain.init_from``; and
- the sha256 of each input artifact's ``meta.json`` (which lists the sha256 of every
  file in it), so a changed upstream result never meets a stale downstream one.

Beside each entry, ``<stage>.key.json`` holds what its key was made of (:func:`key_record`;
the PII key only as a hash): a stage that finds its entry under another key says on stderr,
in one line, what differs (``not reusing evaluate from an earlier run, changed: config
evaluate.bootstrap``), config keys by name, never their values.

A cached entry is used only if :func:`sslops.artifacts.read_meta` verifies every file
against its ``meta.json`` and every raw source file it records (``data.train``, ...)
still has the recorded sha256; otherwise the stage runs again. Entries are copied in
under a hidden temporary name and renamed, so a kill never leaves a half entry
that a rerun could read.

KFP's own local cache (``kfp.local.init(enable_caching=True)``) is not used: its
key is the input artifacts' URIs and the command, not their content, so it would
reuse ``prepare`` after the raw CSV changed.

The folder holds one entry per stage: the one the latest run used or wrote. A stage's
entry under another key (an earlier attempt with another config or other inputs) could
only serve a rerun of that earlier command, and the next successful run removes the
folder anyway; kept, every failed run after a change added a copy of each stage (a
nightly run failing its gate on new data kept one set of artifacts per night).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import platform
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sslops import __version__
from sslops.artifacts import (
    META,
    git_commit,
    move_into_place,
    package_versions,
    read_meta,
    sha256_file,
)
from sslops.errors import ArtifactError

ENV = "SSLOPS_STAGE_CACHE"


# The config keys each cached stage reads, as dvc.yaml's params list them for `dvc repro`
# (tests/test_cachekey_scope.py checks that dvc.yaml says the same and traces what each stage
# reads against it): a stage's key has these and no other part of the config, so a change
# only later stages read (an audit gate, evaluate's bootstrap) reruns only those. A key
# missing here would hand back a result made with another setting; one too many, a rerun.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "prepare": ("seed", "modality", "data", "prepare", "evaluate.min_group_rows"),
    "pretrain": ("seed", "modality", "data.sensitive", "pretrain"),
    "finetune": ("seed", "modality", "data.sensitive", "finetune", "evaluate.threshold",
                 "evaluate.min_group_rows"),
    "evaluate": ("seed", "modality", "evaluate", "finetune.regularization",
                 "finetune.joint_regularization", "finetune.full", "export.model", "prepare.ood"),
    "export": ("seed", "modality", "data.sensitive", "data.attributes_file", "data.na_values",
               "prepare.sensitive_as_features", "prepare.casefold_categories",
               "prepare.series_length_policy", "export"),
}  # fmt: skip


def scoped(stage: str, config: dict[str, Any]) -> dict[str, Any]:
    """The part of the resolved ``config`` that ``stage`` reads (:data:`STAGE_PARAMS`), by
    param; the whole config for a stage not listed."""
    params = STAGE_PARAMS.get(stage)
    if params is None:
        return config
    found: dict[str, Any] = {}
    for param in params:
        node: Any = config
        for key in param.split("."):
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            found[param] = node
    return found


def key_record(stage: str, config_json: str, inputs: dict[str, Path]) -> dict[str, Any]:
    """What ``stage``'s key is made of (no secret: the PII key is in it as a hash)."""
    try:
        config: Any = scoped(stage, json.loads(config_json))
    except json.JSONDecodeError:
        config = config_json
    return {
        "stage": stage,
        "sslops": __version__,
        "commit": git_commit() or "",
        "code": code_digest(),
        **_environment(),
        "config": config,
        "files": _read_files(stage, config_json),
        "inputs": {name: sha256_file(Path(path) / META) for name, path in inputs.items()},
    }


def stage_key(stage: str, config_json: str, inputs: dict[str, Path]) -> str:
    return _digest(key_record(stage, config_json, inputs))


def _digest(record: dict[str, Any]) -> str:
    text = json.dumps(record, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@functools.cache
def code_digest() -> str:
    """sha256 over every file of the sslops package that runs (its shipped data sets aside:
    a stage reading one keys on it as on any data file)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package).as_posix()
        skipped = "__pycache__" in relative or relative.startswith("datasets/")
        if path.is_file() and not skipped:
            digest.update(f"{relative}={sha256_file(path)}\0".encode())
    return digest.hexdigest()


def _environment() -> dict[str, Any]:
    from sslops.audit.environment import THREAD_VARIABLES

    return {
        "versions": package_versions(),
        "python": platform.python_version(),
        "threads": {name: os.environ.get(name) for name in THREAD_VARIABLES},
        # pretrain.threads / finetune.threads 0 (the default): as many threads as the cores
        # this process may use, and the weights depend on it
        "cpus": [os.cpu_count(), len(getattr(os, "sched_getaffinity", lambda _: [])(0))],
    }


# The config keys naming a file (or a folder, or a glob) each stage reads; the keys of the
# other stages' inputs are artifacts, keyed by their meta.json.
NAMED_FILES: dict[str, list[tuple[str, ...]]] = {
    "prepare": [("data", "train"), ("data", "test"), ("data", "attributes_file"),
                ("prepare", "pii", "key_file")],
    "pretrain": [("pretrain", "init_from")],
}  # fmt: skip


def _read_files(stage: str, config_json: str) -> dict[str, str]:
    """What ``stage`` reads that the config names only by path, or by the name of an
    environment variable: config key (or ``$VARIABLE``) -> the sha256 of its content."""
    try:
        config = json.loads(config_json)
    except json.JSONDecodeError:
        return {}

    def value(*keys: str) -> Any:
        node: Any = config
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return node if isinstance(node, str) and node else None

    named = NAMED_FILES.get(stage, [])
    found = {".".join(keys): _content(spec) for keys in named if (spec := value(*keys))}
    if stage == "prepare":  # the hashing key, when it comes from the environment
        variable = value("prepare", "pii", "key_env") or "SSLOPS_PII_KEY"
        secret = os.environ.get(variable, "").strip()
        if secret:
            # written beside the entry (its key record): a hash of the key, never the key
            found[f"${variable}"] = hashlib.sha256(f"sslops PII key\0{secret}".encode()).hexdigest()
    return found


def _content(spec: str) -> str:
    """The sha256 of the file ``spec`` names, or of each file below its folder or matching
    its glob (with their names, so an added or removed file counts)."""
    from sslops.data.readers import local_path  # pandas: only in the stage's own process

    path = local_path(spec)
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        files = [p for p in sorted(path.rglob("*")) if p.is_file()]
    elif any(ch in spec for ch in "*?["):
        files = [p for p in sorted(map(Path, glob.glob(str(path), recursive=True))) if p.is_file()]
    else:
        return "missing"  # the stage itself fails, naming it
    listing = json.dumps({str(p): sha256_file(p) for p in files})
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def _problem(entry: Path, stage: str) -> str | None:
    """Why a cached entry must not be used, or None."""
    try:
        meta = read_meta(entry, stage)
        for key, source in meta.get("sources", {}).items():
            path = Path(source["path"])
            if not path.is_file() or sha256_file(path) != source["sha256"]:
                return f"raw source {key} ({path}) changed since it was cached"
    except (ArtifactError, OSError, KeyError, TypeError) as exc:
        return str(exc)
    return None


def _copy(source: Path, final: Path) -> None:
    staged = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, staged)
        move_into_place(staged, final)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def cached_stage(
    stage: str, config_json: str, inputs: dict[str, Path], out: Path, run: Callable[[], Path]
) -> Path:
    """``run()`` writes the stage's artifact at ``out``; reuse a verified cached one instead."""
    root = os.environ.get(ENV)
    if not root:
        return run()
    record = key_record(stage, config_json, inputs)
    key = _digest(record)
    entry = Path(root) / f"{stage}-{key}"
    if entry.is_dir():
        problem = _problem(entry, stage)
        if problem is None:
            out.parent.mkdir(parents=True, exist_ok=True)
            _copy(entry, out)
            _drop_others(entry, stage)
            print(f"reused {stage}: finished by an earlier, interrupted run", file=sys.stderr)
            return out
        print(f"not reusing {stage} from {entry}: {problem}", file=sys.stderr)
    else:
        reason = _why_missed(Path(root), stage, record)
        if reason:
            print(f"not reusing {stage} from an earlier run, changed: {reason}", file=sys.stderr)
    result = run()
    entry.parent.mkdir(parents=True, exist_ok=True)
    _copy(result, entry)
    _drop_others(entry, stage)
    _write_record(_record_path(Path(root), stage), {"key": key, "record": record})
    return result


def _record_path(root: Path, stage: str) -> Path:
    """Where the key record of ``stage``'s entry lies (:func:`key_record`, and its key)."""
    return root / f"{stage}.key.json"


def _write_record(path: Path, content: dict[str, Any]) -> None:
    staged = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    staged.write_text(json.dumps(content, sort_keys=True, indent=1), encoding="utf-8")
    os.replace(staged, path)


def _why_missed(root: Path, stage: str, record: dict[str, Any]) -> str | None:
    """What differs between ``record`` and the key of the entry ``stage`` has in the cache
    under another key, as a list; None when there is no such entry."""
    entries = [p for p in root.glob(f"{stage}-*") if p.is_dir()]
    if not entries:
        return None
    try:
        stored = json.loads(_record_path(root, stage).read_text(encoding="utf-8"))
        old = stored["record"] if f"{stage}-{stored['key']}" == entries[0].name else None
    except (OSError, ValueError, KeyError, TypeError):
        old = None
    if not isinstance(old, dict):
        return "unknown (the entry's key record is missing)"
    return "; ".join(key_changes(old, record) or ["the key"])


def key_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two :func:`key_record` s, named without a secret's value."""
    changes: list[str] = []

    def differs(name: str) -> bool:
        return old.get(name) != new.get(name)

    if differs("config"):
        keys = _changed_leaves(old.get("config"), new.get("config"))
        changes.append("config " + _listed(keys) if keys else "config")
    for name in sorted(set(old.get("files", {})) | set(new.get("files", {}))):
        if old.get("files", {}).get(name) != new.get("files", {}).get(name):
            what = f"hashing key (${name[1:]})" if name.startswith("$") else f"content of {name}"
            changes.append(what)
    for name in sorted(set(old.get("inputs", {})) | set(new.get("inputs", {}))):
        if old.get("inputs", {}).get(name) != new.get("inputs", {}).get(name):
            changes.append(f"input artifact {name} (a stage before it ran again)")
    if differs("sslops") or differs("commit") or differs("code"):
        changes.append(f"sslops code (version {old.get('sslops')} -> {new.get('sslops')}, "
                       f"commit {old.get('commit') or '-'} -> {new.get('commit') or '-'}, "
                       "source files " + ("changed" if differs("code") else "the same") + ")")  # fmt: skip
    for name, label in (("versions", "package versions"), ("threads", "thread variables")):
        olds, news = old.get(name) or {}, new.get(name) or {}
        moved = [f"{k} {olds.get(k)} -> {news.get(k)}" for k in sorted(set(olds) | set(news))
                 if olds.get(k) != news.get(k)]  # fmt: skip
        if moved:
            changes.append(f"{label}: {_listed(moved)}")
    if differs("python"):
        changes.append(f"Python: {old.get('python')} -> {new.get('python')}")
    if differs("cpus"):
        changes.append(f"cores (count, usable): {old.get('cpus')} -> {new.get('cpus')}")
    return changes


def _changed_leaves(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted config keys whose values differ between two scoped configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            found += _changed_leaves(old.get(key), new.get(key), name)
        return found
    return [] if old == new else [prefix or "(the whole config)"]


def _listed(items: list[str], most: int = 6) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def _drop_others(entry: Path, stage: str) -> None:
    """Remove ``stage``'s entries under other keys than ``entry``'s, and the half-copied ones
    (``.<stage>-<key>.partial-*``) a kill while caching left, which nothing reads."""
    for other in [*entry.parent.glob(f"{stage}-*"), *entry.parent.glob(f".{stage}-*.partial-*")]:
        if other != entry:
            shutil.rmtree(other, ignore_errors=True)
