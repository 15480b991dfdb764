"""kit.data.images: every odd kind of file decodes to upright uint8 RGB, every bad one to a reason."""

from __future__ import annotations

import io
import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from kit.data import image_headers, images
from kit.data.image_headers import jpeg_quality, jpeg_tables
from kit.data.images import ImageError, decode, file_facts, image_info, resize
from kit.data.schema import encode_image as encode

PIL = pytest.importorskip("PIL.Image")  # tests only: Pillow writes what OpenCV cannot (palette, CMYK, EXIF)


def write_png(path, array) -> None:
    ok, data = cv2.imencode(".png", array)
    assert ok
    path.write_bytes(data.tobytes())


def test_rgb_png_round_trip_keeps_channel_order(tmp_path):
    rgb = np.zeros((6, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[0, 0] = (0, 0, 255)  # one blue pixel
    write_png(tmp_path / "a.png", rgb[..., ::-1])  # cv2 writes BGR
    out = decode(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out, rgb)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    write_png(tmp_path / "g.png", gray)
    out = decode(tmp_path / "g.png")
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_is_composited_over_white(tmp_path):
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 2] = 200  # red in BGR order
    bgra[0, 0, 3] = 255  # opaque
    bgra[0, 1, 3] = 0  # fully transparent -> white
    bgra[1, :, 3] = 128  # half -> between red and white
    write_png(tmp_path / "rgba.png", bgra)
    out = decode(tmp_path / "rgba.png")
    assert out.shape == (2, 2, 3)
    assert tuple(out[0, 0]) == (200, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert tuple(out[1, 0]) == (227, 127, 127)  # 200*a + 255*(1-a), a = 128/255


def test_gray_alpha_png(tmp_path):
    la = np.zeros((2, 2, 2), np.uint8)
    la[..., 0] = 100
    la[..., 1] = 255
    la[0, 0, 1] = 0
    PIL.fromarray(la, "LA").save(tmp_path / "la.png")
    out = decode(tmp_path / "la.png")
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[1, 1]) == (100, 100, 100)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_palette_png_from_raw_bytes(tmp_path):
    """A hand-made 8-bit palette PNG (colour type 3), 2x2, with a transparent palette entry."""
    palette = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255])
    rows = [bytes([0, 0, 1]), bytes([0, 2, 0])]  # filter byte 0 then palette indices
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 3, 0, 0, 0))
        + _png_chunk(b"PLTE", palette)
        + _png_chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + _png_chunk(b"IEND", b"")
    )
    (tmp_path / "p.png").write_bytes(png)
    out = decode(tmp_path / "p.png")
    np.testing.assert_array_equal(out, [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 0, 0]]])
    # the same with entry 0 transparent: red pixels become white
    png_trns = png.replace(
        _png_chunk(b"IDAT", zlib.compress(b"".join(rows))),
        _png_chunk(b"tRNS", b"\x00") + _png_chunk(b"IDAT", zlib.compress(b"".join(rows))),
    )
    (tmp_path / "pt.png").write_bytes(png_trns)
    out = decode(tmp_path / "pt.png")
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[0, 1]) == (0, 255, 0)
    assert image_info(tmp_path / "p.png")["channels"] == 3


def test_rgb_png_colour_key_is_composited_over_white(tmp_path):
    """An 8-bit RGB PNG decodes straight to RGB, unless a tRNS colour key makes some pixels transparent."""
    rows = [bytes([0, 10, 20, 30, 40, 50, 60]), bytes([0, 70, 80, 90, 10, 20, 30])]  # filter 0, then RGB
    head = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
    body = _png_chunk(b"IDAT", zlib.compress(b"".join(rows))) + _png_chunk(b"IEND", b"")
    (tmp_path / "rgb.png").write_bytes(head + body)
    (tmp_path / "keyed.png").write_bytes(head + _png_chunk(b"tRNS", struct.pack(">HHH", 10, 20, 30)) + body)
    np.testing.assert_array_equal(decode(tmp_path / "rgb.png"), [[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [10, 20, 30]]])
    white = [255, 255, 255]
    np.testing.assert_array_equal(decode(tmp_path / "keyed.png"), [[white, [40, 50, 60]], [[70, 80, 90], white]])


