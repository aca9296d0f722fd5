"""``sslops predict`` for image and series models: arrays or image files in, classes out.

The exported model takes one array input (``[batch, C, H, W]`` uint8-range pixels as
float32, or ``[batch, 1, L]`` raw series) and returns class probabilities. Accepted data:

- ``.npy`` / ``.npz`` (its only array, or the one named ``x``): images ``(N, H, W)`` or
  ``(N, H, W, C)`` (pixels 0..255, or floats 0..1), series ``(N, L)``; row ids
  ``<file stem>:<row>``;
- for image models, a pixel CSV as prepare reads it (one image per row, row-major pixels
  0..255; the ``data.label`` column, or an unnamed last one, is left out when there is one;
  row ids ``<file stem>:<row>``), or a folder of image files (PNG, JPEG, ...; hidden ones
  left out, sorted by path; row ids are the paths relative to the folder);
- for series models, a ``.ts`` file (sktime/UCR format; ``@classLabel false`` or true, the
  labels are ignored; series of any length, ``?`` for a missing value).

Images are brought to the model's size and channels as ``prepare`` does
(:func:`sslops.data.images.canonical_images`, bilinear), series to its length as
prepare did (missing values interpolated, then resampled, or padded / cropped under
``prepare.series_length_policy: pad_crop``, which the model's metadata records;
:func:`sslops.data.series.canonical_series`).
The CSV holds ``row_id``, ``score`` (the probability of the predicted class), ``label``
(the predicted class, as named in the model's ``classes`` metadata) and one ``p_<class>``
column per class.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sslops.data.images import (
    IMAGE_SUFFIXES,
    NUMPY_READ_ERRORS,
    _eight_bit,
    canonical_images,
    image_files,
    open_image,
    read_pixel_csv,
)
from sslops.data.series import FLOAT32_MAX, SERIES_FLOATS, canonical_series, read_ts
from sslops.errors import DataError
from sslops.models.arrays import model_input

ARRAY_BATCH = 256  # images or series per onnxruntime run (--chunk-rows overrides)
_IMAGE_FILES = (".npy", ".npz", ".csv", ".csv.gz")
_SERIES_FILES = (".npy", ".npz", ".ts")


@dataclass(frozen=True)
class ArrayScores:
    row_ids: np.ndarray
    proba: np.ndarray  # (N, K)
    classes: list[str]
    inputs: list[Path]
    resized: int


def _load_array(path: Path) -> np.ndarray:
    try:  # np.load leaks the file it opened when the zip is damaged: hand it an open one
        with warnings.catch_warnings(), open(path, "rb") as fh:
            warnings.simplefilter("ignore")
            loaded = np.load(fh, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                return loaded
            with loaded:
                names = list(loaded.files)
                if len(names) != 1 and "x" not in names:
                    raise DataError(
                        f"--data {path} holds arrays {names}; expected one array, or one named 'x'"
                    )
                return np.asarray(loaded["x" if "x" in names else names[0]])
    except NUMPY_READ_ERRORS as exc:
        if "allow_pickle" in str(exc):  # numpy's words for an array of Python objects
            raise DataError(f"--data {path} holds Python objects (dtype object), which sslops "
                            "does not unpickle; save the array with a numeric dtype") from None  # fmt: skip
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DataError(f"--data {path}: not a readable NumPy file ({reason})") from None


def _image_files(root: Path) -> list[Path]:
    files = image_files(root)
    if not files:
        raise DataError(
            f"--data {root}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)}) "
            "and is not a .npy/.npz file"
        )
    return files


def _image_chunks(
    path: Path, shape: list[Any], label: str, batch: int
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """(model input, row ids, how many images were resized or converted) for ``batch``
    images at a time: a folder's files are opened a chunk at a time, an array's or pixel
    CSV's 8-bit pixels (decided on the whole file: 0..1 floats or 0..255) are brought to
    the model's size and made its float input a chunk at a time, so only one chunk of the
    model's input is ever in memory. A pixel CSV's ``label`` column, if any, is left out."""
    channels, height, width = (int(v) for v in shape[1:4])
    if path.is_dir():
        files = _image_files(path)
        for start in range(0, len(files), batch):
            chunk = files[start : start + batch]
            pil = [open_image(file, f"--data {file}") for file in chunk]
            ids = np.array([f.relative_to(path).as_posix() for f in chunk], dtype=object)
            yield _model_input(pil, (height, width), channels, ids)
        return
    values = (
        _pixel_csv(path, label, channels * height * width)
        if path.name.endswith((".csv", ".csv.gz"))
        else _load_array(path)
    )
    if values.ndim == 4 and values.shape[-1] not in (1, 3):
        raise DataError(
            f"--data {path}: shape {values.shape}; expected images (N, H, W) or "
            "(N, H, W, C) with C 1 or 3 (channels last)"
        )
    if values.ndim not in (3, 4) or len(values) == 0:
        raise DataError(
            f"--data {path}: shape {values.shape}; expected images (N, H, W) or (N, H, W, C)"
        )
    pixels = _eight_bit(values, f"--data {path}")
    pixels = pixels if pixels.ndim == 4 else pixels[..., None]
    for start in range(0, len(pixels), batch):
        part = pixels[start : start + batch]
        if part.shape[-1] == 1 and channels == 3:
            part = np.repeat(part, 3, axis=-1)
        ids = np.array(
            [f"{_stem(path)}:{i}" for i in range(start, start + len(part))], dtype=object
        )
        yield _model_input(part, (height, width), channels, ids)


def _model_input(
    images: np.ndarray | list[Any], size: tuple[int, int], channels: int, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    canonical, report = canonical_images(images, size, channels)
    changed = report["resized"] + report["channels_converted"]
    return model_input("image", canonical).numpy(), ids, changed


def _pixel_csv(path: Path, label: str, pixels: int) -> np.ndarray:
    try:
        return read_pixel_csv(path, label, "--data", require_labels=False)[0]
    except DataError as exc:  # a table of columns given to an image model, most often
        raise DataError(
            f"{exc} (an image model reads a pixel CSV as one image per row, {pixels:,} pixel "
            "values for this model, or a .npy/.npz array or a folder of images)"
        ) from None


def _series(path: Path, shape: list[Any], policy: str) -> tuple[np.ndarray, np.ndarray, int]:
    if path.is_dir():
        raise DataError(f"--data {path} is a folder; a series model reads a .npy/.npz (N, L) file")
    length = int(shape[2])
    if path.name.endswith(".ts"):  # series of any length, '?' for a missing value
        raw, _ = read_ts(path, "--data", require_labels=False)
        series, report = canonical_series(raw, length, policy)
        ids = np.array([f"{_stem(path)}:{i}" for i in range(len(raw))], dtype=object)
        return model_input("timeseries", series).numpy(), ids, _changed(report)
    values = _load_array(path)
    real = np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
    if values.ndim != 2 or len(values) == 0 or not real:  # complex: its imaginary part lost
        raise DataError(f"--data {path}: shape {values.shape}, dtype {values.dtype}; expected "
                        "real-valued numeric series (N, L)")  # fmt: skip
    values = values.astype(np.float64)
    beyond = np.abs(values) > FLOAT32_MAX  # inf, or a value a 32-bit float makes inf
    if beyond.any() or np.isnan(values).all(axis=1).any():
        row = int(np.flatnonzero(beyond.any(1) | np.isnan(values).all(1))[0])
        if beyond[row].any():
            value = values[row, np.flatnonzero(beyond[row])[0]]
            raise DataError(f"--data {path}: series {row} holds {value:g}; expected finite "
                            f"values within ±{FLOAT32_MAX:.3g} ({SERIES_FLOATS})")  # fmt: skip
        raise DataError(f"--data {path}: series {row} is infinite or has no value")
    series, report = canonical_series(list(values), length, policy)
    ids = np.array([f"{_stem(path)}:{i}" for i in range(len(values))], dtype=object)
    return model_input("timeseries", series).numpy(), ids, _changed(report)


def _changed(report: dict[str, int]) -> int:
    """Series brought to the model's length (resampled, or padded / cropped)."""
    return report["resampled"] + report["padded"] + report["cropped"]


