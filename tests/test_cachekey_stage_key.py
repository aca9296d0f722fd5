"""What ``sslops run``'s stage cache keys on besides the config and the input artifacts.

A rerun after a failed run reuses each stage whose key is unchanged; an input the key
misses hands back a result computed from other inputs. Each test changes one input the
config names only by path (or does not name at all) and checks the key moves. Found by
the cachekey review; every one of them kept the key on the code before it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sslops import artifacts
from sslops.config import load_config
from sslops.pipeline.stage_cache import ENV, cached_stage, stage_key
from tests.conftest import FAST_OVERRIDES, ROOT, adult_sample

PACKAGE = ROOT / "src" / "sslops"


def _config(**data: object) -> str:
    return json.dumps({"seed": 0, "data": {"format": "csv", **data}})


def test_a_shard_added_to_the_data_folder_misses_and_prepare_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data.train as a folder of shards: the rerun reused prepare made without the new shard
    (2,619 training rows where a fresh prepare has 3,838)."""
    from sslops.prepare import prepare

    monkeypatch.setenv(ENV, str(tmp_path / "cache"))
    shards = tmp_path / "shards"
    shards.mkdir()
    adult_sample(shards / "a.csv", "train", 600, seed=0)
    raw = yaml.safe_load((ROOT / "configs" / "adult.yaml").read_text())
    raw["data"]["train"] = str(shards)
    raw["data"]["test"] = str(adult_sample(tmp_path / "test.csv", "test", 300))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "c.yaml", FAST_OVERRIDES)

    def run(name: str) -> int:
        out = tmp_path / name
        out = cached_stage("prepare", cfg.to_json(), {}, out, lambda: prepare(cfg, out))
        return int(json.loads((out / "datacard.json").read_text())["splits"]["train"]["rows"])

    first = run("first")
    assert run("again") == first  # unchanged: reused
    adult_sample(shards / "b.csv", "train", 600, seed=1)
    monkeypatch.delenv(ENV)
    fresh = run("fresh")
    monkeypatch.setenv(ENV, str(tmp_path / "cache"))
    assert fresh > first
    assert run("rerun") == fresh, "the rerun reused prepare made before the new shard"


