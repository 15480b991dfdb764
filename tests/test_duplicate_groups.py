"""Duplicate groups: computed by the index build, never chained, never a giant group; the split that keeps them
whole holds its validation fraction and class balance; kit audit only reports; kit records says what it used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from run_fixtures import folder_comp_config

from kit.audit import audit
from kit.data.duplicates import content_hashes, duplicate_groups, near_pairs
from kit.data.images import file_facts
from kit.data.records import build_from_config
from kit.data.sources import duplicate_groups_line, index_dir, load_index
from kit.data.splits import CLASS_TOLERANCE, SHARE_TOLERANCE
from kit.errors import KitError

DISTANCE = 6  # audit.near_distance's default: the pHash distance the face photos chained at


def _smooth(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A photo-like image (low frequencies only): its pHash is stable and its own."""
    return cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def _drifting_chain(rng: np.random.Generator, steps: int) -> list[np.ndarray]:
    """Images that drift from one picture to another a little at each step: neighbours are near duplicates,
    the ends are not alike at all."""
    start, end = _smooth(rng).astype(float), _smooth(rng).astype(float)
    return [np.clip((1 - t) * start + t * end, 0, 255).astype(np.uint8) for t in np.linspace(0, 1, steps)]


def _chain_competition(tmp_path: Path):
    """200 labelled images: class a is a 60-image drifting chain and 40 others, class b 100 others."""
    cfg = folder_comp_config(tmp_path, "chain", test=False)
    raw, rng = Path(cfg.data.root), np.random.default_rng(7)
    chain = [_write(raw / "train" / "a" / f"chain{k:02d}.png", image) for k, image in enumerate(_drifting_chain(rng, 60))]
    for i in range(40):
        _write(raw / "train" / "a" / f"a{i}.png", _smooth(rng))
    for i in range(100):
        _write(raw / "train" / "b" / f"b{i}.png", _smooth(rng))
    hashes = np.array([file_facts(p)["phash"] for p in chain], dtype=np.uint64)
    steps = np.bitwise_count(hashes[1:] ^ hashes[:-1])
    assert steps.max() <= DISTANCE and np.bitwise_count(hashes[0] ^ hashes[-1]) > 4 * DISTANCE  # a chain indeed
    return cfg


def _assert_balanced(labels: np.ndarray, parts: np.ndarray, shares: dict) -> None:
    """Each part's share of the rows and each class's share of each part within the split's stated tolerance."""
    overall = np.bincount(labels) / len(labels)
    for part, share in shares.items():
        inside = labels[parts == part]
        assert abs(len(inside) / len(labels) - share) <= SHARE_TOLERANCE, (part, len(inside))
        assert np.abs(np.bincount(inside, minlength=len(overall)) / len(inside) - overall).max() <= CLASS_TOLERANCE, part


