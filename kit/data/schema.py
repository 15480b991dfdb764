"""The TFRecord example format shared by the records writer and the tf.data pipeline.

One ``tf.train.Example`` per image:

=============  ==========  ===================================================================
feature        type        meaning
=============  ==========  ===================================================================
image          bytes       the resized image, PNG or JPEG encoded, RGB uint8
label          int64       class index (argmax of soft_label for CutMix copies); -1 when unknown (test)
soft_label     float list  length = number of classes; one-hot, or CutMix proportions (sum 1)
id             bytes       the example id as it appears in the submission
height, width  int64       size of the original image before resizing
fold           int64       k-fold number of labelled examples; -1 when folds are not used
=============  ==========  ===================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MANIFEST = "manifest.json"
SHARD_SUFFIX = ".tfrecord"
SPLITS = ("train", "val", "test")


@dataclass
class Example:
    image: bytes
    label: int
    soft_label: np.ndarray  # float32, shape (num_classes,)
    id: str
    height: int
    width: int
    fold: int = -1


def serialize(example: Example) -> bytes:
    """Encode one example as a serialized ``tf.train.Example``."""
    import tensorflow as tf

    def int64(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    def raw(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    features = {
        "image": raw(example.image),
        "label": int64(example.label),
        "soft_label": tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(example.soft_label, np.float32).tolist())),
        "id": raw(example.id.encode("utf-8")),
        "height": int64(example.height),
        "width": int64(example.width),
        "fold": int64(example.fold),
    }
    # deterministic=True: protobuf map order otherwise differs per process, and resumed builds must
    # produce byte-identical shards.
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


def feature_spec(num_classes: int) -> dict:
    """The parsing spec for ``tf.io.parse_example`` / ``parse_single_example``."""
    import tensorflow as tf

    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "soft_label": tf.io.FixedLenFeature([num_classes], tf.float32),
        "id": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "fold": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    }


def parse(serialized, num_classes: int, image_size: int) -> dict:
    """Parse one serialized example into tensors; ``image`` becomes uint8 (image_size, image_size, 3)."""
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_spec(num_classes))
    image = tf.io.decode_image(parsed["image"], channels=3, dtype=tf.uint8, expand_animations=False)
    parsed["image"] = tf.ensure_shape(image, [image_size, image_size, 3])
    return parsed
