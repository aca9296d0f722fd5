"""Bad image inputs (npz, image folders, pixel CSV): one line naming the key, the file, what is
wrong and what was expected; nothing silently misread, no partial output."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslops.errors import DataError
from sslops.prepare import PreparedData, prepare
from tests.test_prepare_arrays import image_config

X = np.random.default_rng(7).integers(0, 256, size=(40, 6, 6), dtype=np.uint8)
X[0, 0, :2] = 0, 255  # the full range
Y = np.arange(40) % 4


def fails(path: Path, fmt: str, *parts: str) -> str:
    """The one-line DataError prepare raises; it holds every part, and nothing is written."""
    out = path.parent / "out"
    with pytest.raises(DataError) as info:
        prepare(image_config(path, fmt), out)
    message = str(info.value)
    assert "\n" not in message
    for part in ("data.train", path.name, *parts):
        assert part in message, message
    assert not out.exists()
    return message


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


# ---------------------------------------------------------------- npz


def test_npz_without_images(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "empty.npz", x=np.zeros((0, 28, 28), np.uint8), y=np.zeros(0))
    fails(path, "npz", "holds no images", "(0, 28, 28)")


def test_npy_file_named_npz(tmp_path: Path) -> None:
    path = tmp_path / "images.npz"
    with open(path, "wb") as fh:
        np.save(fh, X)
    fails(path, "npz", "is a .npy array", "not an .npz archive", "numpy.savez")


@pytest.mark.parametrize(
    ("labels", "parts"),
    [
        (np.array(3), ("shape ()", "expected one label per image, shape (N,)")),
        (np.eye(4)[Y], ("one-hot", "y.argmax(axis=1)")),
        (Y[:, None], ("shape (40, 1)", "y.ravel()")),
        (np.stack([Y, Y], axis=1) * 3, ("shape (40, 2)", "shape (N,)")),
    ],
)
def test_npz_labels_must_be_one_per_image(
    labels: np.ndarray, parts: tuple[str, ...], tmp_path: Path
) -> None:
    fails(save_npz(tmp_path / "images.npz", x=X, y=labels), "npz", *parts)


def test_npz_that_is_no_readable_zip(tmp_path: Path) -> None:
    good = save_npz(tmp_path / "good.npz", x=X, y=Y).read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good[: len(good) // 2])
    fails(truncated, "npz", "is not a readable .npz (zip) archive")
    text = tmp_path / "text.npz"
    text.write_text("hello\n")
    message = fails(text, "npz", "is not an .npz (zip) archive", "numpy.savez")
    assert "allow_pickle" not in message


def test_npz_labels_saved_as_python_objects(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "images.npz", x=X, y=np.array([str(v) for v in Y], dtype=object))
    message = fails(path, "npz", "'y' holds Python objects", "y.astype(str)")
    assert "allow_pickle" not in message


@pytest.mark.filterwarnings("error")  # numpy's ComplexWarning included
@pytest.mark.parametrize(
    ("images", "parts"),
    [
        ((X - 127.5) / 127.5, ("from -1 to 1", "expected 0..255 (or floats 0..1)")),
        (X.astype(np.int16) * 100, ("from 0 to 25500", "expected 0..255")),
        (X / 255.0 - 0.5, ("from -0.5 to 0.5", "expected 0..255")),
        (X.astype(np.complex128), ("dtype complex128", "expected")),
        (X.astype(str), ("dtype <U3", "expected")),
    ],
)
def test_npz_pixels_outside_the_range_are_rejected(
    images: np.ndarray, parts: tuple[str, ...], tmp_path: Path
) -> None:
    fails(save_npz(tmp_path / "images.npz", x=images, y=Y), "npz", "'x'", *parts)


def test_npz_pixels_on_a_0_1_or_0_255_scale_are_read_as_such(tmp_path: Path) -> None:
    prepared = {}
    for name, images in {"bytes": X, "unit": X / 255.0, "int64": X.astype(np.int64)}.items():
        path = save_npz(tmp_path / f"{name}.npz", x=images, y=Y)
        data = PreparedData(prepare(image_config(path, "npz"), tmp_path / name))
        prepared[name] = np.concatenate(
            [data.split(s).features for s in ("train", "validation", "test")]
        )
    assert np.array_equal(prepared["bytes"], prepared["unit"])
    assert np.array_equal(prepared["bytes"], prepared["int64"])


# ---------------------------------------------------------------- image folders


def test_image_folder_labels_by_the_top_level_folder(tmp_path: Path) -> None:
    root, rng = tmp_path / "images", np.random.default_rng(1)
    for i, folder in enumerate(["3", "3", "7", "7/extra", "7/extra/deeper"] * 40):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), np.uint8)).save(root / folder / f"{i}.png")
    (root / ".ipynb_checkpoints").mkdir()  # hidden: no class (it became one)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / ".ipynb_checkpoints" / "x.png")
    data = PreparedData(prepare(image_config(root, "image_folder"), tmp_path / "out"))
    assert data.schema["classes"] == ["3", "7"]


def test_image_folder_16_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    root, rng = tmp_path / "images", np.random.default_rng(2)
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(200):  # 16-bit PNGs using the 16-bit range (12-bit ones: test_own_media)
        pixels = rng.integers(0, 65536, (8, 8)).astype(np.uint16)
        Image.fromarray(pixels).save(root / "ab"[i % 2] / f"{i}.png")
    data = PreparedData(prepare(image_config(root, "image_folder"), tmp_path / "out"))
    values = np.concatenate([data.split(s).features for s in ("train", "validation", "test")])
    assert values.max() == 255 and values.min() == 0  # 65535 / 257; clipping made most 255
    assert (values == 255).mean() < 0.01


# ---------------------------------------------------------------- pixel CSV


def pixel_rows(labels: list[str]) -> list[str]:
    """Headerless rows of 6x6 grey images, the label last."""
    images = np.random.default_rng(len(labels)).integers(0, 256, size=(len(labels), 36))
    return [
        ",".join([*map(str, image), label]) for image, label in zip(images, labels, strict=True)
    ]


WORDS = ["zero", "one", "two", "three"]


@pytest.mark.parametrize(
    ("first_label", "classes"),
    [("zero", WORDS), ("", WORDS), ("-1", ["-1", *WORDS])],
)
def test_pixel_csv_first_row_with_a_text_label_is_no_header(
    first_label: str, classes: list[str], tmp_path: Path
) -> None:
    labels = [WORDS[i % 4] for i in range(200)]  # enough for three non-empty splits
    labels[0] = first_label
    (tmp_path / "digits.csv").write_text("\n".join(pixel_rows(labels)) + "\n")
    out = prepare(image_config(tmp_path / "digits.csv", "pixel_csv"), tmp_path / "out")
    assert PreparedData(out).schema["classes"] == sorted(classes)
    card = json.loads((out / "datacard.json").read_text())
    assert card["rows_without_label_kept"] == (first_label == "")  # for pretraining


def test_pixel_csv_header_of_numbers_and_the_label_is_a_header(tmp_path: Path) -> None:
    """pandas writes a frame without column names as 0,1,...,35,label: read as an image row,
    it failed at line 1 with "pixel 'pixel256' is 256"."""
    header = ",".join([*(str(i) for i in range(36)), "label"])
    labels = [WORDS[i % 4] for i in range(200)]
    (tmp_path / "digits.csv").write_text("\n".join([header, *pixel_rows(labels)]) + "\n")
    out = prepare(image_config(tmp_path / "digits.csv", "pixel_csv"), tmp_path / "out")
    assert PreparedData(out).schema["classes"] == sorted(WORDS)


def test_npz_labels_as_floats_or_bytes_are_the_classes_they_name(tmp_path: Path) -> None:
    """Labels saved as 3.0 were class '3.0', bytes b'cat' class "b'cat'"."""
    names = np.array([b"cat", b"dog", b"owl", b"emu"])[Y]
    for kind, labels, classes in (("float", Y.astype(np.float64), ["0", "1", "2", "3"]),
                                  ("bytes", names, ["cat", "dog", "emu", "owl"])):  # fmt: skip
        path = save_npz(tmp_path / f"{kind}.npz", x=X, y=labels)
        data = PreparedData(prepare(image_config(path, "npz"), tmp_path / kind))
        assert data.schema["classes"] == classes


def test_pixel_csv_missing_label_lists_few_columns(tmp_path: Path) -> None:
    header = ",".join([*(f"pixel{i}" for i in range(36)), "digit"])
    path = tmp_path / "digits.csv"
    path.write_text("\n".join([header, *pixel_rows(["1"] * 20)]) + "\n")
    message = fails(path, "pixel_csv", "column 'label' not found", "pixel19, ... (37 columns)")
    assert "pixel20" not in message


def test_pixel_csv_separated_by_semicolons(tmp_path: Path) -> None:
    path = tmp_path / "digits.csv"
    path.write_text("\n".join(row.replace(",", ";") for row in pixel_rows(["1"] * 20)) + "\n")
    message = fails(path, "pixel_csv", "looks separated by semicolons", "comma-separated")
    assert len(message) < 300


def test_pixel_csv_empty(tmp_path: Path) -> None:
    path = tmp_path / "digits.csv"
    path.write_bytes(b"")
    fails(path, "pixel_csv", "is empty", "expected one image per row")


def test_pixel_csv_gz_name_without_gzip(tmp_path: Path) -> None:
    path = tmp_path / "digits.csv.gz"
    path.write_text("\n".join(pixel_rows(["1"] * 20)) + "\n")
    fails(path, "pixel_csv", "is not gzip-compressed despite its .gz name")


@pytest.mark.parametrize("header", [False, True])
def test_pixel_csv_empty_pixel_is_named_empty(header: bool, tmp_path: Path) -> None:
    rows = pixel_rows(["1", "2"] * 20)
    cells = rows[5].split(",")
    cells[1] = ""  # the second pixel
    rows[5] = ",".join(cells)
    if header:
        rows.insert(0, ",".join([*(f"p{i}" for i in range(36)), "label"]))
    path = tmp_path / "digits.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    name = "p1" if header else "pixel1"
    fails(path, "pixel_csv", f"line {6 + header}: pixel {name!r} is empty", "0..255")
