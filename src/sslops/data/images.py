"""Image readers (pixel CSV, NPZ, image folders), canonical size and channels, perceptual hash.

Canonical images are uint8 arrays of shape (N, H, W, C), resized with Pillow's
bilinear filter. Near-duplicate candidates share a 64-bit perceptual hash (pHash) up
to a few bits; the caller confirms them by pixel correlation.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import tokenize
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy.fft import dctn

from sslops.data.canonicalize import cell_text
from sslops.data.dedup import pairs_with_equal_keys
from sslops.data.readers import check_is_csv, csv_problem, is_number, other_separator
from sslops.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PIXEL_RANGE = "0..255 (or floats 0..1)"
SHOWN_COLUMNS = 20  # a message listing all 785 columns of an MNIST file buries what it says


def _square_side(pixels: int, path: Path, key: str) -> tuple[int, int]:
    for channels in (1, 3):
        side = round((pixels / channels) ** 0.5)
        if side * side * channels == pixels:
            return side, channels
    raise DataError(
        f"{key}: {path}: {pixels} pixel columns is not a square grey (s*s) or RGB (3*s*s) image"
    )


def _is_image(pixels: int) -> bool:
    return any(round((pixels / c) ** 0.5) ** 2 * c == pixels for c in (1, 3))


def _pixel_csv_header(path: Path, key: str, label: str) -> list[str] | None:
    """The header row of a pixel CSV, or None when its first row is already an image.

    A first row naming data.label is a header (pandas writes ``0,1,...,783,label``), and so
    is one that numbers its columns (``0,1,...,255``: no image is drawn that way); else
    most cells of a header are names and most cells of an image row are numbers: one cell
    that is not a number (a label such as 'zero', or an empty label) makes no header."""
    check_is_csv(path, key)
    line = _first_line(path, key)
    if not line.strip():
        raise DataError(
            f"{key}: {path} is empty; expected one image per row: its pixel values (integers "
            "0..255), then its label"
        )
    cells = [cell.strip() for cell in next(csv.reader([line]))]
    name = other_separator(cells)
    if name is not None:
        raise DataError(
            f"{key}: {path} has one column: the file looks separated by {name}; "
            "sslops reads comma-separated pixel CSV, so convert it first"
        )
    names = sum(not is_number(cell) for cell in cells)
    numbered = cells in (
        [str(i) for i in range(len(cells))],
        [str(i + 1) for i in range(len(cells))],
    )
    return cells if label in cells or 2 * names > len(cells) or numbered else None


def _first_line(path: Path, key: str) -> str:
    """The first line that is not blank ('' for none), as the CSV reader skips blank lines.
    (check_is_csv has made sure that a .gz name means gzip and the reverse.)"""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as fh:
            return next((line for line in fh if line.strip()), "")
    except (OSError, EOFError) as exc:
        raise DataError(f"{key}: {path} could not be read ({exc})") from None


def check_pixel_csv_label(path: Path, label: str, key: str) -> list[str] | None:
    """The header of a pixel CSV (None: it has none, and its last column is 'label'), once
    data.label is known to name one of its columns."""
    header = _pixel_csv_header(path, key, label)
    if label not in (header or ["label"]):
        found = (
            f"columns are: {_shown_names(header)}"
            if header
            else "the file has no header row, so its last column is 'label'"
        )
        raise DataError(f"data.label: column {label!r} not found in {key} ({path}); {found}")
    return header


def _shown_names(names: list[str]) -> str:
    """The first SHOWN_COLUMNS names, and how many there are when that is not all."""
    shown = ", ".join(names[:SHOWN_COLUMNS])
    return shown if len(names) <= SHOWN_COLUMNS else f"{shown}, ... ({len(names)} columns)"


def read_pixel_csv(
    path: Path, label: str, key: str, require_labels: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One image per row: row-major pixel values 0..255 and a label (the last column when the
    file has no header row, else the column named ``label``). ``require_labels=False`` (new
    images to score): the label column may be absent (every column is a pixel: the header
    does not name ``label``, or there is no header and the columns make a whole image); the
    labels are then empty."""
    if require_labels:
        header = check_pixel_csv_label(path, label, key)
    else:
        header = _pixel_csv_header(path, key, label)
    try:
        first = pacsv.read_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=True))
    except pa.ArrowInvalid:
        raise DataError(f"{key}: {path} is not a well-formed CSV: {csv_problem(path)}") from None
    except OSError as exc:
        raise DataError(f"{key}: {path} could not be read ({exc})") from None
    has_header = header is not None
    table = first.slice(1) if has_header else first
    names = header or [f"pixel{i}" for i in range(first.num_columns - 1)] + [label]
    if not require_labels and header is None and _is_image(first.num_columns):
        names = [f"pixel{i}" for i in range(first.num_columns)]  # no label column
    if table.num_rows == 0:
        raise DataError(f"{key}: {path} has no image rows")
    labels = (  # an empty cell is no label: the row is dropped and counted
        np.array(
            ["" if v is None else str(v) for v in table.column(names.index(label)).to_pylist()],
            dtype=object,
        )
        if label in names
        else np.full(table.num_rows, "", dtype=object)
    )
    pixel_columns = [i for i, n in enumerate(names) if n != label]
    values = np.empty((table.num_rows, len(pixel_columns)), dtype=np.float64)
    for out, i in enumerate(pixel_columns):
        column = table.column(i)
        try:
            cells = column.cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cells = None
        if cells is None or cells.null_count:  # not a number, or empty (null, or '' as text)
            row, problem = _first_bad_cell(column.to_pylist())
            raise DataError(
                f"{key}: {path} line {row + 1 + has_header}: pixel {names[i]!r} {problem}; "
                "expected an integer 0..255"
            )
        values[:, out] = cells.to_numpy(zero_copy_only=False)
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


