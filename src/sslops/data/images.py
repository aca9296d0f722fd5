"""Image readers (pixel CSV, NPZ, image folders), canonical size and channels, perceptual hash.

Canonical images are uint8 arrays of shape (N, H, W, C), resized with Pillow's
bilinear filter. Near-duplicate candidates share a 64-bit perceptual hash (pHash) up
to a few bits; the caller confirms them by pixel correlation.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from PIL import Image, UnidentifiedImageError
from scipy.fft import dctn

from sslops.data.dedup import pairs_with_equal_keys
from sslops.data.readers import csv_problem
from sslops.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _square_side(pixels: int, path: Path, key: str) -> tuple[int, int]:
    for channels in (1, 3):
        side = round((pixels / channels) ** 0.5)
        if side * side * channels == pixels:
            return side, channels
    raise DataError(
        f"{key}: {path}: {pixels} pixel columns is not a square grey (s*s) or RGB (3*s*s) image"
    )


def read_pixel_csv(path: Path, label: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """One image per row: row-major pixel values 0..255 and a label (the last column when the
    file has no header row, else the column named ``label``)."""
    try:
        first = pacsv.read_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=True))
    except pa.ArrowInvalid:
        raise DataError(f"{key}: {path} is not a well-formed CSV: {csv_problem(path)}") from None
    except OSError as exc:
        raise DataError(f"{key}: {path} could not be read ({exc})") from None
    header = [str(v) for v in first.slice(0, 1).to_pylist()[0].values()] if first.num_rows else []
    has_header = bool(header) and not all(h.replace(".", "", 1).isdigit() for h in header)
    table = first.slice(1) if has_header else first
    names = (
        header if has_header else [f"pixel{i}" for i in range(first.num_columns - 1)] + ["label"]
    )
    if label not in names:
        raise DataError(f"{key}: {path} has no column {label!r} (data.label)")
    if table.num_rows == 0:
        raise DataError(f"{key}: {path} has no image rows")
    labels = np.array(  # an empty cell is no label: the row is dropped and counted
        ["" if v is None else str(v) for v in table.column(names.index(label)).to_pylist()],
        dtype=object,
    )
    pixel_columns = [i for i, n in enumerate(names) if n != label]
    values = np.empty((table.num_rows, len(pixel_columns)), dtype=np.float64)
    for out, i in enumerate(pixel_columns):
        try:
            values[:, out] = table.column(i).cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad = _first_bad_row(table.column(i).to_pylist())
            raise DataError(
                f"{key}: {path} line {bad + 1 + has_header}: pixel column {names[i]!r} "
                "is not a number (expected 0..255)"
            ) from None
    wrong = ~np.isfinite(values) | (values < 0) | (values > 255) | (values != np.round(values))
    if wrong.any():
        row, column = np.argwhere(wrong)[0]
        raise DataError(
            f"{key}: {path} line {row + 1 + has_header}: pixel {names[pixel_columns[column]]!r} "
            f"is {values[row, column]:g}; expected an integer 0..255"
        )
    side, channels = _square_side(len(pixel_columns), path, key)
    images = (
        values.astype(np.uint8).reshape(len(values), channels, side, side).transpose(0, 2, 3, 1)
    )
    return images, labels


def _first_bad_row(values: list[object]) -> int:
    for i, v in enumerate(values):
        try:
            float(str(v))
        except ValueError:
            return i
    return 0


def read_npz(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x`` (or ``images``): (N, H, W) or (N, H, W, C); ``y`` (or ``labels``): (N,)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{key}: {path} is not a readable .npz file ({exc})") from None
    x = next((arrays[k] for k in ("x", "images", "X") if k in arrays), None)
    y = next((arrays[k] for k in ("y", "labels", "Y") if k in arrays), None)
    if x is None or y is None:
        raise DataError(
            f"{key}: {path} holds arrays {sorted(arrays)}; expected 'x' (or 'images') and 'y' "
            "(or 'labels')"
        )
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(y) != len(x):
        raise DataError(
            f"{key}: {path}: images of shape {x.shape} and labels of shape {y.shape}; expected "
            "(N, H, W) or (N, H, W, 1|3) and (N,)"
        )
    if x.dtype != np.uint8:
        finite = np.isfinite(x.astype(np.float64))
        if not finite.all():
            record = int(np.argwhere(~finite)[0][0])
            raise DataError(f"{key}: {path} record {record}: non-finite pixel values")
        top = 1.0 if float(x.max()) <= 1.0 else 255.0
        x = np.clip(np.round(x.astype(np.float64) / top * 255.0), 0, 255).astype(np.uint8)
    return x, np.array([str(v) for v in y], dtype=object)


def read_image_folder(root: Path, key: str) -> tuple[list[Image.Image], np.ndarray, list[str]]:
    """``root/<label>/<image file>``; returns the images, labels and relative file names."""
    if not root.is_dir():
        raise DataError(f"{key}: {root} is not a folder of <label>/<image> files")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{key}: {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    images, labels = [], []
    for path in files:
        if path.parent == root:
            raise DataError(f"{key}: {path} is not inside a <label> folder of {root}")
        try:
            with Image.open(path) as image:
                image.load()
                images.append(image.copy())
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{key}: {path} is not a readable image ({exc})") from None
        labels.append(path.parent.name)
    return images, np.array(labels, dtype=object), [p.relative_to(root).as_posix() for p in files]


def canonical_images(
    images: np.ndarray | list[Image.Image], size: tuple[int, int] | None, channels: int
) -> tuple[np.ndarray, dict[str, int]]:
    """uint8 (N, H, W, channels) at ``size`` (default: the first image's); counts of changes."""
    mode = "L" if channels == 1 else "RGB"
    pil = (
        [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in images]
        if isinstance(images, np.ndarray)
        else list(images)
    )
    height, width = size or (pil[0].height, pil[0].width)
    out = np.empty((len(pil), height, width, channels), dtype=np.uint8)
    resized = converted = 0
    for i, image in enumerate(pil):
        if image.mode != mode:
            converted += 1
            image = image.convert(mode)
        if image.size != (width, height):
            resized += 1
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        out[i] = array[..., None] if channels == 1 else array
    return out, {"resized": resized, "channels_converted": converted}


def perceptual_hash(images: np.ndarray) -> np.ndarray:
    """64-bit pHash per image: the 8x8 lowest frequencies of the DCT of a 32x32 grey copy,
    one bit per coefficient above their median. Robust to noise, resizing and re-encoding."""
    small = np.empty((len(images), 32, 32), dtype=np.float64)
    for i, array in enumerate(images):
        grey = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).convert("L")
        small[i] = np.asarray(grey.resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float64)
    low = dctn(small, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(images), 64)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def near_duplicate_images(hashes: np.ndarray, max_hamming: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs with hash Hamming distance <= max_hamming: exact, by the pigeonhole principle
    (split the 64 bits into max_hamming + 1 parts; a close pair agrees on at least one)."""
    parts = max_hamming + 1
    bounds = np.linspace(0, 64, parts + 1).astype(int)
    found = []
    for low, high in itertools.pairwise(bounds):
        mask = np.uint64(((1 << (high - low)) - 1) << low)
        a, b, _ = pairs_with_equal_keys(hashes & mask)
        xor = hashes[a] ^ hashes[b]
        distance = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        keep = distance <= max_hamming
        n = len(hashes)
        found.append(np.minimum(a[keep], b[keep]) * n + np.maximum(a[keep], b[keep]))
    pairs = np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
    return pairs // len(hashes), pairs % len(hashes)
