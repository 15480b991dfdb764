"""Robust image decoding with OpenCV: whatever a competition ships becomes uint8 RGB (H, W, 3).

Kaggle image sets are messy: grayscale and palette PNGs next to RGBA screenshots, 16-bit scans,
CMYK JPEGs from print workflows, phone photos that are stored sideways with an EXIF orientation tag,
and the odd truncated download or HTML error page saved as ``.jpg``. :func:`decode` turns every
readable image into the same thing and every unreadable one into an :class:`ImageError` with a short
reason, which the records writer puts in the manifest's skip list instead of crashing.

Choices made here (and why):

- Bytes are read by us and decoded with ``cv2.imdecode``, never ``cv2.imread``: ``imread`` of a
  truncated JPEG returns a partly grey image with only a warning on stderr; ``imdecode`` returns None.
  JPEGs are also checked for the end-of-image marker so truncation gets its own reason.
- JPEGs decode with ``IMREAD_COLOR_RGB`` (or ``IMREAD_REDUCED_COLOR_<k>`` for big ones), which applies
  the EXIF orientation and converts CMYK and grayscale to RGB inside libjpeg. JPEG has no alpha and
  (in practice) no 16-bit, so nothing is lost.
- Every other format decodes with ``IMREAD_UNCHANGED``, which keeps alpha and 16-bit depth but ignores
  EXIF orientation (rare outside JPEG, and not applied here). We then convert: gray -> RGB, palette is
  expanded by libpng, 16-bit is scaled with rounding (65535 -> 255, 257*k -> k; not truncated by a
  shift), and alpha is composited over **white** (what image viewers show; the colour under fully
  transparent pixels is undefined and often black, which would invent dark borders a model could learn).
- Memory: images above :data:`MAX_PIXELS` are refused with a reason; a JPEG much larger than needed
  (``max_side`` hint) is decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself, so a 12000x12000 JPEG
  never materialises at full size.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

MAX_PIXELS = 64_000_000  # refuse full decodes above this (8000x8000); ~200 MB as RGB uint8 per worker
_SNIFF = 32  # bytes needed to tell formats apart and read PNG/GIF/BMP/WEBP sizes


class ImageError(Exception):
    """An image that cannot be used; ``reason`` is short and goes into the manifest's skip list."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------- header


def _sniff(head: bytes) -> str:
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
            if tag == 0x0112:
                (value,) = struct.unpack(endian + "H", entry[8:10])
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def _jpeg_header(fh: BinaryIO) -> dict:
    """Walk the JPEG segments up to the first SOF (seeking past big APP segments, so it stays cheap)."""
    info: dict = {"orientation": 1}
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
            payload = fh.read(length - 2)
            info["exif"] = True
            info["orientation"] = _exif_orientation(payload)
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data = fh.read(6)
            if len(data) == 6:
                precision, height, width, components = struct.unpack(">BHHB", data)
                info.update(width=width, height=height, channels=components, bit_depth=precision)
            return info
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any SOF: give up
            return info
        fh.seek(length - 2, os.SEEK_CUR)


def _header(fh: BinaryIO, fmt: str) -> dict:
    """Width, height, channels and bit depth from the file header, without decoding pixels."""
    fh.seek(0)
    head = fh.read(_SNIFF)
    try:
        if fmt == "jpeg":
            return _jpeg_header(fh)
        if fmt == "png" and head[12:16] == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", head[16:26])
            channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color)
            return {"width": width, "height": height, "channels": channels, "bit_depth": depth, "png_color_type": color}
        if fmt == "gif":
            width, height = struct.unpack("<HH", head[6:10])
            return {"width": width, "height": height, "channels": 3, "bit_depth": 8}
        if fmt == "bmp":
            width, height = struct.unpack("<ii", head[18:26])
            (bpp,) = struct.unpack("<H", head[28:30])
            return {"width": abs(width), "height": abs(height), "channels": 4 if bpp == 32 else 3, "bit_depth": 8}
        if fmt == "webp":
            chunk = head[12:16]
            if chunk == b"VP8X":
                width = int.from_bytes(head[24:27], "little") + 1
                height = int.from_bytes(fh.read(3), "little") + 1
                return {"width": width, "height": height, "bit_depth": 8}
            if chunk == b"VP8L":
                (bits,) = struct.unpack("<I", head[21:25])
                return {"width": (bits & 0x3FFF) + 1, "height": ((bits >> 14) & 0x3FFF) + 1, "bit_depth": 8}
            if chunk == b"VP8 ":
                width, height = struct.unpack("<HH", head[26:30])
                return {"width": width & 0x3FFF, "height": height & 0x3FFF, "channels": 3, "bit_depth": 8}
    except struct.error:
        return {}
    return {}