def test_sixteen_bit_png_is_scaled_not_truncated(tmp_path):
    values = np.array([[0, 65535, 257 * 128], [65534, 32767, 128]], np.uint16)
    write_png(tmp_path / "g16.png", values)
    out = decode(tmp_path / "g16.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], [[0, 255, 128], [255, 127, 0]])  # >>8 would give 254 and 0 for 65534, 128
    bgr16 = np.zeros((1, 1, 3), np.uint16)
    bgr16[0, 0] = (0, 0, 65535)  # red
    write_png(tmp_path / "c16.png", bgr16)
    assert tuple(decode(tmp_path / "c16.png")[0, 0]) == (255, 0, 0)
    assert image_info(tmp_path / "c16.png")["bit_depth"] == 16


def test_cmyk_jpeg(tmp_path):
    rgb = np.full((8, 8, 3), (200, 30, 60), np.uint8)
    PIL.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    out = decode(tmp_path / "cmyk.jpg")
    assert out.shape == (8, 8, 3)
    assert np.abs(out.astype(int) - rgb).max() <= 6
    assert image_info(tmp_path / "cmyk.jpg")["channels"] == 4


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_rotated_jpeg_comes_out_upright(tmp_path, orientation):
    """Stored 16 wide x 8 high with a red top-left corner; the tag says how to turn it for display."""
    stored = np.zeros((8, 16, 3), np.uint8)
    stored[:3, :3] = (255, 0, 0)
    image = PIL.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = decode(tmp_path / "r.jpg")
    # where the red corner goes: 6 = rotate 90 clockwise, 8 = 90 counter-clockwise, 3 = 180
    expected_shape, corner = {6: ((16, 8, 3), (0, -1)), 8: ((16, 8, 3), (-1, 0)), 3: ((8, 16, 3), (-1, -1))}[orientation]
    assert out.shape == expected_shape
    assert out[corner][0] > 200 and out[corner][1] < 60
    info = image_info(tmp_path / "r.jpg")
    assert info["orientation"] == orientation
    assert (info["height"], info["width"]) == expected_shape[:2]


def test_one_pixel_and_gif_bmp(tmp_path):
    write_png(tmp_path / "one.png", np.array([[[1, 2, 3]]], np.uint8))
    assert decode(tmp_path / "one.png").tolist() == [[[3, 2, 1]]]
    assert resize(decode(tmp_path / "one.png"), 8).shape == (8, 8, 3)
    cv2.imwrite(str(tmp_path / "b.bmp"), np.full((3, 2, 3), (10, 20, 30), np.uint8))
    assert tuple(decode(tmp_path / "b.bmp")[0, 0]) == (30, 20, 10)
    PIL.fromarray(np.full((3, 2, 3), 77, np.uint8)).save(tmp_path / "g.gif")
    assert decode(tmp_path / "g.gif").shape == (3, 2, 3)
    assert image_info(tmp_path / "g.gif")["width"] == 2


def test_big_jpeg_decodes_reduced_with_original_size(tmp_path):
    big = np.zeros((1024, 768, 3), np.uint8)
    big[:, :, 1] = 180
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    full = decode(tmp_path / "big.jpg")
    assert full.shape == (1024, 768, 3)
    image, original = images.decode_with_size(tmp_path / "big.jpg", max_side=64)
    assert image.shape == (128, 96, 3)  # 1/8 scale, both sides still >= 64
    assert original == (1024, 768)
    assert abs(int(image[5, 5, 1]) - 180) <= 3


def test_pixel_limit_refuses_without_decoding(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_MAX_IMAGE_PIXELS", "100")
    write_png(tmp_path / "a.png", np.zeros((11, 10, 3), np.uint8))
    with pytest.raises(ImageError, match="too large"):
        decode(tmp_path / "a.png")


def _jpeg_bytes(size=32) -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", noise)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize(
    ("content", "name", "reason"),
    [
        (None, "truncated.jpg", "truncated JPEG"),
        (b"", "empty.jpg", "empty file"),
        (b"<html><body>404 Not Found</body></html>\n", "page.jpg", "text file"),
        (b"\x00\x01\x02garbage\xff\xfe" * 10, "junk.png", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "broken.png", "corrupt or truncated PNG"),
    ],
)
def test_bad_files_raise_with_reason(tmp_path, content, name, reason):
    if content is None:
        data = _jpeg_bytes()
        content = data[: len(data) * 2 // 3]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageError, match=reason) as err:
        decode(tmp_path / name)
    assert reason in err.value.reason


def test_truncated_by_two_bytes_and_trailing_junk(tmp_path):
    data = _jpeg_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:-2])  # only the EOI marker missing
    with pytest.raises(ImageError, match="truncated JPEG"):
        decode(tmp_path / "cut.jpg")
    (tmp_path / "tail.jpg").write_bytes(data + b"\x00" * 16)  # padding after EOI is fine
    assert decode(tmp_path / "tail.jpg").shape == (32, 32, 3)


