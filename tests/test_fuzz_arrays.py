"""Generated series and image files against their readers (prepare's and predict's).

``.ts`` files with odd cells (huge, infinite, NaN, empty, several numbers), odd ':' counts and
labels, byte-order marks, CRLF and bytes that are not UTF-8; ``.npy``/``.npz`` arrays of any
dtype, shape and value, whole or damaged; image files of each format with bytes flipped, cut
or inserted. Every case is read and canonicalized as prepare does (float32 series, 8-bit
images), and must give finite values or one :class:`DataError`; never another exception.

Derandomized, as the other fuzzers (``SSLOPS_FUZZ_RANDOM=1`` / ``SSLOPS_FUZZ_SCALE``).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from sslops.data.images import canonical_images, open_image, read_npz
from sslops.data.series import FLOAT32_MAX, canonical_series, read_ts
from sslops.errors import DataError
from sslops.predict_arrays import _series
from tests.fuzzing import damaged_bytes, fuzz


def written(factory: pytest.TempPathFactory, name: str, data: bytes) -> Path:
    """``data`` in the file each case of a test rewrites (a folder per case costs more than
    the case)."""
    folder = factory.getbasetemp() / "fuzz-cases"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


HEADER = "@problemName fuzz\n@timeStamps false\n@univariate true\n@classLabel true 1 2\n@data\n"
CELLS = st.one_of(
    st.floats().map(repr),
    st.floats(-100, 100).map(lambda v: f"{v:.3f}"),
    st.sampled_from(["?", "", " ", "nan", "NaN", "inf", "-inf", "1e308", "-1e39", "3.5e38",
                     "1e-320", "1_0", "0x10", "1 2", "x", "\u00a0", "١"]),
)  # fmt: skip
LINE = st.builds(
    lambda cells, label: ",".join(cells) + label,
    st.lists(CELLS, min_size=0, max_size=6),
    st.sampled_from([":1", ":2", ":3", "", "::1", ": 1", ":1:"]),
)


@st.composite
def ts_bytes(draw: st.DrawFn) -> bytes:
    good = [",".join(f"{v:.2f}" for v in np.sin(np.arange(8) + i)) + f":{i % 2 + 1}"
            for i in range(4)]  # fmt: skip
    lines = good + draw(st.lists(LINE, min_size=1, max_size=3))
    text = draw(st.sampled_from(["", "\ufeff"])) + HEADER + "\n".join(draw(st.permutations(lines)))
    data = text.replace("\n", draw(st.sampled_from(["\n", "\r\n"]))).encode()
    if draw(st.integers(0, 9)) == 0:  # a byte that is not UTF-8
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xff" + data[at:]
    return data


@fuzz(150)
@given(data=ts_bytes(), policy=st.sampled_from(["resample", "pad_crop"]))
@example(data=(HEADER + "1,2,3:1\n1e308,-1e308,2:2\n").encode(), policy="resample")
def test_a_ts_file_reads_to_finite_float32_series_or_one_data_error(
    data: bytes, policy: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = written(tmp_path_factory, "series.ts", data)
    try:
        series, labels = read_ts(path, "data.train")
    except DataError as exc:
        assert str(exc).startswith(f"data.train: {path}"), str(exc)
        return
    assert len(series) == len(labels) > 0
    for values in series:
        known = values[~np.isnan(values)]
        assert len(known) >= 2 and (np.abs(known) <= FLOAT32_MAX).all()
    canonical, _ = canonical_series(series, 6, policy)
    assert canonical.dtype == np.float32 and np.isfinite(canonical).all()


def test_a_ts_value_beyond_float32_is_refused_at_its_line(tmp_path: Path) -> None:
    """1e308 passed the reader (finite as a 64-bit float) and became inf in the prepared
    float32 split: a silent non-finite input (found by the fuzz review)."""
    path = tmp_path / "series.ts"
    path.write_text(HEADER + "1,2,3:1\n1,1e308,2:2\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_ts(path, "data.train")
    assert str(caught.value) == (
        f"data.train: {path} line 7: value 2 is 1e+308; expected finite numbers within "
        "±3.4e+38 (series are stored as 32-bit floats), or '?' for a missing one"
    )


def npy_bytes(array: np.ndarray, npz: bool) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=array) if npz else np.save(buffer, array)
    return buffer.getvalue()


DTYPES = st.sampled_from(["f2", "f4", "f8", "i1", "i8", "u8", "?", "c8", "U3", "O"])


@st.composite
def series_array_file(draw: st.DrawFn) -> bytes:
    dtype = np.dtype(draw(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    if dtype.kind == "O":
        array = np.array([1, "a"], dtype=object)
    else:
        array = draw(hnp.arrays(dtype, shape))
    npz = draw(st.booleans())
    data = npy_bytes(array, npz) if dtype.kind != "O" else _object_npz()
    return draw(damaged_bytes(data)) if draw(st.integers(0, 3)) == 0 else data


def _unknown_zip_version(data: bytes) -> bytes:
    """The zip with its first central directory entry asking for zip version 11.9 (zipfile
    raises NotImplementedError)."""
    at = data.find(b"PK\x01\x02") + 6
    return data[:at] + b"\x77\x00" + data[at + 2 :]


# An old-format .npy header numpy's parser chokes on: tokenize.TokenError escaped np.load.
BROKEN_NPY_HEADER = (
    b"\x93NUMPY\x01\x00v\x00{'descr'( '<f2', 'fortran_order': False, 'shape': (), }"
    + b" " * 62
    + b"\n\x00\x00"
)


def _object_npz() -> bytes:
    """An .npz with an object array (np.savez pickles it; np.load refuses without pickle)."""
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([1, "a"], dtype=object))
    return buffer.getvalue()


@fuzz(120)
@given(data=series_array_file())
@example(data=npy_bytes(np.array([[1.0, 2.0, 3.0, 4.0]]), npz=True)[:100])  # BadZipFile
@example(data=_object_npz())  # ValueError: Object arrays cannot be loaded
@example(data=BROKEN_NPY_HEADER)  # tokenize.TokenError
@example(data=npy_bytes(np.ones((2, 4), complex), npz=False))  # imaginary part dropped
def test_a_series_array_for_predict_reads_to_finite_float32_or_one_data_error(
    data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = written(tmp_path_factory, "series.npz", data)
    try:
        series, ids, _ = _series(path, [None, 1, 4], "resample")
    except DataError as exc:
        assert str(exc).startswith(f"--data {path}"), str(exc)
        return
    assert series.dtype == np.float32 and series.shape == (len(ids), 1, 4)
    assert np.isfinite(series).all()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (npy_bytes(np.ones((2, 4)), npz=True)[:100], "not a readable NumPy file (File is not a zip file)"),
        (_object_npz(), "holds Python objects (dtype object), which sslops does not unpickle"),
        (npy_bytes(np.ones((2, 4), complex), npz=False), "dtype complex128; expected real-valued numeric series"),
        (npy_bytes(np.full((2, 4), 1e300), npz=False), "series 0 holds 1e+300; expected finite values within ±3.4e+38"),
        (_unknown_zip_version(npy_bytes(np.ones((2, 4)), npz=True)), "not a readable NumPy file (zip file version 11.9)"),
        (BROKEN_NPY_HEADER, "not a readable NumPy file (('EOF in multi-line statement', (2, 0)))"),
    ],
    ids=["cut-npz", "object-npz", "complex", "beyond-float32", "zip-version", "npy-header"],
)  # fmt: skip
def test_predict_names_a_damaged_or_unusable_series_array(
    data: bytes, expected: str, tmp_path: Path
) -> None:
    """Were a BadZipFile / ValueError / NotImplementedError / TokenError traceback, and two silent changes (complex values lost
    their imaginary part; 1e300 became inf in float32); found by the fuzz review."""
    path = tmp_path / "series.npz"
    path.write_bytes(data)
    with pytest.raises(DataError, match=r"^--data ") as caught:
        _series(path, [None, 1, 4], "resample")
    assert expected in str(caught.value), str(caught.value)


def image_bytes(fmt: str, mode: str) -> bytes:
    buffer = io.BytesIO()
    pixels = (np.arange(16 * 16).reshape(16, 16) % 256).astype(np.uint8)
    Image.fromarray(pixels).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


IMAGES = [image_bytes(fmt, mode) for fmt, mode in [
    ("PNG", "L"), ("PNG", "RGB"), ("PNG", "P"), ("PNG", "RGBA"), ("PNG", "1"), ("JPEG", "L"),
    ("BMP", "L"), ("TIFF", "L"), ("GIF", "P"),
]]  # fmt: skip


def _with_ihdr(png: bytes, size: bytes) -> bytes:
    """The PNG with another width and height, its header's checksum made to match."""
    header = b"IHDR" + size + png[24:29]
    return png[:12] + header + zlib.crc32(header).to_bytes(4, "big") + png[33:]


