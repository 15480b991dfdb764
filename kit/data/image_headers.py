"""Image headers: format, size, channels, bit depth, EXIF orientation, JPEG quantisation tables and quality.

Everything here is read from a file's first bytes and its header segments, without decoding pixels; the
files themselves are read, decoded and hashed in :mod:`kit.data.images`, which reads its headers here
(:func:`read_header`) before any pixel is decoded. The files themselves are opened here too, under kit's two
limits on every image file it reads (:func:`open_image_file`, :func:`read_image_bytes`): only regular files
(a FIFO would block the open, a symlink to /dev/zero would never end) of at most :data:`MAX_FILE_BYTES`, read
to at most that many bytes; and :data:`MAX_PIXELS`, checked against the header's size before decoding.

Headers are parsed by hand, and JPEG segments are walked by ONE walker (:func:`_jpeg_header`) that serves
the size (SOF), the EXIF orientation (APP1) and the quantisation tables (DQT). Pillow's lazy
``Image.open`` gives the same facts but was slower on 300 generated 768x512 files (best of 3, µs a file):
``image_info`` of a path 15.6 (JPEG 16.2, PNG 12.4) here against Pillow's 32.1 (35.2, 15.6); from bytes in
memory, as :func:`kit.data.images.decode_with_size` reads them for every image of a records build, 4.5 a JPEG
and 0.9 a PNG against 29.1 and 5191 (Pillow's ``getexif`` reads a PNG to its end); quantisation tables 4.5
against 21.6 (``.quantization``).

The JPEG quality estimate inverts libjpeg's scaling of the standard luminance table (ITU T.81, K.1).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import struct
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from kit.errors import KitError

SNIFF_BYTES = 32  # bytes needed to tell formats apart and read PNG/GIF/BMP/WEBP sizes
_EXIF_ORIENTATION = 0x0112

# ITU T.81 Annex K.1 luminance quantisation table, natural (row-major) order
STD_LUMINANCE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
).ravel()
# natural index of the k-th coefficient in zigzag order (the order DQT segments store them in)
ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
     35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31,
     39, 46, 53, 60, 61, 54, 47, 55, 62, 63]
)  # fmt: skip


def _libjpeg_tables() -> np.ndarray:
    """The luminance table libjpeg writes for each quality 1..100 (zigzag order), shape (100, 64)."""
    quality = np.arange(1, 101)
    scale = np.where(quality < 50, 5000 // quality, 200 - 2 * quality)
    tables = (STD_LUMINANCE[ZIGZAG][None, :] * scale[:, None] + 50) // 100
    return np.clip(tables, 1, 255)


_QUALITY_TABLES = _libjpeg_tables()


# ---------------------------------------------------------------------------------------------- header


def sniff(head: bytes) -> str:
    """The format from the magic bytes ('' when unknown)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return ""


def _exif_orientation(app1: bytes) -> int:
    """The EXIF orientation (1..8) from an APP1 payload; 1 when absent or unreadable."""
    if not app1.startswith(b"Exif\x00\x00") or len(app1) < 14:
        return 1
    tiff = app1[6:]
    endian = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if endian is None:
        return 1
    try:
        (ifd,) = struct.unpack(endian + "I", tiff[4:8])
        (count,) = struct.unpack(endian + "H", tiff[ifd : ifd + 2])
        for i in range(count):
            entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
            tag, _type, _n = struct.unpack(endian + "HHI", entry[:8])
            if tag == _EXIF_ORIENTATION:
                (value,) = struct.unpack(endian + "H", entry[8:10])
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def _quantisation_tables(segment: bytes, tables: dict[int, np.ndarray]) -> None:
    """Add the tables (zigzag order) of one DQT segment's payload to ``tables``, by table id."""
    j = 0
    while j < len(segment):
        precision, table_id = segment[j] >> 4, segment[j] & 0x0F
        size = 128 if precision else 64
        values = np.frombuffer(segment[j + 1 : j + 1 + size], dtype=">u2" if precision else np.uint8)
        if len(values) == 64:
            tables[table_id] = values.astype(np.int64)
        j += 1 + size


