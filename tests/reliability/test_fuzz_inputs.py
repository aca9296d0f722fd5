"""Fuzzed input (hypothesis) to ``sslops prepare``, ``config``, ``run`` and ``predict``.

Malformed CSV rows, other encodings, NaN/inf, empty and truncated files, duplicate or
missing headers, absurd values, random bytes; wrong types and shapes of config values,
as YAML files and as ``--set`` overrides. Every case must end in success (an artifact
whose files match its ``meta.json``) or exit status 2 with exactly one ``error:`` line
and no traceback, and leave no partial output. The CLI's ``main`` is called in-process;
an uncaught exception fails the test. For ``sslops run`` the pipeline itself is replaced
by a marker once the config and the inputs passed validation (its runs are covered in
test_pipeline_faults.py). ``SSLOPS_FUZZ_SCALE`` multiplies the number of cases.

The cases are derandomized (the same ones on every run), so CI fails on a regression and
never on a case a run happened to draw for the first time; ``make fuzz``
(``SSLOPS_FUZZ_RANDOM=1``) draws new ones to find what these do not, and prints the
``@reproduce_failure`` line for a case it breaks on.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from sslops.artifacts import read_meta
from sslops.cli import main
from sslops.config import Config
from tests.conftest import ROOT
from tests.fuzzing import fuzz, leaf_keys
from tests.reliability.conftest import FUZZ_COUNTS

pytestmark = pytest.mark.reliability

CONFIG = ROOT / "configs" / "adult.yaml"

ODD_CELLS = [
    "", " ", "NaN", "nan", "NA", "inf", "-inf", "Infinity", "1e308", "-1e308", "1e999", "?",
    "NULL", "None", "0x1F", "-0", "9" * 400, "é", "\u202e", "\x00", '"', '""', "a,b",
    "line\nbreak", "😀", "\t", "-5", "1.5", "True", "<=50K", ">50K", "\ufeff", "\r",
]  # fmt: skip


@pytest.fixture(scope="module")
def base_rows(small_data: dict[str, Path]) -> list[list[str]]:
    with open(small_data["train"], encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))[:201]  # header + 200 rows


def to_csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


@st.composite
def damaged_csv(draw: st.DrawFn, base: list[list[str]]) -> bytes:
    rows = [list(r) for r in base]
    width, height = len(rows[0]), len(rows)
    kind = draw(st.sampled_from(
        ["cells", "ragged", "header", "encoding", "truncate", "empty", "bytes", "absurd", "label"]
    ))  # fmt: skip
    FUZZ_COUNTS[f"prepare CSV draws of kind {kind}"] += 1
    if kind == "cells":
        for _ in range(draw(st.integers(1, 30))):
            value = draw(st.sampled_from(ODD_CELLS) | st.text(max_size=12))
            rows[draw(st.integers(1, height - 1))][draw(st.integers(0, width - 1))] = value
        return to_csv(rows).encode("utf-8", "surrogatepass")
    if kind == "ragged":
        lines = to_csv(rows).splitlines()
        for _ in range(draw(st.integers(1, 5))):
            i = draw(st.integers(1, height - 1))
            extra = draw(st.sampled_from([",x", ",,,", ""]))
            lines[i] = lines[i].rsplit(",", draw(st.integers(0, 3)))[0] + extra
        return ("\n".join(lines) + "\n").encode()
    if kind == "header":
        header = rows[0]
        action = draw(st.sampled_from(["duplicate", "drop", "rename", "blank", "missing"]))
        j = draw(st.integers(0, width - 1))
        if action == "duplicate":
            header[j] = header[draw(st.integers(0, width - 1))]
        elif action == "drop":
            rows = [r[:j] + r[j + 1 :] for r in rows]
        elif action == "rename":
            header[j] = draw(st.text(max_size=8))
        elif action == "blank":
            header[j] = ""
        else:
            rows = rows[1:]
        return to_csv(rows).encode("utf-8", "surrogatepass")
    if kind == "encoding":
        rows[draw(st.integers(1, height - 1))][1] = draw(
            st.sampled_from(["Café", "Ünïcode", "日本"])
        )
        codec = draw(st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-8-sig", "utf-32"]))
        return to_csv(rows).encode(codec, "replace")
    if kind == "truncate":
        data = to_csv(rows).encode()
        return data[: draw(st.integers(0, len(data)))]
    if kind == "empty":
        return draw(st.sampled_from([b"", b"\n", b"\n\n\n", b"   ", to_csv(rows[:1]).encode()]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "absurd":
        j = draw(st.integers(0, width - 1))
        value = draw(st.sampled_from(["1e300", "-1e300", "nan", "inf", "0", "", "x" * 1000]))
        for row in rows[1:]:
            row[j] = value
        return to_csv(rows).encode()
    label = rows[0].index("income")
    value = draw(st.sampled_from(["<=50K", ">50K", "", "maybe"]))
    for row in rows[1:]:
        row[label] = value
    return to_csv(rows).encode()


@contextlib.contextmanager
def captured() -> Any:
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out), contextlib.redirect_stderr(err),
        warnings.catch_warnings(record=True) as caught,
    ):  # fmt: skip
        warnings.simplefilter("always")
        result: dict[str, Any] = {}
        yield result
    result.update(stdout=out.getvalue(), stderr=err.getvalue(), warnings=caught)


# A progress line (`predict 0/1 rows.csv: 26 rows so far`): a long read prints one every few
# seconds, so on a loaded machine one can precede the error line.
PROGRESS = re.compile(r"^[a-z]+( \([^)]*\))? \d+/\d+ ")


def check_outcome(name: str, code: int, output: dict[str, Any], out: Path | None) -> None:
    assert "Traceback" not in output["stderr"] + output["stdout"]
    if code == 0:
        FUZZ_COUNTS[f"{name} succeeded"] += 1
        if out is not None:
            read_meta(out)  # every file there and matching its sha256
    else:
        FUZZ_COUNTS[f"{name} clean errors"] += 1
        lines = [ln for ln in output["stderr"].strip().splitlines() if not PROGRESS.match(ln)]
        assert code == 2, output["stderr"]
        assert len(lines) == 1 and lines[0].startswith("error: "), output["stderr"]
        if out is not None:
            assert not out.exists()
    if out is not None:
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
        assert not leftovers, leftovers


def test_fuzzed_csv_to_prepare(base_rows: list[list[str]]) -> None:
    @fuzz(120)
    @given(data=damaged_csv(base_rows))
    def case(data: bytes) -> None:
        FUZZ_COUNTS["prepare CSV cases"] += 1
        work = Path(tempfile.mkdtemp(prefix="sslops-fuzz-"))
        try:
            (work / "train.csv").write_bytes(data)
            out = work / "prepare"
            argv = ["prepare", "--config", str(CONFIG), "--set", f"data.train={work / 'train.csv'}",
                    "--set", "data.test=null", "--out", str(out)]  # fmt: skip
            with captured() as output:
                code = main(argv)
            check_outcome("prepare CSV", code, output, out)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    case()


def test_fuzzed_csv_to_predict(
    base_rows: list[list[str]], stage_artifacts: dict[str, Path]
) -> None:
    """New rows for the exported model, damaged as for prepare (the label column is not
    needed here and is ignored), read whole or in chunks of 2 or 13 rows (errors in a later
    chunk, blank rows at a chunk's edge): PREDICTIONS.csv and its record, or one error line
    and no file at all."""
    model = stage_artifacts["export"] / "model.onnx"

    @fuzz(120)
    @given(data=damaged_csv(base_rows), chunk=st.sampled_from(["20000", "13", "2"]))
    def case(data: bytes, chunk: str) -> None:
        FUZZ_COUNTS["predict CSV cases"] += 1
        work = Path(tempfile.mkdtemp(prefix="sslops-fuzz-"))
        try:
            (work / "rows.csv").write_bytes(data)
            out = work / "predictions.csv"
            argv = ["predict", "--config", str(CONFIG), "--model", str(model),
                    "--data", str(work / "rows.csv"), "--out", str(out),
                    "--chunk-rows", chunk]  # fmt: skip
            with captured() as output:
                code = main(argv)
            check_outcome("predict CSV", code, output, None)
            if code == 0:
                assert out.is_file() and (work / "predictions.meta.json").is_file()
            else:
                assert not out.exists() and not (work / "predictions.meta.json").exists()
            assert not [p.name for p in work.iterdir() if p.name.endswith(".tmp")]
        finally:
            shutil.rmtree(work, ignore_errors=True)

    case()


KEYS = leaf_keys()
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)  # fmt: skip


@st.composite
def broken_config(draw: st.DrawFn, base: dict[str, Any]) -> str:
    if draw(st.integers(0, 9)) == 0:  # a document that is not a mapping at all, or not YAML
        return draw(st.sampled_from(["", "[1, 2]", "42", "data: [", "{{", "- a\n- b", "\x00"]))
    raw = yaml.safe_load(yaml.safe_dump(base))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(KEYS) | st.text("abcxyz._", min_size=1, max_size=12))
        node = raw
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                child = {}
                if isinstance(node, dict):
                    node[part] = child
            node = child
        node[parts[-1]] = draw(VALUES)
    return yaml.safe_dump(raw)


@pytest.fixture(scope="module")
def valid_config(small_data: dict[str, Path]) -> dict[str, Any]:
    from tests.conftest import small_config_dict

    return small_config_dict(small_data)


def test_fuzzed_config_files(valid_config: dict[str, Any]) -> None:
    @fuzz(300)
    @given(text=broken_config(valid_config))
    def case(text: str) -> None:
        FUZZ_COUNTS["config file cases"] += 1
        with tempfile.TemporaryDirectory(prefix="sslops-fuzz-") as work:
            path = Path(work) / "config.yaml"
            path.write_text(text, encoding="utf-8")
            with captured() as output:
                code = main(["config", "--config", str(path)])
            check_outcome("config file", code, output, None)

    case()


def test_fuzzed_overrides(valid_config: dict[str, Any]) -> None:
    """``--set=KEY=VALUE`` in one argument: a separate value that starts with ``-`` is an
    argparse usage error (usage text + error line, status 2), outside this guarantee."""

    @fuzz(200)
    @given(
        key=st.sampled_from(KEYS) | st.text(max_size=12),
        value=st.text(max_size=20) | st.sampled_from(["[1, 2", "{a: 1}", ".nan", "-.inf", "~"]),
    )
    def case(key: str, value: str) -> None:
        FUZZ_COUNTS["--set override cases"] += 1
        with tempfile.TemporaryDirectory(prefix="sslops-fuzz-") as work:
            path = Path(work) / "config.yaml"
            path.write_text(yaml.safe_dump(valid_config), encoding="utf-8")
            with captured() as output:
                code = main(["config", "--config", str(path), f"--set={key}={value}"])
            check_outcome("--set override", code, output, None)

    case()


class _PipelineReached(Exception):
    """The config and the inputs passed every check that ``sslops run`` makes before tasks."""


def test_fuzzed_configs_to_run(
    valid_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sslops.pipeline.local as local

    def reached(cfg: Config, out: Path) -> dict[str, Any]:
        raise _PipelineReached

    monkeypatch.setattr(local, "_run_staged", reached)

    @fuzz(150)
    @given(text=broken_config(valid_config))
    def case(text: str) -> None:
        FUZZ_COUNTS["run config cases"] += 1
        with tempfile.TemporaryDirectory(prefix="sslops-fuzz-") as work:
            path = Path(work) / "config.yaml"
            path.write_text(text, encoding="utf-8")
            out = Path(work) / "run"
            with captured() as output:
                try:
                    code = main(["run", "--config", str(path), "--out", str(out)])
                except _PipelineReached:
                    code = 0
            check_outcome("run config", code, output, None)
            assert not out.exists()
            assert [p.name for p in Path(work).iterdir()] == ["config.yaml"]

    case()