# Where a damaged header makes Pillow raise another error than OSError (each was a traceback
# through prepare and predict; found by the fuzz review).
BROKEN_PNG = IMAGES[0][:33] + b"\x00\x00\x00\x05IDAT" + IMAGES[0][41:]  # SyntaxError: broken PNG
SHORT_IHDR = IMAGES[0][:8] + b"\x00\x00\x00\x04IHDR" + IMAGES[0][16:]  # ValueError: Truncated IHDR
HUGE_PNG = _with_ihdr(IMAGES[0], (10**5).to_bytes(4, "big") * 2)  # DecompressionBombError
TIFF_NO_EXIF = b"II*\x00\x08\x00\x00\x00"  # Pillow's "Corrupt EXIF data" warning, then an error


@fuzz(120)
@given(data=st.sampled_from(IMAGES).flatmap(damaged_bytes))
@example(data=BROKEN_PNG)
@example(data=SHORT_IHDR)
@example(data=HUGE_PNG)
@example(data=TIFF_NO_EXIF)
def test_a_damaged_image_file_reads_to_eight_bit_pixels_or_one_data_error(
    data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = written(tmp_path_factory, "image.png", data)
    try:
        image = open_image(path, f"data.train: {path}")
    except DataError as exc:
        assert str(exc).startswith(f"data.train: {path} is not"), str(exc)
        return
    pixels, _ = canonical_images([image], (16, 16), 1)
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 16, 16, 1)