def _first_bad_cell(cells: list[object]) -> tuple[int, str]:
    """The row of the first cell that is empty or not a number, and which of the two."""
    for i, cell in enumerate(cells):
        if cell is None or not str(cell).strip():
            return i, "is empty"
        if not is_number(str(cell)):
            return i, "is not a number"
    return 0, "is not a number"


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # what np.load takes for an .npz (or an empty one)
_SAVE_NPZ = "save images and labels with numpy.savez(path, x=images, y=labels)"


# What np.load raises for a damaged .npy or .npz (an .npz is read lazily, member by member):
# a bad header or CRC, corrupt deflate data, a file cut short; zipfile's NotImplementedError
# and RuntimeError for a member it cannot read (another "version needed", encrypted); the
# TokenError numpy's parser of an old-format .npy header lets out.
NUMPY_READ_ERRORS = (
    OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
    RuntimeError, tokenize.TokenError,
)  # fmt: skip


def read_npz(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x`` (or ``images``): (N, H, W) or (N, H, W, C) pixels as :func:`_eight_bit`
    reads them; ``y`` (or ``labels``): (N,), one label per image."""
    arrays = _npz_arrays(path, key)
    x_name = next((k for k in ("x", "images", "X") if k in arrays), None)
    y_name = next((k for k in ("y", "labels", "Y") if k in arrays), None)
    if x_name is None or y_name is None:
        raise DataError(
            f"{key}: {path} holds arrays {sorted(arrays)}; expected 'x' (or 'images') and 'y' "
            "(or 'labels')"
        )
    x, y = arrays[x_name], arrays[y_name]
    if y.ndim != 1:
        raise DataError(f"{key}: {path}: {_label_shape_problem(y, y_name)}")
    shape = x.shape
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(y) != len(x):
        channels_first = x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3)
        raise DataError(
            f"{key}: {path}: images of shape {shape} and labels of shape {y.shape}; expected "
            "(N, H, W) or (N, H, W, 1|3) and (N,)"
            + (
                f"; the channels come first (PyTorch's (N, C, H, W)): save "
                f"{x_name}.transpose(0, 2, 3, 1)"
                if channels_first
                else ""
            )
        )
    if len(x) == 0:
        raise DataError(
            f"{key}: {path} holds no images ({x_name!r} has shape {arrays[x_name].shape}); "
            "expected at least one"
        )
    x = _eight_bit(x, f"{key}: {path} array {x_name!r}")
    return x, np.array([_label_text(v) for v in y], dtype=object)


def _label_text(value: object) -> str:
    """A class name as a table would hold it: 3.0 saved as float is class '3', b'cat' 'cat'."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return cell_text(value)


def _npz_arrays(path: Path, key: str) -> dict[str, np.ndarray]:
    """Every array of an .npz archive. np.load takes a file that is no zip for a .npy array
    or else a pickle (and then advises allow_pickle): say what the file is instead."""
    with open(path, "rb") as fh:
        head = fh.read(len(_NPY_MAGIC))
    if head.startswith(_NPY_MAGIC):
        raise DataError(
            f"{key}: {path} is a .npy array (numpy.save), not an .npz archive with images and "
            f"labels; {_SAVE_NPZ}"
        )
    if not head.startswith(_ZIP_MAGIC):
        raise DataError(f"{key}: {path} is not an .npz (zip) archive; {_SAVE_NPZ}")
    arrays = {}
    try:  # np.load leaks the file it opened when the zip is damaged: hand it an open one
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            for name in npz.files:
                try:
                    arrays[name] = npz[name]
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):  # numpy's words for an object array
                        raise
                    raise DataError(
                        f"{key}: {path} array {name!r} holds Python objects (dtype object), "
                        f"which sslops does not unpickle; save it with a plain dtype, e.g. "
                        f"{name}.astype(str)"
                    ) from None
    except NUMPY_READ_ERRORS as exc:
        raise DataError(
            f"{key}: {path} is not a readable .npz (zip) archive ({exc}); is it truncated? "
            f"{_SAVE_NPZ}"
        ) from None
    return arrays