def _jpeg_header(fh: BinaryIO, quantisation: bool = False) -> dict:
    """Walk the JPEG segments: size from the first SOF, orientation from the first APP1 (EXIF).

    Stops at that SOF (seeking past big APP segments, so it stays cheap), or with ``quantisation`` at the
    start of scan, collecting the DQT tables under ``"quantisation"`` (tables may follow the SOF).
    """
    info: dict = {"orientation": 1}
    if quantisation:
        info["quantisation"] = {}
    fh.seek(2)
    while True:
        byte = fh.read(1)
        while byte and byte != b"\xff":  # tolerate padding between segments
            byte = fh.read(1)
        while byte == b"\xff":
            byte = fh.read(1)
        if not byte:
            return info
        marker = byte[0]
        if marker in (0x01, *range(0xD0, 0xD9)):  # standalone markers without a length
            continue
        length_bytes = fh.read(2)
        if len(length_bytes) < 2:
            return info
        (length,) = struct.unpack(">H", length_bytes)
        if marker == 0xE1 and "exif" not in info:
            payload = fh.read(max(length - 2, 0))
            info["exif"] = True
            info["orientation"] = _exif_orientation(payload)
            continue
        if marker == 0xDB and quantisation:
            _quantisation_tables(fh.read(max(length - 2, 0)), info["quantisation"])
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and "width" not in info:
            data = fh.read(6)
            if len(data) == 6:
                precision, height, width, components = struct.unpack(">BHHB", data)
                info.update(width=width, height=height, channels=components, bit_depth=precision)
                info["progressive"] = marker in (0xC2, 0xC6, 0xCA, 0xCE)  # libjpeg then buffers every coefficient
            if not quantisation or len(data) < 6:
                return info
            fh.seek(max(length - 8, 0), os.SEEK_CUR)
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan: no SOF (or no table) after it
            return info
        fh.seek(length - 2, os.SEEK_CUR)


def read_header(fh: BinaryIO, fmt: str, quantisation: bool = False) -> dict:
    """Width, height (as stored), channels, bit depth and EXIF orientation from the header, without decoding.

    Every format :func:`sniff` knows gives its size here, so the pixel limit of :mod:`kit.data.images` is
    checked before any decode.

    PNGs also give ``png_color_type``; JPEGs with ``quantisation`` their DQT tables (zigzag order, by id).
    Keys the header does not give are absent; {} for an unknown format or an unreadable header.
    """
    fh.seek(0)
    head = fh.read(SNIFF_BYTES)
    try:
        if fmt == "jpeg":
            return _jpeg_header(fh, quantisation)
        if fmt == "png" and head[12:16] == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", head[16:26])
            channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color)
            return {"width": width, "height": height, "channels": channels, "bit_depth": depth, "png_color_type": color}
        if fmt == "gif":
            width, height = struct.unpack("<HH", head[6:10])
            return {"width": width, "height": height, "channels": 3, "bit_depth": 8}
        if fmt == "bmp":
            if head[14:18] == b"\x0c\x00\x00\x00":  # OS/2 BITMAPCOREHEADER: 16-bit sides
                width, height, _planes, bpp = struct.unpack("<HHHH", head[18:26])
                return {"width": width, "height": height, "channels": 4 if bpp == 32 else 3, "bit_depth": 8}
            width, height = struct.unpack("<ii", head[18:26])
            (bpp,) = struct.unpack("<H", head[28:30])
            return {"width": abs(width), "height": abs(height), "channels": 4 if bpp == 32 else 3, "bit_depth": 8}
        if fmt == "webp":
            chunk = head[12:16]
            if chunk == b"VP8X":  # canvas width - 1 and height - 1, 24 bits each, after 4 bytes of flags
                width = int.from_bytes(head[24:27], "little") + 1
                height = int.from_bytes(head[27:30], "little") + 1
                return {"width": width, "height": height, "bit_depth": 8}
            if chunk == b"VP8L":
                (bits,) = struct.unpack("<I", head[21:25])
                return {"width": (bits & 0x3FFF) + 1, "height": ((bits >> 14) & 0x3FFF) + 1, "bit_depth": 8}
            if chunk == b"VP8 ":
                width, height = struct.unpack("<HH", head[26:30])
                return {"width": width & 0x3FFF, "height": height & 0x3FFF, "channels": 3, "bit_depth": 8}
        if fmt == "tiff":
            return _tiff_header(fh, head)
    except struct.error:
        return {}
    return {}


_TIFF_TAGS = {256: "width", 257: "height", 258: "bit_depth", 277: "channels"}  # ImageWidth/Length, Bits/SamplesPerPixel
_TIFF_MAX_ENTRIES = 4096  # a first IFD longer than this is not a real one: refuse rather than walk it


def _tiff_header(fh: BinaryIO, head: bytes) -> dict:
    """Width, height, channels and bit depth from the tags of a TIFF's first IFD (little or big endian).

    Tags may be SHORT (type 3) or LONG (type 4); the value of a single one sits in the entry itself. The
    first IFD may be anywhere in the file (libtiff writes it after the pixel data), so this seeks to it.
    """
    endian = "<" if head[:2] == b"II" else ">"
    (offset,) = struct.unpack(endian + "I", head[4:8])
    fh.seek(offset)
    (count,) = struct.unpack(endian + "H", fh.read(2))
    if count > _TIFF_MAX_ENTRIES:
        return {}
    entries = fh.read(12 * count)
    info: dict = {}
    for start in range(0, len(entries) - 11, 12):
        tag, kind, _n = struct.unpack(endian + "HHI", entries[start : start + 8])
        if tag in _TIFF_TAGS and kind in (3, 4):
            value_format = endian + ("H" if kind == 3 else "I")
            (info[_TIFF_TAGS[tag]],) = struct.unpack(value_format, entries[start + 8 : start + 8 + struct.calcsize(value_format)])
    if "bit_depth" in info and info.get("channels", 1) > 1:
        del info["bit_depth"]  # one value per channel, stored elsewhere: not read (not needed for the size)
    return info if "width" in info and "height" in info else {}


