"""Images and time series through `sslops prepare`: readers, canonical arrays, duplicates."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sslops.config import Config, load_config, validate_config
from sslops.errors import DataError
from sslops.prepare import PreparedData, prepare
from tests.conftest import ROOT

MNIST = ROOT / "src" / "sslops" / "datasets" / "mnist" / "mnist_5k.csv.gz"


def image_config(train: Path, fmt: str, **prepare_options: Any) -> Config:
    return validate_config(
        {
            "modality": "image",
            "data": {"train": str(train), "format": fmt, "label": "label"},
            "prepare": {"test_fraction": 0.2, **prepare_options},
        }
    )


@pytest.fixture(scope="module")
def mnist_rows() -> list[str]:
    with gzip.open(MNIST, "rt") as fh:  # the file is sorted by label: take every 12th row
        return fh.read().splitlines()[::12][:400]


def test_pixel_csv_with_planted_copies(mnist_rows: list[str], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noisy = []
    for line in mnist_rows[:30]:  # near-copies: pixel noise, same label
        *pixels, label = line.split(",")
        values = np.clip(np.array(pixels, dtype=float) + rng.normal(0, 4, 784), 0, 255)
        noisy.append(",".join([*map(str, values.round().astype(int)), label]))
    lines = mnist_rows + mnist_rows[:20] + noisy
    (tmp_path / "digits.csv").write_text("\n".join(lines) + "\n")
    out = prepare(image_config(tmp_path / "digits.csv", "pixel_csv"), tmp_path / "out")
    card = json.loads((out / "datacard.json").read_text())
    assert card["exact_duplicates_dropped"] == {"train": 20}
    assert card["near_duplicates"]["pairs"] >= 30
    data = PreparedData(out)
    sizes = {s: len(data.split(s).target) for s in ("train", "validation", "test")}
    assert sum(sizes.values()) == 430
    assert data.train.features.shape[1:] == (28, 28, 1) and data.train.features.dtype == np.uint8
    clusters = {s: set(data.split(s).frame["cluster"]) for s in sizes}
    assert not clusters["train"] & clusters["test"]
    assert not clusters["train"] & clusters["validation"]
    assert set(data.schema["classes"]) == set("0123456789")


def test_pixel_csv_bad_value_names_the_line(mnist_rows: list[str], tmp_path: Path) -> None:
    lines = list(mnist_rows[:50])
    lines[31] = lines[31].replace("0,", "300,", 1)
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"bad\.csv line 32: pixel 'pixel\d+' is 300; expected"):
        prepare(image_config(tmp_path / "bad.csv", "pixel_csv"), out)
    assert not out.exists()
    lines = list(mnist_rows[:50])
    lines[40] = lines[40].split(",", 2)[2]  # two pixels short
    (tmp_path / "short.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"short\.csv is not a well-formed CSV: line 41: expected "
                       r"785 fields \(as in line 1\), got 783"):  # fmt: skip
        prepare(image_config(tmp_path / "short.csv", "pixel_csv"), out)
    assert not out.exists()


def test_pixel_csv_row_without_label_is_dropped_and_counted(
    mnist_rows: list[str], tmp_path: Path
) -> None:
    lines = list(mnist_rows[:200])
    lines[7] = lines[7].rsplit(",", 1)[0] + ","
    (tmp_path / "digits.csv").write_text("\n".join(lines) + "\n")
    out = prepare(image_config(tmp_path / "digits.csv", "pixel_csv"), tmp_path / "out")
    card = json.loads((out / "datacard.json").read_text())
    assert card["rows_without_label_dropped"] == 1
    data = PreparedData(out)
    assert sum(len(data.split(s).target) for s in ("train", "validation", "test")) == 199
    assert "None" not in data.schema["classes"]


def test_npz_and_image_folder_resize_and_convert(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(60, 12, 12, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", x=x, y=np.arange(60) % 3)
    out = prepare(image_config(tmp_path / "images.npz", "npz", image_size=[8, 8]), tmp_path / "a")
    data = PreparedData(out)
    assert data.train.features.shape[1:] == (8, 8, 1)
    folder = tmp_path / "folder"
    for i in range(40):
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        size = (10, 10) if i % 3 else (14, 14)
        image = Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8))
        image.save(folder / f"class{i % 2}" / f"{i}.png")
    cfg = image_config(folder, "image_folder", image_size=[10, 10], image_channels=3)
    out = prepare(cfg, tmp_path / "b")
    card = json.loads((out / "datacard.json").read_text())
    assert card["canonicalization"] == {"resized": 14, "channels_converted": 0}
    assert PreparedData(out).test.features.shape[1:] == (10, 10, 3)
    (folder / "class0" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png"):
        prepare(cfg, tmp_path / "c")


def test_npz_without_expected_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "odd.npz", pixels=np.zeros((3, 4, 4)))
    with pytest.raises(DataError, match=r"expected 'x'"):
        prepare(image_config(tmp_path / "odd.npz", "npz"), tmp_path / "out")


def test_gunpoint_prepares_through_the_cli(tmp_path: Path, cli_env: dict[str, str]) -> None:
    out = tmp_path / "gunpoint"
    result = subprocess.run(
        ["sslops", "prepare", "--config", str(ROOT / "configs" / "gunpoint.yaml"), "--out",
         str(out)],
        capture_output=True, text=True, env=cli_env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = PreparedData(out)
    assert data.modality == "timeseries"
    assert data.test.features.shape == (150, 150)
    assert len(data.train.target) + len(data.validation.target) <= 50
    card = json.loads((out / "datacard.json").read_text())
    assert card["raw_rows"] == {"train": 50, "test": 150}


def test_mnist_config_resolves() -> None:
    cfg = load_config(ROOT / "configs" / "mnist.yaml")
    assert cfg.modality == "image" and cfg.data.format == "pixel_csv"


def test_ts_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.ts"
    path.write_text("@problemName x\n@classLabel true 1 2\n@data\n1,2,3:1\n1,x,3:2\n")
    cfg = validate_config(
        {"modality": "timeseries", "data": {"train": str(path), "format": "ts", "label": "class"}}
    )
    with pytest.raises(DataError, match=r"bad\.ts line 5: .*not a number"):
        prepare(cfg, tmp_path / "out")
    path.write_text("@data\n1,2,3\n")
    with pytest.raises(DataError, match=r"line 2: expected comma-separated values, ':'"):
        prepare(cfg, tmp_path / "out")


def test_format_and_modality_must_agree(tmp_path: Path) -> None:
    raw = {"data": {"train": str(MNIST), "format": "pixel_csv", "label": "label",
                    "positive": "1", "sensitive": ["x"]}}  # fmt: skip
    with pytest.raises(DataError, match="modality"):
        prepare(validate_config(raw), tmp_path / "out")
