"""Generated table files against the prepare stage, called in-process (slow: ~1.5 s a case).

Where ``tests/reliability/test_fuzz_inputs.py`` damages cells of a 200-row Adult CSV through
the CLI, these change the file's shape: its separator, quoting, byte-order mark and line
ends, its encoding, duplicated or dropped columns, a column all missing or of mixed types,
the label or a sensitive column constant, unexpected or missing, an empty file, a header
alone, a very long field, bytes that are not UTF-8. Each ends in an artifact whose files
match its ``meta.json``, or one :class:`SslopsError` and no output folder (nor a staging
sibling); never another exception.

Derandomized, as the other fuzzers (``SSLOPS_FUZZ_RANDOM=1`` / ``SSLOPS_FUZZ_SCALE``).
"""

from __future__ import annotations

import csv
import gzip
import io
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sslops.artifacts import read_meta
from sslops.config import load_config
from sslops.errors import SslopsError
from sslops.prepare import prepare
from tests.conftest import ADULT, ROOT
from tests.fuzzing import fuzz

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rows() -> list[list[str]]:
    with gzip.open(ADULT / "train.csv.gz", "rt", encoding="utf-8") as fh:
        frame = pd.read_csv(fh, dtype=str, keep_default_na=False)
    sample = frame.sample(n=150, random_state=0)
    return [list(sample.columns), *sample.to_numpy().tolist()]


@st.composite
def reshaped_table(draw: st.DrawFn, base: list[list[str]]) -> bytes:
    rows = [list(r) for r in base]
    header = rows[0]
    col = {name: i for i, name in enumerate(header)}
    delimiter, quoting, encoding, ending, bom = ",", csv.QUOTE_MINIMAL, "utf-8", "\n", ""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from([
            "separator", "quoting", "bom", "crlf", "latin1", "mixed", "missing", "label",
            "sensitive", "duplicate", "drop", "short", "long", "extra",
        ]))  # fmt: skip
        j = draw(st.integers(0, len(header) - 1))
        if kind == "separator":
            delimiter = draw(st.sampled_from([";", "\t", "|", " "]))
        elif kind == "quoting":
            quoting = draw(st.sampled_from([csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
        elif kind == "bom":
            bom = "\ufeff"
        elif kind == "crlf":
            ending = draw(st.sampled_from(["\r\n", "\r"]))
        elif kind == "latin1":
            encoding = "latin-1"
            rows[draw(st.integers(1, len(rows) - 1))][j] = "Café"
        elif kind == "mixed":
            for i in draw(st.lists(st.integers(1, len(rows) - 1), min_size=1, max_size=40)):
                rows[i][j] = draw(st.sampled_from(["unknown", "1e999", "-", "3,5", "NaN", " 7 "]))
        elif kind == "missing":
            value = draw(st.sampled_from(["", "?", "NA", "null"]))
            for row in rows[1:]:
                row[j] = value
        elif kind in ("label", "sensitive"):
            name = "income" if kind == "label" else draw(st.sampled_from(["sex", "race"]))
            if name in col and col[name] < len(header):
                value = draw(st.sampled_from(["<=50K", ">50K", "Male", "", "nan", "maybe"]))
                share = draw(st.sampled_from([1.0, 0.5, 0.02]))
                for i, row in enumerate(rows[1:]):
                    if i < share * (len(rows) - 1):
                        row[col[name]] = value
        elif kind == "duplicate":
            header[j] = header[draw(st.integers(0, len(header) - 1))]
        elif kind == "drop":
            rows = [r[:j] + r[j + 1 :] for r in rows]
            header = rows[0]
            col = {name: i for i, name in enumerate(header)}
        elif kind == "short":
            rows = rows[: draw(st.sampled_from([0, 1, 2, 5]))]
            if not rows:
                return draw(st.sampled_from([b"", b"\n", b"\xef\xbb\xbf"]))
        elif kind == "long":
            rows[draw(st.integers(1, len(rows) - 1))][j] = "x" * 100_000
        else:
            rows = [[*r, draw(st.sampled_from(["", "extra"]))] for r in rows]
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, quoting=quoting, lineterminator=ending).writerows(rows)
    data = (bom + buffer.getvalue()).encode(encoding, "replace")
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xff\xfe" + data[at:]
    return data


def test_a_reshaped_table_is_prepared_or_refused_in_one_error(rows: list[list[str]]) -> None:
    @fuzz(60)
    @given(data=reshaped_table(rows))
    def case(data: bytes) -> None:
        work = Path(tempfile.mkdtemp(prefix="sslops-fuzz-"))
        try:
            (work / "train.csv").write_bytes(data)
            cfg = load_config(
                ROOT / "configs" / "adult.yaml",
                [f"data.train={work / 'train.csv'}", "data.test=null"],
            )
            out = work / "prepare"
            try:
                prepare(cfg, out)
            except SslopsError as exc:
                assert str(exc).strip()
                assert not out.exists()
            else:
                read_meta(out)  # every file there, each matching its sha256
            assert sorted(p.name for p in work.iterdir()) in (
                ["prepare", "train.csv"], ["train.csv"]
            )  # fmt: skip
        finally:
            shutil.rmtree(work, ignore_errors=True)

    case()