def displayed_size(header: dict) -> tuple[int | None, int | None]:
    """(height, width) as displayed: the stored sides swapped for EXIF orientations 5-8 (a quarter turn)."""
    height, width = header.get("height"), header.get("width")
    return (width, height) if header.get("orientation", 1) >= 5 else (height, width)


# ---------------------------------------------------------------------------------------------- files and limits


MAX_PIXELS = 64_000_000  # refuse decodes above this (8000x8000); ~200 MB as RGB uint8 per worker
MAX_FILE_BYTES = 512 * 1024 * 1024  # refuse image files above this: a 64 MP 16-bit RGBA TIFF stored raw is 512 MB
PIXELS_ENV, BYTES_ENV = "KIT_MAX_IMAGE_PIXELS", "KIT_MAX_IMAGE_BYTES"


def _limit(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise KitError(f"{variable}={raw!r} is not a positive whole number", f"set {variable} to a limit such as {default}")
    return value


def max_pixels() -> int:
    """The pixel limit of every decode: :data:`MAX_PIXELS`, or the ``KIT_MAX_IMAGE_PIXELS`` variable."""
    return _limit(PIXELS_ENV, MAX_PIXELS)


def max_file_bytes() -> int:
    """The size limit of every image file read: :data:`MAX_FILE_BYTES`, or the ``KIT_MAX_IMAGE_BYTES`` variable."""
    return _limit(BYTES_ENV, MAX_FILE_BYTES)


class ImageError(Exception):
    """An image that cannot be used; ``reason`` is short and goes into the manifest's skip list."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextlib.contextmanager
def _file_errors() -> Iterator[None]:
    """OS errors of reading an image file as ImageError reasons (the skip list shows them)."""
    try:
        yield
    except FileNotFoundError as exc:
        dangling = exc.filename is not None and os.path.islink(exc.filename)
        raise ImageError("dangling symlink (its target does not exist)" if dangling else "file not found") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError("symlink loop (too many levels of symbolic links)") from None
        raise ImageError(f"cannot read file ({exc.strerror or exc})") from None


_FILE_KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


def _check_regular(mode: int, size: int) -> None:
    """Only regular files within the size limit are read: a FIFO blocks, a device such as /dev/zero never ends."""
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "special file")
        raise ImageError(f"not a regular file ({kind})")
    limit = max_file_bytes()
    if size > limit:
        raise ImageError(f"file too large ({size} bytes > {limit}; raise {BYTES_ENV})")


@contextlib.contextmanager
def open_image_file(path: str | os.PathLike) -> Iterator[tuple[BinaryIO, int]]:
    """A regular file within the size limit, opened for reading, and its size.

    The path is checked (following symlinks) before it is opened, and the open file again: O_NONBLOCK
    keeps the open from blocking should a FIFO replace the file in between, and fstat sees what was opened.
    """
    with _file_errors():
        before = os.stat(path)
        _check_regular(before.st_mode, before.st_size)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb") as handle:
            opened = os.fstat(fd)
            _check_regular(opened.st_mode, opened.st_size)
            yield handle, opened.st_size


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a regular image file, never more than the size limit (the file may grow while read)."""
    limit = max_file_bytes()
    with open_image_file(path) as (handle, size):  # not Path.read_bytes: its path parsing cost ~15 µs an image
        chunks = [handle.read(min(size, limit) + 1)]
        total = len(chunks[0])
        while total <= limit and len(chunks[-1]) and total > size:  # grown since fstat: read on, in bounded steps
            chunks.append(handle.read(min(limit + 1 - total, 1 << 20)))
            total += len(chunks[-1])
    if total > limit:
        raise ImageError(f"file too large (over {limit} bytes; raise {BYTES_ENV})")
    if not total:
        raise ImageError("empty file (0 bytes)")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# ---------------------------------------------------------------------------------------------- JPEG quality


def jpeg_tables(data: bytes) -> dict[int, np.ndarray]:
    """The quantisation tables (zigzag order) from the DQT segments of a JPEG, by table id."""
    if data[:2] != b"\xff\xd8":
        return {}
    return _jpeg_header(io.BytesIO(data), quantisation=True)["quantisation"]


def quality_from_tables(tables: dict[int, np.ndarray]) -> int | None:
    """Estimated JPEG quality 1..100: the libjpeg quality whose luminance table is closest (L1) to table 0.

    Exact for files written by libjpeg (OpenCV, Pillow, most cameras' software); an estimate for encoders
    with their own tables. None without tables.
    """
    if not tables:
        return None
    table = tables.get(0, next(iter(tables.values())))
    return int(np.abs(_QUALITY_TABLES - table[None, :]).sum(axis=1).argmin() + 1)


def jpeg_quality(data: bytes) -> int | None:
    """Estimated quality of JPEG bytes (:func:`quality_from_tables`); None for non-JPEGs."""
    return quality_from_tables(jpeg_tables(data))
