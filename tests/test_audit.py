"""kit.audit: planted shortcut and duplicates are flagged, a clean set stays quiet; JPEG quality and pHash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from run_fixtures import folder_comp_config

from kit.audit import audit
from kit.data.duplicates import near_pairs
from kit.data.image_headers import jpeg_quality
from kit.data.images import phash

PNG = b"\x89PNG\r\n\x1a\n"


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _smooth(rng: np.random.Generator, size: int) -> np.ndarray:
    """A photo-like image (low frequencies only), whose perceptual hash survives re-encoding."""
    return cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)


def _write(path: Path, image: np.ndarray, quality: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if quality else []
    assert cv2.imwrite(str(path), image, params)
    return path


def test_jpeg_quality_and_phash():
    rng = np.random.default_rng(0)
    image = _smooth(rng, 64)
    for quality in (35, 75, 95):
        data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
        assert jpeg_quality(data) == quality
    assert jpeg_quality(cv2.imencode(".png", image)[1].tobytes()) is None
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    brighter = np.clip(gray.astype(int) + 12, 0, 255).astype(np.uint8)
    reencoded = cv2.imdecode(cv2.imencode(".jpg", brighter, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], cv2.IMREAD_GRAYSCALE)
    other = cv2.cvtColor(_smooth(rng, 64), cv2.COLOR_BGR2GRAY)
    hashes = np.array([phash(gray), phash(reencoded), phash(other)], dtype=np.uint64)
    assert [(i, j) for i, j, _ in near_pairs(hashes, 6)] == [(0, 1)]


@pytest.mark.slow
def test_audit_flags_planted_shortcut_and_duplicates(tmp_path):
    cfg = folder_comp_config(tmp_path, "planted")
    raw, rng = Path(cfg.data.root), np.random.default_rng(1)
    for i in range(14):  # the shortcut: class a is always 64x64, class b always 80x80
        _write(raw / "train" / "a" / f"a{i}.png", _smooth(rng, 64))
        _write(raw / "train" / "b" / f"b{i}.png", _smooth(rng, 80))
    test = raw / "test"
    for i in range(4):
        _write(test / f"t{i}.png", _smooth(rng, 72))
    shutil.copy(raw / "train" / "a" / "a3.png", test / "copy.png")  # exact duplicate across train/test
    source = cv2.imread(str(raw / "train" / "b" / "b5.png"))
    _write(test / "near.jpg", np.clip(source.astype(int) + 10, 0, 255).astype(np.uint8), quality=80)  # brighter, re-encoded

    result = audit(cfg)

    out = Path(cfg.run.root) / "planted" / "audit"
    assert result["shortcut"]["metric"] == "auc" and result["shortcut"]["value"] > 0.9
    assert result["shortcut"]["top_features"][0]["feature"] in ("width", "height", "aspect", "file_size")
    assert any("SHORTCUT" in w and "leaderboard" in w for w in result["warnings"])
    exact = result["exact_duplicates"]
    assert exact["groups"] == 1 and exact["test_groups_with_labelled_copy"] == 1
    assert sum(v for k, v in exact["pairs"].items() if k.endswith("-test")) == 1
    near = result["near_duplicates"]
    assert sum(v for k, v in near["pairs"].items() if k.endswith("-test")) == 1
    assert any("near.jpg" in e["a"] + e["b"] and "b5.png" in e["a"] + e["b"] for e in near["examples"])
    assert result["by_split"]["test"]["formats"] == {"png": 5, "jpeg": 1}
    assert result["by_split"]["test"]["jpeg_quality"]["median"] == 80
    report = (out / "audit.md").read_text()
    assert "SHORTCUT" in report and "![" in report
    assert json.loads((out / "audit.json").read_text())["images"] == 34
    pngs = list(out.glob("*.png"))
    assert len(pngs) >= 5 and all(p.read_bytes()[:8] == PNG for p in pngs)


@pytest.mark.slow
def test_audit_is_quiet_on_a_clean_set(tmp_path):
    cfg = folder_comp_config(tmp_path, "planted")
    raw, rng = Path(cfg.data.root), np.random.default_rng(2)
    for i in range(16):
        _write(raw / "train" / "a" / f"a{i}.png", _noise(rng, 32))
        _write(raw / "train" / "b" / f"b{i}.png", _noise(rng, 32))
    for i in range(8):
        _write(raw / "test" / f"t{i}.png", _noise(rng, 32))

    result = audit(cfg)

    assert result["warnings"] == []
    assert result["class_balance"] == {"a": 16, "b": 16}
    assert result["exact_duplicates"]["groups"] == 0 and result["near_duplicates"]["pairs"] == {}
    assert result["shortcut"] is None  # every file is a 32x32 PNG of one size: no metadata varies, nothing to score
    assert "- none" in (Path(cfg.run.root) / "planted" / "audit" / "audit.md").read_text()


@pytest.mark.parametrize("bits", [0, 5, 7])
def test_near_pairs_distance(bits):
    base = np.uint64(0x0123456789ABCDEF)
    flipped = base ^ np.uint64((1 << bits) - 1)
    assert bool(near_pairs(np.array([base, flipped], dtype=np.uint64), 6)) == (bits <= 6)
