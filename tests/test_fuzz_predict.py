"""Generated CSV rows against :func:`sslops.predict.predict`, called in-process: a cheap
cousin of ``tests/reliability/test_fuzz_inputs.py`` (which damages 200 rows through the CLI)
for the default suite.

Twenty rows for the exported Adult model with odd cells (NaN, inf, a 400-digit number, a
quoted line break, a byte-order mark, text in a numeric column), blank rows, a column
dropped, duplicated, renamed or added, CR or CRLF line ends, a BOM, Latin-1 bytes, the file
cut anywhere. Each ends in predictions and their record or one :class:`SslopsError` and
neither file; and, read in chunks of 1 to 7 rows, in the same predictions (scores to float32 rounding; or again an
error), since a chunk's edge must not change how a cell is read.

Derandomized, as the other fuzzers (``SSLOPS_FUZZ_RANDOM=1`` / ``SSLOPS_FUZZ_SCALE``).
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sslops.config import Config
from sslops.errors import SslopsError
from sslops.predict import meta_path, predict
from tests.fuzzing import fuzz
from tests.predictions import assert_same_predictions

ODD = ["", " ", "NaN", "inf", "-1e308", "1e999", "?", "NULL", "9" * 400, "é", "line\nbreak",
       "\ufeff", "a,b", '"', "-0", "1.5", " 7 ", "True"]  # fmt: skip


@pytest.fixture(scope="module")
def rows(small_data: dict[str, Path]) -> list[list[str]]:
    with open(small_data["test"], encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))[:21]  # header + 20 rows


@st.composite
def new_rows(draw: st.DrawFn, base: list[list[str]]) -> bytes:
    rows = [list(r) for r in base]
    width = len(rows[0])
    ending, encoding, bom = "\n", "utf-8", ""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["cells", "cells", "blank", "column", "ending", "latin1"]))
        j = draw(st.integers(0, width - 1))
        if kind == "cells":
            for _ in range(draw(st.integers(1, 6))):
                row = rows[draw(st.integers(1, len(rows) - 1))]
                if j < len(row):
                    row[j] = draw(st.sampled_from(ODD) | st.text(max_size=6))
        elif kind == "blank":
            rows.insert(draw(st.integers(1, len(rows))), [""] * len(rows[0]))
        elif kind == "column":
            change = draw(st.sampled_from(["drop", "duplicate", "rename", "add"]))
            if change == "drop":
                rows = [r[:j] + r[j + 1 :] for r in rows]
            elif change == "duplicate":
                rows[0][j] = rows[0][draw(st.integers(0, width - 1))]
            elif change == "rename":
                rows[0][j] = draw(st.text(max_size=6))
            else:
                rows = [[*r, "extra" if i == 0 else str(i)] for i, r in enumerate(rows)]
            width = len(rows[0])
        elif kind == "ending":
            ending = draw(st.sampled_from(["\r\n", "\r"]))
            bom = draw(st.sampled_from(["", "\ufeff"]))
        else:
            encoding = "latin-1"
            rows[draw(st.integers(1, len(rows) - 1))][j] = "Café"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=ending).writerows(rows)
    data = (bom + buffer.getvalue()).encode(encoding, "replace")
    if draw(st.integers(0, 5)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


def _predicted(model: Path, data: Path, out: Path, cfg: Config, chunk: int | None) -> str | None:
    """The predictions file's text, or None when predict refused the rows (one error
    naming what is wrong, and neither the file nor its record)."""
    try:
        result = predict(model, data, out, cfg, chunk_rows=chunk)
    except SslopsError as exc:
        assert str(exc).strip() and not out.exists() and not meta_path(out).exists()
        return None
    text = out.read_text(encoding="utf-8")
    assert len(text.splitlines()) == result.rows + 1 and meta_path(out).is_file()
    return text


def test_new_rows_are_scored_alike_in_any_chunks_or_refused_in_one_error(
    rows: list[list[str]], stage_artifacts: dict[str, Path], small_config: Config
) -> None:
    model = stage_artifacts["export"] / "model.onnx"

    @fuzz(10)
    @given(data=new_rows(rows), chunk=st.integers(1, 7))
    def case(data: bytes, chunk: int) -> None:
        work = Path(tempfile.mkdtemp(prefix="sslops-fuzz-"))
        try:
            (work / "rows.csv").write_bytes(data)
            whole = _predicted(model, work / "rows.csv", work / "whole.csv", small_config, None)
            chunked = _predicted(model, work / "rows.csv", work / "chunked.csv", small_config,
                                 chunk)  # fmt: skip
            assert (whole is None) == (chunked is None), (whole, chunked)
            if whole is not None and chunked is not None:
                assert_same_predictions(whole, chunked)
            assert not [p.name for p in work.iterdir() if p.name.endswith(".tmp")]
        finally:
            shutil.rmtree(work, ignore_errors=True)

    case()
