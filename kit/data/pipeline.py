"""tf.data input pipelines over the sharded TFRecords: train (shuffled, augmented) and val/test (ordered).

Training::

    shard files (shuffled) -> interleave(TFRecordDataset) [-> filter(fold)] -> shuffle(serialized)
      [-> repeat] -> batch (serialized) -> one map: parse the batch (kit.data.schema.parse_batch)
      -> float32 0..255 -> online augmenter (one-hot float labels) -> targets in the model's shape -> prefetch

Why batch first: ``tf.io.parse_example`` on a batch and, for raw records (``image_format: raw``, the default
up to 128 px), one ``tf.io.decode_raw`` for the whole batch replace a graph call per example; at 64 px and
batch 64 the per-example path's op overhead and PNG decode bounded the pipeline (BENCHMARKS.md, P2/P3).
PNG/JPEG records are still decoded one image at a time, by a ``map_fn`` inside the batch's map call. Measured
at 64 px, batch 64, 2 shared cores (img/s, no augmentation / flip + jitter + CutMix): raw batched 35-37k /
10.1k; PNG batched 11-12k / 6.7k; PNG parsed per example before batching (the old way) 9-10k / 5.5k.

Evaluation (val/test) reads the shards in manifest order, one after the other, so predictions line up
with the records (and ids) without any bookkeeping.

Targets: binary problems (2 classes) get ``[B, 1]`` float = probability of class 1, as Keras' binary F1
metric needs; otherwise ``[B, C]`` one-hot or soft labels. Pixels leave as float32 0..255: each model owns
its normalisation (EfficientNet rescales inside; normalising here too would silently hurt accuracy).

TPU: data must be on gs:// and every batch the same size (``drop_remainder=True``, which the trainer passes
for TPU strategies), otherwise XLA recompiles for, or fails on, the last partial batch.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.data import schema
from kit.data.records import read_manifest
from kit.errors import KitError

if TYPE_CHECKING:
    import tensorflow as tf

    from kit.config import Config

AUGMENTED_MARK = "#aug"  # offline-augmented copies have ids like "<id>#aug1"; never validate on them
SHUFFLE_BUFFER = 4096  # serialized records: ~50 MB of 64 px raw records, ~200 MB at 128 px (raw's limit), less as PNG
MAX_CYCLE = 4  # shards read at once while training


def _join(directory: str | Path, name: str) -> str:
    """Join without pathlib, which turns ``gs://bucket`` into ``gs:/bucket``."""
    directory = str(directory)
    if directory.startswith("gs:/") and not directory.startswith("gs://"):
        directory = "gs://" + directory[len("gs:/") :]
    return directory.rstrip("/") + "/" + name


def _source_split(split: str, fold: int | None) -> str:
    """With folds, both "train" and "val" come from the train shards."""
    if split not in schema.SPLITS:
        raise KitError(f"unknown split '{split}'", f"use one of: {', '.join(schema.SPLITS)}")
    if fold is not None and split == "test":
        raise KitError("fold= applies to the train and val splits only", "drop fold= for the test split")
    return "train" if fold is not None else split


def _shard_paths(manifest: dict, records_dir: str | Path, split: str) -> list[str]:
    names = manifest.get("shards", {}).get(split, [])
    if not names:
        raise KitError(
            f"no {split} records in {records_dir}", "run `kit records comp=.. model=..` (does the competition have this split?)"
        )
    return [_join(records_dir, name) for name in names]


def _fold_filter(split: str, fold: int) -> Any:
    """A predicate on serialized examples: train = fold != k, val = fold == k without augmented copies."""
    import tensorflow as tf

    spec = {key: schema.feature_spec(1)[key] for key in ("fold", "id")}  # cheap partial parse, no image decode

    def keep(serialized: tf.Tensor) -> tf.Tensor:
        parsed = tf.io.parse_single_example(serialized, spec)
        if split == "train":
            return tf.not_equal(parsed["fold"], fold)
        original = tf.logical_not(tf.strings.regex_full_match(parsed["id"], f".*{AUGMENTED_MARK}.*"))
        return tf.logical_and(tf.equal(parsed["fold"], fold), original)

    return keep


@lru_cache(maxsize=32)
def _count_fold(paths: tuple[str, ...], split: str, fold: int) -> int:
    """Examples of one fold, counted by scanning ids and folds (the manifest only counts whole splits)."""
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(list(paths)).filter(_fold_filter(split, fold))
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1).numpy())


