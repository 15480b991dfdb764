"""kit.audit: warnings named by the feature that drives them, near duplicates over every image, adversarial
validation on pixels, SHORTCUT/SHIFT until acknowledged. (Duplicate groups: tests/test_duplicate_groups.py.)"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from run_fixtures import folder_comp_config

from kit.audit import acknowledge, audit, reminders
from kit.data.duplicates import near_pairs
from kit.errors import KitError

PNG = b"\x89PNG\r\n\x1a\n"


def _smooth(rng: np.random.Generator, size: int = 32, offset: int = 0) -> np.ndarray:
    image = cv2.resize(rng.integers(0, 196, (4, 4, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(image.astype(int) + offset, 0, 255).astype(np.uint8)


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.mark.slow
def test_same_sized_pngs_name_file_size_not_image_size(tmp_path):
    """Every image 32x32: class a smooth (small PNGs), class b noise (big PNGs). The old warning said
    "images' sizes alone predict the label"; the signal is the file size, i.e. the content."""
    cfg = folder_comp_config(tmp_path, "shift", test=False)
    raw, rng = Path(cfg.data.root), np.random.default_rng(0)
    for i in range(20):
        _write(raw / "train" / "a" / f"a{i}.png", _smooth(rng))
        _write(raw / "train" / "b" / f"b{i}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))

    result = audit(cfg)

    shortcut = result["shortcut"]
    assert shortcut["value"] > 0.95
    assert shortcut["features"] == ["file_size"]  # width, height, aspect, channels, format are constant: left out
    [warning] = [w for w in result["warnings"] if w.startswith("SHORTCUT")]
    assert "file size (every image 32x32) predicts the label" in warning
    assert "compressibility" in warning and "sizes alone" not in warning and "image size" not in warning.split(":")[1]


@pytest.mark.slow
def test_near_pairs_finds_every_pair_of_a_large_set():
    """faiss over 30 000 hashes (past the old 20 000 sample) finds exactly the planted pairs a brute force finds."""
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, 30_000, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 30_000).astype(np.uint64)
    planted = {(100, 29_990, 3), (5, 25_000, 0), (20_001, 20_002, 6)}
    for i, j, bits in planted:
        hashes[j] = hashes[i] ^ np.uint64((1 << bits) - 1)
    found = set(near_pairs(hashes, 6))
    assert planted <= found
    for i, j, d in found:  # anything else found is a true pair within the distance
        assert d == int(np.bitwise_count(hashes[i] ^ hashes[j])) <= 6
    assert near_pairs(hashes[[100, 29_990]], 2) == []  # 3 bits apart: outside distance 2


@pytest.mark.slow
def test_every_image_is_hashed_past_hash_sample(tmp_path):
    cfg = folder_comp_config(tmp_path, "shift", test=False)
    cfg.audit.hash_sample = 3  # the old audit hashed only 3 of the 41 images and missed the pair almost surely
    raw, rng = Path(cfg.data.root), np.random.default_rng(2)
    for i in range(20):
        _write(raw / "train" / "a" / f"a{i}.png", _smooth(rng))
        _write(raw / "train" / "b" / f"b{i}.png", _smooth(rng))
    source = cv2.imread(str(raw / "train" / "b" / "b7.png"))
    _write(raw / "train" / "a" / "near.png", np.clip(source.astype(int) + 8, 0, 255).astype(np.uint8))

    near = audit(cfg)["near_duplicates"]

    assert near["hashed"] == near["images"] == 41
    assert any({Path(e["a"]).name, Path(e["b"]).name} == {"near.png", "b7.png"} for e in near["examples"])


@pytest.mark.slow
@pytest.mark.parametrize(("offset", "shifted"), [(60, True), (0, False)])
def test_adversarial_validation_on_pixels(tmp_path, offset, shifted):
    """Test images 60 grey levels brighter (same size, format, about the same file size) are told apart on
    pixels; test images drawn like the training ones are not."""
    cfg = folder_comp_config(tmp_path, "shift")
    raw, rng = Path(cfg.data.root), np.random.default_rng(3)
    for i in range(30):
        _write(raw / "train" / "a" / f"a{i}.png", _smooth(rng))
        _write(raw / "train" / "b" / f"b{i}.png", _smooth(rng))
        _write(raw / "test" / f"t{i}.png", _smooth(rng, offset=offset))

    result = audit(cfg)

    adversarial = result["adversarial_validation"]
    assert adversarial["examples"] == 90 and adversarial["test"] == 30
    pixel_warnings = [w for w in result["warnings"] if w.startswith("SHIFT") and "pixels" in w]
    if shifted:
        assert adversarial["value"] > 0.85 and len(pixel_warnings) == 1 and "leaderboard" in pixel_warnings[0]
    else:
        assert adversarial["value"] < 0.75 and pixel_warnings == []
    plot = Path(cfg.run.root) / "shift" / "audit" / "adversarial_validation.png"
    assert plot.read_bytes()[:8] == PNG
    assert "## Adversarial validation" in (plot.parent / "audit.md").read_text()


@pytest.mark.slow
def test_shortcut_is_repeated_until_acknowledged(tmp_path):
    cfg = folder_comp_config(tmp_path, "shift", test=False)
    with pytest.raises(KitError, match="no audit report"):
        acknowledge(cfg)
    assert reminders(cfg) == []  # no audit yet: nothing to repeat
    raw, rng = Path(cfg.data.root), np.random.default_rng(5)
    for i in range(14):
        _write(raw / "train" / "a" / f"a{i}.png", _smooth(rng, 64))
        _write(raw / "train" / "b" / f"b{i}.png", _smooth(rng, 80))

    audit(cfg)
    lines = reminders(cfg)
    assert len(lines) == 1 and lines[0].startswith("WARNING: SHORTCUT: image") and "kit audit --ack" in lines[0]
    assert acknowledge(cfg) == [lines[0].removeprefix("WARNING: ").split(" (from ")[0]]
    assert reminders(cfg) == []
    assert (Path(cfg.run.root) / "shift" / "audit" / "ack.json").is_file()

    for i in range(14, 20):  # new data, a new warning: the old acknowledgement no longer covers it
        _write(raw / "train" / "b" / f"b{i}.png", _smooth(rng, 96))
    audit(cfg)
    assert len(reminders(cfg)) == 1
