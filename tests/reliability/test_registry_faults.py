"""The audit registry under faults: a full disk while filing, a filing killed at any moment.

A filing killed at any of its renames leaves the registry as it was, or with the bundle's
zip filed and its index entry not yet written, which ``check_registry`` names (and the
next filing of that bundle completes); what a killed filing leaves besides (hidden
``.tmp`` files) is never read and is removed by the next filing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sslops.audit import audit
from sslops.audit.registry import check_registry, file_bundle, list_registry
from sslops.config import Config
from tests.reliability.faults import file_size_limit

pytestmark = pytest.mark.reliability

_UPSTREAM = ("prepare", "pretrain", "finetune", "evaluate", "export")


@pytest.fixture(scope="module")
def two_bundles(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    root = tmp_path_factory.mktemp("registry-faults")
    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    raw = small_config.model_dump(mode="json")
    raw["audit"]["owner"] = "model risk"  # another config: another manifest
    other = Config.model_validate(raw)
    return [audit(small_config, upstream, root / "a"), audit(other, upstream, root / "b")]


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _file_command(bundle: Path, registry: Path) -> list[str]:
    return [sys.executable, "-m", "sslops.cli", "audit", "file", str(bundle),
            "--registry", str(registry), "--model", "income"]  # fmt: skip


def test_full_disk_while_filing_is_one_clean_error_and_changes_nothing(
    two_bundles: list[Path], tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    file_bundle(two_bundles[0], registry, model="income")
    before = _tree(registry)
    assert (two_bundles[1] / "bundle.zip").stat().st_size > 64 * 1024
    done = subprocess.run(
        _file_command(two_bundles[1], registry), capture_output=True, text=True,
        preexec_fn=file_size_limit(64 * 1024), timeout=120,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert _tree(registry) == before  # no zip, no entry, no temporary file
    assert check_registry(registry) == []


# The child files a bundle with os.replace patched to kill the process (os._exit, no
# clean-up runs, as SIGKILL) just before or just after its N-th rename: every point where a
# filing makes something visible (the marker of a new registry, the zip, the index).
_KILLED_AT = """
import os, sys
from sslops.cli import main
point, when = int(sys.argv[1]), sys.argv[2]
real, count = os.replace, 0
def replace(src, dst):
    global count
    count += 1
    if count == point and when == "before":
        os._exit(9)
    real(src, dst)
    if count == point and when == "after":
        os._exit(9)
os.replace = replace
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("new_registry", [False, True], ids=["existing", "new"])
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("point", [1, 2, 3])
def test_a_filing_killed_at_any_rename_leaves_a_registry_that_verifies(
    two_bundles: list[Path], tmp_path: Path, point: int, when: str, new_registry: bool
) -> None:
    registry = tmp_path / "registry"
    if not new_registry:
        file_bundle(two_bundles[0], registry, model="income")
    before = _tree(registry) if registry.exists() else {}
    command = [
        sys.executable,
        "-c",
        _KILLED_AT,
        str(point),
        when,
        *_file_command(two_bundles[1], registry)[3:],
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    renames = 3 if new_registry else 2  # (marker), zip, index
    if point > renames:  # no such rename: the filing completes
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 9, done.stderr
    problems = check_registry(registry) if (registry / "registry.json").exists() else []
    orphan = (
        f"bundles/{_sha(two_bundles[1])}.zip is filed in no model's index (a filing interrupted"
    )
    assert problems == [] or (len(problems) == 1 and problems[0].startswith(orphan)), problems
    if when == "before" and point == 1:  # killed before its first rename: nothing visible
        assert _visible(registry) == _visible_of(before)
    # The next filing completes it (or finds it filed) and clears what the killed one left.
    file_bundle(two_bundles[1], registry, model="income")
    assert check_registry(registry) == []
    assert len(list_registry(registry, "income")) == (1 if new_registry else 2)
    assert not [p for p in registry.rglob("*") if p.name.endswith(".tmp")]


def _visible_of(tree: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in tree.items() if k != ".lock" and not k.endswith(".tmp")}


def _visible(registry: Path) -> dict[str, bytes]:
    return _visible_of(_tree(registry)) if registry.exists() else {}


def _sha(audit_dir: Path) -> str:
    import hashlib

    return hashlib.sha256((audit_dir / "bundle" / "manifest.json").read_bytes()).hexdigest()
