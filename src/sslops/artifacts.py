"""Artifact directories: payload files plus a ``meta.json`` for lineage.

Every stage writes its outputs through :func:`write_artifact`, which builds the
directory under a temporary sibling name and renames it into place only after
every file is written, hashed and fsynced: a killed stage leaves no
half-artifact. ``meta.json`` records the stage, the resolved config, the sha256
of each payload file, the inputs (by path and by the sha256 of their own
``meta.json``), package versions, git commit, host and times. Readers verify the
hashes so a modified or truncated artifact is never used silently.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sslops import __version__
from sslops.errors import ArtifactError, SslopsError, describe_os_error

META = "meta.json"
LOCATIONS_ENV = "SSLOPS_FINAL_LOCATIONS"
_STORAGE_FULL_OR_READ_ONLY = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS}
_TRACKED_PACKAGES = (  # besides sslops itself
    "torch", "numpy", "pandas", "scikit-learn", "fairlearn", "onnx", "onnxruntime", "kfp",
)  # fmt: skip


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def strict_json(payload: Any) -> Any:
    """``payload`` with every float that is not finite (NaN: an undefined ROC AUC or gap; inf)
    as None, recursively through dicts, lists and tuples. JSON has no NaN: ``json.dumps``
    writes a bare ``NaN`` that Go, jq and ``JSON.parse`` refuse, so every file sslops writes
    says null there instead (and, where the file has notes, why)."""
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if isinstance(payload, dict):
        return {key: strict_json(value) for key, value in payload.items()}
    if isinstance(payload, list | tuple):
        return [strict_json(value) for value in payload]
    return payload


def null_as_nan(payload: Any) -> Any:
    """The inverse of :func:`strict_json` for the evaluate stage's files (``metrics.json``,
    ``ood.json``, ``shortcuts.json``), where null is always an undefined number: every None
    as NaN, so that readers inside sslops compute with it as they do with the in-memory
    values (a gate on an undefined gap fails as undefined instead of "nothing to measure";
    a change between an undefined and a defined value is undefined, not a TypeError).
    Files written before strict JSON hold the bare NaN, which ``json.loads`` reads as NaN
    too."""
    if payload is None:
        return math.nan
    if isinstance(payload, dict):
        return {key: null_as_nan(value) for key, value in payload.items()}
    if isinstance(payload, list):
        return [null_as_nan(value) for value in payload]
    return payload


def json_text(payload: Any, **options: Any) -> str:
    """The one way sslops turns a payload into JSON text (files, ``--json`` output, digests):
    :func:`strict_json` of it, and ``allow_nan=False`` so that nothing non-standard slips by.
    ``options`` go to ``json.dumps`` (``indent``, ``sort_keys``, ...)."""
    return json.dumps(strict_json(payload), allow_nan=False, **options)


def write_json(path: Path, payload: Any) -> None:
    """Write one JSON payload file of an artifact: indented, ASCII, newline-terminated, strict
    (:func:`json_text`: null, never NaN)."""
    path.write_text(json_text(payload, indent=2) + "\n", encoding="utf-8")


def final_location(path: Path | str) -> str:
    """Where the artifact at ``path`` will be once the run that writes it has ended.

    ``sslops run`` builds its artifacts under KFP's pipeline root in a staging folder
    (``<root>/<run id>/<task>/<output>``) and moves each to ``<out>/<folder>`` when the run
    succeeds. It passes that mapping to the tasks in ``SSLOPS_FINAL_LOCATIONS`` (JSON:
    ``root``, ``out`` and ``folders``, ``"<task>/<output>"`` -> folder), so lineage in
    ``meta.json`` and the audit bundle names folders that exist after the run, not deleted
    staging ones. Any other path (a cluster run, a stage command) is returned as given.
    """
    spec = os.environ.get(LOCATIONS_ENV)
    mapping = json.loads(spec) if spec else None
    if mapping is None or not Path(path).is_relative_to(mapping["root"]):
        return str(path)
    parts = Path(path).relative_to(mapping["root"]).parts
    folder = mapping["folders"].get("/".join(parts[1:3]))
    return str(Path(mapping["out"], folder, *parts[3:])) if folder else str(path)


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` except ``meta.json``, keyed by POSIX relative path."""
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() != META
    }