def test_near_links_of_a_drifting_chain_make_no_giant_group():
    """Hashes one bit further apart at each step: every link is within the distance, so linking chains all 41 into
    one component; mutual groups are runs of neighbours, each within the distance of every other member."""
    base = np.uint64(0x0123456789ABCDEF)
    hashes = np.array([base ^ np.uint64((1 << k) - 1) for k in range(41)], dtype=np.uint64)
    assert len(near_pairs(hashes, DISTANCE)) == sum(min(DISTANCE, 40 - i) for i in range(41))  # every link is there

    groups = duplicate_groups([""] * 41, [int(h) for h in hashes], DISTANCE)

    assert groups.tolist() == [7 * (k // 7) for k in range(41)]  # blocks of 7: 0-6, 7-13, ...
    for g in np.unique(groups):
        members = hashes[groups == g]
        assert np.bitwise_count(members[:, None] ^ members[None, :]).max() <= DISTANCE


def test_exact_copies_are_one_member_and_unhashed_rows_stay_alone():
    sha1 = ["x", "", "y", "x", "", "y", "z"]
    phash = [0b1, None, 0b1, 0b1, None, 0b1, 0xFFFF]
    assert duplicate_groups(sha1).tolist() == [0, 1, 2, 0, 3, 2, 4]
    near = duplicate_groups(sha1, phash, DISTANCE)
    assert near[0] == near[2] == near[3] == near[5]  # x and y: same pHash, so mutual near duplicates
    assert len({near[1], near[4], near[6], near[0]}) == 4


@pytest.mark.slow
def test_audit_then_records_keeps_the_val_fraction_and_class_balance(tmp_path):
    """The issue's sequence: `kit audit`, then the index build. The audit changes no split; with near groups
    asked for, the chain is cut into mutual groups and validation keeps 20% and the classes' shares."""
    cfg = _chain_competition(tmp_path)
    cfg.data.group_max_share = 0.1  # 20 images: the mutual groups of the chain are used
    audit(cfg)
    cfg.data.duplicate_groups = "near"

    index, _ = load_index(cfg)

    labels = index["label"].to_numpy()
    _assert_balanced(labels, index["split"].to_numpy(), {"val": 0.2, "train": 0.8})
    summary = json.loads((index_dir(cfg) / "index.json").read_text())["duplicate_groups"]
    assert summary["rule"] == "near" and summary["unused"] == []
    assert summary["groups"] >= 3 and summary["largest"] <= 20  # the 60-image chain is cut, not one group
    facts = [file_facts(p) for p in index["path"]]  # the groups again, over the rows in the split's order
    hashes = np.array([f["phash"] for f in facts], dtype=np.uint64)
    groups = duplicate_groups([f["sha1"] for f in facts], hashes.tolist(), DISTANCE)
    for g in np.unique(groups):
        assert index.loc[groups == g, "split"].nunique() == 1  # a group is never cut by the split
        members = hashes[groups == g]
        assert np.bitwise_count(members[:, None] ^ members[None, :]).max() <= DISTANCE


def test_near_groups_keep_each_fold_balanced(tmp_path):
    cfg = _chain_competition(tmp_path)
    cfg.data.duplicate_groups = "near"
    cfg.data.group_max_share = 0.1
    cfg.data.folds = 5

    index, _ = load_index(cfg)

    _assert_balanced(index["label"].to_numpy(), index["fold"].to_numpy(), dict.fromkeys(range(5), 0.2))


def _copies_competition(tmp_path: Path):
    """12 images with 3 byte-identical copies each (36 rows), 30 others, one near copy of u0 (67 labelled rows)."""
    cfg = folder_comp_config(tmp_path, "copies", test=False)
    raw, rng = Path(cfg.data.root), np.random.default_rng(4)
    groups = []
    for i in range(12):
        cls = "ab"[i % 2]
        first = _write(raw / "train" / cls / f"g{i}_0.png", _smooth(rng))
        for k in (1, 2):
            shutil.copy(first, raw / "train" / cls / f"g{i}_{k}.png")
        groups.append({f"g{i}_{k}.png" for k in range(3)})
    for i in range(30):
        _write(raw / "train" / "ab"[i % 2] / f"u{i}.png", _smooth(rng))
    source = cv2.imread(str(raw / "train" / "a" / "u0.png"))
    _write(raw / "train" / "b" / "near_u0.png", np.clip(source.astype(int) + 8, 0, 255).astype(np.uint8))
    return cfg, groups


@pytest.mark.parametrize("folds", [1, 5])
def test_exact_copies_never_straddle_validation_or_folds_without_an_audit(tmp_path, folds):
    """data.duplicate_groups=exact by default: the index build itself keeps byte-identical files together."""
    cfg, groups = _copies_competition(tmp_path)
    cfg.data.folds = folds  # the default data.group_max_share: 1%, and never under 5 images

    index, _ = load_index(cfg)

    column = "split" if folds == 1 else "fold"
    names = index["path"].map(lambda p: Path(p).name)
    assert all(index.loc[names.isin(g), column].nunique() == 1 for g in groups)
    shares = {"val": 0.2, "train": 0.8} if folds == 1 else dict.fromkeys(range(5), 0.2)
    _assert_balanced(index["label"].to_numpy(), index[column].to_numpy(), shares)


def test_only_files_sharing_a_size_are_hashed_as_the_audit_hashes_them(tmp_path):
    rng = np.random.default_rng(5)
    one = _write(tmp_path / "one.png", _smooth(rng))
    copy = tmp_path / "copy.png"
    shutil.copy(one, copy)
    other = _write(tmp_path / "other.png", _smooth(rng, 40))
    (tmp_path / "empty.png").touch()
    (tmp_path / "empty2.png").touch()
    paths = [str(p) for p in (one, copy, other, tmp_path / "empty.png", tmp_path / "empty2.png", tmp_path / "gone.png")]

    hashes = content_hashes(paths, workers=2)

    assert hashes[0] == hashes[1] == file_facts(one)["sha1"] != ""
    assert hashes[2:] == ["", "", "", ""]  # a size of its own, empty files, a missing file: nobody's copy


def test_a_group_over_the_share_is_reported_not_used(tmp_path, capsys):
    """14 copies of one image among 100 labelled rows (over 5%): split image by image, and kit records says so."""
    cfg = folder_comp_config(tmp_path, "big", test=False)
    cfg.data.group_max_share = 0.05
    cfg.data.workers = 1
    cfg.model.image_size = 8
    raw, rng = Path(cfg.data.root), np.random.default_rng(6)
    first = _write(raw / "train" / "a" / "same0.png", _smooth(rng))
    for k in range(1, 14):
        shutil.copy(first, raw / "train" / "a" / f"same{k}.png")
    for i in range(3):
        pair = _write(raw / "train" / "b" / f"pair{i}_0.png", _smooth(rng))
        shutil.copy(pair, raw / "train" / "b" / f"pair{i}_1.png")
    for i in range(36):
        _write(raw / "train" / "a" / f"a{i}.png", _smooth(rng))
    for i in range(44):
        _write(raw / "train" / "b" / f"b{i}.png", _smooth(rng))

    build_from_config(cfg)

    line = capsys.readouterr().err.splitlines()[0]
    assert line.startswith("duplicate groups kept whole by the split (byte-identical files; data.duplicate_groups=exact)")
    assert "3 groups, 6 images" in line and "1 groups over data.group_max_share (5 images) not used" in line
    assert line.endswith(": 14 images")
    index, _ = load_index(cfg)
    names = index["path"].map(lambda p: Path(p).name)
    assert index.loc[names.str.startswith("same"), "split"].nunique() == 2  # its 14 rows split one by one
    assert duplicate_groups_line(cfg) == line


def test_groups_that_cannot_be_balanced_raise_one_line(tmp_path):
    """Four groups of 10 copies, no single image: validation would get 0% or 25%, not 20% +- 2 points."""
    cfg = folder_comp_config(tmp_path, "lumpy", test=False)
    cfg.data.group_max_share = 0.3
    raw, rng = Path(cfg.data.root), np.random.default_rng(8)
    for i in range(4):
        first = _write(raw / "train" / "ab"[i % 2] / f"g{i}_0.png", _smooth(rng))
        for k in range(1, 10):
            shutil.copy(first, first.with_name(f"g{i}_{k}.png"))

    with pytest.raises(KitError) as info:
        load_index(cfg)

    assert "keeping duplicate groups whole" in info.value.message and "not 20.0%" in info.value.message
    assert "the largest groups: 10, 10, 10, 10 images" in info.value.message
    assert "data.group_max_share" in info.value.hint and "data.duplicate_groups=none" in info.value.hint
    cfg.data.duplicate_groups = "none"
    index, _ = load_index(cfg)
    assert (index["split"] == "val").sum() == 8
    assert duplicate_groups_line(cfg) == "duplicate groups: none used (data.duplicate_groups=none: rows are split one by one)"


def _tree(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_audit_writes_nothing_that_changes_a_split(tmp_path):
    cfg, groups = _copies_competition(tmp_path)
    before, _ = load_index(cfg)
    records = _tree(Path(cfg.data.records_root))

    summary = audit(cfg)

    assert _tree(Path(cfg.data.records_root)) == records  # no groups file, the cached index untouched
    after, _ = load_index(cfg)
    assert after.equals(before)
    reported = summary["duplicate_groups"]
    assert reported["setting"] == "exact"
    assert reported["exact"]["groups"] == 12 and reported["exact"]["images"] == 36
    assert reported["near"]["groups"] == 13 and reported["near"]["images"] == 38  # + u0 and its brighter copy
    report = (Path(cfg.run.root) / "copies" / "audit" / "audit.md").read_text()
    assert "the index build uses data.duplicate_groups=exact" in report and "13 groups, 38 images" in report


def test_rows_without_a_hash_are_each_their_own_group() -> None:
    """An unhashed row ('' : a size of its own, or unreadable) is nobody's copy, on every supported pandas."""
    from kit.data.duplicates import duplicate_groups

    groups = duplicate_groups(["", "a" * 40, "", "a" * 40, ""])
    assert groups[1] == groups[3] and len({groups[0], groups[2], groups[4], groups[1]}) == 4
