"""Reuse of finished stages when ``sslops run`` is started again after an interruption.

``sslops run`` points ``SSLOPS_STAGE_CACHE`` at a folder beside its output folder
(``.<out>.stages``) and removes it once the run succeeded. A task whose stage
finishes copies its artifact there under ``<stage>-<key>``; a later task with the
same key copies it back instead of running the stage. The key is the sha256 of

- the stage name, the sslops version and the git commit of the running code,
- the whole resolved config (any change, even an unrelated one, misses), and
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

import hashlib
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from sslops import __version__
from sslops.artifacts import META, git_commit, move_into_place, read_meta, sha256_file
from sslops.errors import ArtifactError

ENV = "SSLOPS_STAGE_CACHE"


def stage_key(stage: str, config_json: str, inputs: dict[str, Path]) -> str:
    digest = hashlib.sha256()
    for part in (stage, __version__, git_commit() or "", config_json):
        digest.update(part.encode("utf-8") + b"\0")
    for name in sorted(inputs):
        digest.update(f"{name}={sha256_file(Path(inputs[name]) / META)}\0".encode())
    return digest.hexdigest()[:32]


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
