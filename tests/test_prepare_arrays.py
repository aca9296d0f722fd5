"""Images and time series through `sslops prepare`: readers, canonical arrays, duplicates."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sslops.config import Config, load_config, validate_config
from sslops.errors import ConfigError, DataError
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


def test_pixel_csv_rows_without_label_are_kept_for_pretraining(
    mnist_rows: list[str], tmp_path: Path
) -> None:
    """Images without a label form the unlabeled split that pretraining reads after the
    training images; copies of labeled or earlier unlabeled images, and near-copies of the
    images models are scored on, are dropped and counted; ``prepare.unlabeled: drop`` drops
    them all."""
    from sslops.pretrain.data import load_pretrain_data

    def unlabeled(line: str) -> str:
        return line.rsplit(",", 1)[0] + ","

    labeled = list(mnist_rows[:200])
    new = [unlabeled(line) for line in mnist_rows[200:260]]
    (tmp_path / "a.csv").write_text("\n".join(labeled) + "\n")
    test_image = PreparedData(prepare(image_config(tmp_path / "a.csv", "pixel_csv"),
                                      tmp_path / "a")).test.features[0]  # fmt: skip
    noisy = np.clip(test_image.reshape(-1) + np.random.default_rng(0).normal(0, 4, 784), 0, 255)
    near_test = ",".join(map(str, noisy.round().astype(int))) + ","
    lines = [*labeled, *new, unlabeled(labeled[3]), new[0], near_test]
    (tmp_path / "digits.csv").write_text("\n".join(lines) + "\n")
    cfg = image_config(tmp_path / "digits.csv", "pixel_csv")
    out = prepare(cfg, tmp_path / "out")
    card = json.loads((out / "datacard.json").read_text())
    assert card["rows_without_label_kept"] == 60
    assert card["unlabeled_rows_dropped_as_near_copies_of_scored_rows"] == 1
    # the copy of a labeled image, the repeated unlabeled one, the near-copy of a test image
    assert card["rows_without_label_dropped"] == 3
    assert card["splits"]["unlabeled"] == {"rows": 60}
    data = PreparedData(out)
    assert "unlabeled" in data.schema["splits"] and "None" not in data.schema["classes"]
    assert sum(len(data.split(s).target) for s in ("train", "validation", "test")) == 200
    pool = data.pretraining
    assert len(pool.features) == len(data.train.features) + 60
    assert (pool.target[len(data.train.target) :] == -1).all()
    loaded = load_pretrain_data(out, "image", 64, 0)
    assert loaded.x.shape[0] == len(pool.features) and loaded.bank is not None
    dropped = prepare(cfg.model_copy(update={"prepare": cfg.prepare.model_copy(
        update={"unlabeled": "drop"})}), tmp_path / "dropped")  # fmt: skip
    card = json.loads((dropped / "datacard.json").read_text())
    assert (card["rows_without_label_kept"], card["rows_without_label_dropped"]) == (0, 63)
    assert not (dropped / "unlabeled.npy").exists()


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


TS_HEAD = "@problemName x\n@classLabel true 1 2\n@data\n"


def _ts_text(count: int) -> str:
    rng = np.random.default_rng(0)
    rows = [
        ",".join(f"{v:.3f}" for v in rng.normal(size=24)) + f":{1 + i % 2}" for i in range(count)
    ]
    return TS_HEAD + "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    ("body", "raw", "needle"),
    [
        ("1,2,3:1\n1,inf,3:2\n", None, "line 5: value 2 is inf; expected finite numbers, or '?'"),
        ("1,2,3:1\n?,?,?:2\n", None, "line 5: expected at least 2 values that are not missing"),
        ("1,2,3:1\n4,5,6:3\n", None, "line 5: class label '3' is not one that @classLabel "
         "declares (1, 2)"),
        (None, b"@classLabel false\n@data\n1,2,3\n", "line 1: @classLabel false: the series "
         "carry no class label"),  # it said "the train split is empty; ... adjust prepare.*"
        (None, b"truncated", "is not a readable gzip file"),  # a traceback (EOFError)
        (None, TS_HEAD.encode(), "is not gzip-compressed despite its .gz name"),
    ],
)  # fmt: skip
def test_ts_series_that_cannot_be_used_are_named(
    tmp_path: Path, body: str | None, raw: bytes | None, needle: str
) -> None:
    path = tmp_path / ("bad.ts.gz" if raw is not None and "gzip" in needle else "bad.ts")
    if raw == b"truncated":
        whole = gzip.compress(_ts_text(60).encode(), mtime=0)
        raw = whole[: len(whole) // 2]
    path.write_bytes(raw if raw is not None else (TS_HEAD + (body or "")).encode())
    cfg = validate_config(
        {"modality": "timeseries", "data": {"train": str(path), "format": "ts", "label": "class"}}
    )
    with pytest.raises(DataError, match=re.escape(needle)):
        prepare(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ts_lines_are_counted_as_editors_count_them(tmp_path: Path) -> None:
    """A byte-order mark, a form feed in a comment and CRLF: str.splitlines broke at the form
    feed ('expected @data before the series', line numbers shifted) and kept the mark."""
    text = ("# page\x0cbreak\n" + _ts_text(60)).replace("\n", "\r\n")
    path = tmp_path / "good.ts"
    path.write_bytes(text.encode("utf-8-sig"))
    cfg = validate_config(
        {"modality": "timeseries", "data": {"train": str(path), "format": "ts", "label": "class"}}
    )
    out = prepare(cfg, tmp_path / "out")
    assert json.loads((out / "datacard.json").read_text())["raw_rows"]["train"] == 60
    lines = text.split("\r\n")
    lines[6] = "1,x," + lines[6].split(",", 2)[2]  # line 7 counted from the top, as an editor
    path.write_bytes("\r\n".join(lines).encode("utf-8-sig"))
    with pytest.raises(DataError, match=r"good\.ts line 7: .*not a number"):
        prepare(cfg, tmp_path / "again")


def test_format_and_modality_must_agree(tmp_path: Path) -> None:
    raw = {"data": {"train": str(MNIST), "format": "pixel_csv", "label": "label",
                    "positive": "1", "sensitive": ["x"]}}  # fmt: skip
    with pytest.raises(DataError, match="modality"):
        prepare(validate_config(raw), tmp_path / "out")


def _two_class_npz(tmp_path: Path, labels: tuple[Any, ...]) -> Path:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(60, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", x=x, y=np.array(labels * (60 // len(labels))))
    return tmp_path / "images.npz"


def _prepare_with_positive(path: Path, out: Path, positive: Any = None) -> PreparedData:
    raw = {"modality": "image", "data": {"train": str(path), "format": "npz", "label": "label",
                                         "positive": positive},
           "prepare": {"test_fraction": 0.2}}  # fmt: skip
    return PreparedData(prepare(validate_config(raw), out))


def test_data_positive_is_class_index_1_for_two_class_arrays(tmp_path: Path) -> None:
    path = _two_class_npz(tmp_path, (2, 10))  # as text, '10' sorts before '2'
    default = _prepare_with_positive(path, tmp_path / "default")
    assert default.schema["classes"] == ["10", "2"]
    assert default.schema["positive_class"] == "2"
    assert default.schema["positive_class_source"].startswith("default")
    for positive in (10, "10", 10.0, [10]):
        data = _prepare_with_positive(path, tmp_path / f"p{positive!r}", positive)
        assert data.schema["classes"] == ["2", "10"] and data.schema["positive_class"] == "10"
        assert data.schema["positive_class_source"] == "data.positive"
        labels = data.train.frame["label"].astype(str).to_numpy()
        assert (data.train.target == (labels == "10")).all()  # class 1 = the positive label
    with pytest.raises(ConfigError, match=r"data.positive 7 must name exactly one .*'10' or '2'"):
        _prepare_with_positive(path, tmp_path / "missing", 7)


def test_data_positive_is_refused_for_more_than_two_classes(tmp_path: Path) -> None:
    path = _two_class_npz(tmp_path, (0, 1, 2))
    with pytest.raises(ConfigError, match=r"3 classes .*two classes only.*remove it"):
        _prepare_with_positive(path, tmp_path / "three", 1)
    data = _prepare_with_positive(path, tmp_path / "unset")
    assert data.schema["classes"] == ["0", "1", "2"] and "positive_class" not in data.schema


def test_gunpoint_data_positive_reorders_its_two_classes(tmp_path: Path) -> None:
    shipped = load_config(ROOT / "configs" / "gunpoint.yaml")
    assert shipped.data.positive is None  # the shipped order ('1', '2') is unchanged
    cfg = load_config(ROOT / "configs" / "gunpoint.yaml", ["data.positive=1"])
    data = PreparedData(prepare(cfg, tmp_path / "gunpoint"))
    assert data.schema["classes"] == ["2", "1"] and data.schema["positive_class"] == "1"