def package_versions() -> dict[str, str]:
    found = {"sslops": __version__}  # the running tree's, which install metadata may lag
    for name in _TRACKED_PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def git_commit() -> str | None:
    """The commit of the source tree sslops runs from, when it is a git checkout.

    None for an installed sslops, also when the environment it is installed in lies inside
    some other repository (a deployment repo's .venv): that repository's commit does not
    hold the code that ran. Git must track this very file for its HEAD to count.
    """
    here = Path(__file__).resolve()

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args], cwd=here.parent, capture_output=True, text=True, timeout=5, check=False
        )

    try:
        if git("ls-files", "--error-unmatch", "--", here.name).returncode != 0:
            return None
        out = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable: a rename is an entry of its folder, which a
    power loss can take back until the folder itself is synced (where the file system
    allows a folder to be opened and synced; elsewhere nothing is done)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def new_file_mode() -> int:
    """The mode ``open`` gives a new file: 0666 less the process umask (0644 under 022)."""
    return 0o666 & ~process_umask()


def new_folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder: 0777 less the process umask (0755 under 022)."""
    return 0o777 & ~process_umask()


def process_umask() -> int:
    """The process umask, read without changing it where Linux shows it (setting it to read
    it back would, for that instant, apply to files other threads create)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)  # elsewhere: set and restore, the most private value meanwhile
    os.umask(umask)
    return umask


def _modes_as_open(root: Path) -> None:
    """Every payload file gets the mode a new file gets: safetensors (like mkstemp) writes
    0600 whatever the umask, so the weights alone were unreadable to the group, the next
    pod's user or the reviewer that could read every other file of the artifact."""
    mode = new_file_mode()
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and (path.stat().st_mode & 0o777) != mode:
            path.chmod(mode)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# stage -> (when its function began, UTC ISO; the monotonic clock then), for write_artifact
_STAGE_CLOCKS: ContextVar[dict[str, tuple[str, float]]] = ContextVar("sslops_stage_clocks")
_P = ParamSpec("_P")
_R = TypeVar("_R")


