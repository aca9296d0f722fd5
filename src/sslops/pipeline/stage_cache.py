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
- the whole resolved config (any change, even an unrelated one, misses);
- the files the stage reads that the config names only by path: for prepare every file
  of ``data.train`` / ``data.test`` (a folder's or a glob's, so a shard added under the
  same path misses), ``data.attributes_file`` and the PII hashing key
  (``prepare.pii.key_file``'s content or the variable ``prepare.pii.key_env`` names:
  a rotated key misses); for pretrain ``pretrain.init_from``; and
- the sha256 of each input artifact's ``meta.json`` (which lists the sha256 of every
  file in it), so a changed upstream result never meets a stale downstream one.

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


def stage_key(stage: str, config_json: str, inputs: dict[str, Path]) -> str:
    digest = hashlib.sha256()
    parts = (stage, __version__, git_commit() or "", code_digest(), _environment(), config_json)
    for part in parts:
        digest.update(part.encode("utf-8") + b"\0")
    for name, content in sorted(_read_files(stage, config_json).items()):
        digest.update(f"{name}={content}\0".encode())
    for name in sorted(inputs):
        digest.update(f"{name}={sha256_file(Path(inputs[name]) / META)}\0".encode())
    return digest.hexdigest()[:32]


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


def _environment() -> str:
    from sslops.audit.environment import THREAD_VARIABLES

    record = {
        "versions": package_versions(),
        "python": platform.python_version(),
        "threads": {name: os.environ.get(name) for name in THREAD_VARIABLES},
        # pretrain.threads / finetune.threads 0 (the default): as many threads as the cores
        # this process may use, and the weights depend on it
        "cpus": [os.cpu_count(), len(getattr(os, "sched_getaffinity", lambda _: [])(0))],
    }
    return json.dumps(record, sort_keys=True)


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
            found[f"${variable}"] = hashlib.sha256(secret.encode()).hexdigest()
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
    return json.dumps({str(p): sha256_file(p) for p in files})


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
    entry = Path(root) / f"{stage}-{stage_key(stage, config_json, inputs)}"
    if entry.is_dir():
        problem = _problem(entry, stage)
        if problem is None:
            out.parent.mkdir(parents=True, exist_ok=True)
            _copy(entry, out)
            _drop_others(entry, stage)
            print(f"reused {stage}: finished by an earlier, interrupted run", file=sys.stderr)
            return out
        print(f"not reusing {stage} from {entry}: {problem}", file=sys.stderr)
    result = run()
    entry.parent.mkdir(parents=True, exist_ok=True)
    _copy(result, entry)
    _drop_others(entry, stage)
    return result


def _drop_others(entry: Path, stage: str) -> None:
    """Remove ``stage``'s entries under other keys than ``entry``'s, and the half-copied ones
    (``.<stage>-<key>.partial-*``) a kill while caching left, which nothing reads."""
    for other in [*entry.parent.glob(f"{stage}-*"), *entry.parent.glob(f".{stage}-*.partial-*")]:
        if other != entry:
            shutil.rmtree(other, ignore_errors=True)
