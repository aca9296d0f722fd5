"""A user's own images and series, as they come: 12-bit scans in 16-bit PNGs, RGB or mixed-size
images under a grey config, series of another length or with gaps, a rare class. What prepare
changes or cannot measure is said (a ``note:`` line and the data card); what it cannot read
faithfully is refused with the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslops.config import Config, validate_config
from sslops.errors import DataError
from sslops.prepare import PreparedData, prepare
from tests.test_prepare_arrays import image_config

RNG = np.random.default_rng(11)


def _folder(root: Path, images: list[np.ndarray], labels: list[str], suffix: str = ".png") -> Path:
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / label / f"scan_{i:03d}{suffix}")
    return root


def _digits(n: int, side: int = 12) -> list[np.ndarray]:
    """Distinct grey images with strokes of ink (so that no two are near-copies)."""
    return [RNG.integers(0, 256, (side, side)).astype(np.uint8) for _ in range(n)]


def _notes(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]


def _said(notes: list[str], *parts: str) -> bool:
    """Whether one note holds every part."""
    return any(all(part in note for part in parts) for note in notes)


def _card(out: Path) -> dict:
    return json.loads((out / "datacard.json").read_text(encoding="utf-8"))


def test_twelve_bit_scans_in_16_bit_pngs_are_refused_with_the_conversion(tmp_path: Path) -> None:
    """÷257 made a 12-bit scan (0..4095) an image of values 0..16: near-black, 17 grey levels,
    and no ink for the stroke_thickness / ink group attributes (every image one group)."""
    images = [(a.astype(np.uint16) * 16) for a in _digits(40)]  # 12-bit values, 0..4080
    root = _folder(tmp_path / "scans", images, ["a", "b"] * 20)
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        prepare(image_config(root, "image_folder"), out)
    message = str(info.value)
    assert "\n" not in message and "scan_000.png" in message and "data.train" in message
    assert "16-bit image whose values reach only" in message and "255 / 4095" in message
    assert not out.exists()
    # 8-bit values saved as 16-bit (astype(uint16)) would have become 0 and 1: refused too
    (root / "a" / "scan_000.png").unlink()
    Image.fromarray(_digits(1)[0].astype(np.uint16)).save(root / "a" / "scan_000.png")
    for path in root.rglob("*.png"):
        if path.name != "scan_000.png":
            path.unlink()
    with pytest.raises(DataError, match=r"scan_000\.png is a 16-bit image .* only 25[0-5]"):
        prepare(image_config(root, "image_folder"), out)


def test_blank_and_full_range_16_bit_images_are_read(tmp_path: Path) -> None:
    images = [(a.astype(np.uint16) * 257) for a in _digits(40)]
    images[0] = np.zeros((12, 12), np.uint16)  # a blank scan is blank on any scale
    root = _folder(tmp_path / "scans", images, ["a", "b"] * 20)
    data = PreparedData(prepare(image_config(root, "image_folder"), tmp_path / "out"))
    values = np.concatenate([data.split(s).features for s in ("train", "validation", "test")])
    assert values.max() == 255 and len(values) == 40


def test_rgb_images_under_a_grey_config_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = [np.stack([a, a // 2, 255 - a], axis=-1) for a in _digits(30)]
    root = _folder(tmp_path / "colour", images, ["benign", "malignant", "unclear"] * 10)
    out = prepare(image_config(root, "image_folder"), tmp_path / "out")
    notes = _notes(capsys)
    assert _said(notes, "30 of 30 images converted to one grey channel", "RGB (30)",
                 "prepare.image_channels=3"), notes  # fmt: skip
    assert any("converted to one grey channel" in n for n in _card(out)["notes"])
    assert "converted to one grey channel" in (out / "datacard.md").read_text(encoding="utf-8")
    # as asked for (image_channels: 3) nothing is converted and nothing is said
    prepare(image_config(root, "image_folder", image_channels=3), tmp_path / "rgb")
    assert not [n for n in _notes(capsys) if "converted" in n]


def test_images_of_several_sizes_are_named_and_stretching_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sizes = [(12, 12), (12, 20), (16, 16)]  # (height, width)
    images = [RNG.integers(0, 256, sizes[i % 3]).astype(np.uint8) for i in range(30)]
    for suffix in (".png", ".jpg"):  # PNG and JPEG read alike
        root = _folder(tmp_path / f"mixed{suffix}", images, ["x", "y"] * 15, suffix)
        out = prepare(image_config(root, "image_folder"), tmp_path / f"out{suffix}")
        (note,) = [n for n in _notes(capsys) if "resized" in n]
        assert "20 of 30 images resized to 12x12 (the first image's size" in note
        assert "12x20 (10)" in note and "16x16 (10)" in note
        assert "10 of them stretched to another aspect ratio" in note
        assert PreparedData(out).train.features.shape[1:] == (12, 12, 1)


def _ts(path: Path, series: list[np.ndarray], labels: list[str]) -> Path:
    classes = " ".join(sorted(set(labels)))
    rows = [
        ",".join("?" if np.isnan(v) else f"{v:.5f}" for v in values) + f":{label}"
        for values, label in zip(series, labels, strict=True)
    ]
    text = f"@univariate true\n@missing true\n@classLabel true {classes}\n@data\n"
    path.write_text(text + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _series_config(train: Path, **prepare_options: object) -> Config:
    return validate_config(
        {
            "modality": "timeseries",
            "data": {"train": str(train), "format": "ts", "label": "class"},
            "prepare": {"test_fraction": 0.2, **prepare_options},
        }
    )


def _walks(n: int, length: int) -> list[np.ndarray]:
    return [np.cumsum(RNG.normal(size=length)) for _ in range(n)]


def test_series_of_another_length_or_with_gaps_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series = _walks(40, 300)  # recorded at twice GunPoint's rate, a config copied from it
    for values in series[:7]:
        values[100:110] = np.nan
    labels = ["sitting", "standing", "walking", "falling"] * 10
    path = _ts(tmp_path / "ward_TRAIN.ts", series, labels)
    out = prepare(_series_config(path, series_length=150), tmp_path / "out")
    notes = _notes(capsys)
    assert _said(notes, "40 of 40 series are not 150 long (prepare.series_length)",
                 "40 resampled", "lengths found: 300 (40)"), notes  # fmt: skip
    assert any("7 of 40 series have missing values ('?')" in n for n in notes), notes
    assert len(_card(out)["notes"]) >= 2
    # unequal lengths, cropped at the end to the most common length
    path = _ts(tmp_path / "uneq.ts", _walks(30, 100) + _walks(10, 120), labels[:40])
    prepare(_series_config(path, series_length_policy="pad_crop"), tmp_path / "uneq")
    (note,) = [n for n in _notes(capsys) if "long" in n]
    assert "10 of 40 series are not 100 long (the most common length)" in note
    assert "10 cropped at the end" in note and "lengths found: 100 (30), 120 (10)" in note


def test_a_rare_class_missing_from_a_split_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = ["gun", "point", "reverse"] * 30 + ["fall"] * 2
    path = _ts(tmp_path / "rare.ts", _walks(len(labels), 50), labels)
    out = prepare(_series_config(path, validation_fraction=0.2), tmp_path / "out")
    data = PreparedData(out)
    counts = {s: list(data.split(s).frame["label"]) for s in ("train", "validation", "test")}
    absent = [s for s, found in counts.items() if "fall" not in found]
    assert absent  # two items cannot reach all three splits
    (note,) = [n for n in _notes(capsys) if "few items" in n]
    assert f"no items of class 'fall' in {', '.join(absent)}" in note
    assert "not measured on that class" in note
    few = _card(out)["few_class_items"]
    assert all(few[s]["fall"] == 0 for s in absent)
    assert "few items of a class" in (out / "datacard.md").read_text(encoding="utf-8")


def test_an_ood_predicate_that_takes_a_whole_class_out_of_train_is_refused(
    tmp_path: Path,
) -> None:
    """GunPoint with prepare.ood 'label == 2' passed prepare with a note and left training
    one class; a rare class missing from train by chance, others left, stays a note (above)."""
    labels = ["gun", "point", "reverse"] * 20
    path = _ts(tmp_path / "three.ts", _walks(len(labels), 50), labels)
    with pytest.raises(DataError) as caught:
        prepare(_series_config(path, ood="label == reverse"), tmp_path / "out")
    message = str(caught.value)
    assert "no item of class 'reverse' (20 in ood) is in the train split" in message, message
    assert "prepare.ood 'label == reverse' took it" in message, message
    assert not (tmp_path / "out").exists()
    # two classes, one taken: the train split would hold one class
    path = _ts(tmp_path / "two.ts", _walks(40, 50), ["gun", "point"] * 20)
    with pytest.raises(DataError, match="no item of class 'point'"):
        prepare(_series_config(path, ood="label == point"), tmp_path / "out2")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("@timeStamps true\n@classLabel true a b\n@data\n(0,1.0),(1,2.0),(2,3.0):a\n",
         "line 1: @timeStamps true: series written as (time, value) pairs are not read"),
        ("@classLabel true a b\n@data\n1,2,3:a\n1,2,3,:b\n",
         "line 4: a series value is not a number: value 4 is empty (a trailing comma?)"),
        ("@classLabel true a b\n@data\n1 2 3:a\n",
         "line 3: a series value is not a number: value 1 holds several numbers separated by "
         "spaces; expected comma-separated numbers"),
        ("@classLabel true a b\n@data\n1,2,x3:a\n", "value 3 is 'x3'"),
        ("1.0,2.0,3.0,a\n2.0,3.0,1.0,b\n",  # a CSV of series, the label last
         "line 1: expected @data before the series; sslops reads the UCR/sktime .ts format"),
    ],
)  # fmt: skip
def test_series_files_that_are_not_read_say_what_is_wrong(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "own.ts"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as info:
        prepare(_series_config(path), tmp_path / "out")
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_files_of_an_image_folder_that_are_not_read_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _folder(tmp_path / "scans", _digits(30), ["a", "b"] * 15)
    (root / "a" / "scan_100.dcm").write_bytes(b"\0" * 128 + b"DICM")
    (root / "b" / "notes.txt").write_text("seen by Dr. X", encoding="utf-8")
    (root / "a" / ".DS_Store").write_bytes(b"\0")  # hidden: not counted
    out = prepare(image_config(root, "image_folder"), tmp_path / "out")
    (note,) = [n for n in _notes(capsys) if "left out" in n]
    assert "data.train: 2 files are no image sslops reads" in note
    assert ".dcm (1)" in note and ".txt (1)" in note and "DICOM" in note
    assert PreparedData(out).schema["classes"] == ["a", "b"]
    only = tmp_path / "dicom" / "a"
    only.mkdir(parents=True)
    (only / "scan.dcm").write_bytes(b"\0" * 128 + b"DICM")
    with pytest.raises(DataError, match=r"holds no images .*1 \.dcm.*DICOM is not read"):
        prepare(image_config(only.parent, "image_folder"), tmp_path / "none")


@pytest.mark.parametrize(
    ("x", "needle"),
    [
        (np.zeros((20, 1, 12, 12), np.uint8),  # PyTorch's layout
         "images of shape (20, 1, 12, 12) and labels of shape (20,); expected (N, H, W) or "
         "(N, H, W, 1|3) and (N,); the channels come first (PyTorch's (N, C, H, W)): save "
         "x.transpose(0, 2, 3, 1)"),
        (np.full((20, 12, 12), 4000, np.uint16),  # a 12-bit export
         "holds pixel values from 4000 to 4000; expected 0..255 (or floats 0..1): 16-bit "
         "images (uint16)? convert them to 8 bits on their own scale, e.g. "
         "numpy.round(x * 255 / 4095)"),
        (np.full((20, 12, 12), 60000, np.uint16), "numpy.round(x * 255 / 65535)"),
    ],
)  # fmt: skip
def test_npz_images_in_another_layout_or_bit_depth_say_how_to_save_them(
    tmp_path: Path, x: np.ndarray, needle: str
) -> None:
    path = tmp_path / "scans.npz"
    np.savez(path, x=x, y=np.arange(20) % 2)
    with pytest.raises(DataError) as info:
        prepare(image_config(path, "npz"), tmp_path / "out")
    assert needle in str(info.value), str(info.value)
    assert not (tmp_path / "out").exists()


def _upright_and_tagged(tmp_path: Path) -> tuple[np.ndarray, Path]:
    """An upright image, and a JPEG of it as a phone or scanner writes it: the pixels stored
    rotated 90 degrees with EXIF Orientation 6 ('rotate 90 clockwise to show')."""
    upright = np.zeros((24, 16), np.uint8)
    upright[:8] = 255  # a bright band at the top: which way is up can be told
    stored = np.rot90(upright, k=1)  # what the camera wrote: (16, 24), band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=100)
    return upright, path


def test_jpeg_exif_orientation_is_read_upright(tmp_path: Path) -> None:
    """Pillow hands a JPEG over as stored: a phone photo of a film, tagged Orientation 6,
    was read lying on its side (and another shape), which a viewer never shows."""
    from sslops.data.images import open_image

    upright, path = _upright_and_tagged(tmp_path)
    image = open_image(path, "data.train: phone.jpg")
    pixels = np.asarray(image.convert("L"), dtype=np.int16)
    assert pixels.shape == upright.shape  # (24, 16): taller than wide, as shown
    assert np.abs(pixels - upright).max() < 40  # JPEG round-off only
    # through prepare (a folder of such images) the same holds; a generator of its own, so
    # the split does not depend on what the tests before it drew from RNG
    rng = np.random.default_rng(1)
    for i in range(30):
        (tmp_path / "scans" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        band = upright | rng.integers(0, 40, upright.shape).astype(np.uint8)  # distinct
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(np.rot90(band, k=1)).save(
            tmp_path / "scans" / "ab"[i % 2] / f"p{i:02d}.jpg", exif=exif, quality=100
        )
    data = PreparedData(prepare(image_config(tmp_path / "scans", "image_folder"),
                                tmp_path / "out"))  # fmt: skip
    values = data.train.features[..., 0].astype(np.int16)
    assert values.shape[1:] == (24, 16)
    assert (values[:, :8].mean() > 200) and (values[:, 8:].mean() < 50)


@pytest.mark.parametrize(("fmt", "suffix", "what"), [("TIFF", ".tif", "pages"),
                                                       ("GIF", ".gif", "frames")])  # fmt: skip
def test_a_multi_page_image_file_is_refused_with_its_page_count(
    tmp_path: Path, fmt: str, suffix: str, what: str
) -> None:
    """Only the first page of a multi-page TIFF (a scan series in one file) was read, and the
    rest dropped without a word."""
    pages = [Image.fromarray(a) for a in _digits(3)]
    root = _folder(tmp_path / "scans", _digits(20), ["a", "b"] * 10)
    stack = root / "b" / f"series{suffix}"
    pages[0].save(stack, format=fmt, save_all=True, append_images=pages[1:])
    with pytest.raises(DataError) as info:
        prepare(image_config(root, "image_folder"), tmp_path / "out")
    message = str(info.value)
    assert f"series{suffix}" in message and "data.train" in message and "\n" not in message
    assert f"holds 3 {what}" in message and "one image per file" in message
    assert not (tmp_path / "out").exists()
    # a one-page TIFF is read as before
    stack.unlink()
    pages[0].save(stack, format=fmt)
    assert PreparedData(prepare(image_config(root, "image_folder"), tmp_path / "ok")).train