def test_missing_directory_and_unreadable(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        decode(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not found"):
        image_info(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="directory"):
        decode(tmp_path)
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not block reads")
    write_png(tmp_path / "locked.png", np.zeros((2, 2, 3), np.uint8))
    os.chmod(tmp_path / "locked.png", 0)
    try:
        with pytest.raises(ImageError, match="permission denied"):
            decode(tmp_path / "locked.png")
    finally:
        os.chmod(tmp_path / "locked.png", 0o644)


def test_resize_shrink_enlarge_and_stretch():
    image = np.zeros((40, 20, 3), np.uint8)
    image[:20] = 255
    small = resize(image, 10)
    assert small.shape == (10, 10, 3) and small.dtype == np.uint8
    assert small[0, 0, 0] == 255 and small[-1, 0, 0] == 0  # stretched, top half stays the top half
    assert resize(np.full((4, 4, 3), 9, np.uint8), 16).shape == (16, 16, 3)
    assert resize(np.zeros((4, 40, 3), np.uint8), 16).shape == (16, 16, 3)
    same = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    np.testing.assert_array_equal(resize(same, 4), same)


def test_shrinks_up_to_2_5x_are_supersampled_within_45_db_of_an_area_average():
    rng = np.random.default_rng(4)
    y, x = np.mgrid[0:512, 0:768].astype(np.float32)
    photo = 128 + 60 * np.sin(x / 9)[..., None] + 50 * np.cos(y / 13)[..., None] * rng.uniform(0.5, 1, 3)
    photo = np.clip(photo + rng.normal(0, 6, photo.shape), 0, 255).astype(np.uint8)
    for source, size in ((photo, 380), (photo[::2, ::2], 224), (photo[:96, :144], 64)):
        ours = resize(source, size)
        np.testing.assert_array_equal(ours, images.shrink_supersampled(source, size))
        area = cv2.resize(source, (size, size), interpolation=cv2.INTER_AREA)
        mse = np.mean((ours.astype(float) - area) ** 2)
        assert ours.shape == (size, size, 3) and 10 * np.log10(255**2 / mse) >= 45.0
    far = resize(photo, 64)  # 12x: INTER_AREA itself
    np.testing.assert_array_equal(far, cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA))


def test_encode_png_is_lossless_and_rgb(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (9, 7, 3), dtype=np.uint8)
    data = encode(rgb, "png")
    (tmp_path / "e.png").write_bytes(data)
    np.testing.assert_array_equal(decode(tmp_path / "e.png"), rgb)
    flat = np.full((8, 8, 3), (250, 10, 10), np.uint8)
    jpeg = encode(flat, "jpeg", quality=90)
    assert jpeg[:3] == b"\xff\xd8\xff"
    (tmp_path / "e.jpg").write_bytes(jpeg)
    assert np.abs(decode(tmp_path / "e.jpg").astype(int) - flat).max() <= 8
    with pytest.raises(ValueError):
        encode(rgb, "webp")


def test_image_info_is_cheap_and_complete(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((5, 7, 4), np.uint8))
    info = image_info(tmp_path / "a.png")
    assert info["format"] == "png" and (info["width"], info["height"]) == (7, 5)
    assert info["channels"] == 4 and info["bit_depth"] == 8
    assert info["bytes"] == (tmp_path / "a.png").stat().st_size
    buf = io.BytesIO()
    PIL.fromarray(np.zeros((3, 9), np.uint8)).save(buf, "JPEG")
    (tmp_path / "g.jpg").write_bytes(buf.getvalue())
    info = image_info(tmp_path / "g.jpg")
    assert (info["format"], info["width"], info["height"], info["channels"]) == ("jpeg", 9, 3, 1)
    (tmp_path / "t.jpg").write_text("hello")
    assert image_info(tmp_path / "t.jpg")["format"] == "unknown"


def test_webp_extended_header_size(tmp_path):
    """VP8X (extended WebP, e.g. with EXIF): the canvas height follows the width in the first 32 bytes."""
    image = PIL.fromarray(np.zeros((37, 53, 3), np.uint8))
    exif = image.getexif()
    exif[0x010F] = "camera"
    image.save(tmp_path / "x.webp", exif=exif.tobytes())
    assert (tmp_path / "x.webp").read_bytes()[12:16] == b"VP8X"
    info = image_info(tmp_path / "x.webp")
    assert (info["format"], info["width"], info["height"]) == ("webp", 53, 37)
    assert decode(tmp_path / "x.webp").shape == (37, 53, 3)


def _segments(jpeg: bytes) -> list[bytes]:
    """A JPEG's header segments (marker + length + payload) up to the start of scan, and the rest."""
    out, i = [], 2
    while jpeg[i + 1] != 0xDA:
        length = int.from_bytes(jpeg[i + 2 : i + 4], "big")
        out.append(jpeg[i : i + 2 + length])
        i += 2 + length
    return [*out, jpeg[i:]]


def test_one_jpeg_walker_gives_size_orientation_and_tables_wherever_they_are():
    data = _jpeg_bytes(48)
    segments = _segments(data)
    tables = [s for s in segments if s[1] == 0xDB]
    frame = [s for s in segments if s[1] == 0xC0]
    others = [s for s in segments[:-1] if s[1] not in (0xDB, 0xC0)]
    assert tables and len(frame) == 1
    # Tables after the frame header are still before the scan, where decoders accept them.
    late = b"\xff\xd8" + b"".join(others + frame + tables) + segments[-1]
    assert cv2.imdecode(np.frombuffer(late, np.uint8), cv2.IMREAD_COLOR).shape == (48, 48, 3)
    expected = jpeg_tables(data)
    assert set(expected) == {0, 1}
    found = jpeg_tables(late)
    assert set(found) == set(expected) and all(np.array_equal(found[k], expected[k]) for k in expected)
    assert jpeg_quality(late) == jpeg_quality(data) == 95  # OpenCV's default quality
    header = image_headers.read_header(io.BytesIO(late), "jpeg")
    assert (header["width"], header["height"], header["channels"], header["orientation"]) == (48, 48, 3, 1)
    assert "quantisation" not in header  # the hot path stops at the frame header


def test_file_facts_for_the_audit(tmp_path):
    stored = np.zeros((8, 16, 3), np.uint8)
    image = PIL.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=70)
    facts = file_facts(tmp_path / "r.jpg")
    assert (facts["format"], facts["width"], facts["height"], facts["channels"]) == ("jpeg", 8, 16, 3)  # as displayed
    assert facts["jpeg_quality"] == 70 and facts["error"] == ""
    assert facts["file_size"] == (tmp_path / "r.jpg").stat().st_size and len(facts["sha1"]) == 40
    assert isinstance(facts["phash"], int)
    assert file_facts(tmp_path / "r.jpg", with_hash=False)["phash"] is None
    write_png(tmp_path / "a.png", np.zeros((5, 7, 4), np.uint8))
    png = file_facts(tmp_path / "a.png")
    assert (png["format"], png["width"], png["height"], png["channels"]) == ("png", 7, 5, 4)
    assert np.isnan(png["jpeg_quality"])
    assert file_facts(tmp_path / "nope.png")["error"] == "unreadable: file not found"
    (tmp_path / "t.jpg").write_text("hello")
    text = file_facts(tmp_path / "t.jpg")
    assert (text["format"], text["error"], text["file_size"]) == ("unknown", "bad header", 5)
