"""tf.data pipeline over hand-written TFRecords: target shapes, record order, ids, folds, epoch coverage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kit.config import Config
from kit.data import schema
from kit.data.manifest import Manifest, read_manifest, records_dir
from kit.data.pipeline import count_examples, make_dataset, steps_per_epoch
from kit.errors import KitError

SIZE = 8


def make_config(tmp_path: Path, classes: list[str], **augment: object) -> Config:
    cfg = Config()
    cfg.comp.name = "tiny"
    cfg.comp.classes = classes
    cfg.model.image_size = SIZE
    cfg.data.records_root = str(tmp_path / "records")
    for key, value in augment.items():
        setattr(cfg.augment, key, value)
    return cfg


def write_records(cfg: Config, splits: dict[str, list[schema.Example]], shards: int = 2) -> Manifest:
    """Shards ``<split>-NNNNN.tfrecord`` (examples dealt out in order) and a manifest.json, as records.py writes."""
    folder = Path(records_dir(cfg))
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "version": 1,
        "comp": cfg.comp.name,
        "image_size": SIZE,
        "classes": cfg.comp.classes,
        "num_classes": len(cfg.comp.classes),
        "image_format": "png",
        "counts": {},
        "shards": {},
        "skipped": [],
    }
    for split, examples in splits.items():
        chunks = np.array_split(np.arange(len(examples)), shards)
        names = []
        for number, chunk in enumerate(chunks):
            name = f"{split}-{number:05d}{schema.SHARD_SUFFIX}"
            with tf.io.TFRecordWriter(str(folder / name)) as writer:
                for index in chunk:
                    writer.write(schema.serialize(examples[index]))
            names.append(name)
        manifest["shards"][split] = names
        per_fold: dict[str, dict[str, int]] = {}
        for e in examples:
            count = per_fold.setdefault(str(e.fold), {"total": 0, "originals": 0})
            count["total"] += 1
            count["originals"] += "#aug" not in e.id
        manifest["counts"][split] = {"total": len(examples), "per_class": {}, "per_fold": per_fold}
    (folder / schema.MANIFEST).write_text(json.dumps(manifest))
    return read_manifest(folder)


def example(index: int, num_classes: int, split: str, fold: int = -1, suffix: str = "") -> schema.Example:
    """Image with constant value ``index`` (so pixels identify the example), one-hot label index % C."""
    image = np.full((SIZE, SIZE, 3), index % 256, np.uint8)
    label = index % num_classes
    return schema.Example(
        image=tf.io.encode_png(image).numpy(),
        label=label if split != "test" else -1,
        soft_label=np.eye(num_classes, dtype=np.float32)[label] if split != "test" else np.zeros(num_classes, np.float32),
        id=f"{split}{index}{suffix}",
        height=SIZE,
        width=SIZE,
        fold=fold,
    )


def ids_of(dataset: tf.data.Dataset) -> list[str]:
    return [i.decode() for _, _, ids in dataset.as_numpy_iterator() for i in ids]


@pytest.mark.slow
def test_binary_targets_are_b1_float_and_eval_order_is_records_order(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, ["human", "ai"])
    splits = {s: [example(i, 2, s) for i in range(n)] for s, n in (("train", 10), ("val", 7), ("test", 5))}
    manifest = write_records(cfg, splits, shards=3)
    for split in ("val", "test"):
        dataset = make_dataset(cfg, split, training=False, batch_size=3, manifest=manifest, with_ids=True)
        first, second = ids_of(dataset), ids_of(dataset)
        assert first == second == [e.id for e in splits[split]]  # deterministic, records order
    val = make_dataset(cfg, "val", training=False, batch_size=4, manifest=manifest, with_ids=True)
    images, targets, ids = next(val.as_numpy_iterator())
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == np.float32
    assert targets.shape == (4, 1) and targets.dtype == np.float32
    np.testing.assert_array_equal(targets[:, 0], [i % 2 for i in range(4)])  # probability of class 1
    np.testing.assert_array_equal(images[:, 0, 0, 0], np.arange(4))  # raw 0..255 pixels, no normalisation
    assert len(next(make_dataset(cfg, "val", training=False, batch_size=4, manifest=manifest).as_numpy_iterator())) == 2


@pytest.mark.slow
def test_multiclass_training_covers_each_example_once_with_online_augmentation(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, ["a", "b", "c"], mode="online", flip="horizontal", color_jitter=0.2, cutmix=1.0)
    train = [example(i, 3, "train") for i in range(21)]
    manifest = write_records(cfg, {"train": train, "val": [example(i, 3, "val") for i in range(4)]}, shards=3)
    dataset = make_dataset(cfg, "train", training=True, batch_size=4, manifest=manifest, with_ids=True)
    seen = []
    for images, targets, ids in dataset.as_numpy_iterator():
        assert targets.shape == (len(ids), 3) and targets.dtype == np.float32
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
        assert images.dtype == np.float32 and images.min() >= 0.0 and images.max() <= 255.0
        seen.extend(i.decode() for i in ids)
    assert sorted(seen) == sorted(e.id for e in train)  # every example exactly once per epoch
    assert steps_per_epoch(manifest, "train", 4) == 6
    assert steps_per_epoch(manifest, "train", 4, drop_remainder=True) == 5
    batches = make_dataset(cfg, "train", training=True, batch_size=4, manifest=manifest, drop_remainder=True, repeat=True)
    assert all(x.shape[0] == 4 for x, _ in batches.take(12).as_numpy_iterator())  # repeats past one epoch
    assert batches.element_spec[0].shape == (4, SIZE, SIZE, 3)  # static batch for TPUs


@pytest.mark.slow
def test_fold_filtering_gives_exactly_the_folds_examples(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, ["a", "b", "c"], mode="offline")
    cfg.data.folds = 3
    originals = [example(i, 3, "train", fold=i % 3) for i in range(15)]
    copies = [example(i, 3, "train", fold=i % 3, suffix="#aug1") for i in range(15)]  # copies keep the fold
    manifest = write_records(cfg, {"train": originals + copies}, shards=2)
    assert manifest.folds == 3
    fold = 1
    val = make_dataset(cfg, "val", training=False, batch_size=4, manifest=manifest, fold=fold, with_ids=True)
    assert ids_of(val) == [e.id for e in originals if e.fold == fold]
    train = make_dataset(cfg, "train", training=True, batch_size=4, manifest=manifest, fold=fold, with_ids=True)
    expected_train = sorted(e.id for e in originals + copies if e.fold != fold)
    assert sorted(ids_of(train)) == expected_train
    # From the manifest's per-fold counts, and by scanning the shards for a manifest written before them.
    train_counts = dataclasses.replace(manifest.counts["train"], per_fold=None)
    old = dataclasses.replace(manifest, counts={**manifest.counts, "train": train_counts})
    assert old.folds is None and old.count("val", fold) is None
    for counted in (manifest, old):
        assert count_examples(counted, "val", fold) == 5
        assert count_examples(counted, "train", fold) == len(expected_train)
        assert count_examples(counted, "train") == 30
    with pytest.raises(KitError, match="fold=5"):
        make_dataset(cfg, "val", training=False, batch_size=4, manifest=manifest, fold=5)


def test_missing_records_and_splits_are_kit_errors(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, ["a", "b"])
    with pytest.raises(KitError, match="no records") as info:
        read_manifest(records_dir(cfg))
    assert "kit records" in info.value.hint
    manifest = write_records(cfg, {"train": [example(i, 2, "train") for i in range(3)]}, shards=1)
    with pytest.raises(KitError, match="no test records"):
        make_dataset(cfg, "test", training=False, batch_size=2, manifest=manifest)
    with pytest.raises(KitError, match="fewer than one batch"):
        steps_per_epoch(manifest, "train", 8, drop_remainder=True)
