"""Image files: facts (:func:`image_info`, :func:`file_facts`, pHash) and decoding with OpenCV to uint8 RGB (H, W, 3).

Header parsing (format, size, channels, bit depth, EXIF orientation, JPEG quantisation and quality) is
in :mod:`kit.data.image_headers`; this module reads files, decodes, resizes and hashes them (the records' own
encoding is :func:`kit.data.schema.encode_image`).

The pHash is the DCT hash of Zauner, "Implementation and Benchmarking of Perceptual Image Hash
Functions" (2010): grayscale 32x32, 2-D DCT, the 8x8 lowest frequencies thresholded at their median.

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
- Memory: a file that is not regular or is over the size limit is refused unread, an image over the pixel
  limit (:data:`kit.data.image_headers.MAX_PIXELS`, checked on the header's size; OpenCV's own limit is set
  to it as a backstop) undecoded; a baseline JPEG much larger than needed (``max_side``) is decoded at
  1/2, 1/4 or 1/8 scale by libjpeg itself, so a 12000x12000 JPEG never materialises at full size.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from kit.data.image_headers import (
    PIXELS_ENV,
    SNIFF_BYTES,
    ImageError,
    displayed_size,
    max_pixels,
    open_image_file,
    quality_from_tables,
    read_header,
    read_image_bytes,
    sniff,
)
from kit.errors import KitError

_OPENCV_PIXELS_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"  # OpenCV 5 reads it once, when cv2 is imported


def image_info(path: str | os.PathLike) -> dict:
    """Cheap facts about an image file from its header only.

    Returns ``{"path", "format", "bytes", "width", "height", "channels", "bit_depth", "orientation"}``;
    values that the header does not give cheaply are None. ``width``/``height`` are as displayed,
    i.e. swapped for EXIF orientations 5-8. Raises :class:`ImageError` if the file cannot be opened.
    """
    path = Path(path)
    with open_image_file(path) as (fh, size):  # OS errors while reading become ImageErrors there too
        fmt = sniff(fh.read(SNIFF_BYTES))
        header = read_header(fh, fmt) if fmt else {}
    height, width = displayed_size(header)
    return {
        "path": str(path),
        "format": fmt or "unknown",
        "bytes": size,
        "width": width,
        "height": height,
        "channels": header.get("channels"),
        "bit_depth": header.get("bit_depth"),
        "orientation": header.get("orientation", 1),
    }


# ---------------------------------------------------------------------------------------------- decode


def _opencv() -> Any:
    """cv2, with OpenCV's own pixel limit set to kit's before cv2 is first imported (a backstop for every format)."""
    limit = str(max_pixels())
    if os.environ.get(_OPENCV_PIXELS_ENV) != limit:  # only when changed: setenv races getenv in other threads
        os.environ[_OPENCV_PIXELS_ENV] = limit
    import cv2

    return cv2


with contextlib.suppress(KitError):  # at import too: cv2 may be imported before the first decode
    os.environ[_OPENCV_PIXELS_ENV] = str(max_pixels())  # an invalid KIT_MAX_IMAGE_PIXELS is reported by the first decode


@functools.cache
def _opencv_limit_holds(limit: int) -> bool:
    """True when OpenCV itself refuses images above kit's pixel ``limit`` in this process.

    OpenCV 5 reads its limit once, when cv2 is imported; when something imported cv2 before this module set
    it, it is OpenCV's default (2**30 pixels). Probed with the header of a grey PGM just over the limit and no
    pixels: OpenCV fails the size check (cv2.error) before it would read the missing data (None).
    """
    cv2 = _opencv()
    side = int((limit + 1) ** 0.5) + 1
    try:
        cv2.imdecode(np.frombuffer(f"P5\n{side} {side}\n255\n".encode(), np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return True
    return False


def check_pixels(fmt: str, header: dict, factor: int = 1) -> None:
    """Refuse, before decoding, an image over the pixel limit, or one of unknown size: a format kit reads
    headers of must give its size, any other is decoded only under OpenCV's own limit (:func:`_opencv_limit_holds`).

    ``factor`` is libjpeg's reduction while decoding; it saves memory only for a baseline JPEG: a progressive
    one holds all its DCT coefficients (2 bytes a pixel and component) whatever the output scale.
    """
    limit = max_pixels()
    height, width = displayed_size(header)
    if fmt != "jpeg" or header.get("progressive"):
        factor = 1
    if height and width:
        if (height // factor) * (width // factor) > limit:
            raise ImageError(f"image too large ({width}x{height} > {limit} pixels; raise {PIXELS_ENV})")
    elif fmt:
        raise ImageError(f"corrupt or truncated {fmt.upper()} (no image size in its header)")
    elif not _opencv_limit_holds(limit):
        raise ImageError(
            "not an image kit can size before decoding (unknown format, and OpenCV's pixel limit is off: cv2 came first)"
        )


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
    data = read_image_bytes(path)
    fmt = sniff(data[:SNIFF_BYTES])
    if not fmt and _looks_like_text(data):
        raise ImageError("not an image (text file)")
    header = read_header(io.BytesIO(data), fmt) if fmt else {}
    height, width = displayed_size(header)
    factor = _reduction(height or 0, width or 0, max_side) if fmt == "jpeg" else 1
    if fmt == "jpeg" and not _jpeg_complete(data):
        raise ImageError("truncated JPEG (no end-of-image marker)")
    check_pixels(fmt, header, factor)
    cv2 = _opencv()

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
        raise _opencv_error(exc) from None
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


def _opencv_error(exc: Exception) -> ImageError:
    message = str(exc).strip().splitlines()[-1]
    if "CV_IO_MAX_IMAGE" in message:  # OpenCV's own size check, set to kit's limit by _opencv
        return ImageError(f"image too large (over {max_pixels()} pixels, found by OpenCV; raise {PIXELS_ENV})")
    return ImageError(f"OpenCV cannot decode it ({message[:80]})")


def decode(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Decode any image file to uint8 RGB (H, W, 3), upright; raise :class:`ImageError` with a reason.

    ``max_side`` is a hint of the size the caller will resize to: a JPEG at least twice as large in both
    sides is then decoded at 1/2, 1/4 or 1/8 scale (never below ``max_side``), which saves memory and
    time on huge photos. Images above :data:`MAX_PIXELS` after that are refused.
    """
    return decode_with_size(path, max_side)[0]


