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
