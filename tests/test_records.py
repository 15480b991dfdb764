"""kit.data.records: what goes in comes out; bad images are listed; kills, reruns and full disks are safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import REAP_TIMEOUT_S, wait_until
from disk import small_tmpfs

from kit.config import load_config
from kit.data import records, shards
from kit.data.images import decode, resize
from kit.data.manifest import FoldCount, Manifest, read_manifest, records_dir
from kit.data.schema import MANIFEST
from kit.errors import KitError

CLASSES = ["cat", "dog", "fox"]
ROOT = Path(__file__).resolve().parent.parent


def make_config(records_root: Path, *extra: str):
    # PNG: these tests read the stored images back with cv2.imdecode (raw records: tests/test_tfrecord.py).
    settings = ["comp=demo", f"data.records_root={records_root}", "model.image_size=16", "data.workers=1"]
    return load_config([*settings, "data.image_format=png", *extra])


def noise(rng, height, width) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def make_index(folder: Path, n_train=18, n_val=6, n_test=6, side=(8, 33), bad=True, seed=0) -> pd.DataFrame:
    """Tiny images of random sizes (PNG and JPEG), three classes, plus one bad file of each kind."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for i in range(n):
            ext = ".png" if i % 3 else ".jpg"
            path = folder / f"{split}{i:03d}{ext}"
            cv2.imwrite(str(path), noise(rng, int(rng.integers(*side)), int(rng.integers(*side))))
            label = -1 if split == "test" else i % len(CLASSES)
            rows.append(
                {
                    "id": f"{split}{i:03d}",
                    "path": str(path),
                    "label": label,
                    "split": split,
                    "fold": i % 2 if split == "train" else -1,
                }
            )
    if bad:
        jpeg = cv2.imencode(".jpg", noise(rng, 20, 20))[1].tobytes()
        (folder / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
        (folder / "empty.png").write_bytes(b"")
        (folder / "page.jpg").write_text("<html>rate limited</html>\n")
        rows += [
            {"id": "bad-cut", "path": str(folder / "cut.jpg"), "label": 0, "split": "train", "fold": 0},
            {"id": "bad-missing", "path": str(folder / "missing.png"), "label": 1, "split": "train", "fold": 1},
            {"id": "bad-text", "path": str(folder / "page.jpg"), "label": 2, "split": "val", "fold": -1},
            {"id": "bad-empty", "path": str(folder / "empty.png"), "label": -1, "split": "test", "fold": -1},
        ]
    return pd.DataFrame(rows)


def read_examples(paths: list[str]) -> list[dict]:
    import tensorflow as tf

    out = []
    for path in paths:
        for raw in tf.data.TFRecordDataset(path):
            feature = tf.train.Example.FromString(raw.numpy()).features.feature
            out.append(
                {
                    "id": feature["id"].bytes_list.value[0].decode(),
                    "image": feature["image"].bytes_list.value[0],
                    "label": feature["label"].int64_list.value[0],
                    "soft_label": np.array(feature["soft_label"].float_list.value, np.float32),
                    "height": feature["height"].int64_list.value[0],
                    "width": feature["width"].int64_list.value[0],
                    "fold": feature["fold"].int64_list.value[0],
                    "shard": os.path.basename(path),
                }
            )
    return out


def canonical(path: Path) -> list[bytes]:
    """A shard's records in order, re-serialized deterministically (proto map order varies per process)."""
    import tensorflow as tf

    return [
        tf.train.Example.FromString(raw.numpy()).SerializeToString(deterministic=True)
        for raw in tf.data.TFRecordDataset(str(path))
    ]


def all_examples(manifest: Manifest) -> dict[str, dict]:
    return {e["id"]: e for split in ("train", "val", "test") for e in read_examples(manifest.shard_paths(split))}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.slow
def test_round_trip_counts_skips_and_shards_with_a_process_pool(tmp_path, capsys):
    index = make_index(tmp_path / "src")
    cfg = make_config(tmp_path / "records", "data.workers=2", "data.shard_mb=0.0025")  # 2 examples (~1 kB) per shard
    manifest = records.build_records(cfg, index, CLASSES)
    folder = records_dir(cfg)
    assert folder == tmp_path / "records" / "demo" / "16" / "holdout0.2-seed42"
    assert read_manifest(folder) == manifest and manifest.records_dir == folder
    assert leftovers(folder) == []  # no temp files, no progress folder

    good = index[~index["id"].str.startswith("bad-")]
    for split in ("train", "val", "test"):
        part = good[good["split"] == split]
        counts = manifest.counts[split]
        assert counts.total == len(part)
        if split == "test":
            assert counts.unlabelled == len(part) and sum(counts.per_class.values()) == 0
        else:
            assert counts.per_class == {c: int((part["label"] == i).sum()) for i, c in enumerate(CLASSES)}
        folds = part["fold"].value_counts()
        assert counts.per_fold == {int(k): FoldCount(int(n), int(n)) for k, n in folds.items()}  # no offline copies
        bad_rows = {"train": 2, "val": 1, "test": 1}[split]  # bad rows take slots in the plan
        assert len(manifest.shards[split]) == -(-(len(part) + bad_rows) // 2)
    assert manifest.shards["train"][0] == "train-00000.tfrecord"
    train = good[good["split"] == "train"]
    assert manifest.folds == 2 and manifest.count("train", 0) == int((train["fold"] != 0).sum())
    assert manifest.count("val", 1) == int((train["fold"] == 1).sum())
    reasons = {s["id"]: s["reason"] for s in manifest.skipped}
    assert set(reasons) == {"bad-cut", "bad-missing", "bad-text", "bad-empty"}
    assert "truncated JPEG" in reasons["bad-cut"] and "not found" in reasons["bad-missing"]
    assert "text" in reasons["bad-text"] and "empty" in reasons["bad-empty"]
    assert (manifest.num_classes, manifest.classes, manifest.image_size) == (3, tuple(CLASSES), 16)
    assert manifest.image_format == "png" and manifest.augment == {"mode": "none"}
    err = capsys.readouterr().err
    assert err.count("warning: skipping") == 4 and "bad-cut" in err

    examples = all_examples(manifest)
    assert set(examples) == set(good["id"])
    for row in good.itertuples():
        example = examples[row.id]
        source = decode(row.path)
        assert (example["height"], example["width"]) == source.shape[:2]
        assert (example["label"], example["fold"]) == (row.label, row.fold)
        expected_soft = np.eye(3, dtype=np.float32)[row.label] if row.label >= 0 else np.zeros(3, np.float32)
        np.testing.assert_array_equal(example["soft_label"], expected_soft)
        pixels = cv2.cvtColor(cv2.imdecode(np.frombuffer(example["image"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(pixels, resize(source, 16))  # PNG: exact
        assert example["shard"].startswith(row.split + "-")


@pytest.mark.slow
def test_rerun_is_a_no_op_and_a_change_rebuilds(tmp_path, capsys):
    index = make_index(tmp_path / "src", n_train=8, n_val=2, n_test=2, bad=False)
    cfg = make_config(tmp_path / "records", "data.shard_mb=0.0025")
    first = records.build_records(cfg, index, CLASSES)
    folder = records_dir(cfg)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    capsys.readouterr()
    assert records.build_records(cfg, index, CLASSES) == first
    assert "up to date" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps

    bigger = make_config(tmp_path / "records", "data.shard_mb=1")  # one shard per split now
    second = records.build_records(bigger, index, CLASSES)
    assert second.fingerprint != first.fingerprint
    assert sorted(p.name for p in folder.glob("*.tfrecord")) == [
        "test-00000.tfrecord",
        "train-00000.tfrecord",
        "val-00000.tfrecord",
    ]

    path = Path(index.loc[0, "path"])  # a source file changes: rebuild
    cv2.imwrite(str(path), np.zeros((9, 9, 3), np.uint8))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = records.build_records(bigger, index, CLASSES)
    assert third.fingerprint != second.fingerprint
    assert all_examples(third)[index.loc[0, "id"]]["height"] == 9


def _build_script(records_root: Path, index_csv: Path, extra: list[str]) -> str:
    overrides = ["comp=demo", f"data.records_root={records_root}", "model.image_size=16", "data.workers=1", *extra]
    return (
        "import pandas as pd\n"
        "from kit.config import load_config\n"
        "from kit.data.records import build_records\n"
        f"cfg = load_config({overrides!r})\n"
        f"index = pd.read_csv({str(index_csv)!r}, dtype={{'id': str}})\n"
        f"build_records(cfg, index, {CLASSES!r})\n"
    )


def _build_then_hold_script(records_root: Path, index_csv: Path, extra: list[str]) -> str:
    """The build of ``_build_script`` that stops after its first shard until it is killed: no race with a fast child."""
    hold = (
        "import time\n"
        "from kit.data import shards\n"
        "write_shard = shards._write_shard\n"
        "def write_then_hold(task):\n"
        "    write_shard(task)\n"
        "    while True:\n"
        "        time.sleep(1)\n"
        "shards._write_shard = write_then_hold  # one worker: shards are written in-process, through this name\n"
    )
    return hold + _build_script(records_root, index_csv, extra)


@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_build(tmp_path):
    index = make_index(tmp_path / "src", n_train=40, n_val=4, n_test=4, side=(200, 260))  # bigger images: slower
    index_csv = tmp_path / "index.csv"
    index.to_csv(index_csv, index=False)
    extra = ["data.shard_mb=0.0001"]  # one example per shard: many small atomic steps
    killed_root = tmp_path / "killed"
    folder = records_dir(make_config(killed_root, *extra))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _build_then_hold_script(killed_root, index_csv, extra)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: folder.is_dir() and any(folder.glob("*.tfrecord")), "shard written by the build", proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()  # a no-op after the SIGKILL; a failed wait must not leave the child running
        proc.wait(timeout=REAP_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL
    assert not (folder / MANIFEST).exists(), "the build finished before the kill; make it slower"
    written = len(list(folder.glob("*.tfrecord")))
    assert 0 < written < len(index)
    (folder / ".train-00003.tfrecord.999.partial").write_bytes(b"half a shard")  # as a kill mid-shard leaves it

    resumed = records.build_records(make_config(killed_root, *extra), index, CLASSES)
    clean_cfg = make_config(tmp_path / "clean", *extra)
    clean = records.build_records(clean_cfg, index, CLASSES)
    assert resumed.to_json() == clean.to_json()  # the same manifest.json, in another folder
    assert leftovers(folder) == []
    clean_folder = records_dir(clean_cfg)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in clean_folder.iterdir())
    for shard in folder.glob("*.tfrecord"):
        assert canonical(shard) == canonical(clean_folder / shard.name), shard.name


@pytest.fixture
def small_disk(tmp_path):
    """A 160 kB tmpfs (needs root and mount rights; skipped elsewhere)."""
    with small_tmpfs(tmp_path, "160k") as mount:
        yield mount


@pytest.mark.slow
def test_disk_full_keeps_finished_shards_and_resumes(tmp_path, small_disk):
    index = make_index(tmp_path / "src", n_train=60, n_val=0, n_test=0, side=(32, 33), bad=False)
    extra = ["model.image_size=32", "data.shard_mb=0.007"]  # 2 examples (~3.3 kB each) per shard
    cfg = make_config(small_disk, *extra)
    with pytest.raises(KitError, match="disk full while writing") as err:
        records.build_records(cfg, index, CLASSES)
    assert "data.records_root" in err.value.hint
    folder = records_dir(cfg)
    assert not list(folder.glob(".*.partial")) and not (folder / MANIFEST).exists()
    done = {p.name.removesuffix(".json") for p in (folder / shards.PROGRESS_DIR).glob("*.tfrecord.json")}
    assert done and done <= {p.name for p in folder.glob("*.tfrecord")}

    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    resumed = records.build_records(cfg, index, CLASSES)
    assert resumed.counts["train"].total == 60
    clean = records.build_records(make_config(tmp_path / "clean", *extra), index, CLASSES)
    assert resumed.to_json() == clean.to_json()  # the same manifest.json, in another folder


def test_offline_augmentation_appends_copies_to_train_shards(tmp_path):
    augment = pytest.importorskip("kit.data.augment")
    if not hasattr(augment, "offline_augment"):
        pytest.skip("kit.data.augment.offline_augment is not written yet")
    index = make_index(tmp_path / "src", n_train=8, n_val=2, n_test=2, bad=False)
    cfg = make_config(tmp_path / "records", "augment.mode=offline", "augment.offline_copies=2", "augment.cutmix=1.0")
    manifest = records.build_records(cfg, index, CLASSES)
    train = manifest.counts["train"]
    assert (train.originals, train.augmented, train.total) == (8, 16, 24)
    assert sum(train.per_class.values()) == 24
    assert train.per_fold == {0: FoldCount(12, 4), 1: FoldCount(12, 4)}  # copies keep their original's fold
    assert manifest.count("train", 0) == 12 and manifest.count("val", 0) == 4  # validation skips the copies
    assert manifest.counts["val"].total == 2 and manifest.augment["mode"] == "offline"
    examples = read_examples(manifest.shard_paths("train"))
    ids = [e["id"] for e in examples]
    assert ids[:8] == [i for i in ids if "#" not in i]  # originals first, then the copies
    copies = [e for e in examples if "#aug" in e["id"]]
    assert {e["id"].split("#")[1] for e in copies} == {"aug1", "aug2"}
    for e in copies:
        assert e["soft_label"].sum() == pytest.approx(1.0, abs=1e-5)
        assert e["label"] == int(np.argmax(e["soft_label"]))
        assert cv2.imdecode(np.frombuffer(e["image"], np.uint8), cv2.IMREAD_COLOR).shape == (16, 16, 3)
    # deterministic: a rebuild elsewhere gives the same examples
    again = make_config(tmp_path / "again", "augment.mode=offline", "augment.offline_copies=2", "augment.cutmix=1.0")
    records.build_records(again, index, CLASSES)
    for shard in records_dir(cfg).glob("train-*.tfrecord"):
        assert canonical(shard) == canonical(records_dir(again) / shard.name)


def test_jpeg_format_and_large_source(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    cv2.imwrite(str(folder / "big.jpg"), np.full((600, 900, 3), 90, np.uint8))
    index = pd.DataFrame([{"id": "big", "path": str(folder / "big.jpg"), "label": 1, "split": "train", "fold": -1}])
    cfg = make_config(tmp_path / "records", "data.image_format=jpeg", "data.jpeg_quality=90")
    manifest = records.build_records(cfg, index, CLASSES)
    (example,) = read_examples(manifest.shard_paths("train"))
    assert example["image"][:3] == b"\xff\xd8\xff"
    assert (example["height"], example["width"]) == (600, 900)  # the original size, though decoded at 1/8
    assert manifest.image_format == "jpeg"


@pytest.mark.slow
def test_errors_name_the_fix(tmp_path):
    with pytest.raises(KitError, match="no records") as err:
        read_manifest(records_dir(make_config(tmp_path / "records", "data.folds=5")))
    assert "kit records comp=demo model=<model> data.folds=5 data.seed=42 (image size 16)" in err.value.hint
    cfg = make_config(tmp_path / "records")
    index = pd.DataFrame([{"id": "a", "path": "a.png", "label": 5, "split": "train", "fold": -1}])
    with pytest.raises(KitError, match="outside"):
        records.build_records(cfg, index, CLASSES)
    with pytest.raises(KitError, match="lacks column"):
        records.build_records(cfg, index.drop(columns=["split"]), CLASSES)
    with pytest.raises(KitError, match="unknown split"):
        Manifest.from_json({"classes": CLASSES, "image_size": 16}, tmp_path).shard_paths("holdout")


@pytest.mark.slow
def test_shard_rows_index_one_row_without_building_the_others(monkeypatch):
    index = pd.DataFrame({"id": ["a", "b", "c"], "path": ["pa", "pb", "pc"], "label": [0, 1, 2], "split": "val", "fold": -1})
    (task,) = shards.plan_shards(make_config(Path("unused")), index)
    expected = [("a", "pa", 0, -1), ("b", "pb", 1, -1), ("c", "pc", 2, -1)]
    assert list(task.rows) == expected and task.rows[1:] == expected[1:]
    monkeypatch.setattr(shards.ShardRows, "rows", lambda self: pytest.fail("built every row for one index"))
    assert [task.rows[i] for i in (0, 1, -1)] == [expected[0], expected[1], expected[2]]
