"""The stage cache behind ``sslops run``'s reuse: what hits, what must miss (default suite; fast).

A rerun must never reuse a stage whose config, input artifacts or raw data changed,
nor an entry that is damaged or half-copied.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sslops.artifacts import write_artifact
from sslops.config import Config
from sslops.pipeline.stage_cache import ENV, cached_stage


def producer(calls: list[str], stage: str, text: str, sources: dict[str, Path] | None = None):
    def run_into(out: Path):
        def run() -> Path:
            calls.append(stage)
            with write_artifact(out, stage, {"text": text}, sources=sources) as tmp:
                (tmp / "payload.txt").write_text(text)
            return out

        return run

    return run_into


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_same_key_is_reused_and_any_change_misses(tmp_path: Path, cache: Path) -> None:
    raw = tmp_path / "raw.csv"
    raw.write_text("a,b\n1,2\n")
    calls: list[str] = []
    make = producer(calls, "prepare", "v1", {"data.train": raw})
    first = cached_stage("prepare", '{"seed": 0}', {}, tmp_path / "a", make(tmp_path / "a"))
    second = cached_stage("prepare", '{"seed": 0}', {}, tmp_path / "b", make(tmp_path / "b"))
    assert calls == ["prepare"]
    assert (second / "meta.json").read_bytes() == (first / "meta.json").read_bytes()
    cached_stage("prepare", '{"seed": 1}', {}, tmp_path / "c", make(tmp_path / "c"))
    assert calls == ["prepare"] * 2, "another config must miss"
    raw.write_text("a,b\n1,3\n")
    cached_stage("prepare", '{"seed": 0}', {}, tmp_path / "d", make(tmp_path / "d"))
    assert calls == ["prepare"] * 3, "changed raw data must miss"

    # downstream: keyed by the input artifact's meta.json hash
    down = producer(calls, "pretrain", "w")
    cached_stage("pretrain", "{}", {"prepared": first}, tmp_path / "p1", down(tmp_path / "p1"))
    cached_stage("pretrain", "{}", {"prepared": first}, tmp_path / "p2", down(tmp_path / "p2"))
    assert calls.count("pretrain") == 1
    other = tmp_path / "d"  # same stage and config as `first`, other raw data
    cached_stage("pretrain", "{}", {"prepared": other}, tmp_path / "p3", down(tmp_path / "p3"))
    assert calls.count("pretrain") == 2, "a changed input artifact must miss"


def test_damaged_or_partial_entries_are_never_used(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []
    make = producer(calls, "prepare", "v1")
    cached_stage("prepare", "{}", {}, tmp_path / "a", make(tmp_path / "a"))
    (entry,) = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    (entry / "payload.txt").write_text("v2")  # modified after it was cached
    out = cached_stage("prepare", "{}", {}, tmp_path / "b", make(tmp_path / "b"))
    assert calls == ["prepare"] * 2 and (out / "payload.txt").read_text() == "v1"
    assert "not reusing prepare" in capsys.readouterr().err
    # a half-copied entry (a kill while caching) is a hidden temporary folder: never read
    (entry / "meta.json").unlink()
    (cache / f".{entry.name}.partial-0000").mkdir()
    cached_stage("prepare", "{}", {}, tmp_path / "c", make(tmp_path / "c"))
    assert calls == ["prepare"] * 3
    assert json.loads((entry / "meta.json").read_text())["stage"] == "prepare"


def test_the_cache_keeps_one_entry_per_stage_across_failed_attempts(
    tmp_path: Path, cache: Path
) -> None:
    """Each failed run after a change (another config, new raw data) used to add a copy of
    every stage; a nightly run failing its gate kept one set of artifacts per night."""
    raw = tmp_path / "raw.csv"
    calls: list[str] = []
    for night in range(4):
        raw.write_text(f"a,b\n1,{night}\n")  # new data each night, same config
        make = producer(calls, "prepare", "v1", {"data.train": raw})
        prepared = cached_stage(
            "prepare", "{}", {}, tmp_path / f"p{night}", make(tmp_path / f"p{night}")
        )
        down = producer(calls, "pretrain", "w")(tmp_path / f"t{night}")
        cached_stage("pretrain", "{}", {"prepared": prepared}, tmp_path / f"t{night}", down)
    assert calls == ["prepare", "pretrain"] * 4, "every night's data must miss"
    entries = sorted(p.name.partition("-")[0] for p in cache.iterdir() if p.is_dir())
    assert entries == ["prepare", "pretrain"], entries
    # a kill while caching left a hidden half copy, which the next entry of that stage removes
    (cache / ".prepare-0000.partial-0000").mkdir()
    kept = cache / ".pretrain-0000.partial-0000"
    kept.mkdir()
    make = producer(calls, "prepare", "v1", {"data.train": raw})
    cached_stage("prepare", '{"seed": 1}', {}, tmp_path / "c", make(tmp_path / "c"))
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) == [kept.name]
    # a rerun that reuses the entry keeps it
    again = cached_stage("prepare", '{"seed": 1}', {}, tmp_path / "d", make(tmp_path / "d"))
    assert calls.count("prepare") == 5 and (again / "payload.txt").read_text() == "v1"
    assert len(list(cache.glob("prepare-*"))) == 1


def test_without_the_environment_variable_nothing_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    calls: list[str] = []
    make = producer(calls, "prepare", "v1")
    for name in ("a", "b"):
        cached_stage("prepare", "{}", {}, tmp_path / name, make(tmp_path / name))
    assert calls == ["prepare"] * 2


def test_a_second_run_into_the_same_folder_is_refused(small_config: Config, tmp_path: Path) -> None:
    import fcntl

    from sslops.errors import SslopsError
    from sslops.pipeline.local import run_local

    out = tmp_path / "run"
    stale = tmp_path / ".run.partial-deadbeef"
    stale.mkdir()
    with open(tmp_path / ".run.lock", "a+b") as held:  # another run holds the folder
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(SslopsError, match="another sslops command is writing"):
            run_local(small_config, out)
    assert stale.is_dir(), "a running run's staging folder must not be touched"
    assert not out.exists()
