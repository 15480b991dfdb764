"""Reliability, images: one tiny competition holding every odd, broken and hostile kind of image file goes
through ``kit records`` on the command line; the build completes, good images are written (upright), bad ones
are in the manifest's skip list with their reason, and the counts are exact. Hostile ones: special
files (a FIFO, a symlink to /dev/zero, a socket, a folder), a file over the size limit, decompression bombs
(a 389 kB TIFF of 20000x20000, a PGM over the pixel limit, a format kit has no header parser for); the same
files through the audit's per-file facts.

Decoding of each kind in isolation is tested in tests/test_images.py; this is the end-to-end contract.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import COMMAND_TIMEOUT_S, kit_error_line

PIL = pytest.importorskip("PIL.Image")  # tests only: Pillow writes what OpenCV cannot (palette, CMYK, EXIF)

ROOT = Path(__file__).resolve().parent.parent
SIZE = 16
HUGE = 12000  # 12000 x 12000: 144 M pixels, 432 MB as RGB if decoded naively
BOMB = 20000  # the TIFF: 389 kB on disk, 20000 x 20000 (1.2 GB as RGB) decoded
# The run's limits, lowered so that small files can cross them (the variables are how users raise them)
BYTES_LIMIT = 8_000_000
PIXELS_LIMIT = 4_000_000  # above huge.jpg at 1/8 scale (1500 x 1500)
PGM_SIDE = 2001  # 4.004 M pixels: over PIXELS_LIMIT, under BYTES_LIMIT
LIMITS_ENV = {"KIT_MAX_IMAGE_BYTES": str(BYTES_LIMIT), "KIT_MAX_IMAGE_PIXELS": str(PIXELS_LIMIT)}
HANG_TIMEOUT = COMMAND_TIMEOUT_S  # generous: only a real hang (an open() of a FIFO) reaches it

COMP_YAML = """\
comp:
  name: reli-images
  source: local
  train: {csv: train.csv, path_column: file, label_column: label}
  classes: [a, b]
"""


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _huge_png(side: int) -> bytes:
    """A grey ``side`` x ``side`` PNG made row by row (about 140 kB for 12000 px: never in memory whole)."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _tiff(width: int, height: int, endian: str = "<", long_sizes: bool = True) -> bytes:
    """A deflate-compressed 8-bit grey TIFF of zeros, its first IFD after the pixel data (as libtiff writes it),
    made row by row: the issue's 20000 x 20000 bomb is 389 kB and never in memory whole."""
    packer = zlib.compressobj(9)
    row = bytes(width)
    strip = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    short, long_ = (3, "H"), (4, "I")
    size_kind = long_ if long_sizes else short
    tags = [  # (tag, (type, format), value): width, height, bits, deflate, black is zero, strip, 1 sample, rows, bytes
        (256, size_kind, width),
        (257, size_kind, height),
        (258, short, 8),
        (259, short, 8),
        (262, short, 1),
        (273, long_, 8),
        (277, short, 1),
        (278, long_, height),
        (279, long_, len(strip)),
    ]
    entries = b"".join(
        struct.pack(endian + "HHI", tag, kind, 1) + struct.pack(endian + fmt, value).ljust(4, b"\x00")
        for tag, (kind, fmt), value in tags
    )
    magic = b"II*\x00" if endian == "<" else b"MM\x00*"
    ifd = struct.pack(endian + "H", len(tags)) + entries + struct.pack(endian + "I", 0)
    return magic + struct.pack(endian + "I", 8 + len(strip)) + strip + ifd