def series_length_policy(metadata: dict[str, str]) -> str:
    """How the model's training series were brought to its length (prepare.
    series_length_policy, in the model's metadata); a model exported before it was recorded
    was trained on resampled series, the default."""
    policy = metadata.get("series_length_policy", "resample")
    if policy not in ("resample", "pad_crop"):
        raise DataError(
            f"the model's series_length_policy {policy!r} is not one sslops applies; "
            "expected 'resample' or 'pad_crop'"
        )
    return policy


def _series_chunks(
    path: Path, shape: list[Any], batch: int, policy: str
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """The series (read whole: they are small) ``batch`` at a time, as ``_image_chunks``."""
    series, ids, resampled = _series(path, shape, policy)
    for start in range(0, len(series), batch):
        stop = start + batch
        yield series[start:stop], ids[start:stop], resampled if start == 0 else 0


def _stem(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    for suffix in (".npz", ".npy", ".csv", ".ts"):
        name = name.removesuffix(suffix)
    return name


def score_arrays(
    session: Any, spec: Any, metadata: dict[str, str], data: Path, batch: int = ARRAY_BATCH,
    label: str = "label",
) -> ArrayScores:  # fmt: skip
    """Read ``data`` for the model's array input ``spec`` and run ``session`` on ``batch``
    items at a time (the network's input and activations for a whole folder would not fit;
    a folder's images are also opened a chunk at a time)."""
    if not data.exists():
        raise DataError(f"--data {data}: no such file or folder")
    image = len(spec.shape) == 4
    if data.is_file() and not data.name.endswith(_IMAGE_FILES if image else _SERIES_FILES):
        raise DataError(
            f"--data {data}: {'an image' if image else 'a series'} model reads a .npy/.npz file, "
            + (
                "a pixel CSV (one image per row) or a folder of images"
                if image
                else "or a .ts file"
            )
        )
    chunks = (
        _image_chunks(data, list(spec.shape), label, batch)
        if image
        else _series_chunks(data, list(spec.shape), batch, series_length_policy(metadata))
    )
    output = session.get_outputs()[0].name
    parts, names, changed = [], [], 0
    for chunk, chunk_ids, resized in chunks:
        parts.append(np.asarray(session.run([output], {spec.name: chunk})[0], np.float64))
        names.append(chunk_ids)
        changed += resized
    proba, ids = np.concatenate(parts), np.concatenate(names)
    try:
        classes = [str(c) for c in json.loads(metadata.get("classes", "null"))]
    except (TypeError, ValueError):
        classes = []
    if len(classes) != proba.shape[1]:
        classes = [str(k) for k in range(proba.shape[1])]
    inputs = _image_files(data) if data.is_dir() else [data]
    return ArrayScores(ids, proba, classes, inputs, changed)