def _label_shape_problem(y: np.ndarray, name: str) -> str:
    """Why labels that are not one per image are refused, with the fix for the usual shapes."""
    expected = "expected one label per image, shape (N,)"
    if _is_one_hot(y):
        return f"labels {name!r} of shape {y.shape} are one-hot; {expected}: save {name}.argmax(axis=1)"
    if y.ndim == 2 and y.shape[1] == 1:
        return f"labels {name!r} have shape {y.shape}; {expected}: save {name}.ravel()"
    return f"labels {name!r} have shape {y.shape}; {expected}"


def _is_one_hot(y: np.ndarray) -> bool:
    numeric = np.issubdtype(y.dtype, np.number) or y.dtype == bool
    return (
        y.ndim == 2
        and y.shape[1] > 1
        and numeric
        and bool(((y == 0) | (y == 1)).all() and (y.sum(axis=1) == 1).all())
    )


def _eight_bit(values: np.ndarray, what: str) -> np.ndarray:
    """uint8 pixels: integers 0..255, as in a pixel CSV; floats within 0..1 are on the 0..1
    scale (ToTensor's) and are multiplied by 255, other floats within 0..255 are rounded.
    Anything else (standardized values, a 16-bit range, negatives, complex numbers) is
    rejected: clipping or rescaling it would silently change the images."""
    if values.dtype == np.uint8:
        return values
    integers = np.issubdtype(values.dtype, np.integer)
    if not (integers or values.dtype == bool or np.issubdtype(values.dtype, np.floating)):
        raise DataError(f"{what} has dtype {values.dtype}; expected pixel values {PIXEL_RANGE}")
    pixels = values.astype(np.float64)
    finite = np.isfinite(pixels)
    if not finite.all():
        record = int(np.argwhere(~finite)[0][0])
        raise DataError(f"{what} record {record}: non-finite pixel values; expected {PIXEL_RANGE}")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0 or high > 255:
        advice = (  # 16-bit images (a DICOM export): the scale is theirs, not a normalization
            f"16-bit images ({values.dtype})? convert them to 8 bits on their own scale, e.g. "
            f"numpy.round(x * 255 / {65535 if high > SIXTEEN_BIT_LOW else 4095})"
            ".astype('uint8')"
            if values.dtype == np.uint16 and low >= 0
            else "save the images unnormalized, on an 8-bit scale"
        )
        raise DataError(
            f"{what} holds pixel values from {low:g} to {high:g}; expected {PIXEL_RANGE}: " + advice
        )
    if not integers and high <= 1:
        pixels *= 255
    return np.round(pixels).astype(np.uint8)


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_BIT_LOW = 4095  # a 16-bit image with no value above this fits in 12 bits


def image_files(root: Path) -> list[Path]:
    """The image files under ``root`` (any depth), sorted; hidden files and folders
    (``.ipynb_checkpoints``) left out."""
    return sorted(p for p in _visible_files(root) if p.suffix.lower() in IMAGE_SUFFIXES)


def _visible_files(root: Path) -> list[Path]:
    return [
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]  # fmt: skip


def other_files(root: Path) -> Counter[str]:
    """How many visible files under ``root`` are no image file sslops reads, by suffix
    (DICOM ``.dcm`` scans, ``.txt`` notes, ``Thumbs.db``): left out, so counted and named."""
    return Counter(
        p.suffix.lower() or p.name for p in _visible_files(root)
        if p.suffix.lower() not in IMAGE_SUFFIXES
    )  # fmt: skip


def _other_files_hint(root: Path) -> str:
    found = other_files(root)
    if not found:
        return ""
    listed = ", ".join(f"{n:,} {suffix}" for suffix, n in found.most_common(5))
    dicom = (
        "; DICOM is not read: export the scans as 8-bit PNG first (e.g. with pydicom, "
        "windowed to 0..255)"
        if ".dcm" in found
        else ""
    )
    return f"; it holds other files ({listed}){dicom}"