def _os2_bmp(width: int, height: int) -> bytes:
    """A 24-bit BMP with the 12-byte OS/2 header (BITMAPCOREHEADER), which some old scanners still write."""
    pixels = bytes((width * 3 + 3) // 4 * 4 * height)
    header = struct.pack("<IHHHH", 12, width, height, 1, 24)
    return b"BM" + struct.pack("<IHHI", 14 + len(header) + len(pixels), 0, 0, 14 + len(header)) + header + pixels


def _special_file(folder: Path, name: str) -> None:
    """Special files: a FIFO (open() blocks), /dev/zero (never ends), a socket, a folder."""
    path = folder / name
    if name.startswith("fifo"):
        os.mkfifo(path)
    elif name.startswith("zero"):
        os.symlink("/dev/zero", path)
    elif name.startswith("folder"):
        path.mkdir()
    else:
        with contextlib.chdir(folder), socket.socket(socket.AF_UNIX) as sock:
            sock.bind(name)  # relative: a socket's path is limited to 108 bytes


def _jpeg(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", array)
    assert ok
    return data.tobytes()


def _write(folder: Path, name: str, data: bytes) -> None:
    (folder / name).write_bytes(data)


def _exif_rotated(path: Path) -> None:
    """Stored 32 wide x 16 high, top half black, bottom half white, tagged "rotate 90 clockwise" (6).
    Displayed upright it is 16 wide x 32 high with the white half on the left."""
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[8:] = 255
    image = PIL.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif.tobytes(), quality=95)


def _palette_png(path: Path) -> None:
    PIL.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P").save(path)


# Every case: file name -> None (must be written) or the reason (a substring) it must be skipped with.
# "unreadable" is decided at run time: root reads files whatever their permission bits.
CASES: dict[str, str | None] = {
    "truncated.jpg": "truncated JPEG",
    "empty.jpg": "empty file (0 bytes)",
    "text.jpg": "not an image (text file)",
    "cmyk.jpg": None,
    "sixteen.png": None,
    "rgba.png": None,
    "gray.png": None,
    "palette.png": None,
    "exif6.jpg": None,
    "one.png": None,
    "huge.png": "image too large",  # refused from the header: never decoded
    "huge.jpg": None,  # decoded by libjpeg at 1/8 scale: 1500 x 1500
    "unreadable.png": "permission denied",
    "alpha.webp": None,  # VP8X WebP with alpha: its height was read at the wrong offset ("1000x9390161")
    "small.tif": None,
    "progressive.jpg": f"image too large (2400x2400 > {PIXELS_LIMIT} pixels",  # 1/8 scale saves no memory on it
    "os2.bmp": None,  # OS/2 BMP header: 16-bit sides (read as 32-bit they made it "too large")
    "small.pgm": None,  # a format without a header parser in kit: decoded under OpenCV's own limit (kit's)
    "fifo.jpg": "not a regular file (FIFO)",  # open() of it blocks until a writer comes: never opened
    "socket.png": "not a regular file (socket)",
    "folder.jpg": "not a regular file (directory)",
    "padded.png": f"file too large (9000000 bytes > {BYTES_LIMIT}; raise KIT_MAX_IMAGE_BYTES)",
    "bomb.tif": f"image too large ({BOMB}x{BOMB} > {PIXELS_LIMIT} pixels; raise KIT_MAX_IMAGE_PIXELS)",
    "bomb.pgm": f"image too large (over {PIXELS_LIMIT} pixels, found by OpenCV; raise KIT_MAX_IMAGE_PIXELS)",
}
# zero.jpg (a symlink to /dev/zero) is made but not listed in the build's train.csv: it leads out of data.root, so
# the table check refuses it before any read (test_a_row_linking_to_dev_zero_...); the readers' refusal is tested too
SPECIAL = ("fifo.jpg", "zero.jpg", "socket.png", "folder.jpg")
SPECIAL_REASONS = {**CASES, "zero.jpg": "not a regular file (character device)"}  # a symlink to /dev/zero


def _make_competition(root: Path) -> list[str]:
    """Write the images and train.csv; returns the names whose outcome this run can check."""
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    good = _jpeg(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    _write(images, "truncated.jpg", good[: len(good) // 2])
    _write(images, "empty.jpg", b"")
    _write(images, "text.jpg", b"<html><body>429 Too Many Requests</body></html>\n")
    PIL.fromarray(np.full((12, 12, 3), (200, 30, 60), np.uint8)).convert("CMYK").save(images / "cmyk.jpg", quality=95)
    cv2.imwrite(str(images / "sixteen.png"), np.full((10, 10, 3), 40000, np.uint16))
    cv2.imwrite(str(images / "rgba.png"), np.full((10, 12, 4), 128, np.uint8))
    cv2.imwrite(str(images / "gray.png"), np.full((9, 9), 77, np.uint8))
    _palette_png(images / "palette.png")
    _exif_rotated(images / "exif6.jpg")
    cv2.imwrite(str(images / "one.png"), np.array([[[1, 2, 3]]], np.uint8))
    _write(images, "huge.png", _huge_png(HUGE))
    _write(images, "huge.jpg", _jpeg(np.zeros((HUGE, HUGE), np.uint8)))  # ~1.7 MB, made once
    cv2.imwrite(str(images / "unreadable.png"), np.zeros((4, 4, 3), np.uint8))
    PIL.fromarray(np.zeros((100, 1000, 4), np.uint8), "RGBA").save(images / "alpha.webp")  # the issue's own case
    cv2.imwrite(str(images / "small.tif"), np.full((7, 5, 3), 90, np.uint8))
    for name in SPECIAL:
        _special_file(images, name)
    small_png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    _write(images, "padded.png", small_png + bytes(9_000_000 - len(small_png)))  # decodable: bytes after IEND
    _write(images, "bomb.tif", _tiff(BOMB, BOMB))
    _write(images, "os2.bmp", _os2_bmp(5, 3))
    ok, progressive = cv2.imencode(".jpg", np.zeros((2400, 2400), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    _write(images, "progressive.jpg", progressive.tobytes())
    _write(images, "small.pgm", b"P5\n6 5\n255\n" + bytes(range(30)))
    _write(images, "bomb.pgm", f"P5\n{PGM_SIDE} {PGM_SIDE}\n255\n".encode() + bytes(PGM_SIDE * PGM_SIDE))
    names = list(CASES)
    if os.geteuid() == 0:
        names.remove("unreadable.png")  # root reads it anyway: nothing to check
    else:
        os.chmod(images / "unreadable.png", 0)
    lines = ["file,label"] + [f"images/{name},{'ab'[i % 2]}" for i, name in enumerate(names)]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return names


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One ``kit records`` run over the whole tiny competition (subprocess, as a user runs it)."""
    tmp = tmp_path_factory.mktemp("reli-images")
    root = tmp / "raw"
    names = _make_competition(root)
    comp = tmp / "comp.yaml"
    comp.write_text(COMP_YAML)
    records_root = tmp / "records"
    args = [
        f"comp={comp}",
        f"data.root={root}",
        f"data.records_root={records_root}",
        f"model.image_size={SIZE}",
        "data.image_format=png",  # the checks below decode the stored PNGs with OpenCV
        "data.val_fraction=0",
        "data.workers=1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **LIMITS_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "kit", "records", *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=HANG_TIMEOUT
    )
    folder = records_root / "reli-images" / str(SIZE) / "no-val"  # data.val_fraction=0: the plan without validation
    manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").is_file() else {}
    yield {"result": result, "manifest": manifest, "folder": folder, "names": names, "root": root}
    if os.geteuid() != 0:
        os.chmod(root / "images" / "unreadable.png", 0o644)  # let pytest clean up


def _examples(folder: Path, manifest: dict) -> dict[str, dict]:
    import tensorflow as tf

    out = {}
    for name in manifest["shards"]["train"]:
        for raw in tf.data.TFRecordDataset(str(folder / name)):
            feature = tf.train.Example.FromString(raw.numpy()).features.feature
            image = cv2.imdecode(np.frombuffer(feature["image"].bytes_list.value[0], np.uint8), cv2.IMREAD_COLOR_RGB)
            out[feature["id"].bytes_list.value[0].decode()] = {
                "image": image,
                "height": feature["height"].int64_list.value[0],
                "width": feature["width"].int64_list.value[0],
            }
    return out


@pytest.mark.slow
def test_records_build_completes_with_exact_counts(built: dict) -> None:
    result, manifest = built["result"], built["manifest"]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    names = built["names"]
    bad = [n for n in names if CASES[n] is not None]
    good = [n for n in names if CASES[n] is None]
    assert manifest["counts"]["train"]["total"] == len(good)
    assert sum(manifest["counts"]["train"]["per_class"].values()) == len(good)
    assert len(manifest["skipped"]) == len(bad)
    assert f"{len(bad)} bad images skipped" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_each_file_is_written_or_skipped_with_its_reason(built: dict, name: str) -> None:
    if name not in built["names"]:
        pytest.skip("running as root: permission bits do not block reads")
    expected = CASES[name]
    skipped = {Path(item["path"]).name: item for item in built["manifest"]["skipped"]}
    examples = _examples(built["folder"], built["manifest"])
    row_id = f"images/{name}"  # the path column is the id
    if expected is None:
        assert name not in skipped, skipped.get(name)
        assert examples[row_id]["image"].shape == (SIZE, SIZE, 3)
    else:
        assert row_id not in examples
        assert expected in skipped[name]["reason"], skipped[name]
        assert skipped[name]["id"] == row_id


@pytest.mark.slow
def test_exif_rotated_jpeg_is_stored_upright(built: dict) -> None:
    example = _examples(built["folder"], built["manifest"])["images/exif6.jpg"]
    assert (example["height"], example["width"]) == (32, 16)  # the displayed size
    image = example["image"].astype(int)
    assert image[:, : SIZE // 2 - 2].mean() > 220 and image[:, SIZE // 2 + 2 :].mean() < 35  # white left, black right


@pytest.mark.slow
def test_huge_jpeg_keeps_its_original_size(built: dict) -> None:
    example = _examples(built["folder"], built["manifest"])["images/huge.jpg"]
    assert (example["height"], example["width"]) == (HUGE, HUGE)


# The audit reads every file once for its facts and decodes (for the pHash) what the records would decode.
AUDIT_CASES: dict[str, str] = {
    "fifo.jpg": "unreadable: not a regular file (FIFO)",
    "zero.jpg": "unreadable: not a regular file (character device)",
    "socket.png": "unreadable: not a regular file (socket)",
    "folder.jpg": "unreadable: not a regular file (directory)",
    "padded.png": "unreadable: file too large (9000000 bytes",
    "huge.png": f"image too large ({HUGE}x{HUGE} > {PIXELS_LIMIT} pixels",  # decoded in full for the pHash before
    "bomb.tif": f"image too large ({BOMB}x{BOMB} > {PIXELS_LIMIT} pixels",
    "progressive.jpg": f"image too large (2400x2400 > {PIXELS_LIMIT} pixels",
}


def _within(timeout: float, work: Any) -> Any:
    """``work()`` in a daemon thread; fails the test after ``timeout`` s (a hang), rather than hanging it."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = work()
        except BaseException as exc:  # re-raised in the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s: it hangs"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(AUDIT_CASES))
def test_audit_facts_report_hostile_files_as_unreadable(built: dict, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from kit.data.images import file_facts

    for variable, value in LIMITS_ENV.items():
        monkeypatch.setenv(variable, value)
    facts = _within(HANG_TIMEOUT, lambda: file_facts(built["root"] / "images" / name, True))
    assert AUDIT_CASES[name] in facts["error"], facts
    assert facts["phash"] is None


@pytest.mark.slow
@pytest.mark.parametrize(("endian", "long_sizes"), [("<", True), ("<", False), (">", True), (">", False)])
def test_tiff_size_comes_from_the_first_ifd(tmp_path: Path, endian: str, long_sizes: bool) -> None:
    """Little and big endian, SHORT and LONG sizes, the IFD after the pixels: the size is known before decoding."""
    from kit.data.image_headers import read_header
    from kit.data.images import decode, image_info

    (tmp_path / "t.tif").write_bytes(_tiff(37, 21, endian, long_sizes))
    info = image_info(tmp_path / "t.tif")
    assert (info["format"], info["width"], info["height"], info["channels"], info["bit_depth"]) == ("tiff", 37, 21, 1, 8)
    assert decode(tmp_path / "t.tif").shape == (21, 37, 3)  # the hand-made file is a real TIFF
    bomb = _tiff(BOMB, BOMB, endian, long_sizes)
    assert (read_header(io.BytesIO(bomb), "tiff")["width"], len(bomb) < 400_000) == (BOMB, True)


def test_unknown_format_is_refused_when_opencv_limit_is_not_kits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cv2 was imported (by this module) before kit set OpenCV's limit: a format kit cannot size is refused."""
    from kit.data.images import ImageError, decode

    monkeypatch.setenv("KIT_MAX_IMAGE_PIXELS", "1000")  # OpenCV's limit, fixed at its import, cannot be this
    (tmp_path / "a.pgm").write_bytes(b"P5\n20 20\n255\n" + bytes(400))
    with pytest.raises(ImageError, match="not an image kit can size before decoding"):
        decode(tmp_path / "a.pgm")


@pytest.mark.parametrize("variable", ["KIT_MAX_IMAGE_PIXELS", "KIT_MAX_IMAGE_BYTES"])
@pytest.mark.parametrize("value", ["abc", "0", "-5"])
def test_a_bad_limit_is_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    from kit.data.images import decode
    from kit.errors import KitError

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4, 3), np.uint8))
    monkeypatch.setenv(variable, value)
    with pytest.raises(KitError, match=f"{variable}='{value}' is not a positive whole number"):
        decode(tmp_path / "a.png")


@pytest.mark.parametrize("name", SPECIAL)
def test_special_files_are_refused_before_open_by_every_reader(tmp_path: Path, name: str) -> None:
    """decode, image_info and the audit's facts share one opening: none of them blocks or reads a device."""
    from kit.data.images import ImageError, decode, file_facts, image_info

    _special_file(tmp_path, name)
    reason = SPECIAL_REASONS[name]
    for reader in (decode, image_info):
        with pytest.raises(ImageError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            _within(HANG_TIMEOUT, lambda reader=reader: reader(tmp_path / name))
    assert _within(HANG_TIMEOUT, lambda: file_facts(tmp_path / name))["error"] == f"unreadable: {reason}"


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_the_size_limit_holds_when_stat_understates_the_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc files say 0 bytes and read on (as a file grown since its stat would): the read itself is capped."""
    from kit.data.images import ImageError, decode

    monkeypatch.setenv("KIT_MAX_IMAGE_BYTES", "100")
    with pytest.raises(ImageError, match=r"file too large \(over 100 bytes; raise KIT_MAX_IMAGE_BYTES\)"):
        decode("/proc/self/status")


@pytest.mark.slow
def test_a_row_linking_to_dev_zero_is_one_line_before_any_read(tmp_path: Path) -> None:
    """The issue's reproduction: a CSV row pointing at a symlink to /dev/zero. It leads out of data.root, so
    ``kit records`` stops at the table check with one line naming the row and the link's target."""
    root = tmp_path / "raw"
    (root / "images").mkdir(parents=True)
    _special_file(root / "images", "zero.jpg")
    cv2.imwrite(str(root / "images" / "ok.png"), np.zeros((4, 4, 3), np.uint8))
    (root / "train.csv").write_text("file,label\nimages/ok.png,a\nimages/zero.jpg,b\n")
    comp = tmp_path / "comp.yaml"
    comp.write_text(COMP_YAML)
    args = [f"comp={comp}", f"data.root={root}", f"data.records_root={tmp_path / 'records'}", "data.val_fraction=0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    error = kit_error_line(["records", *args], tmp_path, env, timeout=HANG_TIMEOUT)
    assert "row 2" in error and "really /dev/zero" in error and "outside data.root" in error