def test_files_below_a_folder_or_a_glob_are_keyed_by_content(tmp_path: Path) -> None:
    """An image folder (prepare records no source for a folder) edited in place, same size
    and modification time; a file added to what a glob matches."""
    images = tmp_path / "images" / "cat"
    images.mkdir(parents=True)
    picture = images / "1.png"
    picture.write_bytes(b"\x89PNG one")
    before = stage_key("prepare", _config(train=str(tmp_path / "images")), {})
    stat = picture.stat()
    picture.write_bytes(b"\x89PNG two")
    os.utime(picture, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert stage_key("prepare", _config(train=str(tmp_path / "images")), {}) != before

    (tmp_path / "part-0.csv").write_text("a,b\n1,2\n")
    spec = str(tmp_path / "part-*.csv")
    before = stage_key("prepare", _config(train=spec), {})
    (tmp_path / "part-1.csv").write_text("a,b\n3,4\n")
    assert stage_key("prepare", _config(train=spec), {}) != before


def test_the_records_file_is_keyed_by_content(tmp_path: Path) -> None:
    records = tmp_path / "records.csv"
    records.write_text("item,sex\n1.png,F\n")
    config = _config(train=str(tmp_path), attributes_file=str(records))
    before = stage_key("prepare", config, {})
    records.write_text("item,sex\n1.png,M\n")
    assert stage_key("prepare", config, {}) != before


def _pii_table(path: Path, split: str, rows: int) -> Path:
    adult_sample(path, split, rows)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.insert(0, "customer", [f"{split}{i}" for i in range(len(frame))])
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("where", ["env", "file"])
def test_a_rotated_pii_key_misses_and_prepare_hashes_with_it(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepare.pii.identifiers=hash: the key (prepare.pii.key_file's content, or the
    variable prepare.pii.key_env names) is in no config; the rerun after a rotation kept
    the identifiers hashed with the old key."""
    from sslops.prepare import prepare

    monkeypatch.setenv(ENV, str(tmp_path / "cache"))
    raw = yaml.safe_load((ROOT / "configs" / "adult.yaml").read_text())
    raw["data"].update(
        train=str(_pii_table(tmp_path / "train.csv", "train", 600)),
        test=str(_pii_table(tmp_path / "test.csv", "test", 300)),
        identifiers=["customer"],
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    key_file = tmp_path / "pii.key"
    extra = [f"prepare.pii.key_file={key_file}"] if where == "file" else []
    cfg = load_config(tmp_path / "c.yaml", [*FAST_OVERRIDES, "prepare.pii.identifiers=hash",
                                            *extra])  # fmt: skip

    def key(value: str) -> None:
        if where == "file":
            key_file.write_text(value)
        else:
            monkeypatch.setenv("SSLOPS_PII_KEY", value)

    def hashed(name: str) -> list[str]:
        out = tmp_path / name
        out = cached_stage("prepare", cfg.to_json(), {}, out, lambda: prepare(cfg, out))
        return sorted(pd.read_parquet(out / "train.parquet")["customer"])

    key("first-secret-key-0123456789")
    old = hashed("first")
    key("rotated-secret-key-9876543210")
    monkeypatch.delenv(ENV)
    fresh = hashed("fresh")
    monkeypatch.setenv(ENV, str(tmp_path / "cache"))
    assert fresh != old
    assert hashed("rerun") == fresh, "the rerun kept identifiers hashed with the old key"


def test_pretrain_init_from_is_keyed_by_content(tmp_path: Path) -> None:
    weights = tmp_path / "init.safetensors"
    weights.write_bytes(b"one")
    config = json.dumps({"seed": 0, "pretrain": {"init_from": str(weights)}})
    before = stage_key("pretrain", config, {})
    weights.write_bytes(b"two")
    assert stage_key("pretrain", config, {}) != before


def test_package_versions_thread_counts_and_cores_are_in_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A torch upgraded between the failed run and the rerun (say, to get past the bug that
    failed it), another OMP_NUM_THREADS or other cores: the reused stages' numbers came from
    the other environment, while the audit records this process's for the whole run."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = stage_key("finetune", "{}", {})
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert stage_key("finetune", "{}", {}) != before
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert stage_key("finetune", "{}", {}) == before
    cores = len(getattr(os, "sched_getaffinity", lambda pid: set())(0))
    more = set(range(cores + 1))  # one core more than this process may use, on any machine
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: more, raising=False)
    assert stage_key("finetune", "{}", {}) != before, "threads: 0 uses as many as the cores"
    monkeypatch.undo()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    real = artifacts.version
    monkeypatch.setattr(
        artifacts, "version", lambda name: "99.0" if name == "torch" else real(name)
    )
    assert stage_key("finetune", "{}", {}) != before


def _key_from(package_parent: Path) -> str:
    code = (
        "import sslops; from sslops.pipeline.stage_cache import stage_key; "
        "print(sslops.__file__); print(stage_key('pretrain', '{}', {}))"
    )
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
        cwd=package_parent,
    )  # fmt: skip
    loaded, key = done.stdout.split()
    assert Path(loaded) == package_parent / "sslops" / "__init__.py"  # the copy ran
    return key


def test_an_edit_to_the_code_misses_without_a_new_commit(tmp_path: Path) -> None:
    """The key had the git commit only: a stage edited and not committed (or sslops run from
    an unpacked tree, no git at all) reused what the code before the edit made."""
    copy = tmp_path / "src" / "sslops"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "datasets"))
    before = _key_from(copy.parent)
    assert _key_from(copy.parent) == before  # the same code: the same key
    stage = copy / "pretrain" / "stage.py"
    stage.write_text(stage.read_text() + "\nEDITED = True\n")
    assert _key_from(copy.parent) != before