def open_image(path: Path, what: str) -> Image.Image:
    """One image file, loaded upright (as its EXIF Orientation tag says a viewer shows it:
    phones and some scanners store the pixels rotated) and on an 8-bit scale. An unreadable
    file, or one of several pages or frames, is a DataError."""
    try:
        with warnings.catch_warnings():
            # Pillow warns (two lines on stderr, per file) of metadata it skips, e.g. "Corrupt
            # EXIF data" in a damaged TIFF or JPEG; the pixels are read or refused below.
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
            with Image.open(path) as image:
                _check_one_frame(image, what)
                image.load()
                upright = ImageOps.exif_transpose(image)
                return _eight_bit_image(upright if upright is not image else image.copy(), what)
    except Image.DecompressionBombError as exc:  # a corrupt header, or a hostile file
        raise DataError(f"{what} is not read: {exc}") from None
    except (UnidentifiedImageError, OSError, EOFError, *_DAMAGED_IMAGE) as exc:
        raise DataError(f"{what} is not a readable image ({exc})") from None


# What Pillow's decoders raise for a damaged file besides OSError: "broken PNG file"
# (SyntaxError), "Truncated IHDR chunk" (ValueError), "Missing dimensions" (TypeError).
_DAMAGED_IMAGE = (SyntaxError, ValueError, TypeError)


def _check_one_frame(image: Image.Image, what: str) -> None:
    """Pillow opens the first page of a multi-page TIFF (a scan series in one file) or the
    first frame of an animation: the rest would be dropped without a word."""
    frames = int(getattr(image, "n_frames", 1))
    if frames > 1:
        kind = "pages" if image.format == "TIFF" else "frames"
        raise DataError(
            f"{what} holds {frames} {kind} ({image.format}); sslops reads one image per file: "
            f"save each of the {kind} as its own file (e.g. with Pillow's "
            "ImageSequence.Iterator), or keep the one meant"
        )


def read_image_folder(root: Path, key: str) -> tuple[list[Image.Image], np.ndarray, list[str]]:
    """``root/<label>/<image file>``, read as torchvision's ImageFolder reads it: the label is
    the folder right under root, and images in its subfolders are found and belong to it (a
    subfolder is no class of its own). Hidden files and folders (``.ipynb_checkpoints``) are
    left out. Returns the images, labels and relative file names."""
    if not root.is_dir():
        raise DataError(f"{key}: {root} is not a folder of <label>/<image> files")
    files = image_files(root)
    if not files:
        raise DataError(
            f"{key}: {root} holds no images ({', '.join(IMAGE_SUFFIXES)})" + _other_files_hint(root)
        )
    images, labels = [], []
    for path in files:
        relative = path.relative_to(root)
        if len(relative.parts) == 1:
            raise DataError(f"{key}: {path} is not inside a <label> folder of {root}")
        images.append(open_image(path, f"{key}: {path}"))
        labels.append(relative.parts[0])
    return images, np.array(labels, dtype=object), [p.relative_to(root).as_posix() for p in files]


def _eight_bit_image(image: Image.Image, what: str) -> Image.Image:
    """Pillow's convert('L') clips 16- and 32-bit pixels at 255 (a 12-bit scan turns almost
    white): a 16-bit image is scaled from 0..65535 as an 8-bit export would (one whose values
    fit in 12 bits is refused, see :func:`_check_sixteen_bit_range`); 32-bit integer and
    float images are read by the rule of :func:`_eight_bit`."""
    if image.mode in _SIXTEEN_BIT:
        pixels = np.asarray(image, dtype=np.float64)
        _check_sixteen_bit_range(pixels, what)
        return Image.fromarray(np.round(pixels / 257).astype(np.uint8))
    if image.mode in ("I", "F"):
        return Image.fromarray(_eight_bit(np.asarray(image), what))
    return image


def _check_sixteen_bit_range(pixels: np.ndarray, what: str) -> None:
    """A 16-bit image whose values all fit in 12 bits (a 12-bit scan saved as 16-bit PNG or
    TIFF, as medical images often are; or 8-bit values saved as 16-bit) reads on the 16-bit
    scale as an almost black image of at most 17 grey levels, and the group attributes (ink
    at 128 of 255) find no ink in it: refused with the conversion, as the scale cannot be
    told from one image. A blank image (all 0) is the same on any scale."""
    high = float(pixels.max())
    if 0 < high <= SIXTEEN_BIT_LOW:
        raise DataError(
            f"{what} is a 16-bit image whose values reach only {high:g} (of 65535): read on "
            f"the 16-bit scale it is almost black (8-bit values up to {round(high / 257)}); "
            "if it holds 12-bit (0..4095) or 8-bit values, convert it to 8 bits on its own "
            "scale, e.g. numpy.round(a * 255 / 4095).astype('uint8'), and save it again"
        )


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
