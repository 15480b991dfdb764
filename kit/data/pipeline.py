"""tf.data input pipelines over the sharded TFRecords: train (shuffled, augmented) and val/test (ordered).

Training::

    shard files (shuffled) -> interleave(TFRecordDataset) [-> filter(fold)] -> shuffle(serialized)
      [-> repeat] -> batch (serialized) -> one map: parse the batch (kit.data.schema.parse_batch)
      -> float32 0..255 -> online augmenter (one-hot float labels) -> targets in the model's shape -> prefetch

Why batch first: ``tf.io.parse_example`` on a batch and, for raw records (``image_format: raw``, the default
up to 128 px), one ``tf.io.decode_raw`` for the whole batch replace a graph call per example; at 64 px and
batch 64 the per-example path's op overhead and PNG decode bounded the pipeline (BENCHMARKS.md, input pipeline).
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

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from kit.data import schema
from kit.data.manifest import Manifest, source_split
from kit.data.resizing import Cutter, check_resize, policy_of
from kit.errors import KitError

if TYPE_CHECKING:
    import tensorflow as tf

    from kit.config import Config

AUGMENTED_MARK = "#aug"  # offline-augmented copies have ids like "<id>#aug1"; never validate on them
SHUFFLE_BUFFER = 4096  # serialized records: ~50 MB of 64 px raw records, ~200 MB at 128 px (raw's limit), less as PNG
MAX_CYCLE = 4  # shards read at once while training


def require_shards(manifest: Manifest, split: str) -> list[str]:
    """The shards of ``split``; a KitError when the records have none (a dataset needs at least one)."""
    paths = manifest.shard_paths(split)
    if not paths:
        raise KitError(
            f"no {split} records in {manifest.records_dir}",
            "run `kit records comp=.. model=..` (does the competition have this split?)",
        )
    return paths


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
    """Examples of one fold, counted by scanning ids and folds (for manifests written before per-fold counts)."""
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(list(paths)).filter(_fold_filter(split, fold))
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1).numpy())


def count_examples(manifest: Manifest, split: str, fold: int | None = None) -> int:
    """Examples in ``split`` (one epoch). With ``fold``: fold != k (train) or == k (val, originals only),
    from the manifest's per-fold counts, or by scanning the train shards once (cached) for an older manifest."""
    count = manifest.count(split, fold)
    if count is not None:
        return count
    return _count_fold(tuple(require_shards(manifest, "train")), split, int(fold))


def steps_per_epoch(
    manifest: Manifest, split: str, global_batch: int, *, fold: int | None = None, drop_remainder: bool = False
) -> int:
    """Batches in one pass over ``split`` with ``global_batch`` examples each (batch x replicas)."""
    count = count_examples(manifest, split, fold)
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
    manifest: Manifest,
    fold: int | None = None,
    with_ids: bool = False,
    drop_remainder: bool = False,
    repeat: bool = False,
    crops: int = 1,
) -> tf.data.Dataset:
    """A batched dataset of ``(images, targets)`` (or ``(images, targets, ids)`` with ``with_ids``).

    images: float32 [B, S, S, 3] in 0..255. targets: float32 [B, 1] (binary: probability of class 1) or
    [B, C]. ``training`` shuffles, and augments when ``cfg.augment.mode == "online"``; otherwise the order
    is the records' order. ``cfg.augment.jitter_on == "model"`` (resolved from the device by the session,
    :func:`kit.train.strategy.with_jitter_on`): the augmenter leaves the colour jitter to the model's first layer.
    ``fold=k`` (records built with data.folds > 1): "train" = train shards with fold != k, "val" = fold == k
    without offline-augmented copies. ``repeat`` repeats (training) forever.

    Records that keep native sizes (``data.resize=crop``, :mod:`kit.data.resizing`): training takes a random S x S
    crop of each image, evaluation the centre crop, or with ``crops`` = k*k the k x k grid: images [B, crops, S, S, 3].
    """
    import tensorflow as tf

    from kit.data.augment import build_online_augmenter

    source = source_split(split, fold)
    if fold is not None:
        folds = manifest.folds if manifest.folds is not None else int(cfg.data.folds or 0)
        if folds > 1 and not 0 <= fold < folds:
            raise KitError(f"fold={fold} is outside 0..{folds - 1}", f"pick a fold below data.folds={folds}")
    paths = require_shards(manifest, source)
    num_classes, image_size, binary = manifest.num_classes, manifest.image_size, manifest.binary
    check_resize(cfg)
    cutter = None
    if policy_of(manifest.resize).native:  # images of varying sizes: decoded one by one and cut to S x S
        seed, scale = cfg.augment.seed, cfg.augment.crop_min_scale  # stateless draws from (seed, batch number)
        cutter = Cutter(image_size, manifest.image_format, training=training, seed=seed, min_scale=scale, crops=crops)
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
        total = manifest.count(source) or SHUFFLE_BUFFER  # the split's size: a smaller split needs no bigger buffer
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

    image_format = manifest.image_format

    def parse_batch(number: tf.Tensor, serialized: tf.Tensor) -> tuple[tf.Tensor, ...]:
        if cutter is None:
            parsed = schema.parse_batch(serialized, num_classes, image_size, image_format)
            return finish(parsed["image"], parsed["soft_label"], parsed["id"])
        parsed = tf.io.parse_example(serialized, schema.feature_spec(num_classes))
        return finish(cutter(parsed, number), parsed["soft_label"], parsed["id"])

    # One map per batch: parse, decode, cast, augment and shape targets in a single graph call. The batches are
    # numbered before the parallel map, so a random crop's seed is its batch's number, whichever call runs first.
    dataset = records.batch(batch_size, drop_remainder=drop_remainder).enumerate()
    dataset = dataset.map(parse_batch, num_parallel_calls=autotune, deterministic=not training)
    return dataset.prefetch(autotune)
