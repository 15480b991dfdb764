"""The TFRecord example format shared by the records writer and the tf.data pipeline.

One ``tf.train.Example`` per image:

=============  ==========  ===================================================================
feature        type        meaning
=============  ==========  ===================================================================
image          bytes       the stored image, RGB uint8: raw pixels (row-major H x W x 3), PNG or JPEG
label          int64       class index (argmax of soft_label for CutMix copies); -1 when unknown (test)
soft_label     float list  length = number of classes; one-hot, or CutMix proportions (sum 1)
id             bytes       the example id as it appears in the submission
height, width  int64       size of the original image before resizing
fold           int64       k-fold number of labelled examples; -1 when folds are not used
stored_height, int64       the stored image's size, written only when records keep native sizes
stored_width                (``data.resize=crop``; absent: the image is S x S, the model's size)
=============  ==========  ===================================================================

The ``image`` encoding is the manifest's ``image_format`` (:func:`resolve_image_format`). ``raw`` needs no
codec at all: the input pipeline turns a whole batch into pixels with one ``tf.io.decode_raw``, where PNG
decoding per image bounded it (BENCHMARKS.md, input pipeline). It costs disk (12 KB per 64 px image, 49 KB at 128 px,
433 KB at 380 px), hence ``auto`` = raw up to :data:`RAW_MAX_SIZE` px and JPEG above: at 380 px the pipeline read
JPEG records (quality 90, full-resolution colour) 3.4x faster than PNG (1.9x with flip, jitter and CutMix), at 42.7 dB
PSNR against the lossless image (BENCHMARKS.md, online pipeline at 380 px). PNG stays one setting away for forensic work.

:func:`serialize` encodes with the protobuf runtime and the message classes of :mod:`kit.data.tfrecord`,
without TensorFlow, byte-identical to ``tf.train.Example.SerializeToString(deterministic=True)``, so the
records workers never import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kit.data import tfrecord

MANIFEST = "manifest.json"
SHARD_SUFFIX = ".tfrecord"
SPLITS = ("train", "val", "test")
IMAGE_FORMATS = ("raw", "png", "jpeg")  # what the records can hold; data.image_format also takes "auto"
RAW_MAX_SIZE = 128  # auto: raw pixels up to this image size (49 KB per image), JPEG above


@dataclass
class Example:
    image: bytes
    label: int
    soft_label: np.ndarray  # float32, shape (num_classes,)
    id: str
    height: int
    width: int
    fold: int = -1
    stored_height: int = 0  # 0: not written (the image is the model's size)
    stored_width: int = 0


def resolve_image_format(image_format: str, image_size: int) -> str:
    """The stored format for a ``data.image_format`` setting: ``auto`` is raw up to RAW_MAX_SIZE px, else jpeg."""
    if image_format == "auto":
        return "raw" if image_size <= RAW_MAX_SIZE else "jpeg"
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {image_format!r}; use auto or one of {', '.join(IMAGE_FORMATS)}")
    return image_format


def jpeg_params(quality: int) -> list[int]:
    """OpenCV's JPEG encoder settings for records: ``quality`` and full-resolution colour (4:4:4).

    OpenCV's default halves the colour resolution (4:2:0), which alone held PSNR against the lossless image to
    36-38 dB on detailed photos at any quality; 4:4:4 at quality 90 gives 42-44 dB on P1-JPEG's images and decodes
    about as fast as 4:2:0 at 95 (BENCHMARKS.md, online pipeline at 380 px).
    """
    import cv2

    return [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]


def encode_image(image: np.ndarray, image_format: str, quality: int = 90) -> bytes:
    """The ``image`` feature's bytes for a uint8 RGB (S, S, 3) image in a resolved format: raw pixels, PNG (lossless)
    or JPEG (``quality`` 1-100, :func:`jpeg_params`)."""
    if image_format == "raw":
        return np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image format must be raw, png or jpeg, got {image_format!r}")
    import cv2

    bgr = cv2.cvtColor(np.ascontiguousarray(image, np.uint8), cv2.COLOR_RGB2BGR)
    if image_format == "png":
        # OpenCV's default (fastest) PNG settings: ~2.5x faster than level 3 for ~8 % larger files (BENCHMARKS.md,
        # records from real-size JPEGs).
        ok, buffer = cv2.imencode(".png", bgr)
    else:
        ok, buffer = cv2.imencode(".jpg", bgr, jpeg_params(quality))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {image_format}")
    return buffer.tobytes()


def serialize(example: Example) -> bytes:
    """Encode one example as a serialized ``tf.train.Example``, without importing TensorFlow.

    Deterministic (map entries in protobuf's deterministic order): resumed builds must produce
    byte-identical shards.
    """
    message = tfrecord.example_proto().Example()
    feature = message.features.feature
    feature["image"].bytes_list.value.append(example.image)
    feature["label"].int64_list.value.append(int(example.label))
    feature["soft_label"].float_list.value.extend(np.asarray(example.soft_label, np.float32).ravel().tolist())
    feature["id"].bytes_list.value.append(example.id.encode("utf-8"))
    feature["height"].int64_list.value.append(int(example.height))
    feature["width"].int64_list.value.append(int(example.width))
    feature["fold"].int64_list.value.append(int(example.fold))
    if example.stored_height:  # only native-size records carry it: records at the model's size stay as they were
        feature["stored_height"].int64_list.value.append(int(example.stored_height))
        feature["stored_width"].int64_list.value.append(int(example.stored_width))
    return message.SerializeToString(deterministic=True)


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
        "stored_height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        "stored_width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    }


def _decode_one(data: Any, image_size: int) -> Any:
    """PNG or JPEG bytes -> uint8 (image_size, image_size, 3)."""
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def decode_images(data: Any, image_size: int, image_format: str) -> Any:
    """A batch of ``image`` features [B] -> uint8 [B, S, S, 3].

    raw: one ``decode_raw`` for the whole batch. No ``fixed_length``: it would silently pad or cut a record
    of the wrong size; without it records of mixed sizes fail ``decode_raw`` and a wrong common size fails
    the reshape. png/jpeg: one decode per image, inside the batch.
    """
    import tensorflow as tf

    if image_format == "raw":
        pixels = tf.io.decode_raw(data, tf.uint8)
        batch = data.shape[0] if data.shape[0] is not None else tf.shape(data)[0]  # static with drop_remainder (TPU)
        return tf.reshape(pixels, [batch, image_size, image_size, 3])
    return tf.map_fn(
        lambda one: _decode_one(one, image_size),
        data,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8),
        parallel_iterations=16,
    )


def parse(serialized: Any, num_classes: int, image_size: int, image_format: str = "png") -> dict:
    """Parse one serialized example into tensors; ``image`` becomes uint8 (image_size, image_size, 3)."""
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_spec(num_classes))
    if image_format == "raw":
        parsed["image"] = tf.reshape(tf.io.decode_raw(parsed["image"], tf.uint8), [image_size, image_size, 3])
    else:
        parsed["image"] = _decode_one(parsed["image"], image_size)
    return parsed


def parse_batch(serialized: Any, num_classes: int, image_size: int, image_format: str = "png") -> dict:
    """Parse a batch [B] of serialized examples at once (``tf.io.parse_example``); ``image`` -> uint8 [B, S, S, 3]."""
    import tensorflow as tf

    parsed = tf.io.parse_example(serialized, feature_spec(num_classes))
    parsed["image"] = decode_images(parsed["image"], image_size, image_format)
    return parsed


def decode_stored(data: Any, image_format: str, height: Any, width: Any) -> Any:
    """One ``image`` feature of records that keep native sizes -> uint8 [height, width, 3] (its own shape)."""
    import tensorflow as tf

    if image_format == "raw":
        return tf.reshape(tf.io.decode_raw(data, tf.uint8), tf.stack([height, width, 3]))
    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])