def image_info(path: str | os.PathLike) -> dict:
    """Cheap facts about an image file from its header only (for the data audit).

    Returns ``{"path", "format", "bytes", "width", "height", "channels", "bit_depth", "orientation"}``;
    values that the header does not give cheaply are None. ``width``/``height`` are as displayed,
    i.e. swapped for EXIF orientations 5-8. Raises :class:`ImageError` if the file cannot be opened.
    """
    path = Path(path)
    with _file_errors():
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF)
            fmt = _sniff(head)
            header = _header(fh, fmt) if fmt else {}
    orientation = header.get("orientation", 1)
    width, height = header.get("width"), header.get("height")
    if orientation >= 5:
        width, height = height, width
    return {
        "path": str(path),
        "format": fmt or "unknown",
        "bytes": size,
        "width": width,
        "height": height,
        "channels": header.get("channels"),
        "bit_depth": header.get("bit_depth"),
        "orientation": orientation,
    }


# ---------------------------------------------------------------------------------------------- decode


@contextlib.contextmanager
def _file_errors() -> Iterator[None]:
    """OS errors of reading an image file as ImageError reasons (the skip list shows them)."""
    try:
        yield
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except IsADirectoryError:
        raise ImageError("is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError(f"cannot read file ({exc.strerror or exc})") from None


def _read_bytes(path: str | os.PathLike) -> bytes:
    with _file_errors(), open(path, "rb") as handle:  # not Path.read_bytes: its path parsing cost ~15 µs an image
        data = handle.read()
    if not data:
        raise ImageError("empty file (0 bytes)")
    return data


def _looks_like_text(data: bytes) -> bool:
    sample = data[:512]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t\f" for ch in text)


def _jpeg_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the last start-of-scan (trailing junk after EOI is fine).

    0xFF bytes inside entropy-coded data are stuffed (FF 00), so FF D9 there is always a real marker;
    comparing with the last SOS ignores the EOI of an embedded EXIF thumbnail.
    """
    eoi = data.rfind(b"\xff\xd9")
    return eoi != -1 and eoi > data.rfind(b"\xff\xda")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any depth to uint8 with rounding (65535 -> 255, 257*k -> k)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):  # TIFF/EXR/HDR floats: 0..1
        return np.rint(np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0).astype(np.uint8)
    info = np.iinfo(array.dtype)
    scaled = (array.astype(np.float64) - info.min) * (255.0 / (info.max - info.min))
    return np.rint(scaled).astype(np.uint8)


def _to_rgb(array: np.ndarray) -> np.ndarray:
    """OpenCV's IMREAD_UNCHANGED output (gray, gray+alpha, BGR, BGRA; any depth) -> uint8 RGB."""
    import cv2

    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if channels == 4 or channels == 2:
        maxval = 255.0 if array.dtype == np.uint8 else (65535.0 if array.dtype == np.uint16 else 1.0)
        colour = array[:, :, :-1].astype(np.float32)
        alpha = array[:, :, -1:].astype(np.float32) / maxval
        composited = colour * alpha + maxval * (1.0 - alpha)  # over white
        array = np.rint(composited * (255.0 / maxval)).clip(0, 255).astype(np.uint8)
        channels -= 1
    else:
        array = _to_uint8(array)
    if channels == 1:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2))
    if channels == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    raise ImageError(f"unsupported channel count {channels}")


def _reduction(height: int, width: int, max_side: int | None) -> int:
    """The largest libjpeg scale 1/8, 1/4 or 1/2 that keeps both sides at least ``max_side``."""
    if not max_side or not height or not width:
        return 1
    for factor in (8, 4, 2):
        if min(height, width) // factor >= max_side:
            return factor
    return 1


