"""Copy the demo data sets from ../shared/datasets into package data.

UCI Adult is rewritten as two gzipped CSV files with a header row; the test
file's leading comment line and the trailing '.' on its labels are removed so
both splits share one label vocabulary. Values are otherwise untouched ('?'
still marks a missing value). Run from the repository root:

    python scripts/vendor_datasets.py ../shared/datasets
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
from pathlib import Path

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
]  # fmt: skip


def _adult_rows(path: Path) -> list[list[str]]:
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip() or line.startswith("|"):
                continue
            fields = [f.strip() for f in line.rstrip("\n").split(",")]
            fields[-1] = fields[-1].rstrip(".")
            rows.append(fields)
    return rows


def _write_gz_csv(rows: list[list[str]], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ADULT_COLUMNS)
    writer.writerows(rows)
    # mtime=0 keeps the bytes reproducible across runs.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue().encode("utf-8"))


def main(shared: Path) -> None:
    dest = Path(__file__).resolve().parents[1] / "src" / "sslops" / "datasets" / "adult"
    dest.mkdir(parents=True, exist_ok=True)
    _write_gz_csv(_adult_rows(shared / "adult" / "adult.data.gz"), dest / "train.csv.gz")
    _write_gz_csv(_adult_rows(shared / "adult" / "adult.test.gz"), dest / "test.csv.gz")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets"))
