"""Comparing two `sslops predict` outputs of the same rows scored in other chunk sizes.

Row ids, the label column and every other column must be equal, text for text; the scores
equal to float32 rounding. onnxruntime's CPU kernels (the Gemm of an MLP head) sum in an
order that depends on how many rows a run holds, so the same row scored in a chunk of 7 and
in one of 16,000 can differ in its last float32 bit (about 6e-8; seen once the demo's
deployed model had an MLP member), and its 9-digit text with it.
"""

from __future__ import annotations

import csv
import io

import numpy as np

FLOAT32_ROUNDING = 1e-6  # a few float32 ulps of a probability, far below any decision


def assert_same_predictions(a: str, b: str) -> None:
    rows_a = list(csv.reader(io.StringIO(a)))
    rows_b = list(csv.reader(io.StringIO(b)))
    assert rows_a[0] == rows_b[0] and len(rows_a) == len(rows_b), (rows_a[:2], rows_b[:2])
    score = rows_a[0].index("score")
    for row_a, row_b in zip(rows_a[1:], rows_b[1:], strict=True):
        assert row_a[:score] + row_a[score + 1 :] == row_b[:score] + row_b[score + 1 :]
    scores_a = np.array([float(r[score]) for r in rows_a[1:]])
    scores_b = np.array([float(r[score]) for r in rows_b[1:]])
    np.testing.assert_allclose(scores_a, scores_b, rtol=0, atol=FLOAT32_ROUNDING)