def timed_stage(stage: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorate a stage function: the artifact ``stage`` it writes records in its meta.json
    when the stage's work began and how long it took to the finished artifact
    (``stage_started``, ``stage_seconds``), not only when its files were written (``started``:
    a stage writes its artifact at its end). The outermost call times it (``pretrain`` around
    ``run_pretrain``); a torchrun rank, its own process, times from its own start."""

    def decorate(function: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(function)
        def timed(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            clocks = _STAGE_CLOCKS.get({})
            if stage in clocks:
                return function(*args, **kwargs)
            token = _STAGE_CLOCKS.set({**clocks, stage: (_now(), time.monotonic())})
            try:
                return function(*args, **kwargs)
            finally:
                _STAGE_CLOCKS.reset(token)

        return timed

    return decorate


def _containers(source: Path) -> list[Path]:
    """The folders that writing below would modify ``source``: a folder itself, the artifact
    holding a file, and the artifact holding either (a bundle/ inside its audit artifact)."""
    if source.is_dir():
        folders = [source]
    elif source.is_file() and (source.parent / META).is_file():
        folders = [source.parent]
    else:
        return []  # a file outside any artifact, or nothing there
    if (folders[0].parent / META).is_file():
        folders.append(folders[0].parent)
    return folders


def check_replaceable(
    final: Path, what: str, marker: str = META, stage: str | None = None,
    inputs: Iterable[Path | None] = (),
) -> None:  # fmt: skip
    """``final`` may become a new ``what`` when it does not exist, is an empty folder, or holds
    an earlier one (its ``marker`` file; an artifact of the same ``stage``). Anything else is
    the user's (``--out ~/Documents``, or the prepare artifact given to ``pretrain --out`` by
    mistake): refused before any work, since replacing the folder would delete it. So is a
    ``final`` inside one of the ``inputs`` (or the artifact holding an input file): writing
    there would add files to an input, whose hashes would then no longer match."""
    final = Path(final)
    for source in (Path(s) for s in inputs if s is not None):
        for folder in _containers(source):
            if final.resolve().is_relative_to(folder.resolve()):
                raise ArtifactError(
                    f"{final} is inside {folder}, an input of the {what}, which writing there "
                    "would modify; nothing was written: choose a folder outside it"
                )
    if not final.exists():
        return
    if not final.is_dir():
        raise ArtifactError(f"{final} is a file; expected a folder to write the {what} into")
    entries = sorted(p.name for p in final.iterdir())
    if not entries:
        return
    if (final / marker).is_file():
        if stage is None:
            return
        try:
            earlier = json.loads((final / marker).read_text(encoding="utf-8")).get("stage")
        except (OSError, ValueError, AttributeError):
            earlier = None
        if earlier == stage:
            return
        if isinstance(earlier, str):
            raise ArtifactError(
                f"{final} holds a {earlier} artifact, which writing the {what} there would "
                "delete; nothing was written: choose another folder"
            )
    shown = ", ".join(entries[:3]) + (f", ... ({len(entries)} entries)" if len(entries) > 3 else "")
    raise ArtifactError(
        f"{final} exists and holds files that are not an earlier {what} ({shown}), which "
        "writing it there would delete; nothing was written: choose a new or empty folder"
    )


def _holder(lock: Any) -> tuple[str, str]:
    """(process id, command) that a writer wrote into the lock file it holds (or held), or
    empty strings (a lock file of an earlier version holds the process id alone)."""
    lock.seek(0)
    pid, _, command = lock.read(200).decode("ascii", "replace").strip().partition(" ")
    return (pid, " ".join(command.split())) if pid.isdigit() else ("", "")


@contextlib.contextmanager
def output_lock(
    out: Path, command: str, remedy: str = "wait for it to end, or choose another --out"
) -> Iterator[None]:
    """Hold ``.<out>.lock`` (``flock``) for the block: one sslops command writes ``out`` at a
    time. ``sslops run``, every command that writes an artifact folder (the stage commands
    and :func:`sslops.run_stage`, ``sslops shadow``, ``sslops audit reproduce``) and
    ``sslops predict`` (its file) hold it from the check of ``out`` to the rename, so two
    of them started together do not
    both compute and then silently replace each other's result (or, first writes, fail at
    the rename with "Directory not empty"); pretrain holds it on its checkpoint folder while
    it trains (a ``pretrain.checkpoint_dir`` two runs name is written by one). The
    second is refused at once, naming the holder: the file holds its process id and
    ``command`` ("run", "prepare", ...); ``remedy`` ends the refusal.

    The lock file is removed on the way out, while still locked; a writer that opened it
    just before checks that it locked the file that is still there, and opens the path
    again when it did not (its holder ended in between). A SIGKILLed holder
    leaves the file (not the lock), which the next writer takes over, saying so.

    The folders above ``out`` that this call makes are removed on the way out if they are
    empty then: a command refused under the lock (bad data) leaves no empty folders."""
    out = Path(out)
    made = list(itertools.takewhile(lambda p: not p.exists(), [out.parent, *out.parent.parents]))
    path = out.parent / f".{out.name}.lock"

    def busy(pid: str, held_by: str) -> SslopsError:
        holder = f"another sslops {held_by or 'command'}" + (f" (process {pid})" if pid else "")
        return SslopsError(f"{holder} is writing {out} (lock {path}); {remedy}")

    opened = False
    for _ in range(3):
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock = open(path, "a+b")  # noqa: SIM115 (closed below, or by the with block)
        except FileNotFoundError:  # the writer that made the folder removed it, empty, as it ended
            continue
        opened = True
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(lock)
            lock.close()
            raise busy(*holder) from None
        try:
            same = os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        # Its holder ended between our open and our lock, and removed the file it held:
        # nobody holds the path now, so open it again (a new holder then refuses us).
        lock.close()
    else:
        if not opened and out.parent.is_dir():  # there, but no file can be made in it (/proc)
            raise SslopsError(
                f"cannot create the lock file {path} for {out}: {out.parent} takes no new "
                "files; expected an output path in a folder sslops can write"
            )
        raise busy("", "")
    with lock:
        killed, killed_command = _holder(lock)  # one that ended normally removed the file
        if killed:
            print(f"taking over the lock {path} of an sslops {killed_command or 'command'} "
                  f"(process {killed}) that was killed", file=sys.stderr)  # fmt: skip
        lock.truncate(0)
        lock.write(f"{os.getpid()} {command}\n".encode("ascii", "replace"))
        lock.flush()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            for folder in made:  # the deepest first; one that holds anything stays, and those above
                try:
                    folder.rmdir()
                except OSError:
                    break


@contextlib.contextmanager
def replacing(
    out: Path, command: str, what: str, marker: str = META, stage: str | None = None,
    inputs: Iterable[Path | None] = (),
) -> Iterator[None]:  # fmt: skip
    """For the block, ``out`` is this command's to write: :func:`check_replaceable` (the
    arguments after ``what`` are its), then :func:`output_lock`, then the check again under
    the lock (another writer may have replaced ``out`` in between). Bad input is refused
    before the lock file, or the folder that holds it, is made."""
    out, inputs = Path(out), list(inputs)
    check_replaceable(out, what, marker, stage, inputs)
    with output_lock(out, command):
        check_replaceable(out, what, marker, stage, inputs)
        yield


# ``.<name>.old-<hex>``: an earlier ``<name>`` moved aside while its replacement is renamed in.
OLD_PREFIX = ".{name}.old-"


def move_into_place(staged: Path, final: Path) -> None:
    """Rename a complete ``staged`` directory to ``final``, replacing an earlier ``final``
    only once the new one is ready (the old one is moved aside, then deleted). If the new one
    cannot be renamed into place (an I/O error, a full directory), the old one is put back
    before the error is raised, so ``final`` never goes missing.

    Another writer of ``final`` that does not hold its :func:`output_lock` (a program
    calling the stage functions itself) may rename its own in between these renames: then
    the one renamed last stays, whole, and neither fails ("Directory not empty", "No such
    file or directory" before) nor leaves its moved-aside folder behind."""
    while True:
        old = None
        if final.exists():
            old = final.parent / f"{OLD_PREFIX.format(name=final.name)}{uuid.uuid4().hex[:8]}"
            try:
                final.rename(old)
            except FileNotFoundError:  # another writer moved it aside first: look again
                continue
        try:
            staged.rename(final)
        except BaseException as exc:
            # ENOTEMPTY/EEXIST: another writer renamed its own into place meanwhile, which
            # ours replaces (the earlier one is stale); any other error puts it back
            raced = isinstance(exc, OSError) and exc.errno in (errno.ENOTEMPTY, errno.EEXIST)
            if old is not None and raced:
                shutil.rmtree(old, ignore_errors=True)
            elif old is not None:
                old.rename(final)
            if raced:
                continue
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        break
    fsync_folder(final.parent)


def _remove_abandoned(final: Path, keep: Path) -> None:
    """Remove the staging folders of ``final`` that no live process holds (their writer was
    killed: each writer holds a lock on its folder until it ends), and name each on stderr."""
    left = f".{final.name}."  # .partial-*, or .new-* where a writer was killed before its lock
    for stale in [*final.parent.glob(f"{left}partial-*"), *final.parent.glob(f"{left}new-*")]:
        if stale == keep or not stale.is_dir():
            continue
        try:
            fd = os.open(stale, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a writer is filling it now
            continue
        else:
            shutil.rmtree(stale, ignore_errors=True)
            print(f"removed {stale}, left by an interrupted write of {final}", file=sys.stderr)
        finally:
            os.close(fd)


@contextlib.contextmanager
def staging_folder(final: Path) -> Iterator[Path]:
    """A new hidden sibling of ``final`` (``.<name>.partial-<hex>``) to fill, locked for as
    long as this process holds it, so a later writer of ``final`` can tell it from the folder
    of a killed one, which it removes. It is locked before it gets the name others look
    for. Removing or renaming the folder is the caller's.

    A writer killed between creating its folder (``.<name>.new-<hex>``) and locking it left
    it unlocked: the next writer removes that one too. Should it remove a live writer's
    folder in that instant, that writer finds its folder gone and starts again."""
    while True:
        suffix = uuid.uuid4().hex[:8]
        fresh = final.parent / f".{final.name}.new-{suffix}"
        fresh.mkdir()
        try:
            fd = os.open(fresh, os.O_RDONLY)
        except FileNotFoundError:  # removed as abandoned before it was opened
            continue
        except BaseException:
            fresh.rmdir()
            raise
        staged = final.parent / f".{final.name}.partial-{suffix}"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            fresh.rename(staged)
        except FileNotFoundError:  # removed as abandoned before it was locked
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                fresh.rmdir()
            raise
        break
    try:
        _remove_abandoned(final, staged)
        yield staged
    finally:
        os.close(fd)


@contextlib.contextmanager
def write_artifact(
    final: Path,
    stage: str,
    config: dict[str, Any],
    inputs: dict[str, Path] | None = None,
    sources: dict[str, Path] | None = None,
) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it becomes ``final`` with a meta.json.

    ``inputs`` are upstream artifacts (recorded by the hash of their meta.json);
    ``sources`` are raw files (recorded by their own hash). An existing ``final`` is
    replaced only after the new one is complete. On any
    error the temporary directory is removed and ``final`` is left as it was.
    """
    final = Path(final)
    check_replaceable(final, f"{stage} artifact", stage=stage,
                      inputs=[*(inputs or {}).values(), *(sources or {}).values()])  # fmt: skip
    with contextlib.ExitStack() as hold:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = hold.enter_context(staging_folder(final))
        except OSError as exc:  # a read-only or full disk: name the folder asked for, not tmp
            reason = " ".join((exc.strerror or str(exc)).split())
            raise ArtifactError(
                f"{final} cannot be written: {reason} (in {final.parent})"
            ) from None
        started = _now()
        try:
            input_meta = {
                name: {"path": final_location(path), "meta_sha256": sha256_file(Path(path) / META)}
                for name, path in (inputs or {}).items()
            }
            source_meta = {
                key: {"path": str(path), "sha256": sha256_file(Path(path))}
                for key, path in (sources or {}).items()
            }
            yield tmp
            meta: dict[str, Any] = {
                "stage": stage,
                "config": config,
                "inputs": input_meta,
                "sources": source_meta,
                "files": hash_tree(tmp),
                "versions": package_versions(),
                "git_commit": git_commit(),
                "host": platform.node(),
                "python": platform.python_version(),
                "started": started,
                "ended": _now(),
            }
            clock = _STAGE_CLOCKS.get({}).get(stage)
            if clock is not None:
                meta["stage_started"] = clock[0]
                meta["stage_seconds"] = round(time.monotonic() - clock[1], 1)
            (tmp / META).write_text(
                json_text(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
            _modes_as_open(tmp)
            _fsync_tree(tmp)
            move_into_place(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno in _STORAGE_FULL_OR_READ_ONLY:  # name the artifact, not only the file
                raise ArtifactError(f"{final} was not written: {describe_os_error(exc)}") from None
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def read_meta(path: Path, stage: str | None = None, verify: bool = True) -> dict[str, Any]:
    """Load an artifact's meta.json, check it is from ``stage`` and that no file changed."""
    path = Path(path)
    meta_path = path / META
    what = f"an sslops {stage} artifact" if stage else "an sslops artifact"
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; expected {what} folder")
    if not path.is_dir():
        raise ArtifactError(f"{path} is a file; expected {what} folder")
    if not meta_path.is_file():
        raise ArtifactError(f"{path} is not {what}: {META} is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{meta_path} is not valid JSON: {exc}") from None
    problem = _meta_problem(meta)
    if problem:
        raise ArtifactError(f"{meta_path} is damaged: {problem}")
    if stage is not None and meta["stage"] != stage:
        found = meta["stage"]
        raise ArtifactError(
            f"{path} is {'an' if found[:1] in 'aeiou' else 'a'} {found} artifact; expected {what}"
        )
    if verify:
        actual = hash_tree(path)
        expected = meta["files"]
        for name in sorted(set(expected) | set(actual)):
            if name not in actual:
                raise ArtifactError(f"{path / name} is missing (listed in {META})")
            if name not in expected:
                raise ArtifactError(f"{path / name} was added after the artifact was written")
            if actual[name] != expected[name]:
                raise ArtifactError(f"{path / name} was modified: sha256 differs from {META}")
    return meta


def _meta_problem(meta: Any) -> str | None:
    """What makes ``meta`` not the meta.json that :func:`write_artifact` writes, or None."""
    if not isinstance(meta, dict):
        return f"expected a JSON object, found {type(meta).__name__}"
    if not isinstance(meta.get("stage"), str) or not meta["stage"]:
        return 'no "stage" names the stage that wrote it'
    files = meta.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        return 'expected "files" to map each file to its sha256'
    inputs = meta.get("inputs", {})
    if not isinstance(inputs, dict) or not all(isinstance(v, dict) for v in inputs.values()):
        return 'expected "inputs" to map each input to its {"path", "meta_sha256"}'
    return None


INPUT_STAGE = {
    "prepared": "prepare", "pretrained": "pretrain", "finetuned": "finetune",
    "evaluation": "evaluate", "exported": "export",
}  # fmt: skip
"""The stage that writes each input artifact, by its role (the stage commands' flag)."""


def check_lineage(*paths: Path) -> None:
    """Refuse artifacts of different runs given together: where one of ``paths`` records an
    upstream artifact (``inputs`` in its meta.json) of a stage that another of ``paths`` is,
    both must be the same artifact (equal meta.json hashes). A stage would otherwise apply
    an encoder to data it was not trained on (a shape error at best), and an audit bundle
    would describe a chain that never ran."""
    metas = {Path(p): read_meta(Path(p), verify=False) for p in paths}
    given = {meta.get("stage"): (path, sha256_file(path / META)) for path, meta in metas.items()}
    for path, meta in metas.items():
        for role, record in sorted(meta.get("inputs", {}).items()):  # checked by read_meta
            stage = INPUT_STAGE.get(role, role)
            if stage not in given or given[stage][1] == record.get("meta_sha256"):
                continue
            other, digest = given[stage]
            raise ArtifactError(
                f"{path} was made from another {stage} artifact than {other}: it records "
                f"{record.get('path')} (meta.json sha256 {str(record.get('meta_sha256'))[:12]}), "
                f"the one given has {digest[:12]}; pass the artifacts of one run, or rerun "
                f"{meta.get('stage')} on {other}"
            )