# ---------------------------------------------------------------------------------------------- resize


def resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Stretch to (size, size, 3) uint8 (or to ``size`` = (height, width)), ignoring the aspect ratio.

    Stretching keeps every pixel of the image (no crop loses the evidence, no padding adds borders a
    model could key on). When shrinking, anti-aliased: :func:`shrink_supersampled` by up to 2.5x, INTER_AREA
    beyond; INTER_CUBIC when enlarging, INTER_LINEAR when one side shrinks and the other grows. (Other policies:
    :mod:`kit.data.resizing`.)
    """
    import cv2

    height, width = (size, size) if isinstance(size, int) else size
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    if image.shape[0] >= height and image.shape[1] >= width:
        if max(image.shape[0] / height, image.shape[1] / width) <= SUPERSAMPLE_MAX_SCALE:
            return shrink_supersampled(image, (height, width))
        interpolation = cv2.INTER_AREA
    elif image.shape[0] <= height and image.shape[1] <= width:
        interpolation = cv2.INTER_CUBIC
    else:
        interpolation = cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


SUPERSAMPLE_MAX_SCALE = 2.5  # shrinks by up to this much are supersampled (below); larger ones use INTER_AREA


def shrink_supersampled(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Shrink to (size, size) or (height, width): bilinear samples at twice the size, each 2x2 block averaged. At
    768x512 to 380 px OpenCV's INTER_AREA takes a generic, unvectorised path that costs more than the JPEG decode;
    this takes about half that, 45-55 dB PSNR from it (BENCHMARKS.md, P1-JPEG)."""
    import cv2

    height, width = (size, size) if isinstance(size, int) else size
    doubled = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(doubled, (width, height), interpolation=cv2.INTER_AREA)  # an exact 2x2 mean: OpenCV's fast path


# ---------------------------------------------------------------------------------------------- perceptual hash


def phash(gray: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a grayscale image."""
    import cv2

    small = cv2.resize(gray.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].ravel()
    bits = low > np.median(low[1:])  # DC excluded from the median: it only carries brightness
    return int(np.packbits(bits).view(">u8")[0])


def gray_for_hash(data: bytes, fmt: str, header: dict) -> np.ndarray | None:
    """Decode grayscale, reduced by libjpeg's DCT scaling when a JPEG is large; the pixel limit applies
    (:func:`check_pixels`, at that reduction): raises :class:`ImageError` above it."""
    cv2 = _opencv()
    reductions = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4}
    reductions[8] = cv2.IMREAD_REDUCED_GRAYSCALE_8
    height, width = displayed_size(header)
    side = min(width, height) if width and height else 0
    factor = next((f for f in (8, 4, 2) if side // f >= 64), 1)
    check_pixels(fmt, header, factor)
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), reductions[factor])
    except cv2.error as exc:
        raise _opencv_error(exc) from None


# ---------------------------------------------------------------------------------------------- one file, all facts


def file_facts(path: str | os.PathLike, with_hash: bool = True) -> dict[str, Any]:
    """Header facts, JPEG quality, SHA-1 and (optionally) pHash of one image file, for the data audit.

    Missing numbers are NaN (the audit's tables); ``error`` says why a file is unreadable, '' when it is not.
    The file is read once: the header is parsed from the same bytes that are hashed.
    """
    facts: dict[str, Any] = {"file_size": np.nan, "format": "unknown", "width": np.nan, "height": np.nan, "channels": np.nan}
    facts.update(jpeg_quality=np.nan, sha1="", phash=None, error="")
    try:
        data = read_image_bytes(path)
    except ImageError as exc:
        facts["error"] = f"unreadable: {exc.reason}"
        return facts
    fmt = sniff(data[:SNIFF_BYTES])
    header = read_header(io.BytesIO(data), fmt, quantisation=True) if fmt else {}
    facts["file_size"] = len(data)
    facts["sha1"] = hashlib.sha1(data).hexdigest()
    facts["format"] = fmt or "unknown"
    height, width = displayed_size(header)
    if width is None or height is None:
        facts["error"] = "bad header"
        return facts
    facts["width"], facts["height"] = width, height
    facts["channels"] = np.nan if header.get("channels") is None else header["channels"]
    quality = quality_from_tables(header.get("quantisation", {}))
    if quality is not None:
        facts["jpeg_quality"] = quality
    if with_hash:
        try:
            gray = gray_for_hash(data, fmt, header)
        except ImageError as exc:
            facts["error"] = exc.reason
            return facts
        if gray is None or gray.size == 0:
            facts["error"] = "cannot be decoded"
        else:
            facts["phash"] = phash(gray)
    return facts