def _plain_rgb_png(data: bytes, header: dict) -> bool:
    """An 8-bit RGB PNG (colour type 2) without a tRNS colour key: OpenCV can decode it straight to RGB.

    Saves the BGR->RGB pass of the general path (:func:`_to_rgb`); a tRNS key would make some pixels
    transparent, which only the general path composites.
    """
    if header.get("bit_depth") != 8 or header.get("png_color_type") != 2:
        return False
    first_image_data = data.find(b"IDAT")  # tRNS, when present, comes before the image data
    return data.find(b"tRNS", 33, first_image_data if first_image_data > 0 else len(data)) < 0


def decode_with_size(path: str | os.PathLike, max_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Like :func:`decode`, also returning the original (height, width) as displayed.

    The image itself may be smaller than the original when ``max_side`` let a big JPEG decode at reduced
    scale; the records keep the original size, which the data audit and some models use.
    """
    import cv2

    data = _read_bytes(path)
    fmt = _sniff(data[:_SNIFF])
    if not fmt and _looks_like_text(data):
        raise ImageError("not an image (text file)")
    header = _header(io.BytesIO(data), fmt) if fmt else {}
    height, width = header.get("height"), header.get("width")
    if header.get("orientation", 1) >= 5:
        height, width = width, height
    factor = _reduction(height or 0, width or 0, max_side) if fmt == "jpeg" else 1
    if height and width and (height // factor) * (width // factor) > MAX_PIXELS:
        raise ImageError(f"image too large ({width}x{height} > {MAX_PIXELS} pixels)")
    if fmt == "jpeg" and not _jpeg_complete(data):
        raise ImageError("truncated JPEG (no end-of-image marker)")

    buffer = np.frombuffer(data, np.uint8)
    rgb_direct = fmt == "jpeg" or (fmt == "png" and _plain_rgb_png(data, header))
    try:
        if fmt == "jpeg":
            flags = {
                1: cv2.IMREAD_COLOR_RGB,
                2: cv2.IMREAD_REDUCED_COLOR_2,
                4: cv2.IMREAD_REDUCED_COLOR_4,
                8: cv2.IMREAD_REDUCED_COLOR_8,
            }
            array = cv2.imdecode(buffer, flags[factor])
            if array is not None and factor > 1:  # the reduced flags have no RGB variant
                array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
        elif rgb_direct:
            array = cv2.imdecode(buffer, cv2.IMREAD_COLOR_RGB)
        else:
            array = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageError(f"OpenCV cannot decode it ({str(exc).strip().splitlines()[-1][:80]})") from None
    if array is None:
        if fmt == "jpeg":
            raise ImageError("corrupt JPEG")
        if fmt:
            raise ImageError(f"corrupt or truncated {fmt.upper()}")
        raise ImageError("not an image (unknown format)")
    if array.size == 0:
        raise ImageError("image has no pixels")
    if not rgb_direct:
        array = _to_rgb(array)
    if factor == 1 or not (height and width):
        height, width = array.shape[:2]
    return array, (int(height), int(width))


def decode(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Decode any image file to uint8 RGB (H, W, 3), upright; raise :class:`ImageError` with a reason.

    ``max_side`` is a hint of the size the caller will resize to: a JPEG at least twice as large in both
    sides is then decoded at 1/2, 1/4 or 1/8 scale (never below ``max_side``), which saves memory and
    time on huge photos. Images above :data:`MAX_PIXELS` after that are refused.
    """
    return decode_with_size(path, max_side)[0]


# ---------------------------------------------------------------------------------------------- resize/encode


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Stretch to (size, size, 3) uint8, ignoring the aspect ratio.

    Stretching keeps every pixel of the image (no crop loses the evidence, no padding adds borders a
    model could key on). INTER_AREA when shrinking (anti-aliased), INTER_CUBIC when enlarging,
    INTER_LINEAR when one side shrinks and the other grows.
    """
    import cv2

    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return np.ascontiguousarray(image)
    if height >= size and width >= size:
        interpolation = cv2.INTER_AREA
    elif height <= size and width <= size:
        interpolation = cv2.INTER_CUBIC
    else:
        interpolation = cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def encode(image: np.ndarray, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode uint8 RGB as PNG (lossless) or JPEG (``quality`` 1-100) bytes."""
    import cv2

    if fmt not in ("png", "jpeg"):
        raise ValueError(f"image format must be png or jpeg, got {fmt!r}")
    bgr = cv2.cvtColor(np.ascontiguousarray(image, np.uint8), cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, buffer = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {fmt}")
    return buffer.tobytes()
