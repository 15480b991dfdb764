"""The records' default image format: raw pixels up to 128 px, JPEG above (quality 90, full-resolution colour), close
to the lossless image; PNG one setting away; records of another format are rebuilt, never mixed with new shards."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from test_records import read_examples

from kit.config import Config, load_config
from kit.data import records
from kit.data.manifest import read_manifest, records_dir
from kit.data.schema import encode_image

CLASSES = ["cat", "dog", "fox"]
SIZE = 160  # above 128 px: auto stores JPEG


def photo_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour gradients, a few hard-edged shapes and mild noise (BGR uint8), as a photo has."""
    y = np.arange(height, dtype=np.float32)[:, None, None]
    x = np.arange(width, dtype=np.float32)[None, :, None]
    phase = rng.uniform(0, 6.3, 3).astype(np.float32)
    image = 128 + 70 * np.sin(x / 23 + phase) + 40 * np.cos(y / 31 - phase)
    image = np.broadcast_to(image, (height, width, 3)).astype(np.float32)  # a writable copy
    for _ in range(4):
        corner = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.rectangle(image, corner, (corner[0] + 40, corner[1] + 30), rng.uniform(0, 255, 3).tolist(), -1)
    image += rng.normal(0, 3, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_index(folder: Path) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    rows = []
    for i in range(6):
        path = folder / f"img{i}.jpg"
        cv2.imwrite(str(path), photo_like(rng, 300 + 20 * i, 420), [cv2.IMWRITE_JPEG_QUALITY, 95])
        rows.append({"id": f"img{i}", "path": str(path), "label": i % 3, "split": "train", "fold": -1})
    return pd.DataFrame(rows)


def build(root: Path, index: pd.DataFrame, *extra: str) -> Config:
    cfg = load_config(["comp=demo", f"data.records_root={root}", f"model.image_size={SIZE}", "data.workers=1", *extra])
    records.build_records(cfg, index, CLASSES)
    return cfg


def stored_pixels(cfg: Config) -> dict[str, np.ndarray]:
    manifest = read_manifest(records_dir(cfg))
    examples = read_examples(manifest.shard_paths("train"))
    return {e["id"]: cv2.imdecode(np.frombuffer(e["image"], np.uint8), cv2.IMREAD_COLOR) for e in examples}


def chroma_sampling(jpeg: bytes) -> list[int]:
    """The sampling-factor byte of each component in the JPEG's frame header (0x11: full resolution)."""
    frame = next(jpeg.find(marker) for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2") if jpeg.find(marker) > 0)
    components = jpeg[frame + 9]
    return [jpeg[frame + 10 + 3 * k + 1] for k in range(components)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


def test_auto_stores_full_colour_jpeg_above_128_px_close_to_the_lossless_records(tmp_path: Path) -> None:
    index = make_index(tmp_path / "src")
    jpeg_cfg = build(tmp_path / "auto", index)
    png_cfg = build(tmp_path / "png", index, "data.image_format=png")
    manifest = read_manifest(records_dir(jpeg_cfg))
    assert (manifest.image_format, manifest.jpeg_quality) == ("jpeg", 90)
    assert read_manifest(records_dir(png_cfg)).jpeg_quality is None  # a PNG build names no JPEG quality
    for example in read_examples(manifest.shard_paths("train")):
        assert example["image"][:3] == b"\xff\xd8\xff"
        assert chroma_sampling(example["image"]) == [0x11, 0x11, 0x11]
    lossy, lossless = stored_pixels(jpeg_cfg), stored_pixels(png_cfg)
    assert lossy.keys() == lossless.keys() and len(lossy) == 6
    quality = psnr(np.stack([lossy[k] for k in sorted(lossy)]), np.stack([lossless[k] for k in sorted(lossy)]))
    assert quality >= 38.0, f"JPEG records {quality:.1f} dB from the lossless ones"


def test_png_records_from_before_are_rebuilt_as_jpeg_not_mixed(tmp_path: Path) -> None:
    index = make_index(tmp_path / "src")
    old = build(tmp_path / "records", index, "data.image_format=png")  # what auto stored above 128 px before
    old_manifest = read_manifest(records_dir(old))
    new = build(tmp_path / "records", index)  # auto, the same folder
    assert records_dir(new) == records_dir(old)
    manifest = read_manifest(records_dir(new))
    assert manifest.image_format == "jpeg" and manifest.fingerprint != old_manifest.fingerprint
    images = [e["image"] for e in read_examples(manifest.shard_paths("train"))]
    assert len(images) == 6 and all(image[:3] == b"\xff\xd8\xff" for image in images)  # no PNG example left


def test_jpeg_quality_changes_the_records(tmp_path: Path) -> None:
    index = make_index(tmp_path / "src")
    first = read_manifest(records_dir(build(tmp_path / "records", index))).fingerprint
    second = read_manifest(records_dir(build(tmp_path / "records", index, "data.jpeg_quality=95"))).fingerprint
    assert first != second


def test_jpeg_encode_keeps_full_colour_resolution() -> None:
    image = cv2.cvtColor(photo_like(np.random.default_rng(1), 64, 64), cv2.COLOR_BGR2RGB)
    assert chroma_sampling(encode_image(image, "jpeg", quality=90)) == [0x11, 0x11, 0x11]