@pytest.mark.parametrize(
    "data", [BROKEN_PNG, SHORT_IHDR, HUGE_PNG, TIFF_NO_EXIF], ids=["chunk", "ihdr", "bomb", "exif"]
)
def test_a_damaged_image_header_is_one_data_error(data: bytes, tmp_path: Path) -> None:
    """Each was a traceback (SyntaxError, ValueError, DecompressionBombError) or Pillow's
    warning lines on stderr before the error (found by the fuzz review)."""
    path = tmp_path / "image.png"
    path.write_bytes(data)
    with pytest.raises(DataError, match=f"^data.train: {path} is not"):
        open_image(path, f"data.train: {path}")


def test_prepare_names_an_npz_whose_array_header_is_broken(tmp_path: Path) -> None:
    """numpy's tokenize.TokenError escaped prepare's .npz reader (found by the fuzz review)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", BROKEN_NPY_HEADER)
        archive.writestr("y.npy", BROKEN_NPY_HEADER)
    path = tmp_path / "images.npz"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match=r"is not a readable \.npz \(zip\) archive"):
        read_npz(path, "data.train")


def test_prepare_names_an_npz_whose_zip_version_is_unknown(tmp_path: Path) -> None:
    """zipfile's NotImplementedError escaped prepare's .npz reader (found by the fuzz review)."""
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 1]))
    path = tmp_path / "images.npz"
    path.write_bytes(_unknown_zip_version(buffer.getvalue()))
    with pytest.raises(
        DataError, match=r"is not a readable \.npz \(zip\) archive \(zip file version 11\.9\)"
    ):
        read_npz(path, "data.train")