def count_examples(manifest: dict, split: str, fold: int | None = None, *, records_dir: str | Path | None = None) -> int:
    """Examples in ``split`` (one epoch). With ``fold``, counts fold != k (train) or == k (val, originals
    only) by scanning the train shards once (cached), which needs ``records_dir`` (or
    ``manifest["records_dir"]``)."""
    source = _source_split(split, fold)
    if fold is None:
        return int(manifest.get("counts", {}).get(split, {}).get("total", 0))
    records_dir = records_dir if records_dir is not None else manifest.get("records_dir")
    if records_dir is None:
        raise ValueError("count_examples(..., fold=k) needs records_dir= to scan the shards")
    return _count_fold(tuple(_shard_paths(manifest, records_dir, source)), split, int(fold))


def steps_per_epoch(
    manifest: dict,
    split: str,
    global_batch: int,
    *,
    fold: int | None = None,
    drop_remainder: bool = False,
    records_dir: str | Path | None = None,
) -> int:
    """Batches in one pass over ``split`` with ``global_batch`` examples each (batch x replicas)."""
    count = count_examples(manifest, split, fold, records_dir=records_dir)
    steps = count // global_batch if drop_remainder else math.ceil(count / global_batch)
    if steps < 1:
        raise KitError(
            f"the {split} split has {count} examples, fewer than one batch of {global_batch}",
            "lower train.batch_size (or rebuild the records with more data)",
        )
    return steps


def make_dataset(
    cfg: Config,
    split: str,
    *,
    training: bool,
    batch_size: int,
    manifest: dict | None = None,
    fold: int | None = None,
    with_ids: bool = False,
    drop_remainder: bool = False,
    repeat: bool = False,
) -> tf.data.Dataset:
    """A batched dataset of ``(images, targets)`` (or ``(images, targets, ids)`` with ``with_ids``).

    images: float32 [B, S, S, 3] in 0..255. targets: float32 [B, 1] (binary: probability of class 1) or
    [B, C]. ``training`` shuffles, and augments when ``cfg.augment.mode == "online"``; otherwise the order
    is the records' order. ``fold=k`` (records built with data.folds > 1): "train" = train shards with
    fold != k, "val" = fold == k without offline-augmented copies. ``repeat`` repeats (training) forever.
    """
    import tensorflow as tf

    from kit.data.augment import build_online_augmenter

    records_dir = cfg.records_dir
    if manifest is None:
        manifest = read_manifest(records_dir)
    source = _source_split(split, fold)
    if fold is not None:
        folds = int(manifest.get("folds", cfg.data.folds) or 0)
        if folds > 1 and not 0 <= fold < folds:
            raise KitError(f"fold={fold} is outside 0..{folds - 1}", f"pick a fold below data.folds={folds}")
    paths = _shard_paths(manifest, records_dir, source)
    num_classes = int(manifest["num_classes"])
    image_size = int(manifest["image_size"])
    binary = num_classes == 2
    autotune = tf.data.AUTOTUNE

    files = tf.data.Dataset.from_tensor_slices(paths)
    if training:
        # Shuffle files and read several at once (deterministic=False lets tf.data take whichever shard
        # is ready); the record-level shuffle below then mixes examples across shards.
        files = files.shuffle(len(paths), seed=cfg.train.seed, reshuffle_each_iteration=True)
        records = files.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(paths), MAX_CYCLE),
            num_parallel_calls=autotune,
            deterministic=False,
        )
    else:
        records = tf.data.TFRecordDataset(paths)  # one shard after the other: records order
    if fold is not None:
        records = records.filter(_fold_filter(split, int(fold)))  # before shuffling and decoding: cheap
    if training:
        total = max(1, int(manifest.get("counts", {}).get(source, {}).get("total", SHUFFLE_BUFFER)))
        records = records.shuffle(min(total, SHUFFLE_BUFFER), seed=cfg.train.seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()  # before batching, so batches run across epoch boundaries

    augmenter = build_online_augmenter(cfg.augment, num_classes) if training and cfg.augment.mode == "online" else None

    def finish(images: tf.Tensor, labels: tf.Tensor, ids: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """uint8 batch -> float32 0..255, online augmentation, targets in the model's shape."""
        if augmenter is not None:
            images, labels = augmenter(images, labels)  # takes uint8: its kernel fuses the cast with the rest
        else:
            images = tf.cast(images, tf.float32)
        targets = labels[:, 1:2] if binary else labels
        return (images, targets, ids) if with_ids else (images, targets)

    image_format = str(manifest.get("image_format", "png"))  # manifests before raw existed were png or jpeg

    def parse_batch(serialized: tf.Tensor) -> tuple[tf.Tensor, ...]:
        parsed = schema.parse_batch(serialized, num_classes, image_size, image_format)
        return finish(parsed["image"], parsed["soft_label"], parsed["id"])

    # One map per batch: parse, decode, cast, augment and shape targets in a single graph call.
    dataset = records.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(parse_batch, num_parallel_calls=autotune, deterministic=not training)
    return dataset.prefetch(autotune)
